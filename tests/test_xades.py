"""The submission set's signature document (IHE DSG detached XAdES): signing, verification by
us, by signxml and by xmlsec1, refusals, the official example's layout, and a TD2.1 submission
through the XDS stub."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.xades import XAdESSignatureConfiguration, XAdESVerifier

from transport import examplepki
from transport.config import example_profile
from transport.credentials import Purpose, SoftwareSigner
from transport.dmp import xades, xds
from transport.dmp.xds import OutgoingDocument
from transport.errors import SignatureError, ValidationError
from transport.soap import mtom
from transport.xml import parse_xml
from transport.xmlsig import DSIG_NS, VerifySettings

from .conftest import REFERENCE
from .test_stub_xds import Caller, entry, find, retrieve
from .test_stub_xds import submission_set as new_submission_set

EXAMPLES = REFERENCE / "dmp-examples"
DS = f"{{{DSIG_NS}}}"
XADES = f"{{{xades.XADES_NS}}}"
LAYOUTS = pytest.mark.parametrize("layout", xades.LAYOUTS.values(), ids=xades.LAYOUTS.keys())
SET_ID = "1.2.250.1.999.1.1.7898.1.42"
CDA = b"<ClinicalDocument xmlns='urn:hl7-org:v3'><title>CR</title></ClinicalDocument>\r\n"
SCAN = bytes(range(256)) * 40

STUB_SERVICES = ["registry", "repository"]


@pytest.fixture(scope="module")
def signer(pki):
    return example_profile(pki).signature_credential.load(Purpose.SIGNATURE).signer


@pytest.fixture
def documents():
    return {"1.2.250.1.999.1.1.7898.3.1": CDA, "1.2.250.1.999.1.1.7898.3.2": SCAN}


@pytest.fixture(params=xades.LAYOUTS.values(), ids=xades.LAYOUTS.keys())
def signed(request, documents, signer) -> bytes:
    """A signature document of ``documents``, in each layout."""
    return xades.sign_submission_set(
        documents, signer, submission_set_unique_id=SET_ID, layout=request.param
    )


@pytest.fixture
def signed_132(documents, signer) -> bytes:
    return xades.sign_submission_set(
        documents, signer, submission_set_unique_id=SET_ID, layout=xades.XADES_132_LAYOUT
    )


def verify(data, documents, verify_settings, **options):
    return xades.verify_submission_signature(
        data, documents, verify_settings, submission_set_unique_id=SET_ID, **options
    )


@LAYOUTS
def test_signature_verifies_and_says_what_it_signs(documents, signer, verify_settings, layout):
    moment = datetime(2026, 3, 4, 14, 20, 12, 282000, tzinfo=UTC)
    data = xades.sign_submission_set(
        documents, signer, submission_set_unique_id=SET_ID, signing_time=moment, layout=layout
    )
    # verify_settings do not allow SHA-1: the DMP layout allows it on its own.
    assert not verify_settings.allow_sha1
    verified = verify(data, documents, verify_settings)
    assert verified.signer == signer.certificate
    assert verified.signing_time == moment
    assert verified.layout == layout
    assert verified.algorithm == layout.signature_method
    assert (
        parse_xml(data).find(f"{DS}Object/{{{layout.namespace}}}QualifyingProperties") is not None
    )
    by_uri = {reference.uri: reference for reference in verified.references}
    assert set(by_uri) == {f"urn:oid:{SET_ID}", *(f"urn:oid:{oid}" for oid in documents)}
    for oid, content in documents.items():
        reference = by_uri[f"urn:oid:{oid}"]
        assert reference.digest == hashes_of(content, layout.hash)
        assert reference.digest_method == layout.digest_method
        assert reference.transforms == ()
    assert by_uri[f"urn:oid:{SET_ID}"].digest == xades.SUBMISSION_SET_DIGEST


def test_the_dmp_layout_is_the_default(documents, signer, verify_settings):
    data = xades.sign_submission_set(documents, signer, submission_set_unique_id=SET_ID)
    assert verify(data, documents, verify_settings).layout == xades.DMP_LAYOUT
    info = parse_xml(data).find(f"{DS}SignedInfo")
    assert info.find(f"{DS}CanonicalizationMethod").get("Algorithm") == (
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
    )
    assert info.find(f"{DS}SignatureMethod").get("Algorithm") == RSA_SHA1


def hashes_of(content: bytes, name: str = "sha256") -> bytes:
    return hashlib.new(name, content).digest()


def test_signxml_xades_verifier_accepts_the_132_layout(signed_132, signer):
    # signxml knows XAdES 1.3.2 only: the DMP layout is checked by xmlsec1 and this module.
    results = XAdESVerifier().verify(
        signed_132,
        x509_cert=signer.certificate,
        expect_config=XAdESSignatureConfiguration(expect_references=2),
    )
    tags = [result.signed_xml.tag for result in results]
    assert tags == [f"{DS}Manifest", f"{XADES}SignedProperties"]


def test_files_are_hashed_in_chunks(tmp_path, signer, verify_settings):
    path = tmp_path / "scan.bin"
    chunk = bytes(range(256)) * 4096
    with path.open("wb") as handle:
        for _ in range(24):
            handle.write(chunk)
    documents = {"1.2.250.1.999.1.1.7898.3.9": path}
    tracemalloc.start()
    try:
        data = xades.sign_submission_set(documents, signer, submission_set_unique_id=SET_ID)
        verify(data, documents, verify_settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < path.stat().st_size / 4
    changed = tmp_path / "changed.bin"
    changed.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(SignatureError) as refused:
        verify(data, {"1.2.250.1.999.1.1.7898.3.9": changed}, verify_settings)
    assert refused.value.reason == "invalid-signature"


@pytest.mark.parametrize("size", [0, 1, mtom.CHUNK_SIZE, 5 * mtom.CHUNK_SIZE + 3])
def test_content_digests_of_a_file_and_of_its_bytes_agree_with_hashlib(tmp_path, size):
    """A file's SHA-1 and SHA-256 are computed at once (one in a thread), over the same chunks."""
    data = os.urandom(size)
    path = tmp_path / "document.bin"
    path.write_bytes(data)
    expected = xades.ContentDigests(
        size, hashlib.sha1(data, usedforsecurity=False).hexdigest(), hashlib.sha256(data).digest()
    )
    assert xades.content_digests(path) == expected
    assert xades.content_digests(data) == expected


