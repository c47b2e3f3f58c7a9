"""Example PKI shaped like the IGC-Santé TEST hierarchy.

TEST MATERIAL ONLY. Everything produced here is for unit tests and for a zero-configuration
demo; the committed set in ``certs-example/`` has public private keys. Never trust these CAs
outside tests and never use these certificates with a real DMP or INSi endpoint.

The hierarchy: one root, an ORGANISATIONS intermediate (server, structure certificates) and a
PERSONNES intermediate (professional card certificates). All keys are RSA because the DMP and
INSi require RSA PKCS#1 v1.5 SHA-256 signatures.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

NAMES: tuple[str, ...] = ("org-auth", "org-sign", "cps-auth", "cps-sign", "insi-auto")
"""The client certificates of the example set, in the order they are generated."""

DEFAULT_PASSWORD = "cisis-test"  # noqa: S105 - published on purpose, guards test material only
"""PKCS#12 password of the example set (public, like the keys)."""

_ORGANIZATION = "CISIS-TRANSPORT EXEMPLE"
_TEST_OU = "IGC-SANTE TEST"
_STRUCTURE_ID = "499900000001001"
_STRUCTURE_NAME = "CABINET MEDICAL EXEMPLE"
_CPS_IDNAT = "899700000001"
_PUBLIC_EXPONENT = 65537
_CA_EXTRA_DAYS = 365
_CLOCK_SKEW = timedelta(days=1)

_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


@dataclass(frozen=True)
class Issued:
    """A private key with the certificate issued for it."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class ExamplePKI:
    """Paths of a generated example set (see ``generate`` and ``load``)."""

    directory: Path
    password: str

    @property
    def ca_bundle(self) -> Path:
        """PEM bundle to trust: root and both intermediates."""
        return self.directory / "ca-bundle.pem"

    @property
    def root_ca(self) -> Path:
        """PEM of the root CA alone."""
        return self.directory / "root-ca.pem"

    @property
    def server_cert(self) -> Path:
        """PEM chain for a stub TLS server: localhost leaf then the ORG intermediate."""
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        """Unencrypted PKCS#8 PEM key of the stub TLS server."""
        return self.directory / "server.key"

    def p12(self, name: str) -> Path:
        """PKCS#12 of client ``name`` (key, leaf, intermediate, root), protected by password."""
        return self.directory / f"{_checked(name)}.p12"

    def cert(self, name: str) -> Path:
        """PEM of the leaf certificate of client ``name`` (no chain)."""
        return self.directory / f"{_checked(name)}.pem"

    def key(self, name: str) -> Path:
        """Unencrypted PKCS#8 PEM private key of client ``name``."""
        return self.directory / f"{_checked(name)}.key"

    def files(self) -> list[Path]:
        """Every file of the set, in a stable order."""
        shared = [self.root_ca, self.ca_bundle, self.server_cert, self.server_key]
        per_name = [path for n in NAMES for path in (self.cert(n), self.key(n), self.p12(n))]
        return shared + per_name


