"""A benchmark figure beside its baseline, and how the benchmarks print and save them."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One measured figure: the subject's and the baseline's medians (in ``unit``) and their
    spreads (min, max). ``ratio`` is always subject over baseline: for a time, above 1 is slower
    than the baseline; for a rate, below 1 is slower."""

    name: str
    unit: str
    subject: float
    subject_spread: tuple[float, float]
    baseline_name: str
    baseline: float
    baseline_spread: tuple[float, float]

    @property
    def ratio(self) -> float | None:
        """Subject over baseline; None for a baseline of 0 (no memory growth, say)."""
        return self.subject / self.baseline if self.baseline else None


def figure(
    name: str, unit: str, subject: list[float], baseline_name: str, baseline: list[float]
) -> Figure:
    return Figure(
        name,
        unit,
        statistics.median(subject),
        (min(subject), max(subject)),
        baseline_name,
        statistics.median(baseline),
        (min(baseline), max(baseline)),
    )


def print_table(figures: list[Figure], header: str) -> None:
    print(header)
    print(
        f"{'figure':<36} {'ours':>10} {'spread':>17} {'baseline':>16} {'median':>10} {'ratio':>7}"
    )
    for item in figures:
        low, high = item.subject_spread
        ratio = f"{item.ratio:.2f}x" if item.ratio is not None else "-"
        print(
            f"{item.name:<36} {item.subject:10.2f} {f'{low:.2f}–{high:.2f}':>17}"
            f" {item.baseline_name:>16} {item.baseline:10.2f} {ratio:>7}  ({item.unit})"
        )


def machine() -> str:
    """The machine and interpreter the figures were measured on."""
    return (
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs ({_cpu_model()}), "
        f"{platform.machine()}"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_json(path: Path, header: str, figures: list[Figure]) -> None:
    """The figures as one JSON document (each with its ``ratio``)."""
    document = {"header": header, "figures": [asdict(f) | {"ratio": f.ratio} for f in figures]}
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")


def per_call_cpu(action: Callable[[], object], calls: int) -> float:
    """Milliseconds of this process's CPU (every thread) per call of ``action``, after one
    warm-up call."""
    action()
    start = time.process_time()
    for _ in range(calls):
        action()
    return (time.process_time() - start) * 1000 / calls


def wall_ms(command: list[str], env: dict[str, str] | None = None) -> float:
    """Milliseconds ``command`` took to run to its end (in ``env``, default this one's)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    return (time.perf_counter() - start) * 1000


def bytecode_env(cache: Path) -> dict[str, str]:
    """This environment with bytecode caching on, the caches under ``cache``: new processes
    then load compiled modules as an installed package does (``PYTHONDONTWRITEBYTECODE`` would
    make every start compile the library from source, but not the site-packages it is compared
    with), and nothing is written beside the sources."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env
