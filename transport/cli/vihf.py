"""``cisis-transport vihf build|verify``: sign a VIHF from a profile, or verify one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transport.cli.common import (
    INS_OID_HELP,
    MODES,
    load_profile_or_example,
    output_target,
    patient,
    print_json,
    wants_json,
    write_output,
)
from transport.errors import UsageError


def add_arguments(vihf: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Declare ``vihf build`` and ``vihf verify`` on its parser (made by
    :func:`transport.cli.parser`); ``common``: the options every subcommand accepts."""
    actions = vihf.add_subparsers(dest="vihf_command", required=True)
    build = actions.add_parser(
        "build", parents=[common], help="print a signed VIHF built from a profile"
    )
    build.add_argument("--profile", type=Path, help="profile (TOML); default: example PKI")
    build.add_argument("--mode", choices=MODES, help="the example profile's mode")
    build.add_argument("--ins", help="patient INS (15 characters); omit for no patient")
    build.add_argument("--ins-oid", help=INS_OID_HELP)
    build.add_argument("--out", type=Path, help="write to this file instead of stdout")
    build.add_argument("--force", action="store_true", help="replace an existing --out file")

    verify = actions.add_parser(
        "verify", parents=[common], help="verify a signed VIHF (exit 0 valid, 1 refused)"
    )
    verify.add_argument("file", type=Path, help="the assertion (or an envelope holding it)")
    verify.add_argument("--ca", type=Path, required=True, help="PEM bundle of trusted CAs")
    verify.add_argument("--allow-sha1", action="store_true", help="accept RSA-SHA1 signatures")
    verify.add_argument(
        "--clock-skew", type=_seconds, default=300.0, help="seconds allowed (default 300)"
    )
    verify.add_argument(
        "--max-age", type=_seconds, help="refuse assertions issued longer ago (seconds)"
    )


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError("expected a finite number of seconds, 0 or more")
    return seconds


def run(args: argparse.Namespace) -> int:
    """Run ``vihf build`` or ``vihf verify``."""
    if args.vihf_command == "build":
        return _build(args)
    return _verify(args)


def _build(args: argparse.Namespace) -> int:
    from lxml import etree

    from transport.credentials import Purpose
    from transport.vihf import sign_vihf

    target = output_target(args.out, "--out", force=args.force) if args.out else None
    profile = load_profile_or_example(args.profile, args.mode)
    chosen = patient(args.ins, args.ins_oid) if args.ins else None
    signature = profile.signature_credential.load(Purpose.SIGNATURE)
    assertion = sign_vihf(
        profile.identity.with_patient(chosen), signature.signer, options=profile.vihf_options
    )
    data = etree.tostring(assertion, xml_declaration=True, encoding="utf-8")
    if target is not None:
        write_output(target, data)
        if wants_json(args):
            print_json({"written": str(target), "bytes": len(data)})
    elif wants_json(args):
        print_json({"assertion": data.decode("utf-8")})
    else:
        sys.stdout.buffer.write(data + b"\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from transport.errors import MalformedXMLError, SignatureError
    from transport.vihf import SAML_NS, verify_vihf
    from transport.xml import parse_xml
    from transport.xmlsig import VerifySettings

    data = _read(args.file, "FILE")
    _check_bundle(args.ca)
    try:
        document = parse_xml(data)
    except MalformedXMLError as error:
        raise UsageError(
            f"{args.file}: {error.message}",
            hint="give the assertion, or the SOAP envelope holding it",
        ) from None
    assertions = document.xpath(
        "descendant-or-self::saml2:Assertion",
        namespaces={"saml2": SAML_NS},
    )
    settings = VerifySettings(
        args.ca, clock_skew=timedelta(seconds=args.clock_skew), allow_sha1=args.allow_sha1
    )
    # 0 is an age like any other (refuse anything not issued now), not "no limit".
    max_age = timedelta(seconds=args.max_age) if args.max_age is not None else None
    try:
        if len(assertions) != 1:
            raise SignatureError(
                "malformed", f"expected one SAML assertion, found {len(assertions)}"
            )
        verified = verify_vihf(assertions[0], settings, max_age=max_age)
    except (SignatureError, UsageError) as error:
        reason = getattr(error, "reason", "invalid")
        if wants_json(args):
            print_json({"valid": False, "reason": reason, "message": error.message})
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
    if wants_json(args):
        print_json(report)
    else:
        print(f"valid: {report['mode']} VIHF {report['assertion_id']} signed by {report['signer']}")
    return 0


def _check_bundle(path: Path) -> None:
    """UsageError unless ``--ca`` names a readable PEM file of certificates (RFC 7468): a bad
    bundle is the caller's input, not a refused assertion."""
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(_read(path, "--ca"))
    except ValueError:
        raise UsageError(
            f"--ca {path}: not a PEM file of certificates", hint="give the CAs' PEM bundle"
        ) from None


def _read(path: Path, option: str) -> bytes:
    """The bytes of a file the user named, or UsageError naming it (exit 2, not a refusal)."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder", hint="name a file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot read: {error.strerror}") from None
