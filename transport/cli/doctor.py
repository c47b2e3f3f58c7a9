"""``cisis-transport doctor``: check a profile before calling any service."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from transport.cli.common import print_json, wants_json


def add_arguments(doctor: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Declare ``doctor``'s options on its parser (made by
    :func:`transport.cli.parser`); ``common``: the options every subcommand accepts."""
    doctor.add_argument("--profile", type=Path, help="profile (TOML); default: example PKI")
    doctor.add_argument("--endpoint", help="check this URL instead of the profile's endpoints")


def run(args: argparse.Namespace) -> int:
    """Run the checks; exit 0 when none failed (warnings allowed), 1 otherwise."""
    from transport import examplepki
    from transport.config import (
        CredentialSpec,
        check_endpoint,
        example_pki_directory,
        example_profile,
        load_profile,
    )
    from transport.doctor import Report, Status, run_checks

    note = None
    if args.endpoint is not None:
        check_endpoint(args.endpoint, "--endpoint")
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
    if wants_json(args):
        print_json({**report.as_dict(), "note": note})
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
