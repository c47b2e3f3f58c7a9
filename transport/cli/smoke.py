"""``cisis-transport smoke``: the whole scenario, one line per step (see :mod:`transport.smoke`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from transport.cli.common import (
    INS_OID_HELP,
    add_trace_option,
    patient,
    print_json,
    tracer,
    wants_json,
)


def add_arguments(smoke: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Declare ``smoke``'s options on its parser (made by
    :func:`transport.cli.parser`); ``common``: the options every subcommand accepts."""
    smoke.add_argument("--profile", type=Path, help="profile (TOML); default: bundled stubs")
    add_trace_option(smoke)
    smoke.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="IDS",
        help="run only these steps (id prefixes, comma-separated or repeated), with the steps "
        "they need",
    )
    smoke.add_argument(
        "--skip", action="append", default=[], metavar="IDS", help="skip these steps (prefix)"
    )
    smoke.add_argument(
        "--allow-writes", action="store_true", help="with --profile: run the steps that write"
    )
    smoke.add_argument("--ins", help="with --profile: the test patient's INS")
    smoke.add_argument("--ins-oid", help=INS_OID_HELP)


def run(args: argparse.Namespace) -> int:
    """Run the scenario; exit 0 when a step passed and none failed, 1 otherwise."""
    from transport import smoke as scenario
    from transport.smoke import Status

    chosen = patient(args.ins, args.ins_oid) if args.ins else None
    selection = scenario.select(_ids(args.only), _ids(args.skip), allow_writes=args.allow_writes)
    as_json = wants_json(args)
    results = []
    steps = scenario.run(args.profile, tracer(args.trace), selection=selection, patient=chosen)
    for result in steps:
        results.append(result)
        if not as_json:
            label = {Status.OK: "ok", Status.FAILED: "FAILED", Status.SKIPPED: "skipped"}
            print(
                f"{result.name:<62} {label[result.status]:<7} {result.duration_ms:8.1f} ms"
                f"  {result.detail}"
            )
            sys.stdout.flush()
    failed = [result for result in results if result.status is Status.FAILED]
    counts = {status.value: sum(r.status is status for r in results) for status in Status}
    if as_json:
        shown = [{**dataclasses.asdict(r), "status": r.status.value} for r in results]
        print_json({"steps": shown, "summary": counts, "added": list(selection.added)})
    else:
        if selection.added:
            print(f"\nalso ran the steps the selected ones need: {', '.join(selection.added)}")
        print(f"\n{counts['ok']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
        for result in failed:
            print(f"failed: {result.name}: {result.detail}")
    return 0 if counts["ok"] and not failed else 1


def _ids(values: Sequence[str]) -> tuple[str, ...]:
    """Step ids given repeated or comma-separated."""
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())
