"""The header of a CDA R2 document, read and written, and the XDS metadata it gives.

:func:`read_header` reads the header of a CDA R2 document (HL7 CDA R2, ``POCD_HD000040``) as a
:class:`Header`, streaming: the parse stops where the body begins, so a document carrying a
200 MB base64 body costs the header's memory only. :func:`document_entry` derives the XDS
DocumentEntry from it as the CI-SIS maps the CDA header to the XDS metadata (ANS, *Volet de
transmission d'un document CDA-R2 en HL7v2*, "Mapping XDS", and IHE ITI TF-3 §5.2 for XDS-SD):
uniqueId from ``id``, typeCode from ``code``, classCode from the typeCode
(:data:`CLASS_BY_TYPE`), formatCode from the templateIds (:data:`FORMAT_BY_TEMPLATE`,
:data:`FORMAT_BY_MEDIA_TYPE`), and the rest from the header fields of the same meaning.

:func:`write_non_structured` wraps a PDF or text file as the CI-SIS / IHE XDS-SD non-structured
document ("CDA level 1"): the header from a :class:`Report`, the file base64-encoded in
``component/nonXMLBody/text``, streamed to disk in blocks.
"""

from __future__ import annotations

import base64
import io
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from lxml import etree

from transport.dmp import xds
from transport.dmp.hl7v3 import Demographics
from transport.errors import ValidationError
from transport.vihf import HL7_NS, Patient
from transport.xml import Namespace, iterparse_xml

XDS_SD_TEMPLATE = "1.3.6.1.4.1.19376.1.2.20"
"""The IHE XDS-SD templateId of a scanned / non-structured document (IHE ITI TF-3 §5.2)."""
CISIS_TEMPLATE = "1.2.250.1.213.1.1.1.1"
"""The templateId of a document following the CI-SIS *Volet Structuration Minimale*."""
HL7_FRANCE_TEMPLATE = "2.16.840.1.113883.2.8.2.1"
"""The HL7 France templateId of a French CDA R2 document."""

IDNAT_PS_OID = "1.2.250.1.71.4.2.1"
"""The root of a health professional's national identifier (RPPS / ADELI IdNat)."""
IDNAT_STRUCTURE_OID = "1.2.250.1.71.4.2.2"
"""The root of a structure's national identifier (IdNat structure)."""

LOINC = "2.16.840.1.113883.6.1"
"""The LOINC code system, the scheme of the CI-SIS typeCode."""
CLASS_SYSTEM = "1.2.250.1.213.1.1.4.1"
"""TRE_A03-ClasseDocument, the coding scheme of the CI-SIS classCode."""
NORMAL = xds.Coded("N", "2.16.840.1.113883.5.25", "Normal")
"""The HL7 confidentialityCode of an ordinary document."""

_REPORT = xds.Coded("10", CLASS_SYSTEM, "Compte rendu")
_SYNTHESIS = xds.Coded("11", CLASS_SYSTEM, "Synthèse")
_PRESCRIPTION = xds.Coded("42", CLASS_SYSTEM, "Prescription")
CLASS_BY_TYPE: dict[str, xds.Coded] = {
    "11488-4": _REPORT,  # CR de consultation
    "11490-0": _REPORT,  # Lettre de liaison à la sortie
    "11502-2": _REPORT,  # CR d'examens biologiques
    "11526-1": _REPORT,  # CR d'anatomie et de cytologie pathologiques
    "15507-7": _REPORT,  # CR de passage aux urgences
    "18748-4": _REPORT,  # CR d'imagerie médicale
    "27899-4": _REPORT,  # CR d'acte diagnostique (autre): the official TD2.1 example's pair
    "34112-3": _REPORT,  # CR d'hospitalisation
    "34874-9": _REPORT,  # CR opératoire
    "60591-5": _SYNTHESIS,  # Synthèse médicale
    "57833-6": _PRESCRIPTION,  # Prescription de produits de santé
}
"""The classCode the CI-SIS associates with a LOINC typeCode: the rows of the ANS association
table ASS_X04-CorrespondanceType-Classe-CISIS (Nomenclatures des Objets de Santé) for the
commonest DMP document types. A type missing here needs ``class_code=`` from the caller."""

