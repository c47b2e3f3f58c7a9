"""The DMP-style patient services: ``patients`` (HL7v3), ``patientsPDQ``, ``habilitations`` and
``patientsSpecific``, over the shared :class:`transport.stubs.patients.PatientRegistry`.

Every request first passes :func:`transport.stubs.soap.check_envelope` (SOAP 1.2, WS-Addressing,
signed and trusted VIHF from a signature certificate), then the service checks what its
transactions need: the ``wsa:Action`` (unknown: fault ``wsa:ActionNotSupported``),
``Ressource_URN`` ``urn:dmp``, and the VIHF ``resource-id`` for the transactions about one patient
(missing: fault ``DMPVIHFInvalide``). A body that cannot be read is a ``soap:MalformedMessage``
fault. The caller is the VIHF ``NameID``.

Business errors come back the way each service reports them: an HL7v3 ``AE`` acknowledgement with
an :class:`transport.dmp.hl7v3.DmpCode` detail, or a DMP ``output/status``. A request whose
body names another patient than the VIHF's ``resource-id`` gets ``AE`` ``DMPPatientMismatch``: the
VIHF is what the access decision is made on, so the body must agree with it.

Access rules: anyone may test a DMP's existence (TD0.2) and search (TD0.5); the creator of a DMP
(TD1.1) and whoever reactivates it (TD1.2) become authorized; reading, updating, closing
(TD1.3a/b, TD1.4) and listing its professionals (TD1.6) need an authorization ``VALIDE`` on an open
DMP; a professional the patient blocked (``INTERDIT``) can neither authorize themselves (TD0.3)
nor reactivate. The reads (TD1.3a, TD1.6) honour the VIHF's emergency purposes of use
(break-glass, emergency centre) as :meth:`transport.stubs.patients.PatientRegistry.read_access`
says. Nothing about a patient (INS, names) is logged.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from lxml import etree

from transport.dmp.authorizations import (
    ACTION_LIST_AUTHORIZATIONS,
    ACTION_LIST_AUTHORIZATIONS_RESPONSE,
    ACTION_PATIENT_LIST,
    ACTION_PATIENT_LIST_RESPONSE,
    ACTION_SET_AUTHORIZATION,
    ACTION_SET_AUTHORIZATION_RESPONSE,
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
    ACTION_ADD,
    ACTION_FIND_CANDIDATES,
    ACTION_FIND_CANDIDATES_RESPONSE,
    ACTION_QUERY,
    ACTION_QUERY_RESPONSE,
    ACTION_REVISE,
    CONSENT_TO_OPEN,
    CONSENT_TO_REACTIVATE,
    CandidatesAnswer,
    CandidatesQuery,
    Demographics,
    DemographicsAnswer,
    DemographicsQuery,
    DmpCode,
    Identifier,
    Observation,
    PatientRecord,
    Reason,
    Registration,
    RegistrationAnswer,
    RegistrationRequest,
    Traits,
    accepted,
    rejected,
)
from transport.errors import ValidationError
from transport.stubs.app import StubContext
from transport.stubs.patients import Authorization, DmpRecord, DmpStatus, parse_time, speciality
from transport.stubs.server import StubRequest, StubResponse
from transport.stubs.soap import Checked, Refused, check_envelope, response_envelope
from transport.vihf import Code, Patient

log = logging.getLogger("transport.stubs.dmp")

Operation = Callable[[Checked, etree._Element], tuple[str, etree._Element]]
"""Runs one transaction on a checked request and its body element; returns the answer's
``wsa:Action`` and body element."""

_CONSENTS = frozenset({CONSENT_TO_OPEN.code, CONSENT_TO_REACTIVATE.code})

_TEXTS = {
    DmpCode.FOUND: "un DMP ouvert existe déjà pour ce patient",
    DmpCode.CLOSED: "le DMP de ce patient est fermé",
    DmpCode.NOT_FOUND: "aucun DMP pour ce patient",
    DmpCode.ACCESS_DENIED: "le professionnel n'est pas autorisé sur ce DMP",
    DmpCode.PATIENT_MISMATCH: "le patient du message n'est pas celui du VIHF (resource-id)",
}


class _DmpService:
    """The pipeline every service here shares: checks, dispatch on ``wsa:Action``, faults."""

    def __init__(self, context: StubContext) -> None:
        self.context = context
        self.registry = context.patients

    def operations(self) -> Mapping[str, Operation]:
        """The service's transactions by request ``wsa:Action``."""
        raise NotImplementedError

    def __call__(self, request: StubRequest) -> StubResponse:
        name = type(self).__name__
        try:
            checked = check_envelope(request, self.context.verify)
            operation = self.operations().get(checked.action)
            if operation is None:
                raise Refused(
                    "Sender",
                    "wsa:ActionNotSupported",
                    f"action non prise en charge par ce service : {checked.action}",
                )
            if checked.vihf.vihf.resource_urn != "urn:dmp":
                raise Refused("Sender", "soap:DMPVIHFInvalide", "VIHF invalide : Ressource_URN")
            action, payload = operation(checked, checked.payload)
        except Refused as refusal:
            log.info("%s refused: %s", name, refusal.subcode or refusal.code)
            return refusal.response()
        except ValidationError as error:
            log.info("%s: malformed body (%s)", name, error.field)
            refusal = Refused("Sender", "soap:MalformedMessage", f"message illisible : {error}")
            return refusal.response()
        log.info("%s: %s answered", name, action.rpartition(":")[2])
        return StubResponse(200, response_envelope(action, checked.message_id, payload))


