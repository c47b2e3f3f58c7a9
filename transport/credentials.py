"""Keys and certificates: loaded once, checked for their purpose, exposed as facts and a signer.

A :class:`Credential` is what the rest of the library needs from a PKCS#12 file, a PEM pair or (with
the ``pkcs11`` extra) a smart card: the certificate and its chain, the facts the VIHF and the
téléservices headers are built from (RFC 2253 DN, OU, IdNat, key usages), and a :class:`Signer`.
Reading a PKCS#12 costs some ten milliseconds (the key derivations from its password), more when
OpenSSL cannot read it itself (see :func:`load_pkcs12`); signing with the loaded key about half a
millisecond, so a credential is loaded once and kept for the client's life.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from transport.errors import CredentialError

SIGNATURE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    # RSA-SHA1 only because the DMP signs its submission sets so (transport.dmp.xades).
    "rsa-sha1": hashes.SHA1,
    "rsa-sha256": hashes.SHA256,
    "rsa-sha384": hashes.SHA384,
    "rsa-sha512": hashes.SHA512,
}
"""Signature algorithms a :class:`Signer` accepts (RSA PKCS#1 v1.5), by XML-DSig short name."""


class Purpose(enum.Enum):
    """What a credential is used for; each purpose requires its own certificate usages."""

    TLS_CLIENT = "TLS client authentication"
    SIGNATURE = "signature"


@runtime_checkable
class Signer(Protocol):
    """Signs bytes with a private key the caller may never see (a file key or a PKCS#11 token).

    ``algorithm`` is a key of :data:`SIGNATURE_HASHES`; the result is the raw RSA PKCS#1 v1.5
    signature bytes.
    """

    @property
    def certificate(self) -> x509.Certificate: ...

    def sign(self, data: bytes, algorithm: str = "rsa-sha256") -> bytes: ...


@runtime_checkable
class DigestSigner(Signer, Protocol):
    """A :class:`Signer` that also signs a digest computed elsewhere, as a TLS stack asks.

    ``digest`` is the raw hash of ``algorithm``'s hash function (32 bytes for ``rsa-sha256``); the
    result is the RSA PKCS#1 v1.5 signature of its DigestInfo, the same bytes
    ``sign(data, algorithm)`` gives for data with that digest.
    """

    def sign_digest(self, digest: bytes, algorithm: str = "rsa-sha256") -> bytes: ...


def hash_for(algorithm: str) -> hashes.HashAlgorithm:
    """The hash of a signature algorithm short name, or ValueError naming the allowed ones."""
    try:
        return SIGNATURE_HASHES[algorithm]()
    except KeyError:
        allowed = ", ".join(SIGNATURE_HASHES)
        raise ValueError(f"unsupported signature algorithm {algorithm!r} (use {allowed})") from None


@dataclass(frozen=True)
class SoftwareSigner:
    """A :class:`Signer` over an RSA key held in memory."""

    key: rsa.RSAPrivateKey = field(repr=False)
    certificate: x509.Certificate

    def sign(self, data: bytes, algorithm: str = "rsa-sha256") -> bytes:
        return self.key.sign(data, padding.PKCS1v15(), hash_for(algorithm))

    def sign_digest(self, digest: bytes, algorithm: str = "rsa-sha256") -> bytes:
        return self.key.sign(digest, padding.PKCS1v15(), Prehashed(hash_for(algorithm)))


_KEY_USAGE_NAMES = {
    "digital_signature": "digitalSignature",
    "content_commitment": "nonRepudiation",
    "key_encipherment": "keyEncipherment",
    "data_encipherment": "dataEncipherment",
    "key_agreement": "keyAgreement",
    "key_cert_sign": "keyCertSign",
    "crl_sign": "cRLSign",
}
_EKU_NAMES = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}
# RFC 2253 keywords; any other attribute is written as OID=#hex(BER), as Java's X500Principal does,
# so that the Issuer we write equals the DN a Java service computes from the certificate.
_RFC2253_KEYWORDS = {
    NameOID.COMMON_NAME: "CN",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COUNTRY_NAME: "C",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
}
_IDNAT = re.compile(r"[0-9]{10,15}")


def rfc2253_dn(name: x509.Name) -> str:
    """The RFC 2253 string of a distinguished name, most specific RDN first.

    Attributes without an RFC 2253 keyword (surname, givenName of CPS certificates) are written as
    ``OID=#<hex of the BER value>``, byte for byte what Java's ``X500Principal.getName()`` gives.
    """
    rdns = []
    for rdn in reversed(name.rdns):
        rdns.append("+".join(_rfc2253_attribute(attribute) for attribute in rdn))
    return ",".join(rdns)


