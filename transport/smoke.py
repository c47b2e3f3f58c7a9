"""The smoke scenario: every supported transaction, run in order, each timed and reported on one
line.

Without a profile it needs nothing: a fresh example PKI in a temporary directory, every stub on a
free loopback port, then INSi searches (CR 00, 01 and 02) and the whole DMP scenario (TD0.2 …
TD1.4, documents included), in the indirect (ORG certificates, INSi certificate mode) and the
direct (CPS-like card, INSi card mode) authentication, ending with the refusal of a VIHF signed
with an authentication-only key. With a profile, the same scenario runs against its endpoints in
its own mode; steps that write (create, update, authorise, submit, mask, delete, archive, close,
reactivate) run only when allowed.

Each step has an id (``insi-cr00``, ``td0.2``, ``td2.1``…) that ``only``/``skip`` select by prefix
(:func:`select`); ``only`` brings in the steps a selected one needs (:data:`STEP_NEEDS`), and a
step whose needed steps did not pass is skipped, saying which. A failed step says what the
service answered (fault or DMP code and text) and what to check; the scenario goes on, so that
one run shows everything that fails. A profile run is repeatable: TD1.1 keeps a DMP the patient
already has.
"""

from __future__ import annotations

import enum
import itertools
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from transport import examplepki
from transport.config import CredentialSpec, Profile, example_profile, load_profile
from transport.credentials import Purpose
from transport.dmp import xds
from transport.dmp.client import DmpClient, Document
from transport.dmp.hl7v3 import (
    OPPOSITION_BREAK_GLASS,
    OPPOSITION_EMERGENCY,
    Demographics,
    Observation,
)
from transport.errors import CisisError, DmpError, SoapFault, UsageError
from transport.soap.trace import Tracer
from transport.stubs.app import Stubs
from transport.teleservices.client import AccessMode, TeleservicesClient
from transport.teleservices.insi import InsiClient
from transport.tls import create_context
from transport.vihf import INS_TEST_OID, AuthMode, Patient, ins_key

TEST_PATIENT = Patient("279035121518989", INS_TEST_OID)
"""A well-formed test INS (test authority OID): never a real person's."""

SMOKE_PERSON = Demographics(
    "SMOKETEST", ("ALICE", "MARIE"), sex="F", birth_date="19790328", prefix="Mme"
)
"""The fictitious patient the scenario creates a DMP for."""

INSI_CASES = (
    ("insi-cr00", "00", ("NESSI", ("NATHALIE",), "F", "1977-07-14", "75115")),
    ("insi-cr01", "01", ("SMOKETEST-INCONNU", ("PERSONNE",), "M", "1990-01-01", None)),
    ("insi-cr02", "02", ("DE VINCI", ("LEONARDO",), "M", "2014-02-01", None)),
)
"""INSi searches and the CR each must give: the CNDA test persons the stub serves (and the
qualification service knows), and a person nobody has."""

BINARY_DOCUMENT = b"%PDF-1.4\n%" + bytes(range(256)) * 8 + b"\n%%EOF\r\n"
CORRECTED_DOCUMENT = BINARY_DOCUMENT + b"% corrected\r\n"
REPORT_TYPE = xds.Coded("11488-4", "2.16.840.1.113883.6.1", "CR de consultation")
"""The LOINC type of the report the scenario writes as a CDA level 1 document."""


