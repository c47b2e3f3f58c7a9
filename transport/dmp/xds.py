"""IHE XDS.b messages as the DMP uses them: the metadata model and ebRIM 3.0 both ways.

A :class:`DocumentEntry` and a :class:`SubmissionSet` are small frozen dataclasses; this module
writes them as the ebRIM ``ExtrinsicObject`` / ``RegistryPackage`` of the IHE ITI TF-3 §4.2.3
tables and reads them back, so that the client (building ITI-41 / ITI-18 / ITI-43 / ITI-57
requests, reading the answers) and the stub (reading requests, building answers) share one
definition. Codes are :class:`Coded` values; people and organisations are HL7v2 XCN / XON strings
(:meth:`Author.professional` writes them the DMP way).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from lxml import etree

from transport.errors import RegistryError, ValidationError
from transport.soap.mtom import XOP_NS, include
from transport.vihf import Patient
from transport.xml import Namespace

RIM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
RS_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
LCM_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
QUERY_NS = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
XDSB_NS = "urn:ihe:iti:xds-b:2007"
_rim = Namespace(RIM_NS)
_rs = Namespace(RS_NS)
_lcm = Namespace(LCM_NS)
_query = Namespace(QUERY_NS)
_xdsb = Namespace(XDSB_NS)
_xop = Namespace(XOP_NS)
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
NSMAP = {"rim": RIM_NS, "rs": RS_NS, "lcm": LCM_NS, "query": QUERY_NS, "xdsb": XDSB_NS}

ACTION_PROVIDE_AND_REGISTER = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
ACTION_RETRIEVE = "urn:ihe:iti:2007:RetrieveDocumentSet"
ACTION_STORED_QUERY = "urn:ihe:iti:2007:RegistryStoredQuery"
ACTION_UPDATE = "urn:ihe:iti:2010:UpdateDocumentSet"

STABLE_DOCUMENT = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"

APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
DELETED = "urn:asip:ci-sis:2010:StatusType:Deleted"
ARCHIVED = "urn:asip:ci-sis:2010:StatusType:Archived"
STATUSES = frozenset({APPROVED, DEPRECATED, DELETED, ARCHIVED})

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL_SUCCESS = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"

HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
SIGNS = "urn:ihe:iti:2007:AssociationType:signs"
REPLACES = "urn:ihe:iti:2007:AssociationType:RPLC"
"""The ITI-41 association of a new document to the entry it replaces (IHE ITI TF-3 §4.2.2)."""
UPDATE_AVAILABILITY_STATUS = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"

MASKED_FROM_PROFESSIONALS = "MASQUE_PS"
"""The DMP confidentiality code of a document masked from professionals (TD3.3a)."""
INVISIBLE_TO_PATIENT = "INVISIBLE_PATIENT"
"""The DMP confidentiality code of a document the patient does not see (yet)."""
INVISIBLE_TO_LEGAL_REPRESENTATIVES = "INVISIBLE_REPRESENTANTS_LEGAUX"
"""The DMP confidentiality code of a document the patient's legal representatives do not see."""
DMP_CONFIDENTIALITY_SYSTEM = "1.2.250.1.213.1.1.4.13"

# The classification schemes and external identifiers of IHE ITI TF-3 §4.2.5.
_DE_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
_DE_CLASS = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
_DE_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
_DE_EVENT = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
_DE_FORMAT = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
_DE_FACILITY = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
_DE_PRACTICE = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
_DE_TYPE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
_DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
_DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
_SS_AUTHOR = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
_SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
_SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
_SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
_SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"


@dataclass(frozen=True)
class Coded:
    """A coded value of the metadata: ``code`` in the coding scheme ``scheme``, with its label."""

    code: str
    scheme: str
    display: str = ""


