"""The DMP-specific messages of ``habilitations`` and ``patientsSpecific``, both ways.

``habilitations`` (namespace ``urn:si-dmp-habilitations``): :class:`SetAuthorization` (TD0.3, the
caller adds or removes their own authorization on the patient's DMP) answered by
:class:`SetAuthorizationAnswer`; :class:`ListAuthorizations` (TD1.6, the professionals authorized
on or blocked from the DMP) answered by :class:`AuthorizationList`. ``patientsSpecific``
(namespace ``urn:si-dmp-patients``): :class:`PatientListQuery` (TD0.4, the DMPs the caller is
authorized on) answered by :class:`PatientListAnswer`. The patient, when there is one, is the VIHF's
``resource-id``: these bodies never name it.

Every answer carries an :class:`Outcome` (``output/status``: :class:`DmpCode` ``DMPOk`` or an
error code, and ``output/context``, free text). ``build()`` makes the body element, ``read()``
reads one and raises :class:`transport.errors.ValidationError` naming what is malformed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from lxml import etree

from transport.dmp.hl7v3 import PROFESSIONAL_ID_ROOT, DmpCode, Identifier
from transport.errors import ValidationError
from transport.vihf import INS_OIDS, Patient
from transport.xml import Namespace, format_ts, read_ts

HABILITATIONS_NS = "urn:si-dmp-habilitations"
PATIENTS_NS = "urn:si-dmp-patients"
_HAB = Namespace(HABILITATIONS_NS)
_PAT = Namespace(PATIENTS_NS)

ACTION_SET_AUTHORIZATION = f"{HABILITATIONS_NS}:HabilitationsEndPoint:setAuthorization"
ACTION_SET_AUTHORIZATION_RESPONSE = f"{ACTION_SET_AUTHORIZATION}Response"
ACTION_LIST_AUTHORIZATIONS = f"{HABILITATIONS_NS}:HabilitationsEndPoint:listAuthorizationByPatient"
ACTION_LIST_AUTHORIZATIONS_RESPONSE = f"{ACTION_LIST_AUTHORIZATIONS}Response"
ACTION_PATIENT_LIST = f"{PATIENTS_NS}:PatientSpecificEndPoint:patientList"
ACTION_PATIENT_LIST_RESPONSE = f"{ACTION_PATIENT_LIST}Response"

TREATING_PHYSICIAN_ROLE = "MEDECIN_TRAITANT"
"""The one ``roleType`` of the schema: the caller is (or stops being) the DMP treating doctor."""


class AuthorizationAction(enum.StrEnum):
    """TD0.3 ``action``: add or remove the caller's authorization."""

    AJOUT = "AJOUT"
    SUPPRESSION = "SUPPRESSION"


class ListMode(enum.StrEnum):
    """TD1.6 ``mode``: authorized professionals, blocked ones, or both; also each entry's state."""

    ACTIVE = "ACTIVE"
    INTERDITE = "INTERDITE"
    TOUTE = "TOUTE"


class DateType(enum.StrEnum):
    """TD0.4 ``dateType``: what ``startDate`` bounds, the last authorization or the last
    document added."""

    LASTAUTORIZATION = "LASTAUTORIZATION"
    LASTDOC = "LASTDOC"


