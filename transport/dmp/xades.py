"""The signature document of a DMP submission set (TD2.1): IHE DSG detached XAdES, both ways.

A submission set sent to the DMP carries one more document, linked to the set by a ``signs``
association: an XML signature whose ``ds:Manifest`` lists every other document of the set as
``urn:oid:<uniqueId>`` with the digest of its exact bytes, plus the set itself, and whose
``SignedInfo`` signs that manifest and the XAdES ``SignedProperties`` (signing time, signing
certificate, implied policy). :func:`sign_submission_set` writes it (lxml and the signer's key);
:func:`signature_entry` gives its XDS metadata; :func:`verify_submission_signature` checks one.

Layout, as in the DMP's TD2.1 example and ANS's DRIMBox client: ``SignedInfo`` with one
Reference to ``#IHEManifest`` (Type Manifest) and one to the SignedProperties;
``KeyInfo/X509Data`` with the signer's certificate; then three ``ds:Object``: the manifest, the
``purposeOfSignature`` SignatureProperty (ASTM E1762 "Source"), the XAdES QualifyingProperties.
Two :class:`XadesLayout` are written and verified: :data:`DMP_LAYOUT` (the default, as the DMP
signs: ETSI TS 101 903 v1.1.1 namespace, C14N 1.0 with comments, RSA-SHA1 and SHA-1) and
:data:`XADES_132_LAYOUT` (ETSI TS 101 903 v1.3.2, C14N 1.0, RSA-SHA256 and SHA-256).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureConfiguration, XMLVerifier

from transport.credentials import Signer, rfc2253_dn
from transport.dmp.xds import (
    Coded,
    DocumentEntry,
    SubmissionSet,
    Visibility,
    new_unique_id,
    patient_id,
)
from transport.errors import MalformedXMLError, SignatureError, ValidationError
from transport.soap import mtom
from transport.vihf import format_instant, signed_instant
from transport.xml import Namespace, parse_xml
from transport.xmlsig import (
    DSIG_NS,
    SignatureProfile,
    VerifySettings,
    allowed_digests,
    allowed_methods,
    check_profile,
    signxml_errors,
    trusted_signer,
)

XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
XADES_111_NS = "http://uri.etsi.org/01903/v1.1.1#"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_WITH_COMMENTS = f"{C14N}#WithComments"
SHA1_URI = "http://www.w3.org/2000/09/xmldsig#sha1"
SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA1_URI = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
RSA_SHA256_URI = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
MANIFEST_TYPE = "http://www.w3.org/2000/09/xmldsig#Manifest"
SIGNED_PROPERTIES_TYPE = "http://uri.etsi.org/01903#SignedProperties"
"""The SignedProperties Reference Type of XAdES 1.3.2 (ETSI TS 101 903 v1.3.2 §6.3.1)."""
SIGNED_PROPERTIES_111_TYPE = f"{XADES_111_NS}SignedProperties"
"""The SignedProperties Reference Type of XAdES 1.1.1 (ETSI TS 101 903 v1.1.1 §6.2)."""
MANIFEST_ID = "IHEManifest"
PURPOSE_PROPERTY_ID = "purposeOfSignature"

SOURCE_SIGNATURE = Coded("1.2.840.10065.1.12.1.14", "1.2.840.10065.1.12", "Source")
"""ASTM E1762 signature purpose "Source" (author's origination): the DSG purposeOfSignature and
the signature document's eventCode."""
SIGNATURE_CLASS = Coded("urn:oid:1.3.6.1.4.1.19376.1.2.1.1.1", "URN", "Digital Signature")
SIGNATURE_TYPE = Coded("E1762", "ASTM", "Full Document")
SIGNATURE_FORMAT = Coded("http://www.w3.org/2000/09/xmldsig#", "URN", "Default Signature Style")
SIGNATURE_VISIBILITY = Visibility(hidden_from_professionals=True, hidden_from_patient=True)
"""A signature is for systems, not readers: masked from professionals, hidden from the patient,
as the DMP's TD2.1 request marks its signature document."""
SIGNATURE_LANGUAGE = "art"
"""ISO 639-2 "artificial languages": the language of a signature document in the DMP's TD2.1."""

DSG_PROFILE = SignatureProfile(C14N, ())
"""The profile of :data:`XADES_132_LAYOUT`: C14N 1.0 SignedInfo, References without Transforms
(XML-DSig §4.4.3.2: a same-document node set is then canonicalised with C14N 1.0)."""
DMP_PROFILE = SignatureProfile(C14N_WITH_COMMENTS, ())
"""The profile of :data:`DMP_LAYOUT`: SignedInfo canonicalised with C14N 1.0 with comments, as
the DMP's TD2.1 example, and References without Transforms."""


@dataclass(frozen=True)
class XadesLayout:
    """How a submission set's signature document is written and what its verifier enforces.

    ``name``: the option's name (CLI, profile); ``namespace``: the XAdES namespace of the
    QualifyingProperties; ``profile``: the SignedInfo canonicalization and transforms;
    ``signature_method`` and ``digest_method``: the XML-DSig URIs (RFC 6931) it signs and digests
    with; ``hash``: the :mod:`hashlib` name of that digest; ``signed_properties_type``: the Type
    of the SignedProperties Reference; ``allow_sha1``: SHA-1 accepted by the verifier for this
    layout only (the DMP's own choice), whatever the verify settings say.
    """

    name: str
    namespace: str
    profile: SignatureProfile
    signature_method: str
    digest_method: str
    hash: str
    signed_properties_type: str
    allow_sha1: bool

    @property
    def signature_algorithm(self) -> str:
        """The :meth:`transport.credentials.Signer.sign` algorithm name of ``signature_method``."""
        return f"rsa-{self.hash}"


DMP_LAYOUT = XadesLayout(
    "dmp",
    XADES_111_NS,
    DMP_PROFILE,
    RSA_SHA1_URI,
    SHA1_URI,
    "sha1",
    SIGNED_PROPERTIES_111_TYPE,
    allow_sha1=True,
)
"""As the DMP signs (its TD2.1 example, ANS's DRIMBox): XAdES 1.1.1, C14N 1.0 with comments,
RSA-SHA1, SHA-1. The default."""
XADES_132_LAYOUT = XadesLayout(
    "xades-1.3.2",
    XADES_NS,
    DSG_PROFILE,
    RSA_SHA256_URI,
    SHA256_URI,
    "sha256",
    SIGNED_PROPERTIES_TYPE,
    allow_sha1=False,
)
"""XAdES 1.3.2 (signxml's), C14N 1.0, RSA-SHA256, SHA-256: for services that take SHA-2 only."""
LAYOUTS = {layout.name: layout for layout in (DMP_LAYOUT, XADES_132_LAYOUT)}
"""The layouts by name."""
_BY_NAMESPACE = {layout.namespace: layout for layout in LAYOUTS.values()}

SUBMISSION_SET_DIGEST = b"\x00"
"""The digest written for the set's own reference: a submission set has no bytes to hash, and the
DMP's example and DRIMBox both write one zero byte (``AA==``) there."""

_DIGEST_URIS = {
    DigestAlgorithm.SHA1.value: "sha1",
    DigestAlgorithm.SHA256.value: "sha256",
    DigestAlgorithm.SHA384.value: "sha384",
    DigestAlgorithm.SHA512.value: "sha512",
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_OID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")

_ds = Namespace(DSIG_NS)

Content = bytes | Path
"""A document's content: its bytes, or the file holding them (read in chunks, never whole)."""


@dataclass(frozen=True)
class ContentDigests:
    """What a submission needs of a document's bytes, from one read of them: ``size`` in bytes,
    ``sha1`` (hex: the XDS ``hash`` slot, IHE ITI TF-3 §4.2.3.2) and ``sha256`` (raw: the digest
    of the set's XAdES manifest, XML-DSig 1.0 §5.7)."""

    size: int
    sha1: str
    sha256: bytes

    def digest(self, algorithm: str) -> bytes:
        """The raw digest named ``algorithm`` (:mod:`hashlib` name: ``sha1`` or ``sha256``)."""
        if algorithm == "sha1":
            return bytes.fromhex(self.sha1)
        if algorithm == "sha256":
            return self.sha256
        raise ValueError(f"no {algorithm} digest of the content was computed")


def content_digests(content: Content) -> ContentDigests:
    """SHA-1, SHA-256 and size of ``content`` in one pass (a file is read once, in chunks)."""
    sha1, sha256 = _digests(content, "sha1", "sha256")
    return ContentDigests(sha1.size, sha1.hexdigest(), sha256.digest())


def _hash(content: Content, algorithm: str) -> bytes:
    (digest,) = _digests(content, algorithm)
    return digest.digest()


class _Digest:
    """A hashlib object that also counts the bytes it was fed."""

    def __init__(self, algorithm: str) -> None:
        self._hash = hashlib.new(algorithm, usedforsecurity=algorithm != "sha1")
        self.size = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _digests(content: Content, *algorithms: str) -> tuple[_Digest, ...]:
    found = tuple(_Digest(algorithm) for algorithm in algorithms)
    if isinstance(content, bytes):
        for digest in found:
            digest.update(content)
        return found
    # A file may be large: the first digest is computed here, the others at the same time in a
    # thread of their own over the same chunks, so that a 2-core machine hashes twice as fast.
    others = mtom.HashingWriter(None, found[1:])  # no thread when there is no other digest
    try:
        with Path(content).open("rb") as handle:
            while chunk := handle.read(mtom.CHUNK_SIZE):
                others.write(chunk)
                found[0].update(chunk)
    finally:
        others.close()
    return found


def _urn(unique_id: str) -> str:
    if not _OID.fullmatch(unique_id):
        raise ValidationError("uniqueId", f"not an OID: {unique_id!r}")
    return f"urn:oid:{unique_id}"


def _c14n(element: etree._Element) -> bytes:
    # Canonical XML 1.0 of the element in its document (W3C XML-DSig §4.3.3.2: a same-document
    # Reference without Transforms is canonicalized so), in-scope namespaces included.
    return etree.tostring(element, method="c14n", exclusive=False, with_comments=False)


def _digest_method(
    parent: etree._Element, method: str, digest: bytes, namespace: Namespace = _ds
) -> None:
    etree.SubElement(parent, namespace("DigestMethod"), Algorithm=method)
    etree.SubElement(parent, namespace("DigestValue")).text = base64.b64encode(digest).decode()


def _manifest_object(
    signature: etree._Element, manifest: list[tuple[str, bytes]], layout: XadesLayout
) -> etree._Element:
    element = etree.SubElement(
        etree.SubElement(signature, _ds("Object")), _ds("Manifest"), Id=MANIFEST_ID
    )
    for uri, digest in manifest:
        reference = etree.SubElement(element, _ds("Reference"), URI=uri)
        _digest_method(reference, layout.digest_method, digest)
    return element


def _purpose_object(signature: etree._Element, signature_id: str) -> None:
    # In no namespace, as the DMP example writes it: the xmldsig schema wants an element inside
    # a ds:SignatureProperty, and the DSG purpose is a bare OID.
    properties = etree.SubElement(etree.SubElement(signature, _ds("Object")), "SignatureProperties")
    purpose = etree.SubElement(
        properties, "SignatureProperty", Id=PURPOSE_PROPERTY_ID, Target=f"#{signature_id}"
    )
    purpose.text = SOURCE_SIGNATURE.code


def _qualifying_object(
    signature: etree._Element,
    signature_id: str,
    certificate: x509.Certificate,
    when: datetime,
    layout: XadesLayout,
) -> etree._Element:
    """The XAdES QualifyingProperties (ETSI TS 101 903 §6.2, §7.2): signing time, signing
    certificate (digest, issuer and serial), implied policy; DSG states the purpose in its own
    SignatureProperty, so the SignedDataObjectProperties is empty, as in the DMP example."""
    xades = Namespace(layout.namespace)
    qualifying = etree.SubElement(
        etree.SubElement(signature, _ds("Object")),
        xades("QualifyingProperties"),
        Target=f"#{signature_id}",
    )
    signed = etree.SubElement(
        qualifying, xades("SignedProperties"), Id=f"{signature_id}-SignedProperties"
    )
    properties = etree.SubElement(signed, xades("SignedSignatureProperties"))
    etree.SubElement(properties, xades("SigningTime")).text = format_instant(when)
    cert = etree.SubElement(
        etree.SubElement(properties, xades("SigningCertificate")), xades("Cert")
    )
    _digest_method(
        etree.SubElement(cert, xades("CertDigest")),
        layout.digest_method,
        certificate.fingerprint(_HASHES[layout.hash]()),
        _cert_digest_namespace(layout),
    )
    issuer_serial = etree.SubElement(cert, xades("IssuerSerial"))
    etree.SubElement(issuer_serial, _ds("X509IssuerName")).text = rfc2253_dn(certificate.issuer)
    etree.SubElement(issuer_serial, _ds("X509SerialNumber")).text = str(certificate.serial_number)
    policy = etree.SubElement(properties, xades("SignaturePolicyIdentifier"))
    etree.SubElement(policy, xades("SignaturePolicyImplied"))
    etree.SubElement(signed, xades("SignedDataObjectProperties"))
    return signed


def _cert_digest_namespace(layout: XadesLayout) -> Namespace:
    """Where a CertDigest's DigestMethod and DigestValue are: local elements of the XAdES
    namespace in v1.1.1 (its DigestAlgAndValueType, elementFormDefault qualified), as the DMP's
    example writes them; the xmldsig ones from v1.2.2 on."""
    return Namespace(layout.namespace) if layout.namespace == XADES_111_NS else _ds


def _signed_info(signature: etree._Element, layout: XadesLayout) -> etree._Element:
    info = etree.SubElement(signature, _ds("SignedInfo"))
    etree.SubElement(info, _ds("CanonicalizationMethod"), Algorithm=layout.profile.canonicalization)
    etree.SubElement(info, _ds("SignatureMethod"), Algorithm=layout.signature_method)
    return info


def _reference(
    info: etree._Element, target: etree._Element, kind: str, layout: XadesLayout
) -> None:
    reference = etree.SubElement(info, _ds("Reference"), Type=kind, URI=f"#{target.get('Id')}")
    _digest_method(
        reference, layout.digest_method, hashlib.new(layout.hash, _c14n(target)).digest()
    )


def _build_signature(
    manifest: list[tuple[str, bytes]],
    signer: Signer,
    when: datetime,
    signature_id: str,
    layout: XadesLayout,
) -> etree._Element:
    """The DSG signature of ``manifest`` (W3C XML-DSig 1.1 core generation, §3.1): the objects
    first, then SignedInfo referencing the manifest and the SignedProperties, then its value."""
    signature = etree.Element(
        _ds("Signature"), Id=signature_id, nsmap={"ds": DSIG_NS, "xades": layout.namespace}
    )
    info = _signed_info(signature, layout)
    value = etree.SubElement(signature, _ds("SignatureValue"))
    certificate = etree.SubElement(
        etree.SubElement(etree.SubElement(signature, _ds("KeyInfo")), _ds("X509Data")),
        _ds("X509Certificate"),
    )
    certificate.text = base64.b64encode(
        signer.certificate.public_bytes(serialization.Encoding.DER)
    ).decode()
    manifest_element = _manifest_object(signature, manifest, layout)
    _purpose_object(signature, signature_id)
    properties = _qualifying_object(signature, signature_id, signer.certificate, when, layout)
    _reference(info, manifest_element, MANIFEST_TYPE, layout)
    _reference(info, properties, layout.signed_properties_type, layout)
    # SignedInfo holds no comment, so its C14N with comments is its C14N: one serialisation.
    value.text = base64.b64encode(signer.sign(_c14n(info), layout.signature_algorithm)).decode()
    return signature


def sign_submission_set(
    documents: Mapping[str, Content | ContentDigests],
    signer: Signer,
    *,
    submission_set_unique_id: str,
    signing_time: datetime | None = None,
    layout: XadesLayout = DMP_LAYOUT,
) -> bytes:
    """The signature document of a submission set, as UTF-8 XML bytes.

    ``documents`` maps each other document's uniqueId (an OID) to its content (files are hashed
    in chunks) or to its :func:`content_digests`, already computed. ``submission_set_unique_id``
    is the set's uniqueId, which the manifest references too. ``signer`` is the signature
    credential (ORG SIGN or the card's signature key): only its certificate and its ``sign`` are
    used. ``signing_time`` defaults to now. ``layout`` is :data:`DMP_LAYOUT` (as the DMP signs)
    unless a service asks for :data:`XADES_132_LAYOUT`.
    """
    if not documents:
        raise ValidationError(
            "documents", "a submission set signature covers at least one document"
        )
    set_uri = _urn(submission_set_unique_id)
    manifest = [(set_uri, SUBMISSION_SET_DIGEST)]
    for unique_id, content in documents.items():
        uri = _urn(unique_id)
        if uri == set_uri:
            raise ValidationError("uniqueId", "a document has the submission set's uniqueId")
        digest = (
            content.digest(layout.hash)
            if isinstance(content, ContentDigests)
            else _hash(content, layout.hash)
        )
        manifest.append((uri, digest))
    signature = _build_signature(
        manifest, signer, signing_time or datetime.now(UTC), f"signature-{uuid.uuid4()}", layout
    )
    return etree.tostring(signature, xml_declaration=True, encoding="UTF-8")


def signature_entry(
    submission: SubmissionSet,
    signed: DocumentEntry,
    content: bytes,
    *,
    unique_id: str | None = None,
) -> DocumentEntry:
    """The XDS metadata of a submission set's signature document ``content``.

    Codes are the ones the DMP's TD2.1 request gives its signature document (IHE DSG): class
    "Digital Signature", type ASTM E1762 "Full Document", format xmldsig, eventCode "Source",
    language ``art``, confidentiality normal plus masked from professionals and invisible to the
    patient (a signature is for systems, not readers). Authors are the set's; the facility type,
    practice setting and legal authenticator are those of ``signed``, one of the signed documents
    (the legal authenticator falls back to the first author). Times are the submission time.
    ``unique_id`` defaults to a fresh OID; hash and size come from ``content``.
    """
    authenticator = signed.legal_authenticator or next(
        (author.person for author in submission.authors if author.person), None
    )
    entry = DocumentEntry(
        patient=submission.patient,
        unique_id=unique_id or new_unique_id(),
        title=SOURCE_SIGNATURE.display,
        class_code=SIGNATURE_CLASS,
        type_code=SIGNATURE_TYPE,
        format_code=SIGNATURE_FORMAT,
        healthcare_facility_type=signed.healthcare_facility_type,
        practice_setting=signed.practice_setting,
        creation_time=submission.submission_time,
        authors=submission.authors,
        confidentiality=SIGNATURE_VISIBILITY.applied(
            (Coded("N", "2.16.840.1.113883.5.25", "Normal"),)
        ),
        mime_type="text/xml",
        language=SIGNATURE_LANGUAGE,
        service_start_time=submission.submission_time,
        service_stop_time=submission.submission_time,
        legal_authenticator=authenticator,
        source_patient_id=patient_id(submission.patient),
        event_codes=(SOURCE_SIGNATURE,),
    )
    return entry.with_content(content)


@dataclass(frozen=True)
class ManifestReference:
    """One ``ds:Reference`` of a manifest: its URI, DigestMethod URI, digest bytes, and the
    Algorithm URIs of its transforms (none in the signatures this module writes)."""

    uri: str
    digest_method: str
    digest: bytes
    transforms: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubmissionSignature:
    """A verified signature document; everything here is covered by the signature.

    ``signer``: the verified signing certificate; ``algorithm``: the SignatureMethod URI;
    ``signing_time``: the XAdES SigningTime (aware datetime); ``references``: the manifest's;
    ``layout``: the :class:`XadesLayout` it is in.
    """

    signer: x509.Certificate
    algorithm: str
    signing_time: datetime
    references: tuple[ManifestReference, ...]
    layout: XadesLayout


def read_manifest(manifest: etree._Element) -> tuple[ManifestReference, ...]:
    """The references of a ``ds:Manifest`` element, as written (no trust is implied: read the
    manifest of a :class:`SubmissionSignature` for that). A DigestValue that is not base64 reads
    as an empty digest, which matches nothing."""
    references = []
    for reference in manifest.findall(_ds("Reference")):
        method = reference.find(_ds("DigestMethod"))
        try:
            digest = base64.b64decode(reference.findtext(_ds("DigestValue")) or "", validate=True)
        except ValueError:
            digest = b""
        references.append(
            ManifestReference(
                reference.get("URI", ""),
                method.get("Algorithm", "") if method is not None else "",
                digest,
                tuple(
                    transform.get("Algorithm", "")
                    for transform in reference.iterfind(f"{_ds('Transforms')}/{_ds('Transform')}")
                ),
            )
        )
    return tuple(references)


def verify_signature(
    data: bytes, settings: VerifySettings, *, now: datetime | None = None
) -> SubmissionSignature:
    """Verify a signature document on its own: layout (either :class:`XadesLayout`, told by its
    XAdES namespace), the layout's profile, certificate (dates, chain to ``settings.ca_bundle``,
    signature key usage), signature value, the digests of the manifest and SignedProperties, the
    XAdES signing certificate. SHA-1 is accepted for :data:`DMP_LAYOUT` (the DMP's choice) or
    where ``settings.allow_sha1``. The documents' digests are not checked here (see
    :func:`verify_submission_signature`). SignatureError when anything is wrong."""
    now = now or datetime.now(UTC)
    try:
        root = parse_xml(data)
    except MalformedXMLError as error:
        raise SignatureError("malformed", f"unreadable signature document: {error}") from None
    layout = _layout_of(root)
    _check_layout(root, layout)
    allow_sha1 = layout.allow_sha1 or settings.allow_sha1
    check_profile(root, layout.profile, allow_sha1)
    leaf = trusted_signer(root, settings, now)
    config = SignatureConfiguration(
        expect_references=2,
        location="./",
        signature_methods=allowed_methods(allow_sha1),
        digest_algorithms=allowed_digests(allow_sha1),
        # XML-DSig §4.4.3.2: a same-document Reference without Transforms is C14N 1.0.
        default_reference_c14n_method=CanonicalizationMethod(C14N),
    )
    with signxml_errors():
        results = XMLVerifier().verify(root, x509_cert=leaf, expect_config=config)
    return _verified(root, leaf, results, layout, allow_sha1)


def _layout_of(root: etree._Element) -> XadesLayout:
    """The layout a signature document is in, by the namespace of its QualifyingProperties."""
    namespaces = {
        etree.QName(node).namespace
        for node in root.iterfind(f"{_ds('Object')}/{{*}}QualifyingProperties")
    }
    if len(namespaces) != 1 or (layout := _BY_NAMESPACE.get(namespaces.pop() or "")) is None:
        raise SignatureError("malformed", "expected one XAdES 1.1.1 or 1.3.2 QualifyingProperties")
    return layout


def _check_layout(root: etree._Element, layout: XadesLayout) -> None:
    """The DSG layout, before any cryptography: one manifest and one SignedProperties, each where
    DSG puts it, each referenced once, no duplicated Id, so that what signxml verifies is what
    is read afterwards."""
    if root.tag != _ds("Signature"):
        raise SignatureError("malformed", "a signature document's root is ds:Signature")
    identifiers = [
        value
        for node in root.iter()
        for name, value in node.attrib.items()
        if etree.QName(name).localname in ("Id", "ID", "id")
    ]
    if len(identifiers) != len(set(identifiers)):
        raise SignatureError("wrapping", "an Id is used twice in the signature document")
    references = root.findall(f"{_ds('SignedInfo')}/{_ds('Reference')}")
    types = sorted(reference.get("Type", "") for reference in references)
    if types != sorted((MANIFEST_TYPE, layout.signed_properties_type)):
        raise SignatureError(
            "malformed", "SignedInfo must reference exactly a Manifest and the SignedProperties"
        )
    xades = Namespace(layout.namespace)
    places = {
        MANIFEST_TYPE: ("Manifest", _ds("Manifest"), f"{_ds('Object')}/{_ds('Manifest')}"),
        layout.signed_properties_type: (
            "SignedProperties",
            xades("SignedProperties"),
            f"{_ds('Object')}/{xades('QualifyingProperties')}/{xades('SignedProperties')}",
        ),
    }
    for reference in references:
        name, tag, path = places[reference.get("Type", "")]
        found = list(root.iter(tag))
        if len(found) != 1 or root.find(path) is not found[0]:
            raise SignatureError("wrapping", f"expected one {name}, in its ds:Object")
        if reference.get("URI") != f"#{found[0].get('Id')}":
            raise SignatureError("wrapping", f"the {name} reference points elsewhere")
    qualifying = root.find(f"{_ds('Object')}/{xades('QualifyingProperties')}")
    assert qualifying is not None
    if qualifying.get("Target") != f"#{root.get('Id')}":
        raise SignatureError("wrapping", "the XAdES properties qualify another signature")


def _verified(
    root: etree._Element,
    leaf: x509.Certificate,
    results: list[Any],
    layout: XadesLayout,
    allow_sha1: bool,
) -> SubmissionSignature:
    xades = Namespace(layout.namespace)
    signed = [getattr(result.signed_xml, "tag", None) for result in results]
    manifests = [
        r.signed_xml for r, tag in zip(results, signed, strict=True) if tag == _ds("Manifest")
    ]
    properties = [
        r.signed_xml
        for r, tag in zip(results, signed, strict=True)
        if tag == xades("SignedProperties")
    ]
    if len(manifests) != 1 or len(properties) != 1:
        raise SignatureError(
            "wrapping", "the signature does not cover one manifest and its properties"
        )
    _check_signing_certificate(properties[0], leaf, layout, allow_sha1)
    signing_time = signed_instant(
        properties[0].findtext(xades("SignedSignatureProperties/SigningTime")), "SigningTime"
    )
    method = root.find(f"{_ds('SignedInfo')}/{_ds('SignatureMethod')}")
    algorithm = method.get("Algorithm", "") if method is not None else ""
    return SubmissionSignature(leaf, algorithm, signing_time, read_manifest(manifests[0]), layout)


def _check_signing_certificate(
    properties: etree._Element, leaf: x509.Certificate, layout: XadesLayout, allow_sha1: bool
) -> None:
    """ETSI TS 101 903 §7.2.2: the signed SigningCertificate names the certificate that verified
    the signature, by digest and issuer serial number (a chain may follow it, as the DMP's)."""
    xades, digests = Namespace(layout.namespace), _cert_digest_namespace(layout)
    for cert in properties.iterfind(xades("SignedSignatureProperties/SigningCertificate/Cert")):
        method = cert.find(f"{xades('CertDigest')}/{digests('DigestMethod')}")
        algorithm = _DIGEST_URIS.get(method.get("Algorithm", "") if method is not None else "")
        if algorithm is None or (algorithm == "sha1" and not allow_sha1):
            continue
        try:
            digest = base64.b64decode(
                cert.findtext(f"{xades('CertDigest')}/{digests('DigestValue')}") or "",
                validate=True,
            )
        except ValueError:
            continue
        serial = cert.findtext(f"{xades('IssuerSerial')}/{_ds('X509SerialNumber')}")
        if digest == leaf.fingerprint(_HASHES[algorithm]()) and serial == str(leaf.serial_number):
            return
    raise SignatureError(
        "invalid-signature", "the XAdES SigningCertificate does not name the signer"
    )


def verify_submission_signature(
    data: bytes,
    documents: Mapping[str, Content],
    settings: VerifySettings,
    *,
    submission_set_unique_id: str,
    now: datetime | None = None,
) -> SubmissionSignature:
    """Verify a signature document and the documents it signs.

    On top of :func:`verify_signature`: every document of ``documents`` (uniqueId → content) is
    referenced once with the digest of its exact bytes, the set ``submission_set_unique_id`` is
    referenced, and the manifest references nothing else.
    """
    verified = verify_signature(data, settings, now=now)
    expected = {_urn(unique_id): content for unique_id, content in documents.items()}
    set_uri = _urn(submission_set_unique_id)
    seen: set[str] = set()
    for reference in verified.references:
        if reference.uri in seen:
            raise SignatureError("malformed", f"the manifest references {reference.uri} twice")
        seen.add(reference.uri)
        if reference.uri == set_uri:
            continue
        content = expected.get(reference.uri)
        if content is None:
            raise SignatureError(
                "invalid-signature", f"the manifest references {reference.uri}, not submitted"
            )
        _check_digest(reference, content, verified.layout.allow_sha1 or settings.allow_sha1)
    missing = sorted({*expected, set_uri} - seen)
    if missing:
        raise SignatureError("invalid-signature", f"the manifest does not cover {missing[0]}")
    return verified


def _check_digest(reference: ManifestReference, content: Content, allow_sha1: bool) -> None:
    if reference.transforms:
        raise SignatureError(
            "malformed", f"{reference.uri}: only digests of the exact bytes are supported"
        )
    algorithm = _DIGEST_URIS.get(reference.digest_method)
    if algorithm is None or (algorithm == "sha1" and not allow_sha1):
        raise SignatureError(
            "malformed", f"{reference.uri}: digest method {reference.digest_method!r} refused"
        )
    if _hash(content, algorithm) != reference.digest:
        raise SignatureError(
            "invalid-signature", f"{reference.uri} does not match the digest the manifest signs"
        )
