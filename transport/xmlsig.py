"""Enveloped XML-DSig on one element (a SAML assertion), and its wrapping-safe verification.

Signing: exclusive c14n, RSA-SHA256 by default, one Reference to ``#<ID>`` with the
enveloped-signature and exclusive c14n transforms, ``ds:Signature`` placed where the schema wants it
(after ``saml2:Issuer``), ``KeyInfo/X509Data`` with the signer's certificate.

Verification works on a standalone copy of the element, requires the signature to be its direct
child and its single Reference to point at the element itself, enforces the signing profile above
(:data:`ENVELOPED_PROFILE`, RSA-SHA256 and SHA-256; SHA-1 only where configured) before any
cryptography, checks the certificate chain, its dates and its key usage with our own policy, then
returns only what the signature covers.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from lxml import etree
from lxml.builder import ElementMaker

from transport.credentials import Signer, certificate_key_usages
from transport.errors import SignatureError
from transport.xml import parse_xml

if TYPE_CHECKING:
    from signxml import DigestAlgorithm, SignatureMethod

# signxml logs whole canonicalised documents at DEBUG: VIHFs hold patient identifiers and names.
logging.getLogger("signxml").setLevel(logging.INFO)

DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED_SIGNATURE = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_SIGNATURE = f"{{{DSIG_NS}}}Signature"
_INCLUSIVE_NAMESPACES = f"{{{EXC_C14N}}}InclusiveNamespaces"


_SIGNATURE_METHODS = {
    "rsa-sha256": ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", hashes.SHA256),
    "rsa-sha384": ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha384", hashes.SHA384),
    "rsa-sha512": ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha512", hashes.SHA512),
}
_DIGEST_METHODS = {
    hashes.SHA256: "http://www.w3.org/2001/04/xmlenc#sha256",
    hashes.SHA384: "http://www.w3.org/2001/04/xmldsig-more#sha384",
    hashes.SHA512: "http://www.w3.org/2001/04/xmlenc#sha512",
}
ENVELOPED = f"{DSIG_NS}enveloped-signature"
_DS = ElementMaker(namespace=DSIG_NS, nsmap={"ds": DSIG_NS})
SIGNATURE_ALGORITHMS = tuple(_SIGNATURE_METHODS)
"""The signature algorithm names a signer accepts (RSA PKCS#1 v1.5, XML-DSig 1.1 URIs)."""


def sign_enveloped(
    element: etree._Element,
    signer: Signer,
    *,
    algorithm: str = "rsa-sha256",
    after: str | None = None,
    id_attribute: str = "ID",
) -> etree._Element:
    """Return a signed copy of ``element`` with an enveloped signature over its ``id_attribute``.

    The signature is the volet's profile (XML-DSig 1.0, W3C Recommendation 2008): one Reference to
    ``#<ID>`` with the enveloped-signature and exclusive c14n transforms, exclusive c14n of
    ``SignedInfo``, ``algorithm`` (``rsa-sha256`` by default) with the digest of the same size, and
    ``KeyInfo/X509Data`` holding the signer's certificate. ``after`` is the Clark name of the child
    the ``ds:Signature`` must follow (for a SAML assertion, ``saml2:Issuer``); without it the
    signature comes first. :func:`sign_in_place` signs ``element`` itself.
    """
    signed = copy.deepcopy(element)
    sign_in_place(signed, signer, algorithm=algorithm, after=after, id_attribute=id_attribute)
    return signed


def sign_in_place(
    element: etree._Element,
    signer: Signer,
    *,
    algorithm: str = "rsa-sha256",
    after: str | None = None,
    id_attribute: str = "ID",
) -> None:
    """Insert into ``element`` the enveloped signature :func:`sign_enveloped` describes, for an
    element the caller has just built and owns (no copy is made).

    Built here rather than by signxml, which re-parses and copies the document it signs: this is
    one exclusive c14n of the element, one of ``SignedInfo``, and one RSA operation of ``signer``
    (a key file or a card), the rest of the signature copied from a template made once per
    certificate and algorithm.
    """
    if algorithm not in _SIGNATURE_METHODS:
        raise ValueError(
            f"unsupported signature algorithm {algorithm!r} (use {', '.join(_SIGNATURE_METHODS)})"
        )
    identifier = element.get(id_attribute)
    if not identifier:
        raise ValueError(f"the element to sign has no {id_attribute} attribute")
    # The enveloped-signature transform removes the signature before digesting: digesting the
    # element before the signature is inserted gives the same octets.
    canonical_element = etree.tostring(element, method="c14n", exclusive=True, with_comments=False)
    digest = hashlib.new(_SIGNATURE_METHODS[algorithm][1].name, canonical_element).digest()
    signature = copy.deepcopy(_signature_template(signer.certificate, algorithm))
    signed_info, signature_value = signature[0], signature[1]
    reference = signed_info[2]
    reference.set("URI", f"#{identifier}")
    reference[2].text = base64.b64encode(digest).decode()
    anchor = next(element.iterchildren(after), None) if after else None
    element.insert(element.index(anchor) + 1 if anchor is not None else 0, signature)
    # Exclusive c14n renders only the namespaces SignedInfo uses, so where it sits does not matter.
    canonical = etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False)
    signature_value.text = base64.b64encode(signer.sign(canonical, algorithm)).decode()


