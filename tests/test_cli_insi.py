"""``cisis-transport insi``: search, vitale and batch against the ``/lps`` stub, JSON parsed,
exit codes."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import PROFILE
from transport import examplepki
from transport.cli import main
from transport.config import example_pki_directory
from transport.stubs.app import Stubs
from transport.stubs.insi import TEST_PERSONS

INSI_PROFILE = PROFILE.replace(
    'homologation_id = "HOMOLOGATION-TEST"',
    'homologation_id = "HOMOLOGATION-TEST"\nidam = "IDAM-TEST"',
).replace(
    "[tls]",
    '[credentials.insi]\npkcs12 = "{pki}/insi-auto.p12"\npassword_env = "TEST_P12_PASSWORD"\n\n'
    "[tls]",
)


pytestmark = pytest.mark.usefixtures("config_home")
STUB_SERVICES = ["lps"]


@pytest.fixture
def profile(pki, stubs, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TEST_P12_PASSWORD", pki.password)
    path = tmp_path / "insi.toml"
    text = INSI_PROFILE.format(pki=pki.directory)
    path.write_text(f'{text}tlsi = "{stubs.teleservices_url}"\n', encoding="utf-8")
    return path


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_search_with_a_profile_prints_the_ins_and_its_history(profile, capsys, tmp_path):
    argv = ["insi", "search", "--profile", str(profile), "--json", "--trace", str(tmp_path / "t")]
    code, report = run_json(
        capsys,
        [
            *argv,
            "--nom",
            "Ecetinsi",
            "--prenom",
            "JEAN",
            "--prenom",
            "Muriel",
            "--sexe",
            "m",
            "--naissance",
            "2009-07-14",
        ],
    )
    assert code == 0
    assert (report["cr"], report["calls"], report["qualifiable"]) == ("00", 2, True)
    assert report["ins"]["value"] == TEST_PERSONS[0].active.value
    assert [former["value"] for former in report["history"]] == [
        former.value for former in TEST_PERSONS[0].history
    ]
    assert len(list((tmp_path / "t").glob("*-request.xml"))) == 2
    assert b"IDAM-TEST" in next((tmp_path / "t").glob("*-request.xml")).read_bytes()


def test_search_exit_codes_not_found_and_bad_input(profile, capsys):
    base = ["insi", "search", "--profile", str(profile), "--json", "--sexe", "M"]
    code, report = run_json(
        capsys, [*base, "--nom", "HOUILLES", "--prenom", "PIERRE", "--naissance", "1993-01-27"]
    )
    assert (code, report["cr"], report["ins"]) == (1, "01", None)
    code = main([*base, "--nom", "D'ÆION", "--prenom", "X", "--naissance", "1993-01-27"])
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert code == 2 and error["exit_code"] == 2 and error["field"] == "NomNaissance"
    assert "NomNaissance" in captured.err
    # The field and the rule, never the trait typed.
    assert "ÆION" not in captured.err and "ÆION" not in captured.out


def test_vitale_with_a_profile(profile, capsys):
    person = TEST_PERSONS[0]
    code, report = run_json(
        capsys,
        [
            "insi",
            "vitale",
            "--profile",
            str(profile),
            "--json",
            "--nir",
            person.active.value,
            "--naissance",
            person.traits.birth_date,
        ],
    )
    assert code == 0 and report["ins"]["value"] == person.active.value


def test_a_fault_exits_1_with_the_hint(pki, stubs, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_P12_PASSWORD", pki.password)
    path = tmp_path / "org.toml"
    path.write_text(
        PROFILE.format(pki=pki.directory) + f'tlsi = "{stubs.teleservices_url}"\n',
        encoding="utf-8",
    )
    code = main(
        [
            "insi",
            "search",
            "--profile",
            str(path),
            "--nom",
            "ECETINSI",
            "--prenom",
            "MURIEL",
            "--sexe",
            "M",
            "--naissance",
            "2009-07-14",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert "siram_100" in captured.err and "ORG AUTH_CLI" in captured.err


@pytest.fixture(scope="module")
def example_stubs(tmp_path_factory) -> Iterator[Stubs]:
    pki = examplepki.load(example_pki_directory())
    with Stubs(pki=pki, data_dir=tmp_path_factory.mktemp("ex"), services=["lps"]) as running:
        yield running


@pytest.mark.parametrize("mode", ["certificate", "card"])
def test_without_a_profile_the_example_pki_is_used_in_both_modes(example_stubs, capsys, mode):
    code, report = run_json(
        capsys,
        [
            "insi",
            "search",
            "--endpoint",
            example_stubs.teleservices_url,
            "--mode",
            mode,
            "--json",
            "--nom",
            "DE VINCI",
            "--prenom",
            "LEONARDO",
            "--sexe",
            "M",
            "--naissance",
            "2014-02-01",
            "--lieu",
            "99127",
        ],
    )
    assert code == 0 and report["ins"]["value"] == TEST_PERSONS[2].active.value


def test_batch_command_resumes_and_prints_a_summary(profile, capsys, tmp_path):
    rows = [
        ("ECETINSI", "PIERRE-ALAIN", "M", "2009-07-14"),
        ("HOUILLES", "PAUL", "M", "1993-01-27"),
    ]
    with (tmp_path / "in.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["nom", "prenoms", "sexe", "naissance"])
        writer.writerows(rows * 20)
    argv = [
        "insi",
        "batch",
        str(tmp_path / "in.csv"),
        "--out",
        str(tmp_path / "out.csv"),
        "--profile",
        str(profile),
        "--json",
        "--concurrency",
        "3",
        "--rate",
        "1000",
    ]
    code, summary = run_json(capsys, argv)
    timing = {name: summary.pop(name) for name in ("seconds", "rate")}
    assert code == 0 and summary == {
        "total": 40,
        "skipped": 0,
        "answered": 40,
        "unanswered": 0,
        "transport_error": None,
        "stopped": False,
        "by_cr": {"00": 20, "01": 20},
        "by_error": {},
        "temporary_refusals": 0,
    }
    assert timing["seconds"] > 0 and timing["rate"] > 0
    code, summary = run_json(capsys, argv)
    assert code == 0 and (summary["skipped"], summary["answered"]) == (40, 0)
    with (tmp_path / "out.csv").open(encoding="utf-8", newline="") as handle:
        output = list(csv.DictReader(handle))
    assert sorted(int(row["row"]) for row in output) == list(range(1, 41))
    assert {row["cr"] for row in output} == {"00", "01"}