# Refusals -------------------------------------------------------------------------------------


def test_a_changed_document_byte_is_refused(signed, documents, verify_settings):
    oid = next(iter(documents))
    changed = {**documents, oid: documents[oid].replace(b"CR", b"CX")}
    with pytest.raises(SignatureError) as refused:
        verify(signed, changed, verify_settings)
    assert refused.value.reason == "invalid-signature"
    assert oid in refused.value.message


def test_a_document_left_out_of_the_manifest_is_refused(documents, signer, verify_settings):
    first, second = documents
    data = xades.sign_submission_set(
        {first: documents[first]}, signer, submission_set_unique_id=SET_ID
    )
    with pytest.raises(SignatureError) as refused:
        verify(data, documents, verify_settings)
    assert refused.value.reason == "invalid-signature"
    assert second in refused.value.message


@pytest.mark.parametrize("data", [b"", b"not xml", b'<!DOCTYPE a [<!ENTITY x "y">]><a/>'])
def test_a_signature_document_that_is_not_xml_is_a_malformed_signature(data, verify_settings):
    with pytest.raises(SignatureError) as refused:
        xades.verify_signature(data, verify_settings)
    assert refused.value.reason == "malformed"
    assert "unreadable signature document" in refused.value.message


def edit(data: bytes, change) -> bytes:
    root = etree.fromstring(data)
    change(root)
    return etree.tostring(root)


def remove_reference(root):
    manifest = root.find(f"{DS}Object/{DS}Manifest")
    manifest.remove(manifest[-1])


def later_signing_time(root):
    node = root.find(".//{*}SigningTime")
    node.text = "2030-01-01T00:00:00.000Z"


def other_signature_value(root):
    node = root.find(f"{DS}SignatureValue")
    value = bytearray(base64.b64decode(node.text))
    value[10] ^= 1
    node.text = base64.b64encode(bytes(value)).decode()


def drop_signing_certificate(root):
    properties = root.find(".//{*}SignedSignatureProperties")
    properties.remove(properties.find("{*}SigningCertificate"))


@pytest.mark.parametrize(
    "change",
    [remove_reference, later_signing_time, other_signature_value, drop_signing_certificate],
    ids=["removed reference", "SignedProperties", "signature value", "signing certificate"],
)
def test_a_tampered_signature_document_is_refused(signed, documents, verify_settings, change):
    with pytest.raises(SignatureError) as refused:
        verify(edit(signed, change), documents, verify_settings)
    assert refused.value.reason == "invalid-signature"


