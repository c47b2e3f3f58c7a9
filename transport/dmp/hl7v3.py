"""The HL7v3 messages of the DMP's patient services: built by one side, read by the other.

Service ``patients`` (GestionDossierPatientPartage, HL7v3 Normative Edition 2009):
:class:`DemographicsQuery` (PRPA_IN201307UV02: TD0.2 existence test, TD1.3a read) answered by
:class:`DemographicsAnswer` (PRPA_IN201308UV02); :class:`RegistrationRequest` (PRPA_IN201311UV02:
TD1.1 create; PRPA_IN201314UV02: TD1.2 reactivate, TD1.3b update, TD1.4 close) answered by
:class:`RegistrationAnswer` (PRPA_IN201312/13UV02 or PRPA_IN201315/16UV02 inside the
``asip:ci-sis:gdp:2010`` response wrappers). Service ``patientsPDQ`` (IHE PDQv3, Normative Edition
2008): :class:`CandidatesQuery` (PRPA_IN201305UV02, TD0.5) answered by :class:`CandidatesAnswer`
(PRPA_IN201306UV02).

Every message has ``build()`` (an lxml element for a SOAP body) and ``read(element)`` (the inverse,
tolerant of the extra empty elements real peers add). Readers raise
:class:`transport.errors.ValidationError` naming the missing or malformed element, never its value.
An error answer is an ordinary answer whose :class:`Acknowledgement` is ``AE``/``AR`` with
:class:`AckDetail` codes (:class:`DmpCode`).
"""

from __future__ import annotations

import copy
import enum
import functools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from transport import ids
from transport.errors import ValidationError
from transport.vihf import HL7_NS, INS_OIDS, PROFESSION_SYSTEM, XSI_NS, Code, Patient, Vihf
from transport.xml import Namespace, format_ts, localname, read_ts

_hl7 = Namespace(HL7_NS)

GDP_NS = "asip:ci-sis:gdp:2010"
"""Namespace of the ``PRPA_IN2013xxUV02_Response`` wrappers of GestionDossierPatientPartage."""

ACTION_QUERY = "urn:hl7-org:v3:PRPA_IN201307UV02"
ACTION_QUERY_RESPONSE = "urn:hl7-org:v3:PRPA_IN201308UV02"
ACTION_ADD = "urn:hl7-org:v3:PRPA_IN201311UV02"
ACTION_ADD_RESPONSE = "urn:hl7-org:v3:PRPA_IN201311ResponseUV02"
ACTION_REVISE = "urn:hl7-org:v3:PRPA_IN201314UV02"
ACTION_REVISE_RESPONSE = "urn:hl7-org:v3:PRPA_IN201314ResponseUV02"
ACTION_FIND_CANDIDATES = "urn:hl7-org:v3:PRPA_IN201305UV02"
ACTION_FIND_CANDIDATES_RESPONSE = "urn:hl7-org:v3:PRPA_IN201306UV02"

INTERACTION_SYSTEM = "2.16.840.1.113883.1.6"
REASON_SYSTEM = "1.2.250.1.213.1.1.4.11"
"""Code system of the ``controlActProcess/reasonCode`` that says which TD a message is."""
ATTENTION_KEY_SYSTEM = "1.2.250.1.213.4.1.2.6.1"
AUTHORISATION_SYSTEM = "1.2.250.1.213.4.1.2.6.2"
TREATING_PHYSICIAN_SYSTEM = "1.2.250.1.213.4.1.2.6.3"
OBSERVATION_SYSTEM = "1.2.250.1.213.4.1.2.3"
CLOSE_REASON_SYSTEM = "1.2.250.1.213.4.1.2.4"
PROFESSIONAL_ID_ROOT = "1.2.250.1.71.4.2.1"
"""OID of the professionals' national identifiers (IdNat) in ``assignedEntity/id``."""
STRUCTURE_ID_ROOT = "1.2.250.1.71.4.2.2"
SPECIALTY_CODE_SYSTEM = "1.2.250.1.213.1.1.4.5"
"""Code system of an author's ``G15_<profession>/<specialty>`` code."""

CONSENT_TO_OPEN = Code(
    "CONSENTEMENT_OUVERTURE_DMP", OBSERVATION_SYSTEM, "Consentement à l'ouverture du DMP"
)
CONSENT_TO_REACTIVATE = Code(
    "CONSENTEMENT_REACTIVATION_DMP", OBSERVATION_SYSTEM, "Consentement à la réactivation du DMP"
)
OPPOSITION_BREAK_GLASS = Code(
    "OPPOSITION_BRIS_DE_GLACE", OBSERVATION_SYSTEM, "Opposition au mode bris de glace"
)
OPPOSITION_EMERGENCY = Code(
    "OPPOSITION_ACCES_URGENCE", OBSERVATION_SYSTEM, "Opposition à l'accès en mode urgence"
)
CLOSED_AT_PATIENT_REQUEST = Code(
    "FERMETURE_DEMANDE_PATIENT", CLOSE_REASON_SYSTEM, "Fermeture à la demande du patient"
)

_XSI_TYPE = f"{{{XSI_NS}}}type"
_NSMAP = {None: HL7_NS, "xsi": XSI_NS}


class Reason(enum.StrEnum):
    """The ``reasonCode`` of a patient-service message: which transaction it is."""

    TEST_EXST = "TEST_EXST"
    CNSLT_DATA = "CNSLT_DATA"
    CREA_RD = "CREA_RD"
    REAC = "REAC"
    MODIF_DATA = "MODIF_DATA"
    FERM = "FERM"

    @property
    def display_name(self) -> str:
        """The label sent in ``displayName``."""
        return _REASON_LABELS[self]

    @property
    def interaction(self) -> str:
        """The HL7v3 interaction carrying this reason (PRPA_IN2013xxUV02)."""
        if self in (Reason.TEST_EXST, Reason.CNSLT_DATA):
            return "PRPA_IN201307UV02"
        return "PRPA_IN201311UV02" if self is Reason.CREA_RD else "PRPA_IN201314UV02"


_REASON_LABELS = {
    Reason.TEST_EXST: "Test d'existence de dossier",
    Reason.CNSLT_DATA: "Consultation des données de gestion de dossier",
    Reason.CREA_RD: "Création de dossier",
    Reason.REAC: "Réactivation de dossier",
    Reason.MODIF_DATA: "Modification des données de gestion du dossier",
    Reason.FERM: "Fermeture de dossier",
}


class AckType(enum.StrEnum):
    """``acknowledgement/@typeCode``: accepted, application error, application reject."""

    AA = "AA"
    AE = "AE"
    AR = "AR"


