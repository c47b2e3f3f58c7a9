"""Direct authentication with keys on a PKCS#11 token (SoftHSM2 standing for a CPS card): loading,
signatures made on the token and checked by xmlsec1 and our verifiers, mutual TLS with the token's
authentication key against the stubs (DMP TD0.2/TD3.1, INSi in card mode), every error.

The TLS route for keys outside the process is also tested without any token, with a key in
memory presented only through its signer."""

from __future__ import annotations

import getpass
import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import NameOID

from tests import softhsm
from tests.test_dmp_client import document, opened
from tests.test_insi_client import ECETINSI
from transport import examplepki
from transport.config import CredentialSpec, Pkcs11Spec, example_profile, load_profile
from transport.credentials import Credential, Purpose
from transport.dmp.client import DmpClient
from transport.errors import ConfigurationError, CredentialError, TLSError
from transport.soap.channel import send
from transport.stubs import ServerTLS, StubRequest, StubResponse, StubServer
from transport.stubs.app import DMP_SERVICES
from transport.stubs.insi import TEST_PERSONS
from transport.teleservices.client import (
    AccessMode,
    AssertionPS,
    TeleservicesClient,
    sign_assertion_ps,
    verify_assertion_ps,
)
from transport.teleservices.insi import (
    ACTION_SEARCH_TRAITS,
    InsiClient,
    build_traits_search,
    read_resultat,
)
from transport.tls import TLSSettings, create_session
from transport.vihf import AuthMode, sign_vihf, verify_vihf
from transport.xmlsig import VerifySettings

