"""The patient-service messages (HL7v3, habilitations, patientsSpecific): valid against the official
schemas, read back to what was built, shaped like the official examples, readable from them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from lxml import etree

from tests.conftest import REFERENCE
from tests.test_vihf import PATIENT
from transport.config import EXAMPLE_LPS, example_profile
from transport.dmp.authorizations import (
    AuthorizationAction,
    AuthorizationEntry,
    AuthorizationList,
    AuthorizedPatient,
    DateType,
    ListAuthorizations,
    ListMode,
    Outcome,
    PatientListAnswer,
    PatientListQuery,
    SetAuthorization,
    SetAuthorizationAnswer,
)
from transport.dmp.hl7v3 import (
    CLOSED_AT_PATIENT_REQUEST,
    CONSENT_TO_OPEN,
    CONSENT_TO_REACTIVATE,
    DMP_DEVICE,
    GDP_NS,
    OPPOSITION_BREAK_GLASS,
    OPPOSITION_EMERGENCY,
    RELATIONSHIP_SYSTEM,
    Address,
    Author,
    CandidatesAnswer,
    CandidatesQuery,
    Demographics,
    DemographicsAnswer,
    DemographicsQuery,
    Device,
    DmpCode,
    Identifier,
    LegalRepresentative,
    Observation,
    PatientRecord,
    Reason,
    Registration,
    RegistrationAnswer,
    RegistrationRequest,
    Telecom,
    Traits,
    Transmission,
    accepted,
    rejected,
)
from transport.errors import ValidationError
from transport.soap.addressing import SOAP12_NS
from transport.vihf import (
    HL7_NS,
    INS_TEST_OID,
    PROFESSION_SYSTEM,
    SPECIALTY_SYSTEM,
    XSI_NS,
    AuthMode,
    Code,
    Patient,
    Vihf,
)
from transport.xml import parse_xml

SCHEMAS = REFERENCE / "dmp-wsdl" / "schema" / "HL7V3"
WSDLS = REFERENCE / "dmp-wsdl" / "wsdl"
EXAMPLES = REFERENCE / "dmp-examples"

LPS = Device("2.25.329800735698586629295641978511506172918", "cisis-transport")
"""Our software as an HL7v3 device (a UUID-derived OID)."""
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


# --- sample data, shared with the stub tests ------------------------------------------------------


def demographics(family: str = "TESTPATIENT", *, given: str = "ALICE") -> Demographics:
    """A complete set of administrative data (fictitious)."""
    return Demographics(
        family=family,
        given=(given, "MARIE"),
        sex="F",
        birth_date="19790328",
        birth_family=f"{family}-NAISSANCE",
        prefix="Mme",
        telecoms=(Telecom("tel:0102030405", "MC"), Telecom("mailto:alice@example.invalid")),
        addresses=(Address(("1 rue de l'Exemple",), "75005", "Paris", "France"),),
    )


def oppositions(value: bool = False) -> tuple[Observation, ...]:
    return (Observation(OPPOSITION_BREAK_GLASS, value), Observation(OPPOSITION_EMERGENCY, value))


def indirect_vihf() -> Vihf:
    """A general practitioner working through their structure (indirect mode)."""
    roles = (
        Code("10", PROFESSION_SYSTEM, "Médecin"),
        Code("SM26", SPECIALTY_SYSTEM, "Qualifié en Médecine Générale (SM)"),
    )
    return Vihf(
        "899700000001",
        AuthMode.INDIRECTE,
        "499900000001001",
        "SA07",
        roles,
        EXAMPLE_LPS,
        user_name="MEDECIN0001 PAUL",
    )


def author(vihf: Vihf | None = None) -> Author:
    return Author.from_vihf(vihf or indirect_vihf(), "CABINET MEDICAL EXEMPLE")


def registration(
    reason: Reason, patient: Patient = PATIENT, who: Author | None = None, **changes: Any
) -> Registration:
    """A registration as an LPS sends it for ``reason``."""
    person = demographics()
    fields: dict[str, Any] = {
        Reason.CREA_RD: {
            "demographics": person,
            "observations": (Observation(CONSENT_TO_OPEN, True), *oppositions()),
        },
        Reason.REAC: {
            "demographics": person.name_only,
            "observations": (Observation(CONSENT_TO_REACTIVATE, True),),
        },
        Reason.MODIF_DATA: {"demographics": person, "observations": oppositions()},
        Reason.FERM: {"demographics": person.name_only, "close_reason": CLOSED_AT_PATIENT_REQUEST},
    }[reason]
    fields.update(changes)
    return Registration(reason, patient, who or author(), **fields)


def record(patient: Patient = PATIENT, **changes: Any) -> PatientRecord:
    fields: dict[str, Any] = {"demographics": demographics(), "observations": oppositions()}
    fields.update(changes)
    return PatientRecord.of(patient, **fields)


# --- schemas ------------------------------------------------------------------------------------


@cache
def _hl7_schema(edition: str, interaction: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / edition / "multicacheschemas" / interaction)))


def hl7_schema(edition: str, interaction: str) -> etree.XMLSchema:
    """The official schema of one interaction (NE2009 for GDP, NE2008 for PDQ)."""
    path = SCHEMAS / edition / "multicacheschemas" / f"{interaction}.xsd"
    if not path.is_file():
        pytest.skip(f"official HL7v3 schemas not available at {path} (../shared/reference)")
    return _hl7_schema(edition, f"{interaction}.xsd")


@cache
def _wsdl_schema(name: str) -> etree.XMLSchema:
    types = etree.parse(str(WSDLS / name)).find(".//{http://www.w3.org/2001/XMLSchema}schema")
    return etree.XMLSchema(etree.fromstring(etree.tostring(types)))


def wsdl_schema(name: str) -> etree.XMLSchema:
    """The schema embedded in an official WSDL (Habilitations, PatientsSpecific)."""
    if not (WSDLS / name).is_file():
        pytest.skip(f"official WSDL not available at {WSDLS / name} (../shared/reference)")
    return _wsdl_schema(name)


def schema_for(element: etree._Element) -> tuple[etree.XMLSchema, etree._Element]:
    """The official schema a built body element must satisfy, and the element it applies to
    (a GestionDossierPatientPartage response wrapper holds the HL7v3 message)."""
    name = etree.QName(element)
    if name.namespace == GDP_NS:
        assert len(element) == 1, "the response wrapper holds exactly one message"
        element = element[0]
        name = etree.QName(element)
    if name.namespace == "urn:si-dmp-habilitations":
        return wsdl_schema("Habilitations.wsdl"), element
    if name.namespace == "urn:si-dmp-patients":
        return wsdl_schema("PatientsSpecific.wsdl"), element
    edition = "NE2008" if name.localname in ("PRPA_IN201305UV02", "PRPA_IN201306UV02") else "NE2009"
    return hl7_schema(edition, name.localname), element


def schemas_present() -> bool:
    """Whether the official schemas are there (without them, schema checks are skipped)."""
    return SCHEMAS.is_dir() and WSDLS.is_dir()


def assert_valid(element: etree._Element) -> None:
    schema, message = schema_for(element)
    reparsed = etree.fromstring(etree.tostring(message))
    assert schema.validate(reparsed), schema.error_log


# --- every message: valid and read back -----------------------------------------------------------


@dataclass(frozen=True)
class Case:
    build: Callable[[], Any]
    reader: Callable[[etree._Element], Any]


def _query(reason: Reason) -> DemographicsQuery:
    return DemographicsQuery.new(reason, PATIENT, LPS, now=NOW)


def _answer(reason: Reason, **fields: Any) -> DemographicsAnswer:
    query = _query(reason)
    base: dict[str, Any] = {
        "acknowledgement": accepted(query.transmission),
        "response_code": "OK",
        "query_id": query.query_id,
    }
    base.update(fields)
    return DemographicsAnswer(query.transmission.reply(now=NOW), reason=reason, **base)


def _registration_answer(reason: Reason, ok: bool) -> RegistrationAnswer:
    request = RegistrationRequest.new(registration(reason), LPS, now=NOW)
    if ok:
        done = record(active=reason is not Reason.FERM, demographics=demographics().name_only)
        return RegistrationAnswer(
            request.transmission.reply(now=NOW),
            accepted(request.transmission),
            reason,
            PatientRecord(done.ids, done.active, done.demographics),
        )
    return RegistrationAnswer(
        request.transmission.reply(now=NOW),
        rejected(request.transmission, DmpCode.FOUND, "un DMP existe"),
        reason,
        echo=request.registration,
    )


def _candidates(found: bool) -> CandidatesAnswer:
    query = CandidatesQuery.new(Traits("TESTPATIENT", "ALICE", "F", "19790328"), LPS, now=NOW)
    return CandidatesAnswer(
        query.transmission.reply(now=NOW),
        accepted(query.transmission),
        query.query_id,
        query.traits,
        "OK" if found else "NF",
        (record(),) if found else (),
    )


_ENTRY = AuthorizationEntry(
    "899700000001",
    "MEDECIN0001",
    "PAUL",
    (("G15_10/SM26", "Médecin - Qualifié en Médecine Générale (SM)"),),
    NOW,
    NOW,
    ListMode.ACTIVE,
    True,
)
_LISTED = AuthorizedPatient(
    (Identifier(PATIENT.oid, PATIENT.ins),), "TESTPATIENT", "ALICE", "19790328", True, False,
    None, NOW, NOW,
)  # fmt: skip

CASES = {
    "TD0.2 query": Case(lambda: _query(Reason.TEST_EXST), DemographicsQuery.read),
    "TD1.3a query": Case(lambda: _query(Reason.CNSLT_DATA), DemographicsQuery.read),
    "TD0.2 found": Case(
        lambda: _answer(
            Reason.TEST_EXST,
            record=record(demographics=demographics()),
            authorization="VALIDE",
            treating_physician=True,
        ),
        DemographicsAnswer.read,
    ),
    "TD0.2 not found": Case(
        lambda: _answer(Reason.TEST_EXST, response_code="NF"), DemographicsAnswer.read
    ),
    "TD1.3a found": Case(
        lambda: _answer(Reason.CNSLT_DATA, record=record()), DemographicsAnswer.read
    ),
    "TD1.3a refused": Case(
        lambda: _answer(
            Reason.CNSLT_DATA,
            acknowledgement=rejected(
                _query(Reason.CNSLT_DATA).transmission, DmpCode.ACCESS_DENIED, "non"
            ),
            response_code="AE",
        ),
        DemographicsAnswer.read,
    ),
    **{
        f"{reason} request": Case(
            lambda reason=reason: RegistrationRequest.new(registration(reason), LPS, now=NOW),
            RegistrationRequest.read,
        )
        for reason in (Reason.CREA_RD, Reason.REAC, Reason.MODIF_DATA, Reason.FERM)
    },
    **{
        f"{reason} {'accepted' if ok else 'rejected'}": Case(
            lambda reason=reason, ok=ok: _registration_answer(reason, ok), RegistrationAnswer.read
        )
        for reason in (Reason.CREA_RD, Reason.REAC, Reason.MODIF_DATA, Reason.FERM)
        for ok in (True, False)
    },
    "TD0.5 query": Case(
        lambda: CandidatesQuery.new(Traits(family="TESTPATIENT"), LPS, now=NOW),
        CandidatesQuery.read,
    ),
    "TD0.5 found": Case(lambda: _candidates(True), CandidatesAnswer.read),
    "TD0.5 none": Case(lambda: _candidates(False), CandidatesAnswer.read),
    "TD0.3 add": Case(SetAuthorization, SetAuthorization.read),
    "TD0.3 remove treating": Case(
        lambda: SetAuthorization(AuthorizationAction.SUPPRESSION, True), SetAuthorization.read
    ),
    "TD0.3 answer": Case(
        lambda: SetAuthorizationAnswer(Outcome(DmpCode.OK, "rien n'a changé")),
        SetAuthorizationAnswer.read,
    ),
    "TD1.6 query": Case(lambda: ListAuthorizations(ListMode.INTERDITE), ListAuthorizations.read),
    "TD1.6 answer": Case(
        lambda: AuthorizationList(Outcome(DmpCode.OK), (_ENTRY, _ENTRY)), AuthorizationList.read
    ),
    "TD1.6 refused": Case(
        lambda: AuthorizationList(Outcome(DmpCode.ACCESS_DENIED, "non")), AuthorizationList.read
    ),
    "TD0.4 query": Case(
        lambda: PatientListQuery(NOW, DateType.LASTAUTORIZATION), PatientListQuery.read
    ),
    "TD0.4 answer": Case(
        lambda: PatientListAnswer(Outcome(DmpCode.OK), (_LISTED,)), PatientListAnswer.read
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_message_is_valid_and_reads_back(name: str) -> None:
    case = CASES[name]
    message = case.build()
    element = message.build()
    assert_valid(element)
    # Read from bytes, as a peer would.
    assert case.reader(parse_xml(etree.tostring(element))) == message


def test_schema_validation_can_fail() -> None:
    element = _query(Reason.TEST_EXST).build()
    element.remove(element.find(f"{{{HL7_NS}}}interactionId"))
    schema, message = schema_for(element)
    assert not schema.validate(message)


def test_registration_answers_use_the_gdp_wrappers() -> None:
    created = _registration_answer(Reason.CREA_RD, True).build()
    refused = _registration_answer(Reason.FERM, False).build()
    assert created.tag == f"{{{GDP_NS}}}PRPA_IN201311UV02_Response"
    assert [etree.QName(child).localname for child in created] == ["PRPA_IN201312UV02"]
    assert refused.tag == f"{{{GDP_NS}}}PRPA_IN201314UV02_Response"
    assert [etree.QName(child).localname for child in refused] == ["PRPA_IN201316UV02"]
    answer = RegistrationAnswer.read(refused)
    assert not answer.acknowledgement.ok
    assert answer.acknowledgement.code == DmpCode.FOUND
    assert answer.echo is not None and answer.echo.close_reason == CLOSED_AT_PATIENT_REQUEST


def test_pdq_acknowledgement_type_is_an_element_as_ne2008_wants() -> None:
    element = _candidates(True).build()
    acknowledgement = element.find(f"{{{HL7_NS}}}acknowledgement")
    assert acknowledgement.get("typeCode") is None
    assert acknowledgement.find(f"{{{HL7_NS}}}typeCode").get("code") == "AA"


# --- shape against the official examples ----------------------------------------------------------


def example_body(name: str) -> etree._Element:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"official example {name} not available at {EXAMPLES} (../shared/reference)")
    envelope = parse_xml(path.read_bytes())
    body = envelope.find(f"{{{SOAP12_NS}}}Body")
    return next(child for child in body if isinstance(child.tag, str))


REPRESENTATIVE = LegalRepresentative(
    "FTH",
    "REPRESENTANT",
    ("JEAN",),
    "M",
    (Address(("3 rue de l'Exemple",), "59000", "LILLE", additional_locator="Résidence"),),
    (Telecom("tel:0900000000", "HP"), Telecom("mailto:rep@example.invalid")),
)
"""A legal representative shaped like the official TD1.3a answer's (fictitious)."""


