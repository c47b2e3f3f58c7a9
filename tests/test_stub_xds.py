"""The XDS.b registry and repository stubs over real mutual TLS: ITI-41, ITI-18, ITI-43, ITI-57."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from transport.config import example_profile
from transport.credentials import Purpose, load_pkcs12
from transport.dmp import xds
from transport.dmp.xds import Author, Coded, DocumentEntry, OutgoingDocument, SubmissionSet
from transport.errors import SoapFault
from transport.soap import mtom
from transport.soap.channel import send
from transport.soap.envelope import build_envelope, raise_for_fault
from transport.stubs.app import Stubs
from transport.stubs.patients import Authorization, now_text
from transport.stubs.xds import REPOSITORY_UNIQUE_ID
from transport.tls import create_session
from transport.vihf import INS_TEST_OID, AuthMode, Patient, sign_vihf
from transport.xml import format_ts, parse_xml

from .conftest import REFERENCE

PATIENT = Patient("279035121518989", INS_TEST_OID)
OTHER_PATIENT = Patient("180125512345697", INS_TEST_OID)
DOCTOR = "899700000001"
COLLEAGUE = "899700000002"
SCHEMAS = REFERENCE / "dmp-wsdl" / "schema"
EXAMPLES = REFERENCE / "dmp-examples"
STUB_SERVICES = ["registry", "repository"]


class Caller:
    """A professional calling the stub: credentials of the example profile, one VIHF per call."""

    def __init__(self, stubs: Stubs, mode: AuthMode = AuthMode.INDIRECTE, subject: str = DOCTOR):
        profile = example_profile(stubs.pki, mode)
        self.stubs = stubs
        self.identity = replace(profile.identity, subject_id=subject)
        self.signer = profile.signature_credential.load(Purpose.SIGNATURE).signer
        tls = profile.tls_credential.load(Purpose.TLS_CLIENT)
        self.session = create_session(tls, profile.tls_settings())

    def call(
        self,
        service: str,
        action: str,
        payload: etree._Element,
        patient: Patient | None = PATIENT,
        attachments: tuple[mtom.Attachment, ...] = (),
        signer=None,
    ) -> tuple[etree._Element, mtom.Decoded]:
        """Send ``payload`` (MTOM when ``attachments``), return the body's child and the parts."""
        url = self.stubs.dmp_url(service)
        assertion = sign_vihf(self.identity.with_patient(patient), signer or self.signer)
        envelope = build_envelope(action, url, payload, assertions=[assertion])
        root = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
        return self.post(url, root, action, attachments)

    def post(
        self, url: str, root: bytes, action: str, attachments: tuple[mtom.Attachment, ...] = ()
    ) -> tuple[etree._Element, mtom.Decoded]:
        if attachments or "repository" in url:
            message = mtom.encode(root, attachments, action=action)
            body, content_type = message.chunks(), message.content_type
        else:
            body, content_type = root, f'application/soap+xml; charset=utf-8; action="{action}"'
        response = send(self.session, url, body, {"Content-Type": content_type})
        decoded = mtom.decode([response.content], response.headers.get("Content-Type", ""))
        envelope = raise_for_fault(parse_xml(decoded.root))
        return envelope.find("{http://www.w3.org/2003/05/soap-envelope}Body")[0], decoded


def open_dmp(stubs: Stubs, patient: Patient, *professionals: str) -> None:
    """Seed an open DMP with authorized professionals, as TD1.1 and TD0.3 would leave it."""
    with stubs.context.database.transaction() as connection:
        connection.execute(
            "INSERT INTO dmp_patients (ins, oid, status, created_at, updated_at)"
            " VALUES (?, ?, 'open', ?, ?)",
            (patient.ins, patient.oid, now_text(), now_text()),
        )
        for professional in professionals:
            stubs.context.patients.set_authorization(
                connection, patient, professional, Authorization.VALID
            )


