"""``cisis-transport smoke``: the whole scenario against the bundled stubs with no configuration,
its JSON, step selection, and a profile run with and without writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli_insi import INSI_PROFILE
from tests.test_stub_dmp import new_patient
from transport.cli import main

TRANSACTIONS = [
    "insi-cr00", "insi-cr01", "insi-cr02", "td0.2-unknown", "td1.1", "td0.2", "td1.3a",
    "td1.3b", "td0.3", "td1.6", "td0.4", "td2.1", "td3.1", "td3.2", "td3.3a", "td3.3c",
    "td3.3d", "td1.4", "td1.2",
]  # fmt: skip
WRITES = {"td1.1", "td1.3b", "td0.3", "td2.1", "td3.3a", "td3.3c", "td3.3d", "td1.4", "td1.2"}


def test_smoke_without_configuration_runs_every_step_in_both_modes(capsys, tmp_path):
    assert main(["smoke", "--json", "--trace", str(tmp_path / "trace")]) == 0
    report = json.loads(capsys.readouterr().out)
    steps = report["steps"]
    assert [step["id"] for step in steps] == [
        "pki", "stubs", *TRANSACTIONS, *TRANSACTIONS, "refusal"
    ]  # fmt: skip
    assert {step["status"] for step in steps} == {"ok"}
    modes = [step["name"].rpartition("[")[2] for step in steps[2:-1]]
    assert modes == ["INDIRECTE]"] * len(TRANSACTIONS) + ["DIRECTE]"] * len(TRANSACTIONS)
    assert report["summary"] == {"ok": len(steps), "failed": 0, "skipped": 0}
    assert "DMPInvalidCertificate" in steps[-1]["detail"]
    assert "compared exactly" in next(s["detail"] for s in steps if s["id"] == "td3.2")
    traces = sorted(path.name for path in (tmp_path / "trace").iterdir())
    assert any(name.endswith("ProvideAndRegisterDocumentSet-b-request.mime") for name in traces)
    assert any(name.endswith("RetrieveDocumentSet-response.xml") for name in traces)
    assert any("rechercherInsAvecTraitsIdentite" in name for name in traces)


def test_smoke_prints_one_line_per_step_and_a_summary(capsys):
    assert main(["smoke", "--only", "td0.2-unknown,refusal", "--skip", "insi"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[:-2]] == [
        "example", "stubs", "TD0.2", "TD0.2", "refusal:"
    ]  # fmt: skip
    assert all(" FAILED " not in line for line in lines)
    assert lines[-1] == "5 passed, 0 failed, 0 skipped"


def test_a_read_without_its_dmp_fails_and_says_what_to_do(capsys):
    assert main(["smoke", "--only", "td0.2", "--skip", "td0.2-unknown"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAILED") == 2 and "step td1.1" in out
    assert "failed: TD0.2 test existence and my authorisation [DIRECTE]" in out


@pytest.fixture
def profile(pki, stubs, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TEST_P12_PASSWORD", pki.password)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    text = INSI_PROFILE.format(pki=pki.directory).replace(
        'dmp = "https://127.0.0.1:1/si-dmp-server/v2/services"',
        f'dmp = "{stubs.dmp_base_url}"\ntlsi = "{stubs.teleservices_url}"',
    )
    path = tmp_path / "profile.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_smoke_with_a_profile_writes_only_when_allowed(profile, capsys):
    ins = new_patient().ins
    argv = ["smoke", "--profile", str(profile), "--ins", ins, "--json"]
    assert main([*argv, "--allow-writes"]) == 0
    first = json.loads(capsys.readouterr().out)["steps"]
    assert [step["id"] for step in first] == TRANSACTIONS
    assert {step["status"] for step in first} == {"ok"}

    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)["steps"]
    skipped = {step["id"]: step["detail"] for step in second if step["status"] == "skipped"}
    # The first run archived and deleted its documents: nothing approved is left to retrieve.
    assert skipped.pop("td3.2") == "no document to retrieve"
    assert set(skipped) == WRITES
    assert all(step["status"] == "ok" for step in second if step["id"] not in {*skipped, "td3.2"})
    assert "--allow-writes" in next(s["detail"] for s in second if s["id"] == "td1.1")


def test_a_failing_step_makes_smoke_fail_and_names_it(profile, monkeypatch, capsys):
    monkeypatch.delenv("TEST_P12_PASSWORD")
    code = main(["smoke", "--profile", str(profile), "--ins", new_patient().ins, "--only", "td0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed: TD0.2 test existence (a patient with no DMP) [INDIRECTE]" in out
    assert "TEST_P12_PASSWORD" in out


def test_a_profile_without_its_dmp_patient_fails_the_reads(profile, capsys):
    code = main(
        ["smoke", "--profile", str(profile), "--ins", new_patient().ins, "--only", "td1.3a"]
    )
    out = capsys.readouterr().out
    assert code == 1 and "DMPNotFound" in out and "TD1.1" in out