_IHE_FORMAT = "1.3.6.1.4.1.19376.1.2.3"
_CISIS_FORMAT = "1.2.250.1.213.1.1.4.2.282"
FORMAT_BY_MEDIA_TYPE: dict[str, xds.Coded] = {
    "application/pdf": xds.Coded(
        "urn:ihe:iti:xds-sd:pdf:2008", _IHE_FORMAT, "Document à corps non structuré en Pdf/A-1"
    ),
    "text/plain": xds.Coded(
        "urn:ihe:iti:xds-sd:text:2008", _IHE_FORMAT, "Document à corps non structuré en texte brut"
    ),
    "text/rtf": xds.Coded("urn:ihe:iti-fr:xds-sd:rtf:2010", _IHE_FORMAT, "Document RTF"),
    "image/jpeg": xds.Coded("urn:ihe:iti-fr:xds-sd:jpeg:2010", _IHE_FORMAT, "Document JPEG"),
    "image/tiff": xds.Coded("urn:ihe:iti-fr:xds-sd:tiff:2010", _IHE_FORMAT, "Document TIFF"),
}
"""The formatCode of an XDS-SD document by its ``nonXMLBody/text/@mediaType``: the ANS
association table ASS_A12-CorresMediaTypeCDANonStructure-XdsFormatCode-CISIS."""


# The labels of these format codes are the codes themselves: the tables above are what is cited.
def _cisis(code: str) -> xds.Coded:
    return xds.Coded(code, _CISIS_FORMAT, code)


def _ihe(code: str) -> xds.Coded:
    return xds.Coded(code, _IHE_FORMAT, code)


FORMAT_BY_TEMPLATE: dict[str, xds.Coded] = {
    "1.2.250.1.213.1.1.1.5.1": _cisis("urn:asip:ci-sis:cse-cs8:2017"),
    "1.2.250.1.213.1.1.1.5.2": _cisis("urn:asip:ci-sis:cse-cs9:2017"),
    "1.2.250.1.213.1.1.1.5.3": _cisis("urn:asip:ci-sis:cse-cs24:2017"),
    "1.2.250.1.213.1.1.1.5.4": _cisis("urn:ans:ci-sis:cse-mde:2023"),
    "1.2.250.1.213.1.1.1.8": _cisis("urn:asip:ci-sis:frcp:2011"),
    "1.2.250.1.213.1.1.1.9": _cisis("urn:asip:ci-sis:idap:2011"),
    "1.2.250.1.213.1.1.1.10": _cisis("urn:asip:ci-sis:cva:2017"),
    "1.2.250.1.213.1.1.1.13": _cisis("urn:asip:ci-sis:vsm:2012"),
    "1.2.250.1.213.1.1.1.15": _cisis("urn:asip:ci-sis:aunv:2013"),
    "1.2.250.1.213.1.1.1.16": _cisis("urn:asip:ci-sis:eunv:2013"),
    "1.2.250.1.213.1.1.1.17": _cisis("urn:asip:ci-sis:sunv:2013"),
    "1.2.250.1.213.1.1.1.18": _cisis("urn:asip:ci-sis:crrtn:2013"),
    "1.2.250.1.213.1.1.1.2.1.1": _cisis("urn:asip:ci-sis:avk:2009"),
    "1.2.250.1.213.1.1.1.2.1.2": _cisis("urn:asip:ci-sis:tap:2009"),
    "1.2.250.1.213.1.1.1.2.1.3": _cisis("urn:asip:ci-sis:dci:2009"),
    "1.2.250.1.213.1.1.1.2.1.4": _cisis("urn:asip:ci-sis:psc:2009"),
    "1.2.250.1.213.1.1.1.2.1.5": _cisis("urn:asip:ci-sis:ppv:2009"),
    "1.2.250.1.213.1.1.1.22": _cisis("urn:asip:ci-sis:dlu:2015"),
    "1.2.250.1.213.1.1.1.32": _cisis("urn:asip:ci-sis:crgm:2018"),
    "1.2.250.1.213.1.1.1.37": _cisis("urn:asip:ci-sis:vac:2019"),
    "1.2.250.1.213.1.1.1.40": _cisis("urn:asip:ci-sis:cr-anest:2020"),
    "1.2.250.1.213.1.1.1.41": _cisis("urn:asip:ci-sis:cr-cpa:2020"),
    "1.2.250.1.213.1.1.1.46": _cisis("urn:asip:ci-sis:vac-note:2021"),
    "1.2.250.1.213.1.1.1.47": _cisis("urn:ans:ci-sis:img-da:2022"),
    "1.2.250.1.213.1.1.1.52": _cisis("urn:ans:ci-sis:bio-ep-bio:2022"),
    "1.2.250.1.213.1.1.1.39": _ihe("urn:ihe:pharm:pre:2010"),
    "1.2.250.1.213.1.1.1.54": _ihe("urn:ihe:pharm:dis:2010"),
    "1.2.250.1.213.1.1.1.45": _ihe("urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"),
    "1.2.250.1.213.1.1.1.55": _ihe("urn:ihe:lab:xd-lab:2008"),
    "1.3.6.1.4.1.19376.1.3.3": _ihe("urn:ihe:lab:xd-lab:2008"),
    "1.2.250.1.213.1.1.1.51": _ihe("urn:ihe:pcc:ips:2020"),
}
"""The formatCode of a structured CI-SIS document model by its templateId: rows of the ANS
association table ASS_A11-CorresModeleCDA-XdsFormatCode-CISIS (version 5.0.0; CI-SIS models in
TRE_A06-FormatCodeComplementaire, IHE profiles in TRE_A11-IheFormatCode). A model missing here
needs ``format_code=`` from the caller."""

