"""The DMP client: every LPS transaction of the volet (TD0.2 to TD3.3d) as one method.

:class:`DmpClient` holds one channel (:mod:`transport.soap.channel`, over a mutual-TLS session)
to one DMP endpoint set and the professional's identity; each call builds its own VIHF (the
identity, the call's patient and purpose of use), signs it, sends the request and returns a
frozen result. The messages themselves are written and
read by :mod:`transport.dmp.hl7v3` (patients, PDQ), :mod:`transport.dmp.authorizations`
(habilitations, patientsSpecific) and :mod:`transport.dmp.xds` (registry, repository).

What the service answers is mapped, never dropped: an HL7v3 ``AE``/``AR`` acknowledgement or a
status other than ``DMPOk`` raises :class:`transport.errors.DmpError`; an XDS ``Failure`` raises
:class:`transport.errors.XdsError` (a retrieval's ``PartialSuccess`` is returned, with its errors,
as :attr:`Retrieved.complete` False); warnings come back with the result; SOAP faults raise
:class:`transport.errors.SoapFault`.

Documents travel as streamed MTOM (:mod:`transport.soap.mtom`): a submitted file is read from disk
in chunks while it is sent, and a retrieved document can be written to a directory as it arrives,
its size and SHA-1 checked against the registry's metadata when the caller gives it.
"""

from __future__ import annotations

import copy
import functools
import logging
import mimetypes
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.x509.oid import NameOID
from lxml import etree

from transport.config import Profile
from transport.credentials import Credential, Purpose
from transport.deprecation import Alias
from transport.dmp import authorizations, hl7v3
from transport.dmp.authorizations import (
    AuthorizationAction,
    AuthorizationList,
    ListAuthorizations,
    ListMode,
    Outcome,
    PatientListAnswer,
    PatientListQuery,
    SetAuthorization,
)
from transport.dmp.hl7v3 import (
    CLOSED_AT_PATIENT_REQUEST,
    CONSENT_TO_OPEN,
    CONSENT_TO_REACTIVATE,
    Acknowledgement,
    Demographics,
    Device,
    Observation,
    PatientRecord,
    Reason,
    Registration,
    RegistrationRequest,
    Traits,
)
from transport.errors import (
    DmpError,
    IntegrityError,
    TransportError,
    ValidationError,
    XdsError,
)
from transport.soap import mtom
from transport.soap.channel import (
    Answer,
    Call,
    CallOptions,
    Channel,
    Progress,
    Wire,
)
from transport.soap.envelope import build_envelope
from transport.soap.trace import Tracer
from transport.tls import TLSSettings
from transport.vihf import Code, DmpAccess, Patient, Vihf, VihfOptions, sign_vihf
from transport.xml import format_ts

if TYPE_CHECKING:
    # The document modules are imported by the methods that use them: a patient transaction
    # (TD0.2) needs none of them, nor signxml (xades).
    from transport.dmp import xades, xds

log = logging.getLogger("transport.dmp")

DMP_REPOSITORY_UNIQUE_ID = "1.2.250.1.213.4.1.1.1.2"
"""The DMP repository's ``RepositoryUniqueId`` (the official TD3.2 example's)."""


_FORMAT_SYSTEM = "1.3.6.1.4.1.19376.1.2.3"
_CODES = {
    # A submission set's default contentTypeCode; pass the one fitting the activity.
    "DEFAULT_CONTENT_TYPE": ("04", "1.2.250.1.213.2.2", "Hospitalisation de jour"),
    # A document's default typeCode (LOINC); pass the one fitting the document.
    "DEFAULT_TYPE": ("11488-4", "2.16.840.1.113883.6.1", "Note de consultation"),
    # A document's default classCode.
    "DEFAULT_CLASS": ("10", "1.2.250.1.213.1.1.4.1", "Compte rendu"),
    # A document's default practiceSettingCode.
    "DEFAULT_PRACTICE": ("AMBULATOIRE", "1.2.250.1.213.1.1.4.9", "Ambulatoire"),
    # The formatCode of a MIME type FORMATS does not hold (a CDA should name its own format).
    "MIME_TYPE_SUFFICIENT": (
        "urn:ihe:iti:xds:2017:mimeTypeSufficient",
        _FORMAT_SYSTEM,
        "Format défini par le type MIME",
    ),
}
_FORMATS = {
    "text/plain": ("urn:ihe:iti:xds-sd:text:2008", _FORMAT_SYSTEM, "Document texte"),
    "application/pdf": ("urn:ihe:iti:xds-sd:pdf:2008", _FORMAT_SYSTEM, "Document PDF"),
}


@functools.cache
def _code(name: str) -> xds.Coded:
    """The :class:`transport.dmp.xds.Coded` named ``name`` in :data:`_CODES`: built on first use,
    once, so that importing this module does not import :mod:`transport.dmp.xds`."""
    from transport.dmp import xds

    return xds.Coded(*_CODES[name])


@functools.cache
def _formats() -> dict[str, xds.Coded]:
    """``FORMATS``, built on first use as :func:`_code` is."""
    from transport.dmp import xds

    return {mime: xds.Coded(*code) for mime, code in _FORMATS.items()}


def _format(mime_type: str) -> xds.Coded:
    """The ``formatCode`` of a document of ``mime_type`` that does not name its own."""
    return _formats().get(mime_type) or _code("MIME_TYPE_SUFFICIENT")


def __getattr__(name: str) -> object:
    """The default codes, as public names (PEP 562): ``DEFAULT_CONTENT_TYPE``, ``DEFAULT_TYPE``,
    ``DEFAULT_CLASS``, ``DEFAULT_PRACTICE`` (the submission set's and a document's default
    codes), ``FORMATS`` (IHE scanned-document ``formatCode`` by MIME type) and
    ``MIME_TYPE_SUFFICIENT`` (the ``formatCode`` of any other type)."""
    if name in _CODES:
        return _code(name)
    if name == "FORMATS":
        return _formats()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_MTOM_SERVICES = frozenset({"repository"})
