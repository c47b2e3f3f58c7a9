"""Tests of credential loading, facts, purpose checks, refusals and the signer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from transport import examplepki
from transport.credentials import (
    Credential,
    Purpose,
    Signer,
    load_pem,
    load_pkcs12,
    rfc2253_dn,
)
from transport.errors import CredentialError
from transport.examplepki import NAMES, ExamplePKI

from .test_openssl import corrupt_mac

ORG_DN = (
    "CN=CABINET MEDICAL EXEMPLE,OU=499900000001001,O=CABINET MEDICAL EXEMPLE,ST=Paris (75),C=FR"
)
INSI_DN = "CN=INSI-AUTO,OU=499900000001001,O=CABINET MEDICAL EXEMPLE,C=FR"
CPS_IDNAT = "899700000001"
ORG_CA_CN = "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS EXEMPLE"
PERSON_CA_CN = "TEST AC IGC-SANTE ELEMENTAIRE PERSONNES EXEMPLE"
ROOT_CN = "TEST AC RACINE IGC-SANTE EXEMPLE"

FACTS = {
    # name: (organizational_unit, idnat, common_name, key usages, extended key usages, issuing CA)
    "org-auth": (
        "499900000001001",
        None,
        "CABINET MEDICAL EXEMPLE",
        {"digitalSignature", "keyEncipherment"},
        {"clientAuth"},
        ORG_CA_CN,
    ),
    "org-sign": (
        "499900000001001",
        None,
        "CABINET MEDICAL EXEMPLE",
        {"digitalSignature", "nonRepudiation"},
        {"emailProtection"},
        ORG_CA_CN,
    ),
    "cps-auth": (
        "Médecin",
        CPS_IDNAT,
        CPS_IDNAT,
        {"digitalSignature"},
        {"clientAuth"},
        PERSON_CA_CN,
    ),
    "cps-sign": (
        "Médecin",
        CPS_IDNAT,
        CPS_IDNAT,
        {"digitalSignature", "nonRepudiation"},
        {"emailProtection"},
        PERSON_CA_CN,
    ),
    "insi-auto": (
        "499900000001001",
        None,
        "INSI-AUTO",
        {"digitalSignature", "keyEncipherment"},
        {"clientAuth"},
        ORG_CA_CN,
    ),
}

PASSWORD_VARIABLE = "CISIS_TEST_CREDENTIAL_PASSWORD"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ExamplePKI:
    return examplepki.generate(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def credentials(pki: ExamplePKI) -> dict[str, Credential]:
    return {name: load_pkcs12(pki.p12(name), pki.password) for name in NAMES}


def _cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _private_pem(key: rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _key(pki: ExamplePKI, name: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pki.key(name).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _public_numbers(certificate: x509.Certificate) -> rsa.RSAPublicNumbers:
    public_key = certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    return public_key.public_numbers()


# --- loading and facts ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_load_pkcs12_facts(pki: ExamplePKI, name: str) -> None:
    credential = load_pkcs12(pki.p12(name), pki.password)
    ou, idnat, common_name, key_usages, ekus, issuer_cn = FACTS[name]

    assert credential.source == str(pki.p12(name))
    assert credential.certificate == x509.load_pem_x509_certificate(pki.cert(name).read_bytes())
    assert credential.organizational_unit == ou
    assert credential.idnat == idnat
    assert credential.common_name == common_name
    assert credential.key_usages == frozenset(key_usages)
    assert credential.extended_key_usages == frozenset(ekus)
    assert credential.issuer_dn.startswith(f"CN={issuer_cn},")
    assert credential.private_key is not None
    assert credential.private_key.public_key().public_numbers() == _public_numbers(
        credential.certificate
    )


@pytest.mark.parametrize("name", NAMES)
def test_chain_holds_the_issuing_intermediate_and_not_the_leaf(pki: ExamplePKI, name: str) -> None:
    credential = load_pkcs12(pki.p12(name), pki.password)
    issuer_cn = FACTS[name][5]

    assert credential.certificate not in credential.chain
    chain_cns = [_cn(cert.subject) for cert in credential.chain]
    assert issuer_cn in chain_cns
    assert ROOT_CN in chain_cns  # the example PKCS#12 files carry the root as well
    # The other intermediate does not belong to this chain.
    assert ({ORG_CA_CN, PERSON_CA_CN} - {issuer_cn}) & set(chain_cns) == set()
    intermediate = next(cert for cert in credential.chain if _cn(cert.subject) == issuer_cn)
    assert intermediate.subject == credential.certificate.issuer
    for cert in credential.chain:
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


@pytest.mark.parametrize(("name", "dn"), [("org-auth", ORG_DN), ("insi-auto", INSI_DN)])
def test_dn_is_rfc2253_most_specific_first(credentials: dict[str, Credential], name, dn) -> None:
    assert credentials[name].dn == dn


def test_org_auth_and_org_sign_share_one_dn(credentials: dict[str, Credential]) -> None:
    assert credentials["org-auth"].dn == credentials["org-sign"].dn == ORG_DN


def test_password_from_environment_variable(pki: ExamplePKI, monkeypatch) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, pki.password)
    credential = load_pkcs12(pki.p12("org-auth"), password_env=PASSWORD_VARIABLE)
    assert credential.dn == ORG_DN


def test_password_argument_wins_over_environment_variable(pki: ExamplePKI, monkeypatch) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, "not the password")
    credential = load_pkcs12(pki.p12("org-auth"), pki.password, password_env=PASSWORD_VARIABLE)
    assert credential.dn == ORG_DN


def test_password_as_bytes(pki: ExamplePKI) -> None:
    credential = load_pkcs12(pki.p12("cps-sign"), pki.password.encode())
    assert credential.idnat == CPS_IDNAT


# --- RFC 2253 DN ---------------------------------------------------------------------------------


def _hex_components(dn: str) -> dict[str, bytes]:
    """The ``OID=#hex`` components of a DN, by dotted OID."""
    found = {}
    for rdn in dn.split(","):
        for component in rdn.split("+"):
            attribute_type, _, value = component.partition("=")
            if value.startswith("#"):
                found[attribute_type] = bytes.fromhex(value[1:])
    return found