def shape(element: etree._Element, prefix: str = "") -> set[str]:
    """Every element path below ``element`` with its attribute names: the structure, values
    aside. ``xsi:nil`` elements carry nothing and are left out."""
    paths = set()
    for child in element:
        if not isinstance(child.tag, str) or child.get(f"{{{XSI_NS}}}nil") == "true":
            continue
        attributes = ",".join(sorted(etree.QName(name).localname for name in child.attrib))
        path = f"{prefix}/{etree.QName(child).localname}[{attributes}]"
        paths |= {path} | shape(child, path)
    return paths


def _two_ids_record(**changes: Any) -> PatientRecord:
    """A record as the DMP shows it: its internal INS-C identifier beside the INS."""
    ids = (Identifier("1.2.250.1.213.1.4.2", "0123456789"), Identifier(PATIENT.oid, PATIENT.ins))
    internet = Observation(Code("COMPTE_INTERNET_OUVERT", "1.2.250.1.213.4.1.2.9"), True)
    ens = Observation(Code("RATTACHEMENT_ENS", "1.2.250.1.213.4.1.2.3", "ENS"), False)
    fields: dict[str, Any] = {"observations": (internet, ens)}
    fields.update(changes)
    return PatientRecord(ids, **fields)


NOT_MODELLED: tuple[str, ...] = ()
"""Parts of the official examples this project does not model (none left: death, birth place
and legal representative are read and written)."""