PIN_ENV = "CISIS_TEST_CPS_PIN"
SKIP_REASON = softhsm.missing()
needs_softhsm = pytest.mark.skipif(SKIP_REASON is not None, reason=str(SKIP_REASON))


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def token(
    pki: examplepki.ExamplePKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[softhsm.SoftToken]:
    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    config = softhsm.write_config(tmp_path_factory.mktemp("softhsm"))
    # SoftHSM2 reads its configuration once, when this process first initialises the module.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(config))
        yield softhsm.create_token(config, pki)


@pytest.fixture(autouse=True)
def fresh_login(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test logs in afresh, with the PIN in the environment and no terminal."""
    monkeypatch.setenv(PIN_ENV, softhsm.PIN)
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    yield
    if SKIP_REASON is None:
        from transport.pkcs11 import close_sessions

        close_sessions()


def spec(token: softhsm.SoftToken, key_label: str | None, **changes) -> Pkcs11Spec:
    return replace(
        Pkcs11Spec(token.module, token.label, key_label=key_label, pin_env=PIN_ENV), **changes
    )


def card(token: softhsm.SoftToken, name: str, **changes) -> Credential:
    """The token's credential for an example PKI name (``cps-auth``, ``cps-sign``)."""
    purpose = Purpose.TLS_CLIENT if name == "cps-auth" else Purpose.SIGNATURE
    label = changes.pop("key_label", softhsm.KEYS[name][0])
    return CredentialSpec(pkcs11=spec(token, label, **changes)).load(purpose)


def card_profile(pki: examplepki.ExamplePKI, token: softhsm.SoftToken, **endpoints: str):
    """The example direct-mode profile with both credentials on the token."""
    profile = example_profile(pki, AuthMode.DIRECTE, endpoints)
    return replace(
        profile,
        tls_credential=CredentialSpec(pkcs11=spec(token, "CPS-AUTH")),
        signature_credential=CredentialSpec(pkcs11=spec(token, "CPS-SIGN")),
    )


def client_cn(request: StubRequest) -> StubResponse:
    certificate = request.client_certificate
    name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if certificate else []
    return StubResponse(200, b"<ok/>", "application/xml", {"X-Client-CN": str(name[0].value)})


@pytest.fixture(scope="module")
def cn_server(pki: examplepki.ExamplePKI) -> Iterator[StubServer]:
    with StubServer(client_cn, ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)) as server:
        yield server


# --- the TLS route for a key held elsewhere, without a token ------------------------------------


@dataclass
class CountingSigner:
    """A key in memory shown to the TLS layer only through sign/sign_digest."""

    inner: Credential
    digests: list[tuple[int, str]]

    @property
    def certificate(self):
        return self.inner.certificate

    def sign(self, data: bytes, algorithm: str = "rsa-sha256") -> bytes:
        return self.inner.signer.sign(data, algorithm)

    def sign_digest(self, digest: bytes, algorithm: str = "rsa-sha256") -> bytes:
        self.digests.append((len(digest), algorithm))
        return self.inner.signer.sign_digest(digest, algorithm)


def external(credential: Credential, digests: list[tuple[int, str]]) -> Credential:
    return replace(credential, private_key=None, signer=CountingSigner(credential, digests))


def test_a_key_outside_the_process_authenticates_tls_through_its_signer(load, pki, cn_server):
    digests: list[tuple[int, str]] = []
    session = create_session(external(load("cps-auth"), digests), TLSSettings(pki.ca_bundle))
    with session:
        for _ in range(3):
            response = send(session, f"{cn_server.url}/x", b"<a/>", {})
            assert response.headers["X-Client-CN"] == load("cps-auth").common_name
    # One handshake on a kept-alive connection, signed with PKCS#1 v1.5 over SHA-256.
    assert digests == [(32, "rsa-sha256")]


def test_tls_to_a_server_refusing_tls_1_2_fails_for_a_key_outside_the_process(load, pki):
    @dataclass(frozen=True)
    class Tls13Only(ServerTLS):
        def context(self):
            context = super().context()
            context.minimum_version = context.maximum_version.TLSv1_3
            return context

    server = StubServer(client_cn, Tls13Only(pki.server_cert, pki.server_key, pki.ca_bundle))
    session = create_session(external(load("cps-auth"), []), TLSSettings(pki.ca_bundle))
    with server, session, pytest.raises(TLSError) as caught:
        send(session, f"{server.url}/x", b"<a/>", {})
    assert "version" in str(caught.value).lower()


def test_a_signer_without_sign_digest_is_refused_for_tls(load, pki):
    @dataclass(frozen=True)
    class SignOnly:
        inner: Credential

        @property
        def certificate(self):
            return self.inner.certificate

        def sign(self, data: bytes, algorithm: str = "rsa-sha256") -> bytes:
            return self.inner.signer.sign(data, algorithm)

    credential = replace(load("cps-auth"), private_key=None, signer=SignOnly(load("cps-auth")))
    with pytest.raises(CredentialError, match="sign_digest"):
        create_session(credential, TLSSettings(pki.ca_bundle))


def test_a_signer_failure_during_the_handshake_is_its_own_credential_error(load, pki, cn_server):
    class Failing(CountingSigner):
        def sign_digest(self, digest: bytes, algorithm: str = "rsa-sha256") -> bytes:
            raise CredentialError("pkcs11:token=X", "the card was removed")

    credential = replace(load("cps-auth"), private_key=None, signer=Failing(load("cps-auth"), []))
    session = create_session(credential, TLSSettings(pki.ca_bundle))
    with session, pytest.raises(CredentialError, match="removed"):
        send(session, f"{cn_server.url}/x", b"<a/>", {})


# --- loading from the token ------------------------------------------------------------------


@needs_softhsm
def test_the_certificate_and_chain_come_from_the_token(token, load):
    credential = card(token, "cps-auth")
    assert credential.certificate == load("cps-auth").certificate
    assert credential.private_key is None
    assert credential.source == "pkcs11:token=CPS-TEST;object=CPS-AUTH"
    assert credential.chain == load("cps-auth").chain[:1]  # the token holds the intermediate
    assert credential.idnat == load("cps-auth").idnat


@needs_softhsm
def test_token_by_slot_and_key_by_id(token, load):
    from pkcs11 import lib

    slot = lib(token.module).get_token(token_label=token.label).slot.slot_id
    credential = card(
        token, "cps-sign", token_label=None, slot=slot, key_label=None, key_id=b"\x02"
    )
    assert credential.certificate == load("cps-sign").certificate


@needs_softhsm
@pytest.mark.parametrize(
    ("purpose", "name"), [(Purpose.TLS_CLIENT, "cps-auth"), (Purpose.SIGNATURE, "cps-sign")]
)
def test_without_a_key_name_the_key_fit_for_the_purpose_is_chosen(token, load, purpose, name):
    credential = CredentialSpec(pkcs11=spec(token, None, token_label=None)).load(purpose)
    assert credential.certificate == load(name).certificate


@needs_softhsm
def test_signatures_on_the_token_are_those_of_the_same_key_in_software(token, load):
    signer = card(token, "cps-sign").signer
    data = b"<saml:Assertion>...</saml:Assertion>"
    for algorithm in ("rsa-sha1", "rsa-sha256", "rsa-sha512"):
        signature = signer.sign(data, algorithm)
        assert signature == load("cps-sign").signer.sign(data, algorithm)  # PKCS#1 v1.5
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    signature = signer.sign_digest(digest.finalize())
    load("cps-sign").certificate.public_key().verify(
        signature, data, padding.PKCS1v15(), hashes.SHA256()
    )


@needs_softhsm
def test_one_login_serves_both_keys_and_threads(token, monkeypatch):
    auth = card(token, "cps-auth")
    monkeypatch.delenv(PIN_ENV)  # already logged in: the second key needs no PIN
    sign = card(token, "cps-sign")
    results: list[bytes] = []

    def work() -> None:
        for _ in range(5):
            results.append(sign.signer.sign(b"a"))
            results.append(auth.signer.sign(b"b"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40 and len(set(results)) == 2


# --- signatures checked by others ------------------------------------------------------------


@needs_softhsm
def test_a_vihf_signed_on_the_token_passes_xmlsec1_and_our_verifier(
    token, pki, xmlsec1_verify, verify_settings: VerifySettings
):
    profile = example_profile(pki, AuthMode.DIRECTE)
    assertion = sign_vihf(profile.identity, card(token, "cps-sign").signer)
    completed = xmlsec1_verify(assertion)
    assert completed.returncode == 0, completed.stderr
    verified = verify_vihf(assertion, verify_settings)
    assert verified.vihf.mode is AuthMode.DIRECTE
    assert verified.signer_dn == card(token, "cps-sign").dn
    method = assertion.find(".//{*}SignatureMethod").get("Algorithm")
    assert method == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


@needs_softhsm
def test_an_assertion_ps_signed_on_the_token_is_verified(token, load, pki, xmlsec1_verify):
    credential = card(token, "cps-sign")
    assertion = sign_assertion_ps(
        AssertionPS(credential.common_name, sector="SA07"), credential.signer
    )
    verified = verify_assertion_ps(assertion, VerifySettings(pki.ca_bundle))
    assert verified.assertion.professional_id == load("cps-sign").common_name
    assert xmlsec1_verify(assertion).returncode == 0


# --- end to end against the stubs, the profile naming the token --------------------------------


STUB_SERVICES = [*DMP_SERVICES, "lps"]


@needs_softhsm
def test_dmp_td02_and_td31_in_direct_mode_with_the_card(token, pki, stubs):
    profile = card_profile(pki, token, dmp=stubs.dmp_base_url)
    with DmpClient.from_profile(profile) as client:
        assert client.signature.private_key is None
        patient = opened(client)
        existence = client.exists(patient)  # TD0.2
        assert existence.exists and existence.authorized
        submitted = document(patient, b"compte rendu")
        client.submit([submitted])  # TD2.1, signed on the token too when the set is signed
        found = client.find_documents(patient)  # TD3.1
        assert submitted.entry.unique_id in {item.unique_id for item in found.entries}


@needs_softhsm
def test_insi_in_card_mode_with_the_card(token, pki, stubs, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    profile = card_profile(pki, token, tlsi=stubs.teleservices_url)
    with TeleservicesClient.from_profile(profile, AccessMode.CARD) as client:
        assert client.mode is AccessMode.CARD
        answer = client.call(ACTION_SEARCH_TRAITS, build_traits_search(ECETINSI))
        assert read_resultat(answer).individual == TEST_PERSONS[0]
        outcome = InsiClient(client).search_by_traits("ECETINSI", "PIERRE-ALAIN", "M", "2009-07-14")
        assert outcome.code == "00"


@needs_softhsm
def test_a_profile_file_names_the_token(token, pki, tmp_path):
    path = tmp_path / "profile.toml"
    path.write_text(
        f"""
[identity]
subject_id = "899700000001"
mode = "{AuthMode.DIRECTE.value}"
structure_id = "499900000001001"
sector = "SA07"
roles = [{{ code = "10", system = "1.2.250.1.213.1.1.5.5" }}]

[lps]
name = "cisis-transport"
version = "0.1.0"
homologation_id = "TEST"

[credentials.tls]
pkcs11_module = "{token.module}"
token_label = "{token.label}"
key_label = "CPS-AUTH"
pin_env = "{PIN_ENV}"

[credentials.signature]
pkcs11_module = "{token.module}"
token_label = "{token.label}"
key_id = "02"
pin_env = "{PIN_ENV}"

[tls]
ca_bundle = "{pki.ca_bundle}"
""",
        encoding="utf-8",
    )
    profile = load_profile(path)
    assert profile.signature_credential.pkcs11 == Pkcs11Spec(
        token.module, token.label, key_id=b"\x02", pin_env=PIN_ENV
    )
    assert profile.tls_credential.load(Purpose.TLS_CLIENT).source.endswith("object=CPS-AUTH")
    assert profile.signature_credential.load(Purpose.SIGNATURE).source.endswith("CPS-SIGN")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('pin = "1234"', "pins do not belong"),
        ('slot = "0"', "`slot` must be an integer"),
        ('key_id = "zz"', "`key_id` must be hexadecimal"),
    ],
)
def test_a_profile_refuses_a_pin_and_malformed_token_keys(tmp_path, line, message):
    path = tmp_path / "profile.toml"
    path.write_text(
        '[identity]\nsubject_id = "1"\nmode = "DIRECTE"\nstructure_id = "1"\nsector = "SA07"\n'
        'roles = [{ code = "10", system = "x" }]\n[lps]\nname = "a"\nversion = "1"\n'
        'homologation_id = "b"\n[credentials.tls]\npkcs11_module = "/m.so"\n'
        f'{line}\n[credentials.signature]\npkcs11 = "a.p12"\n[tls]\nca_bundle = "ca.pem"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match=message):
        load_profile(path)


# --- errors ----------------------------------------------------------------------------------


def error_of(token: softhsm.SoftToken, name: str = "cps-auth", **changes) -> CredentialError:
    with pytest.raises(CredentialError) as caught:
        card(token, name, **changes)
    return caught.value


@needs_softhsm
def test_module_not_found_or_not_a_module(token, tmp_path):
    error = error_of(token, module=str(tmp_path / "libcps.so"))
    assert "module not found" in error.reason and "middleware" in error.hint
    (tmp_path / "fake.so").write_bytes(b"not an ELF file")
    error = error_of(token, module=str(tmp_path / "fake.so"))
    assert "cannot load the PKCS#11 module" in error.reason


@needs_softhsm
def test_no_card_in_the_reader(token, tmp_path):
    # SoftHSM2 reads its configuration once per process: an empty one needs its own process.
    script = (
        "from transport.pkcs11 import load_pkcs11\n"
        "from transport.errors import CredentialError\n"
        "try:\n"
        f"    load_pkcs11({token.module!r}, pin='0')\n"
        "except CredentialError as error:\n"
        "    print(error.reason, '|', error.hint)\n"
    )
    environment = {**os.environ, "SOFTHSM2_CONF": str(softhsm.write_config(tmp_path))}
    completed = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True
    )
    assert (
        completed.stdout.strip() == "no token present (no card in the reader) | insert the CPS card"
    )


@needs_softhsm
def test_no_such_token(token):
    error = error_of(token, token_label="CPS-ABSENT")
    assert "no token labelled 'CPS-ABSENT'" in error.reason
    assert "'CPS-TEST'" in error.hint  # the tokens present are listed


@needs_softhsm
def test_wrong_pin_says_what_the_token_tells_of_the_tries_left(token, monkeypatch):
    monkeypatch.setenv(PIN_ENV, "000000")
    error = error_of(token)
    assert error.reason.startswith("wrong PIN")
    assert "tries left" in error.reason  # SoftHSM2 raises CKF_USER_PIN_COUNT_LOW
    assert PIN_ENV in error.hint and "000000" not in str(error)
    monkeypatch.setenv(PIN_ENV, token.pin)
    assert card(token, "cps-auth").certificate is not None


@needs_softhsm
def test_pin_variable_unset_and_no_terminal(token, monkeypatch):
    monkeypatch.delenv(PIN_ENV)
    assert "CISIS_TEST_CPS_PIN is not set" in error_of(token).reason
    assert "no terminal" in error_of(token, pin_env=None).reason


@needs_softhsm
def test_the_pin_is_asked_once_on_a_terminal(token, monkeypatch):
    prompts: list[str] = []

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return token.pin

    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr(getpass, "getpass", ask)
    card(token, "cps-auth", pin_env=None)
    card(token, "cps-sign", pin_env=None)
    assert prompts == ["PIN of card 'CPS-TEST': "]


@needs_softhsm
def test_key_not_found_lists_the_keys(token):
    error = error_of(token, key_label="CPS-NOPE")
    assert "no private key label 'CPS-NOPE'" in error.reason
    assert "'CPS-AUTH' (id 01)" in error.hint and "'CPS-SIGN' (id 02)" in error.hint


@needs_softhsm
def test_key_without_certificate(token):
    error = error_of(token, key_label=softhsm.ORPHAN[0])
    assert "no certificate for this key" in error.reason


@needs_softhsm
def test_the_authentication_key_is_refused_for_signing(token):
    with pytest.raises(CredentialError, match="not a signature certificate"):
        CredentialSpec(pkcs11=spec(token, "CPS-AUTH")).load(Purpose.SIGNATURE)


@needs_softhsm
def test_a_card_removed_during_the_session(token, pki, cn_server):
    from transport.pkcs11 import close_sessions

    sign = card(token, "cps-sign")
    auth = card(token, "cps-auth")
    session = create_session(auth, TLSSettings(pki.ca_bundle))
    close_sessions()  # what the middleware reports once the card is out: the session is gone
    with pytest.raises(CredentialError) as caught:
        sign.signer.sign(b"data")
    assert "removed" in caught.value.reason and "insert the card" in caught.value.hint
    with session, pytest.raises(CredentialError, match="removed"):
        send(session, f"{cn_server.url}/x", b"<a/>", {})
    assert card(token, "cps-sign").signer.sign(b"data")  # loading again logs in again


@needs_softhsm
def test_mutual_tls_with_the_token_key_from_several_threads(token, load, pki, cn_server):
    credential = card(token, "cps-auth")
    names: list[str] = []

    def connect() -> None:
        # A session per thread: each opens its own connection, so each handshake signs.
        with create_session(credential, TLSSettings(pki.ca_bundle)) as session:
            for _ in range(3):
                names.append(
                    send(session, f"{cn_server.url}/x", b"<a/>", {}).headers["X-Client-CN"]
                )

    threads = [threading.Thread(target=connect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert names == [load("cps-auth").common_name] * 12


def test_a_missing_extra_is_a_credential_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pkcs11", None)
    from transport.pkcs11 import load_pkcs11

    with pytest.raises(CredentialError, match="python-pkcs11 is not installed") as caught:
        load_pkcs11("/usr/lib/softhsm/libsofthsm2.so")
    assert "pip install" in caught.value.hint
