"""An HTTPS echo server for the benchmarks: mutual TLS with the example PKI, answering every POST
with one recorded SOAP answer whose ``RelatesTo`` names the request's ``MessageID``, after an
optional delay (a service's latency). It runs in a child process, so that the process measured is
the client alone."""

from __future__ import annotations

import contextlib
import multiprocessing
import re
import ssl
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from transport import examplepki

_RELATES_TO = re.compile(rb"(<(?:\w+:)?RelatesTo\b[^>]*>)[^<]*(</)")
_MESSAGE_ID = re.compile(rb"<(?:\w+:)?MessageID\b[^>]*>([^<]*)</")


def answer_for(template: bytes, request: bytes) -> bytes:
    """``template`` with its ``RelatesTo`` naming the ``MessageID`` of ``request``."""
    found = _MESSAGE_ID.search(request)
    message_id = found.group(1) if found else b""
    return _RELATES_TO.sub(lambda m: m.group(1) + message_id + m.group(2), template, count=1)


def _serve(pki_directory: str, template: bytes, delay: float, ready: multiprocessing.Queue) -> None:
    pki = examplepki.load(pki_directory)

    class Handler(QuietHandler):
        wbufsize = 64 * 1024

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = answer_for(template, body)
            if delay:
                time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    serve_tls(pki, Handler, ready)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1, without Nagle's algorithm and without a line per request on stderr."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *_: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a measured client that ends closes its connection: nothing to report


def serve_tls(
    pki: examplepki.ExamplePKI, handler: type[BaseHTTPRequestHandler], ready: multiprocessing.Queue
) -> None:
    """Serve ``handler`` over mutual TLS with the example PKI on a free loopback port until the
    process ends; the base URL is put on ``ready`` once listening."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_bundle))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    ready.put(f"https://127.0.0.1:{server.server_address[1]}")
    server.serve_forever()


@contextlib.contextmanager
def echo_server(
    pki: examplepki.ExamplePKI, template: bytes, *, delay: float = 0.0
) -> Iterator[str]:
    """The base URL (``https://127.0.0.1:PORT``) of an echo server in a child process, answering
    with ``template`` after ``delay`` seconds; stopped on exit."""
    ready: multiprocessing.Queue = multiprocessing.Queue()
    child = multiprocessing.Process(
        target=_serve, args=(str(pki.directory), template, delay, ready), daemon=True
    )
    child.start()
    try:
        yield ready.get(timeout=30)
    finally:
        child.terminate()
        child.join()
