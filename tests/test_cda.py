"""CDA R2 documents in: the header read (streaming) against the official TD2.1 document and its
official metadata, PDF and text reports wrapped as CI-SIS / XDS-SD level 1 documents (valid
against a CDA R2 header schema, byte-exact bodies, bounded memory), refusals, and the DMP stub
round trip over real mutual TLS."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import DATA, REFERENCE
from tests.test_dmp_client import make_client
from tests.test_dmp_conformance import official_request
from tests.test_hl7v3 import demographics, oppositions
from tests.test_stub_dmp import new_patient
from transport.dmp import cda, xds
from transport.dmp.client import DmpClient, Document
from transport.errors import MalformedXMLError, ValidationError
from transport.stubs.app import DMP_SERVICES, Stubs
from transport.vihf import INS_TEST_OID, AuthMode, Patient
from transport.xml import parse_xml

OFFICIAL_DOCUMENT = REFERENCE / "dmp-examples" / "TD2.1-DocumentME2.xml"
OFFICIAL_PATIENT = Patient("207058575627097", INS_TEST_OID)
DATATYPES = REFERENCE / "dmp-wsdl" / "schema" / "HL7V3" / "NE2008" / "coreschemas" / "datatypes.xsd"

SPECIALTY = xds.Coded(
    "G15_10/SM26", "1.2.250.1.213.1.1.4.5", "Médecin - Qualifié en Médecine Générale (SM)"
)
ROLE = xds.Coded("PRELEVEUR", "1.2.250.1.213.1.1.4.6", "Préleveur")
STRUCTURE = cda.Organization(
    cda.InstanceId(cda.IDNAT_STRUCTURE_OID, "499900000001001"), "CABINET MEDICAL EXEMPLE"
)
AUTHOR = cda.Author(
    cda.Person(cda.InstanceId(cda.IDNAT_PS_OID, "899700000001"), "MEDECIN0001", "PAUL"),
    specialty=SPECIALTY,
    role=ROLE,
    organization=STRUCTURE,
)
CONSULTATION = xds.Coded("11488-4", cda.LOINC, "CR de consultation")
AMBULATORY = xds.Coded("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire")
PRACTICE_OFFICE = xds.Coded("SA07", "1.2.250.1.71.4.2.4", "Cabinet individuel")
MOMENT = datetime(2026, 3, 2, 9, 15, 30, tzinfo=UTC)


def report_fields(**changes: object) -> dict[str, object]:
    """The header of a consultation report, as a caller of from_pdf gives it."""
    fields: dict[str, object] = {
        "author": AUTHOR,
        "custodian": STRUCTURE,
        "type_code": CONSULTATION,
        "title": "Compte rendu de consultation",
        "practice_setting": AMBULATORY,
        "facility_type": PRACTICE_OFFICE,
        "demographics": demographics(),
        "time": MOMENT,
    }
    return fields | changes


def official_document() -> Path:
    if not OFFICIAL_DOCUMENT.is_file():
        pytest.skip(f"official example {OFFICIAL_DOCUMENT.name} not available (../shared)")
    return OFFICIAL_DOCUMENT


def official_entry(document_id: str = "DocumentME2") -> xds.DocumentEntry:
    """The official TD2.1 request's metadata of its CDA document."""
    request = official_request("TD2.1_-_Alimentation_request.xml")
    found = request.find(f".//{{{xds.XDSB_NS}}}ProvideAndRegisterDocumentSetRequest")
    return xds.read_provide_and_register(found).entries[document_id]


def body_sha1(path: Path) -> tuple[str, int]:
    """SHA-1 and size of a level 1 document's decoded base64 body, read in chunks."""
    digest, size, pending = hashlib.sha1(usedforsecurity=False), 0, b""
    with path.open("rb") as stream:
        head = b""
        while b'representation="B64">' not in head:
            chunk = stream.read(4096)
            assert chunk, "no base64 body"
            head += chunk
        pending = head.split(b'representation="B64">', 1)[1]
        while True:
            end = pending.find(b"<")
            text = pending if end < 0 else pending[:end]
            usable = len(text) - len(text) % 4
            decoded = base64.b64decode(text[:usable])
            digest.update(decoded)
            size += len(decoded)
            if end >= 0:
                assert usable == len(text), "truncated base64"
                return digest.hexdigest(), size
            pending = text[usable:] + stream.read(1 << 20)