# A retrieved document's SHA-1 is its XDS hash, checked and returned; a SHA-256 would only cost.
_CHECKED_DIGESTS = frozenset({"sha1"})
_SAFE_READS = frozenset(
    {
        hl7v3.ACTION_QUERY,  # TD0.2, TD1.3a
        authorizations.ACTION_PATIENT_LIST,  # TD0.4
        authorizations.ACTION_LIST_AUTHORIZATIONS,  # TD1.6
    }
)
"""The patient and authorization actions the channel may send again (reads that change
nothing); never a write."""
_XDS_SERVICES = frozenset({"registry", "repository"})


@functools.cache
def _xds_safe_reads() -> frozenset[str]:
    """The XDS actions the channel may send again, read from :mod:`transport.dmp.xds` when an
    XDS service is first called."""
    from transport.dmp import xds

    return frozenset({xds.ACTION_STORED_QUERY, xds.ACTION_RETRIEVE})  # ITI-18, ITI-43


def _idempotent(service: str, action: str) -> bool:
    """Whether ``action`` on ``service`` is a read the channel may send again."""
    if service in _XDS_SERVICES:
        return action in _xds_safe_reads()
    return action in _SAFE_READS


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Existence:
    """TD0.2: whether the patient has a DMP and what the caller may do with it.

    ``active``: False for a closed DMP; ``authorization``: the caller's authorization
    (``VALIDE``, ``INTERDIT``, ``NON_EXISTE``); ``treating_physician``: whether the caller is the
    patient's DMP treating doctor. ``record`` holds the identifiers and name the DMP shows.
    """

    exists: bool
    active: bool = False
    authorization: str | None = None
    treating_physician: bool | None = None
    record: PatientRecord | None = None

    @property
    def authorized(self) -> bool:
        """Whether the caller holds a valid authorization on this DMP."""
        return self.authorization == "VALIDE"

    authorisation = Alias("authorization")
    authorised = Alias("authorized")


@dataclass(frozen=True)
class Document:
    """A document to submit (TD2.1): its metadata and its bytes, or the file that holds them.

    ``hash`` and ``size`` of ``entry`` are computed from the content when the document is sent.
    """

    entry: xds.DocumentEntry
    content: bytes | Path

    def __post_init__(self) -> None:
        if not isinstance(self.content, bytes | Path):
            raise ValidationError("content", "a document's content is bytes or a pathlib.Path")

    @classmethod
    def from_cda(
        cls,
        content: bytes | Path,
        patient: Patient,
        *,
        class_code: xds.Coded | None = None,
        format_code: xds.Coded | None = None,
        practice_setting: xds.Coded | None = None,
        healthcare_facility_type: xds.Coded | None = None,
        visibility: xds.Visibility | None = None,
        **metadata: object,
    ) -> Document:
        """A CDA R2 document with the metadata its header gives (:func:`transport.dmp.cda.
        document_entry`: uniqueId, type and class, format from the templateIds, authors, times,
        confidentiality…); the codes given here win over the derived ones, ``metadata`` sets any
        other :class:`transport.dmp.xds.DocumentEntry` field, ``visibility`` adds the DMP
        restrictions (masked from professionals, hidden from the patient…). ValidationError
        when its ``recordTarget`` is not ``patient`` or a code cannot be derived."""
        from transport.dmp import cda

        entry = cda.document_entry(
            cda.read_header(content),
            patient,
            class_code=class_code,
            format_code=format_code,
            practice_setting=practice_setting,
            healthcare_facility_type=healthcare_facility_type,
        )
        entry = replace(entry, **metadata)  # type: ignore[arg-type]
        return cls(_restricted(entry, visibility), content)

    @classmethod
    def from_pdf(
        cls,
        path: Path,
        patient: Patient,
        *,
        output: Path | None = None,
        class_code: xds.Coded | None = None,
        visibility: xds.Visibility | None = None,
        **report: object,
    ) -> Document:
        """The PDF file ``path`` wrapped as a CI-SIS / IHE XDS-SD non-structured CDA R2 document
        (:func:`transport.dmp.cda.write_non_structured`, streamed to ``output`` or a temporary
        file), with its metadata as :meth:`from_cda` reads them back. ``report``: the fields of
        :class:`transport.dmp.cda.Report` (``author``, ``custodian``, ``type_code``, ``title``,
        ``practice_setting``, ``facility_type``…); ``visibility`` as in :meth:`from_cda`."""
        return cls._wrapped(
            path, "application/pdf", patient, output, class_code, visibility, report
        )

    @classmethod
    def from_text(
        cls,
        path: Path,
        patient: Patient,
        *,
        output: Path | None = None,
        class_code: xds.Coded | None = None,
        visibility: xds.Visibility | None = None,
        **report: object,
    ) -> Document:
        """The plain-text file ``path`` wrapped as :meth:`from_pdf` wraps a PDF."""
        return cls._wrapped(path, "text/plain", patient, output, class_code, visibility, report)

    @classmethod
    def _wrapped(
        cls,
        path: Path,
        media_type: str,
        patient: Patient,
        output: Path | None,
        class_code: xds.Coded | None,
        visibility: xds.Visibility | None,
        report: dict[str, object],
    ) -> Document:
        """``path`` wrapped as a level 1 CDA of ``media_type``, read back by :meth:`from_cda`."""
        from transport.dmp import cda

        written = cda.write_non_structured(
            path,
            media_type,
            cda.Report(patient, **report),  # type: ignore[arg-type]
            output,  # type: ignore[arg-type]
        )
        return cls.from_cda(written, patient, class_code=class_code, visibility=visibility)