class DmpCode(enum.StrEnum):
    """The DMP's own result codes, in ``acknowledgementDetail/code`` and ``output/status``.

    ``DMPOk``, ``DMPFound`` (create or reactivate an open DMP) and ``DMPClosed`` (close a closed
    one) are those the ANS sample code handles; the DMP publishes no full catalogue, so
    ``DMPNotFound`` (no DMP for this patient), ``DMPAccessDenied`` (the caller is not
    authorized, or blocked, on this DMP) and ``DMPPatientMismatch`` (the message names another
    patient than the VIHF's ``resource-id``) are this project's names for the other cases.
    """

    OK = "DMPOk"
    FOUND = "DMPFound"
    CLOSED = "DMPClosed"
    NOT_FOUND = "DMPNotFound"
    ACCESS_DENIED = "DMPAccessDenied"
    PATIENT_MISMATCH = "DMPPatientMismatch"


# --- small datatypes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Identifier:
    """An HL7 II: ``root`` (an OID or UUID) and optional ``extension``."""

    root: str
    extension: str | None = None

    def write(self, parent: etree._Element, name: str = "id") -> etree._Element:
        """Append ``<name root extension/>`` to ``parent``."""
        return _hl7.sub(parent, name, root=self.root, extension=self.extension)

    @classmethod
    def read(cls, element: etree._Element | None, what: str) -> Identifier:
        """The II in ``element``; ValidationError naming ``what`` when absent or rootless."""
        if element is None or not element.get("root"):
            raise ValidationError(what, "missing identifier")
        return cls(element.get("root", ""), element.get("extension"))


@dataclass(frozen=True)
class Device:
    """A sending or receiving application: its OID and its software name."""

    root: str
    name: str


DMP_DEVICE = Device("1.2.250.1.213.4.1.1.1", "DMP")
"""The DMP as an HL7v3 device (receiver of requests, sender and custodian in answers)."""


@dataclass(frozen=True)
class Transmission:
    """The HL7v3 transmission wrapper: message id, creation time, sender and receiver devices.

    ``processing_code``: ``P`` production, ``D`` debugging, ``T`` training.
    """

    message_id: Identifier
    created: datetime
    sender: Device
    receiver: Device
    processing_code: str = "P"

    @classmethod
    def new(
        cls, sender: Device, receiver: Device = DMP_DEVICE, *, now: datetime | None = None
    ) -> Transmission:
        """A new message from ``sender``: id ``<sender OID>.1`` + a fresh UUID."""
        message_id = Identifier(f"{sender.root}.1", ids.uuid4())
        # HL7 TS is sent to the second: keep what a reader will see.
        created = (now or datetime.now(UTC)).replace(microsecond=0)
        return cls(message_id, created, sender, receiver)

    def reply(self, *, now: datetime | None = None) -> Transmission:
        """The transmission of an answer to this message: devices swapped, and a UUID as the
        id's root, as the DMP's own answers have."""
        created = (now or datetime.now(UTC)).replace(microsecond=0)
        message_id = Identifier(ids.uuid4())
        return Transmission(message_id, created, self.receiver, self.sender, self.processing_code)

    def write(self, tag: str, accept_ack: str) -> etree._Element:
        """The message root ``tag`` with the wrapper's elements, up to ``sender``."""
        root = etree.Element(_hl7(tag), nsmap=_NSMAP, ITSVersion="XML_1.0")
        self.message_id.write(root)
        _hl7.sub(root, "creationTime", value=format_ts(self.created))
        _hl7.sub(root, "interactionId", root=INTERACTION_SYSTEM, extension=tag)
        _hl7.sub(root, "processingCode", code=self.processing_code)
        _hl7.sub(root, "processingModeCode", code="T")
        _hl7.sub(root, "acceptAckCode", code=accept_ack)
        for role, type_code, device in (
            ("receiver", "RCV", self.receiver),
            ("sender", "SND", self.sender),
        ):
            holder = _hl7.sub(_hl7.sub(root, role, typeCode=type_code), "device", **_DEVICE)
            _hl7.sub(holder, "id", root=device.root)
            _hl7.sub(holder, "softwareName", device.name)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> Transmission:
        """The wrapper of a received message."""
        created = _attribute(root, "creationTime", "value")
        return cls(
            Identifier.read(_hl7.find(root, "id"), "id"),
            read_ts(created, "creationTime"),
            _read_device(root, "sender"),
            _read_device(root, "receiver"),
            _attribute(root, "processingCode", "code", default="P"),
        )


_DEVICE = {"classCode": "DEV", "determinerCode": "INSTANCE"}


def _read_device(root: etree._Element, role: str) -> Device:
    device = _hl7.require(root, f"{role}/device")
    return Device(
        Identifier.read(_hl7.find(device, "id"), f"{role}/device/id").root,
        _hl7.text(device, "softwareName") or "",
    )


@dataclass(frozen=True)
class AckDetail:
    """One ``acknowledgementDetail``: a code (:class:`DmpCode` or another) and its text.

    ``type_code``: ``E`` error, ``W`` warning, ``I`` information.
    """

    code: str
    text: str = ""
    type_code: str = "E"


@dataclass(frozen=True)
class Acknowledgement:
    """An answer's ``acknowledgement``: its type, the request it answers, and the details."""

    type_code: AckType
    target: Identifier
    details: tuple[AckDetail, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the request was accepted (``AA``)."""
        return self.type_code is AckType.AA

    @property
    def code(self) -> str | None:
        """The first detail's code, or None."""
        return self.details[0].code if self.details else None

    def write(self, parent: etree._Element, *, type_as_element: bool = False) -> None:
        """Append it; Normative Edition 2008 (PDQ) wants ``typeCode`` as a child element."""
        holder = _hl7.sub(parent, "acknowledgement")
        if type_as_element:
            _hl7.sub(holder, "typeCode", code=self.type_code.value)
        else:
            holder.set("typeCode", self.type_code.value)
        self.target.write(_hl7.sub(holder, "targetMessage"))
        for detail in self.details:
            element = _hl7.sub(holder, "acknowledgementDetail", typeCode=detail.type_code)
            _hl7.sub(element, "code", code=detail.code)
            if detail.text:
                _hl7.sub(element, "text", detail.text)

    @classmethod
    def read(cls, root: etree._Element) -> Acknowledgement:
        """The acknowledgement of a received answer (``typeCode`` attribute or element)."""
        holder = _hl7.require(root, "acknowledgement")
        type_code = holder.get("typeCode") or _attribute(holder, "typeCode", "code", default="")
        try:
            ack_type = AckType(type_code)
        except ValueError:
            raise ValidationError("acknowledgement/@typeCode", "not AA, AE or AR") from None
        details = tuple(
            AckDetail(
                _attribute(element, "code", "code", default=""),
                _hl7.text(element, "text") or "",
                element.get("typeCode", "E"),
            )
            for element in _hl7.findall(holder, "acknowledgementDetail")
        )
        target = Identifier.read(_hl7.find(holder, "targetMessage/id"), "targetMessage/id")
        return cls(ack_type, target, details)


def accepted(request: Transmission) -> Acknowledgement:
    """The ``AA`` acknowledgement of ``request``."""
    return Acknowledgement(AckType.AA, request.message_id)


def rejected(
    request: Transmission, code: str, text: str, type_code: AckType = AckType.AE
) -> Acknowledgement:
    """An ``AE`` (or ``AR``) acknowledgement of ``request`` with one error detail."""
    return Acknowledgement(type_code, request.message_id, (AckDetail(code, text),))


# --- patients ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Telecom:
    """A phone number or e-mail address as a URL (``tel:…``, ``mailto:…``); ``use`` is the HL7
    code (``HP`` home, ``MC`` mobile, ``WP`` work) or None."""

    value: str
    use: str | None = None


@dataclass(frozen=True)
class Address:
    """A postal address: street lines, postal code, city, country, and the ``additionalLocator``
    (a building or residence name)."""

    street_lines: tuple[str, ...] = ()
    postal_code: str | None = None
    city: str | None = None
    country: str | None = None
    additional_locator: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "street_lines", tuple(self.street_lines))