_MIME_TYPE = "text/xml"
_BLOCK = 3 * 64 * 1024  # a multiple of 3: each block encodes to base64 without padding
_TEXT = f"{{{HL7_NS}}}text"
_NON_XML_BODY = f"{{{HL7_NS}}}nonXMLBody"
_STRUCTURED_BODY = f"{{{HL7_NS}}}structuredBody"
_NS = {"h": HL7_NS}
_hl7 = Namespace(HL7_NS)


# --- the header ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceId:
    """An HL7 ``II``: ``root`` (an OID or UUID) and an optional ``extension``."""

    root: str
    extension: str | None = None

    @property
    def unique_id(self) -> str:
        """The XDS uniqueId of a document with this id: ``root`` or ``root^extension``."""
        return f"{self.root}^{self.extension}" if self.extension else self.root


@dataclass(frozen=True)
class Organization:
    """A structure: its national id (IdNat structure, root :data:`IDNAT_STRUCTURE_OID`), name."""

    id: InstanceId | None = None
    name: str | None = None


@dataclass(frozen=True)
class Person:
    """A professional as a header names them: national id (RPPS/ADELI, root
    :data:`IDNAT_PS_OID`), family and given names."""

    id: InstanceId
    family: str = ""
    given: str = ""


@dataclass(frozen=True)
class Author:
    """A document's author: the person; ``specialty`` (``assignedAuthor/code``, JDV_J01
    XdsAuthorSpecialty), ``role`` (``functionCode``), ``organization``
    (``representedOrganization``), ``time`` (HL7 TS) when the header gives them."""

    person: Person
    specialty: xds.Coded | None = None
    role: xds.Coded | None = None
    organization: Organization | None = None
    time: str | None = None


@dataclass(frozen=True)
class Header:
    """What a CDA R2 header says, as XDS needs it. Times are HL7 TS strings as written
    (``YYYYMMDD[HHMM[SS]][±ZZZZ]``); codes are :class:`transport.dmp.xds.Coded`.

    ``patient_ids``: ``recordTarget/patientRole/id`` (the INS and any local ids; left out of the
    repr, being patient identifiers); ``practice_setting``:
    ``documentationOf/serviceEvent/performer/assignedEntity/representedOrganization/
    standardIndustryClassCode``; ``facility_type``:
    ``componentOf/encompassingEncounter/location/healthCareFacility/code``; ``media_type``:
    ``component/nonXMLBody/text/@mediaType`` (None for a structured body).
    """

    id: InstanceId
    code: xds.Coded
    title: str | None
    effective_time: str
    confidentiality: xds.Coded
    language: str | None
    patient_ids: tuple[InstanceId, ...] = field(repr=False)
    authors: tuple[Author, ...]
    legal_authenticator: Person | None
    custodian: Organization | None
    service_start: str | None
    service_stop: str | None
    practice_setting: xds.Coded | None
    facility_type: xds.Coded | None
    template_ids: tuple[str, ...]
    media_type: str | None