@dataclass(frozen=True)
class Submitted:
    """TD2.1 accepted: the submission set, the documents' entries as sent (hash and size filled
    in), the signature document's entry when the set was signed, the registry's ``warnings``."""

    submission_set: xds.SubmissionSet
    entries: tuple[xds.DocumentEntry, ...]
    signature: xds.DocumentEntry | None = None
    warnings: tuple[xds.RegistryError, ...] = ()


@dataclass(frozen=True)
class DocumentList:
    """TD3.1: the entries found (every page), ``total`` as the registry counts them, warnings.

    ``entries`` include the submission sets' signature documents; :attr:`documents` leaves them
    out.
    """

    entries: tuple[xds.DocumentEntry, ...]
    total: int | None = None
    warnings: tuple[xds.RegistryError, ...] = ()

    @property
    def documents(self) -> tuple[xds.DocumentEntry, ...]:
        """The entries that are not submission-set signature documents (IHE DSG)."""
        from transport.dmp import xades

        signature = xades.SIGNATURE_CLASS.code
        return tuple(entry for entry in self.entries if entry.class_code.code != signature)

    def by_unique_id(self, unique_id: str) -> xds.DocumentEntry:
        """The entry of the document ``unique_id``: its current (``Approved``) version when the
        list holds several (a masked document keeps its deprecated first version). KeyError
        when absent."""
        from transport.dmp import xds

        versions = [entry for entry in self.entries if entry.unique_id == unique_id]
        if not versions:
            raise KeyError(unique_id)
        return next((entry for entry in versions if entry.status == xds.APPROVED), versions[0])


@dataclass(frozen=True)
class DocumentContent:
    """One retrieved document (TD3.2): ids, MIME type, size in bytes, SHA-1 (hex, the XDS hash),
    and its bytes: in the file ``path`` (retrieval into a directory) or in ``data``."""

    document_unique_id: str
    repository_unique_id: str
    mime_type: str
    size: int
    sha1: str
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)

    def read_bytes(self) -> bytes:
        """The whole document."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()


@dataclass(frozen=True)
class Retrieved:
    """TD3.2: the documents returned, and the repository's status and errors.

    ``complete`` is False for a ``PartialSuccess``: some documents are missing and ``errors``
    says which and why.
    """

    status: str
    documents: tuple[DocumentContent, ...]
    errors: tuple[xds.RegistryError, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every document asked for came back."""
        from transport.dmp import xds

        return self.status == xds.SUCCESS

    def document(self, unique_id: str) -> DocumentContent:
        """The returned document ``unique_id`` (KeyError when it did not come back)."""
        for document in self.documents:
            if document.document_unique_id == unique_id:
                return document
        raise KeyError(unique_id)


# --- the client ----------------------------------------------------------------------------------


def software_device(vihf: Vihf) -> Device:
    """The LPS as an HL7v3 device: an OID derived from its name and DMP homologation id (so
    that it is the same on every installation of one software version line) and its name."""
    seed = f"cisis-transport:{vihf.lps.name}:{vihf.lps.homologation_id}"
    return Device(f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, seed).int}", vihf.lps.name)


def _names(vihf: Vihf, credential: Credential) -> tuple[str, str]:
    """The professional's family and given names: from the VIHF's ``subject-id`` "NOM Prénom"
    (indirect modes), else from the card certificate's SN and GN (direct mode)."""
    if vihf.user_name:
        family, _, given = vihf.user_name.partition(" ")
        return family, given
    family = _attribute(credential, NameOID.SURNAME) or credential.common_name or ""
    return family, _attribute(credential, NameOID.GIVEN_NAME) or ""


def _attribute(credential: Credential, oid: x509.ObjectIdentifier) -> str | None:
    """The first value of one attribute of the credential's subject, or None."""
    values = credential.certificate.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def _restricted(entry: xds.DocumentEntry, visibility: xds.Visibility | None) -> xds.DocumentEntry:
    """``entry`` with the DMP restrictions of ``visibility`` (unchanged when None)."""
    if visibility is None:
        return entry
    return replace(entry, confidentiality=visibility.applied(entry.confidentiality))


