"""README.md runs as written: every ``sh`` and ``python`` block, in order, in a temporary folder
holding a copy of ``certs-example/`` (as a fresh clone has it), against the bundled stubs.

Conventions the README states: a block whose first line is ``# not run by the README test: …``
is not run (and there are few); the block that starts ``cisis-transport stub`` runs in the
background until the end, on a free port instead of 8443 (every ``8443`` is replaced, in the
blocks and the copied profile, so that parallel runs do not collide).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOT_RUN = "# not run by the README test:"
MAX_NOT_RUN = 2
"""Blocks allowed the marker: installing the package, and the test suite itself."""
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int

    @property
    def runs(self) -> bool:
        return not self.code.startswith(NOT_RUN)

    @property
    def is_stub(self) -> bool:
        return self.code.lstrip().startswith("cisis-transport stub")


def blocks(text: str) -> list[Block]:
    """The ``sh``/``python`` blocks of ``text``, in order."""
    return [
        Block(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1)
        for match in _FENCE.finditer(text)
        if match.group(1) in {"sh", "bash", "python"}
    ]


def test_the_readme_marks_few_blocks_as_not_run() -> None:
    found = blocks(README.read_text(encoding="utf-8"))
    assert len(found) >= 10
    skipped = [block for block in found if not block.runs]
    assert len(skipped) <= MAX_NOT_RUN, [block.line for block in skipped]
    assert all(block.code.splitlines()[0].removeprefix(NOT_RUN).strip() for block in skipped)
    assert sum(block.is_stub for block in found) == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    """The folder the blocks run in, their environment, and the port replacing 8443."""
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copytree(ROOT / "certs-example", folder / "certs-example")
    port = str(_free_port())
    profile = folder / "certs-example" / "profile.example.toml"
    profile.write_text(profile.read_text(encoding="utf-8").replace("8443", port), "utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CISIS_", "PYTEST_", "XDG_"))
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return folder, env, port


def test_every_block_of_the_readme_runs(workspace) -> None:
    folder, env, port = workspace
    if shutil.which("xmlsec1") is None:
        pytest.skip("xmlsec1 is not installed (Debian package xmlsec1); CI installs it")
    stub: subprocess.Popen[str] | None = None
    try:
        for number, block in enumerate(blocks(README.read_text(encoding="utf-8"))):
            if not block.runs:
                continue
            code = block.code.replace("8443", port)
            if block.is_stub:
                stub = _start_stub(code, folder, env)
                continue
            # The environment a reader keeps from one block to the next: its exports.
            for name, value in re.findall(r"^export (\w+)=(\S+)", code, re.MULTILINE):
                env[name] = value
            result = _run(block, code, folder, env, number)
            where = f"README.md line {block.line}"
            assert "Traceback" not in result.stderr, f"{where}:\n{result.stderr}"
            assert result.returncode == 0, f"{where}:\n{result.stdout}\n{result.stderr}"
    finally:
        if stub is not None:
            stub.send_signal(signal.SIGINT)
            out, _ = stub.communicate(timeout=60)
    assert stub is not None and stub.returncode == 0 and "stopped" in out


def _run(
    block: Block, code: str, folder: Path, env: dict[str, str], number: int
) -> subprocess.CompletedProcess[str]:
    if block.language == "python":
        script = folder / f"block-{number}.py"
        script.write_text(code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


def _start_stub(code: str, folder: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start the stub block in the background; return once it says it listens."""
    process = subprocess.Popen(
        ["bash", "-c", f"exec {code.strip().splitlines()[0].split('#')[0]}"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert "listening on" in first, first
    return process


def test_a_test_without_the_official_material_names_the_variable_to_set(tmp_path) -> None:
    env = {**os.environ, "CISIS_REFERENCE_DIR": str(tmp_path / "absent")}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"),
            "tests/test_hl7v3.py::test_schema_validation_can_fail",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "1 skipped" in result.stdout, result.stdout
    assert str(tmp_path / "absent") in result.stdout
    assert "set CISIS_REFERENCE_DIR" in result.stdout
    assert "CISIS_REFERENCE_DIR" in README.read_text(encoding="utf-8")