RELATIONSHIP_SYSTEM = "2.16.840.1.113883.1.11.19579"
"""HL7 PersonalRelationshipRoleType, the code system of a legal representative's relationship
(``FTH`` father, ``MTH`` mother, ``GUARD`` guardian…), as the official TD1.3a answer uses it."""


@dataclass(frozen=True)
class LegalRepresentative:
    """A ``personalRelationship`` of the patient: their legal representative.

    ``relationship``: the role code in ``code_system`` (see :data:`RELATIONSHIP_SYSTEM`); the
    name is the ``relationshipHolder1``'s (``prefix`` ``M``, ``Mme``…); addresses and telecoms
    are the relationship's own.
    """

    relationship: str
    family: str = ""
    given: tuple[str, ...] = ()
    prefix: str | None = None
    addresses: tuple[Address, ...] = ()
    telecoms: tuple[Telecom, ...] = ()
    code_system: str = RELATIONSHIP_SYSTEM

    def __post_init__(self) -> None:
        object.__setattr__(self, "given", tuple(self.given))
        object.__setattr__(self, "addresses", tuple(self.addresses))
        object.__setattr__(self, "telecoms", tuple(self.telecoms))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LegalRepresentative:
        """The inverse of :func:`dataclasses.asdict`."""
        return cls(
            data["relationship"],
            data.get("family", ""),
            tuple(data.get("given", ())),
            data.get("prefix"),
            tuple(Address(**address) for address in data.get("addresses", ())),
            tuple(Telecom(**telecom) for telecom in data.get("telecoms", ())),
            data.get("code_system", RELATIONSHIP_SYSTEM),
        )


