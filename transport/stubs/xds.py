"""The DMP-style XDS.b registry and repository: ITI-41 submit, ITI-18 query, ITI-43 retrieve,
ITI-57 status and metadata updates, over one SQLite table of document versions.

Every request first passes the common checks (:func:`transport.stubs.soap.check_envelope`: SOAP
1.2, WS-Addressing, a verified VIHF); then the VIHF must name the patient the request is about, the
patient's DMP must be open and the caller (VIHF NameID) authorized on it. Business errors are
``RegistryError`` entries with the IHE codes where IHE defines one; the DMP-specific ones
(``DMPAccessDenied``, ``DMPClosed``) are this stub's names, the DMP's catalogue not being public.

Documents are stored byte-exact in the blob store; the repository decodes an MTOM request as it
arrives from the connection, each document straight into a file on the store's file system (hashed
on the way, then synced and renamed into the store once accepted), and streams retrieved documents
from disk, so no document is ever held whole in memory nor copied twice. A document is
acknowledged only after its content and its row are durable. Who sees a document follows its DMP
restriction codes (see ``visible``): masked from professionals (``MASQUE_PS``), its submitter and
the patient only; hidden from the patient (``INVISIBLE_PATIENT``), never listed nor retrieved for
the patient. A document submitted in a secret connection (the VIHF ``confidentiality-code``
``INVISIBLE_REPRESENTANTS_LEGAUX``) is registered with that confidentiality code added, hiding it
from the patient's legal representatives.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lxml import etree

from transport.dmp import xades, xds
from transport.errors import CisisError, MalformedXMLError, SignatureError, ValidationError
from transport.soap import mtom
from transport.stubs.app import StubContext
from transport.stubs.patients import Authorization, DmpStatus, now_text
from transport.stubs.server import StubRequest, StubResponse
from transport.stubs.soap import (
    Checked,
    Refused,
    check_envelope,
    check_mtom_content_type,
    check_xop_root,
    response_envelope,
)
from transport.vihf import SECRET_CONNECTION, Patient
from transport.xml import parse_xml
from transport.xmlsig import VerifySettings

log = logging.getLogger("transport.stubs")

REPOSITORY_UNIQUE_ID = "1.2.250.1.213.4.1.1.1.2"
"""The repository unique id the DMP answers with (official TD3.1/TD3.2 examples)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS xds_documents (
    entry_uuid TEXT PRIMARY KEY,
    logical_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    unique_id TEXT NOT NULL,
    ins TEXT NOT NULL,
    oid TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    submission_set TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    UNIQUE (logical_id, version)
);
CREATE INDEX IF NOT EXISTS xds_documents_patient ON xds_documents (ins, oid, status);
CREATE INDEX IF NOT EXISTS xds_documents_unique_id ON xds_documents (unique_id);
CREATE TABLE IF NOT EXISTS xds_submission_sets (
    unique_id TEXT PRIMARY KEY,
    ins TEXT NOT NULL,
    oid TEXT NOT NULL,
    submitted_at TEXT NOT NULL
);
"""

_RESPONSE_ACTIONS = {
    xds.ACTION_PROVIDE_AND_REGISTER: f"{xds.ACTION_PROVIDE_AND_REGISTER}Response",
    xds.ACTION_RETRIEVE: f"{xds.ACTION_RETRIEVE}Response",
    xds.ACTION_STORED_QUERY: f"{xds.ACTION_STORED_QUERY}Response",
    xds.ACTION_UPDATE: f"{xds.ACTION_UPDATE}Response",
}
_DIGESTS = {
    "http://www.w3.org/2000/09/xmldsig#sha1": "sha1",
    "http://www.w3.org/2001/04/xmlenc#sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384": "sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512": "sha512",
}
_DS = "http://www.w3.org/2000/09/xmldsig#"


class _Rejected(Exception):
    """A request answered with registry errors (and no change)."""

    def __init__(self, *errors: xds.RegistryError) -> None:
        super().__init__(errors[0].context)
        self.errors = errors


def _error(code: str, context: str, location: str | None = None) -> _Rejected:
    return _Rejected(xds.RegistryError(code, context, "Error", location))


@dataclass(frozen=True)
class StoredDocument:
    """One version of a document in the stub: its registry metadata and where its bytes are."""

    entry: xds.DocumentEntry
    sha256: str
    submitted_by: str


class DocumentStore:
    """The XDS tables over the stubs' database and blob store."""

    def __init__(self, context: StubContext) -> None:
        self.context = context
        context.database.ensure(SCHEMA)
        referenced = context.database.query("SELECT DISTINCT sha256 FROM xds_documents")
        context.blobs.remove_unreferenced(row["sha256"] for row in referenced)

    def _documents(self, where: str, parameters: Sequence[object]) -> list[StoredDocument]:
        # ``where`` is always one of this class's literal clauses; values are bound parameters.
        sql = (
            "SELECT entry_uuid, logical_id, version, status, metadata, sha256, submitted_by"  # noqa: S608
            f" FROM xds_documents WHERE {where} ORDER BY submitted_at, rowid"
        )
        rows = self.context.database.query(sql, parameters)
        return [
            StoredDocument(
                replace(
                    xds.read_document_entry(parse_xml(row["metadata"])),
                    entry_uuid=row["entry_uuid"],
                    logical_id=row["logical_id"],
                    version=str(row["version"]),
                    status=row["status"],
                ),
                row["sha256"],
                row["submitted_by"],
            )
            for row in rows
        ]

    def for_patient(self, patient: Patient, statuses: Sequence[str]) -> list[StoredDocument]:
        """The patient's document versions whose status is one of ``statuses``."""
        marks = ",".join("?" * len(statuses))
        return self._documents(
            f"ins = ? AND oid = ? AND status IN ({marks})", (patient.ins, patient.oid, *statuses)
        )

    def by_entry_uuid(self, entry_uuid: str) -> StoredDocument | None:
        """The version with this entryUUID."""
        found = self._documents("entry_uuid = ?", (entry_uuid,))
        return found[0] if found else None

    def by_unique_id(self, unique_id: str) -> list[StoredDocument]:
        """Every version of the document with this uniqueId, oldest first."""
        return self._documents("unique_id = ?", (unique_id,))

    def submission_set_exists(self, unique_id: str) -> bool:
        """Whether a submission set with this uniqueId was registered."""
        return bool(
            self.context.database.query(
                "SELECT 1 FROM xds_submission_sets WHERE unique_id = ?", (unique_id,)
            )
        )


