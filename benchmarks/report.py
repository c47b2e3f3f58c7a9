"""Run the benchmarks and write their figures as the "Performance" section of README.md.

Run from the project root: ``python benchmarks/report.py`` (every benchmark at its default counts,
several minutes), ``--quick`` for tiny counts (what the test suite runs; the figures then mean
little), ``--readme FILE`` to write another file. The section is what lies between the two markers
:data:`START` and :data:`END` in the file; everything else is left byte for byte. Each figure is
shown beside its baseline (measured interleaved in the same run), the ratio, and the target of
issue 15; the machine the run was made on heads the section.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from figures import machine

START = "<!-- performance:start (written by benchmarks/report.py; edit it there) -->"
END = "<!-- performance:end -->"
BENCHMARKS = ("client.py", "insi_batch.py", "dmp_transfer.py")


@dataclass(frozen=True)
class Target:
    """What a figure should reach: ``text`` as shown, and whether a measured figure meets it."""

    text: str
    ratio_at_most: float | None = None
    ratio_at_least: float | None = None
    value_at_most: float | None = None

    def met(self, value: float, ratio: float | None) -> bool:
        if self.value_at_most is not None:
            return value <= self.value_at_most
        if ratio is None:
            return False
        if self.ratio_at_most is not None:
            return ratio <= self.ratio_at_most
        return self.ratio_at_least is not None and ratio >= self.ratio_at_least


TARGETS = {
    ("TD0.2 client CPU, in-process", "floor"): Target("≤ 3× the floor", ratio_at_most=3),
    ("TD0.2 client CPU, in-process", "zeep + signxml"): Target(
        "≤ 0.5× (twice as fast)", ratio_at_most=0.5
    ),
    ("TD0.2 calls/s, 1 thread(s)", "raw POST"): Target("≥ 0.5× raw", ratio_at_least=0.5),
    ("TD0.2 calls/s, 8 thread(s)", "raw POST"): Target("≥ 0.5× raw", ratio_at_least=0.5),
    ("first TD0.2 in a new process", "bare imports"): Target("≤ 1.5×", ratio_at_most=1.5),
    ("cisis-transport --help", "python -c pass"): Target("≤ 5×", ratio_at_most=5),
    ("INSi batch rows/s, concurrency 8", "sequential"): Target("≥ 6×", ratio_at_least=6),
    ("INSi batch CPU per row", "raw POST"): Target("≤ 1.6 ms (half of 3.1–3.2)", value_at_most=1.6),
    ("submit throughput", "raw POST"): Target("≥ 0.5× raw", ratio_at_least=0.5),
    ("retrieve throughput", "raw GET"): Target("≥ 0.5× raw", ratio_at_least=0.5),
    ("submit peak RSS growth", "raw POST"): Target("≤ +64 MiB", value_at_most=64),
    ("retrieve peak RSS growth", "raw GET"): Target("≤ +64 MiB", value_at_most=64),
}


def run(script: str, quick: bool, scratch: Path) -> dict:
    """One benchmark's JSON document (its header and figures)."""
    out = scratch / f"{Path(script).stem}.json"
    command = [sys.executable, str(Path(__file__).parent / script), "--json", str(out)]
    subprocess.run([*command, "--quick"] if quick else command, check=True)
    return json.loads(out.read_text(encoding="utf-8"))


def section(results: list[dict], quick: bool) -> str:
    """The Markdown of the section (without its markers)."""
    when = time.strftime("%Y-%m-%d", time.gmtime())
    intro = (
        f"Measured {when} on {machine()}, a machine shared with other work, by "
        f"`python benchmarks/report.py`{' --quick (tiny counts)' if quick else ''}, which runs "
        "the benchmarks of [benchmarks/README.md](benchmarks/README.md) and writes this section. "
        "Each figure is a median beside its baseline measured interleaved in the same run; the "
        "ratio is ours over the baseline (for a time or a size, below 1 is better; for a rate, "
        "above 1 is better)."
    )
    lines = ["## Performance", "", textwrap.fill(intro, 100, break_on_hyphens=False), ""]
    for result in results:
        lines += [
            f"**{result['header']}**",
            "",
            "| figure | ours | spread | baseline | ratio | target | met |",
            "|---|---:|---:|---|---:|---|:-:|",
        ]
        for item in result["figures"]:
            target = TARGETS.get((item["name"], item["baseline_name"]))
            ratio = item["ratio"]
            low, high = item["subject_spread"]
            shown = f"{ratio:.2f}×" if ratio is not None else "–"
            met = "–" if target is None else "yes" if target.met(item["subject"], ratio) else "no"
            lines.append(
                f"| {item['name']} ({item['unit']}) | {item['subject']:.2f} | "
                f"{low:.2f}–{high:.2f} | {item['baseline_name']} {item['baseline']:.2f} | "
                f"{shown} | {target.text if target else '–'} | {met} |"
            )
        lines.append("")
    return "\n".join(lines)


def replace_section(text: str, body: str) -> str:
    """``text`` with what lies between the markers replaced by ``body``; ValueError without
    both markers, in order."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the file has no {START!r} … {END!r} section")
    return f"{text[: start + len(START)]}\n{body}\n{text[end:]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (CI's smoke run)")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="file to write")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    replace_section(text, "")  # no benchmark runs for a file it could not write
    with tempfile.TemporaryDirectory(prefix="cisis-report-") as scratch:
        results = [run(script, args.quick, Path(scratch)) for script in BENCHMARKS]
    args.readme.write_text(replace_section(text, section(results, args.quick)), encoding="utf-8")
    print(f"wrote the performance section of {args.readme}")


if __name__ == "__main__":
    main()