@pytest.mark.parametrize("name", ["cps-auth", "cps-sign"])
def test_cps_multi_valued_rdn_is_written_like_java(credentials, name: str) -> None:
    credential = credentials[name]
    # The RDN's attributes appear in their DER (SET OF) order: the shortest encoding first.
    assert credential.dn == (
        "2.5.4.42=#0c045041554c+2.5.4.4=#0c0b4d45444543494e30303031"
        f"+CN={CPS_IDNAT},OU=Médecin,O=TEST,C=FR"
    )
    components = _hex_components(credential.dn)
    assert set(components) == {"2.5.4.4", "2.5.4.42"}
    certificate_der = credential.certificate.public_bytes(serialization.Encoding.DER)
    for dotted, value in (("2.5.4.4", "MEDECIN0001"), ("2.5.4.42", "PAUL")):
        ber = components[dotted]
        assert ber[0] == 0x0C  # UTF8String, the type the certificate uses
        assert ber[1] == len(ber) - 2
        assert ber[2:].decode("utf-8") == value
        # Byte for byte the value as it sits in the certificate, after the attribute's OID.
        oid_der = x509.ObjectIdentifier(dotted)
        assert _oid_tlv(oid_der) + ber in certificate_der


def _oid_tlv(oid: x509.ObjectIdentifier) -> bytes:
    arcs = [int(arc) for arc in oid.dotted_string.split(".")]
    body = bytes([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.insert(0, 0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(chunk)
    return bytes([0x06, len(body)]) + body


@pytest.mark.parametrize(
    ("string_type", "value", "expected_hex"),
    [
        (_ASN1Type.UTF8String, "DUPONT", "0c064455504f4e54"),
        (_ASN1Type.PrintableString, "DUPONT", "13064455504f4e54"),
        (_ASN1Type.IA5String, "DUPONT", "16064455504f4e54"),
        (_ASN1Type.BMPString, "DUPONTÉ", "1e0e004400550050004f004e005400c9"),
        (
            _ASN1Type.UniversalString,
            "DUPONT",
            "1c180000004400000055000000500000004f0000004e00000054",
        ),
        (_ASN1Type.UTF8String, "é" * 100, "0c81c8" + "c3a9" * 100),  # long-form length
    ],
)
def test_rfc2253_hex_value_is_the_der_of_the_attribute(string_type, value, expected_hex) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.SURNAME, value, _type=string_type)])
    dn = rfc2253_dn(name)
    assert dn == f"2.5.4.4=#{expected_hex}"
    # And it is what the DER encoding of the name holds after the surname OID.
    der = name.public_bytes()
    oid = _oid_tlv(NameOID.SURNAME)
    assert der[der.index(oid) + len(oid) :] == bytes.fromhex(expected_hex)


