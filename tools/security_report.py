"""Regenerate SECURITY.md from a run of the security test families.

Runs pytest on the families' modules (or on the pytest arguments given after ``--``) with a JUnit
XML report and hypothesis' statistics, then writes, per family, the test cases run and their
outcome, and the counts the tests record: hypothesis examples, load calls, faults injected::

    python tools/security_report.py                 # the whole report, SECURITY.md
    python tools/security_report.py --out report.md -- tests/test_faults.py -k full_disk

The exit code is pytest's: a report is written even when a test fails, and says so.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Family:
    """A family of tests: its module, its title, and what it proves."""

    module: str
    title: str
    proves: str


FAMILIES = (
    Family(
        "test_attacks",
        "Server-side attack corpus",
        "the stubs, over real mutual TLS, refuse XML attacks (DTD, entities, expansion, depth, "
        "size, encodings), bad envelopes and transport (SOAP versions, media types, WS-A, "
        "mustUnderstand), bad MTOM packages, the WSS4J/OpenSAML signature families, TLS outside "
        "the profile and INSi access modes; each refusal leaves every table and blob unchanged",
    ),
    Family(
        "test_fuzz_readers",
        "Fuzzing of the answer readers",
        "every answer reader and the MTOM decoder, fed generated and mutated answers, give a "
        "result or a project exception, never another; the MTOM decoder is chunking-invariant "
        "and leaves no file after a refusal; the VIHF builder and verifier round-trip",
    ),
    Family(
        "test_hostile_servers",
        "Client against hostile servers",
        "bad certificates, old TLS, cut, trickled and silent answers, HTML, non-XML, SOAP 1.1, "
        "odd faults, entity attacks, a wrong RelatesTo and lying MTOM parts end, for the DMP and "
        "INSi clients and the command line, in a typed exception within the deadline, one line "
        "on stderr with exit 1 or 3, and no partial file",
    ),
    Family(
        "test_load",
        "Load",
        "four client processes, reads and writes mixed, against one stub: every acknowledged "
        "document comes back byte-exact, every acknowledged write is there, no call fails but by "
        "design",
    ),
    Family(
        "test_faults",
        "Faults",
        "the stub killed (SIGKILL) during submissions, TD1.1 and TD0.3 writes, and a full disk: "
        "after a restart every acknowledged write is whole, nothing is half-written, no "
        "temporary file is left; a full disk gives a SOAP fault",
    ),
    Family(
        "test_secrets",
        "Secrets",
        "a full smoke run at every log level prints and logs no INS, NIR, name, birth date, "
        "password or key material; trace files are 0600 and folders 0700",
    ),
)

_EXAMPLES = re.compile(r"- (\d+) passing, (\d+) failing")


@dataclass
class Tally:
    """One family's results: test cases by outcome, and the counts its tests recorded."""

    outcomes: Counter[str] = field(default_factory=Counter)
    recorded: Counter[str] = field(default_factory=Counter)
    notes: set[str] = field(default_factory=set)


def tally(junit: Path) -> dict[str, Tally]:
    """The results of a JUnit XML report (xunit1, with properties), by test module."""
    families: dict[str, Tally] = {}
    for case in etree.parse(str(junit)).iter("testcase"):
        module = case.get("classname", "").split(".")[-1]
        found = families.setdefault(module, Tally())
        outcome = "passed"
        for tag, name in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            if case.find(tag) is not None:
                outcome = name
        found.outcomes[outcome] += 1
        for prop in case.iter("property"):
            value = prop.get("value", "")
            if value.isdigit():
                found.recorded[prop.get("name", "")] += int(value)
            else:
                found.notes.add(f"{prop.get('name')}: {value}")
    return families


def fuzz_examples(output: str) -> int:
    """The hypothesis examples run, from ``--hypothesis-show-statistics`` output."""
    return sum(int(passing) + int(failing) for passing, failing in _EXAMPLES.findall(output))


def render(families: dict[str, Tally], examples: int, command: str, code: int) -> str:
    """SECURITY.md's text."""
    rows = []
    for family in FAMILIES:
        found = families.get(family.module, Tally())
        counts = [f"{found.recorded[name]:,} {name}" for name in sorted(found.recorded)]
        if family.module == "test_fuzz_readers" and examples:
            counts.append(f"{examples:,} examples")
        counts += sorted(found.notes)
        outcome = (
            ", ".join(f"{n} {what}" for what, n in sorted(found.outcomes.items())) or "not run"
        )
        rows.append(
            f"| {family.title} | `tests/{family.module}.py` | {sum(found.outcomes.values())} "
            f"| {'; '.join(counts) or '—'} | {outcome} |"
        )
    details = "\n".join(f"- **{family.title}**: {family.proves}." for family in FAMILIES)
    verdict = "every test passed" if code == 0 else f"pytest exited {code}: see the failures"
    return f"""# Security

What the test suite proves about reliability and security, family by family, and the outcome of
the last run ({verdict}). Regenerate this file with:

    python tools/security_report.py

Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC from:

    {command}

| Family | Module | Test cases | Counts | Outcome |
|---|---|---|---|---|
{chr(10).join(rows)}

{details}

Larger runs, not in CI: `FUZZ_EXAMPLES=2000` for the fuzzing, `CISIS_SOAK_ROUNDS=1000` for a
soak run of the load test (`python -m pytest -q tests/test_load.py -k soak`).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the families' tests and write the report; pytest's exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "SECURITY.md", help="SECURITY.md")
    parser.add_argument("pytest_args", nargs="*", help="after --: what pytest runs instead")
    args = parser.parse_args(argv)
    selection = args.pytest_args or [f"tests/{family.module}.py" for family in FAMILIES]
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "junit_family=xunit1",
            f"--junitxml={junit}",
            "--hypothesis-show-statistics",
            *selection,
        ]
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        sys.stdout.write(run.stdout[-3000:])
        if not junit.exists():
            sys.stderr.write(run.stderr)
            return run.returncode or 1
        shown = " ".join(["python -m pytest", *selection])
        report = render(tally(junit), fuzz_examples(run.stdout), shown, run.returncode)
    args.out.write_text(report, encoding="utf-8")
    print(f"wrote {args.out}")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