@cache
def _header_schema() -> etree.XMLSchema:
    tree = etree.parse(str(DATA / "cda-r2-header.xsd"))
    (include,) = tree.getroot().findall("{http://www.w3.org/2001/XMLSchema}include")
    include.set("schemaLocation", DATATYPES.as_uri())
    return etree.XMLSchema(tree)


def header_schema() -> etree.XMLSchema:
    """The project's minimal CDA R2 header schema over the official HL7 V3 data types."""
    if not DATATYPES.is_file():
        pytest.skip(f"official HL7 V3 data types not available at {DATATYPES.parent} (../shared)")
    return _header_schema()


def assert_valid(path: Path) -> None:
    schema = header_schema()
    assert schema.validate(etree.parse(str(path))), schema.error_log.last_error


# --- the official TD2.1 document -----------------------------------------------------------------

TD21_ALLOWANCES = {
    "unique_id": "the request's metadata name another version of the document (…7898.3.…) "
    "than the document file's id (…7898.4.…)",
    "title": "the request titles it 'Document 1', the document 'Exemple de Document CDA R2 non "
    "Structure'",
    "creation_time": "the metadata's times are of 2010, the document's effectiveTime of 2019",
    "service_start_time": "as creationTime: the document's serviceEvent starts 2019-02-21",
    "service_stop_time": "the document's serviceEvent has no end; the metadata's is of 2010",
    "healthcare_facility_type": "the document's healthCareFacility is SA07 (cabinet), the "
    "metadata's SA01 (établissement public)",
    "legal_authenticator": "the document's legalAuthenticator has its given and family names "
    "the other way round from its author's; the metadata repeats the author's",
    "authors": "the document's author has no assignedAuthor/code nor representedOrganization: "
    "the metadata's specialty and institution come from elsewhere (the person is compared "
    "below)",
    "comments": "the metadata's description is not in the document",
    "source_patient_info": "sourcePatientInfo is optional and not derived (patient traits)",
}
"""Where the official TD2.1 request's metadata differ from what its own document says, each
with its reason; every other field must be equal."""


def test_the_official_td21_document_gives_the_official_request_metadata() -> None:
    header = cda.read_header(official_document())
    expected = official_entry()
    assert header.template_ids[-1] == cda.XDS_SD_TEMPLATE and header.media_type == "text/plain"
    # The document names no practice setting: the caller must (the request's here).
    with pytest.raises(ValidationError, match="standardIndustryClassCode"):
        cda.document_entry(header, OFFICIAL_PATIENT)
    derived = cda.document_entry(
        header, OFFICIAL_PATIENT, practice_setting=expected.practice_setting
    )

    differing = {
        item.name
        for item in dataclasses.fields(xds.DocumentEntry)
        if getattr(derived, item.name) != getattr(expected, item.name)
    }
    assert differing == set(TD21_ALLOWANCES), differing ^ set(TD21_ALLOWANCES)
    # Field by field, the ones the issue names:
    assert derived.type_code == expected.type_code
    assert derived.class_code == expected.class_code
    assert derived.format_code == expected.format_code
    assert derived.confidentiality == expected.confidentiality
    assert derived.patient == expected.patient
    assert derived.source_patient_id == expected.source_patient_id
    assert [a.person for a in derived.authors] == [a.person for a in expected.authors]
    assert derived.healthcare_facility_type == PRACTICE_OFFICE
    assert (derived.creation_time, derived.service_start_time) == ("20190221123445", "20190221")


def test_the_official_td21_document_is_valid_against_the_header_schema() -> None:
    assert_valid(official_document())


def test_the_header_schema_refuses_a_header_out_of_order(tmp_path: Path) -> None:
    root = etree.parse(str(official_document())).getroot()
    custodian = root.find("{urn:hl7-org:v3}custodian")
    root.remove(custodian)
    root.insert(root.index(root.find("{urn:hl7-org:v3}recordTarget")), custodian)
    assert not header_schema().validate(root)


def test_document_from_cda_refuses_another_patient_without_naming_either() -> None:
    other = new_patient()
    with pytest.raises(ValidationError) as refused:
        Document.from_cda(official_document(), other)
    assert refused.value.field == "recordTarget/patientRole/id"
    assert OFFICIAL_PATIENT.ins not in str(refused.value) and other.ins not in str(refused.value)
    assert OFFICIAL_PATIENT.ins not in repr(cda.read_header(official_document()))


