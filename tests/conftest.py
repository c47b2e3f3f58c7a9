"""Shared fixtures: one fresh example PKI per test session, credentials, the echo stub, the stub
server (a module's ``STUB_SERVICES`` names the services it mounts, default all), the XDG config
home."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from transport import examplepki
from transport.config import example_profile
from transport.credentials import Credential, load_pkcs12
from transport.stubs.app import Stubs
from transport.stubs.echo import EchoService
from transport.stubs.server import ServerTLS, StubServer
from transport.vihf import SAML_NS, AuthMode
from transport.xmlsig import VerifySettings

DATA = Path(__file__).parent / "data"
REFERENCE_VARIABLE = "CISIS_REFERENCE_DIR"
"""Names the folder of the official ANS/CNAM material (the DMP compatibility package's WSDL,
schemas and examples, the INSi contract); default ``../shared/reference`` beside the checkout."""
REFERENCE = Path(
    os.environ.get(REFERENCE_VARIABLE)
    or Path(__file__).resolve().parents[2] / "shared" / "reference"
).absolute()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A test skipped for want of the official material says which variable to set."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple):
        path, line, reason = report.longrepr
        if str(REFERENCE) in reason or "shared/reference" in reason:
            reason += f" (set {REFERENCE_VARIABLE} to the folder of the ANS/CNAM package)"
            report.longrepr = (path, line, reason)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> examplepki.ExamplePKI:
    return examplepki.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def load(pki: examplepki.ExamplePKI):
    cache: dict[str, Credential] = {}

    def _load(name: str) -> Credential:
        if name not in cache:
            cache[name] = load_pkcs12(pki.p12(name), pki.password)
        return cache[name]

    return _load


@pytest.fixture(scope="session")
def verify_settings(pki: examplepki.ExamplePKI) -> VerifySettings:
    return VerifySettings(pki.ca_bundle)


@pytest.fixture(scope="session")
def echo_server(pki: examplepki.ExamplePKI, verify_settings: VerifySettings):
    server = StubServer(
        EchoService(verify_settings), ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)
    )
    with server:
        yield server


def _services(request: pytest.FixtureRequest) -> list[str] | None:
    return getattr(request.module, "STUB_SERVICES", None)


@pytest.fixture(scope="module")
def stubs(
    pki: examplepki.ExamplePKI, tmp_path_factory: pytest.TempPathFactory, request
) -> Iterator[Stubs]:
    """The stub server a test module shares (its state too), mounting the module's
    ``STUB_SERVICES``."""
    data = tmp_path_factory.mktemp("stubs")
    # Each test names its own software (IDAM): the shared stubs accept any.
    with Stubs(
        pki=pki, data_dir=data, services=_services(request), accept_any_idam=True
    ) as running:
        yield running


@pytest.fixture
def fresh_stubs(pki: examplepki.ExamplePKI, tmp_path: Path, request) -> Iterator[Stubs]:
    """A stub server of the test's own, with a fresh state, mounting the module's
    ``STUB_SERVICES``."""
    with Stubs(
        pki=pki,
        data_dir=tmp_path / "stubs",
        services=_services(request),
        accept_any_idam=True,
    ) as running:
        yield running


@pytest.fixture
def xds_stubs(fresh_stubs: Stubs) -> Stubs:
    """:func:`fresh_stubs` where the XDS tests' patient has an open DMP on which their doctor
    and colleague are authorized."""
    # Imported here: the XDS callers are test code, only the XDS test modules need them.
    from tests.test_stub_xds import COLLEAGUE, DOCTOR, PATIENT, open_dmp

    open_dmp(fresh_stubs, PATIENT, DOCTOR, COLLEAGUE)
    return fresh_stubs


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``XDG_CONFIG_HOME`` (where the installation id is written), in ``tmp_path``."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


@pytest.fixture(params=list(AuthMode), ids=str)
def mode(request: pytest.FixtureRequest) -> AuthMode:
    return request.param


@pytest.fixture
def profile(pki: examplepki.ExamplePKI, mode: AuthMode, echo_server: StubServer):
    return example_profile(pki, mode, {"echo": f"{echo_server.url}/echo"})


@pytest.fixture(scope="session")
def xmlsec1() -> str:
    path = shutil.which("xmlsec1")
    if path is None:
        pytest.skip("xmlsec1 is not installed (Debian package xmlsec1); CI installs it")
    return path


@pytest.fixture
def xmlsec1_verify(xmlsec1: str, pki: examplepki.ExamplePKI, tmp_path: Path):
    """Verify a signed SAML assertion with xmlsec1 against the example CA; the completed run."""

    def verify(assertion: etree._Element) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "assertion.xml"
        path.write_bytes(etree.tostring(assertion))
        command = [xmlsec1, "--verify", "--id-attr:ID", f"{SAML_NS}:Assertion"]
        # xmlsec1 reads one certificate per PEM file: give it the bundle split up.
        certificates = x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes())
        for index, certificate in enumerate(certificates):
            pem = tmp_path / f"ca{index}.pem"
            pem.write_bytes(certificate.public_bytes(Encoding.PEM))
            trusted = certificate.subject == certificate.issuer
            command += ["--trusted-pem" if trusted else "--untrusted-pem", str(pem)]
        return subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)

    return verify