def read_header(source: bytes | Path) -> Header:
    """The header of the CDA R2 document ``source`` (its bytes or its file), parsed securely
    and only as far as the body. ValidationError names a missing mandatory element."""
    with _stream(source) as stream:
        root, media_type = _parse_to_body(stream)
    return _header(root, media_type)


@contextmanager
def _stream(source: bytes | Path) -> Iterator[BinaryIO]:
    if isinstance(source, bytes):
        yield io.BytesIO(source)
        return
    try:
        stream = source.open("rb")
    except OSError as error:
        raise ValidationError(
            "content", f"cannot read the CDA document: {error.strerror}"
        ) from None
    with stream:
        yield stream


def _parse_to_body(stream: BinaryIO) -> tuple[etree._Element, str | None]:
    """The document's root holding the whole header, and the non-XML body's media type; the
    parse stops at the body's start, so its content is never read."""
    events = iterparse_xml(stream, ("start",))
    _, root = next(events)  # an empty or non-XML input fails here, as MalformedXMLError
    if root.tag != f"{{{HL7_NS}}}ClinicalDocument":
        raise ValidationError("ClinicalDocument", "not a CDA R2 document")
    for _event, element in events:
        if element.tag == _STRUCTURED_BODY:
            return root, None
        if element.tag == _TEXT and _parent_tag(element) == _NON_XML_BODY:
            # HL7 ED: mediaType defaults to text/plain.
            return root, element.get("mediaType", "text/plain")
    return root, None


def _parent_tag(element: etree._Element) -> str | None:
    parent = element.getparent()
    return parent.tag if parent is not None else None


def _find(element: etree._Element | None, path: str) -> etree._Element | None:
    return element.find(path, _NS) if element is not None else None


def _required(root: etree._Element, path: str) -> etree._Element:
    found = _find(root, path)
    if found is None:
        raise ValidationError(path.replace("h:", ""), "missing from the CDA header")
    return found


def _coded(element: etree._Element | None) -> xds.Coded | None:
    if element is None or not element.get("code"):
        return None
    return xds.Coded(
        element.get("code", ""), element.get("codeSystem", ""), element.get("displayName", "")
    )


def _instance_id(element: etree._Element | None) -> InstanceId | None:
    if element is None or not element.get("root"):
        return None
    return InstanceId(element.get("root", ""), element.get("extension"))


def _text(element: etree._Element | None) -> str | None:
    text = element.text if element is not None else None
    return text.strip() if text else None


def _attribute(element: etree._Element | None, name: str) -> str | None:
    return element.get(name) if element is not None else None


def _value(element: etree._Element | None) -> str | None:
    return _attribute(element, "value")


def _person(assigned: etree._Element | None) -> Person | None:
    """The person of an ``assignedAuthor`` / ``assignedEntity``: the national id when it has
    one, else its first id."""
    ids = _instance_ids(assigned, "h:id")
    if not ids:
        return None
    national = next((item for item in ids if item.root == IDNAT_PS_OID), ids[0])
    name = _find(assigned, "h:assignedPerson/h:name")
    return Person(
        national, _text(_find(name, "h:family")) or "", _text(_find(name, "h:given")) or ""
    )


def _instance_ids(element: etree._Element | None, path: str) -> tuple[InstanceId, ...]:
    items = element.findall(path, _NS) if element is not None else ()
    return tuple(found for item in items if (found := _instance_id(item)) is not None)


def _organization(element: etree._Element | None) -> Organization | None:
    if element is None:
        return None
    return Organization(_instance_id(_find(element, "h:id")), _text(_find(element, "h:name")))


def _author(element: etree._Element) -> Author:
    assigned = _find(element, "h:assignedAuthor")
    person = _person(assigned)
    if person is None:
        raise ValidationError("author/assignedAuthor/id", "an author has no identifier")
    return Author(
        person,
        specialty=_coded(_find(assigned, "h:code")),
        role=_coded(_find(element, "h:functionCode")),
        organization=_organization(_find(assigned, "h:representedOrganization")),
        time=_value(_find(element, "h:time")),
    )