def test_rfc2253_escapes_special_characters_and_keeps_keywords() -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Dupont, Durand + Associés"),
            x509.NameAttribute(NameOID.COMMON_NAME, "#1"),
        ]
    )
    assert rfc2253_dn(name) == "CN=\\#1,O=Dupont\\, Durand \\+ Associés,C=FR"


# --- PEM -----------------------------------------------------------------------------------------


def test_load_pem_certificate_and_key_files(pki: ExamplePKI) -> None:
    credential = load_pem(pki.cert("org-sign"), pki.key("org-sign"))
    assert credential.source == str(pki.cert("org-sign"))
    assert credential.dn == ORG_DN
    assert credential.key_usages == frozenset({"digitalSignature", "nonRepudiation"})
    assert credential.chain == ()
    assert credential.private_key is not None
    assert credential.private_key.private_numbers() == _key(pki, "org-sign").private_numbers()


def test_load_pem_single_file_with_key_and_chain(pki: ExamplePKI, tmp_path: Path) -> None:
    bundle = load_pkcs12(pki.p12("cps-auth"), pki.password)
    combined = tmp_path / "cps-auth-combined.pem"
    combined.write_bytes(
        pki.cert("cps-auth").read_bytes()
        + pki.key("cps-auth").read_bytes()
        + b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in bundle.chain)
    )
    credential = load_pem(combined)
    assert credential.source == str(combined)
    assert credential.certificate == bundle.certificate
    assert credential.idnat == CPS_IDNAT
    assert credential.chain == bundle.chain


def test_load_pem_encrypted_key_with_password(pki: ExamplePKI, tmp_path: Path, monkeypatch) -> None:
    key_path = tmp_path / "org-auth-encrypted.key"
    key_path.write_bytes(_private_pem(_key(pki, "org-auth"), b"s3cret"))
    assert b"ENCRYPTED PRIVATE KEY" in key_path.read_bytes()

    credential = load_pem(pki.cert("org-auth"), key_path, "s3cret")
    assert credential.private_key is not None
    assert credential.private_key.private_numbers() == _key(pki, "org-auth").private_numbers()

    monkeypatch.setenv(PASSWORD_VARIABLE, "s3cret")
    from_env = load_pem(pki.cert("org-auth"), key_path, password_env=PASSWORD_VARIABLE)
    assert from_env.certificate == credential.certificate


def test_load_pem_encrypted_key_without_password(pki: ExamplePKI, tmp_path: Path) -> None:
    key_path = tmp_path / "org-auth-encrypted.key"
    key_path.write_bytes(_private_pem(_key(pki, "org-auth"), b"s3cret"))
    with pytest.raises(CredentialError) as caught:
        load_pem(pki.cert("org-auth"), key_path)
    assert caught.value.source == str(key_path)
    assert "password required" in caught.value.reason
    assert str(key_path) in str(caught.value)


def test_load_pem_encrypted_key_wrong_password(pki: ExamplePKI, tmp_path: Path) -> None:
    key_path = tmp_path / "org-auth-encrypted.key"
    key_path.write_bytes(_private_pem(_key(pki, "org-auth"), b"s3cret"))
    with pytest.raises(CredentialError) as caught:
        load_pem(pki.cert("org-auth"), key_path, "wrong")
    assert caught.value.source == str(key_path)
    assert "wrong password" in caught.value.reason


