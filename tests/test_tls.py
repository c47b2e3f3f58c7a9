"""Mutual TLS over loopback with the example PKI: round trips, keep-alive and every refusal."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography.x509.oid import NameOID
from requests.adapters import HTTPAdapter
from requests.exceptions import ProxyError

from transport import examplepki
from transport.credentials import Credential, load_pkcs12
from transport.errors import ConfigurationError, CredentialError, TLSError, TransportError
from transport.examplepki import ExamplePKI
from transport.soap.channel import send
from transport.stubs import ServerTLS, StubRequest, StubResponse, StubServer
from transport.tls import (
    DMP_CIPHERS,
    DeadlineSocket,
    MutualTLSAdapter,
    TLSSettings,
    create_context,
    create_session,
    deadline,
)

BODY = b"<ping/>"
HEADERS = {"Content-Type": "application/xml"}
ORG_CN = "CABINET MEDICAL EXEMPLE"
# A TLS 1.2 suite OpenSSL offers by default but which is not one of the DMP's four.
NON_DMP_SUITE = "ECDHE-RSA-AES128-SHA256"


def handler(request: StubRequest) -> StubResponse:
    """Answer <ok/>, telling which client certificate and which connection the request came on.

    The server runs each connection in its own thread, and thread names are never reused, so the
    thread name identifies the connection.
    """
    certificate = request.client_certificate
    common_name = (
        str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        if certificate is not None
        else ""
    )
    return StubResponse(
        200,
        b"<ok/>",
        "application/xml",
        {"X-Client-CN": common_name, "X-Connection": threading.current_thread().name},
    )


@dataclass(frozen=True)
class CipherServerTLS(ServerTLS):
    """A server restricted to some TLS 1.2 suites."""

    ciphers: str | None = None

    def context(self) -> ssl.SSLContext:
        context = super().context()
        if self.ciphers:
            context.set_ciphers(self.ciphers)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ExamplePKI:
    return examplepki.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> ExamplePKI:
    """A second example PKI: same names, other CAs."""
    return examplepki.generate(tmp_path_factory.mktemp("other-pki"))


@pytest.fixture(scope="module")
def org_auth(pki: ExamplePKI) -> Credential:
    return load_pkcs12(pki.p12("org-auth"), pki.password)


@pytest.fixture(scope="module")
def settings(pki: ExamplePKI) -> TLSSettings:
    return TLSSettings(ca_bundle=pki.ca_bundle)


@pytest.fixture(scope="module")
def server_tls(pki: ExamplePKI) -> ServerTLS:
    return ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)


@pytest.fixture(scope="module")
def server(server_tls: ServerTLS) -> Iterator[StubServer]:
    with StubServer(handler, server_tls) as running:
        yield running


def _port(server: StubServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "common_name"),
    [("org-auth", ORG_CN), ("cps-auth", "899700000001"), ("insi-auto", "INSI-AUTO")],
)
def test_round_trip_presents_the_client_certificate(
    pki: ExamplePKI, settings: TLSSettings, server: StubServer, name: str, common_name: str
) -> None:
    credential = load_pkcs12(pki.p12(name), pki.password)
    with create_session(credential, settings) as session:
        response = send(session, f"{server.url}/service", BODY, HEADERS)
    assert response.status_code == 200
    assert response.content == b"<ok/>"
    assert response.headers["X-Client-CN"] == common_name


def test_round_trip_with_dmp_ciphers(
    pki: ExamplePKI, org_auth: Credential, server: StubServer
) -> None:
    settings = TLSSettings(ca_bundle=pki.ca_bundle, ciphers=DMP_CIPHERS)
    with create_session(org_auth, settings) as session:
        response = send(session, f"{server.url}/service", BODY, HEADERS)
    assert response.status_code == 200
    assert response.headers["X-Client-CN"] == ORG_CN


def test_dmp_ciphers_negotiate_a_dmp_suite_over_tls12(
    pki: ExamplePKI, org_auth: Credential, server_tls: ServerTLS
) -> None:
    tls12_only = ServerTLS(
        server_tls.certificate,
        server_tls.key,
        server_tls.client_ca,
        maximum_version=ssl.TLSVersion.TLSv1_2,
    )
    context = create_context(org_auth, TLSSettings(ca_bundle=pki.ca_bundle, ciphers=DMP_CIPHERS))
    with StubServer(handler, tls12_only) as server:
        with (
            socket.create_connection(("127.0.0.1", _port(server))) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as connection,
        ):
            assert connection.version() == "TLSv1.2"
            cipher = connection.cipher()
            assert cipher is not None
            assert cipher[0] in DMP_CIPHERS
        # And a session over such a server works too.
        settings = TLSSettings(ca_bundle=pki.ca_bundle, ciphers=DMP_CIPHERS)
        with create_session(org_auth, settings) as session:
            response = send(session, f"{server.url}/service", BODY, HEADERS)
        assert response.headers["X-Client-CN"] == ORG_CN


def test_dmp_ciphers_are_the_only_tls12_suites_offered(
    pki: ExamplePKI, org_auth: Credential, server_tls: ServerTLS
) -> None:
    non_dmp_only = CipherServerTLS(
        server_tls.certificate,
        server_tls.key,
        server_tls.client_ca,
        maximum_version=ssl.TLSVersion.TLSv1_2,
        ciphers=NON_DMP_SUITE,
    )
    with StubServer(handler, non_dmp_only) as server:
        url = f"{server.url}/service"
        # OpenSSL's defaults include the server's suite…
        with create_session(org_auth, TLSSettings(ca_bundle=pki.ca_bundle)) as session:
            assert send(session, url, BODY, HEADERS).status_code == 200
        # …the DMP list does not.
        dmp = TLSSettings(ca_bundle=pki.ca_bundle, ciphers=DMP_CIPHERS)
        with create_session(org_auth, dmp) as session, pytest.raises(TLSError):
            send(session, url, BODY, HEADERS)


def test_keep_alive_reuses_one_connection(
    org_auth: Credential, settings: TLSSettings, server: StubServer
) -> None:
    url = f"{server.url}/service"
    with create_session(org_auth, settings) as session:
        first = send(session, url, BODY, HEADERS)
        second = send(session, url, BODY, HEADERS)
        pools = session.get_adapter(url).poolmanager.pools
        keys = list(pools.keys())
        assert len(keys) == 1
        assert pools[keys[0]].num_connections == 1
    assert first.headers["X-Connection"] == second.headers["X-Connection"]
    # The identifier does tell connections apart: another session makes another connection.
    with create_session(org_auth, settings) as session:
        third = send(session, url, BODY, HEADERS)
    assert third.headers["X-Connection"] != first.headers["X-Connection"]


# --- refusals ------------------------------------------------------------------------------------


def test_no_client_certificate_is_a_tls_error(settings: TLSSettings, server: StubServer) -> None:
    with create_session(None, settings) as session, pytest.raises(TLSError):
        send(session, f"{server.url}/service", BODY, HEADERS)


def test_client_certificate_from_untrusted_ca_is_a_tls_error(
    other_pki: ExamplePKI, org_auth: Credential, settings: TLSSettings, server: StubServer
) -> None:
    stranger = load_pkcs12(other_pki.p12("org-auth"), other_pki.password)
    # Same subject as the trusted org-auth, so only the issuing CA makes the difference.
    assert stranger.dn == org_auth.dn
    assert stranger.certificate != org_auth.certificate
    with create_session(stranger, settings) as session, pytest.raises(TLSError):
        send(session, f"{server.url}/service", BODY, HEADERS)
    with create_session(org_auth, settings) as session:
        assert send(session, f"{server.url}/service", BODY, HEADERS).status_code == 200


@pytest.fixture(scope="module")
def foreign_server(pki: ExamplePKI, other_pki: ExamplePKI) -> Iterator[StubServer]:
    """A server whose certificate comes from the other PKI (but that trusts our clients)."""
    foreign = ServerTLS(other_pki.server_cert, other_pki.server_key, pki.ca_bundle)
    with StubServer(handler, foreign) as running:
        yield running


def test_server_certificate_from_another_ca_is_refused(
    org_auth: Credential, settings: TLSSettings, foreign_server: StubServer
) -> None:
    with create_session(org_auth, settings) as session, pytest.raises(TLSError) as caught:
        send(session, f"{foreign_server.url}/service", BODY, HEADERS)
    assert "certificate verif" in str(caught.value).lower()


def test_requests_verify_and_ca_bundle_variables_are_ignored(
    pki: ExamplePKI,
    other_pki: ExamplePKI,
    org_auth: Credential,
    settings: TLSSettings,
    server: StubServer,
    foreign_server: StubServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Trusting the foreign server through requests' own knobs must change nothing.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other_pki.ca_bundle))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(other_pki.ca_bundle))
    with create_session(org_auth, settings) as session:
        session.verify = str(other_pki.ca_bundle)
        with pytest.raises(TLSError):
            send(session, f"{foreign_server.url}/service", BODY, HEADERS)
        session.verify = False
        with pytest.raises(TLSError):
            send(session, f"{foreign_server.url}/service", BODY, HEADERS)
        assert send(session, f"{server.url}/service", BODY, HEADERS).status_code == 200


def test_only_the_configured_bundle_is_trusted(
    pki: ExamplePKI, org_auth: Credential, settings: TLSSettings, server: StubServer
) -> None:
    bundle_size = pki.ca_bundle.read_bytes().count(b"BEGIN CERTIFICATE")
    assert bundle_size == 3
    url = f"{server.url}/service"
    with create_session(org_auth, settings) as session:
        assert send(session, url, BODY, HEADERS).status_code == 200
        context = session.get_adapter(url).poolmanager.connection_pool_kw["ssl_context"]
        # After a real exchange, no system or certifi anchor has been added to the context.
        assert len(context.get_ca_certs()) == bundle_size
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_old_protocol_server_is_a_tls_error(
    pki: ExamplePKI, org_auth: Credential, settings: TLSSettings, server_tls: ServerTLS
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = ServerTLS(
            server_tls.certificate,
            server_tls.key,
            server_tls.client_ca,
            minimum_version=ssl.TLSVersion.TLSv1,
            maximum_version=ssl.TLSVersion.TLSv1_1,
        )
        with StubServer(handler, old) as server:
            _assert_server_speaks_tls11(pki, server)
            with create_session(org_auth, settings) as session, pytest.raises(TLSError):
                send(session, f"{server.url}/service", BODY, HEADERS)


def _assert_server_speaks_tls11(pki: ExamplePKI, server: StubServer) -> None:
    """Check that the old server is reachable at all, so that the refusal is the client's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki.ca_bundle))
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(str(pki.cert("org-auth")), str(pki.key("org-auth")))
    try:
        with (
            socket.create_connection(("127.0.0.1", _port(server))) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as connection,
        ):
            version = connection.version()
    except ssl.SSLError as error:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.0/1.1 at all: {error}")
    assert version in ("TLSv1", "TLSv1.1")


