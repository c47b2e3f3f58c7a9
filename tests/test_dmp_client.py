"""The DMP client facade against the DMP stub over real mutual TLS: every transaction, in the
indirect and direct modes, each error family, byte-exact documents, traces and progress."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_channel import QUICK, dmp_client
from tests.test_hl7v3 import demographics, oppositions
from tests.test_stub_dmp import new_patient
from tests.test_stub_xds import entry
from transport import examplepki
from transport.config import example_profile
from transport.dmp import xds
from transport.dmp.authorizations import AuthorizationAction, ListMode
from transport.dmp.client import DmpClient, Document
from transport.dmp.hl7v3 import OPPOSITION_BREAK_GLASS, Observation, Traits
from transport.errors import (
    DmpError,
    IntegrityError,
    SoapFault,
    TransportError,
    ValidationError,
    XdsError,
)
from transport.soap import mtom
from transport.soap.channel import MockResponse, MockWire
from transport.soap.trace import Tracer
from transport.stubs.app import DMP_SERVICES, Stubs
from transport.vihf import AuthMode, Patient

STUB_SERVICES = DMP_SERVICES
COLLEAGUE = "899700000002"


def make_client(
    stubs: Stubs, mode: AuthMode = AuthMode.INDIRECTE, *, subject: str | None = None, **options
) -> DmpClient:
    profile = example_profile(stubs.pki, mode, {"dmp": stubs.dmp_base_url})
    if subject is not None:
        profile = replace(profile, identity=replace(profile.identity, subject_id=subject))
    return DmpClient.from_profile(profile, **options)


@pytest.fixture(scope="module", params=list(AuthMode), ids=str)
def client(stubs: Stubs, request: pytest.FixtureRequest) -> Iterator[DmpClient]:
    with make_client(stubs, request.param) as made:
        yield made


@pytest.fixture(scope="module")
def indirect(stubs: Stubs) -> Iterator[DmpClient]:
    with make_client(stubs) as made:
        yield made


@pytest.fixture(scope="module")
def colleague(stubs: Stubs) -> Iterator[DmpClient]:
    with make_client(stubs, subject=COLLEAGUE) as made:
        yield made


def opened(client: DmpClient) -> Patient:
    """A new patient with an open DMP created by ``client`` (who is then authorized)."""
    patient = new_patient()
    client.create(patient, demographics(), oppositions=oppositions())
    return patient


def document(patient: Patient, content: bytes | Path, **changes) -> Document:
    data = content.read_bytes() if isinstance(content, Path) else content
    return Document(entry(data, patient, **changes), content)


# --- patients --------------------------------------------------------------------------------


def test_lifecycle_of_a_dmp(client: DmpClient) -> None:
    patient = new_patient()
    assert client.exists(patient).exists is False

    created = client.create(patient, demographics(), oppositions=oppositions())
    assert created.patient == patient and created.active

    existence = client.exists(patient)
    assert existence.exists and existence.active and existence.authorized
    assert existence.record is not None and existence.record.patient == patient

    record = client.consult(patient)
    assert record.demographics is not None
    assert record.demographics.family == demographics().family
    assert record.demographics.birth_date == demographics().birth_date

    moved = replace(demographics(), family="TESTPATIENT-NOUVEAU")
    client.update(patient, moved, observations=(Observation(OPPOSITION_BREAK_GLASS, True),))
    after = client.consult(patient)
    assert after.demographics is not None and after.demographics.family == "TESTPATIENT-NOUVEAU"
    assert Observation(OPPOSITION_BREAK_GLASS, True) in after.observations

    closed = client.close_dmp(patient, moved)
    assert closed.active is False
    assert client.exists(patient).active is False

    reopened = client.reactivate(patient, moved)
    assert reopened.active
    assert client.exists(patient).active


def test_refusals_are_dmp_errors_with_the_code_and_a_hint(
    indirect: DmpClient, colleague: DmpClient
) -> None:
    unknown = new_patient()
    with pytest.raises(DmpError) as not_found:
        indirect.consult(unknown)
    assert not_found.value.code == "DMPNotFound"
    assert not_found.value.transaction == "TD1.3a"
    assert not_found.value.hint and "TD1.1" in not_found.value.hint
    assert not_found.value.exit_code == 1

    patient = opened(indirect)
    with pytest.raises(DmpError) as found:
        indirect.create(patient, demographics())
    assert found.value.code == "DMPFound"

    with pytest.raises(DmpError) as denied:
        colleague.consult(patient)
    assert denied.value.code == "DMPAccessDenied"
    existence = colleague.exists(patient)
    assert existence.exists and not existence.authorized


def test_find_patients_without_ins(indirect: DmpClient) -> None:
    patient = opened(indirect)
    person = demographics()
    found = indirect.find_patients(
        Traits(family=person.family, given=person.given[0], birth_date=person.birth_date)
    )
    assert patient in [candidate.patient for candidate in found]
    assert indirect.find_patients(Traits(family="PERSONNE-INCONNUE-XYZ")) == ()


# --- authorizations --------------------------------------------------------------------------


def test_authorizations(indirect: DmpClient, colleague: DmpClient) -> None:
    patient = opened(indirect)
    assert patient not in [item.patient for item in colleague.list_patients().patients]

    assert colleague.set_authorization(patient).ok
    assert colleague.exists(patient).authorized
    assert patient in [item.patient for item in colleague.list_patients().patients]

    listed = indirect.list_authorizations(patient, ListMode.TOUTE)
    professionals = {item.professional_id for item in listed.entries}
    assert {indirect.identity.subject_id, COLLEAGUE} <= professionals

    assert colleague.set_authorization(patient, AuthorizationAction.SUPPRESSION).ok
    existence = colleague.exists(patient)
    assert not existence.authorized
    with pytest.warns(DeprecationWarning, match="Existence.authorisation"):
        assert existence.authorisation == existence.authorization == "NON_EXISTE"
    with pytest.warns(DeprecationWarning, match="Existence.authorised"):
        assert existence.authorised is False
    with pytest.raises(DmpError) as denied:
        colleague.list_authorizations(patient)
    assert denied.value.code == "DMPAccessDenied" and denied.value.transaction == "TD1.6"


# --- documents -------------------------------------------------------------------------------

PAYLOADS = {
    "empty": b"",
    "one byte": b"x",
    "ends with CR LF": b"<ClinicalDocument/>\r\n",
    "every byte value": bytes(range(256)) * 16,
}


@pytest.mark.parametrize("content", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_submitted_documents_come_back_byte_exact(
    client: DmpClient, content: bytes, tmp_path: Path
) -> None:
    patient = opened(client)
    source = tmp_path / "document.bin"
    source.write_bytes(content)
    in_memory, from_file = document(patient, content), document(patient, source)
    submitted = client.submit([in_memory, from_file])
    assert [item.size for item in submitted.entries] == [len(content)] * 2

    assert submitted.signature is not None and submitted.warnings == ()
    found = client.find_documents(patient)
    assert {item.unique_id for item in found.documents} == {
        in_memory.entry.unique_id,
        from_file.entry.unique_id,
    }
    assert {item.unique_id for item in found.entries} - {
        item.unique_id for item in found.documents
    } == {submitted.signature.unique_id}
    retrieved = client.retrieve(patient, found.documents)
    assert retrieved.complete
    assert [item.read_bytes() for item in retrieved.documents] == [content, content]

    into = tmp_path / "out"
    into.mkdir()
    on_disk = client.retrieve(patient, [from_file.entry.unique_id], directory=into)
    (only,) = on_disk.documents
    assert only.path is not None and only.path.parent == into
    assert only.path.read_bytes() == content
    assert only.sha1 == hashlib.sha1(content, usedforsecurity=False).hexdigest()


def test_search_pages_through_large_results(indirect: DmpClient) -> None:
    patient = opened(indirect)
    documents = [document(patient, f"document {number}".encode()) for number in range(7)]
    indirect.submit(documents)
    paged = indirect.find_documents(patient, page_size=3)
    assert paged.total == 8  # the seven documents and the set's signature
    assert len(paged.entries) == 8
    assert sorted(item.unique_id for item in paged.documents) == sorted(
        item.entry.unique_id for item in documents
    )
    by_id = indirect.get_documents(patient, unique_ids=[documents[2].entry.unique_id])
    assert [item.unique_id for item in by_id.entries] == [documents[2].entry.unique_id]
    uuids = [paged.documents[0].entry_uuid]
    assert indirect.get_documents(patient, entry_uuids=uuids).entries[0].entry_uuid == uuids[0]


def test_mask_delete_archive(indirect: DmpClient, colleague: DmpClient) -> None:
    patient = opened(indirect)
    colleague.set_authorization(patient)
    hidden, deleted, archived = (document(patient, name) for name in (b"a", b"b", b"c"))
    indirect.submit([hidden, deleted, archived])
    found = indirect.find_documents(patient)

    indirect.mask(found.by_unique_id(hidden.entry.unique_id))
    indirect.delete(found.by_unique_id(deleted.entry.unique_id))
    indirect.archive(found.by_unique_id(archived.entry.unique_id))

    visible = indirect.find_documents(patient)
    assert [item.unique_id for item in visible.documents] == [hidden.entry.unique_id]
    assert visible.documents[0].masked
    assert colleague.find_documents(patient).entries == ()
    gone = indirect.find_documents(patient, (xds.DELETED, xds.ARCHIVED))
    assert {item.unique_id: item.status for item in gone.entries} == {
        deleted.entry.unique_id: xds.DELETED,
        archived.entry.unique_id: xds.ARCHIVED,
    }
    with pytest.raises(ValidationError):
        indirect.mask(visible.documents[0])


def test_a_replacement_deprecates_the_old_entry(client: DmpClient, tmp_path: Path) -> None:
    patient = opened(client)
    old = document(patient, b"compte rendu, version 1")
    client.submit([old])
    current = client.find_documents(patient).by_unique_id(old.entry.unique_id)
    corrected = tmp_path / "corrected.bin"
    corrected.write_bytes(PAYLOADS["every byte value"] + b"\r\n")
    new = document(patient, corrected)

    replaced = client.replace(current, new)
    assert [item.unique_id for item in replaced.entries] == [new.entry.unique_id]
    assert replaced.signature is not None and replaced.warnings == ()

    approved = client.find_documents(patient)
    assert [item.unique_id for item in approved.documents] == [new.entry.unique_id]
    both = client.find_documents(patient, (xds.APPROVED, xds.DEPRECATED))
    statuses = {item.unique_id: item.status for item in both.documents}
    assert statuses == {old.entry.unique_id: xds.DEPRECATED, new.entry.unique_id: xds.APPROVED}
    (retrieved,) = client.retrieve(patient, [new.entry.unique_id]).documents
    assert retrieved.read_bytes() == corrected.read_bytes()

    # The old entry is deprecated now: replacing it again is the registry's refusal.
    with pytest.raises(XdsError) as again:
        client.replace(current, document(patient, b"version 3"))
    assert again.value.code == "XDSRegistryMetadataError" and again.value.exit_code == 1
    assert client.find_documents(patient).documents[0].unique_id == new.entry.unique_id


def test_replacement_refusals(indirect: DmpClient, colleague: DmpClient) -> None:
    patient, other = opened(indirect), opened(indirect)
    kept = document(patient, b"kept")
    indirect.submit([kept])
    current = indirect.find_documents(patient).by_unique_id(kept.entry.unique_id)
    with pytest.raises(ValidationError, match="same patient"):
        indirect.replace(current, document(other, b"other"))
    # Another patient's entry, named in a submission for this one: the registry's refusal.
    foreign = document(other, b"foreign")
    indirect.submit([foreign])
    theirs = indirect.find_documents(other).by_unique_id(foreign.entry.unique_id)
    with pytest.raises(XdsError) as mismatch:
        indirect.replace(replace(theirs, patient=patient), document(patient, b"new"))
    assert mismatch.value.code == "XDSPatientIdDoesNotMatch"
    # An entry the registry does not know (or the caller may not see).
    with pytest.raises(XdsError) as unknown:
        indirect.replace(
            replace(current, entry_uuid=xds.new_entry_uuid()), document(patient, b"new")
        )
    assert unknown.value.code == "UnresolvedReferenceException"
    indirect.delete(current)
    with pytest.raises(XdsError) as deleted:
        indirect.replace(current, document(patient, b"after deletion"))
    assert deleted.value.code == "XDSRegistryMetadataError"
    # Nothing was registered by the refusals.
    every = indirect.find_documents(patient, xds.STATUSES)
    assert [item.unique_id for item in every.documents] == [kept.entry.unique_id]
    with pytest.raises(ValidationError):
        indirect.replace(replace(current, entry_uuid=None), document(patient, b"x"))


def titled(client: DmpClient, patient: Patient, title: str, **options) -> Document:
    return client.document(patient, title.encode(), title=title, mime_type="text/plain", **options)


def listed(client: DmpClient, patient: Patient) -> set[str]:
    return {item.title for item in client.find_documents(patient).documents}


def test_visibility_at_submission_and_later(client: DmpClient, stubs: Stubs) -> None:
    patient = opened(client)
    Visibility = xds.Visibility
    documents = [
        titled(client, patient, "masked", visibility=Visibility(hidden_from_professionals=True)),
        titled(client, patient, "secret", visibility=Visibility(hidden_from_patient=True)),
        titled(
            client, patient, "minor", visibility=Visibility(hidden_from_legal_representatives=True)
        ),
        titled(client, patient, "plain"),
    ]
    client.submit(documents)
    found = {item.title: item for item in client.find_documents(patient).documents}
    assert {title: entry.visibility for title, entry in found.items()} == {
        "masked": Visibility(hidden_from_professionals=True),
        "secret": Visibility(hidden_from_patient=True),
        "minor": Visibility(hidden_from_legal_representatives=True),
        "plain": Visibility(),
    }
    assert [code.code for code in found["minor"].confidentiality] == [
        "N",
        "INVISIBLE_REPRESENTANTS_LEGAUX",
    ]
    mode = client.identity.mode
    with (
        make_client(stubs, mode, subject=COLLEAGUE) as colleague,
        make_client(stubs, mode, subject=patient.ins) as patient_side,
    ):
        colleague.set_authorization(patient)
        # The author sees everything; another professional not what is masked from them; the
        # patient not what is hidden from them (nor the set's signature, hidden from both).
        assert listed(client, patient) == {"masked", "secret", "minor", "plain"}
        assert listed(colleague, patient) == {"secret", "minor", "plain"}
        assert listed(patient_side, patient) == {"masked", "minor", "plain"}
        with pytest.raises(XdsError) as hidden:
            patient_side.retrieve(patient, [found["secret"].unique_id])
        assert hidden.value.code == "XDSDocumentUniqueIdError"

        client.unmask(found["masked"])
        client.show_to_patient(found["secret"])
        assert listed(colleague, patient) == {"masked", "secret", "minor", "plain"}
        assert listed(patient_side, patient) == {"masked", "secret", "minor", "plain"}
        (shown,) = patient_side.retrieve(patient, [found["secret"].unique_id]).documents
        assert shown.read_bytes() == b"secret"

    # Once the patient may see a document, the DMP never hides it from them again.
    current = client.find_documents(patient).by_unique_id(found["secret"].unique_id)
    with pytest.raises(XdsError) as again:
        client.set_visibility(current, Visibility(hidden_from_patient=True))
    assert again.value.code == "XDSMetadataUpdateError"
    with pytest.raises(ValidationError):
        client.unmask(current)
    with pytest.raises(ValidationError):
        client.show_to_patient(current)


def test_xds_failures_and_partial_success(indirect: DmpClient, colleague: DmpClient) -> None:
    patient = opened(indirect)
    kept = document(patient, b"present")
    indirect.submit([kept])

    with pytest.raises(XdsError) as refused:
        colleague.submit([document(patient, b"intrus")])
    assert refused.value.status == xds.FAILURE and refused.value.code
    assert refused.value.exit_code == 1

    with pytest.raises(XdsError) as missing:
        indirect.retrieve(patient, ["1.2.3.4.404"])
    assert missing.value.code == "XDSDocumentUniqueIdError"

    partial = indirect.retrieve(patient, [kept.entry.unique_id, "1.2.3.4.404"])
    assert not partial.complete and partial.status == xds.PARTIAL_SUCCESS
    assert [item.document_unique_id for item in partial.documents] == [kept.entry.unique_id]
    assert [error.code for error in partial.errors] == ["XDSDocumentUniqueIdError"]


def test_a_document_that_differs_from_its_metadata_is_refused(
    indirect: DmpClient, tmp_path: Path
) -> None:
    patient = opened(indirect)
    sent = document(patient, b"le vrai contenu")
    indirect.submit([sent])
    (found,) = indirect.find_documents(patient).documents
    forged = replace(found, hash=hashlib.sha1(b"autre", usedforsecurity=False).hexdigest())
    with pytest.raises(IntegrityError) as error:
        indirect.retrieve(patient, [forged], directory=tmp_path)
    assert error.value.document_unique_id == sent.entry.unique_id
    assert list(tmp_path.iterdir()) == []


def test_a_vihf_signed_by_an_untrusted_key_is_a_soap_fault(stubs: Stubs, tmp_path: Path) -> None:
    stranger = examplepki.generate(tmp_path / "other")
    profile = example_profile(stubs.pki, AuthMode.INDIRECTE, {"dmp": stubs.dmp_base_url})
    foreign = example_profile(stranger).signature_credential
    client = DmpClient.from_profile(replace(profile, signature_credential=foreign))
    with client, pytest.raises(SoapFault) as fault:
        client.exists(new_patient())
    assert fault.value.code == "Sender" and fault.value.subcode


def test_bad_input_is_refused_before_sending(indirect: DmpClient) -> None:
    with pytest.raises(ValidationError):
        indirect.submit([])
    with pytest.raises(ValidationError):
        indirect.submit([document(new_patient(), b"a"), document(new_patient(), b"b")])
    with pytest.raises(ValidationError):
        indirect.find_documents(new_patient(), page_size=0)


# --- traces and progress ---------------------------------------------------------------------


def test_traces_and_progress(stubs: Stubs, tmp_path: Path) -> None:
    tracer = Tracer(tmp_path / "trace")
    with make_client(stubs, tracer=tracer) as client:
        patient = opened(client)
        content = bytes(range(256)) * 4096
        sent: list[tuple[int, int | None]] = []
        client.submit([document(patient, content)], progress=lambda d, t: sent.append((d, t)))
        received: list[tuple[int, int | None]] = []
        (found,) = client.find_documents(patient).documents
        client.retrieve(patient, [found], progress=lambda d, t: received.append((d, t)))
    done, total = sent[-1]
    assert done == total and total is not None and total > len(content)
    assert [d for d, _ in sent] == sorted(d for d, _ in sent)
    assert received[-1][0] > len(content)
    names = sorted(path.name for path in tracer.directory.iterdir())
    submit_mime = next(name for name in names if name.endswith("-request.mime"))
    assert (tracer.directory / submit_mime).stat().st_size == total
    assert any(name.endswith("ProvideAndRegisterDocumentSet-b-request.xml") for name in names)
    assert any(name.endswith("RetrieveDocumentSet-response.mime") for name in names)
    assert any(name.endswith("PRPA_IN201311UV02-response.xml") for name in names)
    raw = (tracer.directory / submit_mime).read_bytes()
    assert content in raw


def test_a_200_mb_document_comes_back_byte_exact(indirect: DmpClient, tmp_path: Path) -> None:
    """Sent from its file and received into a directory: streamed both ways (the client's peak
    memory during this transfer is measured by benchmarks/dmp_transfer.py)."""
    patient = opened(indirect)
    source = tmp_path / "large.bin"
    sent_digest = hashlib.sha256()
    with source.open("wb") as handle:
        for number in range(200):
            block = hashlib.shake_256(number.to_bytes(2, "big")).digest(1024 * 1024)
            sent_digest.update(block)
            handle.write(block)
    large = indirect.document(patient, source, title="large", mime_type="application/pdf")
    submitted = indirect.submit([large])
    assert submitted.entries[0].size == 200 * 1024 * 1024

    received = tmp_path / "received"
    received.mkdir()
    (found,) = indirect.find_documents(patient).documents
    (document,) = indirect.retrieve(patient, [found], directory=received).documents
    assert document.path is not None and document.data is None
    assert document.size == source.stat().st_size
    received_digest = hashlib.sha256()
    with document.path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            received_digest.update(block)
    assert received_digest.hexdigest() == sent_digest.hexdigest()


def test_a_submitted_file_is_read_once_to_hash_and_once_to_send(
    client: DmpClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = opened(client)
    source = tmp_path / "document.bin"
    source.write_bytes(bytes(range(256)) * 64)
    from_file = document(patient, source)
    opens: list[str] = []
    real_open = Path.open

    def counting_open(path: Path, *args, **kwargs):
        if path == source:
            opens.append(args[0] if args else kwargs.get("mode", "r"))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    submitted = client.submit([from_file])
    assert opens == ["rb", "rb"]  # SHA-1, SHA-256 and size in one pass; then the upload
    expected = hashlib.sha1(source.read_bytes(), usedforsecurity=False).hexdigest()
    assert submitted.entries[0].hash == expected
    assert submitted.signature is not None and submitted.warnings == ()


def test_a_retrieval_computes_only_the_sha1_it_checks(
    indirect: DmpClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = opened(indirect)
    content = bytes(range(256)) * 1024
    submitted = indirect.submit([document(patient, content)])
    asked: list[frozenset[str]] = []
    real_decode = mtom.decode

    def recording_decode(*args, **kwargs):
        decoded = real_decode(*args, **kwargs)
        if "digests" in kwargs:  # the channel's call (the stub, in this process, names none)
            asked.append(frozenset(kwargs["digests"]))
            assert all(part.sha256 is None for part in decoded.parts.values())
        return decoded

    monkeypatch.setattr(mtom, "decode", recording_decode)
    (retrieved,) = indirect.retrieve(patient, submitted.entries, directory=tmp_path).documents
    assert asked == [frozenset({"sha1"})]
    assert retrieved.sha1 == hashlib.sha1(content, usedforsecurity=False).hexdigest()
    assert retrieved.path is not None and retrieved.path.read_bytes() == content


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard-links", "no-hard-links"])
def test_a_retrieved_file_is_named_after_its_document_and_never_replaces_one(
    indirect: DmpClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hard_links: bool
) -> None:
    patient = opened(indirect)
    content = b"%PDF-1.4 retrieved twice"
    submitted = indirect.submit([document(patient, content, mime_type="application/pdf")])
    (entry_,) = submitted.entries
    if not hard_links:

        def no_link(*_: object) -> None:
            raise PermissionError(1, "Operation not permitted")  # as on FAT or SMB

        monkeypatch.setattr("transport.dmp.client.os.link", no_link)
    stem = entry_.unique_id.replace("^", "_")
    (tmp_path / f"{stem}.pdf").write_bytes(b"kept")
    paths = [
        indirect.retrieve(patient, [entry_], directory=tmp_path).documents[0].path for _ in range(2)
    ]
    assert [path.name for path in paths if path] == [f"{stem}-1.pdf", f"{stem}-2.pdf"]
    assert all(path.read_bytes() == content for path in paths if path)
    assert (tmp_path / f"{stem}.pdf").read_bytes() == b"kept"
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"{stem}.pdf", f"{stem}-1.pdf", f"{stem}-2.pdf"]
    )


def test_an_xds_read_is_sent_again_and_an_xds_write_is_not(pki) -> None:
    # Which XDS actions are reads is looked up in transport.dmp.xds when an XDS service is first
    # called (importing the client does not import it): a query is retried, a submission is not.
    unavailable = MockWire(lambda request: MockResponse(503, b"", {"Retry-After": "0"}))
    client = dmp_client(pki, unavailable)
    patient = new_patient()
    with pytest.raises(TransportError, match="HTTP 503"):
        client.find_documents(patient)
    assert len(unavailable.requests) == QUICK.attempts
    note = client.document(patient, b"a note", title="Note", mime_type="text/plain")
    with pytest.raises(TransportError, match="HTTP 503"):
        client.submit([note], sign=False)
    assert len(unavailable.requests) == QUICK.attempts + 1
    assert unavailable.requests[-1].url.endswith("/repository")