def _checked(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown example certificate {name!r}; expected one of {NAMES}")
    return name


def _dn(rfc4514: str) -> x509.Name:
    # SN and GN are not in cryptography's default RFC 4514 keywords; CPS DNs need both.
    keywords = {"SN": NameOID.SURNAME, "GN": NameOID.GIVEN_NAME}
    return x509.Name.from_rfc4514_string(rfc4514, keywords)


_ORG_SUBJECT = _dn(
    f"CN={_STRUCTURE_NAME},OU={_STRUCTURE_ID},O={_STRUCTURE_NAME},ST=Paris (75),C=FR"
)
# A professional card DN: CN (IdNat), surname and given name form one multi-valued RDN.
_CPS_SUBJECT = _dn(f"CN={_CPS_IDNAT}+SN=MEDECIN0001+GN=PAUL,OU=Médecin,O=TEST,C=FR")
_INSI_SUBJECT = _dn(f"CN=INSI-AUTO,OU={_STRUCTURE_ID},O={_STRUCTURE_NAME},C=FR")
_SERVER_SUBJECT = _dn(f"CN=localhost,OU={_TEST_OU},O={_ORGANIZATION},C=FR")
_AUTH_USAGE = frozenset({"digital_signature", "key_encipherment"})
_SIGN_USAGE = frozenset({"digital_signature", "content_commitment"})
_CLIENT_AUTH = (ExtendedKeyUsageOID.CLIENT_AUTH,)
_EMAIL_PROTECTION = (ExtendedKeyUsageOID.EMAIL_PROTECTION,)


@dataclass(frozen=True)
class _LeafProfile:
    issuer: str  # "org" or "personnes": which intermediate signs it
    subject: x509.Name
    key_usage: frozenset[str]
    extended_key_usage: tuple[ObjectIdentifier, ...]


# org-auth and org-sign share one DN because the DMP requires it for a structure's pair.
_LEAF_PROFILES: dict[str, _LeafProfile] = {
    "org-auth": _LeafProfile("org", _ORG_SUBJECT, _AUTH_USAGE, _CLIENT_AUTH),
    "org-sign": _LeafProfile("org", _ORG_SUBJECT, _SIGN_USAGE, _EMAIL_PROTECTION),
    "cps-auth": _LeafProfile(
        "personnes", _CPS_SUBJECT, frozenset({"digital_signature"}), _CLIENT_AUTH
    ),
    "cps-sign": _LeafProfile("personnes", _CPS_SUBJECT, _SIGN_USAGE, _EMAIL_PROTECTION),
    "insi-auto": _LeafProfile("org", _INSI_SUBJECT, _AUTH_USAGE, _CLIENT_AUTH),
}


def generate(
    directory: Path | str,
    *,
    password: str = DEFAULT_PASSWORD,
    validity_days: int = 730,
    now: datetime | None = None,
    key_size: int = 2048,
) -> ExamplePKI:
    """Create (or overwrite) a complete example set in ``directory`` and describe it.

    Leaves are valid from ``now - 1 day`` (clock skew) to ``now + validity_days``; CAs one year
    longer so that they never expire before their leaves.
    """
    start = _as_utc(now or datetime.now(UTC)) - _CLOCK_SKEW
    leaf_end = start + _CLOCK_SKEW + timedelta(days=validity_days)
    ca_end = leaf_end + timedelta(days=_CA_EXTRA_DAYS)
    pki = ExamplePKI(Path(directory), password)
    pki.directory.mkdir(parents=True, exist_ok=True)

    def ca(cn: str, issuer: Issued | None) -> Issued:
        return make_ca(
            cn,
            issuer=issuer,
            not_before=start,
            not_after=ca_end,
            key_size=key_size,
            org_units=(_TEST_OU,),
        )

    root = ca("TEST AC RACINE IGC-SANTE EXEMPLE", None)
    org_ca = ca("TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS EXEMPLE", root)
    person_ca = ca("TEST AC IGC-SANTE ELEMENTAIRE PERSONNES EXEMPLE", root)

    write_pem_cert(pki.root_ca, root.cert)
    _write_pem_certs(pki.ca_bundle, [root.cert, org_ca.cert, person_ca.cert])

    server = issue(
        org_ca,
        _SERVER_SUBJECT,
        key_usage=_AUTH_USAGE,
        extended_key_usage=(ExtendedKeyUsageOID.SERVER_AUTH,),
        not_before=start,
        not_after=leaf_end,
        san_dns=("localhost",),
        san_ip=("127.0.0.1", "::1"),
        key_size=key_size,
    )
    _write_pem_certs(pki.server_cert, [server.cert, org_ca.cert])
    write_pem_key(pki.server_key, server.key)

    issuers = {"org": org_ca, "personnes": person_ca}
    for name in NAMES:
        profile = _LEAF_PROFILES[name]
        issuer = issuers[profile.issuer]
        leaf = issue(
            issuer,
            profile.subject,
            key_usage=profile.key_usage,
            extended_key_usage=profile.extended_key_usage,
            not_before=start,
            not_after=leaf_end,
            key_size=key_size,
        )
        write_pem_cert(pki.cert(name), leaf.cert)
        write_pem_key(pki.key(name), leaf.key)
        write_p12(pki.p12(name), leaf, [issuer.cert, root.cert], password, _friendly_name(name))
    return pki


def load(directory: Path | str, password: str = DEFAULT_PASSWORD) -> ExamplePKI:
    """Describe an existing set, raising ``FileNotFoundError`` for its first missing file."""
    pki = ExamplePKI(Path(directory), password)
    for path in pki.files():
        if not path.is_file():
            raise FileNotFoundError(f"example PKI file missing: {path}")
    return pki


def make_ca(
    common_name: str,
    *,
    issuer: Issued | None = None,
    not_before: datetime,
    not_after: datetime,
    key_size: int = 2048,
    org_units: tuple[str, ...] = (),
) -> Issued:
    """Create a CA under ``issuer``, or a self-signed root when ``issuer`` is None.

    Subject: ``CN=common_name,OU=...,O=CISIS-TRANSPORT EXEMPLE,C=FR``.
    """
    key = _new_key(key_size)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            *(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou) for ou in org_units),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    issuer_name, signing_key = (
        (subject, key) if issuer is None else (issuer.cert.subject, issuer.key)
    )
    # A root may certify intermediates (path length 1); intermediates only issue leaves.
    path_length = 1 if issuer is None else 0
    builder = (
        _base_builder(subject, key, issuer_name, signing_key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage({"key_cert_sign", "crl_sign"}), critical=True)
    )
    return Issued(key, builder.sign(signing_key, hashes.SHA256()))