def _header(root: etree._Element, media_type: str | None) -> Header:
    identifier = _instance_id(_required(root, "h:id"))
    code = _coded(_required(root, "h:code"))
    confidentiality = _coded(_required(root, "h:confidentialityCode"))
    effective = _value(_required(root, "h:effectiveTime"))
    if identifier is None or code is None or confidentiality is None or not effective:
        raise ValidationError(
            "ClinicalDocument", "id, code, effectiveTime or confidentialityCode is empty"
        )
    event = _find(root, "h:documentationOf/h:serviceEvent")
    return Header(
        id=identifier,
        code=code,
        title=_text(_find(root, "h:title")),
        effective_time=effective,
        confidentiality=confidentiality,
        language=_attribute(_find(root, "h:languageCode"), "code"),
        patient_ids=_instance_ids(root, "h:recordTarget/h:patientRole/h:id"),
        authors=tuple(_author(item) for item in root.findall("h:author", _NS)),
        legal_authenticator=_person(_find(root, "h:legalAuthenticator/h:assignedEntity")),
        custodian=_organization(
            _find(root, "h:custodian/h:assignedCustodian/h:representedCustodianOrganization")
        ),
        service_start=_value(_find(event, "h:effectiveTime/h:low")),
        service_stop=_value(_find(event, "h:effectiveTime/h:high")),
        practice_setting=_coded(
            _find(
                event,
                "h:performer/h:assignedEntity/h:representedOrganization/h:standardIndustryClassCode",
            )
        ),
        facility_type=_coded(
            _find(
                root, "h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code"
            )
        ),
        template_ids=tuple(
            item.get("root", "") for item in root.findall("h:templateId", _NS) if item.get("root")
        ),
        media_type=media_type,
    )


# --- the XDS metadata ----------------------------------------------------------------------------


def document_entry(
    header: Header,
    patient: Patient,
    *,
    class_code: xds.Coded | None = None,
    format_code: xds.Coded | None = None,
    practice_setting: xds.Coded | None = None,
    healthcare_facility_type: xds.Coded | None = None,
) -> xds.DocumentEntry:
    """The XDS DocumentEntry of the document whose header is ``header``, submitted for
    ``patient`` (who must be its ``recordTarget``: ValidationError otherwise, before anything is
    sent). A code given by the caller wins over the one derived from the header; the practice
    setting and facility type must come from one or the other. An author's specialty and role
    become ``authorSpecialty`` / ``authorRole`` as ``code^label^codeSystem``, the DMP's form."""
    _check_patient(header, patient)
    if not header.authors:
        raise ValidationError("author", "the CDA header names no author")
    if not header.title:
        raise ValidationError("title", "the CDA header has no title")
    if not header.language:
        raise ValidationError("languageCode", "the CDA header has no languageCode")
    legal = header.legal_authenticator
    return xds.DocumentEntry(
        patient=patient,
        unique_id=header.id.unique_id,
        title=header.title,
        class_code=class_code or class_of(header.code),
        type_code=header.code,
        format_code=format_code or format_of(header),
        healthcare_facility_type=_either(
            healthcare_facility_type,
            header.facility_type,
            "componentOf/encompassingEncounter/location/healthCareFacility/code",
            "healthcare_facility_type",
        ),
        practice_setting=_either(
            practice_setting,
            header.practice_setting,
            "serviceEvent/performer/assignedEntity/representedOrganization/standardIndustryClassCode",
            "practice_setting",
        ),
        creation_time=xds_time_of(header.effective_time) or "",
        authors=tuple(_xds_author(author) for author in header.authors),
        confidentiality=(header.confidentiality,),
        mime_type=_MIME_TYPE,
        language=header.language,
        service_start_time=xds_time_of(header.service_start, "serviceEvent/effectiveTime/low"),
        service_stop_time=xds_time_of(header.service_stop, "serviceEvent/effectiveTime/high"),
        legal_authenticator=_xcn(legal, "legalAuthenticator") if legal else None,
        source_patient_id=_source_patient_id(header, patient),
    )