def forged_manifest_first(root):
    """A second, unsigned manifest placed before the signed one, digesting other bytes."""
    forged = etree.fromstring(etree.tostring(root.find(f"{DS}Object")))
    forged.find(f"{DS}Manifest").set("Id", "Forged")
    for value in forged.iter(f"{DS}DigestValue"):
        value.text = base64.b64encode(hashes_of(b"forged")).decode()
    root.insert(3, forged)


def signed_manifest_moved_aside(root):
    """The signed manifest hidden in a wrapper, a forged one with its Id where it was."""
    obj = root.find(f"{DS}Object")
    hidden = etree.SubElement(obj, f"{DS}Wrapper")
    forged = etree.fromstring(etree.tostring(obj.find(f"{DS}Manifest")))
    hidden.append(obj.find(f"{DS}Manifest"))
    obj.insert(0, forged)


def nested_in_another_document(root):
    """The whole signature wrapped inside an unsigned document."""
    holder = etree.Element("Envelope")
    holder.append(etree.fromstring(etree.tostring(root)))
    root.clear()
    root.tag = "Outer"
    root.append(holder)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (forged_manifest_first, "wrapping"),
        (signed_manifest_moved_aside, "wrapping"),
        (nested_in_another_document, "malformed"),
    ],
    ids=["forged manifest", "moved manifest", "nested signature"],
)
def test_a_wrapping_attempt_is_refused(signed, documents, verify_settings, change, reason):
    with pytest.raises(SignatureError) as refused:
        verify(edit(signed, change), documents, verify_settings)
    assert refused.value.reason == reason


EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
_SIGNATURE_HASHES = {RSA_SHA1: hashes.SHA1, RSA_SHA512: hashes.SHA512}


def resign(data: bytes, change, key_file: Path) -> bytes:
    """``data`` changed by ``change`` (SignedInfo included), with a SignatureValue computed again
    over the changed SignedInfo: a genuine signature, laid out as ``change`` makes it."""
    root = etree.fromstring(data)
    change(root)
    info = root.find(f"{DS}SignedInfo")
    exclusive = info.find(f"{DS}CanonicalizationMethod").get("Algorithm") == EXC_C14N
    method = info.find(f"{DS}SignatureMethod").get("Algorithm")
    canonical = etree.tostring(info, method="c14n", exclusive=exclusive)
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    algorithm = _SIGNATURE_HASHES.get(method, hashes.SHA256)()
    raw = key.sign(canonical, padding.PKCS1v15(), algorithm)
    root.find(f"{DS}SignatureValue").text = base64.b64encode(raw).decode()
    return etree.tostring(root)


def _set_algorithm(path: str, algorithm: str):
    def change(root):
        for node in root.iterfind(f"{DS}SignedInfo/{path}"):
            node.set("Algorithm", algorithm)

    return change


def _transform(algorithm: str):
    def change(root):
        reference = root.find(f"{DS}SignedInfo/{DS}Reference")
        transforms = etree.Element(f"{DS}Transforms")
        transform = etree.SubElement(transforms, f"{DS}Transform", Algorithm=algorithm)
        if algorithm == XPATH:
            etree.SubElement(transform, f"{DS}XPath").text = "self::text()"
        reference.insert(0, transforms)

    return change


OUTSIDE_EVERY_PROFILE = {
    "exclusive c14n SignedInfo": _set_algorithm(f"{DS}CanonicalizationMethod", EXC_C14N),
    "XPath transform": _transform(XPATH),
    "c14n transform": _transform(xades.C14N),
    "RSA-SHA512": _set_algorithm(f"{DS}SignatureMethod", RSA_SHA512),
}
SHA1_OUTSIDE_132 = {
    # SHA-1 is the DMP layout's own choice, not allowed in the XAdES 1.3.2 one.
    "RSA-SHA1 not allowed": _set_algorithm(f"{DS}SignatureMethod", RSA_SHA1),
    "SHA-1 digest": _set_algorithm(
        f"{DS}Reference/{DS}DigestMethod", "http://www.w3.org/2000/09/xmldsig#sha1"
    ),
    "the DMP's c14n with comments": _set_algorithm(
        f"{DS}CanonicalizationMethod", xades.C14N_WITH_COMMENTS
    ),
}
DSG_OUTSIDE_THE_PROFILE = {**OUTSIDE_EVERY_PROFILE, **SHA1_OUTSIDE_132}