def issue(
    issuer: Issued,
    subject: x509.Name,
    *,
    key_usage: AbstractSet[str],
    extended_key_usage: tuple[ObjectIdentifier, ...] = (),
    not_before: datetime,
    not_after: datetime,
    san_dns: tuple[str, ...] = (),
    san_ip: tuple[str, ...] = (),
    key: rsa.RSAPrivateKey | None = None,
    key_size: int = 2048,
) -> Issued:
    """Issue an end-entity certificate signed by ``issuer``.

    ``key_usage`` holds ``x509.KeyUsage`` field names ("digital_signature",
    "content_commitment" for nonRepudiation, "key_encipherment", ...). A fresh key is made
    unless ``key`` is given (e.g. to reissue the same key with a bad profile).
    """
    key = key or _new_key(key_size)
    builder = (
        _base_builder(subject, key, issuer.cert.subject, issuer.key, not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key_usage), critical=True)
    )
    if extended_key_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False
        )
    alt_names = [x509.DNSName(d) for d in san_dns]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in san_ip]
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return Issued(key, builder.sign(issuer.key, hashes.SHA256()))


def write_pem_cert(path: Path | str, cert: x509.Certificate) -> None:
    """Write one certificate as PEM."""
    _write_pem_certs(path, [cert])


def write_pem_key(path: Path | str, key: rsa.RSAPrivateKey) -> None:
    """Write an unencrypted PKCS#8 PEM private key, readable by its owner only (0600)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(Path(path), pem)


def write_p12(
    path: Path | str,
    issued: Issued,
    chain: list[x509.Certificate],
    password: str,
    friendly_name: str,
) -> None:
    """Write a password-protected PKCS#12 with the key, its certificate and ``chain`` (0600)."""
    data = pkcs12.serialize_key_and_certificates(
        friendly_name.encode(),
        issued.key,
        issued.cert,
        chain,
        serialization.BestAvailableEncryption(password.encode()),
    )
    _write_private(Path(path), data)


def _new_key(key_size: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=_PUBLIC_EXPONENT, key_size=key_size)


def _as_utc(moment: datetime) -> datetime:
    # cryptography reads naive datetimes as UTC; make that explicit for the arithmetic.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _friendly_name(name: str) -> str:
    return f"TEST {name} (cisis-transport example, not for production)"


def _key_usage(flags: Iterable[str]) -> x509.KeyUsage:
    flags = set(flags)
    unknown = flags - set(_KEY_USAGE_FLAGS)
    if unknown:
        raise ValueError(f"unknown key usage {sorted(unknown)}; expected among {_KEY_USAGE_FLAGS}")
    return x509.KeyUsage(**{flag: flag in flags for flag in _KEY_USAGE_FLAGS})


def _base_builder(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer_name: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    """Builder with the fields and key identifiers every certificate of the set carries."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )


def _write_pem_certs(path: Path | str, certs: list[x509.Certificate]) -> None:
    Path(path).write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # O_CREAT's mode is ignored when overwriting an existing file, so enforce it.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
