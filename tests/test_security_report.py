"""tools/security_report.py: it runs the named tests, counts per family what they recorded, and
writes the report, saying when a test failed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "security_report.py"


SMALL_RUN = ("tests/test_hostile_servers.py", "-k", "good_certificate")


def _script():
    spec = importlib.util.spec_from_file_location("security_report", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up in sys.modules.
    sys.modules["security_report"] = module
    spec.loader.exec_module(module)
    return module


JUNIT = b"""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_faults" name="a"><properties>
<property name="faults" value="2"/><property name="full_disk" value="tmpfs"/>
</properties></testcase>
<testcase classname="tests.test_faults" name="b"><properties><property name="faults" value="3"/>
</properties><failure message="no"/></testcase>
<testcase classname="tests.test_load" name="c"><skipped message="soak"/></testcase>
</testsuite></testsuites>"""


def test_tally_counts_outcomes_and_recorded_properties(tmp_path: Path) -> None:
    report = _script()
    junit = tmp_path / "junit.xml"
    junit.write_bytes(JUNIT)
    families = report.tally(junit)
    assert families["test_faults"].outcomes == {"passed": 1, "failed": 1}
    assert families["test_faults"].recorded == {"faults": 5}
    assert families["test_faults"].notes == {"full_disk: tmpfs"}
    assert families["test_load"].outcomes == {"skipped": 1}
    text = report.render(families, 0, "python -m pytest x", 1)
    assert (
        "| Faults | `tests/test_faults.py` | 2 | 5 faults; full_disk: tmpfs | 1 failed, 1 passed |"
        in text
    )
    assert "pytest exited 1" in text


def test_fuzz_examples_are_read_from_hypothesis_statistics() -> None:
    output = "  - 60 passing, 0 failing, and 4 invalid test cases\n  - 58 passing, 2 failing, and 0"
    assert _script().fuzz_examples(output) == 120


def test_the_documented_command_writes_the_report_of_a_small_run(tmp_path: Path) -> None:
    out = tmp_path / "SECURITY.md"
    run = subprocess.run(
        [*(sys.executable, str(SCRIPT), "--out", str(out), "--"), *SMALL_RUN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    text = out.read_text(encoding="utf-8")
    assert (
        "| Client against hostile servers | `tests/test_hostile_servers.py` | 1 | — | 1 passed |"
        in text
    )
    assert "| Load | `tests/test_load.py` | 0 | — | not run |" in text
    assert "every test passed" in text