def test_plain_http_is_refused_before_connecting(
    org_auth: Credential, settings: TLSSettings
) -> None:
    # The port is bound but does not listen: had the session tried to connect, the error would be
    # a TransportError (connection refused), not the ConfigurationError raised before connecting.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with (
            create_session(org_auth, settings) as session,
            pytest.raises(ConfigurationError, match="plain HTTP") as caught,
        ):
            send(session, f"http://127.0.0.1:{port}/service", BODY, HEADERS)
    assert not isinstance(caught.value, TransportError)
    assert f"http://127.0.0.1:{port}/service" in str(caught.value)


# The second path would look like TLS to a check that read the URL in the error message.
@pytest.mark.parametrize("path", ["/service", "/SSLService"])
def test_connection_refused_is_a_transport_error_not_tls(
    org_auth: Credential, settings: TLSSettings, path: str
) -> None:
    # A bound socket that does not listen: the port stays ours, and connecting is refused.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with (
            create_session(org_auth, settings) as session,
            pytest.raises(TransportError) as caught,
        ):
            send(session, f"https://127.0.0.1:{port}{path}", BODY, HEADERS)
    assert not isinstance(caught.value, TLSError)
    assert str(port) in str(caught.value)


def test_missing_ca_bundle_is_a_configuration_error(org_auth: Credential, tmp_path: Path) -> None:
    missing = tmp_path / "absent-bundle.pem"
    with pytest.raises(ConfigurationError, match="CA bundle not found") as caught:
        create_session(org_auth, TLSSettings(ca_bundle=missing))
    assert str(missing) in str(caught.value)


