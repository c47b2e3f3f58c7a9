"""The client against hostile servers: a loopback HTTPS server written here answers each call
with a bad certificate, an old protocol, a cut or trickled answer, silence, an HTML page, a non-SOAP
or SOAP 1.1 answer, an entity attack, a wrong RelatesTo, or MTOM parts that lie.

Each case ends in the project exception it names, from the library (a DMP call, an INSi call, a
TD3.2 retrieval into a directory) and from the command line (exit 1 or 3, one ``cisis-transport:``
line on stderr, no traceback), with no file left where the document was to be written. Calls run
with a 2 s deadline; the trickling and silent servers never stop on their own, so a call that
returns at all was ended by its deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import ssl
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from lxml import etree

from tests.test_cli import PROFILE
from tests.test_insi_client import ECETINSI
from tests.test_stub_dmp import new_patient
from tests.test_stub_xds import entry
from transport import examplepki
from transport.cli import main
from transport.config import example_profile
from transport.dmp import xds
from transport.dmp.client import DmpClient
from transport.errors import (
    CisisError,
    IntegrityError,
    MtomError,
    SoapFault,
    TLSError,
    TransportError,
)
from transport.soap import addressing, mtom
from transport.stubs.soap import response_envelope
from transport.teleservices.client import AccessMode
from transport.teleservices.insi import InsiClient
from transport.vihf import INS_TEST_OID, AuthMode, Patient
from transport.xml import parse_xml

DEADLINE = 2.0
HANG_GUARD = 60.0
"""Seconds after which a call still running is reported as hung (never reached when it works)."""
SOAP12 = "application/soap+xml; charset=utf-8"
CONTENT = b"%PDF-1.4 le vrai document\n" * 40
pytestmark = pytest.mark.usefixtures("config_home")


# --- the hostile server --------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request the hostile server read: headers (lower-case keys) and body."""

    headers: dict[str, str]
    body: bytes

    def envelope(self) -> etree._Element:
        decoded = mtom.decode(self.body, self.headers.get("content-type", SOAP12))
        return parse_xml(decoded.root)

    def action(self) -> str:
        return addressing.read(self.envelope(), "Action") or ""

    def message_id(self) -> str:
        return addressing.read(self.envelope(), "MessageID") or ""


Behaviour = Callable[[ssl.SSLSocket, Request, threading.Event], None]
"""What the server does once it has read a request: write to the socket (or not), then return."""


class HostileServer:
    """Serves ``behaviour`` on loopback over TLS with ``context``, one thread per connection."""

    def __init__(self, context: ssl.SSLContext, behaviour: Behaviour) -> None:
        self.context = context
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        # shutdown, not only close: it wakes the thread blocked in accept().
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(connection,), daemon=True).start()

    def _one(self, connection: socket.socket) -> None:
        try:
            with self.context.wrap_socket(connection, server_side=True) as tls:
                tls.settimeout(HANG_GUARD)
                request = _read_request(tls)
                if request is not None:
                    self.behaviour(tls, request, self.stopping)
        except (OSError, ssl.SSLError):
            pass  # the client gave up, or refused the handshake: what these tests provoke