def test_document_from_cda_takes_the_caller_codes_and_fields() -> None:
    practice = xds.Coded("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Etablissement de santé")
    synthesis = xds.Coded("11", cda.CLASS_SYSTEM, "Synthèse")
    document = Document.from_cda(
        official_document().read_bytes(),
        OFFICIAL_PATIENT,
        class_code=synthesis,
        practice_setting=practice,
        comments="relu",
    )
    assert (document.entry.class_code, document.entry.practice_setting) == (synthesis, practice)
    assert document.entry.comments == "relu"
    assert document.content == official_document().read_bytes()


# --- reading: refusals, streaming ------------------------------------------------------------


def level1(patient: Patient, tmp_path: Path, body: bytes = b"%PDF-1.7 test", **changes) -> Path:
    source = tmp_path / "source.pdf"
    source.write_bytes(body)
    report = cda.Report(patient, **report_fields(**changes))  # type: ignore[arg-type]
    return cda.write_non_structured(source, "application/pdf", report, tmp_path / "cda.xml")


def test_unknown_templateids_are_named_and_can_be_overridden(tmp_path: Path) -> None:
    patient = new_patient()
    data = level1(patient, tmp_path).read_bytes()
    unknown = data.replace(cda.XDS_SD_TEMPLATE.encode(), b"1.2.3.4.5").replace(
        cda.CISIS_TEMPLATE.encode(), b"1.2.3.4.6"
    )
    with pytest.raises(ValidationError) as refused:
        Document.from_cda(unknown, patient)
    assert refused.value.field == "templateId"
    assert "1.2.3.4.5" in str(refused.value) and "1.2.3.4.6" in str(refused.value)
    assert "format_code=" in str(refused.value)
    chosen = xds.Coded("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3")
    assert Document.from_cda(unknown, patient, format_code=chosen).entry.format_code == chosen
    # A structured CI-SIS model by its templateId (ASS_A11): the VSM.
    vsm = data.replace(cda.XDS_SD_TEMPLATE.encode(), b"1.2.250.1.213.1.1.1.13")
    assert Document.from_cda(vsm, patient).entry.format_code.code == "urn:asip:ci-sis:vsm:2012"


def test_an_unknown_type_needs_its_class_and_an_unknown_media_type_its_format(
    tmp_path: Path,
) -> None:
    patient = new_patient()
    odd = xds.Coded("99999-9", cda.LOINC, "Type inconnu")
    path = level1(patient, tmp_path, type_code=odd)
    with pytest.raises(ValidationError, match="99999-9") as refused:
        Document.from_cda(path, patient)
    assert refused.value.field == "classCode"
    chosen = xds.Coded("10", cda.CLASS_SYSTEM, "Compte rendu")
    assert Document.from_cda(path, patient, class_code=chosen).entry.class_code == chosen
    video = path.read_bytes().replace(b'mediaType="application/pdf"', b'mediaType="video/mp4"')
    with pytest.raises(ValidationError, match="video/mp4") as refused:
        Document.from_cda(video, patient, class_code=chosen)
    assert refused.value.field == "nonXMLBody/text/@mediaType"


def test_an_author_without_a_national_identifier_is_refused(tmp_path: Path) -> None:
    patient = new_patient()
    local = cda.Person(cda.InstanceId("1.2.250.1.999.5", "12"), "MEDECIN0001", "PAUL")
    path = level1(patient, tmp_path, author=cda.Author(local))
    with pytest.raises(ValidationError) as refused:
        Document.from_cda(path, patient)
    assert refused.value.field == "author/id"


def test_a_cda_with_a_doctype_is_refused() -> None:
    data = (
        b'<?xml version="1.0"?><!DOCTYPE ClinicalDocument [<!ENTITY x "y">]>'
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><id root="1.2"/></ClinicalDocument>'
    )
    with pytest.raises(MalformedXMLError):
        cda.read_header(data)