def test_a_resigned_signature_inside_the_profile_verifies(
    pki, load, signed, signed_132, signer, documents, verify_settings
):
    assert signer.certificate == load("org-sign").certificate
    data = resign(signed, lambda root: None, pki.directory / "org-sign.key")
    assert verify(data, documents, verify_settings).signer == signer.certificate
    sha1 = resign(
        signed_132, DSG_OUTSIDE_THE_PROFILE["RSA-SHA1 not allowed"], pki.directory / "org-sign.key"
    )
    allowing = VerifySettings(verify_settings.ca_bundle, allow_sha1=True)
    assert verify(sha1, documents, allowing).algorithm == RSA_SHA1


@pytest.mark.parametrize("change", OUTSIDE_EVERY_PROFILE.values(), ids=OUTSIDE_EVERY_PROFILE.keys())
def test_a_signature_document_outside_the_profile_is_refused(
    pki, signed, documents, verify_settings, change
):
    data = resign(signed, change, pki.directory / "org-sign.key")
    with pytest.raises(SignatureError) as refused:
        verify(data, documents, verify_settings)
    assert refused.value.reason == "profile" and refused.value.message


@pytest.mark.parametrize("change", SHA1_OUTSIDE_132.values(), ids=SHA1_OUTSIDE_132.keys())
def test_the_dmp_algorithms_are_refused_in_the_132_layout(
    pki, signed_132, documents, verify_settings, change
):
    data = resign(signed_132, change, pki.directory / "org-sign.key")
    with pytest.raises(SignatureError) as refused:
        verify(data, documents, verify_settings)
    assert refused.value.reason == "profile" and refused.value.message


def self_signed_signer() -> SoftwareSigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CABINET NON RECONNU")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False), True
        )
        .sign(key, hashes.SHA256())
    )
    return SoftwareSigner(key, certificate)


def test_an_untrusted_certificate_is_refused(documents, verify_settings):
    data = xades.sign_submission_set(
        documents, self_signed_signer(), submission_set_unique_id=SET_ID
    )
    with pytest.raises(SignatureError) as refused:
        verify(data, documents, verify_settings)
    assert refused.value.reason == "untrusted"


def test_an_authentication_key_is_refused(pki, documents, verify_settings):
    authentication = example_profile(pki).tls_credential.load(Purpose.TLS_CLIENT).signer
    data = xades.sign_submission_set(documents, authentication, submission_set_unique_id=SET_ID)
    with pytest.raises(SignatureError) as refused:
        verify(data, documents, verify_settings)
    assert refused.value.reason == "key-usage"


def test_a_signature_from_the_future_of_its_certificate_is_refused(signed, documents, pki):
    settings = VerifySettings(pki.ca_bundle)
    with pytest.raises(SignatureError) as refused:
        verify(signed, documents, settings, now=datetime.now(UTC) + timedelta(days=3650))
    assert refused.value.reason == "expired"


def test_unique_ids_must_be_oids(signer):
    with pytest.raises(ValidationError, match="OID"):
        xades.sign_submission_set({"DOC-1": CDA}, signer, submission_set_unique_id=SET_ID)


# xmlsec1 ---------------------------------------------------------------------------------------


def xmlsec1_command(xmlsec1: str, pki, directory: Path) -> list[str]:
    # The manifest's urn:oid: references name XDS documents, which xmlsec1 cannot fetch: it checks
    # the signature value and the two SignedInfo references (the manifest element itself and the
    # SignedProperties); the manifest's digests are this module's to check.
    command = [
        xmlsec1,
        "--verify",
        "--ignore-manifests",
        "--id-attr:Id",
        f"{DSIG_NS}:Manifest",
        "--id-attr:Id",
        f"{xades.XADES_NS}:SignedProperties",
        "--id-attr:Id",
        f"{xades.XADES_111_NS}:SignedProperties",
    ]
    certificates = x509.load_pem_x509_certificates(pki.ca_bundle.read_bytes())
    for index, certificate in enumerate(certificates):
        pem = directory / f"ca{index}.pem"
        pem.write_bytes(certificate.public_bytes(Encoding.PEM))
        trusted = certificate.subject == certificate.issuer
        command += ["--trusted-pem" if trusted else "--untrusted-pem", str(pem)]
    return command