def test_load_pem_refuses_a_file_without_certificate(pki: ExamplePKI) -> None:
    with pytest.raises(CredentialError) as caught:
        load_pem(pki.key("org-auth"), pki.key("org-auth"))
    assert caught.value.source == str(pki.key("org-auth"))
    assert "no PEM certificate" in caught.value.reason


def _ec_leaf() -> tuple[examplepki.Issued, examplepki.Issued]:
    """A CA and a leaf it issued whose key is an EC P-256 key."""
    start = datetime.now(UTC) - timedelta(days=1)
    ca = examplepki.make_ca("TEST EC CA", not_before=start, not_after=start + timedelta(days=30))
    leaf = examplepki.issue(
        ca,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EC LEAF")]),
        key_usage={"digital_signature"},
        not_before=start,
        not_after=start + timedelta(days=10),
        key=ec.generate_private_key(ec.SECP256R1()),  # type: ignore[arg-type]
    )
    return ca, leaf


def test_load_pem_refuses_a_non_rsa_key(tmp_path: Path) -> None:
    _, leaf = _ec_leaf()
    path = tmp_path / "ec.pem"
    path.write_bytes(
        leaf.cert.public_bytes(serialization.Encoding.PEM)
        + leaf.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CredentialError) as caught:
        load_pem(path)
    assert caught.value.source == str(path)
    assert "RSA" in caught.value.reason


# --- refusals ------------------------------------------------------------------------------------


def test_wrong_pkcs12_password(pki: ExamplePKI) -> None:
    path = pki.p12("org-auth")
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path, "not the password")
    assert caught.value.source == str(path)
    assert "wrong password" in caught.value.reason
    assert str(path) in str(caught.value)


def test_pkcs12_without_password(pki: ExamplePKI) -> None:
    path = pki.p12("org-auth")
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path)
    assert caught.value.source == str(path)
    assert "password required" in caught.value.reason


def test_missing_password_variable_is_named(pki: ExamplePKI, monkeypatch) -> None:
    monkeypatch.delenv(PASSWORD_VARIABLE, raising=False)
    path = pki.p12("org-auth")
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path, password_env=PASSWORD_VARIABLE)
    assert caught.value.source == str(path)
    assert PASSWORD_VARIABLE in caught.value.reason
    assert "not set" in caught.value.reason


def test_missing_pkcs12_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.p12"
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path, "whatever")
    assert caught.value.source == str(path)
    assert "not found" in caught.value.reason


def test_missing_pem_certificate_file(pki: ExamplePKI, tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"
    with pytest.raises(CredentialError) as caught:
        load_pem(path, pki.key("org-auth"))
    assert caught.value.source == str(path)
    assert "certificate not found" in caught.value.reason


def test_missing_pem_key_file(pki: ExamplePKI, tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(CredentialError) as caught:
        load_pem(pki.cert("org-auth"), path)
    assert caught.value.source == str(path)
    assert "private key not found" in caught.value.reason


def test_key_not_matching_certificate(pki: ExamplePKI) -> None:
    with pytest.raises(CredentialError) as caught:
        load_pem(pki.cert("org-auth"), pki.key("org-sign"))
    assert caught.value.source == str(pki.cert("org-auth"))
    assert "does not match" in caught.value.reason


def test_pem_key_with_a_corrupt_crt_exponent_still_signs_correctly(
    pki: ExamplePKI, tmp_path: Path
) -> None:
    # load_pem skips the RSA key validation, relying on OpenSSL checking each CRT result: a key
    # whose CRT exponent mod p is wrong must give a valid signature, never the faulty CRT one
    # (whose gcd with n would reveal a prime factor).
    good = _key(pki, "org-sign").private_numbers()
    corrupt_dmp1 = good.dmp1 - 2 if good.dmp1 > 3 else good.dmp1 + 2  # still odd, below p
    numbers = rsa.RSAPrivateNumbers(
        good.p, good.q, good.d, corrupt_dmp1, good.dmq1, good.iqmp, good.public_numbers
    )
    with pytest.raises(ValueError):  # what the skipped validation would have refused
        numbers.private_key()
    key_path = tmp_path / "corrupt-crt.key"
    key_path.write_bytes(_private_pem(numbers.private_key(unsafe_skip_rsa_key_validation=True)))
    credential = load_pem(pki.cert("org-sign"), key_path)
    signature = credential.signer.sign(b"the assertion", "rsa-sha256")
    public_key = credential.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, b"the assertion", padding.PKCS1v15(), hashes.SHA256())


@pytest.fixture(scope="module")
def dated_p12(tmp_path_factory: pytest.TempPathFactory):
    """Build a PKCS#12 valid over a given period, signed by a fresh CA."""
    directory = tmp_path_factory.mktemp("dated")
    now = datetime.now(UTC)
    ca = examplepki.make_ca(
        "TEST AC DATEE", not_before=now - timedelta(days=800), not_after=now + timedelta(days=800)
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.COMMON_NAME, "CABINET DATE"),
        ]
    )

    def make(label: str, not_before: datetime, not_after: datetime) -> Path:
        leaf = examplepki.issue(
            ca,
            subject,
            key_usage={"digital_signature", "key_encipherment"},
            extended_key_usage=(ExtendedKeyUsageOID.CLIENT_AUTH,),
            not_before=not_before,
            not_after=not_after,
        )
        path = directory / f"{label}.p12"
        examplepki.write_p12(path, leaf, [ca.cert], "dated", label)
        return path

    return make


