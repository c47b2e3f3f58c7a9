"""The benchmarks run (tiny counts, no thresholds): each prints its table and writes its figures,
every one with a positive median beside a positive baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_quick(script: str, tmp_path: Path) -> tuple[list[dict], str]:
    """Run ``benchmarks/<script> --quick``; its figures (from its JSON) and its output."""
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text(encoding="utf-8"))["figures"]
    for item in figures:
        if item["unit"] == "MiB":  # a memory growth: none at all is a fine answer
            assert item["subject"] >= 0 and item["baseline"] >= 0, item
        else:
            assert item["subject"] > 0 and item["baseline"] > 0, item
        assert item["name"] in done.stdout
    return figures, done.stdout


def test_client_benchmark_runs_quick(tmp_path: Path) -> None:
    figures, _ = run_quick("client.py", tmp_path)
    names = {item["name"] for item in figures}
    assert {"cisis-transport --help", "first TD0.2 in a new process"} <= names
    assert any(item["baseline_name"] == "zeep + signxml" for item in figures)


def test_insi_batch_benchmark_runs_quick(tmp_path: Path) -> None:
    figures, _ = run_quick("insi_batch.py", tmp_path)
    assert [item["baseline_name"] for item in figures] == ["sequential", "raw POST"]


def test_dmp_transfer_benchmark_runs_quick(tmp_path: Path) -> None:
    figures, _ = run_quick("dmp_transfer.py", tmp_path)
    assert [(item["name"], item["baseline_name"]) for item in figures] == [
        ("submit throughput", "raw POST"),
        ("submit peak RSS growth", "raw POST"),
        ("submit CPU, client + server", "raw POST"),
        ("retrieve throughput", "raw GET"),
        ("retrieve peak RSS growth", "raw GET"),
        ("retrieve CPU, client + server", "raw GET"),
    ]


def _report():
    """benchmarks/report.py as a module (the benchmarks are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["report"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_report_writes_the_section_between_its_markers_only() -> None:
    report = _report()
    results = [
        {
            "header": "TD0.2 client cost: 10 calls x 2 runs",
            "figures": [
                {
                    "name": "TD0.2 client CPU, in-process",
                    "unit": "ms",
                    "subject": 0.8,
                    "subject_spread": [0.7, 0.9],
                    "baseline_name": "floor",
                    "baseline": 0.4,
                    "baseline_spread": [0.4, 0.4],
                    "ratio": 2.0,
                },
                {
                    "name": "submit peak RSS growth",
                    "unit": "MiB",
                    "subject": 80.0,
                    "subject_spread": [80.0, 80.0],
                    "baseline_name": "raw POST",
                    "baseline": 0.0,
                    "baseline_spread": [0.0, 0.0],
                    "ratio": None,
                },
            ],
        }
    ]
    before, after = "# Title\n\nsome text\n", "\n## Next\nmore\n"
    text = f"{before}{report.START}\nold figures\n{report.END}{after}"
    written = report.replace_section(text, report.section(results, quick=True))
    assert written.startswith(before + report.START) and written.endswith(report.END + after)
    assert "old figures" not in written
    assert "| TD0.2 client CPU, in-process (ms) | 0.80 |" in written
    assert "| 2.00× | ≤ 3× the floor | yes |" in written
    assert "| – | ≤ +64 MiB | no |" in written
    assert "CPUs" in written  # the machine is described


def test_report_refuses_a_file_without_its_markers() -> None:
    report = _report()
    with pytest.raises(ValueError):
        report.replace_section("# no markers here\n", "figures")
    # The README has them, so `python benchmarks/report.py` can write it.
    report.replace_section((ROOT / "README.md").read_text(encoding="utf-8"), "")