def entry(content: bytes, patient: Patient = PATIENT, **changes) -> DocumentEntry:
    now = format_ts(datetime.now(UTC))
    base = DocumentEntry(
        patient=patient,
        unique_id=xds.new_unique_id(),
        title="Compte rendu de consultation",
        class_code=Coded("10", "1.2.250.1.213.1.1.4.1", "Compte rendu"),
        type_code=Coded("11488-4", "2.16.840.1.113883.6.1", "Note de consultation"),
        format_code=Coded("urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3", "Texte"),
        healthcare_facility_type=Coded("SA07", "1.2.250.1.71.4.2.4", "Cabinet individuel"),
        practice_setting=Coded("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire"),
        creation_time=now,
        authors=(
            Author.professional(
                DOCTOR,
                "MEDECIN0001",
                "PAUL",
                specialty="G15_10/SM26^Médecin - Qualifié en Médecine Générale (SM)"
                "^1.2.250.1.213.1.1.4.5",
                institution="CABINET MEDICAL EXEMPLE",
                structure_id="499900000001001",
            ),
        ),
        mime_type="text/plain",
        service_start_time=now,
        service_stop_time=now,
    )
    return replace(base.with_content(content), **changes)


def submission_set(patient: Patient = PATIENT) -> SubmissionSet:
    return SubmissionSet(
        patient=patient,
        unique_id=xds.new_unique_id(),
        source_id="1.2.250.1.999.1.1",
        submission_time=format_ts(datetime.now(UTC)),
        content_type=Coded("04", "1.2.250.1.213.2.2", "Hospitalisation de jour"),
        authors=(Author.professional(DOCTOR, "MEDECIN0001", "PAUL"),),
        title="Lot de test",
    )


def submit(
    caller: Caller, *documents: tuple[DocumentEntry, bytes | Path], signs: int | None = None
) -> xds.RegistryResult:
    outgoing, attachments = [], []
    for number, (metadata, content) in enumerate(documents):
        content_id = mtom.new_content_id()
        outgoing.append(OutgoingDocument(metadata, content_id, signs=number == signs))
        attachments.append(mtom.Attachment(content_id, content, metadata.mime_type))
    patient = documents[0][0].patient
    payload = xds.provide_and_register_request(submission_set(patient), outgoing)
    body, _ = caller.call(
        "repository", xds.ACTION_PROVIDE_AND_REGISTER, payload, patient, tuple(attachments)
    )
    return xds.read_registry_response(body)


def find(caller: Caller, patient: Patient = PATIENT, **options) -> xds.QueryResult:
    statuses = options.pop("statuses", (xds.APPROVED,))
    query = xds.find_documents(patient, statuses, **options)
    body, _ = caller.call("registry", xds.ACTION_STORED_QUERY, xds.query_request(query), patient)
    return xds.read_query_response(body)


def retrieve(caller: Caller, *unique_ids: str, repository: str = REPOSITORY_UNIQUE_ID):
    requests = [xds.DocumentRequest(repository, unique_id) for unique_id in unique_ids]
    body, decoded = caller.call("repository", xds.ACTION_RETRIEVE, xds.retrieve_request(requests))
    result = xds.read_retrieve_response(body)
    return result, {
        document.document_unique_id: decoded.part_for(document.include).read_bytes()
        for document in result.documents
    }


def update_status(caller: Caller, document: DocumentEntry, original: str, new: str):
    payload = xds.update_status_request(submission_set(), document.entry_uuid, original, new)
    body, _ = caller.call("registry", xds.ACTION_UPDATE, payload)
    return xds.read_registry_response(body)


@pytest.fixture
def caller(xds_stubs):
    return Caller(xds_stubs)


PAYLOADS = {
    "empty": b"",
    "one byte": b"x",
    "ends with CR LF": b"<ClinicalDocument/>\r\n",
    "every byte value": bytes(range(256)) * 64,
    "boundary-like lines": b"\r\n--MIMEBoundary\r\n--uuid:x--\r\n\r\n",
}