def test_expired_certificate_refused(dated_p12) -> None:
    now = datetime.now(UTC)
    path = dated_p12("expired", now - timedelta(days=400), now - timedelta(days=30))
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path, "dated", purpose=Purpose.TLS_CLIENT)
    assert caught.value.source == str(path)
    assert "expired" in caught.value.reason

    # Without a purpose nothing is checked; at a moment inside its validity it is accepted.
    credential = load_pkcs12(path, "dated")
    assert credential.not_valid_after < now
    inside = now - timedelta(days=100)
    assert credential.check(Purpose.TLS_CLIENT, now=inside) is credential
    loaded = load_pkcs12(path, "dated", purpose=Purpose.TLS_CLIENT, now=inside)
    assert loaded.certificate == credential.certificate
    with pytest.raises(CredentialError, match="expired"):
        credential.check(Purpose.TLS_CLIENT)


def test_not_yet_valid_certificate_refused(dated_p12) -> None:
    now = datetime.now(UTC)
    path = dated_p12("future", now + timedelta(days=30), now + timedelta(days=400))
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path, "dated", purpose=Purpose.TLS_CLIENT)
    assert caught.value.source == str(path)
    assert "not valid before" in caught.value.reason

    later = now + timedelta(days=100)
    credential = load_pkcs12(path, "dated", purpose=Purpose.TLS_CLIENT, now=later)
    assert credential.not_valid_before > now


def test_now_parameter_on_example_credential(pki: ExamplePKI, credentials) -> None:
    credential = credentials["org-auth"]
    before = credential.not_valid_before - timedelta(seconds=1)
    after = credential.not_valid_after + timedelta(seconds=1)
    with pytest.raises(CredentialError, match="not valid before"):
        load_pkcs12(pki.p12("org-auth"), pki.password, purpose=Purpose.TLS_CLIENT, now=before)
    with pytest.raises(CredentialError, match="expired"):
        credential.check(Purpose.TLS_CLIENT, now=after)
    # The bounds themselves are inside the validity period.
    assert credential.check(Purpose.TLS_CLIENT, now=credential.not_valid_before) is credential
    assert credential.check(Purpose.TLS_CLIENT, now=credential.not_valid_after) is credential


def test_naive_now_is_read_as_utc(credentials) -> None:
    credential = credentials["org-auth"]
    after = (credential.not_valid_after + timedelta(hours=1)).replace(tzinfo=None)
    inside = (credential.not_valid_after - timedelta(hours=1)).replace(tzinfo=None)
    with pytest.raises(CredentialError, match="expired"):
        credential.check(Purpose.TLS_CLIENT, now=after)
    assert credential.check(Purpose.TLS_CLIENT, now=inside) is credential


