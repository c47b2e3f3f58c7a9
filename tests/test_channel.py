"""The channel: every failure of an exchange mapped to the library's errors, the per-call deadline
and the read retries, over real mutual TLS on loopback; and the DMP and INSi facades over a
swapped wire (the stubs' own services, in process) where the wire is not the subject."""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from lxml import etree

from tests.test_hl7v3 import demographics, oppositions
from tests.test_stub_dmp import new_patient
from tests.test_tlsi import SOFTWARE
from transport import examplepki, tls
from transport.config import example_profile, load_profile
from transport.credentials import Purpose
from transport.dmp.authorizations import ListMode
from transport.dmp.client import DmpClient
from transport.errors import (
    ConfigurationError,
    ConnectError,
    MalformedXMLError,
    TLSError,
    TransportError,
)
from transport.soap import addressing, mtom
from transport.soap.channel import (
    _ROUTES_KEPT,
    Call,
    CallOptions,
    Channel,
    MockRequest,
    MockResponse,
    MockWire,
    PoolWire,
    RetryPolicy,
    Wire,
    WireRequest,
)
from transport.soap.envelope import SOAP_CONTENT_TYPE, build_envelope
from transport.soap.trace import Tracer
from transport.stubs.app import StubApp, StubContext, build_routes
from transport.stubs.insi import TEST_PERSONS
from transport.stubs.server import ServerTLS, StubRequest, StubResponse, StubServer
from transport.teleservices.client import TeleservicesClient, post
from transport.teleservices.insi import InsiClient, TraitsSearch
from transport.tls import TLSSettings, create_session
from transport.tls.diagnose import TRUST_FIX
from transport.vihf import AuthMode

ROOT = Path(__file__).resolve().parents[1]
TEST_NS = "urn:cisis-transport:test"
ECETINSI = TraitsSearch("ECETINSI", ("PIERRE-ALAIN",), "M", "2009-07-14")
QUICK = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)


def envelope_for(url: str, action: str = f"{TEST_NS}:Read") -> etree._Element:
    return build_envelope(action, url, etree.Element(f"{{{TEST_NS}}}read"))


def answer_to(request_body: bytes) -> bytes:
    """A SOAP 1.2 answer relating to the request whose envelope is ``request_body``."""
    message_id = addressing.read(etree.fromstring(request_body), "MessageID")
    return (
        f'<soap:Envelope xmlns:soap="{addressing.SOAP12_NS}" xmlns:wsa="{addressing.WSA_NS}">'
        f"<soap:Header><wsa:RelatesTo>{message_id}</wsa:RelatesTo></soap:Header>"
        f'<soap:Body><t:ok xmlns:t="{TEST_NS}"/></soap:Body></soap:Envelope>'
    ).encode()


@pytest.fixture(scope="module")
def settings(pki: examplepki.ExamplePKI) -> TLSSettings:
    return TLSSettings(ca_bundle=pki.ca_bundle)


@pytest.fixture
def channel(load, settings: TLSSettings) -> Iterator[Channel]:
    made = Channel.connect(load("org-auth"), settings, options=CallOptions(retry=QUICK))
    yield made
    made.close()


# --- a raw server, to misbehave on purpose ---------------------------------------------------

Script = Callable[[socket.socket, threading.Event], None]


class RawServer:
    """A loopback server that reads one HTTP request per connection (over mutual TLS with the
    example PKI, unless ``tls`` is False) and lets ``script`` write whatever bytes it likes."""

    def __init__(self, pki: examplepki.ExamplePKI, script: Script, *, tls: bool = True) -> None:
        self.script = script
        self.context = (
            ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle).context() if tls else None
        )
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}/service"
        self.stopped = threading.Event()

    def __enter__(self) -> RawServer:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.listener.close()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            with raw:
                if self.context is None:
                    raw.recv(4096)
                    self.script(raw, self.stopped)
                    return
                with self.context.wrap_socket(raw, server_side=True) as connection:
                    _read_request(connection)
                    self.script(connection, self.stopped)
        except OSError:
            pass  # the client went away: what these scripts wait for


