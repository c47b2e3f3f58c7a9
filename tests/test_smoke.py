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
    "td1.3b", "td0.3", "td1.6", "td0.4", "td2.1", "td2.1r", "td3.1", "td3.2", "td3.3a", "td3.3c",
    "td3.3d", "td1.4", "td1.2",
]  # fmt: skip
DEAD_DMP = "https://127.0.0.1:1/si-dmp-server/v2/services"
WRITES = {
    "td1.1", "td1.3b", "td0.3", "td2.1", "td2.1r", "td3.3a", "td3.3c", "td3.3d", "td1.4", "td1.2"
}  # fmt: skip


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
    details = {step["id"]: step["detail"] for step in steps}
    assert details["td2.1"].startswith("2 documents") and "RPLC" in details["td2.1r"]
    # TD3.1 sees the replacement (old deprecated, new approved), TD3.2 compares its bytes.
    assert details["td3.1"].endswith("the replaced one deprecated")
    assert "2 compared exactly" in details["td3.2"]
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


def test_a_step_skipped_without_the_step_it_needs_says_which(capsys):
    assert main(["smoke", "--only", "td0.2", "--skip", "td0.2-unknown,td1.1", "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    reads = [step for step in steps if step["id"] == "td0.2"]
    assert len(reads) == 2 and {step["status"] for step in reads} == {"skipped"}
    assert all(step["detail"] == "needs td1.1, which did not run" for step in reads)


@pytest.mark.parametrize(
    ("only", "needed"),
    [
        (
            "td2.1,td3",
            ["td1.1", "td2.1", "td2.1r", "td3.1", "td3.2", "td3.3a", "td3.3c", "td3.3d"],
        ),
        ("td1.1,td2.1,td3.2", ["td1.1", "td2.1", "td2.1r", "td3.1", "td3.2"]),
    ],
)
def test_only_brings_in_the_steps_a_selected_step_needs(only, needed, capsys):
    assert main(["smoke", "--only", only, "--skip", "insi", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    steps = report["steps"]
    assert [step["id"] for step in steps] == ["pki", "stubs", *needed, *needed]
    assert {step["status"] for step in steps} == {"ok"}, steps
    named = {item for prefix in only.split(",") for item in needed if item.startswith(prefix)}
    assert set(report["added"]) == set(needed) - named


@pytest.mark.parametrize("option", ["--only", "--skip"])
def test_a_step_id_that_names_no_step_is_a_usage_error(option, capsys):
    assert main(["smoke", option, "nonexistent", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["exit_code"] == 2 and "nonexistent" in error["message"]
    assert "td1.1" in error["hint"]


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
    # A patient with no DMP and no writes: the steps needing the DMP are skipped, none fails.
    assert main(argv) == 0
    fresh = json.loads(capsys.readouterr().out)["steps"]
    skipped = {step["id"]: step["detail"] for step in fresh if step["status"] == "skipped"}
    assert "has no DMP: writes: pass --allow-writes" in skipped.pop("td1.1")
    assert set(skipped) == {*WRITES, "td0.2", "td1.3a", "td1.6", "td3.1", "td3.2"} - {"td1.1"}
    assert skipped["td0.2"] == "needs td1.1, which was skipped"

    assert main([*argv, "--allow-writes"]) == 0
    first = json.loads(capsys.readouterr().out)["steps"]
    assert [step["id"] for step in first] == TRANSACTIONS
    assert {step["status"] for step in first} == {"ok"}

    # Re-runnable: the DMP the first run left open is found and used, not created again.
    assert main([*argv, "--allow-writes"]) == 0
    again = json.loads(capsys.readouterr().out)["steps"]
    assert {step["status"] for step in again} == {"ok"}, again
    assert "kept as found" in next(s["detail"] for s in again if s["id"] == "td1.1")

    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)["steps"]
    skipped = {step["id"]: step["detail"] for step in second if step["status"] == "skipped"}
    # The runs archived and deleted their documents: nothing approved is left to retrieve.
    assert skipped.pop("td3.2") == "no document to retrieve"
    assert set(skipped) == WRITES - {"td1.1"}
    assert all(step["status"] == "ok" for step in second if step["id"] not in {*skipped, "td3.2"})


@pytest.mark.parametrize("password", [None, "wrong"])
def test_an_unusable_credential_is_one_error_not_a_failure_per_step(
    password, profile, monkeypatch, capsys
):
    if password is None:
        monkeypatch.delenv("TEST_P12_PASSWORD")
    else:
        monkeypatch.setenv("TEST_P12_PASSWORD", password)
    argv = ["smoke", "--profile", str(profile), "--ins", new_patient().ins, "--json"]
    assert main(argv) == 3
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["type"] == "CredentialError" and error["exit_code"] == 3
    assert "org-auth.p12" in error["source"]
    assert "FAILED" not in captured.err and len(captured.err.strip().splitlines()) == 1


def test_a_failing_step_makes_smoke_fail_and_names_it(profile, stubs, capsys):
    # Nothing listens where the profile sends the DMP calls: each DMP step fails, named.
    text = profile.read_text(encoding="utf-8").replace(stubs.dmp_base_url, DEAD_DMP)
    profile.write_text(text, encoding="utf-8")
    code = main(["smoke", "--profile", str(profile), "--ins", new_patient().ins, "--only", "td0"])
    out = capsys.readouterr().out
    assert code == 1
    assert "failed: TD0.2 test existence (a patient with no DMP) [INDIRECTE]" in out


def test_a_missing_ca_bundle_is_one_usage_error(profile, capsys):
    text = profile.read_text(encoding="utf-8")
    profile.write_text(text.replace("/ca-bundle.pem", "/absent.pem"), encoding="utf-8")
    code = main(["smoke", "--profile", str(profile), "--ins", new_patient().ins, "--json"])
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == 2 and "absent.pem" in error["message"]