def _metadata(entry: xds.DocumentEntry) -> bytes:
    """The stored form of an entry: its ExtrinsicObject, registry fields left to the row."""
    bare = replace(entry, entry_uuid=None, logical_id=None, version=None, status=None)
    element = xds.document_entry_element(bare, "stored")
    return etree.tostring(element)


class _XdsService:
    """What the registry and the repository share: checks, access control, answers."""

    def __init__(self, context: StubContext) -> None:
        self.context = context
        self.documents = DocumentStore(context)
        self.operations: dict[str, Callable[..., etree._Element | StubResponse]] = {}

    def caller_patient(self, checked: Checked, patient: Patient, *, reading: bool = False) -> None:
        """Refuse unless the VIHF names ``patient``, whose DMP is open and the caller authorized
        (for a read, possibly by an emergency purpose of use: see
        :meth:`transport.stubs.patients.PatientRegistry.read_access`)."""
        vihf = checked.vihf.vihf
        if vihf.patient != patient:
            raise _error(
                "XDSPatientIdDoesNotMatch",
                "le patient de la requête n'est pas celui du VIHF (resource-id)",
            )
        status = self.context.patients.status(patient)
        if status is DmpStatus.ABSENT:
            raise _error("XDSUnknownPatientId", "aucun DMP pour ce patient")
        if status is DmpStatus.CLOSED:
            raise _error("DMPClosed", "le DMP de ce patient est fermé")
        if _is_the_patient(checked, patient):
            return
        patients = self.context.patients
        authorization = (
            patients.read_access(patient, vihf)
            if reading
            else patients.authorization(patient, vihf.subject_id)
        )
        if authorization is not Authorization.VALID:
            raise _error("DMPAccessDenied", "le professionnel n'est pas autorisé sur ce DMP")

    def visible(self, checked: Checked, document: StoredDocument) -> bool:
        """Whether the caller may see this document, by its DMP restrictions
        (:class:`transport.dmp.xds.Visibility`): its submitter always; the patient (see
        :func:`_is_the_patient`) unless it is hidden from them; other professionals unless it
        is masked from them. The stub has no legal representatives: their restriction is
        stored and returned, never enforced."""
        caller = checked.vihf.vihf.subject_id
        restrictions = document.entry.visibility
        if caller == document.submitted_by:
            return True
        if _is_the_patient(checked, document.entry.patient):
            return not restrictions.hidden_from_patient
        return not restrictions.hidden_from_professionals

    def answer(self, checked: Checked, payload: etree._Element) -> StubResponse:
        """The SOAP 1.2 response to ``checked`` carrying ``payload``."""
        return StubResponse(
            200, response_envelope(_RESPONSE_ACTIONS[checked.action], checked.message_id, payload)
        )

    def dispatch(self, checked: Checked, request: StubRequest, extra: object) -> StubResponse:
        """Run the operation of ``checked.action`` and answer with its payload."""
        operation = self.operations.get(checked.action)
        if operation is None:
            return Refused(
                "Sender",
                "wsa:ActionNotSupported",
                f"action non prise en charge par ce service : {checked.action}",
            ).response()
        try:
            payload = operation(checked, request, extra)
        except _Rejected as rejected:
            log.info("%s rejected: %s", checked.action, rejected.errors[0].code)
            payload = self.failure(checked.action, rejected.errors)
        except ValidationError as error:
            log.info("%s invalid: %s", checked.action, error.field)
            payload = self.failure(
                checked.action, (xds.RegistryError("XDSRegistryMetadataError", error.message),)
            )
        if isinstance(payload, StubResponse):
            return payload
        assert isinstance(payload, etree._Element)
        return self.answer(checked, payload)

    def failure(self, action: str, errors: Sequence[xds.RegistryError]) -> etree._Element:
        """The failure payload of ``action`` carrying ``errors``."""
        if action == xds.ACTION_STORED_QUERY:
            return xds.query_response(errors=errors)
        if action == xds.ACTION_RETRIEVE:
            return xds.retrieve_response((), errors)
        return xds.registry_response(errors)


