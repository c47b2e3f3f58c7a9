"""INSi: its messages (checked against the official schemas and sample answers), and the ``/lps``
stub over mutual TLS in both access modes, with its refusals and its state across restarts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import date

import pytest
from lxml import etree

from tests.conftest import REFERENCE
from tests.test_tlsi import SOFTWARE, assert_valid, official_insi_schema, reparse
from transport.config import EXAMPLE_LPS
from transport.errors import SoapFault, TLSError, ValidationError, VihfValidationError
from transport.soap.addressing import SOAP12_NS, WSA_NS, read
from transport.soap.envelope import SOAP_CONTENT_TYPE, raise_for_fault
from transport.soap.wsdl import wsdl_path
from transport.soap.wsse import WSSE_NS
from transport.stubs.app import Stubs
from transport.stubs.insi import TEST_PERSONS, InsiRegistry, first_names_match
from transport.stubs.store import DATABASE_NAME, Database
from transport.teleservices.client import (
    CTXBAM_NS,
    CTXLPS_NS,
    SIRAM_NS,
    AssertionPS,
    ContexteBAM,
    ContexteLPS,
    Coverage,
    Nir,
    build_assertion_ps,
    build_contexte_bam,
    build_contexte_lps,
    build_request,
    emitter_from_certificate,
    post,
    sign_assertion_ps,
    siram_error,
)
from transport.teleservices.insi import (
    ACTION_SEARCH_TRAITS,
    ACTION_SEARCH_VITALE,
    RESULTAT_NS,
    Individual,
    Ins,
    Matricule,
    Report,
    Resultat,
    Traits,
    TraitsSearch,
    VitaleSearch,
    build_resultat,
    build_traits_search,
    build_vitale_search,
    read_resultat,
    read_traits_search,
    read_vitale_search,
)
from transport.tls import TLSSettings, create_session
from transport.vihf import INS_NIA_OID, INS_TEST_OID, SAML_NS, Patient, validate_ins
from transport.xml import parse_xml

EXAMPLES = REFERENCE / "insi-examples"
ECETINSI = TraitsSearch("ECETINSI", ("PIERRE-ALAIN",), "M", "2009-07-14")
DE_VINCI = TraitsSearch("DE VINCI", ("LEONARDO",), "M", "2014-02-01")
HOUILLES = TraitsSearch("HOUILLES", ("PIERRE", "PAUL", "JACQUES"), "M", "1993-01-27")
PROVISOIRE = TraitsSearch("PROVISOIRE", ("MATRICULE",), "M", "2009-07-01")
TCHITCHI = TraitsSearch("TCHITCHI", ("OLA",), "F", "1936-06-21")


@pytest.fixture
def insi_schema() -> etree.XMLSchema:
    return official_insi_schema()


# --- messages --------------------------------------------------------------------------------


def test_traits_search_validates_against_the_official_schema_and_reads_back(insi_schema):
    search = TraitsSearch("DE VINCI", ("LEONARDO", "DI SER PIERO"), "M", "2014-02-01", "63220")
    element = build_traits_search(search)
    assert_valid(insi_schema, element)
    assert [etree.QName(child).localname for child in element] == [
        "NomNaissance",
        "Prenom",
        "Prenom",
        "Sexe",
        "DateNaissance",
        "LieuNaissance",
    ]
    assert read_traits_search(reparse(element)) == search


def test_vitale_search_validates_against_the_official_schema_and_reads_back(insi_schema):
    search = VitaleSearch(
        "2009-07-14",
        individual=Matricule("1090763220517", "18", "NIR"),
        holder=Matricule("1090763220517", "18"),
        birth_name="ECETINSI",
        rank="1",
    )
    element = build_vitale_search(search)
    assert_valid(insi_schema, element)
    assert read_vitale_search(reparse(element)) == search


@pytest.mark.parametrize(
    ("search", "field"),
    [
        (TraitsSearch(" ", ("A",), "M", "2000-01-01"), "NomNaissance"),
        (TraitsSearch("A", (), "M", "2000-01-01"), "Prenom"),
        (TraitsSearch("A", ("B",), "X", "2000-01-01"), "Sexe"),
        (TraitsSearch("A", ("B",), "F", "01/01/2000"), "DateNaissance"),
        (TraitsSearch("A", ("B",), "F", "2000-00-00", "75 056"), "LieuNaissance"),
    ],
)
def test_traits_search_refuses_what_the_service_would(search, field):
    with pytest.raises(ValidationError) as caught:
        build_traits_search(search)
    assert caught.value.field == field


def test_vitale_search_needs_a_well_formed_nir():
    with pytest.raises(ValidationError) as caught:
        build_vitale_search(VitaleSearch("2009-07-14"))
    assert caught.value.field == "MatriculeIndividu"
    with pytest.raises(ValidationError) as caught:
        build_vitale_search(VitaleSearch("2009-07-14", holder=Matricule("109076322", "18")))
    assert caught.value.field == "MatriculeOD/NumIdentifiant"


def test_resultat_round_trip_validates_against_the_official_schema(insi_schema):
    person = TEST_PERSONS[0]
    for resultat in (Resultat.of(Report.FOUND, person), Resultat.of(Report.SEVERAL)):
        element = build_resultat(resultat)
        assert_valid(insi_schema, element)
        assert read_resultat(reparse(element)) == resultat


PROJECT_SCHEMAS = {
    "http://www.cnamts.fr/INSiRecSans": "recsans.xsd",
    "http://www.cnamts.fr/INSiRecVit": "recvitale.xsd",
    RESULTAT_NS: "resultat.xsd",
    CTXBAM_NS: "ctxbam.xsd",
    CTXLPS_NS: "ctxlps.xsd",
    SIRAM_NS: "siram.xsd",
}


def test_messages_validate_against_the_project_schemas():
    directory = wsdl_path("insi/insi.wsdl").parent
    imports = "".join(
        f'<xs:import namespace="{namespace}" schemaLocation="{(directory / name).as_uri()}"/>'
        for namespace, name in PROJECT_SCHEMAS.items()
    )
    schema = etree.XMLSchema(
        etree.fromstring(
            f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
        )
    )
    coverage = Coverage(insured=Nir("1090763220517", "18"))
    for element in (
        build_traits_search(replace(DE_VINCI, birthplace="63220")),
        build_vitale_search(VitaleSearch("2009-07-14", holder=Matricule("1090763220517", "18"))),
        build_resultat(Resultat.of(Report.FOUND, TEST_PERSONS[0])),
        build_resultat(Resultat.of(Report.NOT_FOUND)),
        build_contexte_bam(ContexteBAM.new("499900000001001", coverage)),
        build_contexte_lps(ContexteLPS.new("499900000001001", SOFTWARE)),
        siram_error("desir_500", "Requête invalide.", message_id="uuid:1"),
    ):
        assert_valid(schema, element)


def sample(name: str) -> bytes:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"official INSi sample {name} not available at {EXAMPLES}")
    return path.read_bytes()


def test_official_answer_with_history_parses():
    resultat = read_resultat(etree.fromstring(sample("TEST_2.04_cas2.xml")))
    assert resultat.report is Report.FOUND and resultat.label == "OK"
    individual = resultat.individual
    assert individual is not None
    assert len(individual.active.value) == 15 and individual.active.oid.startswith("1.2.250.")
    assert not individual.active.is_nia
    assert len(individual.history) == 2
    # That sample puts DateDeb/DateFin before IdIndividu (not the schema's order): read anyway.
    assert individual.history[0].start is not None and individual.history[0].end is not None
    assert individual.traits.birth_name == "ECETINSI"
    assert individual.traits.first_names.split()[0] == "PIERRE-ALAIN"
    assert individual.traits.first_name is None


def test_official_nia_answer_parses_whatever_the_layout():
    envelope = etree.fromstring(sample("TEST_2.05.xml"))
    resultat = read_resultat(envelope)
    assert resultat.individual is not None and resultat.individual.active.is_nia
    assert resultat.individual.traits.first_name == "MATRICULE"
    body = envelope.find(f"{{{SOAP12_NS}}}Body")
    assert read_resultat(body) == resultat
    assert read_resultat(body.find(f"{{{RESULTAT_NS}}}RESULTAT")) == resultat


def test_resultat_is_read_by_namespace_with_a_header_and_any_prefix():
    answer = (
        f'<e:Envelope xmlns:e="{SOAP12_NS}"><e:Header><a:Action xmlns:a="{WSA_NS}">x</a:Action>'
        f'</e:Header><e:Body><z:RESULTAT xmlns:z="{RESULTAT_NS}"><z:CR><z:CodeCR>01</z:CodeCR>'
        "<z:LibelleCR>Aucune identite trouvee</z:LibelleCR></z:CR></z:RESULTAT></e:Body>"
        "</e:Envelope>"
    )
    assert read_resultat(etree.fromstring(answer)) == Resultat.of(Report.NOT_FOUND)


@pytest.mark.parametrize(
    "answer",
    [
        f'<e:Envelope xmlns:e="{SOAP12_NS}"><e:Body/></e:Envelope>',
        f'<RESULTAT xmlns="{RESULTAT_NS}"/>',
        f'<RESULTAT xmlns="{RESULTAT_NS}"><CR><CodeCR>00</CodeCR></CR><INDIVIDU/></RESULTAT>',
        '<RESULTAT xmlns="urn:other"><CR><CodeCR>00</CodeCR></CR></RESULTAT>',
    ],
    ids=["empty-body", "no-report", "individual-without-ins", "other-namespace"],
)
def test_resultat_reader_refuses_incomplete_answers(answer):
    with pytest.raises(ValidationError):
        read_resultat(etree.fromstring(answer))


LIVE_INS_WITH_A_BAD_KEY = "181036322045660"
"""HERMANN GATIEN as the live INSi qualification service returns him: key 60, mod-97 says 10."""


def test_every_seeded_ins_is_well_formed_but_the_live_one_with_its_key_as_sent():
    for person in TEST_PERSONS:
        for ins in (person.active, *person.history):
            if ins.value == LIVE_INS_WITH_A_BAD_KEY:
                with pytest.raises(VihfValidationError, match="key"):
                    validate_ins(Patient(ins.value, INS_TEST_OID))
            else:
                validate_ins(Patient(ins.value, INS_TEST_OID))
        assert person.active.oid in (INS_TEST_OID, INS_NIA_OID)


@pytest.mark.parametrize(
    ("requested", "matches"),
    [
        (("PIERRE-ALAIN",), True),
        (("MURIEL",), True),
        (("PIERRE-ALAIN", "MURIEL"), True),
        (("PIERRE-ALAIN MURIEL FLORIANT",), True),
        (("pierre-alain",), True),
        (("MURIEL", "FLORIANT"), False),
        (("PIERRE",), False),
        ((), False),
    ],
)
def test_first_names_match_a_name_of_the_list_or_its_beginning(requested, matches):
    assert first_names_match(requested, "PIERRE-ALAIN MURIEL FLORIANT") is matches


# --- the stub over mutual TLS ----------------------------------------------------------------


STUB_SERVICES = ["lps"]


@pytest.fixture(scope="module")
def sessions(pki, load):
    cache = {}

    def session(name: str):
        if name not in cache:
            cache[name] = create_session(load(name), TLSSettings(ca_bundle=pki.ca_bundle))
        return cache[name]

    return session


def envelope_for(
    payload: etree._Element,
    *,
    action: str = ACTION_SEARCH_TRAITS,
    assertions=(),
    emitter: str = "499900000001001",
) -> etree._Element:
    return build_request(
        action,
        payload,
        contexte_bam=ContexteBAM.new(emitter),
        contexte_lps=ContexteLPS.new(emitter, SOFTWARE),
        assertions=assertions,
    )


def search(session, url: str, query: TraitsSearch, **kwargs) -> Resultat:
    return read_resultat(post(session, url, envelope_for(build_traits_search(query), **kwargs)))


def refusal(session, url: str, envelope: etree._Element) -> SoapFault:
    with pytest.raises(SoapFault) as caught:
        post(session, url, envelope)
    return caught.value


def test_certificate_mode_finds_an_identity_with_its_history(stubs, sessions, load):
    emitter = emitter_from_certificate(load("insi-auto"))
    resultat = search(sessions("insi-auto"), stubs.teleservices_url, ECETINSI, emitter=emitter)
    assert resultat.report is Report.FOUND and resultat.label == "OK"
    individual = resultat.individual
    assert individual == TEST_PERSONS[0]
    validate_ins(individual.active.patient)
    assert len(individual.history) == 1  # the live answer's one former INS
    assert individual.history[0].end == date(2019, 2, 28)
    assert individual.traits.first_names == "PIERRE-ALAIN MURIEL FLORIANT"


def test_another_first_name_of_the_list_finds_the_same_identity(stubs, sessions):
    query = TraitsSearch("ECETINSI", ("MURIEL",), "M", "2009-07-14", "63220")
    resultat = search(sessions("insi-auto"), stubs.teleservices_url, query)
    assert resultat.individual is not None
    assert resultat.individual.active == TEST_PERSONS[0].active
    wrong_date = TraitsSearch("ECETINSI", ("PIERRE-ALAIN",), "M", "2009-07-15")
    assert search(sessions("insi-auto"), stubs.teleservices_url, wrong_date).report is (
        Report.NOT_FOUND
    )


def test_homonyms_give_cr_02_until_the_birthplace_tells_them_apart(stubs, sessions):
    url, session = stubs.teleservices_url, sessions("insi-auto")
    several = search(session, url, DE_VINCI)
    assert (several.code, several.label) == ("02", "Plusieurs identites trouvees")
    assert several.individual is None
    auvergne = search(session, url, replace(DE_VINCI, birthplace="63220"))
    abroad = search(session, url, replace(DE_VINCI, birthplace="99127"))
    assert auvergne.report is Report.FOUND and abroad.report is Report.FOUND
    assert auvergne.individual.traits.birthplace == "63220"
    assert auvergne.individual.active != abroad.individual.active


def test_tchitchi_ola_is_answered_as_the_live_service_answers_her(stubs, sessions):
    resultat = search(sessions("insi-auto"), stubs.teleservices_url, TCHITCHI)
    assert resultat.report is Report.FOUND and resultat.individual is not None
    traits = resultat.individual.traits
    assert (traits.first_names, traits.first_name, traits.birthplace) == (
        "CATARINA BELLA",
        "CATARINA",
        "63220",
    )
    assert (traits.birth_name, traits.sex, traits.birth_date) == ("TCHITCHI", "F", "1936-06-21")
    assert resultat.individual.active.value == "236069741108675"


def test_unknown_identity_gives_cr_01(stubs, sessions):
    resultat = search(sessions("insi-auto"), stubs.teleservices_url, HOUILLES)
    assert (resultat.code, resultat.label) == ("01", "Aucune identite trouvee")
    assert resultat.individual is None


def test_provisional_identity_answers_a_nia(stubs, sessions):
    resultat = search(sessions("insi-auto"), stubs.teleservices_url, PROVISOIRE)
    assert resultat.individual is not None
    assert resultat.individual.active.is_nia
    assert resultat.individual.active.oid == INS_NIA_OID


def card(load, signer: str = "cps-sign") -> etree._Element:
    assertion = AssertionPS(load("cps-sign").common_name, billing_id="123456789", sector="SA07")
    return sign_assertion_ps(assertion, load(signer).signer)


def test_card_mode_with_a_signed_assertion_ps(stubs, sessions, load):
    resultat = search(
        sessions("cps-auth"),
        stubs.teleservices_url,
        ECETINSI,
        assertions=[card(load)],
        emitter=load("cps-sign").common_name,
    )
    assert resultat.individual == TEST_PERSONS[0]


def test_card_mode_has_its_own_host_on_server_only_tls(stubs, pki, load):
    without_certificate = create_session(None, TLSSettings(ca_bundle=pki.ca_bundle))
    url = stubs.card_teleservices_url
    assert url != stubs.teleservices_url
    resultat = search(
        without_certificate,
        url,
        ECETINSI,
        assertions=[card(load)],
        emitter=load("cps-sign").common_name,
    )
    assert resultat.individual == TEST_PERSONS[0]
    # Without an assertion PS there is no credential at all on that host.
    envelope = envelope_for(build_traits_search(ECETINSI))
    assert refusal(without_certificate, url, envelope).service_code == "desir_560"
    # The certificate mode's host still asks for a client certificate.
    with pytest.raises(TLSError):
        search(without_certificate, stubs.teleservices_url, ECETINSI)


def assert_siram(fault: SoapFault, subcode: str, code: str, envelope: etree._Element) -> None:
    assert (fault.code, fault.subcode, fault.service_code) == ("Sender", subcode, code)
    assert fault.severity == "erreur"
    assert fault.details[0].message_id == read(envelope, "MessageID")


def test_a_software_certificate_with_another_name_is_refused(stubs, sessions):
    envelope = envelope_for(build_traits_search(ECETINSI))
    fault = refusal(sessions("org-auth"), stubs.teleservices_url, envelope)
    assert_siram(fault, "siram_100", "desir_560", envelope)
    assert "INSI-AUTO" in fault.details[0].message


@pytest.mark.parametrize(
    ("name", "subcode", "code"),
    [("ContexteLPS", "siram_100", "desir_550"), ("ContexteBAM", "siram_10", "desir_500")],
)
def test_a_missing_context_is_refused(stubs, sessions, name, subcode, code):
    envelope = envelope_for(build_traits_search(ECETINSI))
    header = envelope.find(f"{{{SOAP12_NS}}}Header")
    namespace = CTXLPS_NS if name == "ContexteLPS" else CTXBAM_NS
    header.remove(header.find(f"{{{namespace}}}{name}"))
    assert_siram(
        refusal(sessions("insi-auto"), stubs.teleservices_url, envelope), subcode, code, envelope
    )


def test_a_context_without_software_or_with_a_wrong_version_is_refused(stubs, sessions):
    url, session = stubs.teleservices_url, sessions("insi-auto")
    envelope = envelope_for(build_traits_search(ECETINSI))
    lps = envelope.find(f"{{{SOAP12_NS}}}Header/{{{CTXLPS_NS}}}ContexteLPS")
    lps.remove(lps.find(f"{{{CTXLPS_NS}}}LPS"))
    assert refusal(session, url, envelope).service_code == "desir_550"
    envelope = envelope_for(build_traits_search(ECETINSI))
    envelope.find(f"{{{SOAP12_NS}}}Header/{{{CTXBAM_NS}}}ContexteBAM").set("Version", "01_01")
    assert refusal(session, url, envelope).service_code == "desir_500"


def tampered(load) -> etree._Element:
    assertion = card(load)
    assertion.find(f"{{{SAML_NS}}}AttributeStatement")[0][0].text = "999999999"
    return assertion


def unsigned(load) -> etree._Element:
    return build_assertion_ps(AssertionPS(load("cps-sign").common_name), load("cps-sign").dn)


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (unsigned, "no ds:Signature"),
        (tampered, "altered"),
        (lambda load: card(load, "cps-auth"), "not a signature certificate"),
    ],
    ids=["unsigned", "tampered", "auth-only-signer"],
)
def test_a_bad_assertion_ps_is_refused(stubs, sessions, load, make, why):
    envelope = envelope_for(build_traits_search(ECETINSI), assertions=[make(load)])
    fault = refusal(sessions("cps-auth"), stubs.teleservices_url, envelope)
    assert_siram(fault, "siram_100", "desir_560", envelope)
    assert why in fault.details[0].message


def test_an_empty_security_header_is_refused_even_with_an_insi_certificate(stubs, sessions, load):
    envelope = envelope_for(build_traits_search(ECETINSI), assertions=[card(load)])
    security = envelope.find(f"{{{SOAP12_NS}}}Header/{{{WSSE_NS}}}Security")
    security.remove(security[0])
    fault = refusal(sessions("insi-auto"), stubs.teleservices_url, envelope)
    assert fault.service_code == "desir_560"


def test_a_missing_birth_name_and_an_unknown_action_are_refused(stubs, sessions):
    url, session = stubs.teleservices_url, sessions("insi-auto")
    payload = build_traits_search(ECETINSI)
    payload.remove(payload[0])
    envelope = envelope_for(payload)
    assert_siram(refusal(session, url, envelope), "siram_10", "insi_19", envelope)
    envelope = envelope_for(build_traits_search(ECETINSI), action="urn:inconnu")
    assert_siram(refusal(session, url, envelope), "siram_10", "desir_500", envelope)


@pytest.mark.parametrize(
    "body",
    [
        b"<soap:Envelope xmlns:soap='http://www.w3.org/2003/05/soap-envelope'><soap:Body>",
        b"\x00\xff not xml at all",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
        b"<Envelope xmlns='http://schemas.xmlsoap.org/soap/envelope/'><Body/></Envelope>",
        b"",
    ],
    ids=["truncated", "binary", "doctype", "soap-11", "empty"],
)
def test_malformed_requests_get_a_fault_and_the_server_answers_the_next(
    stubs, sessions, insi_schema, body
):
    session, url = sessions("insi-auto"), stubs.teleservices_url
    response = session.post(url, data=body, headers={"Content-Type": "application/soap+xml"})
    assert response.status_code == 500
    answer = etree.fromstring(response.content)
    detail = answer.find(f".//{{{SIRAM_NS}}}Erreur")
    assert_valid(insi_schema, detail)
    with pytest.raises(SoapFault) as caught:
        raise_for_fault(answer)
    assert (caught.value.subcode, caught.value.service_code) == ("siram_10", "desir_500")
    assert search(session, url, ECETINSI).report is Report.FOUND


def test_answers_have_no_header_and_follow_the_official_schema(stubs, sessions, insi_schema):
    envelope = envelope_for(build_traits_search(ECETINSI))
    message = etree.tostring(envelope)
    response = sessions("insi-auto").post(
        stubs.teleservices_url,
        data=message,
        headers={"Content-Type": f'{SOAP_CONTENT_TYPE}; action="{ACTION_SEARCH_TRAITS}"'},
    )
    assert response.status_code == 200
    answer = etree.fromstring(response.content)
    assert answer.find(f"{{{SOAP12_NS}}}Header") is None
    assert_valid(insi_schema, answer.find(f"{{{SOAP12_NS}}}Body")[0])


def test_vitale_card_data_map_to_the_test_persons(stubs, sessions):
    url, session = stubs.teleservices_url, sessions("insi-auto")
    ecetinsi = TEST_PERSONS[0]

    def vitale(query: VitaleSearch) -> Resultat:
        envelope = envelope_for(build_vitale_search(query), action=ACTION_SEARCH_VITALE)
        return read_resultat(post(session, url, envelope))

    former = ecetinsi.history[0].id
    found = vitale(VitaleSearch("2009-07-14", individual=Matricule(former.number, former.key)))
    assert found.individual == ecetinsi
    holder = Matricule(ecetinsi.active.id.number)
    assert vitale(VitaleSearch("2009-07-14", holder=holder, rank="1")).individual == ecetinsi
    assert vitale(VitaleSearch("2009-07-13", holder=holder)).report is Report.NOT_FOUND
    wrong_key = Matricule(ecetinsi.active.id.number, "00")
    assert vitale(VitaleSearch("2009-07-14", holder=wrong_key)).report is Report.NOT_FOUND
    wrong_name = VitaleSearch("2009-07-14", holder=holder, birth_name="AUTRE")
    assert vitale(wrong_name).report is Report.NOT_FOUND
    nia = next(person for person in TEST_PERSONS if person.active.is_nia)
    by_nia = VitaleSearch(nia.traits.birth_date, holder=Matricule(nia.active.id.number))
    assert vitale(by_nia).report is Report.NOT_FOUND


def test_logs_carry_neither_names_nor_ins(stubs, sessions, caplog):
    session, url = sessions("insi-auto"), stubs.teleservices_url
    with caplog.at_level(logging.DEBUG, logger="transport"):
        search(session, url, ECETINSI)
        # The server logs a request after answering it; the next answer on the same connection
        # comes after that line.
        search(session, url, HOUILLES)
    assert "/lps -> 200" in caplog.text
    for secret in ("ECETINSI", "PIERRE-ALAIN", TEST_PERSONS[0].active.id.number, "2009-07-14"):
        assert secret not in caplog.text


def test_state_survives_a_restart_and_seeding_is_idempotent(pki, sessions, tmp_path):
    newcomer = Individual(
        Ins(Matricule("2990175056123", "64"), INS_TEST_OID),
        Traits("NOUVELLE", "CLAIRE ANNE", "F", "1999-01-01", "75056", "CLAIRE"),
    )
    validate_ins(newcomer.active.patient)
    query = TraitsSearch("NOUVELLE", ("CLAIRE",), "F", "1999-01-01")
    with Stubs(pki=pki, data_dir=tmp_path, services=["lps"], accept_any_idam=True) as first:
        assert search(sessions("insi-auto"), first.teleservices_url, query).report is (
            Report.NOT_FOUND
        )
        assert InsiRegistry(first.context.database).add(newcomer)
        assert not InsiRegistry(first.context.database).add(newcomer)
    with Stubs(pki=pki, data_dir=tmp_path, services=["lps"], accept_any_idam=True) as second:
        found = search(sessions("insi-auto"), second.teleservices_url, query)
        assert found.individual == newcomer
        count = second.context.database.query("SELECT COUNT(*) AS n FROM insi_persons")[0]["n"]
        assert count == len(TEST_PERSONS) + 1


# The insi_persons table as stubs before the answered traits made it, with TCHITCHI seeded.
_OLDER_PERSONS = """
CREATE TABLE insi_persons (
    person_id INTEGER PRIMARY KEY,
    birth_name TEXT NOT NULL,
    first_names TEXT NOT NULL,
    sex TEXT NOT NULL CHECK (sex IN ('M', 'F')),
    birth_date TEXT NOT NULL,
    birthplace TEXT NOT NULL
);
INSERT INTO insi_persons VALUES (1, 'TCHITCHI', 'OLA CATARINA BELLA', 'F', '1936-06-21', '97411');
"""


def test_an_older_stub_database_is_migrated_and_answers_as_the_live_service(tmp_path):
    database = Database(tmp_path / DATABASE_NAME)
    database.ensure(_OLDER_PERSONS)
    registry = InsiRegistry(database)  # creates insi_identifiers, adds the answered columns
    with database.transaction() as connection:
        connection.execute(
            "INSERT INTO insi_identifiers (number, oid, key, person_id, position)"
            " VALUES ('2360697411086', ?, '75', 1, 0)",
            (INS_TEST_OID,),
        )
    assert registry.search_traits(TCHITCHI).individual.traits.first_names == "OLA CATARINA BELLA"
    registry.seed()
    again = InsiRegistry(database)  # a second start: nothing left to migrate
    found = again.search_traits(TCHITCHI).individual
    assert (found.traits.first_names, found.traits.birthplace) == ("CATARINA BELLA", "63220")
    assert found.active.value == "236069741108675"
    count = database.query("SELECT COUNT(*) AS n FROM insi_persons")[0]["n"]
    assert count == len(TEST_PERSONS)  # TCHITCHI was not seeded twice
    database.close()


def mutations(envelope: etree._Element) -> Iterator[bytes]:
    """The request with each element removed in turn, then with each text replaced by junk."""
    count = sum(1 for _ in envelope.iter())
    for index in range(1, count):
        for kind in ("remove", "junk"):
            copy = reparse(envelope)
            node = list(copy.iter())[index]
            if kind == "remove":
                node.getparent().remove(node)
            else:
                node.text = "\u00e9\u0000"[:1] + "<&>" * 3
            yield etree.tostring(copy)


def test_no_mutation_of_a_valid_request_breaks_the_stub(stubs, sessions, load):
    session, url = sessions("cps-auth"), stubs.teleservices_url
    envelope = envelope_for(build_traits_search(ECETINSI), assertions=[card(load)])
    answers = set()
    for body in mutations(envelope):
        response = session.post(url, data=body, headers={"Content-Type": SOAP_CONTENT_TYPE})
        answer = etree.fromstring(response.content)
        if response.status_code == 200:
            answers.add(read_resultat(answer).code)
            continue
        assert response.status_code == 500
        with pytest.raises(SoapFault) as caught:
            raise_for_fault(answer)
        assert caught.value.subcode is not None and caught.value.subcode.startswith("siram_")
        answers.add(caught.value.service_code)
    # Some mutations are harmless (CR 00), some empty the search (CR 01), the rest are refused.
    assert {"00", "01", "desir_500", "desir_550", "desir_560"} <= answers


def test_faults_carry_the_subcode_under_the_envelope_prefix_and_the_live_severity():
    from transport.stubs.insi import unavailable, unknown_software

    refused = parse_xml(unknown_software("inconnu").response("urn:uuid:1").body)
    value = refused.findtext(f".//{{{SOAP12_NS}}}Subcode/{{{SOAP12_NS}}}Value")
    assert value == "soap:siram_100"  # as live: soap bound to the SOAP 1.2 envelope namespace
    assert refused.nsmap.get("soap", SOAP12_NS) == SOAP12_NS
    assert "siram" not in refused.nsmap  # only the detail's Erreur binds urn:siram
    down = parse_xml(unavailable("base indisponible").response(None).body)
    assert down.find(".//{urn:siram}Erreur").get("severite") == "fatal"


def _with_idam(idam: str) -> etree._Element:
    envelope = envelope_for(build_traits_search(ECETINSI))
    found = envelope.find(f".//{{{CTXLPS_NS}}}IDAM")
    found.text = idam
    return envelope


def test_the_accepted_idams_are_a_stub_setting(pki, sessions, tmp_path):
    from transport.stubs.app import example_idams

    session = sessions("insi-auto")
    assert EXAMPLE_LPS.homologation_id in example_idams()
    with Stubs(pki=pki, data_dir=tmp_path / "strict", services=["lps"]) as strict:
        fault = refusal(session, strict.teleservices_url, _with_idam("UNKNOWN-IDAM"))
        assert (fault.subcode, fault.service_code) == ("siram_100", "desir_550")
        answer = post(session, strict.teleservices_url, _with_idam(EXAMPLE_LPS.homologation_id))
        assert read_resultat(answer).individual == TEST_PERSONS[0]
    chosen = Stubs(
        pki=pki, data_dir=tmp_path / "chosen", services=["lps"], accepted_idams=["MY-IDAM"]
    )
    with chosen:
        assert read_resultat(post(session, chosen.teleservices_url, _with_idam("MY-IDAM")))
        fault = refusal(session, chosen.teleservices_url, _with_idam(EXAMPLE_LPS.homologation_id))
        assert fault.service_code == "desir_550"
    with Stubs(
        pki=pki, data_dir=tmp_path / "any", services=["lps"], accept_any_idam=True
    ) as lenient:
        assert read_resultat(post(session, lenient.teleservices_url, _with_idam("UNKNOWN-IDAM")))