def class_of(type_code: xds.Coded) -> xds.Coded:
    """The classCode of a typeCode by :data:`CLASS_BY_TYPE`; ValidationError when unknown."""
    found = CLASS_BY_TYPE.get(type_code.code) if type_code.scheme == LOINC else None
    if found is None:
        raise ValidationError(
            "classCode",
            f"no classCode is known for the typeCode {type_code.code} ({type_code.scheme})",
            hint="pass class_code=",
        )
    return found


def format_of(header: Header) -> xds.Coded:
    """The formatCode of a document by its templateIds: an IHE XDS-SD document by its body's
    media type (:data:`FORMAT_BY_MEDIA_TYPE`), a structured model by :data:`FORMAT_BY_TEMPLATE`;
    ValidationError naming the templateIds when none is known."""
    if XDS_SD_TEMPLATE in header.template_ids:
        found = FORMAT_BY_MEDIA_TYPE.get(header.media_type or "")
        if found is None:
            raise ValidationError(
                "nonXMLBody/text/@mediaType",
                f"no XDS-SD formatCode is known for the media type {header.media_type!r}",
                hint="pass format_code=",
            )
        return found
    for template in header.template_ids:
        if template in FORMAT_BY_TEMPLATE:
            return FORMAT_BY_TEMPLATE[template]
    raise ValidationError(
        "templateId",
        "no formatCode is known for the templateIds "
        + (", ".join(header.template_ids) or "(none)"),
        hint="pass format_code=",
    )


def xds_time_of(value: str | None, what: str = "effectiveTime") -> str | None:
    """An HL7 TS as an XDS DTM: in UTC when it has a time and a zone (``20190221133445+0100``
    becomes ``20190221123445``), else its digits at their precision (a date stays a date).
    ValidationError names ``what`` when the value is not a TS."""
    if not value:
        return None
    match = re.fullmatch(r"(\d{4,14})(?:\.\d+)?([+-]\d{4})?", value)
    if match is None:
        raise ValidationError(what, f"not an HL7 TS: {value!r}")
    digits, zone = match.groups()
    if zone is None or len(digits) < 10:
        return digits
    try:
        moment = datetime.strptime(digits.ljust(14, "0"), "%Y%m%d%H%M%S")
    except ValueError:
        raise ValidationError(what, f"not a valid date and time: {value!r}") from None
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:]))
    utc = moment - offset if zone[0] == "+" else moment + offset
    return utc.strftime("%Y%m%d%H%M%S")[: len(digits)]


def _check_patient(header: Header, patient: Patient) -> None:
    # The INS is never echoed: the message names the field only.
    if not any(
        item.root == patient.oid and item.extension == patient.ins for item in header.patient_ids
    ):
        raise ValidationError(
            "recordTarget/patientRole/id",
            "the document's patient is not the patient of the submission",
            hint="submit the document for the patient its recordTarget names",
        )


def _either(given: xds.Coded | None, read: xds.Coded | None, path: str, option: str) -> xds.Coded:
    found = given or read
    if found is None:
        raise ValidationError(path, "missing from the CDA header", hint=f"pass {option}=")
    return found


def _xcn(person: Person, what: str) -> str:
    """The DMP's XCN of a professional (``IdNat^FAMILY^Given^…^IDNPS``)."""
    if person.id.root != IDNAT_PS_OID or not person.id.extension:
        raise ValidationError(
            f"{what}/id", f"not a national professional identifier (root {IDNAT_PS_OID})"
        )
    return xds.Author.professional(person.id.extension, person.family, person.given).person or ""


def _coded_string(code: xds.Coded | None) -> str | None:
    return f"{code.code}^{code.display}^{code.scheme}" if code else None


def _xds_author(author: Author) -> xds.Author:
    person = _xcn(author.person, "author")
    organization = author.organization or Organization()
    structure = organization.id
    made = xds.Author.professional(
        author.person.id.extension or "",
        author.person.family,
        author.person.given,
        specialty=_coded_string(author.specialty),
        institution=organization.name,
        structure_id=structure.extension
        if structure and structure.root == IDNAT_STRUCTURE_OID
        else None,
    )
    role = _coded_string(author.role)
    return xds.Author(person, made.institutions, made.specialties, (role,) if role else ())