@functools.lru_cache(maxsize=64)
def subject_dn(certificate: x509.Certificate) -> str:
    """``certificate``'s subject in RFC 2253 form (:func:`rfc2253_dn`), computed once per
    certificate: it is the ``Issuer`` of every assertion its key signs."""
    return rfc2253_dn(certificate.subject)


def _rfc2253_attribute(attribute: x509.NameAttribute) -> str:
    keyword = _RFC2253_KEYWORDS.get(attribute.oid)
    if keyword is not None:
        value = attribute.rfc4514_string().partition("=")[2]
        return f"{keyword}={value}"
    return f"{attribute.oid.dotted_string}=#{_ber_string(attribute).hex()}"


def _ber_string(attribute: x509.NameAttribute) -> bytes:
    # The attribute value's TLV exactly as DER-encoded in a Name, whatever its ASN.1 type (UTF8,
    # Printable, BMP, Universal, T61…): Name SEQUENCE > RDN SET > AVA SEQUENCE > OID, value.
    der = x509.Name([x509.RelativeDistinguishedName([attribute])]).public_bytes()
    for _ in range(3):
        start, _end = _der_element(der)
        der = der[start:]
    _oid_start, oid_end = _der_element(der)
    return der[oid_end:]


def _der_element(der: bytes) -> tuple[int, int]:
    """Offsets of the contents of the DER element at the start of ``der`` and of its end."""
    length = der[1]
    if length < 0x80:
        return 2, 2 + length
    count = length & 0x7F
    length = int.from_bytes(der[2 : 2 + count], "big")
    return 2 + count, 2 + count + length


@dataclass(frozen=True)
class Credential:
    """A certificate with its chain and the means to sign with its key.

    ``source`` names where it came from (a file path or a token) for error messages; ``chain`` holds
    the other certificates of the file (intermediates, and the root when the file has it), leaf
    excluded; ``private_key`` is present only for keys held in memory (PKCS#12, PEM); a key that
    stays on a card (None) reaches TLS through its signer, which must then be a
    :class:`DigestSigner`.
    """

    source: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    signer: Signer = field(repr=False)
    private_key: rsa.RSAPrivateKey | None = field(default=None, repr=False)

    @property
    def dn(self) -> str:
        """The subject DN in RFC 2253 form (the VIHF ``Issuer`` of a signing credential)."""
        return subject_dn(self.certificate)

    @property
    def issuer_dn(self) -> str:
        """The issuing CA's DN in RFC 2253 form."""
        return rfc2253_dn(self.certificate.issuer)

    @property
    def common_name(self) -> str | None:
        """The subject CN (``INSI-AUTO`` for a téléservices certificate), or None."""
        return _first(self.certificate.subject, NameOID.COMMON_NAME)

    @property
    def organizational_unit(self) -> str | None:
        """The subject OU: the structure's id on an ORG certificate, the profession on a CPS."""
        return _first(self.certificate.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)

    @property
    def idnat(self) -> str | None:
        """The professional's national identifier (IdNat) carried as the CN of a CPS certificate."""
        cn = self.common_name
        return cn if cn is not None and _IDNAT.fullmatch(cn) else None

    @property
    def key_usages(self) -> frozenset[str]:
        """Key usages by their RFC 5280 names (``digitalSignature``, ``nonRepudiation``…)."""
        return certificate_key_usages(self.certificate)

    @property
    def extended_key_usages(self) -> frozenset[str]:
        """Extended key usages by name (``clientAuth``, ``emailProtection``…) or dotted OID."""
        return certificate_extended_key_usages(self.certificate)

    @property
    def not_valid_before(self) -> datetime:
        return self.certificate.not_valid_before_utc

    @property
    def not_valid_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def check(self, purpose: Purpose, *, now: datetime | None = None) -> Credential:
        """Self if the certificate is valid now and allows ``purpose``, else CredentialError."""
        check_validity(self.certificate, self.source, now=now)
        check_usage(self.certificate, purpose, self.source)
        return self