def test_ca_bundle_without_certificate_is_a_configuration_error(
    org_auth: Credential, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-bundle.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="no usable certificate"):
        create_context(org_auth, TLSSettings(ca_bundle=empty))


def test_a_key_that_cannot_sign_a_digest_is_refused(
    org_auth: Credential, settings: TLSSettings
) -> None:
    """Not in memory, and only able to sign whole messages: TLS cannot use it (a card key
    signs digests, see test_pkcs11)."""

    class MessageSigner:
        certificate = org_auth.certificate

        def sign(self, data: bytes, algorithm: str = "rsa-sha256") -> bytes:
            return org_auth.signer.sign(data, algorithm)

    token = Credential("token:slot0", org_auth.certificate, org_auth.chain, MessageSigner(), None)
    with pytest.raises(CredentialError) as caught:
        create_context(token, settings)
    assert caught.value.source == "token:slot0"


# --- the private key on its way to OpenSSL -------------------------------------------------------


class WriteSpy:
    """Records what os.write writes, and the mode of the file it writes to."""

    def __init__(self) -> None:
        self.writes: list[tuple[bytes, int, str]] = []
        self._write = os.write
        self._thread = threading.get_ident()

    def __call__(self, fd: int, data: bytes) -> int:
        if threading.get_ident() == self._thread:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            target = os.readlink(f"/proc/self/fd/{fd}")
            self.writes.append((bytes(data), mode, target))
        return self._write(fd, data)

    def pem_writes(self) -> list[tuple[bytes, int, str]]:
        # tempfile also writes a probe (b"blat") when it first picks its directory.
        return [write for write in self.writes if b"-----BEGIN " in write[0]]

    def key_writes(self) -> list[tuple[bytes, int, str]]:
        return [write for write in self.pem_writes() if b"PRIVATE KEY" in write[0]]


