"""The DMP patient-services stub over real mutual TLS: every transaction, its errors, the refusals,
state across restarts, and the official example requests with a VIHF of ours."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from lxml import etree

from tests.conftest import REFERENCE
from tests.test_hl7v3 import LPS, assert_valid, demographics, registration, schemas_present
from transport import examplepki
from transport.config import example_profile
from transport.credentials import Purpose, Signer, load_pkcs12, rfc2253_dn
from transport.dmp.authorizations import (
    ACTION_LIST_AUTHORIZATIONS,
    ACTION_LIST_AUTHORIZATIONS_RESPONSE,
    ACTION_PATIENT_LIST,
    ACTION_SET_AUTHORIZATION,
    ACTION_SET_AUTHORIZATION_RESPONSE,
    AuthorizationAction,
    AuthorizationList,
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
    ACTION_ADD,
    ACTION_ADD_RESPONSE,
    ACTION_FIND_CANDIDATES,
    ACTION_QUERY,
    ACTION_QUERY_RESPONSE,
    ACTION_REVISE_RESPONSE,
    CLOSED_AT_PATIENT_REQUEST,
    OPPOSITION_BREAK_GLASS,
    Address,
    Author,
    CandidatesAnswer,
    CandidatesQuery,
    DemographicsAnswer,
    DemographicsQuery,
    DmpCode,
    Observation,
    Reason,
    Registration,
    RegistrationAnswer,
    RegistrationRequest,
    Traits,
)
from transport.errors import SoapFault, TLSError
from transport.soap.addressing import SOAP12_NS, read
from transport.soap.channel import send
from transport.soap.envelope import build_envelope, raise_for_fault
from transport.soap.wsse import WSSE_NS
from transport.stubs.app import Stubs
from transport.stubs.patients import Authorization, DmpStatus
from transport.tls import TLSSettings, create_session
from transport.vihf import (
    INS_TEST_OID,
    SAML_NS,
    AuthMode,
    Patient,
    Vihf,
    build_assertion,
    ins_key,
    read_vihf,
    sign_vihf,
)
from transport.xml import parse_xml
from transport.xmlsig import sign_enveloped

STUB_SERVICES = ["patients", "patientsPDQ", "habilitations", "patientsSpecific"]
EXAMPLES = REFERENCE / "dmp-examples"
_numbers = itertools.count(1)
ADD = SetAuthorization()
EVERYTHING = PatientListQuery()


def new_patient() -> Patient:
    """A fresh, well-formed INS under the test authority (never a real person's)."""
    body = f"2790351{next(_numbers):06d}"
    return Patient(body + ins_key(body), INS_TEST_OID)


@dataclass
class Caller:
    """One professional calling the stubs over mutual TLS, with a VIHF signed per call."""

    stubs: Stubs
    identity: Vihf
    signer: Signer
    session: requests.Session

    def assertion(self, patient: Patient | None) -> etree._Element:
        return sign_vihf(self.identity.with_patient(patient), self.signer)

    def post(self, service: str, action: str, body: bytes) -> etree._Element:
        """POST ``body``; the response envelope, faults raised."""
        headers = {"Content-Type": f'application/soap+xml; charset=utf-8; action="{action}"'}
        response = send(self.session, self.stubs.dmp_url(service), body, headers)
        return raise_for_fault(parse_xml(response.content))

    def exchange(
        self,
        service: str,
        action: str,
        payload: etree._Element,
        patient: Patient | None,
        *,
        assertion: etree._Element | None = None,
    ) -> etree._Element:
        """Send ``payload``; the response envelope, checked to relate to the request."""
        url = self.stubs.dmp_url(service)
        signed = assertion if assertion is not None else self.assertion(patient)
        envelope = build_envelope(action, url, payload, assertions=[signed])
        answer = self.post(service, action, etree.tostring(envelope, encoding="utf-8"))
        assert read(answer, "RelatesTo") == read(envelope, "MessageID")
        return answer

    def call(
        self, service: str, action: str, payload: etree._Element, patient: Patient | None
    ) -> etree._Element:
        """Send ``payload``; the response body's element, valid against the official schema
        (when the reference schemas are there: the stub is tested without them too)."""
        answer = body_of(self.exchange(service, action, payload, patient))
        if schemas_present():
            assert_valid(answer)
        return answer

    # One method per transaction, as the future client facade will have them.

    def exists(self, patient: Patient, *, about: Patient | None = None) -> DemographicsAnswer:
        query = DemographicsQuery.new(Reason.TEST_EXST, about or patient, LPS)
        return DemographicsAnswer.read(self.call("patients", ACTION_QUERY, query.build(), patient))

    def consult(self, patient: Patient) -> DemographicsAnswer:
        query = DemographicsQuery.new(Reason.CNSLT_DATA, patient, LPS)
        return DemographicsAnswer.read(self.call("patients", ACTION_QUERY, query.build(), patient))

    def register(
        self, change: Registration, *, vihf_patient: Patient | None = None
    ) -> RegistrationAnswer:
        request = RegistrationRequest.new(change, LPS)
        patient = vihf_patient or change.patient
        body = self.call("patients", request.action, request.build(), patient)
        return RegistrationAnswer.read(body)

    def create(self, patient: Patient, **changes: object) -> RegistrationAnswer:
        answer = self.register(registration(Reason.CREA_RD, patient, self.author(), **changes))
        assert answer.acknowledgement.ok, answer.acknowledgement
        return answer

    def author(self) -> Author:
        family, _, given = (self.identity.user_name or "MEDECIN0001 PAUL").partition(" ")
        return Author.from_vihf(self.identity, "CABINET", family=family, given=given)

    def authorize(self, patient: Patient, request: SetAuthorization = ADD) -> Outcome:
        body = self.call("habilitations", ACTION_SET_AUTHORIZATION, request.build(), patient)
        return SetAuthorizationAnswer.read(body).outcome

    def professionals(
        self, patient: Patient, mode: ListMode | None = ListMode.TOUTE
    ) -> AuthorizationList:
        body = self.call(
            "habilitations", ACTION_LIST_AUTHORIZATIONS, ListAuthorizations(mode).build(), patient
        )
        return AuthorizationList.read(body)

    def patient_list(self, query: PatientListQuery = EVERYTHING) -> PatientListAnswer:
        body = self.call("patientsSpecific", ACTION_PATIENT_LIST, query.build(), None)
        return PatientListAnswer.read(body)

    def find(self, traits: Traits) -> CandidatesAnswer:
        query = CandidatesQuery.new(traits, LPS)
        return CandidatesAnswer.read(
            self.call("patientsPDQ", ACTION_FIND_CANDIDATES, query.build(), None)
        )


def body_of(envelope: etree._Element) -> etree._Element:
    body = envelope.find(f"{{{SOAP12_NS}}}Body")
    return next(child for child in body if isinstance(child.tag, str))


def make_caller(
    stubs: Stubs, pki: examplepki.ExamplePKI, mode: AuthMode, **identity: str
) -> Caller:
    profile = example_profile(pki, mode)
    session = create_session(
        profile.tls_credential.load(Purpose.TLS_CLIENT), TLSSettings(ca_bundle=pki.ca_bundle)
    )
    signer = profile.signature_credential.load(Purpose.SIGNATURE).signer
    return Caller(stubs, replace(profile.identity, **identity), signer, session)


@pytest.fixture
def caller(stubs: Stubs, pki: examplepki.ExamplePKI, mode: AuthMode) -> Iterator[Caller]:
    made = make_caller(stubs, pki, mode)
    yield made
    made.session.close()


@pytest.fixture
def doctor(stubs: Stubs, pki: examplepki.ExamplePKI) -> Iterator[Caller]:
    """The example profile's doctor, through their structure."""
    made = make_caller(stubs, pki, AuthMode.INDIRECTE)
    yield made
    made.session.close()


@pytest.fixture
def colleague(stubs: Stubs, pki: examplepki.ExamplePKI) -> Iterator[Caller]:
    """Another doctor of the same structure, authorized nowhere yet."""
    made = make_caller(
        stubs, pki, AuthMode.INDIRECTE, subject_id="899700000002", user_name="MEDECIN0002 JEANNE"
    )
    yield made
    made.session.close()


# --- every transaction, in each authentication mode ----------------------------------------------


def test_life_of_a_dmp(caller: Caller, stubs: Stubs) -> None:
    patient = new_patient()
    absent = caller.exists(patient)
    assert absent.acknowledgement.ok and absent.response_code == "NF" and not absent.found

    created = caller.create(patient)
    assert created.record is not None and created.record.patient == patient
    assert created.record.active

    found = caller.exists(patient)
    assert found.found and found.record is not None and found.record.active
    assert found.authorization == "VALIDE" and found.treating_physician is False
    assert found.record.demographics is not None
    assert found.record.demographics.family == demographics().family
    assert found.record.demographics.addresses == ()  # as in the official TD0.2 answer

    read_back = caller.consult(patient)
    assert read_back.acknowledgement.ok and read_back.record is not None
    assert read_back.record.demographics == demographics()
    assert Observation(OPPOSITION_BREAK_GLASS, False) in read_back.record.observations

    moved = replace(demographics(), addresses=(Address(("2 place Neuve",), "69001", "Lyon"),))
    updated = caller.register(
        registration(
            Reason.MODIF_DATA,
            patient,
            caller.author(),
            demographics=moved,
            observations=(Observation(OPPOSITION_BREAK_GLASS, True),),
        )
    )
    assert updated.acknowledgement.ok
    read_back = caller.consult(patient)
    assert read_back.record is not None and read_back.record.demographics == moved
    assert Observation(OPPOSITION_BREAK_GLASS, True) in read_back.record.observations

    assert caller.authorize(patient, SetAuthorization(treating_physician=True)).ok
    assert caller.exists(patient).treating_physician is True

    listed = caller.professionals(patient)
    assert listed.outcome.ok
    assert [entry.professional_id for entry in listed.entries] == [caller.identity.subject_id]
    assert listed.entries[0].treating_physician and listed.entries[0].mode is ListMode.ACTIVE
    assert listed.entries[0].specialties[0][0] == "G15_10/SM26"

    closed = caller.register(registration(Reason.FERM, patient, caller.author()))
    assert closed.acknowledgement.ok and closed.record is not None and not closed.record.active
    after = caller.exists(patient)
    assert after.found and after.record is not None and not after.record.active
    kept = stubs.context.patients.record(patient)
    assert kept is not None and kept.close_reason == CLOSED_AT_PATIENT_REQUEST.code

    reopened = caller.register(registration(Reason.REAC, patient, caller.author()))
    assert reopened.acknowledgement.ok and reopened.record is not None and reopened.record.active
    assert caller.consult(patient).acknowledgement.ok


def test_responses_carry_the_answer_action_and_relate_to_the_request(doctor: Caller) -> None:
    patient = new_patient()
    create = RegistrationRequest.new(registration(Reason.CREA_RD, patient), LPS)
    close = RegistrationRequest.new(registration(Reason.FERM, patient), LPS)
    query = DemographicsQuery.new(Reason.TEST_EXST, patient, LPS)
    cases = [
        ("patients", ACTION_QUERY, query.build(), ACTION_QUERY_RESPONSE),
        ("patients", create.action, create.build(), ACTION_ADD_RESPONSE),
        ("habilitations", ACTION_SET_AUTHORIZATION, ADD.build(), ACTION_SET_AUTHORIZATION_RESPONSE),
        (
            "habilitations",
            ACTION_LIST_AUTHORIZATIONS,
            ListAuthorizations().build(),
            ACTION_LIST_AUTHORIZATIONS_RESPONSE,
        ),
        ("patients", close.action, close.build(), ACTION_REVISE_RESPONSE),
    ]
    for service, action, payload, expected in cases:
        envelope = doctor.exchange(service, action, payload, patient)  # RelatesTo checked there
        assert read(envelope, "Action") == expected


# --- HL7v3 errors --------------------------------------------------------------------------------


def test_create_an_existing_dmp_is_refused(doctor: Caller) -> None:
    patient = new_patient()
    doctor.create(patient)
    again = doctor.register(registration(Reason.CREA_RD, patient, doctor.author()))
    assert again.acknowledgement.type_code == "AE"
    assert again.acknowledgement.code == DmpCode.FOUND
    assert again.echo is not None and again.echo.patient == patient
    doctor.register(registration(Reason.FERM, patient, doctor.author()))
    closed = doctor.register(registration(Reason.CREA_RD, patient, doctor.author()))
    assert closed.acknowledgement.code == DmpCode.CLOSED


def test_reactivate_or_close_twice_is_refused(doctor: Caller) -> None:
    patient = new_patient()
    doctor.create(patient)
    open_already = doctor.register(registration(Reason.REAC, patient, doctor.author()))
    assert open_already.acknowledgement.code == DmpCode.FOUND
    assert doctor.register(registration(Reason.FERM, patient, doctor.author())).acknowledgement.ok
    closed_already = doctor.register(registration(Reason.FERM, patient, doctor.author()))
    assert closed_already.acknowledgement.code == DmpCode.CLOSED
    # Nor can a closed DMP be read or changed.
    assert doctor.consult(patient).acknowledgement.code == DmpCode.CLOSED
    modified = doctor.register(registration(Reason.MODIF_DATA, patient, doctor.author()))
    assert modified.acknowledgement.code == DmpCode.CLOSED


def test_unknown_patient(doctor: Caller) -> None:
    patient = new_patient()
    consulted = doctor.consult(patient)
    assert consulted.response_code == "AE" and consulted.acknowledgement.code == DmpCode.NOT_FOUND
    for reason in (Reason.REAC, Reason.MODIF_DATA, Reason.FERM):
        answer = doctor.register(registration(reason, patient, doctor.author()))
        assert answer.acknowledgement.code == DmpCode.NOT_FOUND, reason
    assert doctor.authorize(patient).status == DmpCode.NOT_FOUND
    assert doctor.professionals(patient).outcome.status == DmpCode.NOT_FOUND


def test_patient_of_the_body_must_be_the_vihf_patient(doctor: Caller) -> None:
    patient, other = new_patient(), new_patient()
    doctor.create(patient)
    answer = doctor.exists(patient, about=other)
    assert answer.response_code == "AE"
    assert answer.acknowledgement.code == DmpCode.PATIENT_MISMATCH
    refused = doctor.register(registration(Reason.CREA_RD, other), vihf_patient=patient)
    assert refused.acknowledgement.code == DmpCode.PATIENT_MISMATCH
    assert not doctor.exists(other).found


# --- authorizations ------------------------------------------------------------------------------


def test_a_colleague_needs_an_authorization(doctor: Caller, colleague: Caller) -> None:
    patient = new_patient()
    doctor.create(patient)
    assert colleague.exists(patient).authorization == Authorization.ABSENT.value
    assert colleague.consult(patient).acknowledgement.code == DmpCode.ACCESS_DENIED
    assert colleague.professionals(patient).outcome.status == DmpCode.ACCESS_DENIED
    closing = colleague.register(registration(Reason.FERM, patient, colleague.author()))
    assert closing.acknowledgement.code == DmpCode.ACCESS_DENIED

    assert colleague.authorize(patient).ok
    assert colleague.exists(patient).authorization == "VALIDE"
    assert colleague.consult(patient).acknowledgement.ok
    again = colleague.authorize(patient)
    assert again.ok and again.context  # nothing changed, and the answer says so
    listed = doctor.professionals(patient, ListMode.ACTIVE)
    assert {entry.professional_id for entry in listed.entries} == {"899700000001", "899700000002"}
    names = {entry.professional_id: (entry.last_name, entry.first_name) for entry in listed.entries}
    assert names["899700000002"] == ("MEDECIN0002", "JEANNE")

    assert colleague.authorize(patient, SetAuthorization(AuthorizationAction.SUPPRESSION)).ok
    assert colleague.exists(patient).authorization == Authorization.ABSENT.value
    assert colleague.consult(patient).acknowledgement.code == DmpCode.ACCESS_DENIED


def test_a_blocked_professional_stays_out(doctor: Caller, colleague: Caller, stubs: Stubs) -> None:
    patient = new_patient()
    doctor.create(patient)
    # Only the patient blocks a professional (from their own portal, not an LPS transaction).
    with stubs.context.database.transaction() as connection:
        stubs.context.patients.set_authorization(
            connection, patient, colleague.identity.subject_id, Authorization.FORBIDDEN
        )
    assert colleague.exists(patient).authorization == "INTERDIT"
    assert colleague.authorize(patient).status == DmpCode.ACCESS_DENIED
    assert colleague.consult(patient).acknowledgement.code == DmpCode.ACCESS_DENIED
    blocked = doctor.professionals(patient, ListMode.INTERDITE)
    assert [(e.professional_id, e.mode) for e in blocked.entries] == [
        ("899700000002", ListMode.INTERDITE)
    ]
    active = doctor.professionals(patient, ListMode.ACTIVE)
    assert [e.professional_id for e in active.entries] == ["899700000001"]
    assert len(doctor.professionals(patient, None).entries) == 2


def test_treating_physician_is_one_at_a_time(doctor: Caller, colleague: Caller) -> None:
    patient = new_patient()
    doctor.create(patient)
    assert doctor.authorize(patient, SetAuthorization(treating_physician=True)).ok
    # Becoming the treating doctor also authorizes the colleague.
    assert colleague.authorize(patient, SetAuthorization(treating_physician=True)).ok
    assert colleague.exists(patient).authorization == "VALIDE"
    assert colleague.exists(patient).treating_physician is True
    assert doctor.exists(patient).treating_physician is False
    stop = SetAuthorization(AuthorizationAction.SUPPRESSION, treating_physician=True)
    assert colleague.authorize(patient, stop).ok
    assert colleague.exists(patient).treating_physician is False
    assert colleague.exists(patient).authorization == "VALIDE"


# --- TD0.4 and TD0.5 -----------------------------------------------------------------------------


def test_patient_list_with_its_filters(
    mode: AuthMode, caller: Caller, colleague: Caller, stubs: Stubs
) -> None:
    mine, closed = new_patient(), new_patient()
    caller.create(mine)
    caller.create(closed)
    caller.register(registration(Reason.FERM, closed, caller.author()))
    hour = timedelta(hours=1)
    before = datetime.now(UTC) - hour

    def listed(query: PatientListQuery = EVERYTHING, who: Caller = caller) -> set[Patient | None]:
        answer = who.patient_list(query)
        assert answer.outcome.ok
        return {entry.patient for entry in answer.patients} & {mine, closed}

    assert listed() == {mine}
    assert listed(who=colleague) == set()
    assert listed(PatientListQuery(before, DateType.LASTAUTORIZATION)) == {mine}
    assert listed(PatientListQuery(before + 2 * hour, DateType.LASTAUTORIZATION)) == set()
    assert listed(PatientListQuery(before, DateType.LASTDOC)) == set()
    with stubs.context.database.transaction() as connection:
        stubs.context.patients.record_document(connection, mine)
    assert listed(PatientListQuery(before, DateType.LASTDOC)) == {mine}
    entry = next(e for e in caller.patient_list().patients if e.patient == mine)
    assert (entry.last_name, entry.first_name) == (demographics().family, "ALICE MARIE")
    assert entry.birth_date == demographics().birth_date and entry.last_add is not None


def test_find_candidates_by_traits(doctor: Caller) -> None:
    number = next(_numbers)
    family, given = f"PDQ{number}", f"PRENOM{number}"
    patient, other = new_patient(), new_patient()
    doctor.create(patient, demographics=demographics(family, given=given))
    doctor.create(other, demographics=demographics(f"{family}BIS", given=f"{given}BIS"))

    def found(traits: Traits) -> list[Patient | None]:
        answer = doctor.find(traits)
        assert answer.acknowledgement.ok and answer.traits == traits
        assert answer.response_code == ("OK" if answer.candidates else "NF")
        return [candidate.patient for candidate in answer.candidates]

    assert found(Traits(family=family.lower())) == [patient]
    assert found(Traits(family=f"{family}-NAISSANCE")) == [patient]
    assert found(Traits(given=given, sex="F", birth_date="19790328")) == [patient]
    assert found(Traits(family=family, sex="M")) == []
    doctor.register(registration(Reason.FERM, patient, doctor.author()))
    assert found(Traits(family=family)) == []


# --- refusals ------------------------------------------------------------------------------------


def _fault(call) -> SoapFault:
    with pytest.raises(SoapFault) as caught:
        call()
    return caught.value


def test_no_client_certificate(stubs: Stubs, pki: examplepki.ExamplePKI, doctor: Caller) -> None:
    with create_session(None, TLSSettings(ca_bundle=pki.ca_bundle)) as session:
        stranger = replace(doctor, session=session)
        with pytest.raises(TLSError):
            stranger.exists(new_patient())
    assert doctor.exists(new_patient()).acknowledgement.ok


def test_unsigned_vihf(doctor: Caller) -> None:
    patient = new_patient()
    unsigned = build_assertion(doctor.identity.with_patient(patient), "CN=personne")
    query = DemographicsQuery.new(Reason.TEST_EXST, patient, LPS).build()
    fault = _fault(
        lambda: doctor.exchange("patients", ACTION_QUERY, query, patient, assertion=unsigned)
    )
    assert (fault.code, fault.subcode) == ("Sender", "InvalidSecurity")


def test_tampered_vihf(doctor: Caller) -> None:
    patient = new_patient()
    signed = doctor.assertion(patient)
    value = signed.find(
        f".//{{{SAML_NS}}}Attribute[@Name='Identifiant_Structure']/{{{SAML_NS}}}AttributeValue"
    )
    value.text = "499900000009009"
    query = DemographicsQuery.new(Reason.TEST_EXST, patient, LPS).build()
    fault = _fault(
        lambda: doctor.exchange("patients", ACTION_QUERY, query, patient, assertion=signed)
    )
    assert (fault.code, fault.subcode) == ("Sender", "FailedCheck")


@pytest.mark.parametrize("mode", list(AuthMode), ids=str)
def test_vihf_signed_with_an_authentication_certificate(
    caller: Caller, pki: examplepki.ExamplePKI, mode: AuthMode
) -> None:
    auth_only = load_pkcs12(
        pki.p12("cps-auth" if mode is AuthMode.DIRECTE else "org-auth"), pki.password
    )
    # The authentication key signs on purpose: the stub must refuse it.
    wrong = replace(caller, signer=auth_only.signer)
    fault = _fault(lambda: wrong.exists(new_patient()))
    assert (fault.code, fault.subcode) == ("Sender", "DMPInvalidCertificate")


def _signed_without(caller: Caller, patient: Patient, attribute: str) -> etree._Element:
    """A VIHF without ``attribute``, removed before signing so the signature is good."""
    issuer = rfc2253_dn(caller.signer.certificate.subject)
    unsigned = build_assertion(caller.identity.with_patient(patient), issuer)
    found = unsigned.find(f".//{{{SAML_NS}}}Attribute[@Name='{attribute}']")
    found.getparent().remove(found)
    return sign_enveloped(unsigned, caller.signer, after=f"{{{SAML_NS}}}Issuer")


@pytest.mark.parametrize(
    "attribute", ["Secteur_Activite", "urn:oasis:names:tc:xspa:1.0:subject:subject-id"]
)
def test_vihf_missing_a_required_attribute(doctor: Caller, attribute: str) -> None:
    patient = new_patient()
    assertion = _signed_without(doctor, patient, attribute)
    query = DemographicsQuery.new(Reason.TEST_EXST, patient, LPS).build()
    fault = _fault(
        lambda: doctor.exchange("patients", ACTION_QUERY, query, patient, assertion=assertion)
    )
    assert (fault.code, fault.subcode) == ("Sender", "DMPVIHFInvalide")


def test_vihf_for_another_resource_than_the_dmp(doctor: Caller) -> None:
    elsewhere = replace(doctor, identity=replace(doctor.identity, resource_urn="urn:autre"))
    fault = _fault(lambda: elsewhere.exists(new_patient()))
    assert (fault.code, fault.subcode) == ("Sender", "DMPVIHFInvalide")


def test_patient_transactions_need_the_vihf_resource_id(doctor: Caller) -> None:
    patient = new_patient()
    doctor.create(patient)
    query = DemographicsQuery.new(Reason.TEST_EXST, patient, LPS).build()
    fault = _fault(lambda: doctor.exchange("patients", ACTION_QUERY, query, None))
    assert fault.subcode == "DMPVIHFInvalide" and "resource-id" in fault.reason
    fault = _fault(
        lambda: doctor.exchange(
            "habilitations", ACTION_SET_AUTHORIZATION, SetAuthorization().build(), None
        )
    )
    assert fault.subcode == "DMPVIHFInvalide"
    # TD0.4 concerns no patient.
    assert doctor.patient_list().outcome.ok


def test_unknown_action(doctor: Caller) -> None:
    patient = new_patient()
    payload = ListAuthorizations().build()
    for service, action in (
        ("patients", ACTION_LIST_AUTHORIZATIONS),
        ("habilitations", "urn:si-dmp-habilitations:HabilitationsEndPoint:deleteEverything"),
    ):
        fault = _fault(lambda s=service, a=action: doctor.exchange(s, a, payload, patient))
        assert (fault.code, fault.subcode) == ("Sender", "ActionNotSupported")


def test_malformed_requests_get_a_fault_and_the_server_keeps_serving(doctor: Caller) -> None:
    patient = new_patient()
    for body in (b"<soap:Envelope", b"\xff\xfe\x00", b"", b"<?xml version='1.0'?><a/>"):
        fault = _fault(lambda b=body: doctor.post("patients", ACTION_QUERY, b))
        assert fault.code in ("Sender", "VersionMismatch")
    for payload in (
        etree.Element("{urn:hl7-org:v3}PRPA_IN201307UV02"),  # no content at all
        SetAuthorization().build(),  # another service's message
        RegistrationRequest.new(registration(Reason.FERM, patient), LPS).build(),  # wrong action
    ):
        fault = _fault(lambda p=payload: doctor.exchange("patients", ACTION_ADD, p, patient))
        assert (fault.code, fault.subcode) == ("Sender", "MalformedMessage")
    assert doctor.exists(patient).acknowledgement.ok


def test_no_patient_identifier_or_name_in_the_logs(
    doctor: Caller, colleague: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    patient = new_patient()
    with caplog.at_level(logging.DEBUG, logger="transport"):
        doctor.create(patient)
        doctor.consult(patient)
        colleague.consult(patient)
        doctor.find(Traits(family=demographics().family))
        doctor.exists(patient, about=new_patient())
        with pytest.raises(SoapFault):
            doctor.post("patients", ACTION_QUERY, b"<broken")
    # Ours only: signxml logs whole canonicalised assertions at DEBUG (see the report).
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("transport"))
    assert "PatientsService" in text  # the stub did log
    person = demographics()
    for secret in (patient.ins, person.family, *person.given, person.birth_family or "", "MEDECIN"):
        assert secret not in text


# --- state survives a restart --------------------------------------------------------------------


def test_state_survives_a_restart(pki: examplepki.ExamplePKI, tmp_path: Path) -> None:
    patient = new_patient()
    with Stubs(pki=pki, data_dir=tmp_path, services=STUB_SERVICES) as first:
        doctor = make_caller(first, pki, AuthMode.INDIRECTE)
        doctor.create(patient)
        doctor.register(registration(Reason.FERM, patient, doctor.author()))
        doctor.session.close()
    with Stubs(pki=pki, data_dir=tmp_path, services=STUB_SERVICES) as second:
        doctor = make_caller(second, pki, AuthMode.INDIRECTE)
        answer = doctor.exists(patient)
        assert answer.found and answer.authorization == "VALIDE"
        assert answer.record is not None and not answer.record.active
        assert doctor.register(
            registration(Reason.REAC, patient, doctor.author())
        ).acknowledgement.ok
        doctor.session.close()
        assert second.context.patients.status(patient) is DmpStatus.OPEN


# --- the official example requests, with a VIHF of ours ------------------------------------------


@pytest.mark.parametrize(
    ("example", "service"),
    [
        ("TD0.2_-_Test_d_existence_request.xml", "patients"),
        ("TD0.3_-_Mise_jour_de_l_autorisation_request.xml", "habilitations"),
        ("TD1.3a_-_Consultation_request.xml", "patients"),
    ],
)
def test_official_example_requests_are_accepted(doctor: Caller, example: str, service: str) -> None:
    path = EXAMPLES / example
    if not path.is_file():
        pytest.skip(f"official example {example} not available at {EXAMPLES} (../shared/reference)")
    raw = path.read_bytes()
    envelope = parse_xml(raw)  # from bytes: the parser honours the file's own encoding
    theirs = envelope.find(f"{{{SOAP12_NS}}}Header/{{{WSSE_NS}}}Security/{{{SAML_NS}}}Assertion")
    patient = read_vihf(theirs).patient
    assert patient is not None
    if not doctor.exists(patient).found:
        doctor.create(patient)
    # Spliced as bytes: appended into the parsed example, the assertion's Role elements would be
    # rewritten to the envelope's own ``urn:`` prefix, and its signature would break.
    encoding = envelope.getroottree().docinfo.encoding or "UTF-8"
    ours = etree.tostring(doctor.assertion(patient), encoding=encoding, xml_declaration=False)
    span = re.search(rb"<saml2:Assertion\b.*?</saml2:Assertion>", raw, re.DOTALL)
    assert span is not None
    body = raw[: span.start()] + ours + raw[span.end() :]
    action = read(envelope, "Action")
    answer = doctor.post(service, action, body)
    assert read(answer, "RelatesTo") == read(envelope, "MessageID")
    payload = body_of(answer)
    if schemas_present():
        assert_valid(payload)
    if service == "habilitations":
        assert SetAuthorizationAnswer.read(payload).outcome.ok
    else:
        result = DemographicsAnswer.read(payload)
        assert result.acknowledgement.ok and result.found
        assert result.record is not None and result.record.patient == patient