class DmpClient:
    """Calls the DMP services under one base URL (``…/si-dmp-server/v2/services``) as one
    professional.

    ``identity`` is the VIHF without a patient; ``signature`` signs each VIHF (the structure's
    ORG SIGN certificate in the indirect modes, the card's signature key in direct mode);
    ``tls_credential`` authenticates the TLS session. ``structure_name`` defaults to the
    signature certificate's organisation. One channel (:class:`transport.soap.channel.Channel`,
    over a pooled mutual-TLS session unless ``wire`` is given) serves every call, with
    ``options`` (deadline, retries of the reads); the client may be shared between threads.
    ``signature_layout`` is how submission sets are signed (:mod:`transport.dmp.xades`): as the
    DMP signs by default, XAdES 1.3.2 on request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        identity: Vihf,
        signature: Credential,
        tls_credential: Credential | None,
        tls_settings: TLSSettings,
        vihf_options: VihfOptions | None = None,
        structure_name: str | None = None,
        repository_unique_id: str = DMP_REPOSITORY_UNIQUE_ID,
        tracer: Tracer | None = None,
        options: CallOptions | None = None,
        wire: Wire | None = None,
        signature_layout: xades.XadesLayout | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._signature_layout = signature_layout
        self.identity = identity.with_patient(None)
        self.signature = signature
        self.vihf_options = vihf_options or VihfOptions()
        self.repository_unique_id = repository_unique_id
        self.device = software_device(identity)
        self.structure_name = (
            structure_name
            or _attribute(signature, NameOID.ORGANIZATION_NAME)
            or identity.structure_id
        )
        family, given = _names(identity, signature)
        self.author = hl7v3.Author.from_vihf(
            identity, self.structure_name, family=family, given=given
        )
        self.channel = Channel.connect(
            tls_credential, tls_settings, tracer=tracer, options=options, wire=wire
        )

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        *,
        endpoint: str | None = None,
        tracer: Tracer | None = None,
        signature_layout: xades.XadesLayout | None = None,
    ) -> DmpClient:
        """A client for ``profile``: its ``dmp`` endpoint (or ``endpoint``), identity, TLS and
        signature credentials, VIHF options, deadline and retries; ``signature_layout`` as in
        :class:`DmpClient`."""
        return cls(
            endpoint or profile.endpoint("dmp"),
            identity=profile.identity,
            signature=profile.signature_credential.load(Purpose.SIGNATURE),
            tls_credential=profile.tls_credential.load(Purpose.TLS_CLIENT),
            tls_settings=profile.tls_settings(),
            vihf_options=profile.vihf_options,
            tracer=tracer,
            options=profile.call_options(),
            signature_layout=signature_layout,
        )

    @property
    def signature_layout(self) -> xades.XadesLayout:
        """How submission sets are signed: the layout given, else
        :data:`transport.dmp.xades.DMP_LAYOUT`."""
        from transport.dmp import xades

        return self._signature_layout or xades.DMP_LAYOUT

    @functools.cached_property
    def document_author(self) -> xds.Author:
        """The caller as the XDS author of the documents and submission sets it makes."""
        from transport.dmp import xds

        role = self.author.role
        return xds.Author.professional(
            self.identity.subject_id,
            self.author.family,
            self.author.given,
            specialty=f"{role.code}^{role.display_name}^{role.code_system}" if role else None,
            institution=self.structure_name,
            structure_id=self.identity.structure_id,
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self.channel.close()

    def __enter__(self) -> DmpClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def with_access(self, access: DmpAccess) -> DmpClient:
        """This client for calls made under ``access`` (break-glass, emergency centre, secret
        connection): every call's VIHF carries its purpose of use and confidentiality code.

        The copy shares this client's channel (closing either closes both), so choosing a mode
        per call costs nothing.
        """
        chosen = copy.copy(self)
        chosen.identity = access.applied(self.identity)
        return chosen

    # --- patients (HL7v3) ------------------------------------------------------------------------

    def exists(self, patient: Patient, *, purpose_of_use: Code | None = None) -> Existence:
        """TD0.2: does ``patient`` have a DMP, and is the caller authorized on it."""
        answer = self._demographics(Reason.TEST_EXST, patient, purpose_of_use)
        if not answer.found:
            return Existence(False)
        assert answer.record is not None  # found says so
        return Existence(
            True,
            answer.record.active,
            answer.authorization,
            answer.treating_physician,
            answer.record,
        )

    def consult(self, patient: Patient, *, purpose_of_use: Code | None = None) -> PatientRecord:
        """TD1.3a: the DMP's administrative data (identity, address, consents, oppositions)."""
        answer = self._demographics(Reason.CNSLT_DATA, patient, purpose_of_use)
        if answer.record is None:
            raise DmpError("TD1.3a", hl7v3.DmpCode.NOT_FOUND, "the answer holds no record")
        return answer.record

    def create(
        self,
        patient: Patient,
        demographics: Demographics,
        *,
        oppositions: Sequence[Observation] = (),
    ) -> PatientRecord:
        """TD1.1: open a DMP with the patient's consent (``CONSENTEMENT_OUVERTURE_DMP``) and the
        oppositions they expressed (break-glass, emergency access)."""
        observations = (Observation(CONSENT_TO_OPEN, True), *oppositions)
        return self._register(Reason.CREA_RD, patient, demographics, observations)

    def reactivate(self, patient: Patient, demographics: Demographics) -> PatientRecord:
        """TD1.2: reopen a closed DMP with the patient's consent (name only is sent)."""
        observations = (Observation(CONSENT_TO_REACTIVATE, True),)
        return self._register(Reason.REAC, patient, demographics.name_only, observations)

    def update(
        self,
        patient: Patient,
        demographics: Demographics,
        *,
        observations: Sequence[Observation] = (),
    ) -> PatientRecord:
        """TD1.3b: replace the administrative data, and change oppositions when given."""
        return self._register(Reason.MODIF_DATA, patient, demographics, tuple(observations))

    def close_dmp(
        self, patient: Patient, demographics: Demographics, *, reason: Code | None = None
    ) -> PatientRecord:
        """TD1.4: close the DMP (at the patient's request unless ``reason`` says otherwise)."""
        return self._register(
            Reason.FERM,
            patient,
            demographics.name_only,
            (),
            close_reason=reason or CLOSED_AT_PATIENT_REQUEST,
        )

    def find_patients(self, traits: Traits) -> tuple[PatientRecord, ...]:
        """TD0.5: the patients matching ``traits`` (IHE PDQv3), for a patient without INS."""
        query = hl7v3.CandidatesQuery.new(traits, self.device)
        payload = self._call("patientsPDQ", hl7v3.ACTION_FIND_CANDIDATES, query.build(), None)
        answer = hl7v3.CandidatesAnswer.read(payload.payload)
        _raise_for_acknowledgement("TD0.5", answer.acknowledgement)
        return answer.candidates

    # --- authorizations --------------------------------------------------------------------------

    def set_authorization(
        self,
        patient: Patient,
        action: AuthorizationAction = AuthorizationAction.AJOUT,
        *,
        treating_physician: bool = False,
    ) -> Outcome:
        """TD0.3: add (or remove) the caller's authorization on the patient's DMP, or their
        treating-doctor role with ``treating_physician``. The outcome's ``context`` says when
        nothing changed."""
        request = SetAuthorization(action, treating_physician)
        answer = self._call(
            "habilitations", authorizations.ACTION_SET_AUTHORIZATION, request.build(), patient
        )
        outcome = authorizations.SetAuthorizationAnswer.read(answer.payload).outcome
        return _checked_outcome("TD0.3", outcome)

    def list_authorizations(
        self, patient: Patient, mode: ListMode | None = ListMode.TOUTE
    ) -> AuthorizationList:
        """TD1.6: the professionals authorized on (and blocked from) the patient's DMP."""
        answer = self._call(
            "habilitations",
            authorizations.ACTION_LIST_AUTHORIZATIONS,
            ListAuthorizations(mode).build(),
            patient,
        )
        found = AuthorizationList.read(answer.payload)
        _checked_outcome("TD1.6", found.outcome)
        return found

    def list_patients(self, query: PatientListQuery | None = None) -> PatientListAnswer:
        """TD0.4: the DMPs the caller is authorized on (filtered by date when asked)."""
        answer = self._call(
            "patientsSpecific",
            authorizations.ACTION_PATIENT_LIST,
            (query or PatientListQuery()).build(),
            None,
        )
        found = PatientListAnswer.read(answer.payload)
        _checked_outcome("TD0.4", found.outcome)
        return found

    # --- documents (XDS.b) -----------------------------------------------------------------------

    def submission_set(
        self,
        patient: Patient,
        *,
        title: str | None = None,
        content_type: xds.Coded | None = None,
        comments: str | None = None,
    ) -> xds.SubmissionSet:
        """A new submission set for ``patient``, authored by the caller, sent by this LPS;
        ``content_type`` defaults to :data:`DEFAULT_CONTENT_TYPE`."""
        from transport.dmp import xds

        return xds.SubmissionSet(
            patient=patient,
            unique_id=xds.new_unique_id(),
            source_id=self.device.root,
            submission_time=format_ts(datetime.now(UTC)),
            content_type=content_type or _code("DEFAULT_CONTENT_TYPE"),
            authors=(self.document_author,),
            title=title,
            comments=comments,
        )

    def document(
        self,
        patient: Patient,
        content: bytes | Path,
        *,
        title: str,
        mime_type: str,
        type_code: xds.Coded | None = None,
        class_code: xds.Coded | None = None,
        format_code: xds.Coded | None = None,
        practice_setting: xds.Coded | None = None,
        visibility: xds.Visibility | None = None,
        **metadata: object,
    ) -> Document:
        """A document to :meth:`submit`, its metadata filled in: a new uniqueId, the caller as
        author, the creation and service times now, the structure's sector as facility type,
        the format from the MIME type (see :data:`FORMATS`), :data:`DEFAULT_TYPE`,
        :data:`DEFAULT_CLASS` and :data:`DEFAULT_PRACTICE` unless given. ``metadata``: any other
        :class:`transport.dmp.xds.DocumentEntry` field (``comments``, ``confidentiality``…);
        ``visibility``: the DMP restrictions (:class:`transport.dmp.xds.Visibility`).
        """
        from transport.dmp import xds

        now = format_ts(datetime.now(UTC))
        entry = xds.DocumentEntry(
            patient=patient,
            unique_id=xds.new_unique_id(),
            title=title,
            class_code=class_code or _code("DEFAULT_CLASS"),
            type_code=type_code or _code("DEFAULT_TYPE"),
            format_code=format_code or _format(mime_type),
            healthcare_facility_type=self._facility_type(),
            practice_setting=practice_setting or _code("DEFAULT_PRACTICE"),
            creation_time=now,
            authors=(self.document_author,),
            mime_type=mime_type,
            service_start_time=now,
            service_stop_time=now,
        )
        entry = replace(entry, **metadata)  # type: ignore[arg-type]
        return Document(_restricted(entry, visibility), content)

    def report_fields(self, type_code: xds.Coded, title: str) -> dict[str, object]:
        """The header fields of a report this professional writes (the ``report`` of
        :meth:`Document.from_pdf`): the caller as author (IdNat, name, specialty from the VIHF
        roles), the structure as custodian, ``type_code`` and ``title``, the default practice
        setting and the structure's sector as facility type."""
        from transport.dmp import cda, xds

        author = self.author
        structure = cda.Organization(
            cda.InstanceId(cda.IDNAT_STRUCTURE_OID, author.structure_id), self.structure_name
        )
        role = author.role
        person = cda.Person(
            cda.InstanceId(cda.IDNAT_PS_OID, author.professional_id), author.family, author.given
        )
        return {
            "author": cda.Author(
                person,
                specialty=xds.Coded(role.code, role.code_system, role.display_name or "")
                if role
                else None,
                organization=structure,
            ),
            "custodian": structure,
            "type_code": type_code,
            "title": title,
            "practice_setting": _code("DEFAULT_PRACTICE"),
            "facility_type": self._facility_type(),
        }

    def _facility_type(self) -> xds.Coded:
        from transport.dmp import xds

        sector, _, system = self.identity.sector.partition("^")
        return xds.Coded(sector, system)

    def submit(
        self,
        documents: Sequence[Document],
        *,
        submission_set: xds.SubmissionSet | None = None,
        sign: bool = True,
        progress: Progress | None = None,
    ) -> Submitted:
        """TD2.1: send ``documents`` (one patient) with their metadata in one submission set and,
        with ``sign``, the set's XAdES signature document made with the signature credential
        (:mod:`transport.dmp.xades`), linked to the set by a ``signs`` association.

        Hash and size are computed from the content; files are read in chunks (to hash, to sign,
        to send) and never held whole in memory. XdsError when the registry refuses.
        """
        return self._provide(documents, {}, submission_set, sign, progress)

    def replace(
        self,
        entry: xds.DocumentEntry,
        document: Document,
        *,
        submission_set: xds.SubmissionSet | None = None,
        sign: bool = True,
        progress: Progress | None = None,
    ) -> Submitted:
        """TD2.1 with an ``RPLC`` association (IHE ITI TF-3 §4.2.2.2): ``document`` replaces
        ``entry``, as read back by :meth:`find_documents` (its entryUUID is the one replaced).
        The registry deprecates ``entry`` and registers ``document`` as a new, approved entry;
        it refuses (XdsError) an entry that is no longer approved or another patient's.
        ``document`` must be the same patient's (ValidationError before anything is sent)."""
        if not entry.entry_uuid:
            raise ValidationError("entry", "the replaced entry is one read from the registry")
        if entry.patient != document.entry.patient:
            raise ValidationError("patient", "a replacement is the same patient's document")
        if entry.unique_id == document.entry.unique_id:
            raise ValidationError("uniqueId", "a replacement is a new document, with its own id")
        replaces = {document.entry.unique_id: entry.entry_uuid}
        return self._provide([document], replaces, submission_set, sign, progress)

    def _provide(
        self,
        documents: Sequence[Document],
        replaces: Mapping[str, str],
        submission_set: xds.SubmissionSet | None,
        sign: bool,
        progress: Progress | None,
    ) -> Submitted:
        """ITI-41 of ``documents``; ``replaces`` maps a document's uniqueId to the entryUUID it
        replaces."""
        from transport.dmp import xades, xds

        if not documents:
            raise ValidationError("documents", "a submission holds at least one document")
        patient = documents[0].entry.patient
        if any(document.entry.patient != patient for document in documents):
            raise ValidationError("patient", "every document of a submission is the same patient's")
        submission = submission_set or self.submission_set(patient)
        outgoing, attachments, entries = [], [], []
        digests = {}
        for document in documents:
            # One read gives the metadata's SHA-1 and size and the signature's SHA-256; the
            # upload is the second and last.
            found = digests[document.entry.unique_id] = xades.content_digests(document.content)
            entry = replace(document.entry, hash=found.sha1, size=found.size)
            content_id = mtom.new_content_id()
            outgoing.append(
                xds.OutgoingDocument(entry, content_id, replaces=replaces.get(entry.unique_id))
            )
            attachments.append(mtom.Attachment(content_id, document.content, entry.mime_type))
            entries.append(entry)
        signature_entry = None
        if sign:
            signature = xades.sign_submission_set(
                digests,
                self.signature.signer,
                submission_set_unique_id=submission.unique_id,
                layout=self.signature_layout,
            )
            signature_entry = xades.signature_entry(submission, entries[0], signature)
            content_id = mtom.new_content_id()
            outgoing.append(xds.OutgoingDocument(signature_entry, content_id, signs=True))
            attachments.append(mtom.Attachment(content_id, signature, signature_entry.mime_type))
        payload = xds.provide_and_register_request(submission, outgoing)
        answer = self._call(
            "repository",
            xds.ACTION_PROVIDE_AND_REGISTER,
            payload,
            patient,
            attachments=tuple(attachments),
            progress=progress,
        )
        result = xds.read_registry_response(answer.payload)
        _raise_unless_success("TD2.1", result)
        return Submitted(submission, tuple(entries), signature_entry, result.errors)

    def find_documents(
        self,
        patient: Patient,
        statuses: Iterable[str] | None = None,
        *,
        page_size: int | None = None,
    ) -> DocumentList:
        """TD3.1 FindDocuments: the patient's documents in ``statuses`` (``Approved`` unless
        given); with ``page_size``,
        fetched a page at a time (ebRS ``startIndex``/``maxResults``) until every one is in."""
        from transport.dmp import xds

        statuses = tuple(statuses) if statuses is not None else (xds.APPROVED,)
        if page_size is not None and page_size < 1:
            raise ValidationError("page_size", "a page holds at least one entry")
        entries: list[xds.DocumentEntry] = []
        warnings: list[xds.RegistryError] = []
        while True:
            query = xds.find_documents(
                patient,
                statuses,
                start_index=len(entries),
                max_results=page_size if page_size is not None else -1,
            )
            page = self._query(patient, query)
            entries.extend(page.entries)
            warnings.extend(page.errors)
            done = page_size is None or not page.entries or len(page.entries) < page_size
            if done or (page.total is not None and len(entries) >= page.total):
                return DocumentList(tuple(entries), page.total, tuple(warnings))

    def get_documents(
        self,
        patient: Patient,
        *,
        entry_uuids: Iterable[str] = (),
        unique_ids: Iterable[str] = (),
    ) -> DocumentList:
        """TD3.1 GetDocuments: the entries with these entryUUIDs or these uniqueIds."""
        from transport.dmp import xds

        query = xds.get_documents(entry_uuids=entry_uuids, unique_ids=unique_ids)
        page = self._query(patient, query)
        return DocumentList(page.entries, page.total, page.errors)

    def retrieve(
        self,
        patient: Patient,
        documents: Sequence[xds.DocumentEntry | str],
        *,
        directory: Path | None = None,
        progress: Progress | None = None,
    ) -> Retrieved:
        """TD3.2: the documents named by their entries (from :meth:`find_documents`: the
        repository comes from the entry, and size and hash are checked) or by their uniqueIds.

        With ``directory``, each document is written to a new file there as it arrives (any
        size); without it, documents are returned as bytes (up to
        :data:`transport.soap.mtom.MAX_IN_MEMORY` each). IntegrityError, with the document's file
        removed, when a document's size or SHA-1 differs from its entry's; XdsError when none
        could be returned.
        """
        from transport.dmp import xds

        if not documents:
            raise ValidationError("documents", "name at least one document to retrieve")
        expected = {
            item.unique_id: item for item in documents if isinstance(item, xds.DocumentEntry)
        }
        requests_ = [
            xds.DocumentRequest(
                item.repository_unique_id or self.repository_unique_id, item.unique_id
            )
            if isinstance(item, xds.DocumentEntry)
            else xds.DocumentRequest(self.repository_unique_id, item)
            for item in documents
        ]
        answer = self._call(
            "repository",
            xds.ACTION_RETRIEVE,
            xds.retrieve_request(requests_),
            patient,
            directory=directory,
            progress=progress,
            digests=_CHECKED_DIGESTS,
        )
        with mtom.removing_parts_on_error(answer.parts):
            result = xds.read_retrieve_response(answer.payload)
            if result.result.status == xds.FAILURE or (
                not result.documents and not result.result.ok
            ):
                raise XdsError("TD3.2", result.result.status, result.result.errors)
            contents = tuple(
                _content(document, answer.parts.part_for(document.include), expected)
                for document in result.documents
            )
            contents = tuple(_named_after_document(content) for content in contents)
        return Retrieved(result.result.status, contents, result.result.errors)

    def mask(self, entry: xds.DocumentEntry) -> tuple[xds.RegistryError, ...]:
        """TD3.3a: hide the document from other professionals (``MASQUE_PS``); ``entry`` comes
        from :meth:`find_documents`. ValidationError when it is masked already."""
        if entry.masked:
            raise ValidationError("entry", "the document is already masked")
        visibility = replace(entry.visibility, hidden_from_professionals=True)
        return self.set_visibility(entry, visibility, transaction="TD3.3a")

    def unmask(self, entry: xds.DocumentEntry) -> tuple[xds.RegistryError, ...]:
        """ITI-57: show a masked document to other professionals again (``MASQUE_PS`` removed).
        ValidationError when it is not masked."""
        if not entry.masked:
            raise ValidationError("entry", "the document is not masked")
        visibility = replace(entry.visibility, hidden_from_professionals=False)
        return self.set_visibility(entry, visibility)

    def show_to_patient(self, entry: xds.DocumentEntry) -> tuple[xds.RegistryError, ...]:
        """ITI-57: make a document hidden from the patient visible to them (``INVISIBLE_PATIENT``
        removed), once they have been told. ValidationError when they see it already."""
        if not entry.visibility.hidden_from_patient:
            raise ValidationError("entry", "the patient sees the document already")
        visibility = replace(entry.visibility, hidden_from_patient=False)
        return self.set_visibility(entry, visibility)

    def set_visibility(
        self,
        entry: xds.DocumentEntry,
        visibility: xds.Visibility,
        *,
        transaction: str = "ITI-57",
    ) -> tuple[xds.RegistryError, ...]:
        """ITI-57 (IHE ITI TF-2b §3.57): a new metadata version of ``entry`` whose DMP
        restriction codes are ``visibility``'s, its other metadata unchanged; the registry
        deprecates the previous version. ``entry`` comes from :meth:`find_documents` (it has a
        version); XdsError when the registry refuses (the DMP never hides from the patient a
        document they could see)."""
        from transport.dmp import xds

        if not entry.version:
            raise ValidationError(
                "entry", "change the visibility of an entry read from the registry (a version)"
            )
        changed = replace(
            _restricted(entry, visibility), logical_id=entry.logical_id or entry.entry_uuid
        )
        payload = xds.update_metadata_request(
            self.submission_set(entry.patient), changed, entry.version
        )
        return self._update(transaction, entry.patient, payload)

    def delete(self, entry: xds.DocumentEntry) -> tuple[xds.RegistryError, ...]:
        """TD3.3c: delete the document (its status becomes ``Deleted``)."""
        from transport.dmp import xds

        return self._change_status("TD3.3c", entry, xds.DELETED)

    def archive(self, entry: xds.DocumentEntry) -> tuple[xds.RegistryError, ...]:
        """TD3.3d: archive the document (its status becomes ``Archived``)."""
        from transport.dmp import xds

        return self._change_status("TD3.3d", entry, xds.ARCHIVED)

    # --- internals -------------------------------------------------------------------------------

    def _demographics(
        self, reason: Reason, patient: Patient, purpose_of_use: Code | None
    ) -> hl7v3.DemographicsAnswer:
        query = hl7v3.DemographicsQuery.new(reason, patient, self.device)
        answer = self._call(
            "patients", hl7v3.ACTION_QUERY, query.build(), patient, purpose_of_use=purpose_of_use
        )
        found = hl7v3.DemographicsAnswer.read(answer.payload)
        _raise_for_acknowledgement(_TRANSACTIONS[reason], found.acknowledgement)
        return found

    def _register(
        self,
        reason: Reason,
        patient: Patient,
        demographics: Demographics,
        observations: tuple[Observation, ...],
        *,
        close_reason: Code | None = None,
    ) -> PatientRecord:
        registration = Registration(
            reason, patient, self.author, demographics, observations, close_reason
        )
        request = RegistrationRequest.new(registration, self.device)
        answer = self._call("patients", request.action, request.build(), patient)
        found = hl7v3.RegistrationAnswer.read(answer.payload)
        _raise_for_acknowledgement(_TRANSACTIONS[reason], found.acknowledgement)
        if found.record is None:
            raise TransportError(f"{_TRANSACTIONS[reason]}: the accepted answer holds no record")
        return found.record

    def _query(self, patient: Patient, query: xds.StoredQuery) -> xds.QueryResult:
        from transport.dmp import xds

        answer = self._call("registry", xds.ACTION_STORED_QUERY, xds.query_request(query), patient)
        result = xds.read_query_response(answer.payload)
        if result.status != xds.SUCCESS:
            raise XdsError("TD3.1", result.status, result.errors)
        return result

    def _change_status(
        self, transaction: str, entry: xds.DocumentEntry, new: str
    ) -> tuple[xds.RegistryError, ...]:
        from transport.dmp import xds

        if not entry.entry_uuid or not entry.status:
            raise ValidationError(
                "entry", "use an entry read from the registry (entryUUID, status)"
            )
        payload = xds.update_status_request(
            self.submission_set(entry.patient), entry.entry_uuid, entry.status, new
        )
        return self._update(transaction, entry.patient, payload)

    def _update(
        self, transaction: str, patient: Patient, payload: etree._Element
    ) -> tuple[xds.RegistryError, ...]:
        from transport.dmp import xds

        answer = self._call("registry", xds.ACTION_UPDATE, payload, patient)
        result = xds.read_registry_response(answer.payload)
        _raise_unless_success(transaction, result)
        return result.errors

    def _call(
        self,
        service: str,
        action: str,
        payload: etree._Element,
        patient: Patient | None,
        *,
        purpose_of_use: Code | None = None,
        attachments: tuple[mtom.Attachment, ...] = (),
        directory: Path | None = None,
        progress: Progress | None = None,
        digests: frozenset[str] = mtom.DIGESTS,
    ) -> Answer:
        """Sign a VIHF for ``patient``, send ``payload`` to ``service`` through the channel and
        return the answer's payload; SoapFault for a fault, TransportError for anything that is
        not an answer."""
        url = f"{self.base_url}/{service}"
        vihf = self.identity.with_patient(patient)
        if purpose_of_use is not None:
            vihf = replace(vihf, purpose_of_use=purpose_of_use)
        assertion = sign_vihf(vihf, self.signature.signer, options=self.vihf_options)
        call = Call(
            url,
            build_envelope(action, url, payload, assertions=[assertion]),
            attachments=attachments,
            mtom=service in _MTOM_SERVICES,
            idempotent=_idempotent(service, action),
            directory=directory,
            progress=progress,
            digests=digests,
        )
        answer = self.channel.call(call)
        log.debug("%s answered %s", service, action.rpartition(":")[2])
        return answer