def test_not_a_cda_and_a_header_missing_its_code_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a CDA R2 document"):
        cda.read_header(b"<ClinicalDocument/>")
    with pytest.raises(ValidationError) as unreadable:
        cda.read_header(tmp_path / "missing.xml")
    assert unreadable.value.field == "content"
    with pytest.raises(MalformedXMLError):
        cda.read_header(b"")
    data = level1(new_patient(), tmp_path).read_bytes()
    start = data.index(b"<code ")
    without_code = data[:start] + data[data.index(b"/>", start) + 2 :]
    with pytest.raises(ValidationError) as refused:
        cda.read_header(without_code)
    assert refused.value.field == "code"


def test_reading_the_header_stops_where_the_body_begins(tmp_path: Path) -> None:
    # A body that is valid base64 for 4 MiB and then not XML at all: reading the header must
    # stop at the body's start and never reach the broken part.
    data = level1(new_patient(), tmp_path).read_bytes()
    head = data[: data.index(b'representation="B64">') + len(b'representation="B64">')]
    broken = head + b"QUJD" * (1 << 20) + b"<<not xml&"
    header = cda.read_header(broken)
    assert header.media_type == "application/pdf"
    with pytest.raises(MalformedXMLError):
        parse_xml(broken)  # the whole document is not XML


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20190221133445+0100", "20190221123445"),
        ("20190221003000-0230", "20190221030000"),
        ("20190101003000+0100", "20181231233000"),
        ("201902211334+0000", "201902211334"),
        ("20190221", "20190221"),
        ("20190221133445", "20190221133445"),
        ("20190221133445.123+0000", "20190221133445"),
    ],
)
def test_hl7_times_become_xds_times_in_utc(value: str, expected: str) -> None:
    assert cda.xds_time_of(value) == expected


def test_a_time_that_is_not_hl7_is_refused() -> None:
    with pytest.raises(ValidationError, match="not an HL7 TS"):
        cda.xds_time_of("2019-02-21")
    with pytest.raises(ValidationError, match="not a valid date") as refused:
        cda.xds_time_of("20191321133445+0100", "serviceEvent/effectiveTime/low")
    assert refused.value.field == "serviceEvent/effectiveTime/low"


# --- writing level 1 documents -----------------------------------------------------------------


def expected_entry(
    patient: Patient, document: Document, format_code: xds.Coded
) -> xds.DocumentEntry:
    """The metadata a caller of from_pdf expects from what it gave (report_fields)."""
    person = "899700000001^MEDECIN0001^PAUL^^^^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
    return xds.DocumentEntry(
        patient=patient,
        unique_id=document.entry.unique_id,
        title="Compte rendu de consultation",
        class_code=xds.Coded("10", cda.CLASS_SYSTEM, "Compte rendu"),
        type_code=CONSULTATION,
        format_code=format_code,
        healthcare_facility_type=PRACTICE_OFFICE,
        practice_setting=AMBULATORY,
        creation_time="20260302091530",
        authors=(
            xds.Author(
                person,
                ("CABINET MEDICAL EXEMPLE^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^499900000001001",),
                ("G15_10/SM26^Médecin - Qualifié en Médecine Générale (SM)^1.2.250.1.213.1.1.4.5",),
                ("PRELEVEUR^Préleveur^1.2.250.1.213.1.1.4.6",),
            ),
        ),
        confidentiality=(cda.NORMAL,),
        mime_type="text/xml",
        language="fr-FR",
        service_start_time="20260302091530",
        service_stop_time="20260302091530",
        legal_authenticator=person,
        source_patient_id=xds.patient_id(patient),
    )


def test_from_pdf_read_back_by_from_cda_gives_the_same_metadata(tmp_path: Path) -> None:
    patient = new_patient()
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 10 + b"\n%%EOF\r\n")
    document = Document.from_pdf(pdf, patient, output=tmp_path / "report.xml", **report_fields())
    assert document.content == tmp_path / "report.xml"
    assert document.entry.unique_id.startswith("2.25.")
    pdf_format = cda.FORMAT_BY_MEDIA_TYPE["application/pdf"]
    assert document.entry == expected_entry(patient, document, pdf_format)
    assert Document.from_cda(document.content, patient).entry == document.entry
    assert Document.from_cda(document.content.read_bytes(), patient).entry == document.entry
    digest = hashlib.sha1(pdf.read_bytes(), usedforsecurity=False).hexdigest()
    assert body_sha1(document.content) == (digest, pdf.stat().st_size)
    assert_valid(document.content)