def _vihf_patient(checked: Checked) -> Patient:
    """The VIHF's ``resource-id``, which transactions about a patient require."""
    patient = checked.vihf.vihf.patient
    if patient is None:
        raise Refused(
            "Sender",
            "soap:DMPVIHFInvalide",
            "VIHF invalide : l'attribut resource-id (INS du patient) est requis",
        )
    return patient


def _caller(checked: Checked) -> str:
    return checked.vihf.vihf.subject_id


def _stored(demographics: Demographics, observations: Iterable[Observation]) -> dict[str, Any]:
    """The JSON the registry keeps: the demographics and the standing oppositions."""
    kept = [o for o in observations if o.code.code not in _CONSENTS]
    return {
        **demographics.to_dict(),
        "observations": [
            {
                "code": o.code.code,
                "system": o.code.code_system,
                "label": o.code.display_name,
                "value": o.value,
            }
            for o in kept
        ],
    }


def _loaded(record: DmpRecord) -> tuple[Demographics, tuple[Observation, ...]]:
    data = record.demographics
    observations = tuple(
        Observation(Code(o["code"], o["system"], o["label"]), bool(o["value"]))
        for o in data.get("observations", ())
    )
    return Demographics.from_dict(data), observations


def _merged(old: Iterable[Observation], new: Iterable[Observation]) -> tuple[Observation, ...]:
    by_code = {o.code.code: o for o in old}
    by_code.update({o.code.code: o for o in new})
    return tuple(by_code.values())


def _record(record: DmpRecord, *, addresses: bool = True) -> PatientRecord:
    demographics, observations = _loaded(record)
    if not addresses:
        demographics = replace(demographics, addresses=())
    return PatientRecord.of(
        record.patient,
        active=record.status is DmpStatus.OPEN,
        demographics=demographics,
        observations=observations,
    )


def _access_error(record: DmpRecord | None, authorization: Authorization) -> DmpCode | None:
    """Why an authorized-only transaction is refused, or None when it may go on."""
    if record is None:
        return DmpCode.NOT_FOUND
    if record.status is DmpStatus.CLOSED:
        return DmpCode.CLOSED
    if authorization is not Authorization.VALID:
        return DmpCode.ACCESS_DENIED
    return None