@pytest.mark.parametrize("content", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_submitted_document_comes_back_byte_exact(caller, content):
    metadata = entry(content)
    assert submit(caller, (metadata, content)).ok
    result, contents = retrieve(caller, metadata.unique_id)
    assert result.result.ok
    assert contents == {metadata.unique_id: content}


@pytest.mark.parametrize("mode", list(AuthMode), ids=str)
def test_registry_answers_the_metadata_it_was_given(xds_stubs, mode):
    caller = Caller(xds_stubs, mode)
    content = b"Compte rendu : tension normale.\n"
    metadata = entry(content, comments="première consultation")
    assert submit(caller, (metadata, content)).ok
    (found,) = find(caller).entries
    assert found.status == xds.APPROVED
    assert found.entry_uuid and found.entry_uuid.startswith("urn:uuid:")
    assert found.repository_unique_id == REPOSITORY_UNIQUE_ID
    assert found.hash == hashlib.sha1(content, usedforsecurity=False).hexdigest()
    assert found.size == len(content)
    assert found.version == "1"
    registry_fields = ("entry_uuid", "logical_id", "status", "repository_unique_id", "version")
    assert replace(found, **dict.fromkeys(registry_fields)) == metadata


def test_large_document_streams_from_disk_and_back(caller, tmp_path):
    source = tmp_path / "scan.bin"
    with source.open("wb") as handle:
        for _ in range(24):
            handle.write(os.urandom(1024 * 1024))
    digest = hashlib.sha1(source.read_bytes(), usedforsecurity=False).hexdigest()
    metadata = replace(entry(b""), hash=digest, size=source.stat().st_size)
    assert submit(caller, (metadata, source)).ok
    _, contents = retrieve(caller, metadata.unique_id)
    assert contents[metadata.unique_id] == source.read_bytes()


def test_document_survives_a_restart(pki, tmp_path):
    data = tmp_path / "state"
    content = bytes(range(256)) + b"\r\n"
    metadata = entry(content)
    with Stubs(pki=pki, data_dir=data, services=["registry", "repository"]) as first:
        open_dmp(first, PATIENT, DOCTOR)
        assert submit(Caller(first), (metadata, content)).ok
    with Stubs(pki=pki, data_dir=data, services=["registry", "repository"]) as second:
        _, contents = retrieve(Caller(second), metadata.unique_id)
    assert contents == {metadata.unique_id: content}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"hash": "0" * 40}, "XDSRepositoryMetadataError"),
        ({"size": 12345}, "XDSRepositoryMetadataError"),
    ],
)
def test_metadata_that_does_not_match_the_content_is_refused(caller, change, code):
    content = b"contenu"
    result = submit(caller, (entry(content, **change), content))
    assert result.status == xds.FAILURE
    assert [error.code for error in result.errors] == [code]
    assert find(caller).entries == ()


def test_a_document_unique_id_is_registered_once(caller):
    metadata = entry(b"un")
    assert submit(caller, (metadata, b"un")).ok
    again = submit(caller, (replace(entry(b"deux"), unique_id=metadata.unique_id), b"deux"))
    assert [error.code for error in again.errors] == ["XDSDocumentUniqueIdError"]


def test_patient_without_dmp(caller):
    result = submit(caller, (entry(b"x", patient=OTHER_PATIENT), b"x"))
    assert [error.code for error in result.errors] == ["XDSUnknownPatientId"]


def test_document_of_another_patient_than_the_vihf(caller):
    metadata = entry(b"x", patient=OTHER_PATIENT)
    content_id = mtom.new_content_id()
    payload = xds.provide_and_register_request(
        submission_set(OTHER_PATIENT), [OutgoingDocument(metadata, content_id)]
    )
    body, _ = caller.call(
        "repository",
        xds.ACTION_PROVIDE_AND_REGISTER,
        payload,
        PATIENT,
        (mtom.Attachment(content_id, b"x"),),
    )
    result = xds.read_registry_response(body)
    assert [error.code for error in result.errors] == ["XDSPatientIdDoesNotMatch"]


def test_unauthorized_professional(xds_stubs):
    stranger = Caller(xds_stubs, subject="899700000099")
    result = find(stranger)
    assert result.status == xds.FAILURE
    assert [error.code for error in result.errors] == ["DMPAccessDenied"]


