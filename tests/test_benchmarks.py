"""The benchmarks run (tiny counts, no thresholds): each prints its table and writes its figures,
every one with a positive median beside a positive baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
        ("retrieve throughput", "raw GET"),
        ("retrieve peak RSS growth", "raw GET"),
    ]
