"""The HTTPS server under every stub: mutual TLS, threads, a size limit, a log line per request.

A handler receives a :class:`StubRequest` (path, headers, the body as a stream read straight from
the connection, the client's verified certificate) and returns a :class:`StubResponse` (bytes, or
chunks streamed from disk). A handler of large bodies reads the stream as it arrives and writes it
where it belongs, so that no body is copied to a spool first; ``Content-Length`` and
``Transfer-Encoding: chunked`` (RFC 9112 §7.1) are both accepted. The server never logs bodies,
only path, status and duration.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO

from cryptography import x509
from lxml import etree

from transport.soap.addressing import SOAP12_NS, WSA_NS
from transport.soap.envelope import SOAP_CONTENT_TYPE
from transport.soap.wsse import WSSE_NS

log = logging.getLogger("transport.stubs")

_CHUNK = 256 * 1024  # the most one read of the body asks the connection for
DRAIN_BYTES = 1024 * 1024
"""How much of an over-limit body is read and dropped before the connection is cut."""
_FAULT_PREFIXES = {"soap": SOAP12_NS, "wsse": WSSE_NS, "wsa": WSA_NS}
# Said to the client, not only done: otherwise it may send its next request on the connection the
# server is closing, and read an EOF instead of an answer.
_CLOSE = {"Connection": "close"}


@dataclass(frozen=True)
class StubRequest:
    """One HTTP request as a stub handler sees it (``client_certificate`` passed TLS checks).

    ``stream`` is the body, read once as it arrives (``headers`` keys are lower case); a read
    past the server's size limit, or of a body cut short, raises an exception the server answers
    (413, 400), so a handler lets it pass. Handlers of large bodies read ``stream``; the others
    use ``body``. What a handler leaves unread is read and dropped before the answer. ``tls`` is
    the connection's protocol version and cipher suite, OpenSSL names
    (``("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")``).
    """

    method: str
    path: str
    headers: Mapping[str, str]
    stream: BinaryIO
    client_certificate: x509.Certificate | None
    tls: tuple[str, str] | None = None

    @cached_property
    def body(self) -> bytes:
        """The whole body as bytes."""
        return self.stream.read()

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header, empty when absent."""
        return self.headers.get("content-type", "")


@dataclass(frozen=True)
class StubResponse:
    """What a handler answers: HTTP status, body, content type, extra headers.

    ``body`` is bytes, or an iterable of byte chunks written as they come (with ``length``, the
    total in bytes, sent as ``Content-Length``; without it the response is chunked).
    """

    status: int
    body: bytes | Iterable[bytes]
    content_type: str = SOAP_CONTENT_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)
    length: int | None = None


Handler = Callable[[StubRequest], StubResponse]


