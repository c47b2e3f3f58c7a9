"""The VIHF: its model and validation, its signed form, and the verifier's refusals."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509.oid import ExtendedKeyUsageOID
from lxml import etree

from tests.conftest import REFERENCE
from transport import examplepki
from transport.config import example_profile
from transport.credentials import SoftwareSigner, load_pkcs12
from transport.errors import SignatureError, VihfValidationError
from transport.vihf import (
    INS_TEST_OID,
    SAML_NS,
    AuthMode,
    Code,
    Patient,
    VihfOptions,
    build_assertion,
    read_vihf,
    sign_vihf,
    validate_ins,
    verify_vihf,
)
from transport.xmlsig import (
    DSIG_NS,
    ENVELOPED_SIGNATURE,
    EXC_C14N,
    VerifySettings,
    sign_enveloped,
    sign_in_place,
)

PATIENT = Patient("279035121518989", INS_TEST_OID)
S = f"{{{SAML_NS}}}"
DS = f"{{{DSIG_NS}}}"


def signed(profile, load, **options) -> etree._Element:
    name = "cps-sign" if profile.identity.mode is AuthMode.DIRECTE else "org-sign"
    vihf = profile.identity.with_patient(PATIENT)
    return sign_vihf(vihf, load(name).signer, options=VihfOptions(**options))


def reparse(element: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(element))


def test_each_mode_signs_and_reads_back(profile, load, verify_settings):
    assertion = signed(profile, load)
    verified = verify_vihf(reparse(assertion), verify_settings)
    assert verified.vihf == profile.identity.with_patient(PATIENT)
    assert verified.algorithm == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    assert verified.issuer == verified.signer_dn


def test_element_order_follows_the_schema_and_the_volet(profile, load):
    assertion = signed(profile, load, validity=timedelta(minutes=5))
    names = [etree.QName(child).localname for child in assertion]
    assert names == [
        "Issuer",
        "Signature",
        "Subject",
        "Conditions",
        "AuthnStatement",
        "AttributeStatement",
    ]
    signature = assertion.find(f"{DS}Signature")
    assert signature.find(f"{DS}SignedInfo/{DS}CanonicalizationMethod").get("Algorithm") == (
        "http://www.w3.org/2001/10/xml-exc-c14n#"
    )
    transforms = [t.get("Algorithm") for t in signature.iter(f"{DS}Transform")]
    assert transforms == [
        "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
        "http://www.w3.org/2001/10/xml-exc-c14n#",
    ]
    reference = signature.find(f"{DS}SignedInfo/{DS}Reference")
    assert reference.get("URI") == "#" + assertion.get("ID")
    assert len(signature.findall(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")) == 1
    assert assertion.find(f"{S}Issuer").get("Format") == (
        "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
    )


def test_attributes_carry_the_values_of_the_spec_table(pki, load):
    profile = example_profile(pki, AuthMode.INDIRECTE)
    assertion = signed(profile, load)
    attributes = {a.get("Name"): a for a in assertion.iter(f"{S}Attribute")}
    assert attributes["VIHF_Version"].findtext(f"{S}AttributeValue") == "3.0"
    assert attributes["Authentification_Mode"].findtext(f"{S}AttributeValue") == "INDIRECTE"
    assert attributes["Secteur_Activite"].findtext(f"{S}AttributeValue") == (
        "SA07^1.2.250.1.71.4.2.4"
    )
    assert attributes["urn:oasis:names:tc:xacml:2.0:resource:resource-id"].findtext(
        f"{S}AttributeValue"
    ) == ("279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH")
    roles = attributes["urn:oasis:names:tc:xacml:2.0:subject:role"].findall(
        f"{S}AttributeValue/{{urn:hl7-org:v3}}Role"
    )
    assert [(r.get("code"), r.get("codeSystem")) for r in roles] == [
        ("10", "1.2.250.1.71.1.2.7"),
        ("SM26", "1.2.250.1.71.4.2.5"),
    ]
    assert roles[0].get("{http://www.w3.org/2001/XMLSchema-instance}type") == "CE"
    purpose = attributes["urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"].find(
        f"{S}AttributeValue/{{urn:hl7-org:v3}}PurposeOfUse"
    )
    assert (purpose.get("code"), purpose.get("codeSystem")) == ("normal", "1.2.250.1.213.1.1.4.248")
    string_value = attributes["LPS_Nom"].find(f"{S}AttributeValue")
    assert string_value.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "xs:string"


def test_mode_attribute_spelling_is_configurable_and_both_are_read(pki, load, verify_settings):
    profile = example_profile(pki, AuthMode.INDIRECTE)
    assertion = signed(profile, load, mode_attribute="Authentification_mode")
    names = [a.get("Name") for a in assertion.iter(f"{S}Attribute")]
    assert "Authentification_mode" in names and "Authentification_Mode" not in names
    assert verify_vihf(reparse(assertion), verify_settings).vihf.mode is AuthMode.INDIRECTE


@pytest.mark.parametrize("mode", list(AuthMode), ids=str)
def test_xmlsec1_verifies_what_we_sign(pki, load, mode, xmlsec1_verify):
    result = xmlsec1_verify(signed(example_profile(pki, mode), load))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout + result.stderr


def test_xmlsec1_rejects_a_tampered_assertion(pki, load, xmlsec1_verify):
    assertion = signed(example_profile(pki, AuthMode.INDIRECTE), load)
    assertion.find(f"{S}Subject/{S}NameID").text = "899700000002"
    assert xmlsec1_verify(assertion).returncode != 0


def refused(assertion: etree._Element, settings: VerifySettings, **kwargs) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify_vihf(reparse(assertion), settings, **kwargs)
    return caught.value


@pytest.fixture
def indirect(pki):
    return example_profile(pki, AuthMode.INDIRECTE)


def test_tampered_attribute_is_refused(indirect, load, verify_settings):
    assertion = signed(indirect, load)
    for value in assertion.iter(f"{S}AttributeValue"):
        if value.text == "499900000001001":
            value.text = "499900000009999"
    assert refused(assertion, verify_settings).reason == "invalid-signature"


def test_unsigned_assertion_is_refused(indirect, verify_settings, load):
    unsigned = build_assertion(indirect.identity, load("org-sign").dn)
    assert refused(unsigned, verify_settings).reason == "unsigned"


def test_moved_signature_is_refused(indirect, load, verify_settings):
    assertion = signed(indirect, load)
    signature = assertion.find(f"{DS}Signature")
    assertion.find(f"{S}Subject").append(signature)
    assert refused(assertion, verify_settings).reason == "unsigned"


@pytest.mark.parametrize("outer_id", ["_evil", None], ids=["another-id", "duplicate-id"])
def test_signature_wrapping_is_refused(indirect, load, verify_settings, outer_id):
    genuine = signed(indirect, load)
    evil = reparse(genuine)
    if outer_id is not None:
        evil.set("ID", outer_id)
    evil.find(f"{S}Subject/{S}NameID").text = "899700000666"
    # The genuine signed assertion hides in Advice; the outer one reuses its signature.
    advice = etree.Element(f"{S}Advice")
    advice.append(reparse(genuine))
    evil.insert(3, advice)
    assert refused(evil, verify_settings).reason == "wrapping"


def test_untrusted_signer_is_refused(indirect, verify_settings, tmp_path):
    stranger = examplepki.generate(tmp_path / "stranger")

    signer = load_pkcs12(stranger.p12("org-sign"), stranger.password).signer
    assertion = sign_vihf(indirect.identity.with_patient(PATIENT), signer)
    assert refused(assertion, verify_settings).reason == "untrusted"


def test_authentication_only_signer_is_refused(indirect, load, verify_settings):
    assertion = sign_vihf(indirect.identity.with_patient(PATIENT), load("org-auth").signer)
    error = refused(assertion, verify_settings)
    assert error.reason == "key-usage"
    assert "nonRepudiation" in error.message


def _own_ca(tmp_path: Path) -> tuple[examplepki.Issued, Path]:
    now = datetime.now(UTC)
    root = examplepki.make_ca(
        "TEST AC EXPIRY", not_before=now - timedelta(days=800), not_after=now + timedelta(days=800)
    )
    bundle = tmp_path / "ca.pem"
    examplepki.write_pem_cert(bundle, root.cert)
    return root, bundle


def _signer(root: examplepki.Issued, not_before: datetime, not_after: datetime) -> SoftwareSigner:
    issued = examplepki.issue(
        root,
        x509.Name.from_rfc4514_string("CN=SIGNER,OU=499900000001001,O=TEST,C=FR"),
        key_usage={"digital_signature", "content_commitment"},
        extended_key_usage=(ExtendedKeyUsageOID.EMAIL_PROTECTION,),
        not_before=not_before,
        not_after=not_after,
    )
    return SoftwareSigner(issued.key, issued.cert)


def test_expired_signer_is_refused(indirect, tmp_path):
    root, bundle = _own_ca(tmp_path)
    now = datetime.now(UTC)
    signer = _signer(root, now - timedelta(days=400), now - timedelta(days=1))
    assertion = sign_vihf(indirect.identity.with_patient(PATIENT), signer)
    assert refused(assertion, VerifySettings(bundle)).reason == "expired"


def test_not_yet_valid_signer_is_refused(indirect, tmp_path):
    root, bundle = _own_ca(tmp_path)
    now = datetime.now(UTC)
    signer = _signer(root, now + timedelta(days=1), now + timedelta(days=400))
    assertion = sign_vihf(indirect.identity.with_patient(PATIENT), signer)
    assert refused(assertion, VerifySettings(bundle)).reason == "not-yet-valid"


def test_a_signer_from_the_same_ca_is_accepted(indirect, tmp_path):
    root, bundle = _own_ca(tmp_path)
    now = datetime.now(UTC)
    signer = _signer(root, now - timedelta(days=1), now + timedelta(days=1))
    assertion = sign_vihf(indirect.identity.with_patient(PATIENT), signer)
    assert verify_vihf(reparse(assertion), VerifySettings(bundle)).signer_dn.startswith("CN=SIGNER")


def test_issue_instant_and_conditions_are_enforced_with_clock_skew(indirect, load):
    now = datetime.now(UTC)
    settings = VerifySettings(indirect.ca_bundle)
    vihf = indirect.identity.with_patient(PATIENT)
    signer = load("org-sign").signer
    future = sign_vihf(vihf, signer, now=now + timedelta(minutes=10))
    assert refused(future, settings).reason == "stale"
    within_skew = sign_vihf(vihf, signer, now=now + timedelta(minutes=2))
    assert verify_vihf(reparse(within_skew), settings).vihf.mode is AuthMode.INDIRECTE
    old = sign_vihf(vihf, signer, now=now - timedelta(hours=2))
    assert verify_vihf(reparse(old), settings) is not None
    assert refused(old, settings, max_age=timedelta(minutes=30)).reason == "stale"
    bounded = sign_vihf(
        vihf,
        signer,
        now=now - timedelta(minutes=20),
        options=VihfOptions(validity=timedelta(minutes=10)),
    )
    assert refused(bounded, settings).reason == "stale"


def test_issuer_other_than_the_signer_is_refused(indirect, load, verify_settings):
    vihf = indirect.identity.with_patient(PATIENT)
    unsigned = build_assertion(vihf, "CN=SOMEONE ELSE,O=TEST,C=FR")
    assertion = sign_enveloped(unsigned, load("org-sign").signer, after=f"{S}Issuer")
    assert "not the signer" in refused(assertion, verify_settings).message


def test_sha1_is_refused_unless_allowed(indirect, load, verify_settings):
    assertion = signed(indirect, load)
    method = assertion.find(f"{DS}Signature/{DS}SignedInfo/{DS}SignatureMethod")
    method.set("Algorithm", "http://www.w3.org/2000/09/xmldsig#rsa-sha1")
    assert refused(assertion, verify_settings).reason == "profile"


# --- the signature profile, with assertions properly signed outside it ---

C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
_HASHES = {SHA1: "sha1", SHA256: "sha256", SHA512: "sha512"}
_SIGNATURE_HASHES = {RSA_SHA1: hashes.SHA1, RSA_SHA256: hashes.SHA256, RSA_SHA512: hashes.SHA512}


@dataclass(frozen=True)
class Forgery:
    """How :func:`forge` signs: SignedInfo's algorithms, and one Reference per ``uris`` entry
    (None: the assertion's own ID) with ``transforms``."""

    canonicalization: str = EXC_C14N
    transforms: tuple[str, ...] = (ENVELOPED_SIGNATURE, EXC_C14N)
    method: str = RSA_SHA256
    digest: str = SHA256
    uris: tuple[str | None, ...] = (None,)


def forge(unsigned: etree._Element, key_file: Path, certificate: x509.Certificate, how: Forgery):
    """A genuinely signed copy of ``unsigned`` (digests and SignatureValue right) laid out as
    ``how`` says, the way a verifier that skips unknown transforms (an XPath) computes them."""
    assertion = reparse(unsigned)
    exclusive = EXC_C14N in how.transforms
    content = etree.tostring(assertion, method="c14n", exclusive=exclusive)
    signature = etree.Element(f"{DS}Signature", nsmap={"ds": DSIG_NS})
    info = etree.SubElement(signature, f"{DS}SignedInfo")
    etree.SubElement(info, f"{DS}CanonicalizationMethod", Algorithm=how.canonicalization)
    etree.SubElement(info, f"{DS}SignatureMethod", Algorithm=how.method)
    for uri in how.uris:
        own = f"#{assertion.get('ID')}"
        reference = etree.SubElement(info, f"{DS}Reference", URI=own if uri is None else uri)
        transforms = etree.SubElement(reference, f"{DS}Transforms")
        for algorithm in how.transforms:
            transform = etree.SubElement(transforms, f"{DS}Transform", Algorithm=algorithm)
            if algorithm == XPATH:
                etree.SubElement(transform, f"{DS}XPath").text = "not(ancestor-or-self::*)"
        etree.SubElement(reference, f"{DS}DigestMethod", Algorithm=how.digest)
        digest = hashlib.new(_HASHES[how.digest], content).digest()
        etree.SubElement(reference, f"{DS}DigestValue").text = base64.b64encode(digest).decode()
    value = etree.SubElement(signature, f"{DS}SignatureValue")
    data = etree.SubElement(etree.SubElement(signature, f"{DS}KeyInfo"), f"{DS}X509Data")
    der = certificate.public_bytes(serialization.Encoding.DER)
    etree.SubElement(data, f"{DS}X509Certificate").text = base64.b64encode(der).decode()
    assertion.insert(1, signature)
    signed_info = etree.tostring(info, method="c14n", exclusive=how.canonicalization == EXC_C14N)
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    raw = key.sign(signed_info, padding.PKCS1v15(), _SIGNATURE_HASHES[how.method]())
    value.text = base64.b64encode(raw).decode()
    return assertion


def forged(pki, load, indirect, how: Forgery) -> etree._Element:
    """The indirect profile's VIHF, signed by ORG SIGN as ``how`` says."""
    unsigned = build_assertion(indirect.identity.with_patient(PATIENT), load("org-sign").dn)
    return forge(unsigned, pki.directory / "org-sign.key", load("org-sign").certificate, how)


OUTSIDE_THE_PROFILE = {
    "inclusive c14n": Forgery(canonicalization=C14N, transforms=(ENVELOPED_SIGNATURE, C14N)),
    "inclusive CanonicalizationMethod": Forgery(canonicalization=C14N),
    "XPath transform": Forgery(transforms=(ENVELOPED_SIGNATURE, XPATH, EXC_C14N)),
    "no enveloped transform": Forgery(transforms=(EXC_C14N,)),
    "no transforms": Forgery(transforms=()),
    "transforms reversed": Forgery(transforms=(EXC_C14N, ENVELOPED_SIGNATURE)),
    "SHA-1 not allowed": Forgery(method=RSA_SHA1, digest=SHA1),
    "SHA-1 digest only": Forgery(digest=SHA1),
    "RSA-SHA512": Forgery(method=RSA_SHA512, digest=SHA512),
    "two references": Forgery(uris=(None, None)),
    "foreign reference": Forgery(uris=("#_somewhere-else",)),
    "whole-document reference": Forgery(uris=("",)),
}


def test_a_forgery_inside_the_profile_verifies(pki, load, indirect, verify_settings):
    assertion = forged(pki, load, indirect, Forgery())
    assert verify_vihf(reparse(assertion), verify_settings).signer_dn == load("org-sign").dn


def test_sha1_verifies_where_allowed(pki, load, indirect, verify_settings):
    assertion = forged(pki, load, indirect, Forgery(method=RSA_SHA1, digest=SHA1))
    allowing = replace(verify_settings, allow_sha1=True)
    assert verify_vihf(reparse(assertion), allowing).algorithm == RSA_SHA1


@pytest.mark.parametrize("how", OUTSIDE_THE_PROFILE.values(), ids=OUTSIDE_THE_PROFILE.keys())
def test_a_signature_outside_the_profile_is_refused_with_a_reason(
    pki, load, indirect, verify_settings, how
):
    error = refused(forged(pki, load, indirect, how), verify_settings)
    assert error.reason in {"profile", "wrapping"}
    assert error.message


# --- validation: what the DMP would refuse, refused before anything is signed ---


def invalid(vihf) -> VihfValidationError:
    with pytest.raises(VihfValidationError) as caught:
        vihf.validate()
    return caught.value


def test_indirect_mode_requires_the_user_name(indirect):
    error = invalid(replace(indirect.identity, user_name=None))
    assert error.field == "urn:oasis:names:tc:xspa:1.0:subject:subject-id"


def test_direct_mode_does_not_require_the_user_name(pki):
    direct = example_profile(pki, AuthMode.DIRECTE).identity
    assert direct.user_name is None
    assert direct.validate() is direct


def test_a_doctor_needs_a_specialty(indirect):
    error = invalid(replace(indirect.identity, roles=indirect.identity.roles[:1]))
    assert "specialty" in error.message


def test_a_pharmacist_needs_a_specialty(indirect):
    pharmacist = (Code("21", "1.2.250.1.71.1.2.7", "Pharmacien"),)
    assert "specialty" in invalid(replace(indirect.identity, roles=pharmacist)).message


def test_a_nurse_needs_no_specialty(indirect):
    nurse = (Code("60", "1.2.250.1.71.1.2.7", "Infirmier"),)
    replace(indirect.identity, roles=nurse).validate()


def test_no_role_is_refused(indirect):
    assert "role" in invalid(replace(indirect.identity, roles=())).message


@pytest.mark.parametrize(
    "ins, oid, words",
    [
        ("27903512151898", INS_TEST_OID, "13 characters"),
        ("279035121518988", INS_TEST_OID, "key"),
        ("2790351215189AB", INS_TEST_OID, "13 characters"),
        ("279035121518989", "1.2.3.4", "authority"),
    ],
)
def test_malformed_ins_is_refused(indirect, ins, oid, words):
    error = invalid(indirect.identity.with_patient(Patient(ins, oid)))
    assert words in error.message


def test_corsican_ins_key_is_computed_on_19_and_18():
    body = "101012A123456"
    key = 97 - int(body.replace("2A", "19")) % 97
    validate_ins(Patient(f"{body}{key:02d}", INS_TEST_OID))


@pytest.mark.parametrize("sector", ["SA7", "XX07^1.2.250.1.71.4.2.4", "SA07^1.2.3"])
def test_malformed_sector_is_refused(indirect, sector):
    assert invalid(replace(indirect.identity, sector=sector)).field == "Secteur_Activite"


@pytest.mark.parametrize("field", ["subject_id", "structure_id"])
def test_missing_required_identity_is_refused(indirect, field):
    invalid(replace(indirect.identity, **{field: " "}))


def test_missing_lps_data_is_refused(indirect):
    lps = replace(indirect.identity.lps, homologation_id="")
    assert invalid(replace(indirect.identity, lps=lps)).field == "LPS_ID_HOMOLOGATION_DMP"


def test_signing_validates_first(indirect, load):
    with pytest.raises(VihfValidationError):
        sign_vihf(replace(indirect.identity, user_name=""), load("org-sign").signer)


def test_read_vihf_reads_the_official_example_layout():
    path = REFERENCE / "dmp-examples" / "VIHF_INDIRECTE_signed.xml"
    if not path.is_file():
        pytest.skip(f"official examples not available at {path}")
    vihf = read_vihf(etree.fromstring(path.read_bytes()))
    assert vihf.mode is AuthMode.INDIRECTE
    assert vihf.roles[0].code == "10"
    assert vihf.patient is not None and vihf.patient.oid == INS_TEST_OID


def test_signing_and_verifying_log_no_patient_data(indirect, load, verify_settings, caplog):
    caplog.set_level("DEBUG")
    assertion = sign_vihf(indirect.identity.with_patient(PATIENT), load("org-sign").signer)
    verify_vihf(reparse(assertion), verify_settings)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert PATIENT.ins not in logged
    assert "MEDECIN0001" not in logged


# --- the per-identity template ------------------------------------------------------------------


def test_each_call_fills_its_own_values_into_the_identity_template(indirect, load, verify_settings):
    signer = load("org-sign").signer
    other = Patient("180036912345660", INS_TEST_OID)
    first = sign_vihf(indirect.identity.with_patient(PATIENT), signer)
    second = sign_vihf(indirect.identity.with_patient(other), signer)
    unconcerned = sign_vihf(indirect.identity, signer)
    assert verify_vihf(reparse(first), verify_settings).vihf.patient == PATIENT
    assert verify_vihf(reparse(second), verify_settings).vihf.patient == other
    assert verify_vihf(reparse(unconcerned), verify_settings).vihf.patient is None
    assert first.get("ID") != second.get("ID")


def test_the_template_gives_the_same_bytes_for_the_same_values(indirect):
    vihf = indirect.identity.with_patient(PATIENT)
    options = VihfOptions(validity=timedelta(minutes=5))
    now = datetime(2026, 12, 1, 21, 30, 15, 123456, tzinfo=UTC)

    def build(patient: Patient) -> etree._Element:
        return build_assertion(
            vihf.with_patient(patient), "CN=X", options=options, now=now, assertion_id="_a"
        )

    once = etree.tostring(build(PATIENT))
    build(Patient("180036912345660", INS_TEST_OID))  # another patient in between
    assert etree.tostring(build(PATIENT)) == once
    assertion = etree.fromstring(once)
    assert assertion.get("IssueInstant") == "2026-12-01T21:30:15.123Z"
    assert assertion.find(f"{S}AuthnStatement").get("AuthnInstant") == "2026-12-01T21:30:15.123Z"
    assert assertion.find(f"{S}Conditions").get("NotOnOrAfter") == "2026-12-01T21:35:15.123Z"
    assert read_vihf(assertion) == vihf


def test_an_invalid_patient_is_refused_with_a_valid_identity_template(indirect, load):
    signer = load("org-sign").signer
    sign_vihf(indirect.identity.with_patient(PATIENT), signer)
    with pytest.raises(VihfValidationError):
        sign_vihf(indirect.identity.with_patient(Patient("279035121518900", INS_TEST_OID)), signer)


def test_the_assertion_in_an_envelope_verifies_with_xmlsec1_and_ours(
    indirect, load, xmlsec1_verify, verify_settings
):
    from transport.soap.envelope import build_envelope
    from transport.soap.wsse import verify_security

    assertion = sign_vihf(indirect.identity.with_patient(PATIENT), load("org-sign").signer)
    payload = etree.Element("{urn:hl7-org:v3}PRPA_IN201307UV02", nsmap={None: "urn:hl7-org:v3"})
    c14n = {"method": "c14n", "exclusive": True}
    where_signed = etree.tostring(assertion, **c14n)
    envelope = build_envelope("urn:x", "https://dmp.example/", payload, assertions=[assertion])
    inside = envelope.find(f".//{S}Assertion")
    assert etree.tostring(inside, **c14n) == where_signed
    result = xmlsec1_verify(envelope)
    assert result.returncode == 0, result.stderr
    assert verify_security(reparse(envelope), verify_settings).vihf.patient == PATIENT


def test_signing_in_place_gives_the_bytes_of_a_signed_copy(indirect, load, verify_settings):
    # RSA PKCS#1 v1.5 is deterministic: the signature copied from the per-certificate template
    # and filled in place is, byte for byte, the one sign_enveloped puts on its copy.
    signer = load("org-sign").signer
    now = datetime.now(UTC)
    unsigned = build_assertion(
        indirect.identity.with_patient(PATIENT), load("org-sign").dn, now=now, assertion_id="_s"
    )
    before = etree.tostring(unsigned)
    copy_signed = sign_enveloped(unsigned, signer, after=f"{S}Issuer")
    assert etree.tostring(unsigned) == before  # the copy's original is left unsigned
    assert sign_in_place(unsigned, signer, after=f"{S}Issuer") is None
    assert etree.tostring(unsigned) == etree.tostring(copy_signed)
    assert [child.tag for child in unsigned][:2] == [f"{S}Issuer", f"{DS}Signature"]
    assert verify_vihf(reparse(unsigned), verify_settings).assertion_id == "_s"


def test_each_algorithm_and_certificate_has_its_own_signature_template(indirect, load):
    unsigned = build_assertion(indirect.identity, load("org-sign").dn, assertion_id="_t")
    methods = {}
    for name, algorithm in (("org-sign", "rsa-sha256"), ("org-sign", "rsa-sha512"),
                            ("cps-sign", "rsa-sha256")):  # fmt: skip
        signer = load(name).signer
        signature = sign_enveloped(unsigned, signer, algorithm=algorithm).find(f"{DS}Signature")
        certificate = signature.findtext(f"{DS}KeyInfo/{DS}X509Data/{DS}X509Certificate")
        der = x509.load_der_x509_certificate(base64.b64decode(certificate))
        assert der == signer.certificate
        methods[name, algorithm] = signature.find(f"{DS}SignedInfo/{DS}SignatureMethod").get(
            "Algorithm"
        )
    assert methods["org-sign", "rsa-sha512"].endswith("rsa-sha512")
    assert methods["org-sign", "rsa-sha256"] == methods["cps-sign", "rsa-sha256"]
    assert methods["org-sign", "rsa-sha256"].endswith("rsa-sha256")


def test_with_patient_is_replace_without_its_cost(indirect):
    identity = indirect.identity
    assert identity.with_patient(identity.patient) is identity
    returned = Patient(PATIENT.ins, PATIENT.oid, as_returned=True)
    changed = identity.with_patient(returned)
    assert changed == replace(identity, patient=returned)
    assert hash(changed) == hash(replace(identity, patient=returned))
    assert changed.patient is returned and identity.patient is None
    assert changed.with_patient(None) == identity
