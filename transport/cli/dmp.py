"""``cisis-transport dmp <transaction>``: one subcommand per DMP transaction (CI-SIS *Volet
Transport Synchrone*, TD0.2 … TD3.3d).

Human-readable lines by default, one JSON document with ``--json``. A transfer larger than
:data:`transport.cli.common.PROGRESS_THRESHOLD` shows a progress bar on stderr when stderr is
a terminal. Every exchange is logged at INFO (``-v``): the transaction and how it ended, never
the patient.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import mimetypes
import os
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from transport.cli.common import (
    INS_OID_HELP,
    MODES,
    add_trace_option,
    byte_progress,
    load_profile_or_example,
    output_target,
    patient,
    print_json,
    tracer,
    wants_json,
)
from transport.errors import UsageError

if TYPE_CHECKING:
    from transport.dmp import xds
    from transport.dmp.client import DmpClient, Document, Submitted
    from transport.dmp.hl7v3 import Address, Demographics, Observation, PatientRecord, Telecom
    from transport.vihf import DmpAccess, Patient

log = logging.getLogger("transport.cli.dmp")

STATUSES = ("approved", "deprecated", "deleted", "archived")
"""The document statuses ``--status`` names (XDS.b availability status, ITI TF-3 4.2.3.2)."""
LIST_STATES = ("ACTIVE", "INTERDITE", "TOUTE")
"""TD1.6's ``--state``: authorised, blocked, or both (the values of
:class:`transport.dmp.authorizations.ListMode`)."""

Handler = Callable[["DmpClient", argparse.Namespace], tuple[object, list[str]]]


def add_arguments(dmp: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Declare ``dmp``'s transactions on its parser (made by
    :func:`transport.cli.parser`); ``common``: the options every subcommand accepts."""
    actions = dmp.add_subparsers(dest="dmp_command", required=True)

    def transaction(name: str, help_text: str, *, patient: bool = True) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[common], help=help_text)
        if patient:
            parser.add_argument("--ins", required=True, help="the patient's INS (15 characters)")
            parser.add_argument("--ins-oid", help=INS_OID_HELP)
            parser.add_argument(
                "--ins-unchecked",
                action="store_true",
                help="send the INS as given (one INSi returned) even when its key check fails",
            )
        _access_options(parser)
        parser.add_argument("--profile", type=Path, help="profile (TOML); default: example PKI")
        parser.add_argument("--mode", choices=MODES, help="the example profile's mode")
        parser.add_argument("--endpoint", help="the DMP base URL (…/si-dmp-server/v2/services)")
        add_trace_option(parser)
        return parser

    transaction("exists", "TD0.2: does the patient have a DMP, am I authorised")
    _person(transaction("create", "TD1.1: create a DMP (the patient consents)"), full=True)
    _person(transaction("reactivate", "TD1.2: reactivate a closed DMP"), full=False)
    transaction("consult", "TD1.3a: read the DMP's administrative data")
    _person(transaction("update", "TD1.3b: update the administrative data"), full=True, update=True)
    _person(transaction("close", "TD1.4: close the DMP"), full=False)
    authorize = transaction("authorize", "TD0.3: add (or remove) my authorisation")
    authorize.add_argument("--remove", action="store_true", help="remove it instead")
    authorize.add_argument("--treating-physician", action="store_true", help="as treating doctor")
    listing = transaction("authorizations", "TD1.6: professionals authorised or blocked")
    listing.add_argument("--state", choices=LIST_STATES, default="TOUTE")
    patients = transaction("patients", "TD0.4: the DMPs I am authorised on", patient=False)
    patients.add_argument("--since", type=date.fromisoformat, help="YYYY-MM-DD")
    find = transaction("find-patient", "TD0.5: find a patient without INS (PDQ)", patient=False)
    find.add_argument("--nom", help="family name")
    find.add_argument("--prenom", help="given name")
    find.add_argument("--sexe", type=str.upper, choices=["M", "F", "U"])
    find.add_argument("--naissance", type=date.fromisoformat, help="birth date YYYY-MM-DD")
    submit = transaction("submit", "TD2.1: submit documents")
    submit.add_argument("files", type=Path, nargs="+", metavar="FILE")
    _document_options(submit)
    replace = transaction("replace", "TD2.1 RPLC: replace a document by a corrected one")
    replace.add_argument("--document-id", required=True, help="the replaced document's uniqueId")
    replace.add_argument("files", type=Path, nargs=1, metavar="FILE")
    _document_options(replace)
    search = transaction("search", "TD3.1: search the patient's documents")
    search.add_argument(
        "--status", action="append", choices=STATUSES, help="repeat; default approved"
    )
    search.add_argument("--page-size", type=int, help="fetch results this many at a time")
    search.add_argument(
        "--signatures", action="store_true", help="list the sets' signature documents too"
    )
    retrieve = transaction("retrieve", "TD3.2: retrieve a document")
    retrieve.add_argument("--document-id", required=True, help="the document's uniqueId")
    retrieve.add_argument("--out", type=Path, required=True, help="write the document there")
    retrieve.add_argument("--force", action="store_true", help="replace an existing --out file")
    for name, help_text in (
        ("mask", "TD3.3a: hide a document from other professionals"),
        ("unmask", "show a masked document to other professionals again"),
        ("show-to-patient", "make a document hidden from the patient visible to them"),
        ("delete", "TD3.3c: delete a document"),
        ("archive", "TD3.3d: archive a document"),
    ):
        transaction(name, help_text).add_argument(
            "--document-id", required=True, help="the document's uniqueId"
        )