@dataclass(frozen=True)
class ServerTLS:
    """The server side of mutual TLS: its certificate chain and key, the CA its clients chain to
    (``client_ca`` None: server-only TLS, no client certificate asked for).

    ``maximum_version`` exists to let tests stand up a server that only speaks old protocols.
    """

    certificate: Path
    key: Path
    client_ca: Path | None
    require_client_certificate: bool = True
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum_version: ssl.TLSVersion | None = None

    def context(self) -> ssl.SSLContext:
        """The server SSL context."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.minimum_version < ssl.TLSVersion.TLSv1_2:
            # Old protocols need OpenSSL's lowest security level to be offered at all.
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = self.minimum_version
        if self.maximum_version is not None:
            context.maximum_version = self.maximum_version
        context.load_cert_chain(str(self.certificate), str(self.key))
        if self.client_ca is None:
            # Server-only TLS (the téléservices' card-mode host): no client certificate asked.
            context.verify_mode = ssl.CERT_NONE
            return context
        context.load_verify_locations(cafile=str(self.client_ca))
        context.verify_mode = (
            ssl.CERT_REQUIRED if self.require_client_certificate else ssl.CERT_OPTIONAL
        )
        return context


def soap12_fault(
    code: str,
    reason: str,
    *,
    subcodes: tuple[str, ...] = (),
    detail: etree._Element | None = None,
    namespaces: Mapping[str, str] | None = None,
) -> bytes:
    """A SOAP 1.2 fault envelope; ``code`` is ``Sender`` or ``Receiver``; ``subcodes`` are QNames,
    outermost first, with the prefix ``soap``, ``wsse``, ``wsa`` or one of ``namespaces`` (a
    prefix → URI mapping declared on the envelope); bare names get ``soap``."""
    envelope = etree.Element(
        f"{{{SOAP12_NS}}}Envelope", nsmap={**_FAULT_PREFIXES, **(namespaces or {})}
    )
    body = etree.SubElement(envelope, f"{{{SOAP12_NS}}}Body")
    fault = etree.SubElement(body, f"{{{SOAP12_NS}}}Fault")
    holder = etree.SubElement(fault, f"{{{SOAP12_NS}}}Code")
    etree.SubElement(holder, f"{{{SOAP12_NS}}}Value").text = f"soap:{code}"
    for subcode in subcodes:
        holder = etree.SubElement(holder, f"{{{SOAP12_NS}}}Subcode")
        etree.SubElement(holder, f"{{{SOAP12_NS}}}Value").text = (
            subcode if ":" in subcode else f"soap:{subcode}"
        )
    text_holder = etree.SubElement(fault, f"{{{SOAP12_NS}}}Reason")
    text = etree.SubElement(text_holder, f"{{{SOAP12_NS}}}Text")
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "fr")
    text.text = reason
    if detail is not None:
        etree.SubElement(fault, f"{{{SOAP12_NS}}}Detail").append(detail)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: Handler, context: ssl.SSLContext, limit: int
    ) -> None:
        self.app = handler
        self.ssl_context = context
        self.max_request_bytes = limit
        super().__init__(address, _RequestHandler)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        connection, client = self.socket.accept()
        # The handshake runs in the connection's thread, so a slow client cannot stall accept().
        wrapped = self.ssl_context.wrap_socket(
            connection, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, client

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], _HandshakeFailed):
            return  # already logged by the handler, with the TLS reason
        log.warning("connection from %s ended abnormally", client_address, exc_info=False)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30
    # An answer leaves in as few segments as it fits (headers and a small body together, flushed
    # once per request), and without Nagle's algorithm: otherwise a keep-alive answer's body waits
    # for the client's delayed ACK of its headers, some 40 ms per call.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def setup(self) -> None:
        super().setup()
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as error:
            log.info("TLS handshake refused: %s", getattr(error, "reason", None) or error)
            self.close_connection = True
            raise _HandshakeFailed from None

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True

    def do_POST(self) -> None:
        started = time.perf_counter()
        body: _Body | None = None
        try:
            body = self._body()
            if body.declared_over_limit:
                raise _TooLarge  # refused before reading a byte of it
            response = self._respond(body)
            body.drain()  # what the handler left unread: the connection serves the next request
        except _TooLarge:
            if body is not None:
                body.discard_beyond_limit()
            response = StubResponse(413, b"request too large", "text/plain", _CLOSE)
        except _BadBody as error:
            response = StubResponse(400, f"{error}".encode(), "text/plain", _CLOSE)
        self._answer(response, started)

    def _body(self) -> _Body:
        """The request body's reader, after its framing headers."""
        limit = self.server.max_request_bytes
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return _Body(self.rfile, None, limit)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _BadBody("malformed Content-Length") from None
        if length < 0:
            raise _BadBody("negative Content-Length")
        return _Body(self.rfile, length, limit)

    def _respond(self, body: _Body) -> StubResponse:
        der = self.request.getpeercert(binary_form=True)
        request = StubRequest(
            "POST",
            self.path,
            {key.lower(): value for key, value in self.headers.items()},
            body,  # type: ignore[arg-type]
            x509.load_der_x509_certificate(der) if der else None,
            _negotiated(self.request),
        )
        try:
            return self.server.app(request)
        except (_TooLarge, _BadBody):
            raise  # the body's fault, answered by do_POST
        except Exception:
            log.exception("stub handler failed on %s", self.path)
            return StubResponse(500, soap12_fault("Receiver", "internal stub error"))

    def _answer(self, response: StubResponse, started: float) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        body = response.body
        chunked = not isinstance(body, bytes) and response.length is None
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
        elif response.length is not None:
            self.send_header("Content-Length", str(response.length))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if isinstance(body, bytes):
            self.wfile.write(body)
        else:
            for chunk in body:
                if chunk and chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                elif chunk:
                    self.wfile.write(chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        elapsed = (time.perf_counter() - started) * 1000
        log.info("%s %s -> %d in %.1f ms", self.command, self.path, response.status, elapsed)

    def log_message(self, format: str, *args: object) -> None:
        # The base class writes every request line to stderr; the one log line is _answer's.
        pass


def _negotiated(connection: ssl.SSLSocket) -> tuple[str, str] | None:
    cipher = connection.cipher()
    return (cipher[1], cipher[0]) if cipher else None


class _HandshakeFailed(Exception):
    pass


class _TooLarge(Exception):
    pass


class _Body:
    """A request body read from the connection ``rfile`` as the handler asks for it: ``length``
    bytes, or chunked framing (``length`` None) undone. Past ``limit`` bytes every read raises
    _TooLarge (so does :meth:`drain`: a handler that swallowed it cannot make the body fit); a
    body cut short or a connection error raises _BadBody."""

    def __init__(self, rfile: BinaryIO, length: int | None, limit: int) -> None:
        self._rfile = rfile
        self._chunked = length is None
        self._left = length or 0  # bytes left in the body, or in the current chunk
        self._done = length == 0
        self._limit = limit
        self._received = 0

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the body (all that is left when negative); b"" at its end."""
        if size < 0:
            return b"".join(iter(lambda: self.read(_CHUNK), b""))
        if self._received > self._limit:
            raise _TooLarge
        if self._chunked and not self._left and not self._done:
            self._next_chunk()
        if self._done or not size:
            return b""
        data = self._read(min(size, self._left))
        self._left -= len(data)
        self._received += len(data)
        if self._received > self._limit:
            raise _TooLarge
        if not self._left and not self._chunked:
            self._done = True
        return data

    @property
    def declared_over_limit(self) -> bool:
        """Whether the body's Content-Length already exceeds the limit."""
        return not self._chunked and self._left > self._limit

    def drain(self) -> None:
        """Read and drop what is left of the body."""
        while self.read(_CHUNK):
            pass

    def discard_beyond_limit(self) -> None:
        """Read and drop up to :data:`DRAIN_BYTES` past the limit, what a client still sending
        an over-limit body may push before it reads the 413; errors end it quietly. A declared
        length beyond that is not read at all (the connection is closed after the 413)."""
        self._limit += DRAIN_BYTES
        if self.declared_over_limit:
            return
        with contextlib.suppress(_TooLarge, _BadBody):
            self.drain()

    def _read(self, size: int) -> bytes:
        try:
            data = self._rfile.read(size)
        except OSError as error:  # a timeout, a reset, a TLS alert: the body never came whole
            raise _BadBody(f"the body could not be read: {type(error).__name__}") from None
        if not data:
            raise _BadBody("the body ended early")
        return data

    def _next_chunk(self) -> None:
        # The CRLF that ends the previous chunk's data (every chunk before the last has some).
        if self._received and self._read(2) != b"\r\n":
            raise _BadBody("malformed chunked body")
        line = self._rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise _BadBody("malformed chunk size line")
        try:
            self._left = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _BadBody("malformed chunk size line") from None
        if self._left < 0:
            raise _BadBody("malformed chunk size line")
        if not self._left:
            self._done = True
            while self._rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailer fields carry nothing a stub needs


class _BadBody(Exception):
    pass


class StubServer:
    """A threaded HTTPS server on ``host``:``port`` (0: a free port) running ``handler``.

    Use as a context manager, or ``start()`` / ``stop()``. ``url`` is its base URL.
    """

    def __init__(
        self,
        handler: Handler,
        tls: ServerTLS,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_request_bytes: int = 1024 * 1024 * 1024,
    ) -> None:
        self._server = _Server((host, port), handler, tls.context(), max_request_bytes)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"https://{shown}:{port}"

    def start(self) -> StubServer:
        """Serve in a background thread and return self."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="cisis-stub", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another one."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop accepting, wait for the serving thread, close the socket."""
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