class RegistryService(_XdsService):
    """The ``registry`` service: ITI-18 stored queries and ITI-57 updates."""

    def __init__(self, context: StubContext) -> None:
        super().__init__(context)
        self.operations = {
            xds.ACTION_STORED_QUERY: self.stored_query,
            xds.ACTION_UPDATE: self.update,
        }

    def __call__(self, request: StubRequest) -> StubResponse:
        try:
            checked = check_envelope(request, self.context.verify)
        except Refused as refusal:
            log.info("registry refused: %s", refusal.subcode or refusal.code)
            return refusal.response()
        return self.dispatch(checked, request, None)

    def stored_query(self, checked: Checked, request: StubRequest, extra: object) -> etree._Element:
        """ITI-18: FindDocuments and GetDocuments, with the ebRS paging window."""
        query = xds.read_query_request(checked.payload)
        if query.query_id == xds.FIND_DOCUMENTS:
            found = self._find_documents(checked, query)
        elif query.query_id == xds.GET_DOCUMENTS:
            found = self._get_documents(checked, query)
        else:
            raise _error("XDSUnknownStoredQuery", f"requête stockée inconnue : {query.query_id}")
        visible = [document.entry for document in found if self.visible(checked, document)]
        window = visible[query.start_index :]
        if query.max_results >= 0:
            window = window[: query.max_results]
        paged = query.start_index > 0 or query.max_results >= 0
        total = len(visible) if paged else None
        if query.return_type == "ObjectRef":
            references = [entry.entry_uuid or "" for entry in window]
            return xds.query_response(
                object_refs=references, start_index=query.start_index, total=total
            )
        if query.return_type != "LeafClass":
            raise _error("XDSRegistryError", f"returnType non pris en charge : {query.return_type}")
        return xds.query_response(window, start_index=query.start_index, total=total)

    def _find_documents(self, checked: Checked, query: xds.StoredQuery) -> list[StoredDocument]:
        patients = _parameter(query, "$XDSDocumentEntryPatientId", required=True)
        if len(patients) != 1:
            raise _error("XDSStoredQueryParamNumber", "un seul $XDSDocumentEntryPatientId")
        patient = xds.read_patient_id(patients[0])
        self.caller_patient(checked, patient, reading=True)
        statuses = _parameter(query, "$XDSDocumentEntryStatus", required=True)
        unknown = set(statuses) - xds.STATUSES
        if unknown:
            raise _error("XDSRegistryError", f"statut inconnu : {sorted(unknown)[0]}")
        return self.documents.for_patient(patient, statuses)

    def _get_documents(self, checked: Checked, query: xds.StoredQuery) -> list[StoredDocument]:
        patient = checked.vihf.vihf.patient
        if patient is None:
            raise _error("XDSPatientIdDoesNotMatch", "le VIHF ne désigne aucun patient")
        self.caller_patient(checked, patient, reading=True)
        uuids = _parameter(query, "$XDSDocumentEntryEntryUUID")
        unique_ids = _parameter(query, "$XDSDocumentEntryUniqueId")
        if bool(uuids) == bool(unique_ids):
            raise _error(
                "XDSStoredQueryParamNumber",
                "$XDSDocumentEntryEntryUUID ou $XDSDocumentEntryUniqueId, l'un des deux",
            )
        found: list[StoredDocument] = []
        for entry_uuid in uuids:
            document = self.documents.by_entry_uuid(entry_uuid)
            found.extend([document] if document else [])
        for unique_id in unique_ids:
            found.extend(self.documents.by_unique_id(unique_id))
        return [document for document in found if document.entry.patient == patient]

    def update(self, checked: Checked, request: StubRequest, extra: object) -> etree._Element:
        """ITI-57: an availability status change, or a new version of a document's metadata."""
        submission = xds.read_submit_objects(checked.payload)
        self.caller_patient(checked, submission.submission_set.patient)
        if self.documents.submission_set_exists(submission.submission_set.unique_id):
            raise _error("XDSDuplicateUniqueIdInRegistry", "uniqueId de lot déjà enregistré")
        changes = [a for a in submission.associations if a.type == xds.UPDATE_AVAILABILITY_STATUS]
        if changes and not submission.entries:
            self._change_status(checked, submission, changes)
        elif len(submission.entries) == 1 and not changes:
            self._new_version(checked, submission)
        else:
            raise _error(
                "XDSMetadataUpdateOperationError",
                "une mise à jour porte sur un changement de statut ou une nouvelle version",
            )
        return xds.registry_response()

    def _change_status(
        self, checked: Checked, submission: xds.Submission, changes: Sequence[xds.Association]
    ) -> None:
        patient = submission.submission_set.patient
        planned = []
        for change in changes:
            document = self.documents.by_entry_uuid(change.target)
            if document is None or document.entry.patient != patient:
                raise _error("XDSMetadataUpdateError", "document inconnu", change.target)
            if not self.visible(checked, document):
                raise _error("XDSMetadataUpdateError", "document inconnu", change.target)
            original = xds.first_value(change.slots, "OriginalStatus") or ""
            new = xds.first_value(change.slots, "NewStatus") or ""
            if original != document.entry.status:
                raise _error(
                    "XDSMetadataUpdateError",
                    f"le statut actuel n'est pas {original!r}",
                    change.target,
                )
            if new not in xds.STATUSES:
                raise _error("XDSMetadataUpdateError", f"statut inconnu : {new!r}", change.target)
            planned.append((new, change.target))
        with self.context.database.transaction() as connection:
            _register_set(connection, submission)
            connection.executemany(
                "UPDATE xds_documents SET status = ? WHERE entry_uuid = ?", planned
            )

    def _new_version(self, checked: Checked, submission: xds.Submission) -> None:
        ((object_id, entry),) = submission.entries.items()
        members = [
            a for a in submission.associations if a.type == xds.HAS_MEMBER and a.target == object_id
        ]
        previous = (xds.first_value(members[0].slots, "PreviousVersion") if members else "") or ""
        versions = [
            document
            for document in self.documents.by_unique_id(entry.unique_id)
            if document.entry.logical_id == entry.logical_id
        ]
        current = next((d for d in versions if d.entry.status == xds.APPROVED), None)
        if current is None or current.entry.patient != submission.submission_set.patient:
            raise _error("XDSMetadataUpdateError", "document inconnu", entry.logical_id)
        if not self.visible(checked, current):
            raise _error("XDSMetadataUpdateError", "document inconnu", entry.logical_id)
        if (
            entry.visibility.hidden_from_patient
            and not current.entry.visibility.hidden_from_patient
        ):
            # Once the patient may see a document, it is never hidden from them again.
            raise _error("XDSMetadataUpdateError", "le document est déjà visible par le patient")
        if previous != current.entry.version:
            raise _error(
                "XDSMetadataVersionError",
                f"la version courante est {current.entry.version}, pas {previous!r}",
                entry.logical_id,
            )
        if (entry.hash, entry.size) != (None, None) and (entry.hash, entry.size) != (
            current.entry.hash,
            current.entry.size,
        ):
            raise _error("XDSMetadataUpdateError", "le hash et la taille ne changent pas")
        updated = replace(
            entry,
            hash=current.entry.hash,
            size=current.entry.size,
            repository_unique_id=current.entry.repository_unique_id,
        )
        with self.context.database.transaction() as connection:
            _register_set(connection, submission)
            connection.execute(
                "UPDATE xds_documents SET status = ? WHERE entry_uuid = ?",
                (xds.DEPRECATED, current.entry.entry_uuid),
            )
            _insert(
                connection,
                updated,
                xds.new_entry_uuid(),
                current.entry.logical_id or "",
                int(current.entry.version or "1") + 1,
                current.sha256,
                submission.submission_set.unique_id,
                current.submitted_by,
            )