VISIBILITY_FLAGS = {
    "hidden-from-professionals": "masked from other professionals (MASQUE_PS)",
    "hidden-from-patient": "not visible to the patient (INVISIBLE_PATIENT)",
    "hidden-from-legal-representatives": (
        "not visible to the patient's legal representatives (INVISIBLE_REPRESENTANTS_LEGAUX)"
    ),
}
"""The DMP restrictions a submitted document may carry (:class:`transport.dmp.xds.Visibility`)."""


def _document_options(parser: argparse.ArgumentParser) -> None:
    """The metadata and signature options of a submitted document (submit, replace)."""
    parser.add_argument("--title", help="document title (default: the file name)")
    parser.add_argument(
        "--type-code",
        "--type",
        dest="type_code",
        help="typeCode: CODE[^SCHEME[^LABEL]] (needed to wrap a PDF or text file as a CDA)",
    )
    parser.add_argument("--class", dest="class_code", help="classCode: CODE[^SCHEME[^LABEL]]")
    parser.add_argument("--format", dest="format_code", help="formatCode: CODE[^SCHEME[^LABEL]]")
    parser.add_argument("--mime", help="MIME type with --raw (default: guessed from the name)")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="send the file as it is (no CDA made or read; metadata from the options)",
    )
    for flag, help_text in VISIBILITY_FLAGS.items():
        parser.add_argument(f"--{flag}", action="store_true", help=help_text)
    parser.add_argument(
        "--signature-layout",
        choices=("dmp", "xades-1.3.2"),
        default="dmp",
        help="the set's XAdES signature: as the DMP signs (default) or XAdES 1.3.2",
    )


ACCESS_MODES = {"break-glass": "bris_de_glace", "emergency-center": "centre_15"}
"""``--access``: the TRE_R248 ModeAcces code each name stands for (see
:class:`transport.vihf.DmpAccessMode`); without it, the access is ``normal``."""


def _access_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--access", choices=ACCESS_MODES, help="access mode (default: normal access)"
    )
    parser.add_argument("--reason", help="why (required with --access break-glass)")
    parser.add_argument(
        "--secret", action="store_true", help="secret connection (hidden from legal guardians)"
    )


def _access(args: argparse.Namespace) -> DmpAccess | None:
    """The access ``--access``/``--reason``/``--secret`` ask for, None for a plain normal one;
    UsageError for a break-glass access without its reason, or a reason without a mode."""
    from transport.vihf import DmpAccess, DmpAccessMode

    if args.access is None and args.reason is not None:
        raise UsageError("--reason goes with --access break-glass or emergency-center")
    if args.access == "break-glass" and not (args.reason or "").strip():
        raise UsageError("--access break-glass needs --reason (the reason is recorded)")
    if args.access is None and not args.secret:
        return None
    mode = DmpAccessMode(ACCESS_MODES[args.access]) if args.access else DmpAccessMode.NORMAL
    return DmpAccess(mode, args.reason, args.secret)


