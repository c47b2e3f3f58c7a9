"""``cisis-transport``: the command line (its contract: the README's "Command line" section).

Exit codes: 0 success; 1 the service (or the verifier) answered no; 2 bad usage or input;
3 transport, TLS or credential failure. ``--json`` prints one JSON document on stdout; logs and
errors go to stderr, and never contain keys, passwords or patient identifiers.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import timedelta
from pathlib import Path

from lxml import etree

from transport import __version__, examplepki
from transport.cli import dmp as cli_dmp
from transport.config import (
    CredentialSpec,
    Profile,
    example_pki_directory,
    example_profile,
    load_profile,
)
from transport.credentials import Purpose
from transport.doctor import Report, Status, run_checks
from transport.errors import CisisError, SignatureError, UsageError
from transport.smoke import Status as StepStatus
from transport.smoke import run
from transport.soap.trace import Tracer
from transport.stubs.app import SERVICES, Stubs, service_path
from transport.teleservices.client import AccessMode, TeleservicesClient
from transport.teleservices.insi import Ins, InsiClient, SearchOutcome
from transport.teleservices.insi_batch import run_batch
from transport.vihf import (
    INS_NIR_OID,
    INS_TEST_OID,
    AuthMode,
    Patient,
    sign_vihf,
    validate_ins,
    verify_vihf,
)
from transport.xml import parse_xml
from transport.xmlsig import VerifySettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cisis-transport",
        description="SOAP/WS-Security client for the DMP and the téléservices (CI-SIS).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step on stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    smoke = commands.add_parser("smoke", help="run every supported step, one line each")
    smoke.add_argument("--profile", type=Path, help="profile (TOML); default: bundled stubs")
    smoke.add_argument("--json", action="store_true", help="one JSON document on stdout")
    smoke.add_argument("--trace", type=Path, metavar="DIR", help="write every exchange to DIR")
    smoke.add_argument(
        "--only", action="append", default=[], metavar="ID", help="run only these steps (prefix)"
    )
    smoke.add_argument(
        "--skip", action="append", default=[], metavar="ID", help="skip these steps (prefix)"
    )
    smoke.add_argument(
        "--allow-writes", action="store_true", help="with --profile: run the steps that write"
    )
    smoke.add_argument("--ins", help="with --profile: the test patient's INS")
    smoke.add_argument("--ins-oid", default=INS_TEST_OID, help="its authority OID (test INS)")

    stub = commands.add_parser("stub", help="serve the DMP and téléservices stubs until Ctrl-C")
    stub.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    stub.add_argument("--port", type=int, default=8443, help="port (8443; 0: any free port)")
    stub.add_argument("--data", type=Path, metavar="DIR", help="keep the state in DIR")
    stub.add_argument(
        "--pki", type=Path, metavar="DIR", help="example PKI directory (default: certs-example)"
    )

    vihf = commands.add_parser("vihf", help="build or verify a VIHF").add_subparsers(
        dest="vihf_command", required=True
    )
    build = vihf.add_parser("build", help="print a signed VIHF built from a profile")
    build.add_argument("--profile", type=Path, help="profile (TOML); default: example PKI")
    build.add_argument("--mode", choices=[mode.value for mode in AuthMode], help="override")
    build.add_argument("--ins", help="patient INS (15 characters); omit for no patient")
    build.add_argument("--ins-oid", default=INS_NIR_OID, help="INS authority OID")
    build.add_argument("--out", type=Path, help="write to this file instead of stdout")

    verify = vihf.add_parser("verify", help="verify a signed VIHF (exit 0 valid, 1 refused)")
    verify.add_argument("file", type=Path, help="the assertion (or an envelope holding it)")
    verify.add_argument("--ca", type=Path, required=True, help="PEM bundle of trusted CAs")
    verify.add_argument("--allow-sha1", action="store_true", help="accept RSA-SHA1 signatures")
    verify.add_argument("--clock-skew", type=float, default=300, help="seconds (default 300)")
    verify.add_argument("--max-age", type=float, help="refuse older assertions (seconds)")
    verify.add_argument("--json", action="store_true", help="one JSON document on stdout")
    _insi_parser(commands)
    doctor = commands.add_parser("doctor", help="check a profile before calling any service")
    doctor.add_argument("--profile", type=Path, help="profile (TOML); default: example PKI")
    doctor.add_argument("--endpoint", help="check this URL instead of the profile's endpoints")
    doctor.add_argument("--json", action="store_true", help="one JSON document on stdout")
    cli_dmp.add_parser(commands)
    return parser


def _insi_parser(commands: argparse._SubParsersAction) -> None:
    insi = commands.add_parser("insi", help="search INS with INSi, one by one or in batch")
    actions = insi.add_subparsers(dest="insi_command", required=True)
    search = actions.add_parser("search", help="search an INS by identity traits")
    search.add_argument("--nom", required=True, help="birth name")
    search.add_argument("--prenom", action="append", required=True, help="a first name (repeat)")
    search.add_argument("--sexe", required=True, type=str.upper, choices=["M", "F"])
    search.add_argument("--naissance", required=True, help="birth date YYYY-MM-DD")
    search.add_argument("--lieu", help="birthplace: INSEE COG code")
    vitale = actions.add_parser("vitale", help="search an INS with the data of a Vitale card")
    vitale.add_argument("--nir", help="the beneficiary's NIR (13 characters, or 15 with the key)")
    vitale.add_argument("--nir-od", help="the insured person's NIR (MatriculeOD)")
    vitale.add_argument("--naissance", required=True, help="birth date YYYY-MM-DD")
    vitale.add_argument("--nom", help="birth name")
    vitale.add_argument("--rang", help="rank of birth")
    batch = actions.add_parser("batch", help="search every row of a CSV file (resumable)")
    batch.add_argument("input", type=Path, help="CSV: nom, prenoms, sexe, naissance[, lieu, id]")
    batch.add_argument("--out", type=Path, required=True, help="output CSV (appended, resumed)")
    batch.add_argument("--concurrency", type=int, default=4, help="calls at once (default 4)")
    batch.add_argument("--rate", type=float, help="at most R rows per second")
    for command in (search, vitale, batch):
        command.add_argument("--profile", type=Path, help="profile (TOML); default: example PKI")
        command.add_argument("--endpoint", help="the téléservices URL (…/lps)")
        command.add_argument(
            "--mode",
            choices=[mode.value for mode in AccessMode],
            help="certificate (INSI-AUTO, the default) or card (assertion PS)",
        )
        command.add_argument("--json", action="store_true", help="one JSON document on stdout")
        command.add_argument("--trace", type=Path, metavar="DIR", help="write every exchange")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "smoke":
            return _smoke(args)
        if args.command == "stub":
            return _stub(args)
        if args.command == "insi":
            return _insi(args)
        if args.command == "dmp":
            return cli_dmp.run(args, _profile(args.profile, args.mode))
        if args.command == "doctor":
            return _doctor(args)
        if args.vihf_command == "build":
            return _vihf_build(args)
        return _vihf_verify(args)
    except CisisError as error:
        print(f"cisis-transport: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("cisis-transport: interrupted", file=sys.stderr)
        return 130


def _smoke(args: argparse.Namespace) -> int:
    patient = None
    if args.ins:
        patient = Patient(args.ins.replace(" ", ""), args.ins_oid)
        validate_ins(patient)
    steps = run(
        args.profile,
        args.trace,
        only=_ids(args.only),
        skip=_ids(args.skip),
        allow_writes=args.allow_writes,
        patient=patient,
    )
    results = []
    for result in steps:
        results.append(result)
        if not args.json:
            label = {
                StepStatus.OK: "ok",
                StepStatus.FAILED: "FAILED",
                StepStatus.SKIPPED: "skipped",
            }
            print(
                f"{result.name:<62} {label[result.status]:<7} {result.duration_ms:8.1f} ms"
                f"  {result.detail}"
            )
            sys.stdout.flush()
    failed = [result for result in results if result.status is StepStatus.FAILED]
    counts = {status.value: sum(r.status is status for r in results) for status in StepStatus}
    if args.json:
        steps_json = [{**asdict(r), "status": r.status.value} for r in results]
        print(json.dumps({"steps": steps_json, "summary": counts}, indent=2, ensure_ascii=False))
    else:
        print(f"\n{counts['ok']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
        for result in failed:
            print(f"failed: {result.name}: {result.detail}")
    return 0 if counts["ok"] and not failed else 1


def _ids(values: Sequence[str]) -> tuple[str, ...]:
    """Step ids given repeated or comma-separated."""
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def _stub(args: argparse.Namespace) -> int:
    logging.getLogger("transport.stubs").setLevel(logging.INFO)
    pki = examplepki.load(args.pki or example_pki_directory())
    try:
        stubs = Stubs(pki=pki, data_dir=args.data, host=args.host, port=args.port)
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    stubs.start()
    stopped = threading.Event()
    # Ctrl-C and SIGTERM end the wait below, and only that: shutdown then runs uninterrupted.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stopped.set())
    print(f"cisis-transport stub listening on {stubs.url}")
    for name in SERVICES:
        print(f"  {name:<17} {stubs.url}{service_path(name)}")
    print(f"state in {stubs.context.data_dir}{'' if args.data else ' (temporary)'}")
    print(f"clients need a certificate from {pki.ca_bundle}; Ctrl-C stops")
    sys.stdout.flush()
    try:
        while not stopped.wait(1):
            pass
    finally:
        stubs.stop()
    print("stopped")
    return 0


def _profile(path: Path | None, mode: str | None) -> Profile:
    if path is not None:
        profile = load_profile(path)
        if mode is None:
            return profile
        raise UsageError("--mode applies to the example profile only; set the mode in the profile")
    return example_profile(examplepki.load(example_pki_directory()), AuthMode(mode or "INDIRECTE"))


def _doctor(args: argparse.Namespace) -> int:
    note = None
    if args.profile is not None:
        profile = load_profile(args.profile)
    else:
        pki = examplepki.load(example_pki_directory())
        insi = CredentialSpec(pkcs12=pki.p12("insi-auto"), password=pki.password)
        profile = replace(example_profile(pki), insi_credential=insi)
        if args.endpoint is None:
            note = (
                "the example profile points at the bundled stubs, which `cisis-transport smoke` "
                "starts: endpoint checks skipped; pass --endpoint URL to check a running "
                "`cisis-transport stub`"
            )
    if args.endpoint is not None:
        families = profile.endpoints or {"dmp": args.endpoint}
        profile = replace(profile, endpoints={family: args.endpoint for family in families})
    report = Report(run_checks(profile))
    if args.json:
        print(json.dumps({**report.as_dict(), "note": note}, indent=2, ensure_ascii=False))
    else:
        if note:
            print(f"note: {note}")
        for check in report.checks:
            print(f"{check.status:<4}  {check.name:<20} {check.detail}")
            if check.status is not Status.OK and check.fix:
                print(f"      fix: {check.fix}")
        counts = report.counts
        print(f"\n{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed")
    return 0 if report.passed else 1


def _vihf_build(args: argparse.Namespace) -> int:
    profile = _profile(args.profile, args.mode)
    signature = profile.signature_credential.load(Purpose.SIGNATURE)
    patient = Patient(args.ins, args.ins_oid) if args.ins else None
    assertion = sign_vihf(
        profile.identity.with_patient(patient), signature.signer, options=profile.vihf_options
    )
    data = etree.tostring(assertion, xml_declaration=True, encoding="utf-8")
    if args.out:
        args.out.write_bytes(data)
    else:
        sys.stdout.buffer.write(data + b"\n")
    return 0


def _vihf_verify(args: argparse.Namespace) -> int:
    try:
        document = parse_xml(args.file.read_bytes())
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
    assertions = document.xpath(
        "descendant-or-self::saml2:Assertion",
        namespaces={"saml2": "urn:oasis:names:tc:SAML:2.0:assertion"},
    )
    settings = VerifySettings(
        args.ca, clock_skew=timedelta(seconds=args.clock_skew), allow_sha1=args.allow_sha1
    )
    max_age = timedelta(seconds=args.max_age) if args.max_age else None
    try:
        if len(assertions) != 1:
            raise SignatureError(
                "malformed", f"expected one SAML assertion, found {len(assertions)}"
            )
        verified = verify_vihf(assertions[0], settings, max_age=max_age)
    except (SignatureError, UsageError) as error:
        reason = getattr(error, "reason", "invalid")
        if args.json:
            print(json.dumps({"valid": False, "reason": reason, "message": str(error)}))
        else:
            print(f"refused ({reason}): {error}")
        return 1
    report = {
        "valid": True,
        "assertion_id": verified.assertion_id,
        "issue_instant": verified.issue_instant.isoformat(),
        "signer": verified.signer_dn,
        "algorithm": verified.algorithm,
        "mode": str(verified.vihf.mode),
        "subject_id": verified.vihf.subject_id,
        "structure_id": verified.vihf.structure_id,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"valid: {report['mode']} VIHF {report['assertion_id']} signed by {report['signer']}")
    return 0


def _insi_client(args: argparse.Namespace) -> InsiClient:
    """The INSi client of the command: the profile's, or the example PKI's (``insi-auto`` in
    certificate mode, the CPS-like card credentials in card mode)."""
    if args.profile is not None:
        profile = load_profile(args.profile)
        mode = AccessMode(args.mode) if args.mode else AccessMode.CERTIFICATE
    else:
        mode = AccessMode(args.mode or AccessMode.CERTIFICATE)
        pki = examplepki.load(example_pki_directory())
        card = mode is AccessMode.CARD
        profile = example_profile(pki, AuthMode.DIRECTE if card else AuthMode.INDIRECTE)
        insi = CredentialSpec(pkcs12=pki.p12("insi-auto"), password=pki.password)
        profile = replace(profile, insi_credential=insi)
    tracer = Tracer(args.trace) if args.trace else None
    return InsiClient(
        TeleservicesClient.from_profile(profile, mode, url=args.endpoint, tracer=tracer)
    )


def _outcome_report(outcome: SearchOutcome) -> dict[str, object]:
    traits = outcome.traits
    return {
        "cr": outcome.code,
        "label": outcome.label,
        "qualifiable": outcome.qualifiable,
        "calls": len(outcome.searches),
        "ins": _ins_report(outcome.active) if outcome.active else None,
        "history": [_ins_report(former) for former in outcome.history],
        "traits": asdict(traits) if traits else None,
    }


def _ins_report(ins: Ins) -> dict[str, object]:
    return {
        "value": ins.value,
        "oid": ins.oid,
        "nia": ins.is_nia,
        "start": ins.start.isoformat() if ins.start else None,
        "end": ins.end.isoformat() if ins.end else None,
    }


def _insi(args: argparse.Namespace) -> int:
    if args.insi_command == "batch":
        return _insi_batch(args)
    client = _insi_client(args)
    with client.teleservices:
        if args.insi_command == "search":
            outcome = client.search_by_traits(
                args.nom, args.prenom, args.sexe, args.naissance, args.lieu
            )
        else:
            outcome = client.search_by_vitale(
                args.naissance,
                individual=args.nir,
                holder=args.nir_od,
                birth_name=args.nom,
                rank=args.rang,
            )
    report = _outcome_report(outcome)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"CR {outcome.code} {outcome.label} ({len(outcome.searches)} call(s))")
        if outcome.active is not None and outcome.traits is not None:
            traits = outcome.traits
            print(f"INS {outcome.active.value} ({outcome.active.oid})")
            print(f"{traits.birth_name} {traits.first_names} {traits.sex} {traits.birth_date}")
            for former in outcome.history:
                print(f"former INS {former.value} ({former.oid})")
            print("qualifiable" if outcome.qualifiable else "not qualifiable")
    # Exit 1 unless exactly one identity was found: the command's purpose is an INS.
    return 0 if outcome.code == "00" else 1


def _insi_batch(args: argparse.Namespace) -> int:
    client = _insi_client(args)

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} rows", end="" if done < total else "\n", file=sys.stderr)

    with client.teleservices:
        summary = run_batch(
            args.input,
            args.out,
            client.search_query,
            concurrency=args.concurrency,
            rate=args.rate,
            progress=progress,
        )
    if args.json:
        print(json.dumps(asdict(summary)))
    else:
        print(
            f"{summary.total} rows: {summary.skipped} answered before, {summary.answered} now, "
            f"{summary.unanswered} left (run again to send them)"
        )
    # Unanswered rows failed on the way (transport): exit 3, as for any transport failure.
    return 3 if summary.unanswered else 0