class PatientsService(_DmpService):
    """``patients``: TD0.2 and TD1.3a (PRPA_IN201307UV02), TD1.1 (PRPA_IN201311UV02), TD1.2,
    TD1.3b and TD1.4 (PRPA_IN201314UV02)."""

    def operations(self) -> Mapping[str, Operation]:
        return {ACTION_QUERY: self.query, ACTION_ADD: self.register, ACTION_REVISE: self.register}

    def query(self, checked: Checked, payload: etree._Element) -> tuple[str, etree._Element]:
        """TD0.2 existence test (with the caller's authorization) or TD1.3a read."""
        query = DemographicsQuery.read(payload)
        patient = _vihf_patient(checked)
        reply = query.transmission.reply()

        def answer(**fields: Any) -> tuple[str, etree._Element]:
            return ACTION_QUERY_RESPONSE, DemographicsAnswer(
                reply, reason=query.reason, query_id=query.query_id, **fields
            ).build()

        def refuse(code: DmpCode) -> tuple[str, etree._Element]:
            ack = rejected(query.transmission, code.value, _TEXTS[code])
            return answer(acknowledgement=ack, response_code="AE")

        if query.patient != patient:
            return refuse(DmpCode.PATIENT_MISMATCH)
        if query.reason is not Reason.TEST_EXST:
            self.registry.read_access(patient, checked.vihf.vihf)
        record = self.registry.record(patient)
        held = self.registry.authorization_record(patient, _caller(checked))
        authorization = held.status if held is not None else Authorization.ABSENT
        if query.reason is Reason.TEST_EXST:
            if record is None:
                return answer(acknowledgement=accepted(query.transmission), response_code="NF")
            return answer(
                acknowledgement=accepted(query.transmission),
                response_code="OK",
                record=_record(record, addresses=False),
                authorization=authorization.value,
                treating_physician=held is not None and held.treating_physician,
            )
        error = _access_error(record, authorization)
        if error is not None:
            return refuse(error)
        assert record is not None  # _access_error said so
        return answer(
            acknowledgement=accepted(query.transmission), response_code="OK", record=_record(record)
        )

    def register(self, checked: Checked, payload: etree._Element) -> tuple[str, etree._Element]:
        """TD1.1 create, TD1.2 reactivate, TD1.3b update, TD1.4 close."""
        request = RegistrationRequest.read(payload)
        registration = request.registration
        if registration.action != checked.action:
            raise ValidationError("Body", "the HL7v3 interaction does not match wsa:Action")
        patient = _vihf_patient(checked)
        if registration.patient != patient:
            code: DmpCode | None = DmpCode.PATIENT_MISMATCH
        else:
            with self.context.database.transaction() as connection:
                code = self._apply(connection, checked, registration)
        reply = request.transmission.reply()
        if code is not None:
            ack = rejected(request.transmission, code.value, _TEXTS[code])
            answer = RegistrationAnswer(reply, ack, registration.reason, echo=registration)
        else:
            record = self.registry.record(patient)
            assert record is not None  # just written in the transaction above
            answer = RegistrationAnswer(
                reply, accepted(request.transmission), registration.reason, _record(record)
            )
        return answer.action, answer.build()

    def _apply(
        self, connection: sqlite3.Connection, checked: Checked, registration: Registration
    ) -> DmpCode | None:
        """Make the change inside ``connection``'s transaction, or say why it is refused."""
        patient, caller = registration.patient, _caller(checked)
        record = self.registry.record(patient)
        authorization = self.registry.authorization(patient, caller)
        reason = registration.reason
        if reason is Reason.CREA_RD:
            if record is not None:
                return DmpCode.FOUND if record.status is DmpStatus.OPEN else DmpCode.CLOSED
            demographics = registration.demographics
            if not demographics.given or not demographics.sex or not demographics.birth_date:
                raise ValidationError("patientPerson", "a creation needs given names, sex, birth")
            stored = _stored(demographics, registration.observations)
            self.registry.create(connection, patient, stored)
            self._authorize(connection, checked, patient, registration)
            return None
        if reason is Reason.REAC:
            if record is None or record.status is DmpStatus.OPEN:
                return DmpCode.NOT_FOUND if record is None else DmpCode.FOUND
            if authorization is Authorization.FORBIDDEN:
                return DmpCode.ACCESS_DENIED
            self.registry.reactivate(connection, patient)
            self._authorize(connection, checked, patient, registration)
            return None
        error = _access_error(record, authorization)
        if error is not None:
            return error
        assert record is not None  # _access_error said so
        if reason is Reason.MODIF_DATA:
            _, observations = _loaded(record)
            merged = _merged(observations, registration.observations)
            self.registry.update(connection, patient, _stored(registration.demographics, merged))
        else:
            close_reason = registration.close_reason
            self.registry.close(connection, patient, close_reason.code if close_reason else None)
        return None

    def _authorize(
        self,
        connection: sqlite3.Connection,
        checked: Checked,
        patient: Patient,
        registration: Registration,
    ) -> None:
        author = registration.author
        name = f"{author.family} {author.given}".strip() or checked.vihf.vihf.user_name
        self.registry.set_authorization(
            connection,
            patient,
            _caller(checked),
            Authorization.VALID,
            name or None,
            speciality=speciality(checked.vihf.vihf),
        )