_TRANSACTIONS = {
    Reason.TEST_EXST: "TD0.2",
    Reason.CNSLT_DATA: "TD1.3a",
    Reason.CREA_RD: "TD1.1",
    Reason.REAC: "TD1.2",
    Reason.MODIF_DATA: "TD1.3b",
    Reason.FERM: "TD1.4",
}


def _content(
    document: xds.RetrievedDocument,
    part: mtom.Part,
    expected: dict[str, xds.DocumentEntry],
) -> DocumentContent:
    sha1 = part.sha1
    assert sha1 is not None, "retrieve decodes with the SHA-1 (_CHECKED_DIGESTS)"
    entry = expected.get(document.document_unique_id)
    if entry is not None:
        if entry.size is not None and entry.size != part.size:
            raise IntegrityError(
                document.document_unique_id, "size", str(entry.size), str(part.size)
            )
        if entry.hash is not None and entry.hash.lower() != sha1:
            raise IntegrityError(document.document_unique_id, "SHA-1", entry.hash, sha1)
    return DocumentContent(
        document.document_unique_id,
        document.repository_unique_id,
        document.mime_type,
        part.size,
        sha1,
        part.path,
        part.data,
    )


def _named_after_document(content: DocumentContent) -> DocumentContent:
    """A document retrieved into a directory, its file renamed after it: the uniqueId (other
    characters than letters, digits, ``.``, ``_`` and ``-`` made ``_``) and the extension of its
    MIME type (``.bin`` when unknown), ``-1``, ``-2``… when the name is taken: never replacing
    a file."""
    if content.path is None:
        return content
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", content.document_unique_id).strip("._") or "document"
    media_type = content.mime_type.partition(";")[0].strip().lower()
    extension = mimetypes.guess_extension(media_type) or ".bin"
    attempt = 0
    while True:
        target = content.path.with_name(f"{stem}{f'-{attempt}' if attempt else ''}{extension}")
        try:
            _move_without_replacing(content.path, target)
        except FileExistsError:
            attempt += 1
            continue
        return replace(content, path=target)