def _read_request(tls: ssl.SSLSocket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            return None
        body += chunk
    return Request(headers, body)


def http(status: int, body: bytes, content_type: str = SOAP12, length: int | None = None) -> bytes:
    """An HTTP/1.1 answer; ``length``: the Content-Length to claim (default: the truth)."""
    size = len(body) if length is None else length
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {size}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def answering(make: Callable[[Request], bytes]) -> Behaviour:
    def behaviour(tls: ssl.SSLSocket, request: Request, _: threading.Event) -> None:
        tls.sendall(make(request))

    return behaviour


def soap_answer(request: Request, payload: etree._Element, relates_to: str | None = None) -> bytes:
    action = f"{request.action()}Response"
    return response_envelope(action, relates_to or request.message_id(), payload)


# --- the cases -----------------------------------------------------------------------------------


def _cut(chunked: bool) -> Behaviour:
    def behaviour(tls: ssl.SSLSocket, request: Request, _: threading.Event) -> None:
        start = b'<?xml version="1.0"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap'
        if chunked:
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Type: {SOAP12}\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            tls.sendall(head.encode() + f"{len(start) * 4:x}\r\n".encode() + start)
        else:
            tls.sendall(http(200, start, length=len(start) * 4))
        tls.shutdown(socket.SHUT_RDWR)

    return behaviour


def _trickle(tls: ssl.SSLSocket, request: Request, stopping: threading.Event) -> None:
    tls.sendall(http(200, b"", length=10**6))
    while not stopping.wait(0.05):
        tls.sendall(b" ")


def _trickle_head(tls: ssl.SSLSocket, request: Request, stopping: threading.Event) -> None:
    """The status line and headers a byte at a time, never ending them."""
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nX-Slow: " + b"a" * 10**4:
        if stopping.wait(0.05):
            return
        tls.sendall(bytes([byte]))


def _silent(tls: ssl.SSLSocket, request: Request, stopping: threading.Event) -> None:
    stopping.wait(HANG_GUARD)


def _fault(prefix_declared: bool) -> Callable[[Request], bytes]:
    declaration = ' xmlns:si="urn:si"' if prefix_declared else ""
    body = (
        '<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>'
        f"<soap:Fault{declaration}><soap:Code><soap:Value>soap:Sender</soap:Value><soap:Subcode>"
        "<soap:Value>inconnu:ErreurMystere</soap:Value></soap:Subcode></soap:Code>"
        '<soap:Reason><soap:Text xml:lang="fr">refus</soap:Text></soap:Reason></soap:Fault>'
        "</soap:Body></soap:Envelope>"
    ).encode()
    return lambda request: http(500, body)


SOAP11_FAULT = (
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>'
    b"<faultcode>s:Client</faultcode><faultstring>refus</faultstring></s:Fault></s:Body>"
    b"</s:Envelope>"
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>'
    b"<a>&x;</a></soap:Body></soap:Envelope>"
)
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    b'<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>'
    b"<a>&d;</a></soap:Body></soap:Envelope>"
)
PARAMETER_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY % r SYSTEM "http://127.0.0.1:1/evil.dtd"> %r;]>'
    b'<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body/>'
    b"</soap:Envelope>"
)


def _wrong_relates_to(request: Request) -> bytes:
    payload = etree.Element("{urn:hl7-org:v3}MCCI_IN000002UV01")
    return http(200, soap_answer(request, payload, relates_to="urn:uuid:autre-requete"))


@dataclass(frozen=True)
class Case:
    """A hostile behaviour and the exception the client must end in."""

    behaviour: Behaviour
    expected: type[CisisError]


MESSAGE_CASES: dict[str, Case] = {
    "cut-content-length": Case(_cut(chunked=False), TransportError),
    "cut-chunked": Case(_cut(chunked=True), TransportError),
    "html-500": Case(
        answering(lambda r: http(500, b"<html><body>Erreur</body></html>", "text/html")),
        TransportError,
    ),
    "non-xml-200": Case(answering(lambda r: http(200, b"bonjour, pas du XML")), TransportError),
    "soap11-fault": Case(answering(lambda r: http(500, SOAP11_FAULT, "text/xml")), TransportError),
    "fault-undeclared-subcode-prefix": Case(answering(_fault(False)), SoapFault),
    "fault-unknown-subcode-prefix": Case(answering(_fault(True)), SoapFault),
    "xxe": Case(answering(lambda r: http(200, XXE)), TransportError),
    "billion-laughs": Case(answering(lambda r: http(200, LAUGHS)), TransportError),
    "parameter-entity": Case(answering(lambda r: http(200, PARAMETER_ENTITY)), TransportError),
    "trickling": Case(_trickle, TransportError),
    "trickling-headers": Case(_trickle_head, TransportError),
    "silent": Case(_silent, TransportError),
    "wrong-relates-to": Case(answering(_wrong_relates_to), TransportError),
}
"""Hostile answers to any call, and the exception each must end in."""


