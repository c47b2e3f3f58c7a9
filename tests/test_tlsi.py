"""The téléservices transport messages: contexts, assertion PS, envelope, faults and ``post``,
checked against the official INSi schemas, xmlsec1, and a real TLS server on loopback."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from lxml import etree

from tests.conftest import REFERENCE
from transport.errors import SignatureError, SoapFault, TransportError, ValidationError
from transport.soap.addressing import SOAP12_NS, WSA_NS
from transport.soap.envelope import raise_for_fault
from transport.soap.wsse import WSSE_NS
from transport.stubs.server import ServerTLS, StubRequest, StubResponse, StubServer, soap12_fault
from transport.teleservices.client import (
    CTXBAM_NS,
    CTXLPS_NS,
    SIRAM_NS,
    AssertionPS,
    Beneficiary,
    ContexteBAM,
    ContexteLPS,
    Coverage,
    Nir,
    RequestTemplate,
    Software,
    build_assertion_ps,
    build_contexte_bam,
    build_contexte_lps,
    build_request,
    emitter_from_assertion,
    emitter_from_certificate,
    post,
    read_assertion_ps,
    read_contexte_bam,
    read_contexte_lps,
    sign_assertion_ps,
    siram_error,
    verify_assertion_ps,
)
from transport.tls import TLSSettings, create_session
from transport.vihf import SAML_NS
from transport.xmlsig import DSIG_NS, sign_enveloped

INSI_XSD = REFERENCE / "insi-wsdl" / "xsd"
INSI_SCHEMAS = {
    "http://www.cnamts.fr/INSiRecSans": "ServiceIdentiteCertifiee/INSi_RECSANS_INS.xsd",
    "http://www.cnamts.fr/INSiRecVit": "ServiceIdentiteCertifiee/INSi_RECVITALE_INS.xsd",
    "http://www.cnamts.fr/INSiResultat": "ServiceIdentiteCertifiee/INSi_RESULTAT_INS.xsd",
    CTXBAM_NS: "CTX/ROOT_ctxbam_CTXBAM_V01_02.xsd",
    CTXLPS_NS: "CTX/ROOT_ctxlps_CTXLPS_V01_00.xsd",
    WSSE_NS: "WSSE/Security.xsd",
    SIRAM_NS: "schema_faultSOAP_V01_01.xsd",
}
SOFTWARE = Software.named(
    "cisis-transport",
    "0.1.0",
    idam="CISIS-TEST-IDAM",
    instance="0b4c3f4e-8f0e-4d2b-9a51-1c2d3e4f5a6b",
)
# Milliseconds only, as the messages carry them, so that what is read back compares equal.
NOW = datetime.now(UTC).replace(microsecond=891000)
ACTION = "urn:ServiceIdentiteCertifiee:1.0.0:rechercherInsAvecTraitsIdentite"
S = f"{{{SAML_NS}}}"


@functools.cache
def official_insi_schema() -> etree.XMLSchema:
    """The official INSi schemas (payloads, contexts, wsse:Security with SAML, siram:Erreur);
    skips the calling test when they are not available."""
    missing = [path for path in INSI_SCHEMAS.values() if not (INSI_XSD / path).is_file()]
    if missing:
        pytest.skip(f"official INSi schemas not available under {INSI_XSD}: {missing}")
    imports = "".join(
        f'<xs:import namespace="{namespace}" schemaLocation="{(INSI_XSD / path).as_uri()}"/>'
        for namespace, path in INSI_SCHEMAS.items()
    )
    wrapper = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
    return etree.XMLSchema(etree.fromstring(wrapper))


@pytest.fixture
def insi_schema() -> etree.XMLSchema:
    return official_insi_schema()


def assert_valid(schema: etree.XMLSchema, element: etree._Element) -> None:
    standalone = etree.fromstring(etree.tostring(element))
    assert schema.validate(standalone), schema.error_log


def reparse(element: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(element))


def test_contexte_lps_round_trip_and_schema(insi_schema):
    context = ContexteLPS.new("499900000001001", SOFTWARE, now=NOW)
    element = build_contexte_lps(context)
    assert_valid(insi_schema, element)
    assert element.get("Nature") == "CTXLPS" and element.get("Version") == "01_00"
    assert element.find(f"{{{CTXLPS_NS}}}Temps").text == NOW.strftime("%Y-%m-%dT%H:%M:%S.891Z")
    idam = element.find(f"{{{CTXLPS_NS}}}LPS/{{{CTXLPS_NS}}}IDAM")
    assert (idam.get("R"), idam.text) == ("4", "CISIS-TEST-IDAM")
    assert element.findtext(f"{{{CTXLPS_NS}}}LPS/{{{CTXLPS_NS}}}Nom") == (
        "urn:lps:cisis-transport:0.1.0"
    )
    assert read_contexte_lps(reparse(element)) == context


def test_the_french_field_names_still_read_and_warn():
    coverage = Coverage(
        scheme="01", fund="011", centre="0101", beneficiary=Beneficiary(card_holder="0")
    )
    with pytest.warns(DeprecationWarning, match="Coverage.grand_regime"):
        assert coverage.grand_regime == "01"
    with pytest.warns(DeprecationWarning, match="Coverage.organisme"):
        assert coverage.organisme == "011"
    with pytest.warns(DeprecationWarning, match="Coverage.code_centre"):
        assert coverage.code_centre == "0101"
    with pytest.warns(DeprecationWarning, match="Beneficiary.porteur"):
        assert coverage.beneficiary.porteur == "0"
    with pytest.warns(DeprecationWarning, match="Software.nom"):
        assert SOFTWARE.nom == SOFTWARE.urn == "urn:lps:cisis-transport:0.1.0"


def test_contexte_bam_round_trip_with_a_vitale_coverage(insi_schema):
    coverage = Coverage(
        scheme="01",
        fund="011",
        centre="0101",
        insured=Nir("160012B020033", "78"),
        beneficiary=Beneficiary(
            nir=Nir("1090763220517", "18"),
            certified_on=date(2020, 1, 2),
            birth_date="2009-07-00",
            rank=1,
            card_holder="0",
        ),
    )
    context = replace(ContexteBAM.new("499900000001001", coverage, now=NOW), reference_date=NOW)
    element = build_contexte_bam(context)
    assert_valid(insi_schema, element)
    assert read_contexte_bam(reparse(element)) == context


def test_contexte_bam_for_a_traits_search_has_an_empty_coverage(insi_schema):
    element = build_contexte_bam(ContexteBAM.new(None, now=NOW))
    assert_valid(insi_schema, element)
    coverage = element.find(f"{{{CTXBAM_NS}}}COUVERTURE")
    assert coverage is not None and len(coverage) == 0
    assert element.find(f"{{{CTXBAM_NS}}}Emetteur") is None


def test_each_context_has_its_own_fresh_id():
    first, second = ContexteBAM.new("x"), ContexteBAM.new("x")
    assert first.id != second.id
    assert first.time.tzinfo is not None and first.time.utcoffset() == timedelta(0)


def _without(tag: str):
    def edit(element: etree._Element) -> None:
        element.remove(element.find(tag))

    return edit


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_without(f"{{{CTXBAM_NS}}}Id"), "ContexteBAM/Id"),
        (_without(f"{{{CTXBAM_NS}}}COUVERTURE"), "ContexteBAM/COUVERTURE"),
        (lambda element: element.attrib.pop("Version"), "ContexteBAM/@Version"),
        (lambda element: element.set("Nature", "CTXLPS"), "ContexteBAM/@Nature"),
        (lambda element: setattr(element[1], "text", "hier"), "Temps"),
    ],
    ids=["id", "coverage", "version", "nature", "time"],
)
def test_contexte_bam_reader_names_what_is_wrong(edit, field):
    element = build_contexte_bam(ContexteBAM.new("x", now=NOW))
    edit(element)
    with pytest.raises(ValidationError) as caught:
        read_contexte_bam(element)
    assert caught.value.field == field


def test_contexte_lps_reader_refuses_a_foreign_element_and_a_wrong_nature():
    with pytest.raises(ValidationError):
        read_contexte_lps(build_contexte_bam(ContexteBAM.new("x")))
    element = build_contexte_lps(ContexteLPS.new("x", SOFTWARE))
    element.set("Nature", "CTXBAM")
    with pytest.raises(ValidationError) as caught:
        read_contexte_lps(element)
    assert caught.value.field == "ContexteLPS/@Nature"


def test_a_malformed_nir_is_refused_before_sending():
    coverage = Coverage(insured=Nir("12345", "00"))
    with pytest.raises(ValidationError) as caught:
        build_contexte_bam(ContexteBAM.new("x", coverage))
    assert caught.value.field == "ASSURE/Id/Num"


def test_the_official_request_contexts_and_assertion_read_back():
    sample = REFERENCE / "insi-examples" / "INSi_request_with_AssertionPS.xml"
    if not sample.is_file():
        pytest.skip(f"official INSi request sample not available at {sample}")
    envelope = etree.fromstring(sample.read_bytes())
    header = envelope.find(f"{{{SOAP12_NS}}}Header")
    bam = read_contexte_bam(header.find(f"{{{CTXBAM_NS}}}ContexteBAM"))
    lps = read_contexte_lps(header.find(f"{{{CTXLPS_NS}}}ContexteLPS"))
    assert bam.version == "01_02" and bam.coverage == Coverage()
    assert lps.version == "01_00" and lps.software is not None
    assert lps.software.idam and lps.time.tzinfo is not None
    assertion = header.find(f"{{{WSSE_NS}}}Security/{S}Assertion")
    read = read_assertion_ps(assertion)
    assert read.name_qualifier == "CPS" and read.professional_id
    assert read.sector is not None and read.sector.startswith("SA")
    assert emitter_from_assertion(assertion) == read.professional_id


# --- assertion PS ---------------------------------------------------------------------------


def card_assertion(load, **fields) -> AssertionPS:
    return AssertionPS(
        load("cps-sign").common_name, billing_id="123456789", sector="SA07", **fields
    )


def test_assertion_ps_signs_and_reads_back(load, verify_settings, insi_schema):
    assertion = card_assertion(load)
    signed = sign_assertion_ps(assertion, load("cps-sign").signer, now=NOW)
    verified = verify_assertion_ps(reparse(signed), verify_settings, now=NOW)
    assert verified.assertion == assertion
    assert verified.signer_dn == load("cps-sign").dn
    assert verified.algorithm == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    assert verified.issue_instant == NOW
    names = [etree.QName(child).localname for child in signed]
    assert names == ["Issuer", "Signature", "Subject", "AttributeStatement"]
    assert signed.find(f"{S}Subject/{S}NameID").get("NameQualifier") == "CPS"
    security = etree.Element(f"{{{WSSE_NS}}}Security")
    security.append(reparse(signed))
    assert_valid(insi_schema, security)


def test_assertion_ps_without_attributes_has_no_statement(load):
    element = build_assertion_ps(AssertionPS("899700000001"), "CN=x")
    assert element.find(f"{S}AttributeStatement") is None
    assert read_assertion_ps(element) == AssertionPS("899700000001")


def test_unsigned_assertion_ps_is_refused(load, verify_settings):
    unsigned = build_assertion_ps(card_assertion(load), load("cps-sign").dn)
    with pytest.raises(SignatureError) as caught:
        verify_assertion_ps(unsigned, verify_settings)
    assert caught.value.reason == "unsigned"


def test_tampered_assertion_ps_is_refused(load, verify_settings):
    signed = sign_assertion_ps(card_assertion(load), load("cps-sign").signer)
    for value in signed.iter(f"{S}AttributeValue"):
        value.text = "SA99"
    with pytest.raises(SignatureError) as caught:
        verify_assertion_ps(reparse(signed), verify_settings)
    assert caught.value.reason == "invalid-signature"


def test_assertion_ps_signed_with_an_authentication_key_is_refused(load, verify_settings):
    signed = sign_assertion_ps(card_assertion(load), load("cps-auth").signer)
    with pytest.raises(SignatureError) as caught:
        verify_assertion_ps(reparse(signed), verify_settings)
    assert caught.value.reason == "key-usage"


def test_assertion_ps_for_someone_else_than_the_card_holder_is_refused(load, verify_settings):
    signed = sign_assertion_ps(AssertionPS("899700000999"), load("cps-sign").signer)
    with pytest.raises(SignatureError) as caught:
        verify_assertion_ps(reparse(signed), verify_settings)
    assert "card holder" in caught.value.message


def test_assertion_ps_issuer_must_be_the_signer(load, verify_settings):
    unsigned = build_assertion_ps(card_assertion(load), "CN=SOMEONE ELSE,C=FR")
    signed = sign_enveloped(unsigned, load("cps-sign").signer, after=f"{S}Issuer")
    with pytest.raises(SignatureError) as caught:
        verify_assertion_ps(reparse(signed), verify_settings)
    assert "Issuer" in caught.value.message


def test_stale_and_future_assertions_ps_are_refused(load, verify_settings):
    signed = sign_assertion_ps(card_assertion(load), load("cps-sign").signer, now=NOW)
    later = NOW + timedelta(hours=1)
    with pytest.raises(SignatureError) as caught:
        verify_assertion_ps(
            reparse(signed), verify_settings, now=later, max_age=timedelta(minutes=10)
        )
    assert caught.value.reason == "stale"
    assert verify_assertion_ps(reparse(signed), verify_settings, now=later).issue_instant == NOW
    with pytest.raises(SignatureError) as caught:
        verify_assertion_ps(reparse(signed), verify_settings, now=NOW - timedelta(hours=1))
    assert caught.value.reason == "stale"


def test_xmlsec1_verifies_the_assertion_ps_inside_a_request(load, xmlsec1_verify):
    signed = sign_assertion_ps(card_assertion(load), load("cps-sign").signer)
    envelope = request_envelope(assertions=[signed])
    carried = envelope.find(f"{{{SOAP12_NS}}}Header/{{{WSSE_NS}}}Security/{S}Assertion")
    result = xmlsec1_verify(carried)
    assert result.returncode == 0, result.stderr
    carried.find(f"{S}Subject/{S}NameID").text = "899700000999"
    assert xmlsec1_verify(carried).returncode != 0


# --- emitter, faults, envelope -----------------------------------------------------------------


def test_emitter_is_the_certificate_ou_or_the_assertion_name_id(load):
    assert emitter_from_certificate(load("insi-auto")) == "499900000001001"
    signed = sign_assertion_ps(card_assertion(load), load("cps-sign").signer)
    assert emitter_from_assertion(signed) == load("cps-sign").common_name


def test_siram_error_is_valid_and_read_back_from_a_fault(insi_schema):
    error = siram_error("desir_550", "Numéro inconnu.", message_id="uuid:1")
    assert_valid(insi_schema, error)
    with pytest.raises(ValueError):
        siram_error("desir_550", "x", severity="grave")
    fault = soap12_fault(
        "Sender",
        "refusé",
        subcodes=("siram:siram_100",),
        detail=error,
        namespaces={"siram": SIRAM_NS},
    )
    with pytest.raises(SoapFault) as caught:
        raise_for_fault(etree.fromstring(fault))
    assert caught.value.subcode == "siram_100"
    assert caught.value.service_code == "desir_550"
    assert caught.value.severity == "erreur"
    assert caught.value.details[0].message_id == "uuid:1"
    assert caught.value.details[0].message == "Numéro inconnu."


def request_envelope(*, assertions=(), message_id=None) -> etree._Element:
    payload = etree.Element("{http://www.cnamts.fr/INSiRecSans}RECSANSVITALE")
    return build_request(
        ACTION,
        payload,
        contexte_bam=ContexteBAM.new("499900000001001", now=NOW),
        contexte_lps=ContexteLPS.new("499900000001001", SOFTWARE, now=NOW),
        assertions=assertions,
        message_id=message_id,
    )


def header_names(envelope: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in envelope.find(f"{{{SOAP12_NS}}}Header")]


def test_request_headers_in_certificate_mode(insi_schema):
    envelope = reparse(request_envelope())
    assert header_names(envelope) == ["ContexteBAM", "ContexteLPS", "Action", "MessageID"]
    header = envelope.find(f"{{{SOAP12_NS}}}Header")
    assert header.findtext(f"{{{WSA_NS}}}Action") == ACTION
    assert header.findtext(f"{{{WSA_NS}}}MessageID").startswith("uuid:")
    assert not any(key.endswith("mustUnderstand") for node in header.iter() for key in node.attrib)
    for child in header[:2]:
        assert_valid(insi_schema, child)


def test_request_headers_in_card_mode(load, verify_settings, insi_schema):
    signed = sign_assertion_ps(card_assertion(load), load("cps-sign").signer)
    envelope = reparse(request_envelope(assertions=[signed], message_id="uuid:fixed"))
    assert header_names(envelope) == [
        "ContexteBAM",
        "ContexteLPS",
        "Action",
        "MessageID",
        "Security",
    ]
    header = envelope.find(f"{{{SOAP12_NS}}}Header")
    assert header.findtext(f"{{{WSA_NS}}}MessageID") == "uuid:fixed"
    security = header.find(f"{{{WSSE_NS}}}Security")
    assert_valid(insi_schema, security)
    # The signature survives being carried in the envelope.
    verify_assertion_ps(security[0], verify_settings)
    assert security[0].find(f"{{{DSIG_NS}}}Signature") is not None


@pytest.mark.parametrize("card", [False, True], ids=["certificate", "card"])
@pytest.mark.parametrize("emitter", ["499900000001001", None])
def test_a_request_from_the_template_is_the_one_build_request_writes(load, card, emitter):
    assertions = [sign_assertion_ps(card_assertion(load), load("cps-sign").signer)] if card else []
    template = RequestTemplate(emitter, SOFTWARE)
    payload = "{http://www.cnamts.fr/INSiRecSans}RECSANSVITALE"
    filled = [
        template.fill(ACTION, etree.Element(payload), now=NOW, assertions=assertions)
        for _ in range(2)
    ]
    for envelope in filled:
        header = envelope.find(f"{{{SOAP12_NS}}}Header")
        bam, lps = read_contexte_bam(header[0]), read_contexte_lps(header[1])
        assert bam.time == lps.time == NOW
        expected = build_request(
            ACTION,
            etree.Element(payload),
            contexte_bam=ContexteBAM(bam.id, NOW, emitter),
            contexte_lps=ContexteLPS(lps.id, NOW, emitter, SOFTWARE),
            assertions=assertions,
            message_id=header.findtext(f"{{{WSA_NS}}}MessageID"),
        )
        assert etree.tostring(envelope) == etree.tostring(expected)
    # Every call has ids of its own, and filling one envelope leaves the template as it was.
    ids = [
        text
        for envelope in filled
        for text in (
            envelope.findtext(
                f"{{{SOAP12_NS}}}Header/{{{CTXBAM_NS}}}ContexteBAM/{{{CTXBAM_NS}}}Id"
            ),
            envelope.findtext(
                f"{{{SOAP12_NS}}}Header/{{{CTXLPS_NS}}}ContexteLPS/{{{CTXLPS_NS}}}Id"
            ),
            envelope.findtext(f"{{{SOAP12_NS}}}Header/{{{WSA_NS}}}MessageID"),
        )
    ]
    assert len(set(ids)) == 6 and all(ids)
    assert [len(envelope.find(f"{{{SOAP12_NS}}}Body")) for envelope in filled] == [1, 1]


# --- post over TLS -------------------------------------------------------------------------------


class Recorder:
    """A handler that answers what the test sets, and keeps the last request."""

    def __init__(self) -> None:
        self.answer = StubResponse(200, b"")
        self.request: StubRequest | None = None

    def __call__(self, request: StubRequest) -> StubResponse:
        self.request = request
        request.body  # noqa: B018 - read it while the spool is open
        return self.answer


@pytest.fixture(scope="module")
def recorder(pki) -> Iterator[tuple[Recorder, str]]:
    handler = Recorder()
    with StubServer(handler, ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)) as server:
        yield handler, f"{server.url}/lps"


@pytest.fixture(scope="module")
def session(pki, load):
    return create_session(load("insi-auto"), TLSSettings(ca_bundle=pki.ca_bundle))


def envelope_bytes(body: str, header: str = "") -> bytes:
    return (
        f'<soap:Envelope xmlns:soap="{SOAP12_NS}">{header}<soap:Body>{body}</soap:Body>'
        "</soap:Envelope>"
    ).encode()


def test_post_sends_the_soap_12_content_type_and_returns_the_payload(recorder, session):
    handler, url = recorder
    handler.answer = StubResponse(200, envelope_bytes('<r:RESULTAT xmlns:r="urn:x"/>'))
    payload = post(session, url, request_envelope())
    assert payload.tag == "{urn:x}RESULTAT"
    content_type = handler.request.headers["content-type"]
    assert content_type == f'application/soap+xml; charset=utf-8; action="{ACTION}"'
    sent = etree.fromstring(handler.request.body)
    assert header_names(sent) == ["ContexteBAM", "ContexteLPS", "Action", "MessageID"]


def test_post_raises_a_siram_fault(recorder, session):
    handler, url = recorder
    fault = soap12_fault(
        "Receiver",
        "indisponible",
        subcodes=("siram:siram_40",),
        detail=siram_error("insi_102", "erreur technique", severity="fatale"),
        namespaces={"siram": SIRAM_NS},
    )
    handler.answer = StubResponse(500, fault)
    with pytest.raises(SoapFault) as caught:
        post(session, url, request_envelope())
    assert (caught.value.code, caught.value.subcode) == ("Receiver", "siram_40")
    assert (caught.value.service_code, caught.value.severity) == ("insi_102", "fatale")


@pytest.mark.parametrize(
    "answer",
    [
        StubResponse(502, b"<html>bad gateway", "text/html"),
        StubResponse(200, b"<not-soap/>", "application/xml"),
        StubResponse(200, envelope_bytes("")),
        StubResponse(500, envelope_bytes('<r:RESULTAT xmlns:r="urn:x"/>')),
        StubResponse(
            200,
            envelope_bytes(
                "<x/>",
                f'<soap:Header><wsa:RelatesTo xmlns:wsa="{WSA_NS}">uuid:other</wsa:RelatesTo>'
                "</soap:Header>",
            ),
        ),
    ],
    ids=["not-xml", "not-soap", "empty-body", "error-status", "relates-to-another"],
)
def test_post_refuses_what_is_not_an_answer(recorder, session, answer):
    handler, url = recorder
    handler.answer = answer
    with pytest.raises(TransportError):
        post(session, url, request_envelope())