@functools.lru_cache(maxsize=64)
def _signature_template(certificate: x509.Certificate, algorithm: str) -> etree._Element:
    """``ds:Signature`` for ``certificate`` and ``algorithm`` with an empty Reference URI,
    DigestValue and SignatureValue: what :func:`sign_in_place` fills per signature (on a copy)."""
    method, hash_type = _SIGNATURE_METHODS[algorithm]
    return _DS.Signature(
        _DS.SignedInfo(
            _DS.CanonicalizationMethod(Algorithm=EXC_C14N),
            _DS.SignatureMethod(Algorithm=method),
            _DS.Reference(
                _DS.Transforms(
                    _DS.Transform(Algorithm=ENVELOPED), _DS.Transform(Algorithm=EXC_C14N)
                ),
                _DS.DigestMethod(Algorithm=_DIGEST_METHODS[hash_type]),
                _DS.DigestValue(),
                URI="",
            ),
        ),
        _DS.SignatureValue(),
        _DS.KeyInfo(_DS.X509Data(_DS.X509Certificate(_pem_body(certificate)))),
    )


def _pem_body(certificate: x509.Certificate) -> str:
    """The base64 lines of ``certificate``'s PEM form, as ``X509Certificate`` carries them."""
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    return "".join(line + "\n" for line in pem.splitlines()[1:-1])


@dataclass(frozen=True)
class VerifySettings:
    """What a verifier trusts and tolerates.

    ``ca_bundle``: PEM file of trusted roots and intermediates. ``clock_skew``: tolerance on
    certificate and assertion dates. ``allow_sha1``: accept RSA-SHA1 signatures (old official
    examples use them; off by default). ``require_non_repudiation``: the signer's certificate must
    be a signature certificate (digitalSignature + nonRepudiation), as the DMP requires.
    """

    ca_bundle: Path
    clock_skew: timedelta = timedelta(minutes=5)
    allow_sha1: bool = False
    require_non_repudiation: bool = True

    @cached_property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        """The certificates of the CA bundle, read once."""
        try:
            return tuple(x509.load_pem_x509_certificates(Path(self.ca_bundle).read_bytes()))
        except (OSError, ValueError) as error:
            raise SignatureError(
                "untrusted", f"cannot read CA bundle {self.ca_bundle}: {error}"
            ) from None