@pytest.mark.parametrize("name", ["org-auth", "cps-auth", "insi-auto"])
def test_signature_purpose_refused_on_authentication_certificate(pki: ExamplePKI, name) -> None:
    path = pki.p12(name)
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path, pki.password, purpose=Purpose.SIGNATURE)
    assert caught.value.source == str(path)
    assert "not a signature certificate" in caught.value.reason
    assert "nonRepudiation" in caught.value.reason


def test_tls_purpose_refused_on_signature_certificate(pki: ExamplePKI) -> None:
    path = pki.p12("org-sign")
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path, pki.password, purpose=Purpose.TLS_CLIENT)
    assert caught.value.source == str(path)
    assert "clientAuth" in caught.value.reason


def test_tls_purpose_refused_on_pem_signature_certificate(pki: ExamplePKI) -> None:
    with pytest.raises(CredentialError, match="clientAuth") as caught:
        load_pem(pki.cert("cps-sign"), pki.key("cps-sign"), purpose=Purpose.TLS_CLIENT)
    assert caught.value.source == str(pki.cert("cps-sign"))


@pytest.mark.parametrize("name", ["org-sign", "cps-sign"])
def test_signature_purpose_accepted(pki: ExamplePKI, name: str) -> None:
    credential = load_pkcs12(pki.p12(name), pki.password, purpose=Purpose.SIGNATURE)
    assert {"digitalSignature", "nonRepudiation"} <= credential.key_usages


@pytest.mark.parametrize("name", ["org-auth", "cps-auth", "insi-auto"])
def test_tls_purpose_accepted(pki: ExamplePKI, name: str) -> None:
    credential = load_pkcs12(pki.p12(name), pki.password, purpose=Purpose.TLS_CLIENT)
    assert "clientAuth" in credential.extended_key_usages


# --- signer --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["org-sign", "cps-sign"])
def test_signer_signature_verifies_with_certificate_key(credentials, name: str) -> None:
    credential = credentials[name]
    signature = credential.signer.sign(b"data")
    public_key = credential.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, b"other data", padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize(
    ("algorithm", "hash_algorithm"),
    [
        ("rsa-sha1", hashes.SHA1),
        ("rsa-sha256", hashes.SHA256),
        ("rsa-sha384", hashes.SHA384),
        ("rsa-sha512", hashes.SHA512),
    ],
)
def test_signer_algorithms(credentials, algorithm: str, hash_algorithm) -> None:
    credential = credentials["org-sign"]
    signature = credential.signer.sign(b"data", algorithm)
    public_key = credential.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, b"data", padding.PKCS1v15(), hash_algorithm())


def test_signer_refuses_unsupported_algorithm(credentials) -> None:
    with pytest.raises(ValueError, match="rsa-md5"):
        credentials["org-sign"].signer.sign(b"data", "rsa-md5")


def test_signer_is_a_signer(credentials) -> None:
    signer = credentials["cps-sign"].signer
    assert isinstance(signer, Signer)
    assert signer.certificate == credentials["cps-sign"].certificate
    assert not isinstance(object(), Signer)


@pytest.mark.parametrize("name", NAMES)
def test_repr_holds_no_key_material(credentials, name: str) -> None:
    credential = credentials[name]
    assert credential.private_key is not None
    numbers = credential.private_key.private_numbers()
    pem_lines = _private_pem(credential.private_key).decode().splitlines()[1:-1]
    assert credential.source in repr(credential)
    assert f"CN={credential.common_name}" in repr(credential)
    for text in (repr(credential), repr(credential.signer)):
        for secret in (numbers.d, numbers.p, numbers.q):
            assert str(secret) not in text
            assert f"{secret:x}" not in text
        assert not any(line in text for line in pem_lines)
        assert "private_key" not in text
        assert "RSAPrivateKey" not in text


