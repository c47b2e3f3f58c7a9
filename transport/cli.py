"""``cisis-transport``: the command line (see DESIGN.md for its contract).

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
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

from lxml import etree

from . import __version__, examplepki
from .config import Profile, example_pki_directory, example_profile, load_profile
from .credentials import Purpose
from .errors import CisisError, SignatureError, UsageError
from .smoke import run
from .stubs.app import SERVICES, Stubs, service_path
from .vihf import INS_NIR_OID, AuthMode, Patient, sign_vihf, verify_vihf
from .xmlparse import parse_xml
from .xmlsig import VerifySettings


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
    return parser


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
    results = []
    for result in run(args.profile, args.trace):
        results.append(result)
        if not args.json:
            status = "ok" if result.ok else "FAILED"
            print(f"{result.name:<52} {status:<6} {result.duration_ms:9.1f} ms  {result.detail}")
            sys.stdout.flush()
    failed = [result for result in results if not result.ok]
    if args.json:
        summary = {"passed": len(results) - len(failed), "failed": len(failed)}
        print(json.dumps({"steps": [asdict(r) for r in results], "summary": summary}, indent=2))
    else:
        print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    return 0 if results and not failed else 1


def _stub(args: argparse.Namespace) -> int:
    logging.getLogger("transport.stubs").setLevel(logging.INFO)
    pki = examplepki.load(args.pki or example_pki_directory())
    try:
        stubs = Stubs(pki=pki, data_dir=args.data, host=args.host, port=args.port)
    except OSError as error:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {error.strerror}") from None
    stubs.start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print(f"cisis-transport stub listening on {stubs.url}")
    for name in SERVICES:
        print(f"  {name:<17} {stubs.url}{service_path(name)}")
    print(f"state in {stubs.context.data_dir}{'' if args.data else ' (temporary)'}")
    print(f"clients need a certificate from {pki.ca_bundle}; Ctrl-C stops")
    sys.stdout.flush()
    try:
        stopped.wait()
    except KeyboardInterrupt:
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