def _read_request(connection: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += connection.recv(4096)


def _head(extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: {SOAP_CONTENT_TYPE}\r\n{extra}\r\n".encode()


def trickle_body(connection: socket.socket, stopped: threading.Event) -> None:
    connection.sendall(_head("Content-Length: 100000\r\n"))
    while not stopped.wait(0.1):
        connection.sendall(b" ")


def trickle_head(connection: socket.socket, stopped: threading.Event) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 100000:
        if stopped.wait(0.1):
            return
        connection.sendall(bytes([byte]))


def silent(connection: socket.socket, stopped: threading.Event) -> None:
    stopped.wait()


def cut_plain(connection: socket.socket, stopped: threading.Event) -> None:
    connection.sendall(_head("Content-Length: 5000\r\n") + b"<soap:Envelope" + b" " * 100)


def cut_chunked(connection: socket.socket, stopped: threading.Event) -> None:
    connection.sendall(_head("Transfer-Encoding: chunked\r\n") + b"64\r\n" + b"<" * 100 + b"\r\n")


def bad_gzip(connection: socket.socket, stopped: threading.Event) -> None:
    connection.sendall(_head("Content-Encoding: gzip\r\nContent-Length: 10\r\n") + b"not gzip!!")


def plain_http(connection: socket.socket, stopped: threading.Event) -> None:
    connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


# --- the deadline --------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [trickle_body, trickle_head], ids=["body", "headers"])
def test_a_trickling_server_ends_in_a_transport_error_at_the_deadline(
    pki, load, settings, script
) -> None:
    # Each byte comes well within the read timeout (60 s): only the call's deadline stops it.
    with (
        RawServer(pki, script) as server,
        Channel.connect(load("org-auth"), settings, options=CallOptions(deadline=60)) as channel,
        pytest.raises(TransportError) as caught,
    ):
        channel.call(Call(server.url, envelope_for(server.url), deadline=1.0))
    assert "deadline of 1 s" in caught.value.message
    assert caught.value.exit_code == 3


def test_a_facade_call_takes_a_deadline_from_the_block_around_it(pki, load, settings) -> None:
    with RawServer(pki, trickle_body) as server:
        base = server.url.rpartition("/")[0]
        wire = Channel.connect(load("org-auth"), settings).wire
        client = dmp_client(pki, wire, base_url=base)
        with client.channel.deadline(1.0), pytest.raises(TransportError) as caught:
            client.list_patients()
        client.close()
    assert "deadline of 1 s" in caught.value.message


def test_the_profile_sets_the_deadline_and_retries(tmp_path: Path) -> None:
    text = (ROOT / "certs-example" / "profile.example.toml").read_text(encoding="utf-8")
    assert "\n[tls]\n" in text
    path = tmp_path / "profile.toml"
    path.write_text(text.replace("\n[tls]\n", "\n[tls]\ndeadline = 12.5\nretries = 0\n"))
    options = load_profile(path).call_options()
    assert (options.deadline, options.retry.attempts) == (12.5, 1)
    default = load_profile(ROOT / "certs-example" / "profile.example.toml").call_options()
    assert default == CallOptions()
    for bad in ("deadline = 0", 'deadline = "soon"', "retries = -1", "retries = 1.5"):
        path.write_text(text.replace("\n[tls]\n", f"\n[tls]\n{bad}\n"))
        with pytest.raises(ConfigurationError, match=r"deadline|retries"):
            load_profile(path)


# --- every failure, mapped -----------------------------------------------------------------------


@pytest.mark.parametrize("script", [cut_plain, cut_chunked], ids=["content-length", "chunked"])
def test_an_insi_answer_cut_mid_body_is_a_transport_error(pki, load, settings, script) -> None:
    with (
        RawServer(pki, script) as server,
        create_session(load("insi-auto"), settings) as session,
        pytest.raises(TransportError, match="was cut after") as caught,
    ):
        post(session, server.url, envelope_for(server.url))
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("script", [cut_plain, cut_chunked], ids=["content-length", "chunked"])
def test_an_answer_cut_mid_body_is_a_transport_error_on_the_default_wire(
    pki, channel, script
) -> None:
    with (
        RawServer(pki, script) as server,
        pytest.raises(TransportError, match="was cut after") as caught,
    ):
        channel.call(Call(server.url, envelope_for(server.url)))
    assert caught.value.exit_code == 3


def test_the_default_wire_refuses_plain_http_before_connecting(channel) -> None:
    # Bound but not listening: a connection attempt would be refused, a TransportError.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/service"
        with pytest.raises(ConfigurationError, match="plain HTTP") as caught:
            channel.call(Call(url, envelope_for(url)))
    assert not isinstance(caught.value, TransportError)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("url", "message"),
    [("ftp://127.0.0.1/service", "expected https://"), ("HTTP://127.0.0.1/x", "plain HTTP")],
)
def test_the_default_wire_posts_to_https_urls_only(channel, url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        channel.wire.send(WireRequest(url, {}, b"<x/>"))


_SMALL = b"<e>" + b"a" * 1000 + b"</e>"
_LARGE = b"<e>" + b"b" * (mtom.CHUNK_SIZE + 1000) + b"</e>"
_INFLATING = b"<e>" + b"c" * (4 * mtom.CHUNK_SIZE) + b"</e>"


@pytest.mark.parametrize(
    ("extra", "body", "expected"),
    [
        (f"Content-Length: {len(_SMALL)}\r\n", _SMALL, _SMALL),
        (f"Content-Length: {len(_LARGE)}\r\n", _LARGE, _LARGE),
        (
            f"Content-Encoding: gzip\r\nContent-Length: {len(gzip.compress(_INFLATING))}\r\n",
            gzip.compress(_INFLATING),
            _INFLATING,
        ),
    ],
    ids=["within-a-chunk", "beyond-a-chunk", "gzip-inflating-beyond-a-chunk"],
)
def test_a_plain_answer_is_read_whole_however_long_and_encoded(
    pki, channel, extra: str, body: bytes, expected: bytes
) -> None:
    # A small plain body is read in one go; a longer or compressed one chunk by chunk.
    def answer(connection: socket.socket, stopped: threading.Event) -> None:
        connection.sendall(_head(extra) + body)

    with RawServer(pki, answer) as server:
        received = channel.exchange(Call(server.url, envelope_for(server.url)))
    assert received.status == 200
    assert received.decoded.root == expected


class FirstRecordServer(RawServer):
    """Keeps the first TLS record of each request it reads (a TLS read returns one record at
    most), and answers each with an empty 200."""

    def __init__(self, pki: examplepki.ExamplePKI) -> None:
        super().__init__(pki, silent)
        self.first_records: list[bytes] = []

    def _handle(self, raw: socket.socket) -> None:
        assert self.context is not None
        with raw, self.context.wrap_socket(raw, server_side=True) as connection:
            while first := connection.recv(1 << 20):
                self.first_records.append(first)
                head, _, body = first.partition(b"\r\n\r\n")
                found = re.search(rb"(?im)^content-length: *(\d+)", head)
                length = int(found.group(1)) if found else 0
                while len(body) < length:
                    body += connection.recv(1 << 20)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


def test_a_request_head_goes_with_a_small_body_in_one_tls_record(pki, channel) -> None:
    small, large = b"<s>" + b"s" * 5000 + b"</s>", b"<l>" + b"l" * (200 * 1024) + b"</l>"
    with FirstRecordServer(pki) as server:
        for body in (small, large, b""):
            response = channel.wire.send(WireRequest(server.url, {}, body))
            assert b"".join(response.iter_bytes()) == b""
            response.close()
    with_small, with_large, without = server.first_records
    assert with_small.startswith(b"POST /service HTTP/1.1\r\n")
    assert with_small.endswith(b"\r\n\r\n" + small)  # head and body together
    assert with_large.endswith(b"\r\n\r\n")  # the head alone: the body is too large to copy
    # No body: the head still goes, whole.
    assert b"\r\nContent-Length: 0\r\n" in without and without.endswith(b"\r\n\r\n")


def test_an_undecodable_answer_is_a_transport_error(pki, channel) -> None:
    with RawServer(pki, bad_gzip) as server, pytest.raises(TransportError, match="decoded"):
        channel.call(Call(server.url, envelope_for(server.url)))


def test_an_answer_that_is_not_xml_is_a_transport_error() -> None:
    wire = MockWire(lambda request: MockResponse(200, b"<html><body>maintenance"))
    with pytest.raises(TransportError) as caught:
        Channel(wire).call(Call("https://127.0.0.1:8443/service", envelope_for("https://x/")))
    assert not isinstance(caught.value, MalformedXMLError)
    assert caught.value.exit_code == 3
    assert "without a SOAP envelope" in caught.value.message
    assert caught.value.status == 200


def test_a_silent_server_is_a_timeout(pki, load, pki_settings_short) -> None:
    with (
        RawServer(pki, silent) as server,
        Channel.connect(load("org-auth"), pki_settings_short) as channel,
        pytest.raises(TransportError, match="did not answer in time"),
    ):
        channel.call(Call(server.url, envelope_for(server.url), deadline=30))


@pytest.fixture
def pki_settings_short(settings: TLSSettings) -> TLSSettings:
    return replace(settings, read_timeout=0.3)


def test_connection_refused_says_what_to_check(channel) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}/service"
        with pytest.raises(ConnectError) as caught:
            channel.call(Call(url, envelope_for(url)))
    assert caught.value.message == f"connection refused by 127.0.0.1:{urlsplit(url).port}"
    assert "the service is up" in (caught.value.hint or "")


def test_a_port_that_does_not_speak_tls_is_told(pki, channel) -> None:
    with RawServer(pki, plain_http, tls=False) as server, pytest.raises(TLSError) as caught:
        channel.call(Call(server.url, envelope_for(server.url)))
    assert "does not speak TLS" in caught.value.message
    assert "check the port" in (caught.value.hint or "")


def test_an_untrusted_server_gets_the_diagnosis_doctor_gives(load, pki, tmp_path) -> None:
    other = examplepki.generate(tmp_path / "other")
    foreign = ServerTLS(other.server_cert, other.server_key, pki.ca_bundle)
    with (
        StubServer(lambda request: StubResponse(200, b""), foreign) as server,
        Channel.connect(load("org-auth"), TLSSettings(ca_bundle=pki.ca_bundle)) as channel,
        pytest.raises(TLSError) as caught,
    ):
        url = f"{server.url}/service"
        channel.call(Call(url, envelope_for(url)))
    assert f"server certificate not trusted by the CA bundle {pki.ca_bundle}" in str(caught.value)
    assert "a name the bundle holds but with another key (a different CA)" in str(caught.value)
    assert caught.value.hint == TRUST_FIX


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:99999/service",
        "https://127.0.0.1:port/service",
        "https:///service",
        "ftp://127.0.0.1/service",
        "https://127.0.0.1/a service",
        "not a url",
    ],
)
def test_a_bad_url_is_a_usage_error_before_anything_is_sent(url: str) -> None:
    wire = MockWire(lambda request: MockResponse(500))
    with pytest.raises(ConfigurationError) as caught:
        Channel(wire).call(Call(url, envelope_for("https://x/")))
    assert caught.value.exit_code == 2
    assert wire.requests == []