def test_a_pkcs12_is_decrypted_once_per_process(
    pki: ExamplePKI, tmp_path: Path, monkeypatch
) -> None:
    from transport import credentials

    decrypted: list[int] = []
    real = credentials._openssl_pkcs12  # the first reader any uncached file goes to

    def counting(data, password):
        decrypted.append(len(data))
        return real(data, password)

    monkeypatch.setattr(credentials, "_pkcs12_cache", {})
    monkeypatch.setattr(credentials, "_openssl_pkcs12", counting)
    copy = tmp_path / "org-sign.p12"
    copy.write_bytes(pki.p12("org-sign").read_bytes())
    first = load_pkcs12(copy, pki.password)
    second = load_pkcs12(copy, pki.password, purpose=Purpose.SIGNATURE)
    assert len(decrypted) == 1 and first.certificate == second.certificate
    with pytest.raises(CredentialError, match="wrong password"):
        load_pkcs12(copy, "not the password")
    # Another file at the same path is decrypted anew, never served from the cache.
    copy.write_bytes(pki.p12("org-auth").read_bytes())
    assert load_pkcs12(copy, pki.password).certificate != first.certificate
    assert len(decrypted) == 3


# --- PKCS#12 read by the ssl module's OpenSSL, cryptography's loader behind it -------------------


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The PKCS#12 readers each uncached load went to, in order ("openssl", "cryptography")."""
    from transport import credentials

    used: list[str] = []

    def recording(name: str, real):
        def reader(data: bytes, secret: bytes | None):
            used.append(name)
            return real(data, secret)

        return reader

    monkeypatch.setattr(credentials, "_pkcs12_cache", {})
    for name in ("openssl", "cryptography"):
        attribute = f"_{name}_pkcs12"
        monkeypatch.setattr(
            credentials, attribute, recording(name, getattr(credentials, attribute))
        )
    return used


@pytest.fixture
def no_openssl(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As on a Python whose ssl module's OpenSSL cannot be called (here: not CPython)."""
    from transport import openssl

    openssl._pkcs12_library.cache_clear()  # loaded again, as this Python
    with monkeypatch.context() as patch:
        patch.setattr(sys.implementation, "name", "pypy")
        yield
    openssl._pkcs12_library.cache_clear()


def _same_as_cryptography(credential: Credential, data: bytes, password: bytes) -> None:
    expected = pkcs12.load_pkcs12(data, password)
    assert isinstance(expected.key, rsa.RSAPrivateKey) and expected.cert is not None
    assert credential.private_key is not None
    assert credential.private_key.private_numbers() == expected.key.private_numbers()
    assert credential.certificate == expected.cert.certificate
    assert list(credential.chain) == [item.certificate for item in expected.additional_certs]


@pytest.mark.parametrize("name", NAMES)
def test_a_pkcs12_is_read_by_openssl_as_cryptography_reads_it(
    pki: ExamplePKI, readers: list[str], name: str
) -> None:
    credential = load_pkcs12(pki.p12(name), pki.password)
    assert readers == ["openssl"]
    _same_as_cryptography(credential, pki.p12(name).read_bytes(), pki.password.encode())


def test_without_openssl_cryptography_reads_the_pkcs12(
    pki: ExamplePKI, readers: list[str], no_openssl: None
) -> None:
    credential = load_pkcs12(pki.p12("org-auth"), pki.password, purpose=Purpose.TLS_CLIENT)
    assert readers == ["openssl", "cryptography"]
    _same_as_cryptography(credential, pki.p12("org-auth").read_bytes(), pki.password.encode())


def _bad_pkcs12(pki: ExamplePKI, case: str, tmp_path: Path) -> tuple[Path, str | None]:
    data = pki.p12("org-auth").read_bytes()
    path = tmp_path / f"{case.replace(' ', '-')}.p12"
    path.write_bytes(
        {
            "wrong password": data,
            "no password": data,
            "corrupt MAC": corrupt_mac(data),
            "truncated": data[: len(data) - 100],
        }[case]
    )
    return path, {"wrong password": "not the password", "no password": None}.get(case, pki.password)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong password", "wrong password, or not a PKCS#12 file"),
        ("no password", "password required"),
        ("corrupt MAC", "wrong password, or not a PKCS#12 file"),
        ("truncated", "wrong password, or not a PKCS#12 file"),
    ],
)
@pytest.mark.parametrize("available", [True, False], ids=["openssl", "no-openssl"])
def test_a_refused_pkcs12_gives_cryptographys_refusal(
    pki: ExamplePKI,
    tmp_path: Path,
    readers: list[str],
    request: pytest.FixtureRequest,
    case: str,
    reason: str,
    available: bool,
) -> None:
    if not available:
        request.getfixturevalue("no_openssl")
    path, password = _bad_pkcs12(pki, case, tmp_path)
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path, password)
    assert readers == ["openssl", "cryptography"]
    assert (caught.value.source, caught.value.reason) == (str(path), reason)
    assert caught.value.hint == "give the password, or the variable that holds it"
    assert pki.password not in str(caught.value)