class PdqService(_DmpService):
    """``patientsPDQ``: TD0.5, the open DMPs whose patient matches some traits."""

    def operations(self) -> Mapping[str, Operation]:
        return {ACTION_FIND_CANDIDATES: self.find}

    def find(self, checked: Checked, payload: etree._Element) -> tuple[str, etree._Element]:
        """Search the open DMPs on the query's traits."""
        query = CandidatesQuery.read(payload)
        found = tuple(
            _record(record)
            for record in self.registry.records(DmpStatus.OPEN)
            if _matches(_loaded(record)[0], query.traits)
        )
        answer = CandidatesAnswer(
            query.transmission.reply(),
            accepted(query.transmission),
            query.query_id,
            query.traits,
            "OK" if found else "NF",
            found,
        )
        return ACTION_FIND_CANDIDATES_RESPONSE, answer.build()


def _matches(person: Demographics, traits: Traits) -> bool:
    """Exact, case-insensitive matching; ``family`` matches the used or the birth name."""

    def same(left: str | None, right: str | None) -> bool:
        return (left or "").casefold() == (right or "").casefold()

    names = (person.family, person.birth_family)
    return (
        (not traits.family or any(same(traits.family, name) for name in names if name))
        and (not traits.given or any(same(traits.given, given) for given in person.given))
        and (not traits.sex or same(traits.sex, person.sex))
        and (not traits.birth_date or traits.birth_date == person.birth_date)
    )