@dataclass(frozen=True)
class Verified:
    """The outcome of a successful verification: only ``element`` may be read and trusted.

    ``element`` is the signed element as covered by the signature (signature removed), ``signer``
    the verified signing certificate, ``algorithm`` the SignatureMethod URI used.
    """

    element: etree._Element
    signer: x509.Certificate
    algorithm: str


@dataclass(frozen=True)
class SignatureProfile:
    """The algorithms a signature must use before anything in it is trusted (W3C XML-DSig 1.1
    §4.4): SignedInfo's CanonicalizationMethod (``canonicalization``), and on every Reference
    exactly ``transforms`` in that order; the SignatureMethod is RSA-SHA256 and every
    DigestMethod SHA-256 (RFC 6931 URIs), plus RSA-SHA1 and SHA-1 where ``allow_sha1``.

    signxml runs the transforms it knows and silently skips the others (an XPath, XSLT…), so a
    signature outside the profile is refused here, with a reason, before it is verified."""

    canonicalization: str
    transforms: tuple[str, ...]


ENVELOPED_PROFILE = SignatureProfile(EXC_C14N, (ENVELOPED_SIGNATURE, EXC_C14N))
"""The profile of an enveloped assertion signature (VIHF, assertion PS): exclusive c14n, and the
enveloped-signature and exclusive c14n transforms (SAML 2.0 core §5.4)."""


def check_profile(signature: etree._Element, profile: SignatureProfile, allow_sha1: bool) -> None:
    """SignatureError (reason ``profile``) unless the SignedInfo of ``signature`` follows
    ``profile``, with SHA-1 only when ``allow_sha1``."""
    signed_info = signature.find(f"{{{DSIG_NS}}}SignedInfo")
    if signed_info is None:
        raise SignatureError("malformed", "the signature has no SignedInfo")
    canonicalization = _algorithm(signed_info, "CanonicalizationMethod")
    if canonicalization != profile.canonicalization:
        raise SignatureError(
            "profile",
            f"CanonicalizationMethod {canonicalization!r} is not {profile.canonicalization}",
        )
    method = _algorithm(signed_info, "SignatureMethod")
    if method not in {m.value for m in allowed_methods(allow_sha1)}:
        raise SignatureError("profile", f"SignatureMethod {method!r} is refused")
    for reference in signed_info.iterfind(f"{{{DSIG_NS}}}Reference"):
        _check_reference_profile(reference, profile, allow_sha1)


def _check_reference_profile(
    reference: etree._Element, profile: SignatureProfile, allow_sha1: bool
) -> None:
    transforms = reference.findall(f"{{{DSIG_NS}}}Transforms/{{{DSIG_NS}}}Transform")
    algorithms = tuple(transform.get("Algorithm", "") for transform in transforms)
    if algorithms != profile.transforms or len(reference.findall(f"{{{DSIG_NS}}}Transforms")) > 1:
        raise SignatureError(
            "profile",
            f"Reference {reference.get('URI')!r} transforms {list(algorithms)} are not"
            f" {list(profile.transforms)}",
        )
    for transform in transforms:
        # Only exclusive c14n takes a parameter, its InclusiveNamespaces PrefixList.
        if any(child.tag != _INCLUSIVE_NAMESPACES for child in transform.iterchildren("{*}*")):
            raise SignatureError("profile", "a Transform carries a parameter outside the profile")
    digest = _algorithm(reference, "DigestMethod")
    if digest not in {d.value for d in allowed_digests(allow_sha1)}:
        raise SignatureError("profile", f"DigestMethod {digest!r} is refused")


def _algorithm(parent: etree._Element, name: str) -> str:
    found = parent.findall(f"{{{DSIG_NS}}}{name}")
    if len(found) != 1:
        raise SignatureError("malformed", f"expected one ds:{name}")
    return found[0].get("Algorithm", "")