@dataclass(frozen=True)
class Demographics:
    """A patient's administrative data as the DMP keeps them.

    ``family``: the name used (``family`` qualified ``SP``); ``birth_family``: the birth name
    (``BR``) when different; ``given``: the given names in order; ``sex``: ``M``, ``F`` or ``U``;
    ``birth_date``: HL7 date ``YYYYMMDD``; ``prefix``: ``M``, ``Mme``…; ``deceased``: the
    ``deceasedInd`` (None when not given); ``birth_place``: the ``birthPlace`` address (None
    when absent; the official TD1.3a answer has an empty one); ``legal_representatives``: the
    ``personalRelationship`` entries.
    """

    family: str
    given: tuple[str, ...] = ()
    sex: str | None = None
    birth_date: str | None = None
    birth_family: str | None = None
    prefix: str | None = None
    telecoms: tuple[Telecom, ...] = ()
    addresses: tuple[Address, ...] = ()
    deceased: bool | None = None
    birth_place: Address | None = None
    legal_representatives: tuple[LegalRepresentative, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "given", tuple(self.given))
        object.__setattr__(self, "telecoms", tuple(self.telecoms))
        object.__setattr__(self, "addresses", tuple(self.addresses))
        object.__setattr__(self, "legal_representatives", tuple(self.legal_representatives))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (the stubs store demographics as JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Demographics:
        """The inverse of :meth:`to_dict`."""
        return cls(
            family=data["family"],
            given=tuple(data.get("given", ())),
            sex=data.get("sex"),
            birth_date=data.get("birth_date"),
            birth_family=data.get("birth_family"),
            prefix=data.get("prefix"),
            telecoms=tuple(Telecom(**telecom) for telecom in data.get("telecoms", ())),
            addresses=tuple(Address(**address) for address in data.get("addresses", ())),
            deceased=data.get("deceased"),
            birth_place=Address(**data["birth_place"]) if data.get("birth_place") else None,
            legal_representatives=tuple(
                LegalRepresentative.from_dict(item)
                for item in data.get("legal_representatives", ())
            ),
        )

    @property
    def name_only(self) -> Demographics:
        """The same person with only the name (what revision messages and answers carry)."""
        return Demographics(
            self.family, self.given, birth_family=self.birth_family, prefix=self.prefix
        )


@dataclass(frozen=True)
class Observation:
    """An ``administrativeObservation``: a consent or opposition ``code`` and its boolean value."""

    code: Code
    value: bool


@dataclass(frozen=True)
class PatientRecord:
    """A patient as an answer shows it: identifiers, DMP status, administrative data.

    ``active``: False for a closed DMP (``statusCode`` ``terminated``).
    """

    ids: tuple[Identifier, ...]
    active: bool = True
    demographics: Demographics | None = None
    observations: tuple[Observation, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(self.ids))
        object.__setattr__(self, "observations", tuple(self.observations))

    @property
    def patient(self) -> Patient | None:
        """The patient's INS (the first identifier under an INS authority), or None."""
        return next(
            (Patient(i.extension, i.root) for i in self.ids if i.root in INS_OIDS and i.extension),
            None,
        )

    @classmethod
    def of(cls, patient: Patient, **fields: Any) -> PatientRecord:
        """The record of ``patient`` (its INS as the only identifier)."""
        return cls((Identifier(patient.oid, patient.ins),), **fields)


@dataclass(frozen=True)
class Author:
    """The professional on whose behalf a registration request is made, and their structure.

    ``professional_id``: IdNat (the VIHF NameID); ``role``: ``G15_<profession>/<specialty>``
    in :data:`SPECIALTY_CODE_SYSTEM`; ``structure_id``: Identifiant_Structure.
    """

    professional_id: str
    family: str
    given: str
    structure_id: str
    structure_name: str
    role: Code | None = None

    @classmethod
    def from_vihf(
        cls, vihf: Vihf, structure_name: str, *, family: str | None = None, given: str | None = None
    ) -> Author:
        """The author the VIHF describes; the name defaults to its ``subject-id`` "NOM Prénom"."""
        user_family, _, user_given = (vihf.user_name or "").partition(" ")
        return cls(
            vihf.subject_id,
            family or user_family,
            given or user_given,
            vihf.structure_id,
            structure_name,
            _author_role(vihf.roles),
        )


def _author_role(roles: tuple[Code, ...]) -> Code | None:
    if not roles or roles[0].code_system != PROFESSION_SYSTEM:
        return None
    code = f"G15_{roles[0].code}" + (f"/{roles[1].code}" if len(roles) > 1 else "")
    label = " - ".join(role.display_name for role in roles[:2] if role.display_name)
    return Code(code, SPECIALTY_CODE_SYSTEM, label)


# --- TD0.2 / TD1.3a: PRPA_IN201307UV02 → PRPA_IN201308UV02 ---------------------------------------

_QUERY_PLACEHOLDERS = (
    "id",
    "creationTime",
    "controlActProcess/queryByParameter/queryId",
    "controlActProcess/queryByParameter/parameterList/patientIdentifier/value",
)
"""What a query fills in its template: the message id, the creation time, the query id and the
patient identifier (paths of HL7 child steps)."""
_PLACEHOLDER = Identifier("0", "0")


@functools.lru_cache(maxsize=64)
def _query_template(
    sender: Device, receiver: Device, processing_code: str, reason: Reason
) -> etree._Element:
    """A ``PRPA_IN201307UV02`` with placeholders for what changes at each query."""
    transmission = Transmission(_PLACEHOLDER, _EPOCH, sender, receiver, processing_code)
    root = transmission.write("PRPA_IN201307UV02", "AL")
    control = _control(root, reason)
    query = _hl7.sub(control, "queryByParameter")
    _PLACEHOLDER.write(query, "queryId")
    _hl7.sub(query, "statusCode", code="new")
    identifier = _hl7.sub(_hl7.sub(query, "parameterList"), "patientIdentifier")
    _hl7.sub(identifier, "value", root="0", extension="0")
    _hl7.sub(identifier, "semanticsText", "Patient.id")
    return root


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _set_identifier(element: etree._Element, identifier: Identifier) -> None:
    """Fill a placeholder II (written with both attributes) with ``identifier``."""
    element.set("root", identifier.root)
    if identifier.extension is None:
        del element.attrib["extension"]
    else:
        element.set("extension", identifier.extension)


@dataclass(frozen=True)
class DemographicsQuery:
    """TD0.2 (``TEST_EXST``) or TD1.3a (``CNSLT_DATA``): a question about one patient's DMP."""

    transmission: Transmission
    reason: Reason
    patient: Patient
    query_id: Identifier

    @classmethod
    def new(
        cls, reason: Reason, patient: Patient, sender: Device, *, now: datetime | None = None
    ) -> DemographicsQuery:
        """A new query from ``sender`` (reason ``TEST_EXST`` or ``CNSLT_DATA``)."""
        if reason not in (Reason.TEST_EXST, Reason.CNSLT_DATA):
            raise ValidationError("reasonCode", f"{reason} is not a PRPA_IN201307UV02 reason")
        query_id = Identifier(f"{sender.root}.2", ids.uuid4())
        return cls(Transmission.new(sender, now=now), reason, patient, query_id)

    def build(self) -> etree._Element:
        """The ``PRPA_IN201307UV02`` element: a copy of the one query of its devices and reason,
        with this query's ids, time and patient filled in (a practice sends thousands of them)."""
        sent = self.transmission
        root = copy.deepcopy(
            _query_template(sent.sender, sent.receiver, sent.processing_code, self.reason)
        )
        message_id, creation_time, query_id, value = (
            _hl7.require(root, path) for path in _QUERY_PLACEHOLDERS
        )
        _set_identifier(message_id, sent.message_id)
        creation_time.set("value", format_ts(sent.created))
        _set_identifier(query_id, self.query_id)
        value.set("root", self.patient.oid)
        value.set("extension", self.patient.ins)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> DemographicsQuery:
        """Read a ``PRPA_IN201307UV02`` element."""
        _hl7.expect(root, "PRPA_IN201307UV02", "Body")
        control = _hl7.require(root, "controlActProcess")
        reason = _read_reason(control, (Reason.TEST_EXST, Reason.CNSLT_DATA))
        query = _hl7.require(control, "queryByParameter")
        value = _hl7.find(query, "parameterList/patientIdentifier/value")
        return cls(
            Transmission.read(root),
            reason,
            _read_patient_id(value, "patientIdentifier/value"),
            Identifier.read(_hl7.find(query, "queryId"), "queryByParameter/queryId"),
        )


@dataclass(frozen=True)
class DemographicsAnswer:
    """The answer to a :class:`DemographicsQuery`.

    ``response_code``: ``OK`` (a DMP exists: ``record``), ``NF`` (none), ``AE`` (error, see
    ``acknowledgement``). For TD0.2, ``authorization`` is the caller's ``AUTORISATION``
    (``VALIDE``, ``INTERDIT``, ``NON_EXISTE``) and ``treating_physician`` its ``STATUT_MT``.
    """

    transmission: Transmission
    acknowledgement: Acknowledgement
    reason: Reason
    response_code: str
    query_id: Identifier | None = None
    record: PatientRecord | None = None
    authorization: str | None = None
    treating_physician: bool | None = None

    @property
    def found(self) -> bool:
        """Whether the patient has a DMP (open or closed)."""
        return self.response_code == "OK" and self.record is not None

    def build(self) -> etree._Element:
        """The ``PRPA_IN201308UV02`` element."""
        root = self.transmission.write("PRPA_IN201308UV02", "NE")
        if self.authorization is not None:
            line = _attention_line(root, "AUTORISATION")
            _hl7.sub(line, "value", code=self.authorization, codeSystem=AUTHORISATION_SYSTEM).set(
                _XSI_TYPE, "CV"
            )
        if self.treating_physician is not None:
            line = _attention_line(root, "STATUT_MT")
            _boolean(line, "value", self.treating_physician)
        self.acknowledgement.write(root)
        control = _control(root, self.reason)
        if self.record is not None:
            patient = _registration_event(control, "subject1")
            _write_record(patient, self.record, full=True)
        query_ack = _hl7.sub(control, "queryAck")
        if self.query_id is not None:
            self.query_id.write(query_ack, "queryId")
        _hl7.sub(query_ack, "queryResponseCode", code=self.response_code)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> DemographicsAnswer:
        """Read a ``PRPA_IN201308UV02`` element."""
        _hl7.expect(root, "PRPA_IN201308UV02", "Body")
        control = _hl7.require(root, "controlActProcess")
        patient = _hl7.find(control, "subject/registrationEvent/subject1/patient")
        query_id = _hl7.find(control, "queryAck/queryId")
        authorization = _attention_value(root, "AUTORISATION")
        treating = _attention_value(root, "STATUT_MT")
        return cls(
            Transmission.read(root),
            Acknowledgement.read(root),
            _read_reason(control, (Reason.TEST_EXST, Reason.CNSLT_DATA)),
            _attribute(control, "queryAck/queryResponseCode", "code"),
            Identifier.read(query_id, "queryAck/queryId") if query_id is not None else None,
            _read_record(patient) if patient is not None else None,
            authorization,
            None if treating is None else treating == "true",
        )


def _attention_line(root: etree._Element, keyword: str) -> etree._Element:
    line = _hl7.sub(root, "attentionLine")
    _hl7.sub(line, "keyWordText", code=keyword, codeSystem=ATTENTION_KEY_SYSTEM)
    return line


def _attention_value(root: etree._Element, keyword: str) -> str | None:
    for line in _hl7.findall(root, "attentionLine"):
        if _attribute(line, "keyWordText", "code", default="") == keyword:
            value = _hl7.find(line, "value")
            if value is not None:
                return value.get("code") or value.get("value")
    return None


# --- TD1.1, TD1.2, TD1.3b, TD1.4: PRPA_IN201311UV02 / PRPA_IN201314UV02 --------------------------


@dataclass(frozen=True)
class Registration:
    """What a registration request asks about the patient's DMP, and on whose behalf.

    ``demographics``: the full data for TD1.1 and TD1.3b, the name for TD1.2 and TD1.4.
    ``observations``: consents and oppositions. ``close_reason``: TD1.4's reason (its display
    name is sent as the text).
    """

    reason: Reason
    patient: Patient
    author: Author
    demographics: Demographics
    observations: tuple[Observation, ...] = ()
    close_reason: Code | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "observations", tuple(self.observations))
        if self.reason in (Reason.TEST_EXST, Reason.CNSLT_DATA):
            raise ValidationError("reasonCode", f"{self.reason} is not a registration reason")

    @property
    def action(self) -> str:
        """The ``wsa:Action`` of the request."""
        return ACTION_ADD if self.reason is Reason.CREA_RD else ACTION_REVISE

    @property
    def patient_status(self) -> str:
        """The patient ``statusCode`` the request asks for."""
        return "terminated" if self.reason is Reason.FERM else "active"

    def write(self, control: etree._Element) -> None:
        """Append the ``subject/registrationRequest`` (and the close ``reasonOf``)."""
        subject = _hl7.sub(control, "subject", typeCode="SUBJ", contextConductionInd="false")
        request = _hl7.sub(subject, "registrationRequest", classCode="REG", moodCode="RQO")
        _hl7.sub(request, "statusCode", code="active")
        patient = _hl7.sub(
            _hl7.sub(request, "subject1", typeCode="SBJ"), "patient", classCode="PAT"
        )
        _hl7.sub(patient, "id", root=self.patient.oid, extension=self.patient.ins)
        _hl7.sub(patient, "statusCode", code=self.patient_status)
        _write_person(patient, self.demographics)
        if self.reason is Reason.CREA_RD:
            # PRPA_MT201301UV02 requires the patient's provider: the author's structure.
            _write_organization(patient, "providerOrganization", self.author)
        _write_observations(patient, "subjectOf", self.observations)
        _write_author(request, self.author)
        if self.close_reason is not None:
            reason = _hl7.sub(control, "reasonOf", typeCode="RSON")
            issue = _hl7.sub(reason, "detectedIssueEvent", classCode="ALRT", moodCode="EVN")
            _write_code(issue, "code", self.close_reason, display=False)
            _hl7.sub(issue, "text", self.close_reason.display_name or self.close_reason.code)

    @classmethod
    def read(cls, control: etree._Element, reasons: Iterable[Reason]) -> Registration:
        """Read it from a ``controlActProcess``."""
        reason = _read_reason(control, reasons)
        request = _hl7.require(control, "subject/registrationRequest")
        patient = _hl7.require(request, "subject1/patient")
        issue = _hl7.find(control, "reasonOf/detectedIssueEvent")
        return cls(
            reason,
            _read_patient_id(_ins_id(patient), "patient/id"),
            _read_author(_hl7.require(request, "author/assignedEntity")),
            _read_person(_hl7.require(patient, "patientPerson")),
            _read_observations(patient, "subjectOf"),
            _read_code(_hl7.require(issue, "code"), _hl7.text(issue, "text") or "")
            if issue is not None
            else None,
        )