class HabilitationsService(_DmpService):
    """``habilitations``: TD0.3 setAuthorization and TD1.6 listAuthorizationByPatient, on the
    VIHF patient's DMP."""

    def operations(self) -> Mapping[str, Operation]:
        return {
            ACTION_SET_AUTHORIZATION: self.set_authorization,
            ACTION_LIST_AUTHORIZATIONS: self.list_authorizations,
        }

    def set_authorization(
        self, checked: Checked, payload: etree._Element
    ) -> tuple[str, etree._Element]:
        """Add or remove the caller's authorization, or their treating-doctor role."""
        request = SetAuthorization.read(payload)
        patient = _vihf_patient(checked)
        with self.context.database.transaction() as connection:
            outcome = self._set(connection, checked, patient, request)
        return ACTION_SET_AUTHORIZATION_RESPONSE, SetAuthorizationAnswer(outcome).build()

    def _set(
        self,
        connection: sqlite3.Connection,
        checked: Checked,
        patient: Patient,
        request: SetAuthorization,
    ) -> Outcome:
        caller = _caller(checked)
        record = self.registry.record(patient)
        held = self.registry.authorization_record(patient, caller)
        current = held.status if held is not None else Authorization.ABSENT
        if record is None or record.status is DmpStatus.CLOSED:
            code = DmpCode.NOT_FOUND if record is None else DmpCode.CLOSED
            return Outcome(code.value, _TEXTS[code])
        if current is Authorization.FORBIDDEN:
            return Outcome(DmpCode.ACCESS_DENIED.value, "le patient a bloqué ce professionnel")
        adding = request.action is AuthorizationAction.AJOUT
        if request.treating_physician:
            if adding and current is Authorization.ABSENT:
                self._grant(connection, checked, patient)
            elif not adding and current is Authorization.ABSENT:
                return Outcome(DmpCode.OK.value, "aucune autorisation : rien n'a changé")
            self.registry.set_treating_physician(connection, patient, caller, adding)
            return Outcome(DmpCode.OK.value)
        if adding == (current is Authorization.VALID):
            return Outcome(DmpCode.OK.value, "autorisation déjà dans cet état : rien n'a changé")
        if adding:
            self._grant(connection, checked, patient)
        else:
            self.registry.set_authorization(connection, patient, caller, Authorization.ABSENT)
        return Outcome(DmpCode.OK.value)

    def _grant(self, connection: sqlite3.Connection, checked: Checked, patient: Patient) -> None:
        vihf = checked.vihf.vihf
        self.registry.set_authorization(
            connection,
            patient,
            vihf.subject_id,
            Authorization.VALID,
            vihf.user_name,
            speciality=speciality(vihf),
        )

    def list_authorizations(
        self, checked: Checked, payload: etree._Element
    ) -> tuple[str, etree._Element]:
        """The professionals authorized on, or blocked from, the DMP (the caller must be one of
        the authorized)."""
        request = ListAuthorizations.read(payload)
        patient = _vihf_patient(checked)
        record = self.registry.record(patient)
        error = _access_error(record, self.registry.read_access(patient, checked.vihf.vihf))
        if error is not None:
            answer = AuthorizationList(Outcome(error.value, _TEXTS[error]))
            return ACTION_LIST_AUTHORIZATIONS_RESPONSE, answer.build()
        wanted = {
            ListMode.ACTIVE: {Authorization.VALID},
            ListMode.INTERDITE: {Authorization.FORBIDDEN},
        }.get(request.mode or ListMode.TOUTE, {Authorization.VALID, Authorization.FORBIDDEN})
        entries = []
        for held in self.registry.authorizations_on(patient):
            if held.status not in wanted:
                continue
            family, _, given = (held.professional_name or "").partition(" ")
            entries.append(
                AuthorizationEntry(
                    held.professional,
                    family,
                    given,
                    (held.speciality,) if held.speciality else (),
                    parse_time(held.created_at),
                    parse_time(held.updated_at),
                    ListMode.ACTIVE if held.status is Authorization.VALID else ListMode.INTERDITE,
                    held.treating_physician,
                )
            )
        answer = AuthorizationList(Outcome(DmpCode.OK.value), tuple(entries))
        return ACTION_LIST_AUTHORIZATIONS_RESPONSE, answer.build()


class PatientsSpecificService(_DmpService):
    """``patientsSpecific``: TD0.4, the open DMPs the caller is authorized on.

    ``startDate`` keeps those whose ``dateType`` date is at or after it: ``LASTAUTORIZATION``
    (the default) the date the caller was authorized, ``LASTDOC`` the last document added.
    """

    def operations(self) -> Mapping[str, Operation]:
        return {ACTION_PATIENT_LIST: self.patient_list}

    def patient_list(self, checked: Checked, payload: etree._Element) -> tuple[str, etree._Element]:
        """List the caller's authorized DMPs."""
        query = PatientListQuery.read(payload)
        patients = []
        for held in self.registry.authorizations_of(_caller(checked)):
            record = self.registry.record(held.patient)
            if held.status is not Authorization.VALID or record is None:
                continue
            if record.status is not DmpStatus.OPEN:
                continue
            by_document = query.date_type is DateType.LASTDOC
            since = record.last_document_at if by_document else held.created_at
            if not _since(since, query.start_date):
                continue
            demographics, _ = _loaded(record)
            patients.append(
                AuthorizedPatient(
                    (Identifier(record.patient.oid, record.patient.ins),),
                    demographics.family,
                    " ".join(demographics.given),
                    demographics.birth_date,
                    held.treating_physician,
                    last_update=parse_time(record.updated_at),
                    last_add=parse_time(record.last_document_at)
                    if record.last_document_at
                    else None,
                )
            )
        answer = PatientListAnswer(Outcome(DmpCode.OK.value), tuple(patients))
        return ACTION_PATIENT_LIST_RESPONSE, answer.build()


def _since(stored: str | None, start: datetime | None) -> bool:
    """Whether a stored time is at or after ``start`` (always, without a start)."""
    if start is None:
        return True
    return stored is not None and parse_time(stored) >= start