def test_a_failing_proxy_is_named_without_its_password(load, settings, monkeypatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with create_session(load("org-auth"), settings) as session:
            session.proxies = {"https": f"http://user:s3cret@127.0.0.1:{port}"}
            url = "https://dmp.example.invalid/service"
            with pytest.raises(ConnectError) as caught:
                Channel(session).call(Call(url, envelope_for(url)))
    assert f"the proxy http://127.0.0.1:{port} failed" in caught.value.message
    assert "s3cret" not in str(caught.value)
    assert "dmp.example.invalid" not in str(caught.value)


# --- retries -------------------------------------------------------------------------------------


class Flaky:
    """A stub handler answering ``statuses`` first (with ``Retry-After: 0``), then SOAP answers."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.seen = 0

    def __call__(self, request: StubRequest) -> StubResponse:
        self.seen += 1
        if self.statuses:
            status = self.statuses.pop(0)
            return StubResponse(status, b"busy", "text/plain", headers={"Retry-After": "0"})
        return StubResponse(200, answer_to(request.body))


@pytest.fixture
def flaky_server(pki) -> Callable[..., Iterator[tuple[Flaky, str]]]:
    def serve(*statuses: int):
        handler = Flaky(*statuses)
        server = StubServer(handler, ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle))
        return handler, server

    return serve


@pytest.mark.parametrize("status", [503, 429])
def test_a_read_is_retried_after_a_temporarily_unavailable_answer(
    flaky_server, load, settings, tmp_path, caplog, status
) -> None:
    handler, server = flaky_server(status)
    tracer = Tracer(tmp_path)
    with (
        server,
        Channel.connect(
            load("org-auth"), settings, tracer=tracer, options=CallOptions(retry=QUICK)
        ) as channel,
        caplog.at_level(logging.WARNING, "transport.soap"),
    ):
        url = f"{server.url}/service"
        answer = channel.call(Call(url, envelope_for(url), idempotent=True))
    assert answer.payload.tag == f"{{{TEST_NS}}}ok"
    assert handler.seen == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "001-Read-request.xml",
        "001-Read-response.xml",
        "002-Read-request.xml",
        "002-Read-response.xml",
    ]
    assert (tmp_path / "001-Read-response.xml").read_bytes() == b"busy"
    [warning] = [record.getMessage() for record in caplog.records]
    assert f"answered HTTP {status}; retry 1 of 2" in warning


def test_a_write_is_never_retried(flaky_server, load, settings) -> None:
    handler, server = flaky_server(429)
    with (
        server,
        Channel.connect(load("org-auth"), settings, options=CallOptions(retry=QUICK)) as channel,
    ):
        url = f"{server.url}/service"
        with pytest.raises(TransportError, match="HTTP 429") as caught:
            channel.call(Call(url, envelope_for(url, f"{TEST_NS}:Write")))
    assert handler.seen == 1
    assert caught.value.status == 429  # what the caller tells "not now" by


def test_retries_are_bounded(flaky_server, load, settings) -> None:
    handler, server = flaky_server(503, 503, 503, 503)
    with (
        server,
        Channel.connect(load("org-auth"), settings, options=CallOptions(retry=QUICK)) as channel,
    ):
        url = f"{server.url}/service"
        with pytest.raises(TransportError, match="HTTP 503") as raised:
            channel.call(Call(url, envelope_for(url), idempotent=True))
    assert handler.seen == QUICK.attempts
    assert raised.value.status == 503


def test_a_read_is_retried_when_the_connection_fails(channel, caplog) -> None:
    with socket.socket() as closed, caplog.at_level(logging.WARNING, "transport.soap"):
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}/service"
        with pytest.raises(ConnectError) as caught:
            channel.call(Call(url, envelope_for(url), idempotent=True))
    assert caught.value.status is None  # no answer came
    assert [record.getMessage().rpartition("; ")[2][:10] for record in caplog.records] == [
        "retry 1 of",
        "retry 2 of",
    ]


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=5, backoff=1.0, max_backoff=3.0)
    assert all(0 <= policy.delay(1) <= 1.0 for _ in range(50))
    assert all(0 <= policy.delay(4) <= 3.0 for _ in range(50))
    assert len({policy.delay(2) for _ in range(20)}) > 1
    assert policy.delay(1, "2") == 2.0
    assert policy.delay(1, "120") == 3.0


# --- the facades over a swapped wire -------------------------------------------------------------


@pytest.fixture(scope="module")
def app(pki, tmp_path_factory) -> StubApp:
    context = StubContext.open(tmp_path_factory.mktemp("in-process"), pki.ca_bundle)
    return StubApp(build_routes(context, ["patients", "habilitations", "patientsSpecific", "lps"]))


def in_process(app: StubApp, certificate, *, unavailable: int = 0) -> MockWire:
    """A wire to the stubs' services in this process, as if over TLS with ``certificate``;
    the first ``unavailable`` requests are answered 503."""
    left = [unavailable]

    def handle(request: MockRequest) -> MockResponse:
        if left[0]:
            left[0] -= 1
            return MockResponse(503, b"", {"Retry-After": "0"})
        headers = {name.lower(): value for name, value in request.headers.items()}
        path = urlsplit(request.url).path
        tls = ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")  # one of the DMP's suites
        stub = StubRequest("POST", path, headers, io.BytesIO(request.body), certificate, tls)
        answer = app(stub)
        body = answer.body if isinstance(answer.body, bytes) else b"".join(answer.body)
        return MockResponse(answer.status, body, {"Content-Type": answer.content_type})

    return MockWire(handle)


def dmp_client(
    pki, wire: Wire, *, base_url: str = "https://dmp.test/si-dmp-server/v2/services"
) -> DmpClient:
    profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": base_url})
    return DmpClient(
        base_url,
        identity=profile.identity,
        signature=profile.signature_credential.load(Purpose.SIGNATURE),
        tls_credential=None,
        tls_settings=profile.tls_settings(),
        vihf_options=profile.vihf_options,
        options=CallOptions(retry=QUICK),
        wire=wire,
    )


def test_dmp_calls_through_a_swapped_wire(pki, load, app) -> None:
    wire = in_process(app, load("org-auth").certificate)
    client = dmp_client(pki, wire)
    patient = new_patient()
    client.create(patient, demographics(), oppositions=oppositions())
    existence = client.exists(patient)
    assert existence.exists and existence.authorized
    listed = client.list_authorizations(patient, ListMode.TOUTE)
    assert listed.outcome.ok
    assert [request.url.rpartition("/")[2] for request in wire.requests] == [
        "patients",
        "patients",
        "habilitations",
    ]
    assert all(
        request.headers["Content-Type"].startswith(SOAP_CONTENT_TYPE) for request in wire.requests
    )


def test_a_dmp_read_is_retried_and_a_write_is_not(pki, load, app) -> None:
    certificate = load("org-auth").certificate
    patient = new_patient()
    dmp_client(pki, in_process(app, certificate)).create(patient, demographics())
    reads = in_process(app, certificate, unavailable=1)
    assert dmp_client(pki, reads).exists(patient).exists
    assert len(reads.requests) == 2
    writes = in_process(app, certificate, unavailable=1)
    with pytest.raises(TransportError, match="HTTP 503"):
        dmp_client(pki, writes).set_authorization(patient)
    assert len(writes.requests) == 1


def test_an_insi_search_through_a_swapped_wire_is_retried(pki, load, app) -> None:
    wire = in_process(app, load("insi-auto").certificate, unavailable=1)
    client = TeleservicesClient(
        "https://insi.test/lps",
        SOFTWARE,
        TLSSettings(ca_bundle=pki.ca_bundle),
        tls_credential=load("insi-auto"),
        options=CallOptions(retry=QUICK),
        wire=wire,
    )
    assert InsiClient(client).search(ECETINSI).individual == TEST_PERSONS[0]
    assert len(wire.requests) == 2
    assert wire.requests[0].body == wire.requests[1].body


def test_a_deadline_already_passed_is_a_transport_error_before_connecting(load, settings) -> None:
    # Nothing listens there: a connection attempt would be refused, not timed out.
    with socket.socket() as closed, Channel.connect(load("org-auth"), settings) as channel:
        closed.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{closed.getsockname()[1]}/service"
        with tls.deadline(time.monotonic() - 1), pytest.raises(TransportError) as caught:
            channel.wire.send(WireRequest(url, {}, b"<x/>"))
    assert not isinstance(caught.value, TLSError)
    assert "did not accept the connection" in caught.value.message


# --- the default wire's proxies: read once, a CONNECT tunnel, TLS end to end -------------------

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


class ConnectProxy:
    """A loopback HTTP proxy that answers each ``CONNECT host:port`` by relaying bytes both ways
    (it never sees inside the TLS it carries), keeping each request head it read."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.heads: list[bytes] = []

    def __enter__(self) -> ConnectProxy:
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += client.recv(4096)
        self.heads.append(head)
        host, _, port = head.split()[1].decode().rpartition(":")
        with client, socket.create_connection((host, int(port))) as service:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            threading.Thread(target=_relay, args=(service, client), daemon=True).start()
            _relay(client, service)


def _relay(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def soap_server(pki) -> Iterator[tuple[list[StubRequest], str]]:
    """A stub answering every request with a SOAP answer, and the requests it saw."""
    seen: list[StubRequest] = []

    def answer(request: StubRequest) -> StubResponse:
        seen.append(request)
        return StubResponse(200, answer_to(request.body))

    tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)
    with StubServer(answer, tls) as server:
        yield seen, f"{server.url}/service"


def test_the_default_wire_tunnels_through_the_environments_proxy(
    load, settings, proxy_environment, soap_server
) -> None:
    seen, url = soap_server
    with ConnectProxy() as proxy:
        proxy_environment.setenv("HTTPS_PROXY", f"http://some%20one:s3cret@127.0.0.1:{proxy.port}")
        with Channel.connect(load("org-auth"), settings) as channel:
            for _ in range(2):  # the second over the same tunnel, kept alive
                assert channel.call(Call(url, envelope_for(url))).payload.tag == f"{{{TEST_NS}}}ok"
    [head] = proxy.heads
    target = urlsplit(url).netloc
    assert head.startswith(f"CONNECT {target} HTTP/1.".encode())
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
    authorization = {name.lower(): value for name, value in fields.items()}[b"proxy-authorization"]
    assert authorization == b"Basic " + base64.b64encode(b"some one:s3cret")
    # TLS ran end to end: the service saw our client certificate, not the proxy.
    assert [request.client_certificate for request in seen] == [load("org-auth").certificate] * 2


def test_no_proxy_of_the_environment_bypasses_the_default_wires_proxy(
    load, settings, proxy_environment, soap_server
) -> None:
    seen, url = soap_server
    with ConnectProxy() as proxy:
        proxy_environment.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        proxy_environment.setenv("NO_PROXY", "example.invalid,127.0.0.1")
        with Channel.connect(load("org-auth"), settings) as channel:
            channel.call(Call(url, envelope_for(url)))
    assert proxy.heads == []
    assert len(seen) == 1


def test_the_default_wire_reads_the_environment_when_it_is_made(
    load, settings, proxy_environment, soap_server
) -> None:
    seen, url = soap_server
    with ConnectProxy() as proxy, Channel.connect(load("org-auth"), settings) as channel:
        proxy_environment.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        channel.call(Call(url, envelope_for(url)))
    assert proxy.heads == []
    assert len(seen) == 1


def test_the_default_wire_names_a_failing_proxy_without_its_password(
    load, settings, proxy_environment
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        proxy_environment.setenv("HTTPS_PROXY", f"http://user:s3cret@127.0.0.1:{port}")
        url = "https://dmp.example.invalid/service"
        with (
            Channel.connect(load("org-auth"), settings) as channel,
            pytest.raises(ConnectError) as caught,
        ):
            channel.call(Call(url, envelope_for(url)))
    assert f"the proxy http://127.0.0.1:{port} failed" in caught.value.message
    assert "s3cret" not in str(caught.value)
    assert "dmp.example.invalid" not in str(caught.value)


def test_a_pool_wire_remembers_a_bounded_number_of_routes(pki: examplepki.ExamplePKI) -> None:
    # A caller posting to ever new URLs (a query string per call) must not grow the wire without
    # bound; the host's one pool stays.
    profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": "https://127.0.0.1:9/dmp"})
    wire = PoolWire.connect(None, profile.tls_settings())
    try:
        for number in range(_ROUTES_KEPT + 10):
            wire._route(f"https://127.0.0.1:9/dmp?call={number}")
        assert 0 < len(wire._routes) <= _ROUTES_KEPT
        assert wire.hosts == ("127.0.0.1:9",)
    finally:
        wire.close()
    assert wire.hosts == ()