@dataclass(frozen=True)
class Outcome:
    """``output/status`` and ``output/context`` of an answer."""

    status: str
    context: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the status is ``DMPOk``."""
        return self.status == DmpCode.OK

    def write(self, output: etree._Element, namespace: Namespace) -> None:
        """Append ``status`` and ``context`` (when set) to ``output``."""
        namespace.sub(output, "status", self.status)
        if self.context is not None:
            namespace.sub(output, "context", self.context)

    @classmethod
    def read(cls, output: etree._Element, namespace: Namespace) -> Outcome:
        """Read them from an ``output`` element."""
        status = namespace.text(output, "status") or ""
        if not status:
            raise ValidationError("output/status", "missing status")
        context = namespace.find(output, "context")
        return cls(status, (context.text or "") if context is not None else None)


# --- TD0.3 setAuthorization ----------------------------------------------------------------------


@dataclass(frozen=True)
class SetAuthorization:
    """TD0.3: the caller adds (``AJOUT``) or removes (``SUPPRESSION``) their authorization on the
    VIHF patient's DMP; with ``treating_physician``, the ``MEDECIN_TRAITANT`` role instead."""

    action: AuthorizationAction = AuthorizationAction.AJOUT
    treating_physician: bool = False

    def build(self) -> etree._Element:
        """The ``setAuthorization`` element."""
        root = _HAB.root("setAuthorization")
        _HAB.sub(root, "action", self.action.value)
        if self.treating_physician:
            _HAB.sub(root, "role", TREATING_PHYSICIAN_ROLE)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> SetAuthorization:
        """Read a ``setAuthorization`` element."""
        _HAB.expect(root, "setAuthorization", "Body")
        role = _HAB.text(root, "role") or ""
        if role not in ("", TREATING_PHYSICIAN_ROLE):
            raise ValidationError("role", f"only {TREATING_PHYSICIAN_ROLE} is defined")
        return cls(
            _enum(AuthorizationAction, _HAB.text(root, "action") or "AJOUT", "action"),
            bool(role),
        )


@dataclass(frozen=True)
class SetAuthorizationAnswer:
    """The answer to :class:`SetAuthorization`."""

    outcome: Outcome

    def build(self) -> etree._Element:
        """The ``setAuthorizationResponse`` element."""
        root = _HAB.root("setAuthorizationResponse")
        self.outcome.write(_HAB.sub(root, "output"), _HAB)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> SetAuthorizationAnswer:
        """Read a ``setAuthorizationResponse`` element."""
        _HAB.expect(root, "setAuthorizationResponse", "Body")
        return cls(Outcome.read(_output(root, _HAB), _HAB))


# --- TD1.6 listAuthorizationByPatient ------------------------------------------------------------


@dataclass(frozen=True)
class ListAuthorizations:
    """TD1.6: who is authorized on (``ACTIVE``) or blocked from (``INTERDITE``) the VIHF
    patient's DMP; ``TOUTE`` or None: both."""

    mode: ListMode | None = ListMode.TOUTE

    def build(self) -> etree._Element:
        """The ``listAuthorizationByPatient`` element."""
        root = _HAB.root("listAuthorizationByPatient")
        if self.mode is not None:
            _HAB.sub(root, "mode", self.mode.value)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> ListAuthorizations:
        """Read a ``listAuthorizationByPatient`` element."""
        _HAB.expect(root, "listAuthorizationByPatient", "Body")
        mode = _HAB.text(root, "mode") or ""
        return cls(_enum(ListMode, mode, "mode") if mode else None)