def test_xmlsec1_verifies_the_signature_and_its_manifest_element(xmlsec1, pki, tmp_path, signed):
    command = xmlsec1_command(xmlsec1, pki, tmp_path)
    good, bad = tmp_path / "good.xml", tmp_path / "bad.xml"
    good.write_bytes(signed)
    bad.write_bytes(edit(signed, remove_reference))
    accepted = subprocess.run([*command, str(good)], capture_output=True, text=True, check=False)
    assert accepted.returncode == 0, accepted.stderr
    assert "SignedInfo References (ok/all): 2/2" in accepted.stderr
    refused = subprocess.run([*command, str(bad)], capture_output=True, text=True, check=False)
    assert refused.returncode != 0


# The official example ----------------------------------------------------------------------


def official(name: str) -> bytes:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"official example {name} not found ({EXAMPLES})")
    return path.read_bytes()


def shape(element: etree._Element):
    """Local name, attribute names and children's shapes, repeated siblings counted once: the
    layout without the values (the XAdES namespace differs on purpose, see the module)."""
    children = []
    for child in element:
        if not isinstance(child.tag, str):
            continue
        child_shape = shape(child)
        if not children or children[-1] != child_shape:
            children.append(child_shape)
    attributes = tuple(sorted(etree.QName(name).localname for name in element.attrib))
    return etree.QName(element).localname, attributes, tuple(children)


def test_layout_matches_the_official_example(signed):
    # Both layouts have the example's shape; tests/test_dmp_conformance.py compares the DMP one
    # element by element, algorithms included.
    example = parse_xml(official("TD2.1-SignatureXades.xml"))
    ours = parse_xml(signed)
    assert [etree.QName(child).localname for child in ours] == [
        etree.QName(child).localname for child in example
    ]
    assert shape(ours.find(f"{DS}SignedInfo")) == shape(example.find(f"{DS}SignedInfo"))
    assert shape(ours.find(f"{DS}KeyInfo")) == shape(example.find(f"{DS}KeyInfo"))
    ours_objects, example_objects = ours.findall(f"{DS}Object"), example.findall(f"{DS}Object")
    # The example's manifest also holds a transformed (canonicalised CDA) reference; ours digests
    # exact bytes only, so each of our reference shapes must be one of the example's.
    manifest, example_manifest = ours_objects[0][0], example_objects[0][0]
    assert shape(manifest)[:2] == shape(example_manifest)[:2]
    assert set(shape(manifest)[2]) <= set(shape(example_manifest)[2])
    for mine, theirs in zip(ours_objects[1:], example_objects[1:], strict=True):
        assert shape(mine) == shape(theirs)
    # The purpose property sits in no namespace, exactly as in the example.
    assert ours_objects[1][0].tag == example_objects[1][0].tag == "SignatureProperties"


def official_signature_entry() -> xds.DocumentEntry:
    capture = official("TD2.1_-_Alimentation_request.xml").replace(b"\n", b"\r\n")
    boundary = capture.split(b"\r\n", 1)[0][2:].decode()
    decoded = mtom.decode(
        [capture], f'multipart/related; boundary="{boundary}"; type="application/xop+xml"'
    )
    root = parse_xml(decoded.root)
    (element,) = [
        item
        for item in root.iter(f"{{{xds.RIM_NS}}}ExtrinsicObject")
        if item.get("id") == "Signature01"
    ]
    return xds.read_document_entry(element)


def test_signature_entry_has_the_codes_of_the_official_request(signed, documents):
    theirs = official_signature_entry()
    submission = new_submission_set()
    signed_entry = entry(CDA)
    ours = xades.signature_entry(submission, signed_entry, signed)

    def codes(values):
        return {(value.code, value.scheme) for value in values}

    for name in ("class_code", "type_code", "format_code"):
        assert codes([getattr(ours, name)]) == codes([getattr(theirs, name)]), name
    assert codes(ours.event_codes) == codes(theirs.event_codes)
    assert codes(ours.confidentiality) == codes(theirs.confidentiality)
    assert (ours.mime_type, ours.language, ours.title) == (
        theirs.mime_type,
        theirs.language,
        theirs.title,
    )


def test_signature_entry_describes_its_bytes(signed):
    submission = new_submission_set()
    signed_entry = entry(CDA)
    ours = xades.signature_entry(submission, signed_entry, signed, unique_id="1.2.3.4.5")
    assert ours.unique_id == "1.2.3.4.5"
    assert ours.size == len(signed)
    assert ours.hash == signed_entry.with_content(signed).hash
    assert ours.patient == submission.patient
    assert ours.authors == submission.authors
    assert ours.creation_time == submission.submission_time
    assert ours.source_patient_id == xds.patient_id(submission.patient)
    assert ours.healthcare_facility_type == signed_entry.healthcare_facility_type
    assert ours.practice_setting == signed_entry.practice_setting
    assert ours.legal_authenticator == submission.authors[0].person