class Status(enum.StrEnum):
    """How a step ended."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class StepResult:
    """One step of a run: ``id`` selects it, ``duration_ms`` in milliseconds, ``detail`` one line
    for a person (for a failure: what the service answered and what to check)."""

    id: str
    name: str
    status: Status
    duration_ms: float
    detail: str

    @property
    def ok(self) -> bool:
        """Whether the step did not fail (passed or skipped)."""
        return self.status is not Status.FAILED


class Skip(Exception):
    """Raised by a step that has nothing to do (its ``args[0]`` says why)."""


@dataclass(frozen=True)
class Step:
    """A step to run: ``action`` returns its one-line detail; ``writes`` changes the service;
    ``needs`` the ids of the steps whose result it uses (it is skipped unless they passed)."""

    id: str
    name: str
    action: Callable[[], str]
    writes: bool = False
    needs: tuple[str, ...] = ()


STEP_NEEDS: dict[str, tuple[str, ...]] = {
    **{case_id: () for case_id, _, _ in INSI_CASES},
    "td0.2-unknown": (),
    "td1.1": (),
    "td0.2": ("td1.1",),
    "td1.3a": ("td1.1",),
    "td1.3b": ("td1.1",),
    "td0.3": ("td1.1",),
    "td1.6": ("td1.1",),
    "td0.4": (),
    "td2.1": ("td1.1",),
    "td2.1r": ("td2.1",),
    "td3.1": ("td1.1",),
    "td3.2": ("td3.1",),
    "td3.3a": ("td2.1",),
    "td3.3c": ("td2.1",),
    "td3.3d": ("td2.1",),
    "td1.4": ("td1.1",),
    "td1.2": ("td1.4",),
    "refusal": (),
}
"""Every selectable step id, in run order, with the steps it needs (the DMP it reads, the
documents it finds): ``--only`` brings them in."""


@dataclass(frozen=True)
class Selection:
    """Which steps run: ``chosen`` (None: all), and none starting with one of ``skip``;
    writing steps against a profile only with ``allow_writes``. ``added`` names the steps
    brought in because a chosen one needs them. Build it with :func:`select`."""

    chosen: frozenset[str] | None = None
    skip: tuple[str, ...] = ()
    allow_writes: bool = True
    added: tuple[str, ...] = ()

    def wants(self, step_id: str) -> bool:
        """Whether ``step_id`` is selected."""
        if self.chosen is not None and step_id not in self.chosen:
            return False
        return not _matches(step_id, self.skip)


def select(
    only: Sequence[str] = (), skip: Sequence[str] = (), *, allow_writes: bool = True
) -> Selection:
    """The selection of ``--only``/``--skip`` (id prefixes): the steps ``only`` names and,
    transitively, those they need. UsageError for a prefix that names no step."""
    for option, prefixes in (("--only", only), ("--skip", skip)):
        unknown = [item for item in prefixes if not any(_matches(i, (item,)) for i in STEP_NEEDS)]
        if unknown:
            raise UsageError(
                f"{option} {', '.join(unknown)}: no such step",
                hint=f"step ids: {', '.join(STEP_NEEDS)} (a prefix selects several)",
            )
    if not only:
        return Selection(None, tuple(skip), allow_writes)
    named = {step_id for step_id in STEP_NEEDS if _matches(step_id, only)}
    chosen = set(named)
    pending = list(named)
    while pending:
        for needed in STEP_NEEDS[pending.pop()]:
            if needed not in chosen:
                chosen.add(needed)
                pending.append(needed)
    added = tuple(step_id for step_id in STEP_NEEDS if step_id in chosen - named)
    return Selection(frozenset(chosen), tuple(skip), allow_writes, added)


def _matches(step_id: str, prefixes: Sequence[str]) -> bool:
    key = step_id.lower()
    return any(key.startswith(item.lower()) for item in prefixes)


def run_step(step: Step, selection: Selection = Selection()) -> StepResult:
    """Run one step, turning any error into a failed result with its message."""
    if step.writes and not selection.allow_writes:
        return StepResult(step.id, step.name, Status.SKIPPED, 0.0, "writes: pass --allow-writes")
    started = time.perf_counter()
    try:
        detail, status = step.action(), Status.OK
    except Skip as reason:
        detail, status = str(reason), Status.SKIPPED
    except CisisError as error:
        detail, status = _failure(error), Status.FAILED
    except Exception as error:  # a smoke run reports every failure instead of stopping
        detail, status = f"{type(error).__name__}: {error}", Status.FAILED
    return StepResult(step.id, step.name, status, (time.perf_counter() - started) * 1000, detail)


def _failure(error: CisisError) -> str:
    text = str(error)
    if isinstance(error, SoapFault) and not error.hint:
        text += " (check the VIHF identity, the certificates and the service's fault text)"
    return text


def run(
    profile_path: Path | None = None,
    tracer: Tracer | None = None,
    *,
    selection: Selection | None = None,
    patient: Patient | None = None,
) -> Iterator[StepResult]:
    """Run the scenario, yielding each step's result as soon as it is known.

    Without ``profile_path``: against the bundled stubs (writes allowed, a fresh patient per
    mode). With it: against the profile's endpoints as ``patient`` (default
    :data:`TEST_PATIENT`), writing only when ``selection.allow_writes``; its credentials are
    loaded first, so that a wrong password is one CredentialError, not a failure per step. A
    profile run can be repeated: a DMP the patient already has is kept and used.
    """
    selection = selection or select(allow_writes=False)
    if profile_path is not None:
        profile = load_profile(profile_path)
        _load_credentials(profile)
        yield from _scenario(profile, selection, tracer, patient or TEST_PATIENT)
        return
    selection = replace(selection, allow_writes=True)
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cisis-smoke-")))
        holder: dict[str, object] = {}

        def make_pki() -> str:
            holder["pki"] = examplepki.generate(directory / "pki")
            return f"fresh example PKI in {directory / 'pki'}"

        def start_stubs() -> str:
            pki = holder["pki"]
            assert isinstance(pki, examplepki.ExamplePKI)
            holder["stubs"] = stack.enter_context(
                Stubs(pki=pki, data_dir=directory / "state", accept_any_idam=True)
            )
            return f"DMP and téléservices stubs on {holder['stubs'].url}"  # type: ignore[attr-defined]

        for step in (Step("pki", "example PKI", make_pki), Step("stubs", "stubs", start_stubs)):
            result = run_step(step)
            yield result
            if not result.ok:
                return
        stubs = holder["stubs"]
        assert isinstance(stubs, Stubs)
        endpoints = {"dmp": stubs.dmp_base_url, "tlsi": stubs.teleservices_url}
        for mode in (AuthMode.INDIRECTE, AuthMode.DIRECTE):
            profile = example_profile(stubs.pki, mode, endpoints)
            insi = CredentialSpec(pkcs12=stubs.pki.p12("insi-auto"), password=stubs.pki.password)
            profile = replace(profile, insi_credential=insi)
            yield from _scenario(profile, selection, tracer, _fresh_patient())
        refusal = Step(
            "refusal",
            "refusal: VIHF signed with an authentication-only key",
            lambda: _auth_key_refused(example_profile(stubs.pki, endpoints=endpoints), tracer),
        )
        if selection.wants(refusal.id):
            yield run_step(refusal)


def _load_credentials(profile: Profile) -> None:
    """Load every credential of ``profile`` once, and its CA bundle into a TLS context: a
    CredentialError or ConfigurationError before the first step, not a failure per step."""
    create_context(profile.tls_credential.load(Purpose.TLS_CLIENT), profile.tls_settings())
    profile.signature_credential.load(Purpose.SIGNATURE)
    if profile.insi_credential is not None:
        profile.insi_credential.load(Purpose.TLS_CLIENT)


_serial = itertools.count(1)


def _fresh_patient() -> Patient:
    """A new well-formed INS under the test authority, different in every run and mode."""
    body = f"2790399{secrets.randbelow(10**5):05d}{next(_serial) % 10}"
    return Patient(body + ins_key(body), INS_TEST_OID)


def _scenario(
    profile: Profile, selection: Selection, tracer: Tracer | None, patient: Patient
) -> Iterator[StepResult]:
    mode = profile.identity.mode
    tag = f" [{mode}]"
    insi = _InsiSteps(profile, tracer)
    dmp = _DmpSteps(profile, tracer, patient, writes_allowed=selection.allow_writes)
    outcomes: dict[str, Status] = {}
    try:
        for step in (*insi.steps(), *dmp.steps()):
            if not selection.wants(step.id):
                continue
            missing = [need for need in step.needs if outcomes.get(need) is not Status.OK]
            if missing:
                result = StepResult(
                    step.id, step.name + tag, Status.SKIPPED, 0.0, _unmet(missing, outcomes)
                )
            else:
                result = run_step(replace(step, name=step.name + tag), selection)
            outcomes[step.id] = result.status
            yield result
    finally:
        insi.close()
        dmp.close()


def _unmet(missing: list[str], outcomes: dict[str, Status]) -> str:
    """Why a step is skipped: the steps it needs that did not pass."""
    said = {Status.FAILED: "failed", Status.SKIPPED: "was skipped"}
    return "needs " + ", ".join(
        f"{need}, which {said.get(outcomes.get(need), 'did not run')}"  # type: ignore[arg-type]
        for need in missing
    )


@dataclass
class _InsiSteps:
    """INSi searches by traits in the profile's access mode (card in direct mode)."""

    profile: Profile
    tracer: Tracer | None
    client: InsiClient | None = None

    def steps(self) -> list[Step]:
        return [
            Step(case_id, f"INSi search by traits, expecting CR {code}", self._search(code, query))
            for case_id, code, query in INSI_CASES
        ]

    def close(self) -> None:
        if self.client is not None:
            self.client.teleservices.close()

    def _search(self, expected: str, query: tuple) -> Callable[[], str]:
        def action() -> str:
            outcome = self._client().search_by_traits(*query)
            if outcome.code != expected:
                raise AssertionError(f"CR {outcome.code} {outcome.label}, expected CR {expected}")
            found = f": INS …{outcome.active.value[-4:]}" if outcome.active else ""
            return f"CR {outcome.code} {outcome.label} in {len(outcome.searches)} call(s){found}"

        return action

    def _client(self) -> InsiClient:
        if "tlsi" not in self.profile.endpoints:
            raise Skip("no `tlsi` endpoint in the profile")
        if self.client is None:
            mode = (
                AccessMode.CARD
                if self.profile.identity.mode is AuthMode.DIRECTE
                else AccessMode.CERTIFICATE
            )
            self.client = InsiClient(
                TeleservicesClient.from_profile(self.profile, mode, tracer=self.tracer)
            )
        return self.client