@dataclass(frozen=True)
class AuthorizationEntry:
    """One professional in a TD1.6 list.

    ``professional_id``: IdNat under ``id_type`` (an OID); ``specialties``: ``(code, label)``
    pairs such as ``("G15_10/SM26", "Médecin - …")``; ``mode``: ``ACTIVE`` or ``INTERDITE``;
    ``started``/``last_action``: UTC, to the second.
    """

    professional_id: str
    last_name: str = ""
    first_name: str = ""
    specialties: tuple[tuple[str, str], ...] = ()
    started: datetime | None = None
    last_action: datetime | None = None
    mode: ListMode = ListMode.ACTIVE
    treating_physician: bool = False
    id_type: str = PROFESSIONAL_ID_ROOT

    def __post_init__(self) -> None:
        object.__setattr__(self, "specialties", tuple(tuple(pair) for pair in self.specialties))

    def write(self, parent: etree._Element) -> None:
        """Append a ``listOfAuthorizationByPatient`` (in the schema's element order)."""
        ns = _HAB
        entry = ns.sub(parent, "listOfAuthorizationByPatient")
        ns.sub(entry, "nationalId", self.professional_id)
        ns.sub(entry, "nationalIdType", self.id_type)
        ns.sub(entry, "firstName", self.first_name)
        ns.sub(entry, "lastName", self.last_name)
        for code, _ in self.specialties:
            ns.sub(entry, "codeSpeciality", code)
        for _, label in self.specialties:
            ns.sub(entry, "libSpeciality", label)
        if self.started is not None:
            ns.sub(entry, "startOfAuthorization", format_ts(self.started))
        if self.last_action is not None:
            ns.sub(entry, "lastActionDate", format_ts(self.last_action))
        ns.sub(entry, "mode", self.mode.value)
        if self.treating_physician:
            ns.sub(entry, "specificRight", TREATING_PHYSICIAN_ROLE)

    @classmethod
    def read(cls, entry: etree._Element) -> AuthorizationEntry:
        """Read a ``listOfAuthorizationByPatient`` element."""
        ns = _HAB
        professional_id = ns.text(entry, "nationalId") or ""
        if not professional_id:
            raise ValidationError("listOfAuthorizationByPatient/nationalId", "missing")
        codes = [element.text or "" for element in ns.findall(entry, "codeSpeciality")]
        labels = [element.text or "" for element in ns.findall(entry, "libSpeciality")]
        rights = {element.text for element in ns.findall(entry, "specificRight")}
        return cls(
            professional_id,
            ns.text(entry, "lastName") or "",
            ns.text(entry, "firstName") or "",
            tuple(zip(codes, labels + [""] * (len(codes) - len(labels)), strict=False)),
            _time(entry, ns, "startOfAuthorization"),
            _time(entry, ns, "lastActionDate"),
            _enum(ListMode, ns.text(entry, "mode") or "ACTIVE", "mode"),
            TREATING_PHYSICIAN_ROLE in rights,
            ns.text(entry, "nationalIdType") or PROFESSIONAL_ID_ROOT,
        )


@dataclass(frozen=True)
class AuthorizationList:
    """The answer to :class:`ListAuthorizations`."""

    outcome: Outcome
    entries: tuple[AuthorizationEntry, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))

    def build(self) -> etree._Element:
        """The ``listAuthorizationByPatientResponse`` element."""
        root = _HAB.root("listAuthorizationByPatientResponse")
        output = _HAB.sub(root, "output")
        for entry in self.entries:
            entry.write(output)
        self.outcome.write(output, _HAB)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> AuthorizationList:
        """Read a ``listAuthorizationByPatientResponse`` element."""
        _HAB.expect(root, "listAuthorizationByPatientResponse", "Body")
        output = _output(root, _HAB)
        return cls(
            Outcome.read(output, _HAB),
            tuple(
                AuthorizationEntry.read(entry)
                for entry in _HAB.findall(output, "listOfAuthorizationByPatient")
            ),
        )


# --- TD0.4 patientList ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientListQuery:
    """TD0.4: the DMPs the caller is authorized on, optionally only those whose ``date_type``
    date (last authorization, last document) is at or after ``start_date``."""

    start_date: datetime | None = None
    date_type: DateType | None = None

    def build(self) -> etree._Element:
        """The ``patientList`` element."""
        root = _PAT.root("patientList")
        if self.start_date is not None:
            _PAT.sub(root, "startDate", format_ts(self.start_date))
        if self.date_type is not None:
            _PAT.sub(root, "dateType", self.date_type.value)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> PatientListQuery:
        """Read a ``patientList`` element."""
        _PAT.expect(root, "patientList", "Body")
        date_type = _PAT.text(root, "dateType") or ""
        return cls(
            _time(root, _PAT, "startDate"),
            _enum(DateType, date_type, "dateType") if date_type else None,
        )