def _assert_key_written_encrypted(spy: WriteSpy, credential: Credential) -> None:
    key_writes = spy.key_writes()
    assert len(key_writes) == 1
    data = key_writes[0][0]
    assert b"ENCRYPTED PRIVATE KEY" in data
    assert b"BEGIN PRIVATE KEY" not in data
    assert b"BEGIN RSA PRIVATE KEY" not in data
    # The certificate went through the same path, in the clear as it should.
    assert any(b"BEGIN CERTIFICATE" in write[0] for write in spy.pem_writes())
    assert len(spy.pem_writes()) == 2
    assert credential.private_key is not None


def test_key_written_encrypted_to_a_private_temporary_file_then_removed(
    org_auth: Credential, settings: TLSSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setenv("TMPDIR", str(temporary))
    monkeypatch.setattr(tempfile, "tempdir", None)
    spy = WriteSpy()
    monkeypatch.setattr(os, "write", spy)

    context = create_context(org_auth, settings)

    monkeypatch.undo()
    assert len(context.get_ca_certs()) == 3
    _assert_key_written_encrypted(spy, org_auth)
    for _data, mode, path in spy.pem_writes():
        assert Path(path).parent == temporary
        assert Path(path).name.startswith("cisis-transport-")
        assert mode == 0o600
    assert not [p for p in temporary.iterdir() if p.name.startswith("cisis-transport-")]


def test_key_written_encrypted_to_memory_file(
    org_auth: Credential, settings: TLSSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not hasattr(os, "memfd_create"):
        pytest.skip("no memfd_create on this platform")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    spy = WriteSpy()
    monkeypatch.setattr(os, "write", spy)

    create_context(org_auth, settings)

    monkeypatch.undo()
    _assert_key_written_encrypted(spy, org_auth)
    for _data, _mode, path in spy.pem_writes():
        assert path.startswith("/memfd:cisis-transport")
    assert list(tmp_path.iterdir()) == []


# --- timeouts ------------------------------------------------------------------------------------


@pytest.fixture
def sent_kwargs(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Replace HTTPAdapter.send (what MutualTLSAdapter delegates to) by a recorder."""
    recorded: list[dict] = []

    def fake_send(
        self: HTTPAdapter, request: requests.PreparedRequest, **kwargs
    ) -> requests.Response:
        recorded.append(kwargs)
        response = requests.Response()
        response.status_code = 204
        response.request = request
        response.url = request.url or ""
        return response

    monkeypatch.setattr(HTTPAdapter, "send", fake_send)
    return recorded


def test_default_timeouts_applied(org_auth: Credential, pki: ExamplePKI, sent_kwargs) -> None:
    settings = TLSSettings(ca_bundle=pki.ca_bundle, connect_timeout=3.5, read_timeout=42.0)
    with create_session(org_auth, settings) as session:
        response = session.post("https://service.invalid/x", data=BODY)
        assert response.status_code == 204
        session.post("https://service.invalid/x", data=BODY, timeout=7)
        adapter = session.get_adapter("https://service.invalid/x")
    assert isinstance(adapter, MutualTLSAdapter)
    assert [kwargs["timeout"] for kwargs in sent_kwargs] == [(3.5, 42.0), 7]


def test_adapter_send_sets_timeout_when_none(
    org_auth: Credential, settings: TLSSettings, sent_kwargs
) -> None:
    adapter = MutualTLSAdapter(create_context(org_auth, settings), settings)
    request = requests.Request("POST", "https://service.invalid/x", data=BODY).prepare()
    adapter.send(request)
    adapter.send(request, timeout=None)
    assert [kwargs["timeout"] for kwargs in sent_kwargs] == [
        (settings.connect_timeout, settings.read_timeout)
    ] * 2


def test_dmp_cipher_names_are_known_to_openssl() -> None:
    assert len(DMP_CIPHERS) == 4
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for suite in DMP_CIPHERS:
        context.set_ciphers(suite)
        assert [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"] == [suite]


def test_a_signature_certificate_is_refused_before_any_handshake(
    pki: examplepki.ExamplePKI, settings: TLSSettings
) -> None:
    signature = load_pkcs12(pki.p12("org-sign"), pki.password)
    with pytest.raises(CredentialError, match="clientAuth") as caught:
        create_session(signature, settings)
    assert caught.value.source == str(pki.p12("org-sign"))


# --- proxies and netrc: read once, when the session is made --------------------------------------

_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: a proxy there fails every connection."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return closed.getsockname()[1]


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_https_proxy_of_the_environment_is_used(
    org_auth: Credential,
    settings: TLSSettings,
    server: StubServer,
    closed_port: int,
    no_proxy_environment: pytest.MonkeyPatch,
) -> None:
    no_proxy_environment.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port}")
    with create_session(org_auth, settings) as session, pytest.raises(ProxyError):
        session.post(f"{server.url}/service", data=BODY, headers=HEADERS)


def test_no_proxy_of_the_environment_bypasses_it(
    org_auth: Credential,
    settings: TLSSettings,
    server: StubServer,
    closed_port: int,
    no_proxy_environment: pytest.MonkeyPatch,
) -> None:
    no_proxy_environment.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port}")
    no_proxy_environment.setenv("NO_PROXY", "example.invalid,127.0.0.1")
    with create_session(org_auth, settings) as session:
        for _ in range(2):  # the second time from the per-host decision kept
            response = send(session, f"{server.url}/service", BODY, HEADERS)
            assert response.headers["X-Client-CN"] == ORG_CN


def test_the_environment_is_read_when_the_session_is_made(
    org_auth: Credential,
    settings: TLSSettings,
    server: StubServer,
    closed_port: int,
    no_proxy_environment: pytest.MonkeyPatch,
) -> None:
    with create_session(org_auth, settings) as session:
        no_proxy_environment.setenv("HTTPS_PROXY", f"http://127.0.0.1:{closed_port}")
        response = send(session, f"{server.url}/service", BODY, HEADERS)
    assert response.status_code == 200


def test_netrc_is_not_read(
    pki: ExamplePKI,
    org_auth: Credential,
    settings: TLSSettings,
    tmp_path: Path,
    no_proxy_environment: pytest.MonkeyPatch,
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password s3cret\n")
    netrc.chmod(0o600)
    no_proxy_environment.setenv("NETRC", str(netrc))
    seen: list[str | None] = []

    def record(request: StubRequest) -> StubResponse:
        seen.append(request.headers.get("authorization"))
        return StubResponse(200, b"<ok/>", "application/xml")

    tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)
    with StubServer(record, tls) as running, create_session(org_auth, settings) as session:
        send(session, f"{running.url}/service", BODY, HEADERS)
    assert seen == [None]


# --- request preparation ------------------------------------------------------------------------


def test_requests_carry_the_headers_and_cookies_requests_would_send(
    pki: ExamplePKI, org_auth: Credential, settings: TLSSettings
) -> None:
    seen: list[Mapping[str, str]] = []

    def record(request: StubRequest) -> StubResponse:
        seen.append(dict(request.headers))
        return StubResponse(200, b"<ok/>", "application/xml", {"Set-Cookie": "route=a1; Path=/"})

    tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)
    with StubServer(record, tls) as running, create_session(org_auth, settings) as session:
        session.headers["X-Session"] = "kept"
        headers = {**HEADERS, "Accept-Encoding": None, "X-Call": "1"}
        session.post(f"{running.url}/service", data=BODY, headers=headers)
        session.post(f"{running.url}/service", data=BODY, headers=HEADERS)
    first, second = seen
    assert first["x-session"] == "kept" and first["x-call"] == "1"
    assert first["content-type"] == "application/xml" and first["content-length"] == "7"
    assert first["accept-encoding"] == "identity"  # http.client's, once the session's is removed
    assert "cookie" not in first
    assert second["cookie"] == "route=a1"  # the session's cookie jar still works
    assert second["accept-encoding"] == "gzip, deflate"


def test_a_socket_timeout_follows_the_deadline_and_comes_back_when_set_again(
    pki: ExamplePKI,
) -> None:
    # urllib3 sets the read timeout again before each request on a kept-alive connection; the
    # TLS socket skips a timeout it already has, and must still undo one the deadline shortened.
    context = create_context(None, TLSSettings(pki.ca_bundle))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        plain = socket.create_connection(listener.getsockname())
        with context.wrap_socket(
            plain, server_hostname="localhost", do_handshake_on_connect=False
        ) as sock:
            assert isinstance(sock, DeadlineSocket)
            sock.settimeout(30.0)
            sock.settimeout(30.0)
            assert sock.gettimeout() == 30.0
            with deadline(time.monotonic() + 2.0):
                sock._bound()
                assert sock.gettimeout() <= 2.0
                sock.settimeout(30.0)
                assert sock.gettimeout() == 30.0
                sock._bound()
                assert sock.gettimeout() <= 2.0
            sock._bound()  # a call without deadline on the same connection
            assert sock.gettimeout() == 30.0
            sock.settimeout(None)
            assert sock.gettimeout() is None