def _is_the_patient(checked: Checked, patient: Patient) -> bool:
    """Whether the caller is the patient: the stub's patient-side caller is a VIHF whose NameID
    is the patient's own INS (the DMP's patient access is outside the LPS interface; this
    stands for it), who needs no authorization on their own DMP."""
    return checked.vihf.vihf.subject_id == patient.ins


def _parameter(query: xds.StoredQuery, name: str, *, required: bool = False) -> tuple[str, ...]:
    values = tuple(
        item for value in query.parameters.get(name, ()) for item in xds.parse_list(value)
    )
    if required and not values:
        raise _error("XDSStoredQueryParamNumber", f"paramètre requis absent : {name}")
    return values


def _register_set(connection: sqlite3.Connection, submission: xds.Submission) -> None:
    patient = submission.submission_set.patient
    connection.execute(
        "INSERT INTO xds_submission_sets (unique_id, ins, oid, submitted_at) VALUES (?,?,?,?)",
        (submission.submission_set.unique_id, patient.ins, patient.oid, now_text()),
    )


def _secret_code(checked: Checked) -> xds.Coded | None:
    """The confidentiality code a secret connection (VIHF ``confidentiality-code``
    :data:`transport.vihf.SECRET_CONNECTION`) gives every document it submits, or None."""
    code = checked.vihf.vihf.confidentiality_code
    if code is None or code.code != SECRET_CONNECTION.code:
        return None
    return xds.Coded(code.code, code.code_system, code.display_name)