@pytest.mark.parametrize(
    ("example", "build"),
    [
        ("TD0.2_-_Test_d_existence_request.xml", lambda: _query(Reason.TEST_EXST)),
        ("TD1.3a_-_Consultation_request.xml", lambda: _query(Reason.CNSLT_DATA)),
        (
            "TD0.2_-_Test_d_existence_response.xml",
            lambda: _answer(
                Reason.TEST_EXST,
                record=_two_ids_record(demographics=Demographics(
                    "TESTPATIENT", ("ALICE",), "F", "19790328", prefix="Mme",
                    telecoms=(Telecom("mailto:a@example.invalid"), Telecom("tel:0102", "MC")),
                )),
                authorization="VALIDE",
                treating_physician=False,
            ),
        ),
        (
            "TD1.3a_-_Consultation_response.xml",
            lambda: _answer(
                Reason.CNSLT_DATA,
                record=_two_ids_record(
                    demographics=Demographics(
                        "TESTPATIENT", ("ALICE",), "F", "19790328", prefix="Mme",
                        telecoms=(Telecom("tel:0102", "MC"), Telecom("mailto:a@example.invalid")),
                        addresses=(Address(("1 rue de l'Exemple",), "75005", "Paris"),),
                        deceased=False,
                        birth_place=Address(),
                        legal_representatives=(REPRESENTATIVE,),
                    ),
                    observations=(
                        Observation(OPPOSITION_BREAK_GLASS, False),
                        Observation(OPPOSITION_EMERGENCY, False),
                    ),
                ),
            ),
        ),
        ("TD0.3_-_Mise_jour_de_l_autorisation_request.xml", SetAuthorization),
        (
            "TD0.3_-_Mise_jour_de_l_autorisation_response.xml",
            lambda: SetAuthorizationAnswer(Outcome(DmpCode.OK, "déjà autorisé")),
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)  # fmt: skip
def test_structure_matches_the_official_example(example: str, build: Callable[[], Any]) -> None:
    official = example_body(example)
    ours = build().build()
    assert etree.QName(ours).localname == etree.QName(official).localname
    assert etree.QName(ours).namespace == etree.QName(official).namespace
    ours_paths, official_paths = shape(ours), shape(official)
    assert ours_paths <= official_paths, sorted(ours_paths - official_paths)
    missing = {
        path
        for path in official_paths - ours_paths
        if not any(f"/{n}[" in path for n in NOT_MODELLED)
    }
    assert not missing, sorted(missing)


# --- reading the official examples --------------------------------------------------------------


def _hl7(element: etree._Element, path: str) -> etree._Element:
    found = element.find("/".join(f"{{{HL7_NS}}}{part}" for part in path.split("/")))
    assert found is not None, path
    return found


@pytest.mark.parametrize(
    ("example", "reason"),
    [
        ("TD0.2_-_Test_d_existence_request.xml", Reason.TEST_EXST),
        ("TD1.3a_-_Consultation_request.xml", Reason.CNSLT_DATA),
    ],
)
def test_reads_the_official_queries(example: str, reason: Reason) -> None:
    official = example_body(example)
    query = DemographicsQuery.read(official)
    value = _hl7(
        official, "controlActProcess/queryByParameter/parameterList/patientIdentifier/value"
    )
    assert query.reason is reason
    assert query.patient == Patient(value.get("extension"), value.get("root"))
    assert query.transmission.message_id.extension == _hl7(official, "id").get("extension")


def test_reads_the_official_existence_answer() -> None:
    official = example_body("TD0.2_-_Test_d_existence_response.xml")
    answer = DemographicsAnswer.read(official)
    lines = official.findall(f"{{{HL7_NS}}}attentionLine")
    assert answer.found and answer.acknowledgement.ok
    assert answer.authorization == lines[0].find(f"{{{HL7_NS}}}value").get("code")
    assert answer.treating_physician is (lines[1].find(f"{{{HL7_NS}}}value").get("value") == "true")
    patient = "controlActProcess/subject/registrationEvent/subject1/patient"
    ids = official.findall(f"{_path(patient)}/{{{HL7_NS}}}id")
    assert answer.record is not None
    assert answer.record.ids == tuple(Identifier(i.get("root"), i.get("extension")) for i in ids)
    assert answer.record.patient is not None
    family = _hl7(official, f"{patient}/patientPerson/name/family").text
    assert answer.record.demographics is not None and answer.record.demographics.family == family


def test_reads_the_official_consultation_answer() -> None:
    official = example_body("TD1.3a_-_Consultation_response.xml")
    answer = DemographicsAnswer.read(official)
    person = "controlActProcess/subject/registrationEvent/subject1/patient/patientPerson"
    assert answer.record is not None and answer.record.demographics is not None
    address = answer.record.demographics.addresses[0]
    assert address.city == _hl7(official, f"{person}/addr/city").text
    read = answer.record.demographics
    assert read.deceased is (_hl7(official, f"{person}/deceasedInd").get("value") == "true")
    assert read.birth_place == Address()  # the official answer's birthPlace has an empty addr
    relationship = f"{person}/personalRelationship"
    holder = f"{relationship}/relationshipHolder1/name"
    (representative,) = read.legal_representatives
    assert representative.relationship == _hl7(official, f"{relationship}/code").get("code")
    assert representative.code_system == RELATIONSHIP_SYSTEM
    assert representative.family == _hl7(official, f"{holder}/family").text
    assert representative.given == (_hl7(official, f"{holder}/given").text,)
    assert representative.prefix == _hl7(official, f"{holder}/prefix").text
    (where,) = representative.addresses
    assert where.street_lines == (_hl7(official, f"{relationship}/addr/streetAddressLine").text,)
    assert where.additional_locator == _hl7(official, f"{relationship}/addr/additionalLocator").text
    assert (where.postal_code, where.city) == (
        _hl7(official, f"{relationship}/addr/postalCode").text,
        _hl7(official, f"{relationship}/addr/city").text,
    )
    telecoms = official.findall(f"{_path(relationship)}/{{{HL7_NS}}}telecom")
    assert representative.telecoms == tuple(
        Telecom(element.get("value"), element.get("use")) for element in telecoms
    )
    codes = [o.code.code for o in answer.record.observations]
    assert codes == [
        element.get("code")
        for element in official.iter(f"{{{HL7_NS}}}code")
        if element.getparent().tag == f"{{{HL7_NS}}}administrativeObservation"
    ]


def test_reads_the_official_authorization_messages() -> None:
    request = SetAuthorization.read(example_body("TD0.3_-_Mise_jour_de_l_autorisation_request.xml"))
    official = example_body("TD0.3_-_Mise_jour_de_l_autorisation_response.xml")
    answer = SetAuthorizationAnswer.read(official)
    assert request == SetAuthorization(AuthorizationAction.AJOUT)
    namespace = etree.QName(official).namespace
    assert answer.outcome.ok
    assert answer.outcome.context == official.findtext(f".//{{{namespace}}}context")


def _path(path: str) -> str:
    return "/".join(f"{{{HL7_NS}}}{part}" for part in path.split("/"))


# --- readers refuse what they cannot use ----------------------------------------------------------


def test_reader_names_the_missing_element_not_the_patient() -> None:
    element = _query(Reason.TEST_EXST).build()
    parameters = element.find(_path("controlActProcess/queryByParameter/parameterList"))
    parameters.remove(parameters[0])
    with pytest.raises(ValidationError) as caught:
        DemographicsQuery.read(element)
    assert "patientIdentifier" in caught.value.field
    assert PATIENT.ins not in str(caught.value)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda e: e.find(_path("controlActProcess/reasonCode")).set("code", "FERM"), "reasonCode"),
        (lambda e: e.find(_path("creationTime")).set("value", "hier"), "creationTime"),
        (
            lambda e: e.find(_path(
                "controlActProcess/queryByParameter/parameterList/patientIdentifier/value"
            )).set("root", "1.2.3"),
            "patientIdentifier/value",
        ),
    ],
    ids=["reason", "time", "ins-authority"],
)  # fmt: skip
def test_reader_refuses_malformed_values(
    edit: Callable[[etree._Element], None], field: str
) -> None:
    element = _query(Reason.TEST_EXST).build()
    edit(element)
    with pytest.raises(ValidationError) as caught:
        DemographicsQuery.read(element)
    assert caught.value.field == field