def _source_patient_id(header: Header, patient: Patient) -> str:
    """The producer's own id of the patient (CX ``…^PI``), else the INS (CI-SIS mapping)."""
    for item in header.patient_ids:
        if item.extension and (item.root, item.extension) != (patient.oid, patient.ins):
            return f"{item.extension}^^^&{item.root}&ISO^PI"
    return xds.patient_id(patient)


# --- writing a non-structured document -----------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> InstanceId:
    return InstanceId(xds.new_unique_id())


@dataclass(frozen=True)
class Report:
    """The header of a non-structured document to write (:func:`write_non_structured`).

    ``author`` is also the legal authenticator unless ``legal_authenticator`` names another
    professional; ``custodian`` is the structure keeping the document (its IdNat id required);
    ``demographics`` (optional) writes the patient's name, sex and birth date as the CI-SIS
    *Volet Structuration Minimale* asks; ``time`` is the creation time and, unless given, the
    service's start and stop.
    """

    patient: Patient
    author: Author
    custodian: Organization
    type_code: xds.Coded
    title: str
    practice_setting: xds.Coded
    facility_type: xds.Coded
    demographics: Demographics | None = field(default=None, repr=False)
    confidentiality: xds.Coded = NORMAL
    language: str = "fr-FR"
    document_id: InstanceId = field(default_factory=_new_id)
    time: datetime = field(default_factory=_now)
    service_start: datetime | None = None
    service_stop: datetime | None = None
    legal_authenticator: Person | None = None


def write_non_structured(
    source: Path, media_type: str, report: Report, destination: Path | None = None
) -> Path:
    """Wrap the file ``source`` (``media_type``: ``application/pdf``, ``text/plain``…) as an
    IHE XDS-SD / CI-SIS non-structured CDA R2 document at ``destination`` (by default a new
    temporary file, mode 0600, the caller's to remove) and return its path.

    The file is read and base64-encoded in blocks, never whole; the document appears at
    ``destination`` only once complete (a failure leaves no file).
    """
    if media_type not in FORMAT_BY_MEDIA_TYPE:
        raise ValidationError("mediaType", f"no XDS-SD format is known for {media_type!r}")
    if report.custodian.id is None:
        raise ValidationError("custodian/id", "the custodian structure needs its identifier")
    if not source.is_file():
        raise ValidationError("content", "the file to wrap does not exist or is not a file")
    if destination is not None and not destination.parent.is_dir():
        raise ValidationError("output", "the folder of the output file does not exist")
    head, tail = _framing(report, media_type)
    handle, name = tempfile.mkstemp(
        dir=destination.parent if destination else None, prefix="cda-", suffix=".part"
    )
    written = Path(name)
    try:
        with os.fdopen(handle, "wb") as out, source.open("rb") as data:
            out.write(head)
            while block := data.read(_BLOCK):
                out.write(base64.b64encode(block))
            out.write(tail)
        final = destination or written.with_suffix(".xml")
        os.replace(written, final)
    except BaseException:
        written.unlink(missing_ok=True)
        raise
    return final


def _framing(report: Report, media_type: str) -> tuple[bytes, bytes]:
    """The serialized document before and after the body's base64 text."""
    root, text = _header_element(report, media_type)
    marker = uuid.uuid4().hex
    text.text = marker
    head, tail = etree.tostring(root, xml_declaration=True, encoding="UTF-8").split(marker.encode())
    return head, tail


def _hl7_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _write_code(parent: etree._Element, name: str, code: xds.Coded) -> None:
    _hl7.sub(parent, name, code=code.code, codeSystem=code.scheme, displayName=code.display or None)


def _write_id(parent: etree._Element, identifier: InstanceId) -> None:
    _hl7.sub(parent, "id", root=identifier.root, extension=identifier.extension)


def _write_name(parent: etree._Element, family: str, given: tuple[str, ...]) -> None:
    name = _hl7.sub(parent, "name")
    for item in given:
        if item:
            _hl7.sub(name, "given").text = item
    _hl7.sub(name, "family").text = family


def _write_organization(parent: etree._Element, organization: Organization) -> None:
    if organization.id is not None:
        _write_id(parent, organization.id)
    if organization.name:
        _hl7.sub(parent, "name").text = organization.name