def test_find_documents_pages_large_results(caller):
    documents = [entry(f"document {n}".encode()) for n in range(5)]
    for metadata in documents:
        assert submit(caller, (metadata, f"document {documents.index(metadata)}".encode())).ok
    page = find(caller, start_index=2, max_results=2)
    assert page.total == 5
    assert page.start_index == 2
    assert [found.unique_id for found in page.entries] == [d.unique_id for d in documents[2:4]]
    assert len(find(caller).entries) == 5


def test_get_documents_and_object_refs(caller):
    first, second = entry(b"1"), entry(b"2")
    submit(caller, (first, b"1"), (second, b"2"))
    references = find(caller, return_type="ObjectRef").object_refs
    assert len(references) == 2
    query = xds.get_documents(entry_uuids=references[:1])
    body, _ = caller.call("registry", xds.ACTION_STORED_QUERY, xds.query_request(query))
    (by_uuid,) = xds.read_query_response(body).entries
    assert by_uuid.entry_uuid == references[0]
    query = xds.get_documents(unique_ids=[second.unique_id])
    body, _ = caller.call("registry", xds.ACTION_STORED_QUERY, xds.query_request(query))
    assert [found.unique_id for found in xds.read_query_response(body).entries] == [
        second.unique_id
    ]


def test_mask_from_professionals_creates_a_new_version(xds_stubs, caller):
    metadata = entry(b"confidentiel")
    submit(caller, (metadata, b"confidentiel"))
    (current,) = find(caller).entries
    masked = replace(
        current,
        confidentiality=(
            *current.confidentiality,
            Coded(xds.MASKED_FROM_PROFESSIONALS, xds.DMP_CONFIDENTIALITY_SYSTEM, "Masqué aux PS"),
        ),
    )
    payload = xds.update_metadata_request(submission_set(), masked, current.version)
    body, _ = caller.call("registry", xds.ACTION_UPDATE, payload)
    assert xds.read_registry_response(body).ok
    (mine,) = find(caller).entries
    assert mine.masked and mine.version == "2" and mine.logical_id == current.entry_uuid
    (old,) = find(caller, statuses=(xds.DEPRECATED,)).entries
    assert old.entry_uuid == current.entry_uuid
    colleague = Caller(xds_stubs, subject=COLLEAGUE)
    assert find(colleague).entries == ()
    result, contents = retrieve(colleague, metadata.unique_id)
    assert contents == {} and result.result.errors[0].code == "XDSDocumentUniqueIdError"
    assert retrieve(caller, metadata.unique_id)[1] == {metadata.unique_id: b"confidentiel"}


def submit_replacing(
    caller: Caller, content: bytes, *targets: str, source: str = "Document01"
) -> xds.RegistryResult:
    """ITI-41 of one new document with an RPLC association from ``source`` to each target."""
    metadata, content_id = entry(content), mtom.new_content_id()
    payload = xds.provide_and_register_request(
        submission_set(), [OutgoingDocument(metadata, content_id)]
    )
    objects = payload.find(
        f"{{{xds.LCM_NS}}}SubmitObjectsRequest/{{{xds.RIM_NS}}}RegistryObjectList"
    )
    for number, target in enumerate(targets):
        association = xds.Association(xds.REPLACES, source, target, id=f"rplc-{number}")
        objects.append(xds.association_element(association, None))  # type: ignore[arg-type]
    attachment = mtom.Attachment(content_id, content, metadata.mime_type)
    body, _ = caller.call(
        "repository", xds.ACTION_PROVIDE_AND_REGISTER, payload, PATIENT, (attachment,)
    )
    return xds.read_registry_response(body)