def _legacy_p12(pki: ExamplePKI, name: str, key: rsa.RSAPrivateKey, path: Path) -> Path:
    """``name``'s certificate and chain with ``key`` in a PKCS#12 of the algorithms OpenSSL 1.1
    wrote (3DES bags, SHA-1 MAC)."""
    certificates = x509.load_pem_x509_certificates(pki.cert(name).read_bytes())
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())  # noqa: S303 -- the legacy MAC is the subject
        .build(pki.password.encode())
    )
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"legacy", key, certificates[0], certificates[1:], encryption
        )
    )
    return path


@pytest.mark.parametrize("available", [True, False], ids=["openssl", "no-openssl"])
def test_a_legacy_algorithm_pkcs12_still_loads(
    pki: ExamplePKI,
    tmp_path: Path,
    readers: list[str],
    request: pytest.FixtureRequest,
    available: bool,
) -> None:
    if not available:
        request.getfixturevalue("no_openssl")
    path = _legacy_p12(pki, "org-sign", _key(pki, "org-sign"), tmp_path / "legacy.p12")
    credential = load_pkcs12(path, pki.password, purpose=Purpose.SIGNATURE)
    assert readers == (["openssl"] if available else ["openssl", "cryptography"])
    _same_as_cryptography(credential, path.read_bytes(), pki.password.encode())


def test_pkcs12_key_with_a_corrupt_crt_exponent_still_signs_correctly(
    pki: ExamplePKI, tmp_path: Path, readers: list[str]
) -> None:
    # As for a PEM key: OpenSSL reads the PKCS#12 and its key is loaded without validation,
    # relying on OpenSSL checking each CRT result (cryptography's own loader refuses this file).
    good = _key(pki, "org-sign").private_numbers()
    corrupt_dmp1 = good.dmp1 - 2 if good.dmp1 > 3 else good.dmp1 + 2
    numbers = rsa.RSAPrivateNumbers(
        good.p, good.q, good.d, corrupt_dmp1, good.dmq1, good.iqmp, good.public_numbers
    )
    key = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    path = _legacy_p12(pki, "org-sign", key, tmp_path / "corrupt-crt.p12")
    with pytest.raises(ValueError):  # what the skipped validation would have refused
        pkcs12.load_pkcs12(path.read_bytes(), pki.password.encode())
    credential = load_pkcs12(path, pki.password)
    assert readers == ["openssl"]
    signature = credential.signer.sign(b"the assertion", "rsa-sha256")
    public_key = credential.certificate.public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(signature, b"the assertion", padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("available", [True, False], ids=["openssl", "no-openssl"])
def test_a_pkcs12_of_a_non_rsa_key_is_refused(
    tmp_path: Path, readers: list[str], request: pytest.FixtureRequest, available: bool
) -> None:
    if not available:
        request.getfixturevalue("no_openssl")
    ca, leaf = _ec_leaf()
    path = tmp_path / "ec.p12"
    examplepki.write_p12(path, leaf, [ca.cert], "ec", "ec")
    with pytest.raises(CredentialError) as caught:
        load_pkcs12(path, "ec")
    assert readers == (["openssl"] if available else ["openssl", "cryptography"])
    assert caught.value.reason == "no RSA private key found (the services sign with RSA)"