def test_readers_refuse_another_message() -> None:
    with pytest.raises(ValidationError):
        DemographicsQuery.read(SetAuthorization().build())
    with pytest.raises(ValidationError):
        RegistrationAnswer.read(_query(Reason.TEST_EXST).build())
    with pytest.raises(ValidationError):
        ListAuthorizations.read(SetAuthorization().build())


def test_authorization_readers_refuse_unknown_codes() -> None:
    element = ListAuthorizations(ListMode.ACTIVE).build()
    element[0].text = "PARFOIS"
    with pytest.raises(ValidationError, match="ACTIVE, INTERDITE, TOUTE"):
        ListAuthorizations.read(element)
    element = SetAuthorization(treating_physician=True).build()
    element[1].text = "PHARMACIEN_REFERENT"
    with pytest.raises(ValidationError):
        SetAuthorization.read(element)


# --- models -------------------------------------------------------------------------------------


def test_author_from_the_vihf() -> None:
    made = author()
    assert (made.family, made.given) == ("MEDECIN0001", "PAUL")
    assert made.professional_id == "899700000001"
    assert made.structure_id == "499900000001001"
    assert made.role is not None
    assert made.role.code == "G15_10/SM26"
    assert made.role.display_name.startswith("Médecin - ")


def test_author_of_a_card_user_takes_the_given_name(pki) -> None:
    vihf = example_profile(pki, AuthMode.DIRECTE).identity
    assert vihf.user_name is None
    made = Author.from_vihf(vihf, "CABINET", family="MEDECIN0001", given="PAUL")
    assert (made.family, made.given) == ("MEDECIN0001", "PAUL")