# --- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostilePki:
    """A CA the client is made to trust (beside the example one), its leaves, and another CA's."""

    bundle: Path
    contexts: dict[str, ssl.SSLContext]


@pytest.fixture(scope="module")
def hostile(pki: examplepki.ExamplePKI, tmp_path_factory: pytest.TempPathFactory) -> HostilePki:
    directory = tmp_path_factory.mktemp("hostile")
    now = datetime.now(UTC)
    trusted = examplepki.make_ca(
        "TEST AC SERVEURS HOSTILES",
        not_before=now - timedelta(days=2),
        not_after=now + timedelta(days=30),
    )
    stranger = examplepki.make_ca(
        "TEST AC INCONNUE", not_before=now - timedelta(days=2), not_after=now + timedelta(days=30)
    )
    bundle = directory / "bundle.pem"
    bundle.write_bytes(pki.ca_bundle.read_bytes() + trusted.cert.public_bytes(Encoding.PEM))

    def leaf(name: str, issuer: examplepki.Issued, **changes) -> ssl.SSLContext:
        options = {
            "not_before": now - timedelta(days=1),
            "not_after": now + timedelta(days=10),
            "san_dns": ("localhost",),
            "san_ip": ("127.0.0.1",),
            **changes,
        }
        issued = examplepki.issue(
            issuer,
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
            key_usage={"digital_signature", "key_encipherment"},
            extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,),
            **options,
        )
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        examplepki.write_pem_cert(cert, issued.cert)
        examplepki.write_pem_key(key, issued.key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return context

    contexts = {
        "good": leaf("good", trusted),
        "untrusted": leaf("untrusted", stranger),
        "expired": leaf(
            "expired",
            trusted,
            not_before=now - timedelta(days=20),
            not_after=now - timedelta(days=1),
        ),
        "wrong-host": leaf("wrong-host", trusted, san_dns=("ailleurs.example",), san_ip=()),
    }
    old = leaf("old-tls", trusted)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():
        # Deprecated, and the point: a server that speaks nothing newer than TLS 1.1.
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    # An OpenSSL refusing level 0 leaves a server unable to speak at all: as bad for the client.
    with contextlib.suppress(ssl.SSLError):
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    contexts["old-tls"] = old
    return HostilePki(bundle, contexts)


TLS_CASES = ("untrusted", "expired", "wrong-host", "old-tls")


# --- running a call ------------------------------------------------------------------------------


def within_guard(call: Callable[[], object]) -> BaseException | None:
    """Run ``call`` in a thread; the exception it ended in (None: it returned)."""
    ended: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            ended.append(error)
        else:
            ended.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    assert ended, "the call hung past its deadline"
    return ended[0]


def dmp_client(pki: examplepki.ExamplePKI, hostile: HostilePki, url: str) -> DmpClient:
    profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": f"{url}/si-dmp-server/v2/services"})
    profile = replace(profile, ca_bundle=hostile.bundle, deadline=DEADLINE, retries=0)
    return DmpClient.from_profile(profile)


def insi_client(pki: examplepki.ExamplePKI, hostile: HostilePki, url: str) -> InsiClient:
    profile = example_profile(pki, AuthMode.INDIRECTE, {"tlsi": f"{url}/lps"})
    profile = replace(profile, ca_bundle=hostile.bundle, deadline=DEADLINE, retries=0)
    return InsiClient.from_profile(profile, AccessMode.CERTIFICATE)


@pytest.fixture
def cli(pki, hostile, tmp_path, monkeypatch, capsys):
    """Run the CLI with a profile trusting the hostile CA and a 2 s deadline; (code, out, err)."""
    monkeypatch.setenv("TEST_P12_PASSWORD", pki.password)
    profile = tmp_path / "profile.toml"
    text = PROFILE.format(pki=pki.directory).replace(
        f'ca_bundle = "{pki.directory}/ca-bundle.pem"',
        f'ca_bundle = "{hostile.bundle}"\ndeadline = {DEADLINE}\nretries = 0',
    )
    assert str(hostile.bundle) in text
    # INSi in certificate mode with its own INSI-AUTO credential: no warning about the name of
    # the TLS one, so that stderr holds the error line alone.
    text += f'\n[credentials.insi]\npkcs12 = "{pki.directory}/insi-auto.p12"\n'
    text += 'password_env = "TEST_P12_PASSWORD"\n'
    profile.write_text(text, encoding="utf-8")

    def run(*argv: str) -> tuple[int, str, str]:
        code = within_guard_code(lambda: main([*argv, "--profile", str(profile)]))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def within_guard_code(call: Callable[[], int]) -> int:
    codes: list[int] = []
    error = within_guard(lambda: codes.append(call()))
    assert error is None, f"the CLI raised {error!r}"
    return codes[0]


def dmp_exists(patient: Patient, url: str) -> tuple[str, ...]:
    """The arguments of ``dmp exists`` for ``patient`` against the hostile server at ``url``."""
    endpoint = f"{url}/si-dmp-server/v2/services"
    ins = ("--ins", patient.ins, "--ins-oid", INS_TEST_OID)
    return ("dmp", "exists", *ins, "--endpoint", endpoint)


def assert_one_line(code: int, err: str, expected: type[CisisError]) -> None:
    assert code == (1 if issubclass(expected, SoapFault | IntegrityError) else 3)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cisis-transport: ")


# --- the tests: TLS ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", TLS_CASES)
def test_bad_certificates_and_old_tls_end_in_tls_errors(pki, hostile, cli, case: str) -> None:
    patient = new_patient()
    with HostileServer(hostile.contexts[case], _silent) as server:
        with dmp_client(pki, hostile, server.url) as client:
            assert isinstance(within_guard(lambda: client.exists(patient)), TLSError)
        with insi_client(pki, hostile, server.url) as insi:
            assert isinstance(within_guard(lambda: insi.search(ECETINSI)), TLSError)
        code, _, err = cli(*dmp_exists(patient, server.url))
        assert_one_line(code, err, TLSError)


def test_the_good_certificate_is_accepted(pki, hostile) -> None:
    """The control: the same server with a trusted, valid, well-named certificate is reached (so
    the TLS refusals above are the certificates', not the harness')."""
    with HostileServer(hostile.contexts["good"], answering(_wrong_relates_to)) as server:
        client = dmp_client(pki, hostile, server.url)
        with client:
            error = within_guard(lambda: client.exists(new_patient()))
    assert isinstance(error, TransportError) and "relates to" in str(error)


# --- the tests: answers --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MESSAGE_CASES))
def test_hostile_answers_end_in_typed_errors(pki, hostile, cli, name: str) -> None:
    case = MESSAGE_CASES[name]
    patient = new_patient()
    with HostileServer(hostile.contexts["good"], case.behaviour) as server:
        with dmp_client(pki, hostile, server.url) as client:
            error = within_guard(lambda: client.exists(patient))
        assert isinstance(error, case.expected), repr(error)
        if name in ("trickling", "trickling-headers", "silent"):
            assert "deadline" in str(error)
        with insi_client(pki, hostile, server.url) as insi:
            assert isinstance(within_guard(lambda: insi.search(ECETINSI)), case.expected)
        code, _, err = cli(*dmp_exists(patient, server.url))
        assert_one_line(code, err, case.expected)
        code, _, err = cli(
            "insi",
            "search",
            "--nom",
            "ECETINSI",
            "--prenom",
            "PIERRE-ALAIN",
            "--sexe",
            "M",
            "--naissance",
            "2009-07-14",
            "--endpoint",
            f"{server.url}/lps",
        )
        assert_one_line(code, err, case.expected)
    assert patient.ins not in err


# --- the tests: MTOM retrievals ------------------------------------------------------------------


def registered(patient: Patient) -> xds.DocumentEntry:
    """The entry the registry announces: CONTENT's size and SHA-1."""
    return replace(
        entry(CONTENT, patient),
        hash=hashlib.sha1(CONTENT).hexdigest(),  # noqa: S324 - XDS's hash is SHA-1
        size=len(CONTENT),
        repository_unique_id="1.2.250.1.213.4.1.1.1.2",
        entry_uuid=xds.new_entry_uuid(),
    )


def _retrieval(
    document: xds.DocumentEntry, part: bytes, cut: int | None = None, claim_all: bool = False
) -> Behaviour:
    """Answers GetDocuments with ``document`` and a retrieval with ``part`` as its content; with
    ``cut``, the MTOM body ends after that many bytes, with a Content-Length that says so or, with
    ``claim_all``, that claims the whole body (the connection is then cut mid-part)."""

    def behaviour(tls: ssl.SSLSocket, request: Request, _: threading.Event) -> None:
        if request.action() == xds.ACTION_STORED_QUERY:
            tls.sendall(http(200, soap_answer(request, xds.query_response([document]))))
            return
        content_id = mtom.new_content_id()
        wanted = xds.DocumentRequest(document.repository_unique_id or "", document.unique_id)
        payload = xds.retrieve_response([(wanted, document.mime_type, content_id)])
        message = mtom.encode(
            soap_answer(request, payload), [mtom.Attachment(content_id, part, document.mime_type)]
        )
        whole = b"".join(message.chunks())
        body = whole[:cut]
        claimed = len(whole) if claim_all else None
        tls.sendall(http(200, body, message.content_type, length=claimed))

    return behaviour


MTOM_CASES: dict[str, tuple[Callable[[xds.DocumentEntry], Behaviour], type[CisisError]]] = {
    "size-lies": (lambda d: _retrieval(d, CONTENT[:-7]), IntegrityError),
    "hash-lies": (lambda d: _retrieval(d, CONTENT.replace(b"vrai", b"faux")), IntegrityError),
    "truncated-part": (lambda d: _retrieval(d, CONTENT, cut=len(CONTENT) // 2), MtomError),
    "no-end-boundary": (lambda d: _retrieval(d, CONTENT, cut=-4), MtomError),
    "connection-cut-mid-part": (
        lambda d: _retrieval(d, CONTENT, cut=len(CONTENT) // 2, claim_all=True),
        TransportError,
    ),
}


@pytest.mark.parametrize("name", list(MTOM_CASES))
def test_lying_mtom_parts_leave_no_file(pki, hostile, cli, tmp_path: Path, name: str) -> None:
    make, expected = MTOM_CASES[name]
    patient = new_patient()
    document = registered(patient)
    into = tmp_path / "into"
    into.mkdir()
    with HostileServer(hostile.contexts["good"], make(document)) as server:
        with dmp_client(pki, hostile, server.url) as client:
            error = within_guard(lambda: client.retrieve(patient, [document], directory=into))
        assert isinstance(error, expected), repr(error)
        assert list(into.iterdir()) == []
        out = tmp_path / "out" / "document.pdf"
        out.parent.mkdir()
        code, _, err = cli(
            "dmp",
            "retrieve",
            "--ins",
            patient.ins,
            "--ins-oid",
            INS_TEST_OID,
            "--document-id",
            document.unique_id,
            "--out",
            str(out),
            "--endpoint",
            f"{server.url}/si-dmp-server/v2/services",
        )
    assert_one_line(code, err, expected)
    assert list(out.parent.iterdir()) == []


def test_an_honest_retrieval_through_the_same_harness_succeeds(pki, hostile, tmp_path) -> None:
    """The control of the MTOM cases: the true part is written, byte-exact."""
    patient = new_patient()
    document = registered(patient)
    with HostileServer(hostile.contexts["good"], _retrieval(document, CONTENT)) as server:
        client = dmp_client(pki, hostile, server.url)
        with client:
            retrieved = client.retrieve(patient, [document], directory=tmp_path)
    assert retrieved.documents[0].read_bytes() == CONTENT
    assert re.fullmatch(r"[0-9a-f]{40}", retrieved.documents[0].sha1)