def _first(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attributes = name.get_attributes_for_oid(oid)
    return str(attributes[0].value) if attributes else None


def certificate_key_usages(certificate: x509.Certificate) -> frozenset[str]:
    """The key usages of a certificate by RFC 5280 name; empty when the extension is absent."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return frozenset()
    names = set()
    for attribute, name in _KEY_USAGE_NAMES.items():
        if getattr(usage, attribute):
            names.add(name)
    return frozenset(names)


def certificate_extended_key_usages(certificate: x509.Certificate) -> frozenset[str]:
    """The extended key usages of a certificate by name; empty when the extension is absent."""
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(_EKU_NAMES.get(oid, oid.dotted_string) for oid in usages)


def check_validity(
    certificate: x509.Certificate, source: str, *, now: datetime | None = None
) -> None:
    """Raise CredentialError if the certificate is expired or not yet valid at ``now`` (UTC).

    A naive ``now`` is read as UTC, as cryptography reads naive certificate dates.
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if now < certificate.not_valid_before_utc:
        raise CredentialError(
            source,
            f"certificate not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            hint="check the computer's clock, or wait for the certificate's start date",
        )
    if now > certificate.not_valid_after_utc:
        raise CredentialError(
            source,
            f"certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
            hint="renew the certificate (IGC-Santé) and point the profile at the new file",
        )


def check_usage(certificate: x509.Certificate, purpose: Purpose, source: str) -> None:
    """Raise CredentialError if the certificate's usages do not allow ``purpose``."""
    if purpose is Purpose.SIGNATURE:
        missing = {"digitalSignature", "nonRepudiation"} - certificate_key_usages(certificate)
        if missing:
            raise CredentialError(
                source,
                "not a signature certificate (key usage lacks " + ", ".join(sorted(missing)) + ")",
                hint="sign with the ORG SIGN certificate or the card's signature key, not the "
                "authentication one (the DMP answers DMPInvalidCertificate)",
            )
    elif "clientAuth" not in certificate_extended_key_usages(certificate):
        raise CredentialError(
            source,
            "not a TLS client authentication certificate (extended key usage lacks clientAuth)",
            hint="use the ORG AUTH_CLI certificate or the card's authentication key for TLS",
        )


def _check_key_matches(key: rsa.RSAPrivateKey, certificate: x509.Certificate, source: str) -> None:
    if key.public_key().public_numbers() != rsa_public_key(certificate, source).public_numbers():
        raise CredentialError(source, "the private key does not match the certificate")


def rsa_public_key(certificate: x509.Certificate, source: str) -> rsa.RSAPublicKey:
    """The certificate's RSA public key, or CredentialError for any other key type."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CredentialError(source, "only RSA keys are supported (the services sign with RSA)")
    return public_key


def resolve_password(
    password: str | bytes | None, password_env: str | None, source: str
) -> bytes | None:
    """The password from the argument, else from the environment variable ``password_env``."""
    if password is not None:
        return password.encode() if isinstance(password, str) else password
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise CredentialError(
                source,
                f"the password variable {password_env} is not set",
                hint=f"export {password_env}=… before running",
            )
        return value.encode()
    return None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CredentialError(str(path), f"{what} not found") from None
    except OSError as error:
        raise CredentialError(str(path), f"cannot read {what}: {error.strerror}") from None


def _unchecked_key(
    data: bytes | memoryview, password: bytes | None, encoding: serialization.Encoding
) -> PrivateKeyTypes:
    """The private key in ``data`` (``encoding`` PEM or DER), loaded without cryptography's RSA
    key validation (primality of p and q, some 30 ms for RSA-2048), which would guard nothing here.

    :func:`_credential` refuses a key that does not match its certificate (same modulus and
    exponent), and OpenSSL checks every CRT private-key operation it makes, signature or TLS
    handshake, against the public exponent, recomputing a mismatch without CRT
    (``rsa_ossl_mod_exp``, crypto/rsa/rsa_ossl.c), so that a key with corrupt primes cannot leak
    them through a faulty signature (the Boneh-DeMillo-Lipton attack); a wrong private exponent
    gives signatures the service refuses. Key files, and the keys of the PKCS#12 files OpenSSL
    reads, are loaded here.
    """
    if encoding is serialization.Encoding.PEM:
        return serialization.load_pem_private_key(
            data, password, unsafe_skip_rsa_key_validation=True
        )
    return serialization.load_der_private_key(data, password, unsafe_skip_rsa_key_validation=True)


def _credential(
    source: str,
    key: object,
    certificate: x509.Certificate | None,
    others: Iterable[x509.Certificate],
    purpose: Purpose | None,
    now: datetime | None,
) -> Credential:
    if certificate is None:
        raise CredentialError(source, "no certificate found")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CredentialError(source, "no RSA private key found (the services sign with RSA)")
    _check_key_matches(key, certificate, source)
    chain = tuple(cert for cert in others if cert != certificate)
    credential = Credential(source, certificate, chain, SoftwareSigner(key, certificate), key)
    return credential.check(purpose, now=now) if purpose is not None else credential


def load_pkcs12(
    path: str | os.PathLike[str],
    password: str | bytes | None = None,
    *,
    password_env: str | None = None,
    purpose: Purpose | None = None,
    now: datetime | None = None,
) -> Credential:
    """Load a PKCS#12 (.p12) file: key, certificate and chain.

    The password comes from ``password``, else from the environment variable ``password_env``.
    With ``purpose``, the certificate is also checked for validity at ``now`` and for its usages.

    The file is read by the ``ssl`` module's OpenSSL (:func:`transport.openssl.read_pkcs12`: its
    MAC verified and its bags decrypted there) and its key loaded as a key file is
    (:func:`_unchecked_key`). Where that reader is unavailable or refuses the file (wrong password,
    malformed file, an algorithm OpenSSL 3 keeps in its legacy provider…), cryptography's
    PKCS#12 loader reads it, RSA key validation included, and its refusal is the one reported.
    """
    path = Path(path)
    source = str(path)
    data = _read(path, "PKCS#12 file")
    secret = resolve_password(password, password_env, source)
    try:
        key, certificate, others = _parsed_pkcs12(data, secret)
    except ValueError:
        reason = "wrong password, or not a PKCS#12 file" if secret else "password required"
        raise CredentialError(
            source, reason, hint="give the password, or the variable that holds it"
        ) from None
    return _credential(source, key, certificate, list(others), purpose, now)


_Pkcs12 = tuple[object, x509.Certificate | None, tuple[x509.Certificate, ...]]
_pkcs12_cache: dict[bytes, _Pkcs12] = {}
_pkcs12_lock = threading.Lock()
_PKCS12_CACHE_SIZE = 32


def _parsed_pkcs12(data: bytes, secret: bytes | None) -> _Pkcs12:
    """The key, certificate and other certificates of a PKCS#12, decrypted once per process.

    Decrypting derives keys from the password (some 10 ms); a profile names the same file for TLS
    and signing, and every command loads its profile. The cache is keyed by a digest of the file
    and the password, never by the password itself; a changed file is decrypted again.
    """
    fingerprint = hashlib.sha256(hashlib.sha256(data).digest() + (secret or b"")).digest()
    with _pkcs12_lock:
        cached = _pkcs12_cache.get(fingerprint)
    if cached is None:
        cached = _openssl_pkcs12(data, secret)
        if cached is None:  # not read there: cryptography reads it, or says why it cannot
            cached = _cryptography_pkcs12(data, secret)
        with _pkcs12_lock:
            if len(_pkcs12_cache) >= _PKCS12_CACHE_SIZE:
                _pkcs12_cache.clear()
            _pkcs12_cache[fingerprint] = cached
    return cached


def _openssl_pkcs12(data: bytes, secret: bytes | None) -> _Pkcs12 | None:
    """The PKCS#12 as the ``ssl`` module's OpenSSL reads it, or None where it cannot."""
    from transport import openssl  # ctypes and the library only when a PKCS#12 is read

    try:
        with openssl.read_pkcs12(data, secret) as contents:
            pkcs8 = contents.key
            key = None if pkcs8 is None else _unchecked_key(pkcs8, None, serialization.Encoding.DER)
        certificate = contents.certificate
        return (
            key,
            None if certificate is None else x509.load_der_x509_certificate(certificate),
            tuple(x509.load_der_x509_certificate(item) for item in contents.others),
        )
    except (openssl.OpenSSLUnavailable, ValueError, UnsupportedAlgorithm):
        return None