@dataclass
class _DmpSteps:
    """The DMP scenario for one patient, each step using what the previous ones left."""

    profile: Profile
    tracer: Tracer | None
    patient: Patient
    writes_allowed: bool = True
    client: DmpClient | None = None
    submitted: dict[str, tuple[xds.DocumentEntry, bytes]] = field(default_factory=dict)
    replaced: str | None = None
    found: tuple[xds.DocumentEntry, ...] = ()

    def steps(self) -> list[Step]:
        return [replace(step, needs=STEP_NEEDS[step.id]) for step in self._steps()]

    def _steps(self) -> list[Step]:
        return [
            Step("td0.2-unknown", "TD0.2 test existence (a patient with no DMP)", self.unknown),
            # TD1.1 writes only when the patient has no open DMP: it checks first.
            Step("td1.1", "TD1.1 create the DMP (or find it)", self.create),
            Step("td0.2", "TD0.2 test existence and my authorisation", self.exists),
            Step("td1.3a", "TD1.3a read the administrative data", self.consult),
            Step("td1.3b", "TD1.3b update the administrative data", self.update, writes=True),
            Step("td0.3", "TD0.3 set my authorisation", self.authorize, writes=True),
            Step("td1.6", "TD1.6 list the authorised professionals", self.authorizations),
            Step("td0.4", "TD0.4 list the DMPs I am authorised on", self.patients),
            Step(
                "td2.1", "TD2.1 submit a CDA made from a PDF and the PDF", self.submit, writes=True
            ),
            Step("td2.1r", "TD2.1 replace the CDA by a corrected one", self.replace, writes=True),
            Step("td3.1", "TD3.1 search the documents", self.search),
            Step("td3.2", "TD3.2 retrieve the documents, bytes compared", self.retrieve),
            Step("td3.3a", "TD3.3a mask a document from professionals", self.mask, writes=True),
            Step("td3.3c", "TD3.3c delete a document", self.delete, writes=True),
            Step("td3.3d", "TD3.3d archive a document", self.archive, writes=True),
            Step("td1.4", "TD1.4 close the DMP", self.close_dmp, writes=True),
            Step("td1.2", "TD1.2 reactivate the DMP", self.reactivate, writes=True),
        ]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def _client(self) -> DmpClient:
        if self.client is None:
            self.client = DmpClient.from_profile(self.profile, tracer=self.tracer)
        return self.client

    def unknown(self) -> str:
        found = self._client().exists(_fresh_patient())
        if found.exists:
            raise AssertionError("a freshly made INS has a DMP")
        return "no DMP, as expected"

    def create(self) -> str:
        found = self._client().exists(self.patient)
        if found.exists and found.active:
            return f"{_masked(self.patient)} has an open DMP already: kept as found"
        if not self.writes_allowed:
            state = "a closed DMP" if found.exists else "no DMP"
            raise Skip(f"{_masked(self.patient)} has {state}: writes: pass --allow-writes")
        if found.exists:
            record = self._client().reactivate(self.patient, SMOKE_PERSON)
            return f"{_masked(self.patient)} had a closed DMP: reactivated ({_state(record)})"
        oppositions = (
            Observation(OPPOSITION_BREAK_GLASS, False),
            Observation(OPPOSITION_EMERGENCY, False),
        )
        try:
            record = self._client().create(self.patient, SMOKE_PERSON, oppositions=oppositions)
        except DmpError as error:
            if error.code != "DMPFound":
                raise
            return f"{_masked(self.patient)} has a DMP already: kept as found"
        return f"DMP {_state(record)} for {_masked(self.patient)}"

    def exists(self) -> str:
        found = self._client().exists(self.patient)
        if not found.exists:
            raise AssertionError(
                f"no DMP for {_masked(self.patient)}: create it (step td1.1, --allow-writes) or"
                " name with --ins a test patient who has one"
            )
        state = "open" if found.active else "closed"
        return f"DMP {state}; my authorisation {found.authorization}"

    def consult(self) -> str:
        record = self._client().consult(self.patient)
        person = record.demographics
        oppositions = sum(1 for item in record.observations if item.value)
        given = len(person.given) if person else 0
        return f"administrative data read ({given} given name(s), {oppositions} opposition(s))"

    def update(self) -> str:
        changed = replace(SMOKE_PERSON, prefix="Mme", given=(*SMOKE_PERSON.given, "JEANNE"))
        self._client().update(self.patient, changed)
        person = self._client().consult(self.patient).demographics
        if person is None or person.given != changed.given:
            raise AssertionError("the update does not show in TD1.3a")
        return "given names updated, read back by TD1.3a"

    def authorize(self) -> str:
        outcome = self._client().set_authorization(self.patient)
        return outcome.status + (f": {outcome.context}" if outcome.context else "")

    def authorizations(self) -> str:
        found = self._client().list_authorizations(self.patient)
        return f"{len(found.entries)} professional(s) listed"

    def patients(self) -> str:
        found = self._client().list_patients()
        mine = any(item.patient == self.patient for item in found.patients)
        return f"{len(found.patients)} DMP(s)" + (", this patient's among them" if mine else "")

    def _report(self, pdf: bytes, title: str) -> Document:
        """The PDF ``pdf`` as a CDA level 1 document (Document.from_pdf), held in memory."""
        client = self._client()
        with tempfile.TemporaryDirectory(prefix="cisis-smoke-") as scratch:
            source = Path(scratch) / "report.pdf"
            source.write_bytes(pdf)
            fields = client.report_fields(REPORT_TYPE, title)
            made = Document.from_pdf(
                source, self.patient, output=Path(scratch) / "report.xml", **fields
            )
            assert isinstance(made.content, Path)
            return replace(made, content=made.content.read_bytes())

    def _sent(self, entries: Sequence[xds.DocumentEntry], documents: Sequence[Document]) -> None:
        for entry, item in zip(entries, documents, strict=True):
            assert isinstance(item.content, bytes)
            self.submitted[entry.unique_id] = (entry, item.content)

    def submit(self) -> str:
        client = self._client()
        documents = [
            self._report(BINARY_DOCUMENT, "CR test"),
            client.document(
                self.patient, BINARY_DOCUMENT, title="PDF test", mime_type="application/pdf"
            ),
        ]
        submitted = client.submit(documents)
        self._sent(submitted.entries, documents)
        warnings = f", {len(submitted.warnings)} warning(s)" if submitted.warnings else ""
        return f"{len(documents)} documents and the signed set's signature{warnings}"

    def replace(self) -> str:
        old = self._ours("text/xml")
        corrected = self._report(CORRECTED_DOCUMENT, "CR test (corrigé)")
        replaced = self._client().replace(old, corrected)
        del self.submitted[old.unique_id]
        self._sent(replaced.entries, [corrected])
        self.replaced = old.unique_id
        return "the CDA document is replaced (RPLC), the set signed"

    def search(self) -> str:
        client = self._client()
        found = client.find_documents(self.patient, page_size=50)
        self.found = found.documents
        missing = set(self.submitted) - {entry.unique_id for entry in self.found}
        if missing:
            raise AssertionError(f"{len(missing)} submitted document(s) not found")
        detail = f"{len(found.documents)} document(s), {len(found.entries)} entries in all"
        if self.replaced is None:
            return detail
        if self.replaced in {entry.unique_id for entry in self.found}:
            raise AssertionError("the replaced document is still approved")
        deprecated = client.find_documents(self.patient, (xds.DEPRECATED,), page_size=50)
        if self.replaced not in {entry.unique_id for entry in deprecated.documents}:
            raise AssertionError("the replaced document is not deprecated")
        return f"{detail}; the replaced one deprecated"

    def retrieve(self) -> str:
        wanted = [entry for entry in self.found if entry.unique_id in self.submitted] or list(
            self.found[:2]
        )
        if not wanted:
            raise Skip("no document to retrieve")
        retrieved = self._client().retrieve(self.patient, wanted)
        compared = 0
        for document in retrieved.documents:
            sent = self.submitted.get(document.document_unique_id)
            if sent is not None:
                if document.read_bytes() != sent[1]:
                    raise AssertionError(f"document {document.document_unique_id} differs")
                compared += 1
        size = sum(document.size for document in retrieved.documents)
        return f"{len(retrieved.documents)} document(s), {size} bytes, {compared} compared exactly"

    def _ours(self, mime_type: str) -> xds.DocumentEntry:
        for unique_id, (entry, _) in self.submitted.items():
            if entry.mime_type == mime_type:
                found = self._client().get_documents(self.patient, unique_ids=[unique_id])
                return found.by_unique_id(unique_id)
        raise Skip("no document submitted by this run")

    def mask(self) -> str:
        self._client().mask(self._ours("text/xml"))
        return "the CDA document is masked from other professionals"

    def delete(self) -> str:
        self._client().delete(self._ours("application/pdf"))
        return "the binary document is deleted"

    def archive(self) -> str:
        self._client().archive(self._ours("text/xml"))
        return "the CDA document is archived"

    def close_dmp(self) -> str:
        record = self._client().close_dmp(self.patient, SMOKE_PERSON)
        return "DMP closed" if not record.active else "DMP still open"

    def reactivate(self) -> str:
        record = self._client().reactivate(self.patient, SMOKE_PERSON)
        return "DMP reactivated" if record.active else "DMP still closed"


def _state(record: object) -> str:
    return "open" if getattr(record, "active", False) else "closed"


def _masked(patient: Patient) -> str:
    """An INS as logs may show it: the last four characters only."""
    return f"INS …{patient.ins[-4:]}"


def _auth_key_refused(profile: Profile, tracer: Tracer | None) -> str:
    # The authentication key signs on purpose: the point is to watch the service refuse it.
    signature = profile.tls_credential.load(Purpose.TLS_CLIENT)
    with DmpClient(
        profile.endpoint("dmp"),
        identity=profile.identity,
        signature=signature,
        tls_credential=signature,
        tls_settings=profile.tls_settings(),
        tracer=tracer,
    ) as client:
        try:
            client.exists(TEST_PATIENT)
        except SoapFault as fault:
            if fault.subcode != "DMPInvalidCertificate":
                raise
            return f"refused as the DMP does: {fault.code}/{fault.subcode}"
    raise AssertionError("the stub accepted a VIHF signed with an authentication-only key")