def test_from_text_gives_the_text_format_and_a_valid_document(tmp_path: Path) -> None:
    patient = new_patient()
    text = tmp_path / "note.txt"
    text.write_bytes(b"Patiente vue ce jour.\r\nRAS.\n")
    document = Document.from_text(text, patient, **report_fields(demographics=None))
    try:
        assert document.entry.format_code.code == "urn:ihe:iti:xds-sd:text:2008"
        assert isinstance(document.content, Path)
        assert document.content.stat().st_mode & 0o777 == 0o600
        header = cda.read_header(document.content)
        assert header.media_type == "text/plain" and header.template_ids == (
            cda.HL7_FRANCE_TEMPLATE,
            cda.CISIS_TEMPLATE,
            cda.XDS_SD_TEMPLATE,
        )
        assert (
            body_sha1(document.content)[0]
            == hashlib.sha1(text.read_bytes(), usedforsecurity=False).hexdigest()
        )
        assert_valid(document.content)
    finally:
        document.content.unlink()


STRUCTURE_ALLOWANCES = {
    "author/assignedAuthor/code": "the author's specialty (authorSpecialty), which the official "
    "document leaves out",
    "author/functionCode": "the author's role (authorRole), left out there too",
    "author/assignedAuthor/representedOrganization": "the author's structure "
    "(authorInstitution), left out there too",
    "author/assignedAuthor/representedOrganization/id": "its IdNat",
    "author/assignedAuthor/representedOrganization/name": "its name",
    "documentationOf/serviceEvent/effectiveTime/high": "serviceStopTime: ours ends, theirs is open",
    "componentOf/encompassingEncounter/effectiveTime/high": "the encounter's end, likewise",
    "documentationOf/serviceEvent/performer": "the practice setting, where the CI-SIS maps "
    "practiceSettingCode, which the official document lacks",
    "documentationOf/serviceEvent/performer/assignedEntity": "its performer",
    "documentationOf/serviceEvent/performer/assignedEntity/id": "the performer's IdNat",
    "documentationOf/serviceEvent/performer/assignedEntity/representedOrganization": "its "
    "structure",
    "documentationOf/serviceEvent/performer/assignedEntity/representedOrganization/"
    "standardIndustryClassCode": "the practice setting itself",
    "author/assignedAuthor/assignedPerson/name/prefix": "theirs: a title (Dr.) we are not given",
    "legalAuthenticator/assignedEntity/assignedPerson/name/prefix": "likewise",
    "documentationOf/serviceEvent/code": "theirs: the act (CCAM) the report documents, which a "
    "wrapped file does not tell",
    "recordTarget/patientRole/addr": "theirs: an address nullFlavor NASK; ours leaves it out",
    "recordTarget/patientRole/telecom": "likewise",
}
"""Where a document from from_pdf differs in structure from the official TD2.1 document, each
element path with its reason; the order of the header's parts must be the same."""


def _paths(root: etree._Element) -> set[str]:
    paths = set()
    for element in root.iter(etree.Element):
        names = [etree.QName(item).localname for item in element.iterancestors()][::-1]
        paths.add("/".join([*names[1:], etree.QName(element).localname]))
    return paths - {"ClinicalDocument"}


def test_a_level1_document_has_the_structure_of_the_official_one(tmp_path: Path) -> None:
    theirs = etree.parse(str(official_document())).getroot()
    ours = etree.parse(str(level1(new_patient(), tmp_path))).getroot()
    assert _paths(ours) ^ _paths(theirs) == set(STRUCTURE_ALLOWANCES)
    assert [child.tag for child in ours] == [child.tag for child in theirs]


def test_the_patient_traits_are_written_when_given(tmp_path: Path) -> None:
    patient = new_patient()
    root = etree.parse(str(level1(patient, tmp_path))).getroot()
    ns = {"h": "urn:hl7-org:v3"}
    (ins,) = root.findall("h:recordTarget/h:patientRole/h:id", ns)
    assert (ins.get("root"), ins.get("extension")) == (patient.oid, patient.ins)
    person = root.find("h:recordTarget/h:patientRole/h:patient", ns)
    assert [item.text for item in person.findall("h:name/h:given", ns)] == ["ALICE", "MARIE"]
    assert person.find("h:name/h:family", ns).get("qualifier") == "SP"
    assert person.find("h:birthTime", ns).get("value") == "19790328"