def _write_person(parent: etree._Element, person: Person, specialty: xds.Coded | None) -> None:
    _write_id(parent, person.id)
    if specialty is not None:
        _write_code(parent, "code", specialty)
    _write_name(_hl7.sub(parent, "assignedPerson"), person.family, (person.given,))


def _write_span(parent: etree._Element, start: datetime, stop: datetime) -> None:
    span = _hl7.sub(parent, "effectiveTime")
    _hl7.sub(span, "low", value=_hl7_time(start))
    _hl7.sub(span, "high", value=_hl7_time(stop))


def _header_element(report: Report, media_type: str) -> tuple[etree._Element, etree._Element]:
    """The document in CDA R2 schema order, and its (empty) ``nonXMLBody/text``."""
    root = etree.Element(f"{{{HL7_NS}}}ClinicalDocument", nsmap={None: HL7_NS})
    _hl7.sub(root, "realmCode", code="FR")
    _hl7.sub(root, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    for template in (HL7_FRANCE_TEMPLATE, CISIS_TEMPLATE, XDS_SD_TEMPLATE):
        _hl7.sub(root, "templateId", root=template)
    _write_id(root, report.document_id)
    _write_code(root, "code", report.type_code)
    _hl7.sub(root, "title").text = report.title
    time = _hl7_time(report.time)
    _hl7.sub(root, "effectiveTime", value=time)
    _write_code(root, "confidentialityCode", report.confidentiality)
    _hl7.sub(root, "languageCode", code=report.language)
    _write_record_target(root, report)
    _write_author(root, report.author, time)
    assigned = _hl7.sub(_hl7.sub(root, "custodian"), "assignedCustodian")
    custodian = _hl7.sub(assigned, "representedCustodianOrganization")
    _write_organization(custodian, report.custodian)
    legal = _hl7.sub(root, "legalAuthenticator")
    _hl7.sub(legal, "time", value=time)
    _hl7.sub(legal, "signatureCode", code="S")
    _write_person(
        _hl7.sub(legal, "assignedEntity"), report.legal_authenticator or report.author.person, None
    )
    start, stop = report.service_start or report.time, report.service_stop or report.time
    event = _hl7.sub(_hl7.sub(root, "documentationOf"), "serviceEvent")
    _write_span(event, start, stop)
    performer = _hl7.sub(_hl7.sub(event, "performer", typeCode="PRF"), "assignedEntity")
    _write_id(performer, report.author.person.id)
    _write_code(
        _hl7.sub(performer, "representedOrganization"),
        "standardIndustryClassCode",
        report.practice_setting,
    )
    encounter = _hl7.sub(_hl7.sub(root, "componentOf"), "encompassingEncounter")
    _write_span(encounter, start, stop)
    facility = _hl7.sub(_hl7.sub(encounter, "location"), "healthCareFacility")
    _write_code(facility, "code", report.facility_type)
    body = _hl7.sub(_hl7.sub(root, "component"), "nonXMLBody")
    return root, _hl7.sub(body, "text", mediaType=media_type, representation="B64")


def _write_record_target(root: etree._Element, report: Report) -> None:
    role = _hl7.sub(_hl7.sub(root, "recordTarget"), "patientRole")
    _write_id(role, InstanceId(report.patient.oid, report.patient.ins))
    demographics = report.demographics
    if demographics is None:
        return
    patient = _hl7.sub(role, "patient")
    name = _hl7.sub(patient, "name")
    for given in demographics.given:
        _hl7.sub(name, "given").text = given
    _hl7.sub(name, "family", qualifier="SP").text = demographics.family
    if demographics.sex:
        _hl7.sub(
            patient,
            "administrativeGenderCode",
            code=demographics.sex,
            codeSystem="2.16.840.1.113883.5.1",
        )
    if demographics.birth_date:
        _hl7.sub(patient, "birthTime", value=demographics.birth_date)


def _write_author(root: etree._Element, author: Author, time: str) -> None:
    element = _hl7.sub(root, "author")
    if author.role is not None:
        _write_code(element, "functionCode", author.role)
    _hl7.sub(element, "time", value=author.time or time)
    assigned = _hl7.sub(element, "assignedAuthor")
    _write_person(assigned, author.person, author.specialty)
    if author.organization is not None:
        _write_organization(_hl7.sub(assigned, "representedOrganization"), author.organization)
