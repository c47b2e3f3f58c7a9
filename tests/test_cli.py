"""The command line as a user runs it: smoke, vihf build and verify, profiles, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from transport.cli import main

PROFILE = """
[identity]
mode = "INDIRECTE"
subject_id = "899700000001"
user_name = "MEDECIN0001 PAUL"
structure_id = "499900000001001"
sector = "SA07"
roles = [
  {{ code = "10", system = "1.2.250.1.71.1.2.7", display = "Médecin" }},
  {{ code = "SM26", system = "1.2.250.1.71.4.2.5", display = "Médecine Générale (SM)" }},
]

[lps]
name = "MonLogiciel"
version = "4.2"
homologation_id = "HOMOLOGATION-TEST"

[credentials.tls]
pkcs12 = "{pki}/org-auth.p12"
password_env = "TEST_P12_PASSWORD"

[credentials.signature]
pkcs12 = "{pki}/org-sign.p12"
password_env = "TEST_P12_PASSWORD"

[tls]
ca_bundle = "{pki}/ca-bundle.pem"

[endpoints]
dmp = "https://127.0.0.1:1/si-dmp-server/v2/services"
"""


@pytest.fixture
def profile_file(pki, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TEST_P12_PASSWORD", pki.password)
    path = tmp_path / "profile.toml"
    path.write_text(PROFILE.format(pki=pki.directory), encoding="utf-8")
    return path


def test_vihf_build_then_verify(profile_file, pki, tmp_path, capsys):
    out = tmp_path / "vihf.xml"
    code = main(
        [
            *("vihf", "build", "--profile", str(profile_file), "--ins", "279035121518989"),
            *("--ins-oid", "1.2.250.1.213.1.4.10", "--out", str(out)),
        ]
    )
    assert code == 0
    assert main(["vihf", "verify", str(out), "--ca", str(pki.ca_bundle), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True and report["mode"] == "INDIRECTE"
    assert "279035121518989" not in json.dumps(report)
    tampered = out.read_bytes().replace(b"MonLogiciel", b"AutreLogiciel")
    out.write_bytes(tampered)
    assert main(["vihf", "verify", str(out), "--ca", str(pki.ca_bundle)]) == 1
    assert "refused (invalid-signature)" in capsys.readouterr().out


def test_vihf_verify_refuses_an_untrusted_ca(profile_file, tmp_path, capsys):
    from transport import examplepki

    other = examplepki.generate(tmp_path / "other")
    out = tmp_path / "vihf.xml"
    assert main(["vihf", "build", "--profile", str(profile_file), "--out", str(out)]) == 0
    assert main(["vihf", "verify", str(out), "--ca", str(other.ca_bundle)]) == 1
    assert "untrusted" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"not xml at all", b'<!DOCTYPE a [<!ENTITY x "y">]><a/>'])
def test_vihf_verify_of_a_file_that_is_not_xml_is_bad_input(pki, tmp_path, capsys, content):
    path = tmp_path / "not-a-vihf.xml"
    path.write_bytes(content)
    assert main(["vihf", "verify", str(path), "--ca", str(pki.ca_bundle)]) == 2
    err = capsys.readouterr().err
    assert "XML" in err and "Traceback" not in err


def test_bad_profile_is_a_usage_error(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[identity]\nmode = "SOMETIMES"\n', encoding="utf-8")
    assert main(["vihf", "build", "--profile", str(path)]) == 2
    assert "bad.toml" in capsys.readouterr().err


def test_password_in_a_profile_is_refused(profile_file, capsys):
    text = profile_file.read_text(encoding="utf-8")
    profile_file.write_text(
        text.replace('password_env = "TEST_P12_PASSWORD"', 'password = "secret"', 1),
        encoding="utf-8",
    )
    assert main(["vihf", "build", "--profile", str(profile_file)]) == 2
    assert "password_env" in capsys.readouterr().err


def test_wrong_password_is_a_credential_error(profile_file, monkeypatch, capsys):
    monkeypatch.setenv("TEST_P12_PASSWORD", "wrong")
    assert main(["vihf", "build", "--profile", str(profile_file)]) == 3
    err = capsys.readouterr().err
    assert "org-sign.p12" in err and "wrong password" in err


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "transport", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("cisis-transport ")


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_byte_progress_draws_a_bar_with_rate_on_a_terminal_only(monkeypatch):
    from transport.cli.common import PROGRESS_THRESHOLD, byte_progress

    total = 4 * PROGRESS_THRESHOLD
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert byte_progress("received", total) is None  # not a terminal: nothing drawn
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert byte_progress("received", PROGRESS_THRESHOLD - 1) is None  # too small to show
    show = byte_progress("received", total)
    assert show is not None
    show(0, None)
    assert terminal.getvalue() == ""  # no empty "0.0 MB" bar before the first byte
    show(total // 2, total)
    show(total, total)
    drawn = terminal.getvalue()
    assert "received" in drawn and "100%" in drawn and "B/s" in drawn


def test_row_progress_only_on_a_terminal(monkeypatch):
    from transport.cli.common import row_progress

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert row_progress(10) is None
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    show = row_progress(10)
    assert show is not None
    for done in range(1, 11):
        show(done, 10)
    assert "10/10" in terminal.getvalue() and "row/s" in terminal.getvalue()