@dataclass(frozen=True)
class RegistrationRequest:
    """TD1.1 (``CREA_RD``), TD1.2 (``REAC``), TD1.3b (``MODIF_DATA``) or TD1.4 (``FERM``)."""

    transmission: Transmission
    registration: Registration

    @classmethod
    def new(
        cls, registration: Registration, sender: Device, *, now: datetime | None = None
    ) -> RegistrationRequest:
        """A new request from ``sender``."""
        return cls(Transmission.new(sender, now=now), registration)

    @property
    def action(self) -> str:
        """The ``wsa:Action`` of the request."""
        return self.registration.action

    def build(self) -> etree._Element:
        """The ``PRPA_IN201311UV02`` or ``PRPA_IN201314UV02`` element."""
        root = self.transmission.write(self.registration.reason.interaction, "AL")
        self.registration.write(_control(root, self.registration.reason))
        return root

    @classmethod
    def read(cls, root: etree._Element) -> RegistrationRequest:
        """Read a ``PRPA_IN201311UV02`` or ``PRPA_IN201314UV02`` element."""
        tag = localname(root)
        if tag not in ("PRPA_IN201311UV02", "PRPA_IN201314UV02"):
            raise ValidationError("Body", "not a PRPA_IN201311UV02 or PRPA_IN201314UV02")
        reasons = [reason for reason in Reason if reason.interaction == tag]
        control = _hl7.require(root, "controlActProcess")
        return cls(Transmission.read(root), Registration.read(control, reasons))


_ANSWERS = {
    # request interaction: (wrapper, accepted, rejected)
    "PRPA_IN201311UV02": ("PRPA_IN201311UV02_Response", "PRPA_IN201312UV02", "PRPA_IN201313UV02"),
    "PRPA_IN201314UV02": ("PRPA_IN201314UV02_Response", "PRPA_IN201315UV02", "PRPA_IN201316UV02"),
}