def _with_code(codes: tuple[xds.Coded, ...], added: xds.Coded | None) -> tuple[xds.Coded, ...]:
    if added is None or any(code.code == added.code for code in codes):
        return codes
    return (*codes, added)


def _insert(
    connection: sqlite3.Connection,
    entry: xds.DocumentEntry,
    entry_uuid: str,
    logical_id: str,
    version: int,
    sha256: str,
    submission_set: str,
    submitted_by: str,
) -> None:
    connection.execute(
        "INSERT INTO xds_documents (entry_uuid, logical_id, version, unique_id, ins, oid, status,"
        " metadata, sha256, submission_set, submitted_by, submitted_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            entry_uuid,
            logical_id,
            version,
            entry.unique_id,
            entry.patient.ins,
            entry.patient.oid,
            xds.APPROVED,
            _metadata(entry),
            sha256,
            submission_set,
            submitted_by,
            now_text(),
        ),
    )


class RepositoryService(_XdsService):
    """The ``repository`` service: ITI-41 submissions and ITI-43 retrievals, MTOM both ways."""

    def __init__(self, context: StubContext) -> None:
        super().__init__(context)
        self.operations = {
            xds.ACTION_PROVIDE_AND_REGISTER: self.provide_and_register,
            xds.ACTION_RETRIEVE: self.retrieve,
        }

    def __call__(self, request: StubRequest) -> StubResponse:
        incoming = Path(tempfile.mkdtemp(dir=self.context.blobs.incoming()))
        try:
            try:
                # The media type first: a body that is not MTOM is never decoded.
                check_mtom_content_type(request.content_type)
                decoded = self._decode(request, incoming)
                check_xop_root(decoded.root_content_type)
                checked = check_envelope(request, self.context.verify, root=decoded.root)
            except Refused as refusal:
                log.info("repository refused: %s", refusal.subcode or refusal.code)
                return refusal.response()
            return self.dispatch(checked, request, decoded)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    @staticmethod
    def _decode(request: StubRequest, incoming: Path) -> mtom.Decoded:
        try:
            # Each document is synced once accepted (BlobStore.adopt): its writeback starts now.
            return mtom.decode(
                request.stream, request.content_type, directory=incoming, writeback=True
            )
        except CisisError as error:
            raise Refused("Sender", "soap:MalformedMessage", error.message) from None

    def provide_and_register(
        self, checked: Checked, request: StubRequest, decoded: object
    ) -> etree._Element:
        """ITI-41: check the submission, store each document byte-exact, register it."""
        assert isinstance(decoded, mtom.Decoded)
        submission = xds.read_provide_and_register(checked.payload)
        patient = submission.submission_set.patient
        self.caller_patient(checked, patient)
        if not submission.entries:
            raise _error("XDSRegistryMetadataError", "le lot ne contient aucun document")
        if self.documents.submission_set_exists(submission.submission_set.unique_id):
            raise _error("XDSDuplicateUniqueIdInRegistry", "uniqueId de lot déjà enregistré")
        parts = {
            object_id: self._part(decoded, submission, object_id)
            for object_id in submission.entries
        }
        if len({id(part) for part in parts.values()}) != len(parts):
            # Each document is its own part (IHE ITI TF-2b 3.41.4.1.2): one file, one blob.
            raise _error("XDSRepositoryMetadataError", "deux documents désignent la même pièce")
        sha1 = {object_id: _part_digest(part, "sha1") for object_id, part in parts.items()}
        for object_id, entry in submission.entries.items():
            self._check_entry(patient, object_id, entry, parts[object_id], sha1[object_id])
        warnings = self._check_signatures(submission, parts)
        replaced = self._replaced(checked, submission)
        self._store(checked, submission, parts, sha1, replaced)
        return xds.registry_response(warnings)

    @staticmethod
    def _part(decoded: mtom.Decoded, submission: xds.Submission, object_id: str) -> mtom.Part:
        include = submission.includes.get(object_id)
        if include is None:
            raise _error("XDSMissingDocument", "document sans contenu", object_id)
        try:
            return decoded.part_for(include)
        except CisisError:
            raise _error("XDSMissingDocument", "pièce MTOM absente", object_id) from None

    def _check_entry(
        self,
        patient: Patient,
        object_id: str,
        entry: xds.DocumentEntry,
        part: mtom.Part,
        sha1: str,
    ) -> None:
        if entry.patient != patient:
            raise _error(
                "XDSPatientIdDoesNotMatch",
                "patient du document différent de celui du lot",
                object_id,
            )
        if entry.hash is not None and entry.hash.lower() != sha1:
            raise _error("XDSRepositoryMetadataError", "le hash ne correspond pas", object_id)
        if entry.size is not None and entry.size != part.size:
            raise _error("XDSRepositoryMetadataError", "la taille ne correspond pas", object_id)
        if self.documents.by_unique_id(entry.unique_id):
            raise _error(
                "XDSDocumentUniqueIdError", "uniqueId de document déjà enregistré", object_id
            )

    def _check_signatures(
        self, submission: xds.Submission, parts: dict[str, mtom.Part]
    ) -> list[xds.RegistryError]:
        """Warnings about the set's signature document (``signs`` the set): its XAdES signature
        must verify with a signature certificate of the stub's CAs, and its manifest must
        reference every other document of the set by ``urn:oid:<uniqueId>`` with the digest of
        its exact bytes (IHE DSG). Warnings, not errors: the DMP's own example submission carries
        a signature made with a certificate outside our CAs, over a manifest for other
        documents."""
        warnings = []
        for association in submission.associations:
            if association.type != xds.SIGNS:
                continue
            if (
                association.target != submission.submission_set_id
                or association.source not in parts
            ):
                raise _error("XDSRegistryMetadataError", "signs relie la signature au lot")
            others = {
                f"urn:oid:{entry.unique_id}": parts[object_id]
                for object_id, entry in submission.entries.items()
                if object_id != association.source
            }
            warnings.extend(_check_manifest(parts[association.source], others, self.context.verify))
        return warnings

    def _replaced(self, checked: Checked, submission: xds.Submission) -> list[str]:
        """The entryUUIDs the submission's ``RPLC`` associations replace, once each is checked
        (IHE ITI TF-2b §3.42.4.1.3.5): the source is a document of the set; the target an
        entry the caller may see (else ``UnresolvedReferenceException``, the ebRS code for an
        unknown reference, which also says nothing of a hidden document), of the set's patient
        (else ``XDSPatientIdDoesNotMatch``), still approved (else ``XDSRegistryMetadataError``:
        a deprecated, deleted or archived entry is replaced no more)."""
        replaced = []
        for association in submission.associations:
            if association.type != xds.REPLACES:
                continue
            if association.source not in submission.entries:
                raise _error("XDSRegistryMetadataError", "RPLC relie un document du lot")
            target = self.documents.by_entry_uuid(association.target)
            if target is None or not self.visible(checked, target):
                raise _error(
                    "UnresolvedReferenceException", "document remplacé inconnu", association.target
                )
            if target.entry.patient != submission.submission_set.patient:
                raise _error(
                    "XDSPatientIdDoesNotMatch",
                    "le document remplacé est celui d'un autre patient",
                    association.target,
                )
            if target.entry.status != xds.APPROVED or association.target in replaced:
                raise _error(
                    "XDSRegistryMetadataError",
                    "le document remplacé n'est plus approuvé",
                    association.target,
                )
            replaced.append(association.target)
        return replaced

    def _store(
        self,
        checked: Checked,
        submission: xds.Submission,
        parts: dict[str, mtom.Part],
        sha1: dict[str, str],
        replaced: Sequence[str],
    ) -> None:
        stored = {
            object_id: self.context.blobs.adopt(part.path, _part_digest(part, "sha256"), part.size)
            if part.path is not None
            else self.context.blobs.put(part.read_bytes())
            for object_id, part in parts.items()
        }
        secret = _secret_code(checked)
        with self.context.database.transaction() as connection:
            _register_set(connection, submission)
            self.context.patients.record_document(connection, submission.submission_set.patient)
            connection.executemany(
                "UPDATE xds_documents SET status = ? WHERE entry_uuid = ?",
                [(xds.DEPRECATED, entry_uuid) for entry_uuid in replaced],
            )
            for object_id, entry in submission.entries.items():
                blob = stored[object_id]
                registered = replace(
                    entry,
                    hash=sha1[object_id],
                    size=blob.size,
                    repository_unique_id=REPOSITORY_UNIQUE_ID,
                    confidentiality=_with_code(entry.confidentiality, secret),
                )
                entry_uuid = xds.new_entry_uuid()
                _insert(
                    connection,
                    registered,
                    entry_uuid,
                    entry_uuid,
                    1,
                    blob.sha256,
                    submission.submission_set.unique_id,
                    checked.vihf.vihf.subject_id,
                )

    def retrieve(self, checked: Checked, request: StubRequest, extra: object) -> StubResponse:
        """ITI-43: the requested documents as MTOM parts streamed from the blob store."""
        wanted = xds.read_retrieve_request(checked.payload)
        patient = checked.vihf.vihf.patient
        if patient is None:
            raise _error("XDSPatientIdDoesNotMatch", "le VIHF ne désigne aucun patient")
        self.caller_patient(checked, patient, reading=True)
        found, errors, attachments = [], [], []
        for item in wanted:
            document = self._retrievable(checked, patient, item)
            if document is None:
                errors.append(
                    xds.RegistryError(
                        "XDSDocumentUniqueIdError",
                        "document inconnu ou non consultable",
                        location=item.document_unique_id,
                    )
                )
                continue
            content_id = mtom.new_content_id()
            found.append((item, document.entry.mime_type, content_id))
            attachments.append(
                mtom.Attachment(
                    content_id,
                    self.context.blobs.path(document.sha256),
                    document.entry.mime_type,
                )
            )
        payload = xds.retrieve_response(found, errors)
        envelope = response_envelope(_RESPONSE_ACTIONS[checked.action], checked.message_id, payload)
        message = mtom.encode(envelope, attachments)
        return StubResponse(200, message.chunks(), message.content_type, length=message.length)

    def _retrievable(
        self, checked: Checked, patient: Patient, item: xds.DocumentRequest
    ) -> StoredDocument | None:
        if item.repository_unique_id != REPOSITORY_UNIQUE_ID:
            return None
        versions = [
            document
            for document in self.documents.by_unique_id(item.document_unique_id)
            if document.entry.patient == patient
            and document.entry.status in (xds.APPROVED, xds.ARCHIVED)
            and self.visible(checked, document)
        ]
        return versions[-1] if versions else None


