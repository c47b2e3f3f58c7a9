"""Secrets: a full ``smoke`` run (bundled stubs, both authentication modes) at every log level the
command line offers prints and logs no patient identifier, name or birth date, no password and no
key material; its trace files are 0600 and its trace folders 0700.

Twice per level: as a child process (the streams exactly as a user sees them), and in process
with every log record of every logger captured at DEBUG whatever the level (so a record a higher
level would hide is scanned too), the example PKI's keys and the patients the run makes known.
What the run sent is read back from its trace: every INS and NIR in the exchanges is a secret.
"""

from __future__ import annotations

import base64
import logging
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from transport import examplepki, smoke
from transport.cli import main
from transport.stubs.insi import TEST_PERSONS
from transport.vihf import ins_key

CANDIDATE_FLAGS = ("-q", "-v", "-vv")
pytestmark = pytest.mark.usefixtures("config_home")


def levels() -> list[tuple[str, ...]]:
    """The default level and each verbosity flag this command line accepts (a smoke run that
    selects no step is enough for argparse to say whether it knows the flag)."""

    def accepted(flag: str) -> bool:
        tried = subprocess.run(
            [sys.executable, "-m", "transport", flag, "smoke", "--only", "none"],
            capture_output=True,
            text=True,
            check=False,
        )
        return "unrecognized arguments" not in tried.stderr

    return [(), *((flag,) for flag in CANDIDATE_FLAGS if accepted(flag))]


LEVELS = levels()


def fixed_secrets() -> set[str]:
    """What the scenario uses by construction: its patient's names and birth date, the INSi
    searches' traits, every identity the INSi stub may answer, the PKI password."""
    person = smoke.SMOKE_PERSON
    found = {person.family, *person.given, person.birth_date, examplepki.DEFAULT_PASSWORD}
    date = person.birth_date
    found.add(f"{date[:4]}-{date[4:6]}-{date[6:]}")
    for _, _, (name, first_names, _, birth_date, place) in smoke.INSI_CASES:
        found |= {name, *first_names, birth_date, *([place] if place else [])}
    for individual in TEST_PERSONS:
        traits = individual.traits
        found |= {traits.birth_name or "", *(traits.first_names or "").split()}
        found |= {traits.birth_date or "", individual.active.value}
    return {secret for secret in found if len(secret) >= 4}


_DIGITS = re.compile(rb"(?<!\d)([12]\d{12})(\d{2})?(?!\d)")


def traced_identifiers(trace: Path) -> set[str]:
    """Every INS (15 digits, key right) and NIR (its 13 first digits) in the trace's exchanges."""
    found: set[str] = set()
    for path in trace.rglob("*"):
        if path.is_file():
            for match in _DIGITS.finditer(path.read_bytes()):
                body, key = match.group(1).decode(), match.group(2)
                if key is None or ins_key(body) == key.decode():
                    found.add(body)
                    if key is not None:
                        found.add(body + key.decode())
    return found


def key_fragments(pki: examplepki.ExamplePKI) -> set[str]:
    """Base64 runs of every private key of ``pki`` (PEM lines and the DER as one run)."""
    found: set[str] = set()
    for path in pki.directory.glob("*.key"):
        pem = path.read_bytes()
        load_pem_private_key(pem, None)  # it is a key: what is scanned is real key material
        lines = [line for line in pem.decode().splitlines() if not line.startswith("-----")]
        found |= {line for line in lines if len(line) >= 40}
        found.add("".join(lines)[40:100])
        found.add(base64.b64encode(base64.b64decode("".join(lines)))[200:260].decode())
    return found


def assert_no_secret(text: str, secrets: set[str]) -> None:
    leaked = sorted(secret for secret in secrets if secret in text)
    assert leaked == []
    assert "PRIVATE KEY" not in text
    # No long base64 run (key or certificate material) at all.
    assert re.search(r"[A-Za-z0-9+/]{64,}", text) is None


def assert_private(trace: Path) -> None:
    assert stat.S_IMODE(trace.stat().st_mode) == 0o700
    entries = list(trace.rglob("*"))
    assert any(path.is_file() for path in entries)
    for path in entries:
        expected = 0o600 if path.is_file() else 0o700
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


@pytest.mark.parametrize("flags", LEVELS, ids=lambda flags: " ".join(flags) or "default")
def test_smoke_streams_hold_no_secret(tmp_path: Path, flags: tuple[str, ...]) -> None:
    trace = tmp_path / "trace"
    run = subprocess.run(
        [sys.executable, "-m", "transport", *flags, "smoke", "--trace", str(trace)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    identifiers = traced_identifiers(trace)
    assert identifiers, "the trace shows the INS the run used"
    assert_no_secret(run.stdout + run.stderr, fixed_secrets() | identifiers)
    assert_private(trace)


class Records(logging.Handler):
    """Every record emitted, formatted with its arguments and any traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("flags", LEVELS, ids=lambda flags: " ".join(flags) or "default")
def test_smoke_logs_hold_no_secret_nor_key(
    tmp_path: Path, monkeypatch, capsys, records: Records, flags: tuple[str, ...]
) -> None:
    made: list[examplepki.ExamplePKI] = []
    keys: set[str] = set()
    generate = examplepki.generate

    def recorded(*args, **kwargs) -> examplepki.ExamplePKI:
        pki = generate(*args, **kwargs)
        made.append(pki)
        keys.update(key_fragments(pki))
        return pki

    monkeypatch.setattr(smoke.examplepki, "generate", recorded)
    trace = tmp_path / "trace"
    assert main([*flags, "smoke", "--trace", str(trace)]) == 0
    captured = capsys.readouterr()
    assert made and keys
    if any(flag.startswith("-v") for flag in flags):  # the default and -q may log nothing
        assert records.lines
    secrets = fixed_secrets() | traced_identifiers(trace) | keys
    assert_no_secret(captured.out + captured.err + "\n".join(records.lines), secrets)
    assert_private(trace)