@dataclass(frozen=True)
class RegistrationAnswer:
    """The answer to a :class:`RegistrationRequest`, inside its ``gdp`` response wrapper.

    Accepted (``AA``): ``record`` is the DMP after the change (identifiers, status, name).
    Rejected (``AE``/``AR``): ``echo`` is the rejected registration, as HL7v3 requires.
    """

    transmission: Transmission
    acknowledgement: Acknowledgement
    reason: Reason
    record: PatientRecord | None = None
    echo: Registration | None = None

    @property
    def action(self) -> str:
        """The ``wsa:Action`` of the answer."""
        return ACTION_ADD_RESPONSE if self.reason is Reason.CREA_RD else ACTION_REVISE_RESPONSE

    def build(self) -> etree._Element:
        """The wrapper element holding PRPA_IN201312/13UV02 or PRPA_IN201315/16UV02."""
        wrapper_tag, accepted_tag, rejected_tag = _ANSWERS[self.reason.interaction]
        wrapper = etree.Element(f"{{{GDP_NS}}}{wrapper_tag}", nsmap={**_NSMAP, "gdp": GDP_NS})
        tag = accepted_tag if self.acknowledgement.ok else rejected_tag
        root = self.transmission.write(tag, "NE")
        wrapper.append(root)
        self.acknowledgement.write(root)
        control = _control(root, self.reason)
        if self.acknowledgement.ok:
            if self.record is None:
                raise ValidationError("record", "an accepted answer carries the record")
            patient = _registration_event(control, "subject1")
            _write_record(patient, self.record, full=False)
        else:
            if self.echo is None:
                raise ValidationError("echo", "a rejection echoes the registration")
            self.echo.write(control)
        return wrapper

    @classmethod
    def read(cls, wrapper: etree._Element) -> RegistrationAnswer:
        """Read the ``gdp`` response wrapper of a registration answer."""
        tags = {tag: entry for entry in _ANSWERS.values() for tag in entry[1:]}
        root = next((child for child in wrapper if localname(child) in tags), None)
        if etree.QName(wrapper).namespace != GDP_NS or root is None:
            raise ValidationError("Body", "not a GestionDossierPatientPartage response")
        interaction = next(key for key, entry in _ANSWERS.items() if localname(root) in entry)
        reasons = [reason for reason in Reason if reason.interaction == interaction]
        control = _hl7.require(root, "controlActProcess")
        acknowledgement = Acknowledgement.read(root)
        patient = _hl7.find(control, "subject/registrationEvent/subject1/patient")
        echo = (
            Registration.read(control, reasons)
            if _hl7.find(control, "subject/registrationRequest") is not None
            else None
        )
        return cls(
            Transmission.read(root),
            acknowledgement,
            _read_reason(control, reasons),
            _read_record(patient) if patient is not None else None,
            echo,
        )


# --- TD0.5: PRPA_IN201305UV02 → PRPA_IN201306UV02 (PDQv3) ----------------------------------------


@dataclass(frozen=True)
class Traits:
    """What a PDQ search matches on: names (``family`` matches the used or birth name), sex,
    birth date (``YYYYMMDD``). Unset traits match everything."""

    family: str | None = None
    given: str | None = None
    sex: str | None = None
    birth_date: str | None = None

    def write(self, query: etree._Element) -> None:
        """Append the ``parameterList`` (in the order PRPA_MT201306UV02 requires)."""
        parameters = _hl7.sub(query, "parameterList")
        if self.sex:
            _parameter(parameters, "livingSubjectAdministrativeGender", code=self.sex)
        if self.birth_date:
            _parameter(parameters, "livingSubjectBirthTime", value=self.birth_date)
        if self.family or self.given:
            value = _parameter(parameters, "livingSubjectName")
            if self.given:
                _hl7.sub(value, "given", self.given)
            if self.family:
                _hl7.sub(value, "family", self.family)

    @classmethod
    def read(cls, query: etree._Element) -> Traits:
        """Read a ``queryByParameter``'s parameter list."""
        parameters = _hl7.require(query, "parameterList")
        name = _hl7.find(parameters, "livingSubjectName/value")
        traits = cls(
            _hl7.text(name, "family") or None,
            _hl7.text(name, "given") or None,
            _attribute(parameters, "livingSubjectAdministrativeGender/value", "code", default="")
            or None,
            _attribute(parameters, "livingSubjectBirthTime/value", "value", default="") or None,
        )
        if traits == cls():
            raise ValidationError("parameterList", "no trait to search on")
        return traits


def _parameter(parameters: etree._Element, name: str, **value: str) -> etree._Element:
    holder = _hl7.sub(parameters, name)
    element = _hl7.sub(holder, "value", **value)
    _hl7.sub(holder, "semanticsText", name.replace("livingSubject", "LivingSubject."))
    return element


@dataclass(frozen=True)
class CandidatesQuery:
    """TD0.5: find the patients (with a DMP) matching some traits, without their INS."""

    transmission: Transmission
    query_id: Identifier
    traits: Traits

    @classmethod
    def new(cls, traits: Traits, sender: Device, *, now: datetime | None = None) -> CandidatesQuery:
        """A new search from ``sender``."""
        query_id = Identifier(f"{sender.root}.2", ids.uuid4())
        return cls(Transmission.new(sender, now=now), query_id, traits)

    def build(self) -> etree._Element:
        """The ``PRPA_IN201305UV02`` element."""
        root = self.transmission.write("PRPA_IN201305UV02", "AL")
        control = _hl7.sub(root, "controlActProcess", classCode="CACT", moodCode="EVN")
        _hl7.sub(control, "code", code="PRPA_TE201305UV02", codeSystem=INTERACTION_SYSTEM)
        _write_candidates_query(control, self.query_id, self.traits)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> CandidatesQuery:
        """Read a ``PRPA_IN201305UV02`` element."""
        _hl7.expect(root, "PRPA_IN201305UV02", "Body")
        query = _hl7.require(root, "controlActProcess/queryByParameter")
        return cls(
            Transmission.read(root),
            Identifier.read(_hl7.find(query, "queryId"), "queryByParameter/queryId"),
            Traits.read(query),
        )


def _write_candidates_query(control: etree._Element, query_id: Identifier, traits: Traits) -> None:
    query = _hl7.sub(control, "queryByParameter")
    query_id.write(query, "queryId")
    _hl7.sub(query, "statusCode", code="new")
    traits.write(query)