def _part_digest(part: mtom.Part, algorithm: str) -> str:
    # The decoder hashed the part as it arrived: reading it again would double the ingest.
    known = {"sha256": part.sha256, "sha1": part.sha1}.get(algorithm)
    if known is not None:
        return known
    digest = hashlib.new(algorithm)
    with part.open() as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _check_manifest(
    signature: mtom.Part, documents: dict[str, mtom.Part], settings: VerifySettings
) -> list[xds.RegistryError]:
    data = signature.read_bytes()
    warnings = []
    try:
        references = xades.verify_signature(data, settings).references
    except SignatureError as error:
        warnings.append(_warning(f"signature du lot non vérifiée : {error.message}"))
        # The unverified manifest is still compared, so that the answer says what else is wrong.
        try:
            root = parse_xml(data)
        except MalformedXMLError:
            return [_warning("document de signature illisible")]
        references = tuple(
            reference
            for manifest in root.iter(f"{{{_DS}}}Manifest")
            for reference in xades.read_manifest(manifest)
        )
    named = {reference.uri: reference for reference in references}
    for uri, part in documents.items():
        reference = named.get(uri)
        if reference is None:
            warnings.append(_warning(f"la signature ne référence pas {uri}"))
            continue
        if reference.transforms:
            # signxml skips transforms it does not know: only a digest of the exact bytes counts.
            warnings.append(_warning(f"{uri} : transformations non prises en charge"))
            continue
        algorithm = _DIGESTS.get(reference.digest_method)
        if algorithm is None:
            warnings.append(_warning(f"algorithme d'empreinte inconnu pour {uri}"))
        elif _part_digest(part, algorithm) != reference.digest.hex():
            warnings.append(_warning(f"l'empreinte de {uri} ne correspond pas au document"))
    return warnings


def _warning(context: str) -> xds.RegistryError:
    return xds.RegistryError("XDSRegistryMetadataError", context, "Warning")