@dataclass(frozen=True)
class Author:
    """An author: HL7v2 XCN ``person``, XON ``institutions``, ``specialties`` and ``roles``."""

    person: str | None = None
    institutions: tuple[str, ...] = ()
    specialties: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    @classmethod
    def professional(
        cls,
        idnat: str,
        family: str,
        given: str,
        *,
        specialty: str | None = None,
        institution: str | None = None,
        structure_id: str | None = None,
    ) -> Author:
        """A health professional the DMP way: RPPS/ADELI IdNat (``IDNPS``), structure ``IDNST``.

        ``specialty`` is the DMP's ``G15_10/SM26^Médecin - …^1.2.250.1.213.1.1.4.5`` string.
        """
        person = f"{idnat}^{family}^{given}^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
        institutions = ()
        if institution:
            identifier = (
                f"^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^{structure_id}" if structure_id else ""
            )
            institutions = (f"{institution}{identifier}",)
        return cls(person, institutions, (specialty,) if specialty else ())

    def slots(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        """The author's slots, in the order the DMP examples write them."""
        if self.person:
            yield "authorPerson", (self.person,)
        if self.specialties:
            yield "authorSpecialty", self.specialties
        if self.institutions:
            yield "authorInstitution", self.institutions
        if self.roles:
            yield "authorRole", self.roles


def patient_id(patient: Patient) -> str:
    """The XDS ``patientId`` of a patient: the INS in CX form (``INS^^^&OID&ISO^NH``)."""
    return patient.resource_id


def read_patient_id(value: str) -> Patient:
    """The patient of an XDS ``patientId`` (CX; components after ``NH`` are ignored)."""
    ins, _, rest = value.partition("^^^&")
    oid, _, kind = rest.partition("&ISO^")
    if not ins or not oid or not kind.startswith("NH"):
        raise ValidationError("patientId", f"not an INS in CX form: {value!r}")
    return Patient(ins, oid)


def new_unique_id(root: str = "2.25") -> str:
    """A fresh OID-form unique id (``2.25.<uuid as integer>`` by default, ITU-T X.667)."""
    return f"{root}.{uuid.uuid4().int}"


def new_entry_uuid() -> str:
    """A fresh ``urn:uuid:`` registry object id."""
    return f"urn:uuid:{uuid.uuid4()}"


@dataclass(frozen=True)
class Visibility:
    """Who may not see a document in the DMP: its restrictions, each one DMP confidentiality
    code (system :data:`DMP_CONFIDENTIALITY_SYSTEM`) beside the HL7 one. ANS lists them as the
    DMP's restriction metadata (CI-SIS, *Transmission de documents CDA en HL7v2*, table
    MetaDMP/MSS): ``hidden_from_professionals`` (``MASQUE_PS``: other professionals do not see
    it, its author and the patient do), ``hidden_from_patient`` (``INVISIBLE_PATIENT``: the
    patient does not see it until a professional has told them, e.g. a diagnosis to announce),
    ``hidden_from_legal_representatives`` (``INVISIBLE_REPRESENTANTS_LEGAUX``: a minor's legal
    representatives do not see it)."""

    hidden_from_professionals: bool = False
    hidden_from_patient: bool = False
    hidden_from_legal_representatives: bool = False

    def codes(self) -> tuple[Coded, ...]:
        """The DMP confidentiality codes of these restrictions, in the order above."""
        return tuple(
            code
            for hidden, code in zip(
                (
                    self.hidden_from_professionals,
                    self.hidden_from_patient,
                    self.hidden_from_legal_representatives,
                ),
                RESTRICTION_CODES,
                strict=True,
            )
            if hidden
        )

    @classmethod
    def of(cls, confidentiality: Iterable[Coded]) -> Visibility:
        """The restrictions a confidentiality code list carries."""
        present = {
            code.code for code in confidentiality if code.scheme == DMP_CONFIDENTIALITY_SYSTEM
        }
        return cls(
            MASKED_FROM_PROFESSIONALS in present,
            INVISIBLE_TO_PATIENT in present,
            INVISIBLE_TO_LEGAL_REPRESENTATIVES in present,
        )

    def applied(self, confidentiality: Iterable[Coded]) -> tuple[Coded, ...]:
        """``confidentiality`` with its DMP restriction codes replaced by these ones (the HL7
        and any other codes kept, in order)."""
        kept = tuple(
            code
            for code in confidentiality
            if not (code.scheme == DMP_CONFIDENTIALITY_SYSTEM and code.code in _RESTRICTIONS)
        )
        return (*kept, *self.codes())


RESTRICTION_CODES = (
    Coded(MASKED_FROM_PROFESSIONALS, DMP_CONFIDENTIALITY_SYSTEM, "Masqué aux PS"),
    Coded(INVISIBLE_TO_PATIENT, DMP_CONFIDENTIALITY_SYSTEM, "Non visible par le patient"),
    Coded(
        INVISIBLE_TO_LEGAL_REPRESENTATIVES,
        DMP_CONFIDENTIALITY_SYSTEM,
        "Non visible par les représentants légaux du patient",
    ),
)
"""The DMP restriction codes, in :class:`Visibility`'s order, with their labels."""
_RESTRICTIONS = frozenset(code.code for code in RESTRICTION_CODES)


@dataclass(frozen=True)
class DocumentEntry:
    """The metadata of one document (XDSDocumentEntry).

    Times are ``YYYYMMDDHHMMSS`` UTC strings (see :func:`transport.xml.format_ts`). ``hash`` is
    the SHA-1 of the content in lowercase hex and ``size`` its length in bytes, both computed from
    the content on submission (:meth:`with_content`). ``entry_uuid``, ``status``,
    ``repository_unique_id`` and ``version`` are the registry's and are read back from query
    answers.
    """

    patient: Patient
    unique_id: str
    title: str
    class_code: Coded
    type_code: Coded
    format_code: Coded
    healthcare_facility_type: Coded
    practice_setting: Coded
    creation_time: str
    authors: tuple[Author, ...] = ()
    confidentiality: tuple[Coded, ...] = (Coded("N", "2.16.840.1.113883.5.25", "Normal"),)
    mime_type: str = "text/xml"
    language: str = "fr-FR"
    comments: str | None = None
    service_start_time: str | None = None
    service_stop_time: str | None = None
    legal_authenticator: str | None = None
    source_patient_id: str | None = None
    source_patient_info: tuple[str, ...] = ()
    event_codes: tuple[Coded, ...] = ()
    hash: str | None = None
    size: int | None = None
    entry_uuid: str | None = None
    logical_id: str | None = None
    status: str | None = None
    repository_unique_id: str | None = None
    version: str | None = None

    def with_content(self, content: bytes | Iterable[bytes]) -> DocumentEntry:
        """The same entry with ``hash`` and ``size`` computed from the content's bytes."""
        digest, size = hashlib.sha1(usedforsecurity=False), 0
        for chunk in (content,) if isinstance(content, bytes) else content:
            digest.update(chunk)
            size += len(chunk)
        return replace(self, hash=digest.hexdigest(), size=size)

    @property
    def masked(self) -> bool:
        """Whether the document is masked from professionals (``MASQUE_PS``)."""
        return any(code.code == MASKED_FROM_PROFESSIONALS for code in self.confidentiality)

    @property
    def visibility(self) -> Visibility:
        """The document's DMP restrictions (its confidentiality codes)."""
        return Visibility.of(self.confidentiality)


@dataclass(frozen=True)
class SubmissionSet:
    """The metadata of one submission (XDSSubmissionSet); times as in DocumentEntry."""

    patient: Patient
    unique_id: str
    source_id: str
    submission_time: str
    content_type: Coded
    authors: tuple[Author, ...] = ()
    title: str | None = None
    comments: str | None = None


@dataclass(frozen=True)
class Association:
    """An ebRIM association between two registry objects (by id), with its slots."""

    type: str
    source: str
    target: str
    slots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    id: str = ""


# ---------------------------------------------------------------------------------------------
# Writing ebRIM


def _slot(parent: etree._Element, name: str, values: Sequence[str]) -> None:
    slot = etree.SubElement(parent, _rim("Slot"), name=name)
    value_list = etree.SubElement(slot, _rim("ValueList"))
    for value in values:
        etree.SubElement(value_list, _rim("Value")).text = value


def _localized(parent: etree._Element, tag: str, text: str | None) -> None:
    if text is None:
        return
    holder = etree.SubElement(parent, _rim(tag))
    string = etree.SubElement(holder, _rim("LocalizedString"), charset="UTF8", value=text)
    string.set(XML_LANG, "fr-FR")


class _Ids:
    """Symbolic ids for the classifications and identifiers of one message."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"


def _classification(
    parent: etree._Element, scheme: str, owner: str, ids: _Ids, code: Coded | None = None
) -> etree._Element:
    element = etree.SubElement(
        parent,
        _rim("Classification"),
        classificationScheme=scheme,
        classifiedObject=owner,
        id=ids("cl"),
        nodeRepresentation=code.code if code else "",
    )
    if code is not None:
        _slot(element, "codingScheme", (code.scheme,))
        _localized(element, "Name", code.display)
    return element


def _author(parent: etree._Element, scheme: str, owner: str, ids: _Ids, author: Author) -> None:
    element = _classification(parent, scheme, owner, ids)
    for name, values in author.slots():
        _slot(element, name, values)


def _external_id(
    parent: etree._Element, scheme: str, owner: str, ids: _Ids, value: str, label: str
) -> None:
    element = etree.SubElement(
        parent,
        _rim("ExternalIdentifier"),
        id=ids("ei"),
        identificationScheme=scheme,
        registryObject=owner,
        value=value,
    )
    _localized(element, "Name", label)


def document_entry_element(
    entry: DocumentEntry, object_id: str, ids: _Ids | None = None
) -> etree._Element:
    """The ``ExtrinsicObject`` of ``entry`` with id ``object_id`` (symbolic or ``urn:uuid:``)."""
    ids = ids or _Ids()
    element = etree.Element(
        _rim("ExtrinsicObject"), id=object_id, mimeType=entry.mime_type, objectType=STABLE_DOCUMENT
    )
    if entry.logical_id:
        element.set("lid", entry.logical_id)
    if entry.status:
        element.set("status", entry.status)
    slots: list[tuple[str, Sequence[str]]] = [
        ("creationTime", (entry.creation_time,)),
        ("hash", (entry.hash,) if entry.hash else ()),
        ("languageCode", (entry.language,)),
        ("legalAuthenticator", (entry.legal_authenticator,) if entry.legal_authenticator else ()),
        ("repositoryUniqueId", (entry.repository_unique_id,) if entry.repository_unique_id else ()),
        ("serviceStartTime", (entry.service_start_time,) if entry.service_start_time else ()),
        ("serviceStopTime", (entry.service_stop_time,) if entry.service_stop_time else ()),
        ("size", (str(entry.size),) if entry.size is not None else ()),
        ("sourcePatientId", (entry.source_patient_id,) if entry.source_patient_id else ()),
        ("sourcePatientInfo", entry.source_patient_info),
    ]
    for name, values in slots:
        if values:
            _slot(element, name, values)
    _localized(element, "Name", entry.title)
    _localized(element, "Description", entry.comments)
    if entry.version is not None:
        etree.SubElement(element, _rim("VersionInfo"), versionName=entry.version)
    for author in entry.authors:
        _author(element, _DE_AUTHOR, object_id, ids, author)
    _classification(element, _DE_CLASS, object_id, ids, entry.class_code)
    for code in entry.confidentiality:
        _classification(element, _DE_CONFIDENTIALITY, object_id, ids, code)
    for code in entry.event_codes:
        _classification(element, _DE_EVENT, object_id, ids, code)
    _classification(element, _DE_FORMAT, object_id, ids, entry.format_code)
    _classification(element, _DE_FACILITY, object_id, ids, entry.healthcare_facility_type)
    _classification(element, _DE_PRACTICE, object_id, ids, entry.practice_setting)
    _classification(element, _DE_TYPE, object_id, ids, entry.type_code)
    _external_id(
        element,
        _DE_PATIENT_ID,
        object_id,
        ids,
        patient_id(entry.patient),
        "XDSDocumentEntry.patientId",
    )
    _external_id(
        element, _DE_UNIQUE_ID, object_id, ids, entry.unique_id, "XDSDocumentEntry.uniqueId"
    )
    return element


def submission_set_element(submission: SubmissionSet, object_id: str, ids: _Ids) -> etree._Element:
    """The ``RegistryPackage`` of ``submission`` with id ``object_id``."""
    element = etree.Element(_rim("RegistryPackage"), id=object_id)
    _slot(element, "submissionTime", (submission.submission_time,))
    _localized(element, "Name", submission.title)
    _localized(element, "Description", submission.comments)
    for author in submission.authors:
        _author(element, _SS_AUTHOR, object_id, ids, author)
    _classification(element, _SS_CONTENT_TYPE, object_id, ids, submission.content_type)
    etree.SubElement(
        element,
        _rim("Classification"),
        classificationNode=SUBMISSION_SET_NODE,
        classifiedObject=object_id,
        id=ids("cl"),
    )
    patient = patient_id(submission.patient)
    _external_id(element, _SS_PATIENT_ID, object_id, ids, patient, "XDSSubmissionSet.patientId")
    _external_id(
        element, _SS_SOURCE_ID, object_id, ids, submission.source_id, "XDSSubmissionSet.sourceId"
    )
    _external_id(
        element, _SS_UNIQUE_ID, object_id, ids, submission.unique_id, "XDSSubmissionSet.uniqueId"
    )
    return element


def association_element(association: Association, ids: _Ids) -> etree._Element:
    """The ebRIM ``Association`` element."""
    element = etree.Element(
        _rim("Association"),
        associationType=association.type,
        id=association.id or ids("as"),
        sourceObject=association.source,
        targetObject=association.target,
    )
    for name, values in association.slots.items():
        _slot(element, name, values)
    return element


@dataclass(frozen=True)
class OutgoingDocument:
    """A document of an ITI-41 submission: its metadata and the MTOM Content-ID of its bytes.

    ``signs``: this document is the submission set's signature (IHE DSG), linked to the set by
    a ``signs`` association. ``replaces``: the entryUUID of the entry this document replaces,
    linked by an ``RPLC`` association (IHE ITI TF-3 §4.2.2.2; the registry deprecates it).
    """

    entry: DocumentEntry
    content_id: str
    signs: bool = False
    replaces: str | None = None


def provide_and_register_request(
    submission: SubmissionSet, documents: Sequence[OutgoingDocument]
) -> etree._Element:
    """The ITI-41 ``ProvideAndRegisterDocumentSetRequest``, documents as ``xop:Include``."""
    ids = _Ids()
    root = etree.Element(_xdsb("ProvideAndRegisterDocumentSetRequest"), nsmap=NSMAP)
    objects = _submit_objects(root)
    objects.append(submission_set_element(submission, "SubmissionSet01", ids))
    for number, document in enumerate(documents, 1):
        objects.append(document_entry_element(document.entry, f"Document{number:02d}", ids))
    for number, document in enumerate(documents, 1):
        member = Association(
            HAS_MEMBER,
            "SubmissionSet01",
            f"Document{number:02d}",
            {"SubmissionSetStatus": ("Original",)},
        )
        objects.append(association_element(member, ids))
        if document.signs:
            # The official TD2.1 capture and ANS's DRIMBox both mark the signs association
            # Original too, as a HasMember one.
            signs = Association(SIGNS, member.target, member.source, member.slots)
            objects.append(association_element(signs, ids))
        if document.replaces:
            objects.append(
                association_element(Association(REPLACES, member.target, document.replaces), ids)
            )
    for number, document in enumerate(documents, 1):
        holder = etree.SubElement(root, _xdsb("Document"), id=f"Document{number:02d}")
        holder.append(include(document.content_id))
    return root


def _submit_objects(parent: etree._Element) -> etree._Element:
    request = etree.SubElement(parent, _lcm("SubmitObjectsRequest"))
    return etree.SubElement(request, _rim("RegistryObjectList"))


def update_status_request(
    submission: SubmissionSet, entry_uuid: str, original: str, new: str
) -> etree._Element:
    """The ITI-57 ``SubmitObjectsRequest`` changing a document's availability status (TD3.3c/d)."""
    ids = _Ids()
    root = etree.Element(_lcm("SubmitObjectsRequest"), nsmap=NSMAP)
    objects = etree.SubElement(root, _rim("RegistryObjectList"))
    objects.append(submission_set_element(submission, "SubmissionSet01", ids))
    change = Association(
        UPDATE_AVAILABILITY_STATUS,
        "SubmissionSet01",
        entry_uuid,
        {"OriginalStatus": (original,), "NewStatus": (new,)},
    )
    objects.append(association_element(change, ids))
    return root


def update_metadata_request(
    submission: SubmissionSet, entry: DocumentEntry, previous_version: str
) -> etree._Element:
    """The ITI-57 ``SubmitObjectsRequest`` registering a new version of ``entry``'s metadata.

    ``entry.logical_id`` must name the document's logical id (its first entryUUID); the registry
    deprecates ``previous_version`` and approves the new one (TD3.3a: masking).
    """
    if not entry.logical_id:
        raise ValidationError("logical_id", "a metadata update names the document's logical id")
    ids = _Ids()
    root = etree.Element(_lcm("SubmitObjectsRequest"), nsmap=NSMAP)
    objects = etree.SubElement(root, _rim("RegistryObjectList"))
    objects.append(submission_set_element(submission, "SubmissionSet01", ids))
    update = replace(entry, entry_uuid=None, status=None, version=None)
    objects.append(document_entry_element(update, "Document01", ids))
    member = Association(
        HAS_MEMBER,
        "SubmissionSet01",
        "Document01",
        {"SubmissionSetStatus": ("Original",), "PreviousVersion": (previous_version,)},
    )
    objects.append(association_element(member, ids))
    return root


@dataclass(frozen=True)
class StoredQuery:
    """An ITI-18 stored query: its id, its ``$`` parameters (values as written, with quotes and
    parentheses), the return type, and the ebRS paging window (``max_results`` -1: no limit)."""

    query_id: str
    parameters: Mapping[str, tuple[str, ...]]
    return_type: str = "LeafClass"
    start_index: int = 0
    max_results: int = -1


def quoted(value: str) -> str:
    """A stored-query string literal: ``'value'`` with inner quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def quoted_list(values: Iterable[str]) -> str:
    """A stored-query list: ``('a','b')``."""
    return "(" + ",".join(quoted(value) for value in values) + ")"


def find_documents(
    patient: Patient,
    statuses: Iterable[str] = (APPROVED,),
    *,
    return_type: str = "LeafClass",
    start_index: int = 0,
    max_results: int = -1,
) -> StoredQuery:
    """FindDocuments for a patient and statuses (TD3.1)."""
    return StoredQuery(
        FIND_DOCUMENTS,
        {
            "$XDSDocumentEntryPatientId": (quoted(patient_id(patient)),),
            "$XDSDocumentEntryStatus": (quoted_list(statuses),),
        },
        return_type,
        start_index,
        max_results,
    )


def get_documents(
    *, entry_uuids: Iterable[str] = (), unique_ids: Iterable[str] = ()
) -> StoredQuery:
    """GetDocuments by entryUUIDs or by uniqueIds (one of the two)."""
    entry_uuids, unique_ids = tuple(entry_uuids), tuple(unique_ids)
    if bool(entry_uuids) == bool(unique_ids):
        raise ValidationError("GetDocuments", "give entry UUIDs or unique ids, not both")
    name, values = (
        ("$XDSDocumentEntryEntryUUID", entry_uuids)
        if entry_uuids
        else ("$XDSDocumentEntryUniqueId", unique_ids)
    )
    return StoredQuery(GET_DOCUMENTS, {name: (quoted_list(values),)})


def query_request(query: StoredQuery) -> etree._Element:
    """The ITI-18 ``AdhocQueryRequest`` of ``query``."""
    root = etree.Element(_query("AdhocQueryRequest"), nsmap=NSMAP)
    if query.start_index:
        root.set("startIndex", str(query.start_index))
    if query.max_results >= 0:
        root.set("maxResults", str(query.max_results))
    etree.SubElement(
        root,
        _query("ResponseOption"),
        returnComposedObjects="true",
        returnType=query.return_type,
    )
    adhoc = etree.SubElement(root, _rim("AdhocQuery"), id=query.query_id)
    for name, values in query.parameters.items():
        _slot(adhoc, name, values)
    return root


def read_query_request(element: etree._Element) -> StoredQuery:
    """The stored query of an ``AdhocQueryRequest``; ValidationError when malformed."""
    _query.expect(element, "AdhocQueryRequest")
    adhoc = element.find(_rim("AdhocQuery"))
    if adhoc is None or not adhoc.get("id"):
        raise ValidationError("AdhocQuery", "the request has no AdhocQuery with an id")
    option = element.find(_query("ResponseOption"))
    return StoredQuery(
        adhoc.get("id", ""),
        _slots(adhoc),
        option.get("returnType", "LeafClass") if option is not None else "LeafClass",
        _integer(element.get("startIndex"), "startIndex", 0),
        _integer(element.get("maxResults"), "maxResults", -1),
    )


def parse_list(value: str) -> tuple[str, ...]:
    """The strings of a stored-query value: ``'a'`` or ``('a','b')`` (``''`` escapes a quote)."""
    text = value.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    found: list[str] = []
    position = 0
    while position < len(text):
        if text[position] in " ,":
            position += 1
            continue
        if text[position] != "'":
            raise ValidationError("stored query", f"expected a quoted string in {value!r}")
        end, parts = position + 1, []
        while True:
            closing = text.find("'", end)
            if closing < 0:
                raise ValidationError("stored query", f"unterminated string in {value!r}")
            parts.append(text[end:closing])
            if text.startswith("''", closing):
                parts.append("'")
                end = closing + 2
                continue
            position = closing + 1
            break
        found.append("".join(parts))
    return tuple(found)


# ---------------------------------------------------------------------------------------------
# Reading ebRIM


def _integer(value: str | None, what: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValidationError(what, f"not an integer: {value!r}") from None


def _slots(element: etree._Element) -> dict[str, tuple[str, ...]]:
    return {
        slot.get("name", ""): tuple(value.text or "" for value in slot.iter(_rim("Value")))
        for slot in element.findall(_rim("Slot"))
    }


def _localized_text(element: etree._Element, tag: str) -> str | None:
    string = element.find(f"{_rim(tag)}/{_rim('LocalizedString')}")
    return string.get("value") if string is not None else None


def _codes(element: etree._Element, scheme: str) -> tuple[Coded, ...]:
    return tuple(
        Coded(
            item.get("nodeRepresentation", ""),
            first_value(_slots(item), "codingScheme") or "",
            _localized_text(item, "Name") or "",
        )
        for item in element.findall(_rim("Classification"))
        if item.get("classificationScheme") == scheme
    )


def _one_code(element: etree._Element, scheme: str, what: str) -> Coded:
    codes = _codes(element, scheme)
    if len(codes) != 1:
        raise ValidationError(what, f"expected one {what}, found {len(codes)}")
    return codes[0]


def _authors(element: etree._Element, scheme: str) -> tuple[Author, ...]:
    authors = []
    for item in element.findall(_rim("Classification")):
        if item.get("classificationScheme") != scheme:
            continue
        slots = _slots(item)
        person = first_value(slots, "authorPerson")
        authors.append(
            Author(
                person,
                slots.get("authorInstitution", ()),
                slots.get("authorSpecialty", ()),
                slots.get("authorRole", ()),
            )
        )
    return tuple(authors)


def _external(element: etree._Element, scheme: str, what: str) -> str:
    for item in element.findall(_rim("ExternalIdentifier")):
        if item.get("identificationScheme") == scheme and item.get("value"):
            return item.get("value", "")
    raise ValidationError(what, f"the {what} external identifier is missing")


def first_value(slots: Mapping[str, tuple[str, ...]], name: str) -> str | None:
    """The first value of the slot ``name``; None when the slot is absent or its ValueList is
    empty (ebRIM 3.0 allows an empty one)."""
    values = slots.get(name)
    return values[0] if values else None


def read_document_entry(element: etree._Element) -> DocumentEntry:
    """The DocumentEntry of an ``ExtrinsicObject``; ValidationError names what is missing."""
    _rim.expect(element, "ExtrinsicObject")
    slots = _slots(element)
    creation = first_value(slots, "creationTime")
    if not creation:
        raise ValidationError("creationTime", "the document has no creationTime")
    size = first_value(slots, "size")
    version = element.find(_rim("VersionInfo"))
    object_id = element.get("id", "")
    return DocumentEntry(
        patient=read_patient_id(_external(element, _DE_PATIENT_ID, "XDSDocumentEntry.patientId")),
        unique_id=_external(element, _DE_UNIQUE_ID, "XDSDocumentEntry.uniqueId"),
        title=_localized_text(element, "Name") or "",
        class_code=_one_code(element, _DE_CLASS, "classCode"),
        type_code=_one_code(element, _DE_TYPE, "typeCode"),
        format_code=_one_code(element, _DE_FORMAT, "formatCode"),
        healthcare_facility_type=_one_code(element, _DE_FACILITY, "healthcareFacilityTypeCode"),
        practice_setting=_one_code(element, _DE_PRACTICE, "practiceSettingCode"),
        creation_time=creation,
        authors=_authors(element, _DE_AUTHOR),
        confidentiality=_codes(element, _DE_CONFIDENTIALITY),
        mime_type=element.get("mimeType", ""),
        language=first_value(slots, "languageCode") or "",
        comments=_localized_text(element, "Description"),
        service_start_time=first_value(slots, "serviceStartTime"),
        service_stop_time=first_value(slots, "serviceStopTime"),
        legal_authenticator=first_value(slots, "legalAuthenticator"),
        source_patient_id=first_value(slots, "sourcePatientId"),
        source_patient_info=slots.get("sourcePatientInfo", ()),
        event_codes=_codes(element, _DE_EVENT),
        hash=first_value(slots, "hash"),
        size=_integer(size, "size", 0) if size is not None else None,
        entry_uuid=object_id if object_id.startswith("urn:uuid:") else None,
        logical_id=element.get("lid"),
        status=element.get("status"),
        repository_unique_id=first_value(slots, "repositoryUniqueId"),
        version=version.get("versionName") if version is not None else None,
    )


def read_submission_set(element: etree._Element) -> SubmissionSet:
    """The SubmissionSet of a ``RegistryPackage``."""
    _rim.expect(element, "RegistryPackage")
    time = first_value(_slots(element), "submissionTime")
    if not time:
        raise ValidationError("submissionTime", "the submission set has no submissionTime")
    return SubmissionSet(
        patient=read_patient_id(_external(element, _SS_PATIENT_ID, "XDSSubmissionSet.patientId")),
        unique_id=_external(element, _SS_UNIQUE_ID, "XDSSubmissionSet.uniqueId"),
        source_id=_external(element, _SS_SOURCE_ID, "XDSSubmissionSet.sourceId"),
        submission_time=time,
        content_type=_one_code(element, _SS_CONTENT_TYPE, "contentTypeCode"),
        authors=_authors(element, _SS_AUTHOR),
        title=_localized_text(element, "Name"),
        comments=_localized_text(element, "Description"),
    )


def read_association(element: etree._Element) -> Association:
    """An ``Association`` element."""
    return Association(
        element.get("associationType", ""),
        element.get("sourceObject", ""),
        element.get("targetObject", ""),
        _slots(element),
        element.get("id", ""),
    )


@dataclass(frozen=True)
class Submission:
    """What a ``SubmitObjectsRequest`` carries: the submission set, the document entries by
    their (symbolic) ids, the associations, and for ITI-41 the ``xop:Include`` of each document."""

    submission_set: SubmissionSet
    submission_set_id: str
    entries: Mapping[str, DocumentEntry]
    associations: tuple[Association, ...]
    includes: Mapping[str, etree._Element] = field(default_factory=dict)


def read_submit_objects(element: etree._Element) -> Submission:
    """Read an ITI-57 ``SubmitObjectsRequest`` (or the one inside an ITI-41 request)."""
    _lcm.expect(element, "SubmitObjectsRequest")
    objects = element.find(_rim("RegistryObjectList"))
    if objects is None:
        raise ValidationError("RegistryObjectList", "the submission holds no registry objects")
    packages = objects.findall(_rim("RegistryPackage"))
    if len(packages) != 1:
        raise ValidationError("RegistryPackage", "a submission holds exactly one submission set")
    return Submission(
        read_submission_set(packages[0]),
        packages[0].get("id", ""),
        {
            item.get("id", ""): read_document_entry(item)
            for item in objects.findall(_rim("ExtrinsicObject"))
        },
        tuple(read_association(item) for item in objects.findall(_rim("Association"))),
    )


def read_provide_and_register(element: etree._Element) -> Submission:
    """Read an ITI-41 ``ProvideAndRegisterDocumentSetRequest``."""
    _xdsb.expect(element, "ProvideAndRegisterDocumentSetRequest")
    request = element.find(_lcm("SubmitObjectsRequest"))
    if request is None:
        raise ValidationError("SubmitObjectsRequest", "the request has no SubmitObjectsRequest")
    submission = read_submit_objects(request)
    includes = {}
    for document in element.findall(_xdsb("Document")):
        found = document.find(_xop("Include"))
        if found is None:
            raise ValidationError("Document", "a document is not sent as an MTOM attachment")
        includes[document.get("id", "")] = found
    return replace(submission, includes=includes)


# ---------------------------------------------------------------------------------------------
# Responses


def registry_response(
    errors: Sequence[RegistryError] = (), *, status: str | None = None
) -> etree._Element:
    """A ``rs:RegistryResponse``: Failure when any error, else Success (or ``status``)."""
    if status is None:
        status = FAILURE if any(error.is_error for error in errors) else SUCCESS
    root = etree.Element(_rs("RegistryResponse"), nsmap=NSMAP, status=status)
    _errors(root, errors)
    return root


def _errors(parent: etree._Element, errors: Sequence[RegistryError]) -> None:
    if not errors:
        return
    holder = etree.SubElement(parent, _rs("RegistryErrorList"))
    for error in errors:
        item = etree.SubElement(
            holder,
            _rs("RegistryError"),
            errorCode=error.code,
            codeContext=error.context,
            severity=WARNING if error.severity == "Warning" else ERROR,
        )
        if error.location:
            item.set("location", error.location)


@dataclass(frozen=True)
class RegistryResult:
    """A registry's answer: its status URN and its errors and warnings."""

    status: str
    errors: tuple[RegistryError, ...] = ()

    @property
    def ok(self) -> bool:
        """True for Success (warnings allowed), False for Failure and PartialSuccess."""
        return self.status == SUCCESS


def read_registry_errors(element: etree._Element) -> tuple[RegistryError, ...]:
    """The ``RegistryError`` children of an element's ``RegistryErrorList``."""
    return tuple(
        RegistryError(
            item.get("errorCode", ""),
            item.get("codeContext", ""),
            "Warning" if (item.get("severity") or "").endswith("Warning") else "Error",
            item.get("location"),
        )
        for item in element.iterfind(f"{_rs('RegistryErrorList')}/{_rs('RegistryError')}")
    )


def read_registry_response(element: etree._Element) -> RegistryResult:
    """A ``rs:RegistryResponse`` read into a RegistryResult."""
    _rs.expect(element, "RegistryResponse")
    return RegistryResult(element.get("status", ""), read_registry_errors(element))


def query_response(
    entries: Sequence[DocumentEntry] = (),
    errors: Sequence[RegistryError] = (),
    *,
    object_refs: Sequence[str] = (),
    start_index: int = 0,
    total: int | None = None,
) -> etree._Element:
    """An ``AdhocQueryResponse`` with LeafClass ``entries`` (each with its ``entry_uuid``) or
    ObjectRef ``object_refs``, and the paging attributes."""
    status = FAILURE if any(error.is_error for error in errors) else SUCCESS
    root = etree.Element(_query("AdhocQueryResponse"), nsmap=NSMAP, status=status)
    if total is not None:
        root.set("startIndex", str(start_index))
        root.set("totalResultCount", str(total))
    _errors(root, errors)
    objects = etree.SubElement(root, _rim("RegistryObjectList"))
    ids = _Ids()
    for entry in entries:
        objects.append(document_entry_element(entry, entry.entry_uuid or new_entry_uuid(), ids))
    for reference in object_refs:
        etree.SubElement(objects, _rim("ObjectRef"), id=reference)
    return root


@dataclass(frozen=True)
class QueryResult:
    """An ITI-18 answer: entries (LeafClass) or references (ObjectRef), errors, paging."""

    status: str
    entries: tuple[DocumentEntry, ...] = ()
    object_refs: tuple[str, ...] = ()
    errors: tuple[RegistryError, ...] = ()
    start_index: int = 0
    total: int | None = None


def read_query_response(element: etree._Element) -> QueryResult:
    """An ``AdhocQueryResponse`` read into a QueryResult."""
    _query.expect(element, "AdhocQueryResponse")
    objects = element.find(_rim("RegistryObjectList"))
    entries: tuple[DocumentEntry, ...] = ()
    references: tuple[str, ...] = ()
    if objects is not None:
        entries = tuple(
            read_document_entry(item) for item in objects.findall(_rim("ExtrinsicObject"))
        )
        references = tuple(item.get("id", "") for item in objects.findall(_rim("ObjectRef")))
    total = element.get("totalResultCount")
    return QueryResult(
        element.get("status", ""),
        entries,
        references,
        read_registry_errors(element),
        _integer(element.get("startIndex"), "startIndex", 0),
        _integer(total, "totalResultCount", 0) if total is not None else None,
    )


@dataclass(frozen=True)
class DocumentRequest:
    """One document to retrieve (ITI-43): the repository and document unique ids."""

    repository_unique_id: str
    document_unique_id: str


def retrieve_request(documents: Sequence[DocumentRequest]) -> etree._Element:
    """The ITI-43 ``RetrieveDocumentSetRequest``."""
    root = etree.Element(_xdsb("RetrieveDocumentSetRequest"), nsmap={None: XDSB_NS})
    for document in documents:
        item = etree.SubElement(root, _xdsb("DocumentRequest"))
        etree.SubElement(item, _xdsb("RepositoryUniqueId")).text = document.repository_unique_id
        etree.SubElement(item, _xdsb("DocumentUniqueId")).text = document.document_unique_id
    return root


def read_retrieve_request(element: etree._Element) -> tuple[DocumentRequest, ...]:
    """The documents an ITI-43 request asks for; ValidationError when malformed or empty."""
    _xdsb.expect(element, "RetrieveDocumentSetRequest")
    requests = []
    for item in element.findall(_xdsb("DocumentRequest")):
        repository = (item.findtext(_xdsb("RepositoryUniqueId")) or "").strip()
        document = (item.findtext(_xdsb("DocumentUniqueId")) or "").strip()
        if not repository or not document:
            raise ValidationError("DocumentRequest", "RepositoryUniqueId and DocumentUniqueId")
        requests.append(DocumentRequest(repository, document))
    if not requests:
        raise ValidationError("DocumentRequest", "the request asks for no document")
    return tuple(requests)


@dataclass(frozen=True)
class RetrievedDocument:
    """One document of an ITI-43 answer: ids, MIME type, and the ``xop:Include`` of its bytes."""

    repository_unique_id: str
    document_unique_id: str
    mime_type: str
    include: etree._Element = field(repr=False)


def retrieve_response(
    documents: Sequence[tuple[DocumentRequest, str, str]],
    errors: Sequence[RegistryError] = (),
) -> etree._Element:
    """The ITI-43 ``RetrieveDocumentSetResponse``; ``documents`` as (request, MIME type,
    Content-ID). Some documents and some errors: PartialSuccess."""
    status = SUCCESS
    if any(error.is_error for error in errors):
        status = PARTIAL_SUCCESS if documents else FAILURE
    root = etree.Element(_xdsb("RetrieveDocumentSetResponse"), nsmap=NSMAP)
    root.append(registry_response(errors, status=status))
    for request, mime_type, content_id in documents:
        item = etree.SubElement(root, _xdsb("DocumentResponse"))
        etree.SubElement(item, _xdsb("RepositoryUniqueId")).text = request.repository_unique_id
        etree.SubElement(item, _xdsb("DocumentUniqueId")).text = request.document_unique_id
        etree.SubElement(item, _xdsb("mimeType")).text = mime_type
        etree.SubElement(item, _xdsb("Document")).append(include(content_id))
    return root


@dataclass(frozen=True)
class RetrieveResult:
    """An ITI-43 answer: the registry status and errors, and the documents returned."""

    result: RegistryResult
    documents: tuple[RetrievedDocument, ...]


def read_retrieve_response(element: etree._Element) -> RetrieveResult:
    """A ``RetrieveDocumentSetResponse`` read into a RetrieveResult."""
    _xdsb.expect(element, "RetrieveDocumentSetResponse")
    response = element.find(_rs("RegistryResponse"))
    if response is None:
        raise ValidationError("RegistryResponse", "the answer has no RegistryResponse")
    documents = []
    for item in element.findall(_xdsb("DocumentResponse")):
        found = item.find(f"{_xdsb('Document')}/{_xop('Include')}")
        if found is None:
            raise ValidationError("Document", "a returned document is not an MTOM attachment")
        documents.append(
            RetrievedDocument(
                (item.findtext(_xdsb("RepositoryUniqueId")) or "").strip(),
                (item.findtext(_xdsb("DocumentUniqueId")) or "").strip(),
                (item.findtext(_xdsb("mimeType")) or "").strip(),
                found,
            )
        )
    return RetrieveResult(read_registry_response(response), tuple(documents))