def test_a_failed_wrap_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    patient = new_patient()
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF" * 300_000)
    target = tmp_path / "out"
    target.mkdir()
    calls = []

    def failing(block: bytes) -> bytes:
        calls.append(len(block))
        if len(calls) == 2:
            raise OSError("disk full")
        return base64.standard_b64encode(block)

    monkeypatch.setattr(cda.base64, "b64encode", failing)
    report = cda.Report(patient, **report_fields())  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk full"):
        cda.write_non_structured(source, "application/pdf", report, target / "cda.xml")
    assert list(target.iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(ValidationError):
        cda.write_non_structured(tmp_path, "application/pdf", report, target / "cda.xml")
    with pytest.raises(ValidationError, match="video/mp4"):
        cda.write_non_structured(source, "video/mp4", report, target / "cda.xml")
    with pytest.raises(ValidationError) as missing:
        cda.write_non_structured(source, "application/pdf", report, target / "no" / "cda.xml")
    assert missing.value.field == "output"
    assert list(target.iterdir()) == []


def test_a_50_mb_pdf_is_wrapped_in_bounded_memory(tmp_path: Path) -> None:
    pdf = tmp_path / "large.pdf"
    digest = hashlib.sha1(usedforsecurity=False)
    with pdf.open("wb") as out:
        for _ in range(50):
            block = os.urandom(1 << 20)
            digest.update(block)
            out.write(block)
    patient = new_patient()
    tracemalloc.start()
    try:
        document = Document.from_pdf(pdf, patient, output=tmp_path / "large.xml", **report_fields())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * (1 << 20), peak  # well under the 50 MiB file and its 67 MiB of base64
    assert body_sha1(document.content) == (digest.hexdigest(), 50 << 20)
    assert document.content.stat().st_size > (50 << 20) * 4 // 3


# --- the DMP stub round trip ---------------------------------------------------------------------


STUB_SERVICES = list(DMP_SERVICES)
"""The services of conftest's ``stubs``: the DMP's."""


@pytest.fixture(scope="module", params=[AuthMode.INDIRECTE, AuthMode.DIRECTE], ids=str)
def client(stubs: Stubs, request: pytest.FixtureRequest) -> Iterator[DmpClient]:
    with make_client(stubs, request.param) as made:
        yield made


def test_cda_documents_go_to_the_dmp_and_come_back_byte_exact(
    client: DmpClient, tmp_path: Path
) -> None:
    patient = new_patient()
    client.create(patient, demographics(), oppositions=oppositions())
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + os.urandom(300_000) + b"\n%%EOF\n")
    from_pdf = Document.from_pdf(pdf, patient, output=tmp_path / "a.xml", **report_fields())
    written = level1(patient, tmp_path, body=b"%PDF-1.4 second", title="Second compte rendu")
    from_cda = Document.from_cda(written.read_bytes(), patient)
    submitted = client.submit([from_pdf, from_cda])
    assert submitted.warnings == ()

    found = client.find_documents(patient)
    for document in (from_pdf, from_cda):
        stored = found.by_unique_id(document.entry.unique_id)
        for name in ("type_code", "class_code", "format_code", "practice_setting", "title"):
            assert getattr(stored, name) == getattr(document.entry, name), name
        assert stored.authors == document.entry.authors
    retrieved = client.retrieve(patient, found.documents)
    assert retrieved.complete
    contents = {item.document_unique_id: item.read_bytes() for item in retrieved.documents}
    assert contents == {
        from_pdf.entry.unique_id: (tmp_path / "a.xml").read_bytes(),
        from_cda.entry.unique_id: written.read_bytes(),
    }


def test_the_official_td21_document_goes_to_the_dmp_byte_exact(stubs: Stubs) -> None:
    data = official_document().read_bytes()
    practice = xds.Coded("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9", "Etablissement de santé")
    with make_client(stubs) as indirect:
        indirect.create(OFFICIAL_PATIENT, demographics(), oppositions=oppositions())
        document = Document.from_cda(data, OFFICIAL_PATIENT, practice_setting=practice)
        indirect.submit([document])
        found = indirect.find_documents(OFFICIAL_PATIENT)
        (retrieved,) = indirect.retrieve(OFFICIAL_PATIENT, found.documents).documents
    assert retrieved.document_unique_id == "1.2.250.1.999.1.1.7898.4.9956570902"
    assert retrieved.read_bytes() == data  # the byte-order mark and CR/LF as they were