# Through the XDS stub -----------------------------------------------------------------------


def submit_signed(
    caller: Caller,
    signer,
    *,
    signed_content: bytes = CDA,
    change=None,
    layout: xades.XadesLayout = xades.DMP_LAYOUT,
):
    """TD2.1: one CDA and the set's signature document, linked by ``signs``; the signature is
    made over ``signed_content`` (the CDA unless a test wants them to differ), then passed
    through ``change`` when given."""
    submission = new_submission_set()
    document = entry(CDA, mime_type="text/xml")
    signature = xades.sign_submission_set(
        {document.unique_id: signed_content},
        signer,
        submission_set_unique_id=submission.unique_id,
        layout=layout,
    )
    signature = change(signature) if change is not None else signature
    signature_entry = xades.signature_entry(submission, document, signature)
    parts = [(document, CDA, False), (signature_entry, signature, True)]
    outgoing, attachments = [], []
    for metadata, content, signs in parts:
        content_id = mtom.new_content_id()
        outgoing.append(OutgoingDocument(metadata, content_id, signs=signs))
        attachments.append(mtom.Attachment(content_id, content, metadata.mime_type))
    payload = xds.provide_and_register_request(submission, outgoing)
    body, _ = caller.call(
        "repository", xds.ACTION_PROVIDE_AND_REGISTER, payload, attachments=tuple(attachments)
    )
    return xds.read_registry_response(body), submission, document, signature_entry, signature


@LAYOUTS
def test_td21_with_a_real_signature_document_is_accepted_without_warning(
    xds_stubs, signer, verify_settings, layout
):
    caller = Caller(xds_stubs)
    result, submission, document, signature_entry, signature = submit_signed(
        caller, signer, layout=layout
    )
    assert result.ok and result.errors == ()
    assert {found.unique_id for found in find(caller).entries} == {
        document.unique_id,
        signature_entry.unique_id,
    }
    _, contents = retrieve(caller, signature_entry.unique_id, document.unique_id)
    assert contents[signature_entry.unique_id] == signature
    xades.verify_submission_signature(
        contents[signature_entry.unique_id],
        {document.unique_id: contents[document.unique_id]},
        verify_settings,
        submission_set_unique_id=submission.unique_id,
    )


def test_stub_warns_about_an_untrusted_signature(xds_stubs):
    result, *_ = submit_signed(Caller(xds_stubs), self_signed_signer())
    assert result.ok
    ((error,),) = [result.errors]
    assert (error.code, error.severity) == ("XDSRegistryMetadataError", "Warning")
    assert "non vérifiée" in error.context


def test_stub_warns_about_a_document_the_signature_does_not_match(xds_stubs, signer):
    result, _, document, *_ = submit_signed(Caller(xds_stubs), signer, signed_content=b"autre")
    assert result.ok
    ((error,),) = [result.errors]
    assert error.severity == "Warning" and document.unique_id in error.context


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory):
    return examplepki.generate(tmp_path_factory.mktemp("other-pki"))


def test_a_look_alike_pki_is_not_trusted(other_pki, documents, verify_settings):
    look_alike = example_profile(other_pki).signature_credential.load(Purpose.SIGNATURE).signer
    data = xades.sign_submission_set(documents, look_alike, submission_set_unique_id=SET_ID)
    with pytest.raises(SignatureError) as refused:
        verify(data, documents, verify_settings)
    assert refused.value.reason == "untrusted"


@pytest.mark.parametrize(
    "change", DSG_OUTSIDE_THE_PROFILE.values(), ids=DSG_OUTSIDE_THE_PROFILE.keys()
)
def test_stub_warns_about_a_signature_outside_the_profile(xds_stubs, signer, pki, change):
    key = pki.directory / "org-sign.key"
    result, *_ = submit_signed(
        Caller(xds_stubs),
        signer,
        change=lambda data: resign(data, change, key),
        layout=xades.XADES_132_LAYOUT,
    )
    assert result.ok
    assert [(error.severity, "non vérifiée" in error.context) for error in result.errors] == [
        ("Warning", True)
    ]