def _cryptography_pkcs12(data: bytes, secret: bytes | None) -> _Pkcs12:
    """The PKCS#12 as cryptography reads it; ValueError when it cannot."""
    bundle = pkcs12.load_pkcs12(data, secret)
    return (
        bundle.key,
        bundle.cert.certificate if bundle.cert else None,
        tuple(item.certificate for item in bundle.additional_certs),
    )


def load_pem(
    certificate_path: str | os.PathLike[str],
    key_path: str | os.PathLike[str] | None = None,
    password: str | bytes | None = None,
    *,
    password_env: str | None = None,
    purpose: Purpose | None = None,
    now: datetime | None = None,
) -> Credential:
    """Load a PEM certificate (the first one; any others form the chain) and its PEM key.

    ``key_path`` defaults to ``certificate_path`` (a single file holding both). An encrypted key
    takes its password from ``password`` or the environment variable ``password_env``.
    The key is loaded as :func:`_unchecked_key` says.
    """
    certificate_path = Path(certificate_path)
    key_path = Path(key_path) if key_path is not None else certificate_path
    source = str(certificate_path)
    try:
        certificates = x509.load_pem_x509_certificates(_read(certificate_path, "certificate"))
    except ValueError:
        raise CredentialError(source, "no PEM certificate found in the file") from None
    secret = resolve_password(password, password_env, str(key_path))
    try:
        key = _unchecked_key(_read(key_path, "private key"), secret, serialization.Encoding.PEM)
    except TypeError:
        reason = (
            "the key is encrypted: password required" if secret is None else "key not encrypted"
        )
        raise CredentialError(str(key_path), reason) from None
    except ValueError:
        raise CredentialError(
            str(key_path), "wrong password, or no PEM private key in the file"
        ) from None
    return _credential(source, key, certificates[0], certificates[1:], purpose, now)