@dataclass(frozen=True)
class CandidatesAnswer:
    """The answer to a :class:`CandidatesQuery`: ``response_code`` ``OK`` with ``candidates``,
    ``NF`` when none matched, ``AE`` on error; the query is echoed."""

    transmission: Transmission
    acknowledgement: Acknowledgement
    query_id: Identifier
    traits: Traits
    response_code: str
    candidates: tuple[PatientRecord, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))

    def build(self) -> etree._Element:
        """The ``PRPA_IN201306UV02`` element."""
        root = self.transmission.write("PRPA_IN201306UV02", "NE")
        self.acknowledgement.write(root, type_as_element=True)
        control = _hl7.sub(root, "controlActProcess", classCode="CACT", moodCode="EVN")
        _hl7.sub(control, "code", code="PRPA_TE201306UV02", codeSystem=INTERACTION_SYSTEM)
        for candidate in self.candidates:
            patient = _registration_event(control, "subject1", status="active")
            _write_record(patient, candidate, full=True, pdq=True)
        query_ack = _hl7.sub(control, "queryAck")
        self.query_id.write(query_ack, "queryId")
        _hl7.sub(query_ack, "queryResponseCode", code=self.response_code)
        count = str(len(self.candidates))
        _hl7.sub(query_ack, "resultTotalQuantity", value=count)
        _hl7.sub(query_ack, "resultCurrentQuantity", value=count)
        _hl7.sub(query_ack, "resultRemainingQuantity", value="0")
        _write_candidates_query(control, self.query_id, self.traits)
        return root

    @classmethod
    def read(cls, root: etree._Element) -> CandidatesAnswer:
        """Read a ``PRPA_IN201306UV02`` element."""
        _hl7.expect(root, "PRPA_IN201306UV02", "Body")
        control = _hl7.require(root, "controlActProcess")
        query = _hl7.require(control, "queryByParameter")
        return cls(
            Transmission.read(root),
            Acknowledgement.read(root),
            Identifier.read(_hl7.find(control, "queryAck/queryId"), "queryAck/queryId"),
            Traits.read(query),
            _attribute(control, "queryAck/queryResponseCode", "code"),
            tuple(
                _read_record(patient)
                for patient in _hl7.findall(control, "subject/registrationEvent/subject1/patient")
            ),
        )


# --- writers -------------------------------------------------------------------------------------


def _control(root: etree._Element, reason: Reason) -> etree._Element:
    control = _hl7.sub(root, "controlActProcess", classCode="CACT", moodCode="EVN")
    _hl7.sub(
        control,
        "reasonCode",
        code=reason.value,
        codeSystem=REASON_SYSTEM,
        displayName=reason.display_name,
    )
    return control


def _registration_event(
    control: etree._Element, role: str, status: str = "completed"
) -> etree._Element:
    """Append ``subject/registrationEvent`` with its custodian; return the empty ``patient``."""
    subject = _hl7.sub(control, "subject", typeCode="SUBJ", contextConductionInd="false")
    event = _hl7.sub(subject, "registrationEvent", classCode="REG", moodCode="EVN")
    _hl7.sub(event, "statusCode", code=status)
    patient = _hl7.sub(_hl7.sub(event, role, typeCode="SBJ"), "patient", classCode="PAT")
    custodian = _hl7.sub(
        _hl7.sub(event, "custodian", typeCode="CST"), "assignedEntity", classCode="ASSIGNED"
    )
    _hl7.sub(custodian, "id", root=DMP_DEVICE.root)
    return patient


def _write_record(
    patient: etree._Element, record: PatientRecord, *, full: bool, pdq: bool = False
) -> None:
    for identifier in record.ids:
        identifier.write(patient)
    _hl7.sub(patient, "statusCode", code="active" if record.active else "terminated")
    if record.demographics is not None:
        demographics = record.demographics if full else record.demographics.name_only
        _write_person(patient, demographics)
    if pdq:
        # PRPA_MT201310UV02 requires a match observation per candidate; matches are exact here.
        holder = _hl7.sub(patient, "subjectOf1")
        match = _hl7.sub(holder, "queryMatchObservation", classCode="COND", moodCode="EVN")
        _hl7.sub(match, "code", code="POURCENTAGE")
        _hl7.sub(match, "value", value="100").set(_XSI_TYPE, "INT")
        _write_observations(patient, "subjectOf2", record.observations)
    elif full:
        _write_observations(patient, "subjectOf", record.observations)


def _write_person(patient: etree._Element, person: Demographics) -> None:
    holder = _hl7.sub(patient, "patientPerson", classCode="PSN", determinerCode="INSTANCE")
    name = _hl7.sub(holder, "name")
    if person.prefix:
        _hl7.sub(name, "prefix", person.prefix)
    for given in person.given:
        _hl7.sub(name, "given", given)
    _hl7.sub(name, "family", person.family, qualifier="SP")
    if person.birth_family:
        _hl7.sub(name, "family", person.birth_family, qualifier="BR")
    for telecom in person.telecoms:
        _hl7.sub(holder, "telecom", value=telecom.value, use=telecom.use)
    if person.sex:
        _hl7.sub(holder, "administrativeGenderCode", code=person.sex)
    if person.birth_date:
        _hl7.sub(holder, "birthTime", value=person.birth_date)
    if person.deceased is not None:
        _hl7.sub(holder, "deceasedInd", value="true" if person.deceased else "false")
    for address in person.addresses:
        _write_address(holder, address)
    for representative in person.legal_representatives:
        _write_representative(holder, representative)
    if person.birth_place is not None:
        place = _hl7.sub(holder, "birthPlace", classCode="BIRTHPL")
        _write_address(place, person.birth_place)


def _write_address(parent: etree._Element, address: Address) -> None:
    element = _hl7.sub(parent, "addr")
    for line in address.street_lines:
        _hl7.sub(element, "streetAddressLine", line)
    for part, tag in _ADDRESS_PARTS.items():
        value = getattr(address, part)
        if value:
            _hl7.sub(element, tag, value)


def _write_representative(parent: etree._Element, representative: LegalRepresentative) -> None:
    """A ``personalRelationship`` in the schema's order: code, addr, telecom, the holder."""
    element = _hl7.sub(parent, "personalRelationship", classCode="PRS")
    _hl7.sub(
        element, "code", code=representative.relationship, codeSystem=representative.code_system
    )
    for address in representative.addresses:
        _write_address(element, address)
    for telecom in representative.telecoms:
        _hl7.sub(element, "telecom", value=telecom.value, use=telecom.use)
    holder = _hl7.sub(element, "relationshipHolder1", classCode="PSN", determinerCode="INSTANCE")
    name = _hl7.sub(holder, "name")
    if representative.prefix:
        _hl7.sub(name, "prefix", representative.prefix)
    for given in representative.given:
        _hl7.sub(name, "given", given)
    _hl7.sub(name, "family", representative.family)


_ADDRESS_PARTS = {
    "additional_locator": "additionalLocator",
    "postal_code": "postalCode",
    "city": "city",
    "country": "country",
}


def _write_observations(
    patient: etree._Element, role: str, observations: Iterable[Observation]
) -> None:
    for observation in observations:
        holder = _hl7.sub(patient, role, typeCode="SBJ")
        element = _hl7.sub(holder, "administrativeObservation", classCode="OBS", moodCode="EVN")
        _write_code(element, "code", observation.code)
        _boolean(element, "value", observation.value)


def _write_author(request: etree._Element, author: Author) -> None:
    entity = _hl7.sub(
        _hl7.sub(request, "author", typeCode="AUT"), "assignedEntity", classCode="ASSIGNED"
    )
    _hl7.sub(entity, "id", root=PROFESSIONAL_ID_ROOT, extension=author.professional_id)
    if author.role is not None:
        _write_code(entity, "code", author.role)
    person = _hl7.sub(entity, "assignedPerson", classCode="PSN", determinerCode="INSTANCE")
    name = _hl7.sub(person, "name")
    _hl7.sub(name, "family", author.family)
    if author.given:
        _hl7.sub(name, "given", author.given)
    _write_organization(entity, "representedOrganization", author)