OPPOSITIONS = ("bris-de-glace", "urgence")
"""The patient's oppositions the command line names (TD1.1, TD1.3b): break-glass access and
access by the emergency regulation (see :func:`_opposition_code`)."""


def _opposition_code(name: str) -> str:
    from transport.dmp.hl7v3 import OPPOSITION_BREAK_GLASS, OPPOSITION_EMERGENCY

    return {"bris-de-glace": OPPOSITION_BREAK_GLASS, "urgence": OPPOSITION_EMERGENCY}[name]


def _person(parser: argparse.ArgumentParser, *, full: bool, update: bool = False) -> None:
    """The person options; with ``update`` every field but the name may be left out, and is
    then kept as the DMP has it (read by TD1.3a first)."""
    parser.add_argument("--nom", required=True, help="family name (name used)")
    parser.add_argument("--prenom", action="append", required=True, help="a given name (repeat)")
    if not full:
        return
    kept = " (default: unchanged)" if update else ""
    parser.add_argument(
        "--sexe", required=not update, type=str.upper, choices=["M", "F", "U"], help="sex" + kept
    )
    parser.add_argument(
        "--naissance", required=not update, type=date.fromisoformat, help="YYYY-MM-DD" + kept
    )
    parser.add_argument("--nom-naissance", help="birth name when different" + kept)
    parser.add_argument(
        "--address",
        action="append",
        type=_address,
        metavar="STREET[;STREET…]|POSTAL|CITY[|COUNTRY]",
        help="a postal address (repeat)" + (": replaces the addresses" if update else ""),
    )
    parser.add_argument(
        "--telecom",
        action="append",
        type=_telecom,
        metavar="URL[^USE]",
        help="tel:… or mailto:…, with HP, MC or WP (repeat)"
        + (": replaces the telecoms" if update else ""),
    )
    parser.add_argument(
        "--opposition",
        action="append",
        choices=OPPOSITIONS,
        default=[],
        help="the patient opposes this access (repeat)",
    )
    if update:
        parser.add_argument("--no-addresses", action="store_true", help="remove every address")
        parser.add_argument("--no-telecoms", action="store_true", help="remove every telecom")
        parser.add_argument(
            "--lift-opposition",
            action="append",
            choices=OPPOSITIONS,
            default=[],
            help="the patient withdraws this opposition (repeat); oppositions named neither "
            "here nor in --opposition are left as they are",
        )


def run(args: argparse.Namespace) -> int:
    """Run ``args.dmp_command``; print the answer; return the exit code."""
    from transport.config import check_endpoint
    from transport.dmp.client import DmpClient

    handler = _HANDLERS[args.dmp_command]
    if args.endpoint is not None:
        check_endpoint(args.endpoint, "--endpoint")
    if getattr(args, "ins", None) is not None:
        _patient(args)  # a malformed INS is refused before the profile is even read
    access = _access(args)
    # The user's paths are checked before anything is sent.
    if args.dmp_command in ("submit", "replace"):
        _check_files(args.files)
    if args.dmp_command == "retrieve":
        args.target = output_target(args.out, "--out", force=args.force)
    profile = load_profile_or_example(args.profile, args.mode)
    trace = tracer(args.trace)
    started = time.monotonic()
    log.info("dmp %s: calling the DMP", args.dmp_command)
    try:
        with DmpClient.from_profile(
            profile, endpoint=args.endpoint, tracer=trace, **_client_options(args)
        ) as client:
            report, lines = handler(client.with_access(access) if access else client, args)
    except Exception as error:
        log.info("dmp %s: %s", args.dmp_command, type(error).__name__)
        raise
    log.info("dmp %s: answered in %.0f ms", args.dmp_command, (time.monotonic() - started) * 1e3)
    if wants_json(args):
        print_json(report)
    else:
        print("\n".join(lines))
    return 0 if not isinstance(report, dict) or report.get("complete", True) else 1


# --- the transactions ----------------------------------------------------------------------------