def test_demographics_survive_json() -> None:
    person = demographics()
    assert Demographics.from_dict(json.loads(json.dumps(person.to_dict()))) == person


def test_queries_refuse_a_registration_reason() -> None:
    with pytest.raises(ValidationError):
        DemographicsQuery.new(Reason.FERM, PATIENT, LPS)
    with pytest.raises(ValidationError):
        Registration(Reason.TEST_EXST, PATIENT, author(), demographics())


def test_each_query_fills_its_own_values_into_the_shared_template() -> None:
    other = Patient("180036912345660", INS_TEST_OID)
    first = DemographicsQuery.new(Reason.TEST_EXST, PATIENT, LPS, now=NOW)
    once = etree.tostring(first.build())
    second = DemographicsQuery.new(Reason.CNSLT_DATA, other, LPS)
    assert DemographicsQuery.read(second.build()) == second
    assert etree.tostring(first.build()) == once
    assert DemographicsQuery.read(etree.fromstring(once)) == first
    bare = DemographicsQuery(
        Transmission(Identifier("1.2.3"), NOW, LPS, DMP_DEVICE), Reason.TEST_EXST, PATIENT,
        Identifier("1.2.4"),
    )  # fmt: skip
    built = bare.build()
    assert built.find(f"{{{HL7_NS}}}id").attrib == {"root": "1.2.3"}
    assert DemographicsQuery.read(built) == bare