def _move_without_replacing(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, FileExistsError when ``target`` exists. A hard link does
    it atomically without replacing anything: a rename over a reserved empty file would make ext4
    write the whole document out there and then (its ``auto_da_alloc`` heuristic), some 60 ms for
    200 MB. Where there are no hard links, the name is reserved, then replaced by the rename."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links (FAT, some network shares)
        with target.open("xb"):  # reserved: the rename below replaces our own empty file
            pass
        os.replace(source, target)
        return
    source.unlink()


def _raise_for_acknowledgement(transaction: str, acknowledgement: Acknowledgement) -> None:
    if acknowledgement.ok:
        return
    details = tuple((detail.code, detail.text) for detail in acknowledgement.details)
    code, text = details[0] if details else (acknowledgement.type_code.value, "")
    raise DmpError(transaction, code, text, details=details, hint=_HINTS.get(code))


def _checked_outcome(transaction: str, outcome: Outcome) -> Outcome:
    if not outcome.ok:
        raise DmpError(
            transaction, outcome.status, outcome.context or "", hint=_HINTS.get(outcome.status)
        )
    return outcome


def _raise_unless_success(transaction: str, result: xds.RegistryResult) -> None:
    if not result.ok:
        raise XdsError(transaction, result.status, result.errors)


_HINTS = {
    hl7v3.DmpCode.NOT_FOUND: "the patient has no DMP: create it (TD1.1) with their consent",
    hl7v3.DmpCode.CLOSED: "the DMP is closed: reactivate it (TD1.2) with the patient's consent",
    hl7v3.DmpCode.ACCESS_DENIED: "get the patient's authorization (TD0.3), or check they did "
    "not block you",
    hl7v3.DmpCode.FOUND: "the patient already has a DMP: test its existence (TD0.2)",
    hl7v3.DmpCode.PATIENT_MISMATCH: "the message and the VIHF must name the same patient",
}