def _exists(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    found = client.exists(_patient(args))
    if not found.exists:
        return found, ["no DMP for this patient"]
    state = "open" if found.active else "closed"
    return found, [
        f"DMP {state}; my authorisation: {found.authorization}"
        + ("; I am the treating doctor" if found.treating_physician else "")
    ]


def _create(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    record = client.create(_patient(args), _demographics(args), oppositions=_oppositions(args))
    return record, _record_lines("created", record)


def _reactivate(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    record = client.reactivate(_patient(args), _demographics(args))
    return record, _record_lines("reactivated", record)


def _consult(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    record = client.consult(_patient(args))
    lines = _record_lines("found", record)
    person = record.demographics
    if person is not None:
        born = f"  sex {person.sex or '?'}, born {person.birth_date or '?'}"
        if person.birth_place is not None:
            born += f" in {_address_line(person.birth_place)}"
        if person.deceased:
            born += ", deceased"
        lines.append(born)
        lines.extend(f"  {_address_line(address)}" for address in person.addresses)
        for representative in person.legal_representatives:
            name = " ".join((representative.family, *representative.given)).strip()
            lines.append(f"  legal representative ({representative.relationship}): {name}")
            lines.extend(f"    {_address_line(address)}" for address in representative.addresses)
            lines.extend(f"    {telecom.value}" for telecom in representative.telecoms)
    lines.extend(
        f"  {item.code.code}: {'yes' if item.value else 'no'}" for item in record.observations
    )
    return record, lines


def _update(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    patient = _patient(args)
    changed = set(args.opposition) & set(args.lift_opposition)
    if changed:
        raise UsageError(f"--opposition and --lift-opposition both name {', '.join(changed)}")
    demographics = _demographics(args)
    if _needs_current(args):
        from transport.dmp.hl7v3 import Demographics

        current = client.consult(patient).demographics or Demographics(args.nom)
        demographics = dataclasses.replace(
            demographics,
            sex=demographics.sex or current.sex,
            birth_date=demographics.birth_date or current.birth_date,
            birth_family=demographics.birth_family or current.birth_family,
            prefix=current.prefix,
            addresses=demographics.addresses
            if args.address or args.no_addresses
            else current.addresses,
            telecoms=demographics.telecoms
            if args.telecom or args.no_telecoms
            else current.telecoms,
        )
    # Only the oppositions named are sent: TD1.3b leaves the others as the DMP has them, and
    # sending "false" for them would lift a patient's opposition behind their back.
    from transport.dmp.hl7v3 import Observation

    observations = [Observation(_opposition_code(name), True) for name in args.opposition]
    observations += [Observation(_opposition_code(name), False) for name in args.lift_opposition]
    record = client.update(patient, demographics, observations=observations)
    return record, _record_lines("updated", record)


def _needs_current(args: argparse.Namespace) -> bool:
    """Whether an update leaves a field out, so that the DMP's current value must be read."""
    return not (
        args.sexe
        and args.naissance
        and args.nom_naissance
        and (args.address or args.no_addresses)
        and (args.telecom or args.no_telecoms)
    )


def _close(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    record = client.close_dmp(_patient(args), _demographics(args))
    return record, _record_lines("closed", record)


def _authorize(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    from transport.dmp.authorizations import AuthorizationAction

    action = AuthorizationAction.SUPPRESSION if args.remove else AuthorizationAction.AJOUT
    outcome = client.set_authorization(
        _patient(args), action, treating_physician=args.treating_physician
    )
    return outcome, [f"{outcome.status}" + (f": {outcome.context}" if outcome.context else "")]


def _authorizations(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    from transport.dmp.authorizations import ListMode

    found = client.list_authorizations(_patient(args), ListMode(args.state))
    lines = [f"{len(found.entries)} professional(s)"]
    lines.extend(
        f"  {item.professional_id:<14} {item.mode.value:<9} {item.last_name} {item.first_name}"
        + (" (treating doctor)" if item.treating_physician else "")
        for item in found.entries
    )
    return found, lines


def _patients(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    from transport.dmp.authorizations import PatientListQuery

    since = datetime.combine(args.since, datetime.min.time()) if args.since else None
    found = client.list_patients(PatientListQuery(start_date=since))
    lines = [f"{len(found.patients)} DMP(s)"]
    lines.extend(
        f"  {item.patient.ins if item.patient else '?':<16} {item.last_name} {item.first_name}"
        f" {item.birth_date or ''}"
        for item in found.patients
    )
    return found, lines


def _find_patient(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    if not (args.nom or args.prenom or args.sexe or args.naissance):
        raise UsageError("give at least one trait: --nom, --prenom, --sexe or --naissance")
    from transport.dmp.hl7v3 import Traits

    birth = args.naissance.strftime("%Y%m%d") if args.naissance else None
    found = client.find_patients(Traits(args.nom, args.prenom, args.sexe, birth))
    lines = [f"{len(found)} patient(s)"]
    lines.extend(_record_lines("", record)[0] for record in found)
    return found, lines


def _check_files(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            raise UsageError(f"{path}: is a folder", hint="name the files to submit")
        if not path.is_file():
            raise UsageError(f"{path}: no such file")


def _client_options(args: argparse.Namespace) -> dict[str, object]:
    """The DmpClient options a subcommand's arguments choose (the signature layout)."""
    if getattr(args, "signature_layout", None) is None:
        return {}
    from transport.dmp import xades

    return {"signature_layout": xades.LAYOUTS[args.signature_layout]}


def _documents(
    client: DmpClient, args: argparse.Namespace, patient: Patient, scratch: Path
) -> list[Document]:
    """The documents of ``args.files``: each CDA file (by content) with the metadata its header
    gives, each PDF or text file wrapped as a CDA level 1 document in ``scratch``, every file
    as it is with ``--raw``."""
    from transport.dmp.client import Document
    from transport.dmp.xds import Visibility

    visibility = Visibility(*(getattr(args, flag.replace("-", "_")) for flag in VISIBILITY_FLAGS))
    codes = {
        name: _coded(value, name)
        for name in ("type_code", "class_code", "format_code")
        if (value := getattr(args, name))
    }
    documents: list[Document] = []
    for number, path in enumerate(args.files):
        if args.raw:
            mime = args.mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            title = args.title or path.name
            documents.append(
                client.document(
                    patient, path, title=title, mime_type=mime, visibility=visibility, **codes
                )
            )
            continue
        kind = _kind(path)
        if kind == "cda":
            # The codes given win over the header's; the title too.
            titled = {"title": args.title} if args.title else {}
            documents.append(
                Document.from_cda(path, patient, visibility=visibility, **codes, **titled)
            )
            continue
        if "type_code" not in codes:
            raise UsageError(
                f"{path}: a {kind} file is sent as a CDA document: --type-code is needed",
                hint="--type-code CODE^SCHEME^LABEL (e.g. 11488-4^2.16.840.1.113883.6.1^CR de"
                " consultation), or --raw to send the file as it is",
            )
        wrap = Document.from_pdf if kind == "PDF" else Document.from_text
        fields = client.report_fields(codes["type_code"], args.title or path.stem)
        documents.append(
            wrap(
                path,
                patient,
                output=scratch / f"{number}.xml",
                class_code=codes.get("class_code"),
                visibility=visibility,
                **fields,
            )
        )
    return documents


def _kind(path: Path) -> str:
    """``cda`` for an XML file whose root is a CDA R2 ClinicalDocument, ``PDF`` for a PDF,
    ``text`` for a plain-text file (by name); UsageError otherwise (send it with --raw)."""
    from transport.errors import CisisError
    from transport.vihf import HL7_NS
    from transport.xml import iterparse_xml

    with path.open("rb") as handle:
        head = handle.read(8)
        if head.startswith(b"%PDF-"):
            return "PDF"
        handle.seek(0)
        try:
            _, root = next(iterparse_xml(handle, ("start",)))
        except (CisisError, StopIteration):
            root = None
    if root is not None and root.tag == f"{{{HL7_NS}}}ClinicalDocument":
        return "cda"
    if mimetypes.guess_type(path.name)[0] == "text/plain":
        return "text"
    raise UsageError(
        f"{path}: neither a CDA document, a PDF nor a text file",
        hint="--raw sends it as it is, with the metadata the options give",
    )


def _submit(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cisis-cda-") as scratch:
        documents = _documents(client, args, _patient(args), Path(scratch))
        total = sum(_size(document) for document in documents)
        submitted = client.submit(documents, progress=byte_progress("sent", total))
    return submitted, _submitted_lines("submitted", submitted)


def _size(document: Document) -> int:
    content = document.content
    return len(content) if isinstance(content, bytes) else content.stat().st_size


def _replace(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    import tempfile

    patient = _patient(args)
    old = _entry(client, patient, args.document_id)
    with tempfile.TemporaryDirectory(prefix="cisis-cda-") as scratch:
        (document,) = _documents(client, args, patient, Path(scratch))
        progress = byte_progress("sent", _size(document))
        replaced = client.replace(old, document, progress=progress)
    lines = _submitted_lines("replaced", replaced)
    lines.insert(1, f"  {args.document_id}  deprecated")
    return replaced, lines


def _submitted_lines(verb: str, submitted: Submitted) -> list[str]:
    lines = [f"{verb} {len(submitted.entries)} document(s)"]
    lines.extend(
        f"  {entry.unique_id}  {entry.size} bytes  {entry.title}" for entry in submitted.entries
    )
    lines.extend(_warning_lines(submitted.warnings))
    return lines


def _search(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    from transport.dmp import xds

    codes = {
        "approved": xds.APPROVED,
        "deprecated": xds.DEPRECATED,
        "deleted": xds.DELETED,
        "archived": xds.ARCHIVED,
    }
    statuses = [codes[name] for name in args.status or ["approved"]]
    found = client.find_documents(_patient(args), statuses, page_size=args.page_size)
    shown = found.entries if args.signatures else found.documents
    # The JSON lists what the lines list: signature documents only with --signatures.
    report = dataclasses.replace(found, entries=shown)
    lines = [f"{len(shown)} document(s)"]
    lines.extend(
        f"  {entry.unique_id}  {entry.status.rpartition(':')[2] if entry.status else '?':<10}"
        f" {entry.size if entry.size is not None else '?':>10} B  {entry.mime_type:<20}"
        f" {entry.title}" + ("  (masked)" if entry.masked else "")
        for entry in shown
    )
    lines.extend(_warning_lines(found.warnings))
    return report, lines


def _retrieve(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
    import tempfile

    patient = _patient(args)
    target = args.target
    entry = _entry(client, patient, args.document_id)
    # Written next to the target, then renamed: a complete, checked document or nothing.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".cisis-") as scratch:
        retrieved = client.retrieve(
            patient,
            [entry],
            directory=Path(scratch),
            progress=byte_progress("received", entry.size),
        )
        document = retrieved.document(args.document_id)
        assert document.path is not None  # retrieved into a directory
        os.replace(document.path, target)
    report = {"document": dataclasses.replace(document, path=target), "complete": True}
    return report, [f"wrote {target} ({document.size} bytes, SHA-1 {document.sha1})"]


def _status_change(name: str) -> Handler:
    def handler(client: DmpClient, args: argparse.Namespace) -> tuple[object, list[str]]:
        patient = _patient(args)
        warnings = getattr(client, name)(_entry(client, patient, args.document_id))
        return {"document": args.document_id, "warnings": warnings}, [
            f"{name} {args.document_id}: done",
            *_warning_lines(warnings),
        ]

    return handler


_HANDLERS: dict[str, Handler] = {
    "exists": _exists,
    "create": _create,
    "reactivate": _reactivate,
    "consult": _consult,
    "update": _update,
    "close": _close,
    "authorize": _authorize,
    "authorizations": _authorizations,
    "patients": _patients,
    "find-patient": _find_patient,
    "submit": _submit,
    "replace": _replace,
    "search": _search,
    "retrieve": _retrieve,
    "mask": _status_change("mask"),
    "unmask": _status_change("unmask"),
    "show-to-patient": _status_change("show_to_patient"),
    "delete": _status_change("delete"),
    "archive": _status_change("archive"),
}


# --- helpers -------------------------------------------------------------------------------------


def _patient(args: argparse.Namespace) -> Patient:
    return patient(args.ins, args.ins_oid, as_returned=args.ins_unchecked)


def _entry(client: DmpClient, patient: Patient, unique_id: str) -> xds.DocumentEntry:
    """The registry's current entry of the document ``unique_id``."""
    try:
        return client.get_documents(patient, unique_ids=[unique_id]).by_unique_id(unique_id)
    except KeyError:
        raise UsageError(f"no document {unique_id} for this patient") from None


def _demographics(args: argparse.Namespace) -> Demographics:
    from transport.dmp.hl7v3 import Demographics

    naissance = getattr(args, "naissance", None)
    return Demographics(
        family=args.nom,
        given=tuple(args.prenom),
        sex=getattr(args, "sexe", None),
        birth_date=naissance.strftime("%Y%m%d") if naissance else None,
        birth_family=getattr(args, "nom_naissance", None),
        addresses=tuple(getattr(args, "address", None) or ()),
        telecoms=tuple(getattr(args, "telecom", None) or ()),
    )


def _oppositions(args: argparse.Namespace) -> tuple[Observation, ...]:
    """TD1.1: every opposition stated, true when the patient expressed it."""
    from transport.dmp.hl7v3 import Observation

    chosen = set(args.opposition)
    return tuple(Observation(_opposition_code(name), name in chosen) for name in OPPOSITIONS)


def _address(value: str) -> Address:
    """``STREET[;STREET…]|POSTAL|CITY[|COUNTRY]`` as an :class:`Address`."""
    from transport.dmp.hl7v3 import Address

    parts = value.split("|")
    if not 3 <= len(parts) <= 4 or not any(part.strip() for part in parts):
        raise argparse.ArgumentTypeError("expected STREET[;STREET…]|POSTAL|CITY[|COUNTRY]")
    streets, postal, city, *country = (part.strip() for part in parts)
    return Address(
        street_lines=tuple(line.strip() for line in streets.split(";") if line.strip()),
        postal_code=postal or None,
        city=city or None,
        country=(country[0] if country else "") or None,
    )


def _telecom(value: str) -> Telecom:
    """``URL[^USE]`` (``tel:…``/``mailto:…``; HP, MC, WP) as a :class:`Telecom`."""
    from transport.dmp.hl7v3 import Telecom

    url, _, use = value.partition("^")
    if not url.startswith(("tel:", "mailto:", "fax:")):
        raise argparse.ArgumentTypeError("expected tel:…, mailto:… or fax:…, then ^HP, ^MC or ^WP")
    if use and use.upper() not in {"HP", "MC", "WP", "H", "PG", "EC"}:
        raise argparse.ArgumentTypeError("the use is HP (home), MC (mobile) or WP (work)")
    return Telecom(url, use.upper() or None)


def _coded(value: str, name: str) -> xds.Coded:
    from transport.dmp import xds

    code, _, rest = value.partition("^")
    scheme, _, label = rest.partition("^")
    if not code:
        raise UsageError(f"--{name.removesuffix('_code')}: CODE[^SCHEME[^LABEL]]")
    defaults = {
        "type_code": "2.16.840.1.113883.6.1",
        "class_code": "1.2.250.1.213.1.1.4.1",
        "format_code": "1.3.6.1.4.1.19376.1.2.3",
    }
    return xds.Coded(code, scheme or defaults[name], label)


def _address_line(address: Address) -> str:
    """One address on one line: street lines, locator, postal code, city, country."""
    parts = (
        ", ".join(address.street_lines),
        address.additional_locator,
        address.postal_code,
        address.city,
        address.country,
    )
    return " ".join(part for part in parts if part)


def _record_lines(verb: str, record: PatientRecord) -> list[str]:
    person = record.demographics
    name = f"{person.family} {' '.join(person.given)}" if person else ""
    state = "open" if record.active else "closed"
    ins = record.patient.ins if record.patient else "?"
    return [f"{verb + ' ' if verb else ''}DMP {ins} ({state}) {name}".strip()]


def _warning_lines(warnings: tuple[xds.RegistryError, ...]) -> list[str]:
    return [f"  {item.severity.lower()}: {item.code}: {item.context}" for item in warnings]