def test_rplc_deprecates_the_target_and_is_checked(xds_stubs, caller):
    submit(caller, (entry(b"v1"), b"v1"))
    (current,) = find(caller).entries
    # From the submission set, or twice the same target: malformed, nothing registered.
    for targets, source in (
        ((current.entry_uuid,), "SubmissionSet01"),
        ((current.entry_uuid,) * 2, "Document01"),
    ):
        refused = submit_replacing(caller, b"v2", *targets, source=source)
        assert [error.code for error in refused.errors] == ["XDSRegistryMetadataError"]
    assert [item.entry_uuid for item in find(caller, statuses=tuple(xds.STATUSES)).entries] == [
        current.entry_uuid
    ]
    # A colleague may not replace what is masked from them: to them it does not exist.
    masked = replace(current, confidentiality=xds.Visibility(True).applied(current.confidentiality))
    payload = xds.update_metadata_request(submission_set(), masked, current.version)
    assert xds.read_registry_response(caller.call("registry", xds.ACTION_UPDATE, payload)[0]).ok
    (hidden,) = find(caller).entries
    colleague = Caller(xds_stubs, subject=COLLEAGUE)
    refused = submit_replacing(colleague, b"v2", hidden.entry_uuid)
    assert [error.code for error in refused.errors] == ["UnresolvedReferenceException"]
    # Its author may: the masked version is deprecated, the new document approved.
    assert submit_replacing(caller, b"v2", hidden.entry_uuid).ok
    statuses = {
        item.entry_uuid: item.status for item in find(caller, statuses=tuple(xds.STATUSES)).entries
    }
    assert statuses[hidden.entry_uuid] == xds.DEPRECATED
    assert sorted(statuses.values()).count(xds.APPROVED) == 1


def test_metadata_update_of_a_stale_version_is_refused(caller):
    submit(caller, (entry(b"v1"), b"v1"))
    (current,) = find(caller).entries
    payload = xds.update_metadata_request(submission_set(), current, "7")
    body, _ = caller.call("registry", xds.ACTION_UPDATE, payload)
    assert [error.code for error in xds.read_registry_response(body).errors] == [
        "XDSMetadataVersionError"
    ]


def test_delete_and_archive(caller):
    kept, deleted = entry(b"garde"), entry(b"efface")
    submit(caller, (kept, b"garde"), (deleted, b"efface"))
    by_id = {found.unique_id: found for found in find(caller).entries}
    assert update_status(caller, by_id[deleted.unique_id], xds.APPROVED, xds.DELETED).ok
    assert update_status(caller, by_id[kept.unique_id], xds.APPROVED, xds.ARCHIVED).ok
    assert find(caller).entries == ()
    assert [f.unique_id for f in find(caller, statuses=(xds.ARCHIVED,)).entries] == [kept.unique_id]
    result, contents = retrieve(caller, kept.unique_id, deleted.unique_id)
    assert contents == {kept.unique_id: b"garde"}
    assert result.result.status == xds.PARTIAL_SUCCESS
    assert [error.location for error in result.result.errors] == [deleted.unique_id]


def test_status_change_from_a_wrong_original_status(caller):
    submit(caller, (entry(b"x"), b"x"))
    (current,) = find(caller).entries
    result = update_status(caller, current, xds.ARCHIVED, xds.DELETED)
    assert [error.code for error in result.errors] == ["XDSMetadataUpdateError"]
    assert find(caller).entries[0].status == xds.APPROVED


def test_unknown_repository_and_document(caller):
    result, contents = retrieve(caller, "1.2.3.4", repository="9.9.9")
    assert contents == {} and result.result.status == xds.FAILURE


def test_vihf_signed_with_an_authentication_key_is_refused(xds_stubs, caller):
    auth_only = load_pkcs12(xds_stubs.pki.p12("org-auth"), xds_stubs.pki.password).signer
    with pytest.raises(SoapFault) as refused:
        caller.call(
            "registry",
            xds.ACTION_STORED_QUERY,
            xds.query_request(xds.find_documents(PATIENT)),
            signer=auth_only,
        )
    assert refused.value.subcode == "DMPInvalidCertificate"


