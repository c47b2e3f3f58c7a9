"""Tests of the example IGC-Santé-like TEST PKI."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from transport import examplepki
from transport.examplepki import NAMES, ExamplePKI

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
VALIDITY_DAYS = 730
REPO = Path(__file__).resolve().parent.parent

ROOT_DN = "CN=TEST AC RACINE IGC-SANTE EXEMPLE,OU=IGC-SANTE TEST,O=CISIS-TRANSPORT EXEMPLE,C=FR"
ORG_CA_CN = "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS EXEMPLE"
PERSON_CA_CN = "TEST AC IGC-SANTE ELEMENTAIRE PERSONNES EXEMPLE"
ORG_DN = (
    "CN=CABINET MEDICAL EXEMPLE,OU=499900000001001,O=CABINET MEDICAL EXEMPLE,ST=Paris (75),C=FR"
)
CPS_IDNAT = "899700000001"

AUTH_NAMES = ("org-auth", "cps-auth", "insi-auto")
SIGN_NAMES = ("org-sign", "cps-sign")
ISSUER_CN = {
    "org-auth": ORG_CA_CN,
    "org-sign": ORG_CA_CN,
    "insi-auto": ORG_CA_CN,
    "cps-auth": PERSON_CA_CN,
    "cps-sign": PERSON_CA_CN,
}
KEY_USAGES = {
    "server": {"digital_signature", "key_encipherment"},
    "org-auth": {"digital_signature", "key_encipherment"},
    "insi-auto": {"digital_signature", "key_encipherment"},
    "cps-auth": {"digital_signature"},
    "org-sign": {"digital_signature", "content_commitment"},
    "cps-sign": {"digital_signature", "content_commitment"},
}
EKUS = {
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "org-auth": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "insi-auto": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "cps-auth": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "org-sign": [ExtendedKeyUsageOID.EMAIL_PROTECTION],
    "cps-sign": [ExtendedKeyUsageOID.EMAIL_PROTECTION],
}
KU_FIELDS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ExamplePKI:
    return examplepki.generate(tmp_path_factory.mktemp("pki"), now=NOW, validity_days=VALIDITY_DAYS)


def read_certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def leaf(pki: ExamplePKI, name: str) -> x509.Certificate:
    if name == "server":
        return read_certs(pki.server_cert)[0]
    (cert,) = read_certs(pki.cert(name))
    return cert


def cn(name: x509.Name) -> str:
    return name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def root(pki: ExamplePKI) -> x509.Certificate:
    (cert,) = read_certs(pki.root_ca)
    return cert


def policy(trusted: x509.Certificate) -> PolicyBuilder:
    return PolicyBuilder().store(Store([trusted])).time(NOW)


def client_policy(trusted: x509.Certificate) -> PolicyBuilder:
    """Web PKI rules, except that a client leaf needs no SAN (its identity is in the subject DN).

    The EKU check of the default end-entity policy (clientAuth for a client) is kept.
    """
    ee = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    return policy(trusted).extension_policies(
        ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee
    )


def intermediates(pki: ExamplePKI) -> list[x509.Certificate]:
    return read_certs(pki.ca_bundle)[1:]


def key_usages(cert: x509.Certificate) -> set[str]:
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    return {field for field in KU_FIELDS if getattr(usage, field)}


def test_ca_bundle_is_root_then_both_intermediates(pki: ExamplePKI) -> None:
    root_ca, org_ca, person_ca = read_certs(pki.ca_bundle)
    assert root_ca == root(pki)
    assert root_ca.subject.rfc4514_string() == ROOT_DN
    assert root_ca.issuer == root_ca.subject
    assert [cn(org_ca.subject), cn(person_ca.subject)] == [ORG_CA_CN, PERSON_CA_CN]
    for ca in (root_ca, org_ca, person_ca):
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert key_usages(ca) == {"key_cert_sign", "crl_sign"}
        assert ca.not_valid_after_utc == NOW + timedelta(days=VALIDITY_DAYS + 365)
    for intermediate in (org_ca, person_ca):
        intermediate.verify_directly_issued_by(root_ca)


def test_server_verifies_for_localhost_and_loopback(pki: ExamplePKI) -> None:
    server, org_ca = read_certs(pki.server_cert)
    assert cn(org_ca.subject) == ORG_CA_CN
    for subject in (
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        chain = policy(root(pki)).build_server_verifier(subject).verify(server, [org_ca])
        assert chain[-1] == root(pki)


def test_server_does_not_verify_for_another_host(pki: ExamplePKI) -> None:
    server, org_ca = read_certs(pki.server_cert)
    verifier = policy(root(pki)).build_server_verifier(x509.DNSName("dmp.example.org"))
    with pytest.raises(VerificationError):
        verifier.verify(server, [org_ca])


@pytest.mark.parametrize("name", AUTH_NAMES)
def test_auth_certificates_verify_as_tls_clients(pki: ExamplePKI, name: str) -> None:
    verifier = client_policy(root(pki)).build_client_verifier()
    verified = verifier.verify(leaf(pki, name), intermediates(pki))
    assert [cn(cert.subject) for cert in verified.chain[1:]] == [
        ISSUER_CN[name],
        "TEST AC RACINE IGC-SANTE EXEMPLE",
    ]


@pytest.mark.parametrize("name", SIGN_NAMES)
def test_sign_certificates_chain_but_are_refused_as_tls_clients(pki: ExamplePKI, name: str) -> None:
    with pytest.raises(VerificationError, match="required EKU not found"):
        client_policy(root(pki)).build_client_verifier().verify(leaf(pki, name), intermediates(pki))
    # Same chain building without the clientAuth EKU requirement: the chain itself is sound.
    lenient = policy(root(pki)).extension_policies(
        ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
    )
    verified = lenient.build_client_verifier().verify(leaf(pki, name), intermediates(pki))
    assert cn(verified.chain[1].subject) == ISSUER_CN[name]


def test_root_with_the_same_dn_but_another_key_is_refused(pki: ExamplePKI) -> None:
    impostor = examplepki.make_ca(
        "TEST AC RACINE IGC-SANTE EXEMPLE",
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=30),
        org_units=("IGC-SANTE TEST",),
    )
    assert impostor.cert.subject == root(pki).subject
    with pytest.raises(VerificationError):
        client_policy(impostor.cert).build_client_verifier().verify(
            leaf(pki, "org-auth"), intermediates(pki)
        )


@pytest.mark.parametrize("name", ["server", *NAMES])
def test_key_usages_and_ekus(pki: ExamplePKI, name: str) -> None:
    cert = leaf(pki, name)
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).critical
    assert key_usages(cert) == KEY_USAGES[name]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == EKUS[name]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize("name", ["server", *NAMES])
def test_algorithms_and_validity(pki: ExamplePKI, name: str) -> None:
    cert = leaf(pki, name)
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == 2048
    assert public.public_numbers().e == 65537
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.not_valid_before_utc == NOW - timedelta(days=1)
    assert cert.not_valid_after_utc == NOW + timedelta(days=VALIDITY_DAYS)


def test_serials_are_distinct(pki: ExamplePKI) -> None:
    certs = [leaf(pki, name) for name in ["server", *NAMES]] + read_certs(pki.ca_bundle)
    assert len({cert.serial_number for cert in certs}) == len(certs)


def test_structure_auth_and_sign_share_one_dn(pki: ExamplePKI) -> None:
    auth, sign = leaf(pki, "org-auth"), leaf(pki, "org-sign")
    assert auth.subject == sign.subject
    assert auth.subject.rfc4514_string() == ORG_DN
    assert auth.public_key() != sign.public_key()


def test_cps_subject_carries_idnat_in_a_multi_valued_rdn(pki: ExamplePKI) -> None:
    for name in ("cps-auth", "cps-sign"):
        subject = leaf(pki, name).subject
        assert cn(subject) == CPS_IDNAT
        person = subject.rdns[-1]
        assert {(a.oid, a.value) for a in person} == {
            (NameOID.COMMON_NAME, CPS_IDNAT),
            (NameOID.SURNAME, "MEDECIN0001"),
            (NameOID.GIVEN_NAME, "PAUL"),
        }
        assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == (
            "Médecin"
        )
    assert leaf(pki, "cps-auth").subject == leaf(pki, "cps-sign").subject


def test_insi_auto_subject(pki: ExamplePKI) -> None:
    subject = leaf(pki, "insi-auto").subject
    assert subject.rfc4514_string() == (
        "CN=INSI-AUTO,OU=499900000001001,O=CABINET MEDICAL EXEMPLE,C=FR"
    )


@pytest.mark.parametrize("name", NAMES)
def test_p12_holds_key_leaf_and_chain(pki: ExamplePKI, name: str) -> None:
    bundle = pkcs12.load_pkcs12(pki.p12(name).read_bytes(), pki.password.encode())
    assert bundle.cert is not None
    assert bundle.key is not None
    assert bundle.cert.certificate == leaf(pki, name)
    assert bundle.key.public_key() == bundle.cert.certificate.public_key()
    assert b"TEST" in (bundle.cert.friendly_name or b"")
    chain = [extra.certificate for extra in bundle.additional_certs]
    assert [cn(c.subject) for c in chain] == [ISSUER_CN[name], "TEST AC RACINE IGC-SANTE EXEMPLE"]


def test_p12_refuses_a_wrong_password(pki: ExamplePKI) -> None:
    with pytest.raises(ValueError, match="Invalid password"):
        pkcs12.load_pkcs12(pki.p12("org-auth").read_bytes(), b"wrong")


@pytest.mark.parametrize("name", ["server", *NAMES])
def test_pem_keys_match_certificates(pki: ExamplePKI, name: str) -> None:
    path = pki.server_key if name == "server" else pki.key(name)
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # unencrypted PKCS#8
    key = load_pem_private_key(path.read_bytes(), password=None)
    assert key.public_key() == leaf(pki, name).public_key()


def test_private_files_are_owner_only(pki: ExamplePKI) -> None:
    private = [pki.server_key] + [p for n in NAMES for p in (pki.key(n), pki.p12(n))]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_unknown_name_is_refused(pki: ExamplePKI) -> None:
    for accessor in (pki.p12, pki.cert, pki.key):
        with pytest.raises(ValueError, match="server"):
            accessor("server")


def test_generate_overwrites_and_load_finds_every_file(tmp_path: Path) -> None:
    first = examplepki.generate(tmp_path, password="autre")
    old_cert = first.cert("org-auth").read_bytes()
    first.key("org-auth").chmod(0o644)
    second = examplepki.generate(tmp_path, password="autre")
    assert second.cert("org-auth").read_bytes() != old_cert
    assert stat.S_IMODE(second.key("org-auth").stat().st_mode) == 0o600
    assert examplepki.load(tmp_path, password="autre") == second


def test_load_names_the_missing_file(tmp_path: Path) -> None:
    pki = examplepki.generate(tmp_path)
    pki.p12("cps-sign").unlink()
    with pytest.raises(FileNotFoundError, match=r"cps-sign\.p12"):
        examplepki.load(tmp_path)


def test_committed_example_set_is_complete() -> None:
    pki = examplepki.load(REPO / "certs-example")
    bundle = pkcs12.load_pkcs12(pki.p12("org-auth").read_bytes(), pki.password.encode())
    assert bundle.key is not None