def _write_organization(parent: etree._Element, role: str, author: Author) -> None:
    organization = _hl7.sub(parent, role, classCode="ORG", determinerCode="INSTANCE")
    _hl7.sub(organization, "id", root=STRUCTURE_ID_ROOT, extension=author.structure_id)
    if author.structure_name:
        _hl7.sub(organization, "name", author.structure_name)
    _hl7.sub(organization, "contactParty", classCode="CON")


def _write_code(parent: etree._Element, name: str, code: Code, *, display: bool = True) -> None:
    _hl7.sub(
        parent,
        name,
        code=code.code,
        codeSystem=code.code_system or None,
        displayName=(code.display_name or None) if display else None,
    )


def _boolean(parent: etree._Element, name: str, value: bool) -> None:
    _hl7.sub(parent, name, value="true" if value else "false").set(_XSI_TYPE, "BL")


# --- readers -------------------------------------------------------------------------------------


def _attribute(element: etree._Element, path: str, name: str, *, default: str | None = None) -> str:
    found = _hl7.find(element, path)
    value = found.get(name) if found is not None else None
    if value is None:
        if default is not None:
            return default
        raise ValidationError(f"{path}/@{name}", "missing attribute")
    return value


def _read_reason(control: etree._Element, allowed: Iterable[Reason]) -> Reason:
    code = _attribute(control, "reasonCode", "code")
    allowed = tuple(allowed)
    if code not in {reason.value for reason in allowed}:
        raise ValidationError("reasonCode", "not a reason this message carries")
    return Reason(code)


def _ins_id(patient: etree._Element) -> etree._Element | None:
    return next(
        (element for element in _hl7.findall(patient, "id") if element.get("root") in INS_OIDS),
        None,
    )


def _read_patient_id(element: etree._Element | None, what: str) -> Patient:
    if element is None or element.get("root") not in INS_OIDS or not element.get("extension"):
        raise ValidationError(what, "no INS under a known INS authority")
    return Patient(element.get("extension", ""), element.get("root", ""))


def _read_code(element: etree._Element, text: str = "") -> Code:
    code = element.get("code")
    if not code:
        raise ValidationError(localname(element), "missing code")
    return Code(code, element.get("codeSystem", ""), element.get("displayName") or text)


def _read_person(person: etree._Element) -> Demographics:
    name = _hl7.require(person, "name")
    families = {
        element.get("qualifier"): (element.text or "").strip()
        for element in _hl7.findall(name, "family")
    }
    family = families.get("SP") or families.get(None) or families.get("BR")
    if not family:
        raise ValidationError("patientPerson/name/family", "missing family name")
    birth_family = families.get("BR")
    return Demographics(
        family=family,
        given=tuple((element.text or "").strip() for element in _hl7.findall(name, "given")),
        sex=_attribute(person, "administrativeGenderCode", "code", default="") or None,
        birth_date=_attribute(person, "birthTime", "value", default="") or None,
        birth_family=birth_family if birth_family != family else None,
        prefix=_hl7.text(name, "prefix") or None,
        telecoms=tuple(
            Telecom(element.get("value", ""), element.get("use"))
            for element in _hl7.findall(person, "telecom")
            if element.get("value")
        ),
        addresses=tuple(_read_address(element) for element in _hl7.findall(person, "addr")),
        deceased=_deceased(person),
        birth_place=_birth_place(person),
        legal_representatives=tuple(
            _read_representative(element)
            for element in _hl7.findall(person, "personalRelationship")
        ),
    )


def _deceased(person: etree._Element) -> bool | None:
    value = _attribute(person, "deceasedInd", "value", default="")
    return None if not value else value == "true"


def _birth_place(person: etree._Element) -> Address | None:
    element = _hl7.find(person, "birthPlace/addr")
    return _read_address(element) if element is not None else None


def _read_representative(element: etree._Element) -> LegalRepresentative:
    code = _hl7.find(element, "code")
    name = _hl7.find(element, "relationshipHolder1/name")
    return LegalRepresentative(
        relationship=code.get("code", "") if code is not None else "",
        family=(_hl7.text(name, "family") or "") if name is not None else "",
        given=tuple(
            (given.text or "").strip()
            for given in (_hl7.findall(name, "given") if name is not None else ())
        ),
        prefix=(_hl7.text(name, "prefix") or None) if name is not None else None,
        addresses=tuple(_read_address(item) for item in _hl7.findall(element, "addr")),
        telecoms=tuple(
            Telecom(item.get("value", ""), item.get("use"))
            for item in _hl7.findall(element, "telecom")
            if item.get("value")
        ),
        code_system=(code.get("codeSystem") if code is not None else None) or RELATIONSHIP_SYSTEM,
    )


def _read_address(element: etree._Element) -> Address:
    return Address(
        tuple((line.text or "").strip() for line in _hl7.findall(element, "streetAddressLine")),
        _hl7.text(element, "postalCode") or None,
        _hl7.text(element, "city") or None,
        _hl7.text(element, "country") or None,
        _hl7.text(element, "additionalLocator") or None,
    )


def _read_observations(patient: etree._Element, role: str) -> tuple[Observation, ...]:
    return tuple(
        Observation(
            _read_code(_hl7.require(element, "code")),
            _attribute(element, "value", "value", default="false") == "true",
        )
        for element in _hl7.findall(patient, f"{role}/administrativeObservation")
    )


def _read_record(patient: etree._Element) -> PatientRecord:
    person = _hl7.find(patient, "patientPerson")
    role = "subjectOf2" if _hl7.find(patient, "subjectOf1") is not None else "subjectOf"
    return PatientRecord(
        tuple(Identifier.read(element, "patient/id") for element in _hl7.findall(patient, "id")),
        _attribute(patient, "statusCode", "code", default="active") != "terminated",
        _read_person(person) if person is not None else None,
        _read_observations(patient, role),
    )


def _read_author(entity: etree._Element) -> Author:
    professional = Identifier.read(_hl7.find(entity, "id"), "assignedEntity/id")
    name = _hl7.find(entity, "assignedPerson/name")
    code = _hl7.find(entity, "code")
    structure = _hl7.find(entity, "representedOrganization/id")
    return Author(
        professional.extension or "",
        _hl7.text(name, "family") or "",
        _hl7.text(name, "given") or "",
        structure.get("extension", "") if structure is not None else "",
        _hl7.text(entity, "representedOrganization/name") or "",
        _read_code(code) if code is not None and code.get("code") else None,
    )