@pytest.mark.parametrize(
    "body",
    [b"not a multipart body", b"--x\r\nContent-Type: text/plain\r\n\r\nno end"],
    ids=["garbage", "unterminated"],
)
def test_malformed_mtom_gets_a_fault_and_the_server_keeps_serving(caller, xds_stubs, body):
    response = send(
        caller.session,
        xds_stubs.dmp_url("repository"),
        body,
        {"Content-Type": 'multipart/related; boundary="x"; type="application/xop+xml"'},
    )
    assert response.status_code == 500
    with pytest.raises(SoapFault):
        raise_for_fault(parse_xml(response.content))
    assert find(caller).status == xds.SUCCESS


def test_unknown_action(caller):
    with pytest.raises(SoapFault) as refused:
        caller.call("registry", "urn:ihe:iti:2007:RegisterDocumentSet-b", etree.Element("x"))
    assert refused.value.subcode == "ActionNotSupported"


# Requests against the official schemas and examples ------------------------------------------


@pytest.fixture(scope="module")
def xds_schema():
    path = SCHEMAS / "IHE" / "XDS.b_DocumentRepository.xsd"
    if not path.is_file():
        pytest.skip(f"official XDS.b schemas not found at {path} (../shared/reference)")
    return etree.XMLSchema(etree.parse(str(path)))


def test_requests_validate_against_the_official_schemas(xds_schema):
    metadata = entry(
        b"x", comments="commentaire", event_codes=(Coded("H33", "2.16.840.1.113883.6.3", "Rétine"),)
    )
    current = replace(metadata, entry_uuid=xds.new_entry_uuid(), logical_id=xds.new_entry_uuid())
    requests = [
        xds.provide_and_register_request(
            submission_set(),
            [OutgoingDocument(metadata, "a@b"), OutgoingDocument(metadata, "c@d", signs=True)],
        ),
        xds.query_request(xds.find_documents(PATIENT, max_results=10, start_index=5)),
        xds.query_request(xds.get_documents(unique_ids=["1.2.3"])),
        xds.retrieve_request([xds.DocumentRequest(REPOSITORY_UNIQUE_ID, "1.2.3")]),
        xds.update_status_request(submission_set(), current.entry_uuid, xds.APPROVED, xds.DELETED),
        xds.update_metadata_request(submission_set(), current, "1"),
        xds.query_response([current], start_index=0, total=1),
        xds.retrieve_response([(xds.DocumentRequest("1", "2"), "text/xml", "a@b")]),
        xds.registry_response([xds.RegistryError("XDSRegistryError", "contexte", "Warning")]),
    ]
    for request in requests:
        document = etree.fromstring(etree.tostring(request))
        # The schema describes the XOP infoset: each xop:Include stands for base64 content.
        for reference in document.iter(f"{{{xds.XOP_NS}}}Include"):
            reference.getparent().text = "AA=="
            reference.getparent().remove(reference)
        assert xds_schema.validate(document), (request.tag, xds_schema.error_log.last_error)


def _official(name: str) -> bytes:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip(f"official example {name} not found (../shared/reference)")
    return path.read_bytes()


def _with_our_vihf(caller: Caller, envelope: bytes, patient: Patient) -> bytes:
    """The official envelope with its VIHF replaced by ours and a fresh MessageID."""
    root = parse_xml(envelope)
    security = root.find(
        ".//{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}Security"
    )
    for old in list(security):
        security.remove(old)
    security.append(sign_vihf(caller.identity.with_patient(patient), caller.signer))
    message_id = root.find(".//{http://www.w3.org/2005/08/addressing}MessageID")
    message_id.text = f"urn:uuid:{os.urandom(16).hex()}"
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


OFFICIAL_PATIENT = Patient("207058575627097", INS_TEST_OID)