@dataclass(frozen=True)
class AuthorizedPatient:
    """One DMP of a TD0.4 list.

    ``identifiers``: ``nationalId`` (extension) under ``nationalIdType`` (root);
    ``birth_date``: ``YYYYMMDD``; ``treating_physician``: the caller is its DMP treating doctor
    (``MT``); ``message``: unread messages; dates: UTC, to the second.
    """

    identifiers: tuple[Identifier, ...]
    last_name: str = ""
    first_name: str = ""
    birth_date: str | None = None
    treating_physician: bool = False
    message: bool = False
    last_access: datetime | None = None
    last_update: datetime | None = None
    last_add: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "identifiers", tuple(self.identifiers))

    @property
    def patient(self) -> Patient | None:
        """The INS among the identifiers, or None."""
        return next(
            (Patient(i.extension, i.root) for i in self.identifiers if i.root in INS_OIDS),
            None,
        )

    def write(self, parent: etree._Element) -> None:
        """Append a ``patientlistData`` (in the schema's element order)."""
        ns = _PAT
        entry = ns.sub(parent, "patientlistData")
        for identifier in self.identifiers:
            holder = ns.sub(entry, "patientIdentifier")
            ns.sub(holder, "nationalId", identifier.extension or "")
            ns.sub(holder, "nationalIdType", identifier.root)
        ns.sub(entry, "lastName", self.last_name)
        ns.sub(entry, "firstName", self.first_name)
        if self.birth_date:
            ns.sub(entry, "dateOfBirth", self.birth_date)
        ns.sub(entry, "MT", "true" if self.treating_physician else "false")
        ns.sub(entry, "message", "true" if self.message else "false")
        for name, moment in (
            ("lastAccessDate", self.last_access),
            ("lastUpdateDate", self.last_update),
            ("lastAddDate", self.last_add),
        ):
            if moment is not None:
                ns.sub(entry, name, format_ts(moment))

    @classmethod
    def read(cls, entry: etree._Element) -> AuthorizedPatient:
        """Read a ``patientlistData`` element."""
        ns = _PAT
        identifiers = tuple(
            Identifier(ns.text(holder, "nationalIdType") or "", ns.text(holder, "nationalId") or "")
            for holder in ns.findall(entry, "patientIdentifier")
        )
        if not identifiers or not all(i.root and i.extension for i in identifiers):
            raise ValidationError("patientlistData/patientIdentifier", "missing identifier")
        return cls(
            identifiers,
            ns.text(entry, "lastName") or "",
            ns.text(entry, "firstName") or "",
            ns.text(entry, "dateOfBirth") or None,
            _boolean(entry, ns, "MT"),
            _boolean(entry, ns, "message"),
            _time(entry, ns, "lastAccessDate"),
            _time(entry, ns, "lastUpdateDate"),
            _time(entry, ns, "lastAddDate"),
        )


@dataclass(frozen=True)
class PatientListAnswer:
    """The answer to :class:`PatientListQuery`."""

    outcome: Outcome
    patients: tuple[AuthorizedPatient, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "patients", tuple(self.patients))

    def build(self) -> etree._Element:
        """The ``patientListResponse`` element."""
        root = _PAT.root("patientListResponse")
        output = _PAT.sub(root, "output")
        for patient in self.patients:
            patient.write(output)
        self.outcome.write(output, _PAT)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> PatientListAnswer:
        """Read a ``patientListResponse`` element."""
        _PAT.expect(root, "patientListResponse", "Body")
        output = _output(root, _PAT)
        return cls(
            Outcome.read(output, _PAT),
            tuple(
                AuthorizedPatient.read(entry) for entry in _PAT.findall(output, "patientlistData")
            ),
        )


# --- helpers -------------------------------------------------------------------------------------


def _output(root: etree._Element, namespace: Namespace) -> etree._Element:
    return namespace.require(root, "output")


def _time(parent: etree._Element, namespace: Namespace, name: str) -> datetime | None:
    text = namespace.text(parent, name)
    return read_ts(text, name) if text else None


def _boolean(parent: etree._Element, namespace: Namespace, name: str) -> bool:
    text = namespace.text(parent, name)
    if text not in ("true", "false", "1", "0"):
        raise ValidationError(name, "not an xs:boolean")
    return text in ("true", "1")


_E = TypeVar("_E", bound=enum.StrEnum)


def _enum(kind: type[_E], value: str, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValidationError(what, f"not one of {allowed}") from None