def verify_enveloped(
    element: etree._Element,
    settings: VerifySettings,
    *,
    id_attribute: str = "ID",
    now: datetime | None = None,
) -> Verified:
    """Verify the enveloped signature of ``element`` (:data:`ENVELOPED_PROFILE`); return what it
    covers, or SignatureError."""
    # signxml (and the cryptography backends it loads) costs its import only to a verifier.
    from signxml import SignatureConfiguration, XMLVerifier

    now = now or datetime.now(UTC)
    standalone = parse_xml(etree.tostring(element))
    signature = _single_signature(standalone)
    identifier = standalone.get(id_attribute)
    _check_reference(signature, identifier, standalone, id_attribute)
    check_profile(signature, ENVELOPED_PROFILE, settings.allow_sha1)
    leaf = trusted_signer(signature, settings, now)
    config = SignatureConfiguration(
        require_x509=True,
        location="./",
        expect_references=1,
        signature_methods=allowed_methods(settings.allow_sha1),
        digest_algorithms=allowed_digests(settings.allow_sha1),
    )
    with signxml_errors():
        result = XMLVerifier().verify(
            standalone, x509_cert=leaf, id_attribute=id_attribute, expect_config=config
        )
    assert not isinstance(result, list)
    signed = result.signed_xml
    if signed is None or signed.tag != standalone.tag or signed.get(id_attribute) != identifier:
        raise SignatureError("wrapping", "the signature does not cover the element it sits in")
    algorithm = signature.find(f"{{{DSIG_NS}}}SignedInfo/{{{DSIG_NS}}}SignatureMethod")
    return Verified(signed, leaf, algorithm.get("Algorithm", "") if algorithm is not None else "")


def _single_signature(element: etree._Element) -> etree._Element:
    signatures = element.findall(_SIGNATURE)
    if not signatures:
        raise SignatureError("unsigned", "the element carries no ds:Signature")
    if len(signatures) > 1:
        raise SignatureError("wrapping", "the element carries more than one ds:Signature")
    return signatures[0]


def _check_reference(
    signature: etree._Element, identifier: str | None, root: etree._Element, id_attribute: str
) -> None:
    references = signature.findall(f"{{{DSIG_NS}}}SignedInfo/{{{DSIG_NS}}}Reference")
    if not identifier:
        raise SignatureError("malformed", f"the signed element has no {id_attribute}")
    if len(references) != 1 or references[0].get("URI") != f"#{identifier}":
        raise SignatureError("wrapping", "the signature does not reference the element it sits in")
    holders = [node for node in root.iter() if node.get(id_attribute) == identifier]
    if len(holders) != 1:
        raise SignatureError("wrapping", f"{id_attribute} {identifier!r} is not unique")


def trusted_signer(
    signature: etree._Element, settings: VerifySettings, now: datetime
) -> x509.Certificate:
    """The signer certificate a ``ds:Signature`` embeds, once its dates, its chain to a trusted
    anchor and (when ``settings`` require it) its signature usage are checked."""
    leaf, intermediates = embedded_certificates(signature)
    check_dates(leaf, now, settings.clock_skew)
    check_chain(leaf, intermediates, settings, now)
    if settings.require_non_repudiation:
        check_signature_usage(leaf)
    return leaf


@contextmanager
def signxml_errors() -> Iterator[None]:
    """Turn what signxml raises while verifying into SignatureError with its reason."""
    from signxml import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature

    try:
        yield
    except InvalidDigest:
        raise SignatureError(
            "invalid-signature", "signed content was altered (digest mismatch)"
        ) from None
    except InvalidSignature as error:
        raise SignatureError("invalid-signature", f"signature does not verify: {error}") from None
    except InvalidCertificate as error:
        raise SignatureError("untrusted", f"signer certificate refused: {error}") from None
    except (InvalidInput, etree.DocumentInvalid, ValueError) as error:
        # signxml lets a schema-invalid ds:Signature and bad base64 through as lxml/ValueError.
        raise SignatureError("malformed", f"malformed signature: {error}") from None