def test_official_td21_td31_td32_requests_are_accepted(xds_stubs, caller):
    # The capture was saved with LF line ends; MIME wants CRLF.
    capture = _official("TD2.1_-_Alimentation_request.xml").replace(b"\n", b"\r\n")
    open_dmp(xds_stubs, OFFICIAL_PATIENT, DOCTOR)
    boundary = capture.split(b"\r\n", 1)[0][2:].decode()
    decoded = mtom.decode(
        [capture], f'multipart/related; boundary="{boundary}"; type="application/xop+xml"'
    )
    # The capture's envelope uses the SOAP 1.1 namespace in a SOAP 1.2 package (spec §6).
    root = decoded.root.replace(
        b"http://schemas.xmlsoap.org/soap/envelope/", b"http://www.w3.org/2003/05/soap-envelope"
    )
    # It also names its first document "documentME2" in Document/@id and "DocumentME2" in the
    # metadata; ebRIM ids are case-sensitive.
    root = root.replace(b'Document id="documentME2"', b'Document id="DocumentME2"')
    url = xds_stubs.dmp_url("repository")
    attachments = tuple(
        mtom.Attachment(part.content_id, part.read_bytes(), part.content_type)
        for part in decoded.parts.values()
    )
    body, _ = caller.post(
        url,
        _with_our_vihf(caller, root, OFFICIAL_PATIENT),
        xds.ACTION_PROVIDE_AND_REGISTER,
        attachments,
    )
    submitted = xds.read_registry_response(body)
    # Accepted, with warnings: the example's signature manifest names other documents.
    assert submitted.ok and {e.severity for e in submitted.errors} == {"Warning"}
    query = _with_our_vihf(
        caller, _official("TD3.1_-_Recherche_de_document_request.xml"), OFFICIAL_PATIENT
    )
    body, _ = caller.post(xds_stubs.dmp_url("registry"), query, xds.ACTION_STORED_QUERY)
    found = xds.read_query_response(body).entries
    assert len(found) == 2
    request = _official("TD3.2_-_Consultation_d_un_document_request.xml")
    unique_id = next(entry.unique_id for entry in found if entry.title == "Document 1")
    request = re.sub(
        rb"<DocumentUniqueId>[^<]*<", f"<DocumentUniqueId>{unique_id}<".encode(), request
    )
    body, decoded = caller.post(
        xds_stubs.dmp_url("repository"),
        _with_our_vihf(caller, request, OFFICIAL_PATIENT),
        xds.ACTION_RETRIEVE,
    )
    (document,) = xds.read_retrieve_response(body).documents
    original = next(p for p in attachments if p.content_id.endswith("DocumentME2.xml"))
    assert decoded.part_for(document.include).read_bytes() == original.source


# Odd but legal answers ------------------------------------------------------------------------


def _emptied(element: etree._Element, slot: str) -> int:
    """Empty the ValueList of every Slot named ``slot`` (ebRIM allows it); how many there were."""
    slots = [found for found in element.iter(f"{{{xds.RIM_NS}}}Slot") if found.get("name") == slot]
    for found in slots:
        for value in found.iter(f"{{{xds.RIM_NS}}}Value"):
            value.getparent().remove(value)
    return len(slots)


def test_an_empty_coding_scheme_or_author_person_reads_as_absent():
    sent = replace(entry(b"x"), entry_uuid=xds.new_entry_uuid())
    answer = xds.query_response([sent])
    assert _emptied(answer, "codingScheme") >= 5 and _emptied(answer, "authorPerson") == 1
    (read,) = xds.read_query_response(reparse(answer)).entries
    assert read.class_code.code == "10" and read.class_code.scheme == ""
    assert read.authors[0].person is None
    assert read.authors[0].institutions == sent.authors[0].institutions


def test_a_status_update_with_an_empty_value_list_is_refused_as_metadata(caller):
    metadata = entry(b"to archive")
    assert submit(caller, (metadata, b"to archive")).ok
    (stored,) = [found for found in find(caller).entries if found.unique_id == metadata.unique_id]
    payload = xds.update_status_request(
        submission_set(), stored.entry_uuid, xds.APPROVED, xds.ARCHIVED
    )
    assert _emptied(payload, "OriginalStatus") == 1
    body, _ = caller.call("registry", xds.ACTION_UPDATE, payload)
    result = xds.read_registry_response(body)
    assert not result.ok and result.errors[0].code == "XDSMetadataUpdateError"
    (still,) = [found for found in find(caller).entries if found.unique_id == metadata.unique_id]
    assert still.status == xds.APPROVED


def reparse(element: etree._Element) -> etree._Element:
    return parse_xml(etree.tostring(element))
