"""``cisis-transport insi search|vitale|batch``: INS searches with INSi (CNAM téléservice
*INSi*, ``RECSANSVITALE`` and ``RECVITALE``), one by one or a CSV file in batch."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

from transport.cli.common import (
    add_trace_option,
    output_target,
    print_json,
    row_progress,
    tracer,
    wants_json,
)

if TYPE_CHECKING:
    from transport.teleservices.insi import Ins, InsiClient, SearchOutcome

log = logging.getLogger("transport.cli.insi")

ACCESS_MODES = ("certificate", "card")
"""The téléservices' access modes ``--mode`` accepts (values of
:class:`transport.teleservices.client.AccessMode`)."""


def add_arguments(insi: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    """Declare ``insi``'s searches on its parser (made by
    :func:`transport.cli.parser`); ``common``: the options every subcommand accepts."""
    actions = insi.add_subparsers(dest="insi_command", required=True)
    search = actions.add_parser("search", parents=[common], help="search an INS by traits")
    search.add_argument("--nom", required=True, help="birth name")
    search.add_argument("--prenom", action="append", required=True, help="a first name (repeat)")
    search.add_argument("--sexe", required=True, type=str.upper, choices=["M", "F"])
    search.add_argument("--naissance", required=True, help="birth date YYYY-MM-DD")
    search.add_argument("--lieu", help="birthplace: INSEE COG code")
    vitale = actions.add_parser(
        "vitale", parents=[common], help="search an INS with the data of a Vitale card"
    )
    vitale.add_argument("--nir", help="the beneficiary's NIR (13 characters, or 15 with the key)")
    vitale.add_argument("--nir-od", help="the insured person's NIR (MatriculeOD)")
    vitale.add_argument("--naissance", required=True, help="birth date YYYY-MM-DD")
    vitale.add_argument("--nom", help="birth name")
    vitale.add_argument("--rang", help="rank of birth")
    batch = actions.add_parser(
        "batch", parents=[common], help="search every row of a CSV file (resumable)"
    )
    batch.add_argument(
        "input",
        type=Path,
        help="CSV: nom, prenoms, sexe, naissance[, lieu, id]; Vitale rows: nir/nir_ouvrant[, rang]",
    )
    batch.add_argument("--out", type=Path, required=True, help="output CSV (appended, resumed)")
    batch.add_argument("--concurrency", type=int, default=4, help="calls at once (default 4)")
    batch.add_argument("--rate", type=float, help="at most R rows per second")
    batch.add_argument(
        "--max-transport-failures",
        type=int,
        default=5,
        metavar="N",
        help="stop after N transport failures in a row (default 5)",
    )
    for command in (search, vitale, batch):
        command.add_argument("--profile", type=Path, help="profile (TOML); default: example PKI")
        command.add_argument("--endpoint", help="the téléservices URL (…/lps)")
        command.add_argument(
            "--mode",
            choices=ACCESS_MODES,
            help="certificate (INSI-AUTO, the default) or card (assertion PS)",
        )
        add_trace_option(command)


def run(args: argparse.Namespace) -> int:
    """Run one ``insi`` command."""
    if args.insi_command == "batch":
        return _batch(args)
    return _search(args)


def _client(args: argparse.Namespace) -> InsiClient:
    """The INSi client of the command: the profile's, or the example PKI's (``insi-auto`` in
    certificate mode, the CPS-like card credentials in card mode)."""
    from transport import examplepki
    from transport.config import (
        CredentialSpec,
        check_endpoint,
        example_pki_directory,
        example_profile,
        load_profile,
    )
    from transport.teleservices.client import AccessMode, TeleservicesClient
    from transport.teleservices.insi import InsiClient
    from transport.vihf import AuthMode

    if args.endpoint is not None:
        check_endpoint(args.endpoint, "--endpoint")
    mode = AccessMode(args.mode or AccessMode.CERTIFICATE)
    if args.profile is not None:
        profile = load_profile(args.profile)
    else:
        pki = examplepki.load(example_pki_directory())
        card = mode is AccessMode.CARD
        profile = example_profile(pki, AuthMode.DIRECTE if card else AuthMode.INDIRECTE)
        insi = CredentialSpec(pkcs12=pki.p12("insi-auto"), password=pki.password)
        profile = replace(profile, insi_credential=insi)
    return InsiClient(
        TeleservicesClient.from_profile(profile, mode, url=args.endpoint, tracer=tracer(args.trace))
    )


def _search(args: argparse.Namespace) -> int:
    # Checked before anything is loaded or sent: a wrong key is the user's typo, not a query.
    if args.insi_command == "vitale":
        for option, value in (("--nir", args.nir), ("--nir-od", args.nir_od)):
            _check_nir_key(value, option)
    client = _client(args)
    log.info("INSi %s: sending", args.insi_command)
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
    log.info(
        "INSi %s: CR %s after %d call(s)", args.insi_command, outcome.code, len(outcome.searches)
    )
    if wants_json(args):
        print_json(_outcome_report(outcome))
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


def _check_nir_key(value: str | None, option: str) -> None:
    """ValidationError when a 15-character NIR's key does not match its 13 characters (the
    INS key rule: 97 minus the number modulo 97, Corsica's 2A/2B counted as 19/18)."""
    from transport.errors import ValidationError
    from transport.vihf import ins_key

    text = "".join((value or "").split()).upper()
    if len(text) != 15:
        return  # other lengths: the INSi client names the rule
    if not text[:13].replace("A", "0").replace("B", "0").isdigit() or not text[13:].isdigit():
        raise ValidationError(option, "a NIR is 13 characters and a 2-digit key")
    if ins_key(text[:13]) != text[13:]:
        raise ValidationError(option, "the NIR's key does not match its 13 characters")


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


def _batch(args: argparse.Namespace) -> int:
    from transport.teleservices.insi_batch import count_rows, run_batch

    output = output_target(args.out, "--out", force=True)  # appended to: resuming is its point
    total = count_rows(args.input)
    client = _client(args)
    log.info("INSi batch: %d row(s) from %s", total, args.input)
    with client.teleservices:
        summary = run_batch(
            args.input,
            output,
            client.search_outcome,
            concurrency=args.concurrency,
            rate=args.rate,
            progress=row_progress(total),
            max_transport_failures=args.max_transport_failures,
        )
    if wants_json(args):
        print_json(asdict(summary))
    else:
        print(
            f"{summary.total} rows: {summary.skipped} answered before, {summary.answered} now, "
            f"{summary.unanswered} left (run again to send them)"
        )
        print(f"in {summary.seconds:.1f} s, {summary.rate:.1f} rows/s")
        for code, count in summary.by_cr.items():
            print(f"  CR {code}: {count}")
        for code, count in summary.by_error.items():
            print(f"  error {code}: {count}")
        if summary.temporary_refusals:
            print(f"  temporary refusals (slowed down, sent again): {summary.temporary_refusals}")
    if summary.transport_error:
        print(f"cisis-transport: transport failure: {summary.transport_error}", file=sys.stderr)
    if summary.stopped:
        print(
            f"cisis-transport: stopped after {args.max_transport_failures} transport failures "
            "in a row; check the service, then run again",
            file=sys.stderr,
        )
    # Unanswered rows failed on the way (transport): exit 3, as for any transport failure.
    return 3 if summary.unanswered else 0