def embedded_certificates(
    signature: etree._Element,
) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The signer certificate of a ``ds:Signature``'s KeyInfo and the other certificates there."""
    path = f"{{{DSIG_NS}}}KeyInfo/{{{DSIG_NS}}}X509Data/{{{DSIG_NS}}}X509Certificate"
    texts = [node.text or "" for node in signature.findall(path)]
    if not texts:
        raise SignatureError("malformed", "the signature carries no X509Certificate")
    try:
        certificates = [x509.load_der_x509_certificate(base64.b64decode(text)) for text in texts]
    except ValueError as error:
        raise SignatureError("malformed", f"unreadable X509Certificate: {error}") from None
    return certificates[0], certificates[1:]


def check_dates(certificate: x509.Certificate, now: datetime, skew: timedelta) -> None:
    """SignatureError unless ``certificate`` is valid at ``now`` (give or take ``skew``)."""
    subject = certificate.subject.rfc4514_string()
    if now + skew < certificate.not_valid_before_utc:
        raise SignatureError("not-yet-valid", f"signer certificate {subject} is not yet valid")
    if now - skew > certificate.not_valid_after_utc:
        raise SignatureError(
            "expired",
            f"signer certificate {subject} expired on {certificate.not_valid_after_utc:%Y-%m-%d}",
        )


def check_chain(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    settings: VerifySettings,
    now: datetime,
) -> None:
    """SignatureError unless ``leaf`` chains, through ``intermediates``, to a trusted anchor."""
    anchors = settings.anchors
    roots = [cert for cert in anchors if cert.subject == cert.issuer]
    untrusted = [*intermediates, *(cert for cert in anchors if cert.subject != cert.issuer)]
    policy = x509.verification.ExtensionPolicy
    # The services' signing certificates carry emailProtection, not clientAuth: the usage that
    # matters (nonRepudiation) is checked separately, so no EKU is required here.
    builder = (
        x509.verification.PolicyBuilder()
        .store(x509.verification.Store(roots or anchors))
        .time(_within(now, leaf))
        .extension_policies(ee_policy=policy.permit_all(), ca_policy=policy.webpki_defaults_ca())
    )
    try:
        builder.build_client_verifier().verify(leaf, untrusted)
    except x509.verification.VerificationError as error:
        raise SignatureError(
            "untrusted",
            f"signer certificate {leaf.subject.rfc4514_string()} does not chain to a trusted CA",
            hint=str(error),
        ) from None


def _within(now: datetime, certificate: x509.Certificate) -> datetime:
    # Dates were already checked with the clock skew; keep the chain check from refusing a
    # certificate that is inside the tolerance but outside its strict validity window.
    return min(max(now, certificate.not_valid_before_utc), certificate.not_valid_after_utc)


def check_signature_usage(certificate: x509.Certificate) -> None:
    """SignatureError unless ``certificate`` allows digitalSignature and nonRepudiation."""
    missing = {"digitalSignature", "nonRepudiation"} - certificate_key_usages(certificate)
    if missing:
        raise SignatureError(
            "key-usage",
            "the signer's certificate is not a signature certificate (key usage lacks "
            + ", ".join(sorted(missing))
            + ")",
            hint="sign with ORG SIGN or the card's signature key, not an authentication key",
        )


def allowed_methods(allow_sha1: bool) -> frozenset[SignatureMethod]:
    """The signature methods a verification accepts: RSA-SHA256 (RSA-SHA1 too when allowed)."""
    from signxml import SignatureMethod

    if allow_sha1:
        return frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA1})
    return frozenset({SignatureMethod.RSA_SHA256})


def allowed_digests(allow_sha1: bool) -> frozenset[DigestAlgorithm]:
    """The digest algorithms a verification accepts: SHA-256 (SHA-1 too when allowed)."""
    from signxml import DigestAlgorithm

    if allow_sha1:
        return frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA1})
    return frozenset({DigestAlgorithm.SHA256})
