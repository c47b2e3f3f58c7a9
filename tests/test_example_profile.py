"""The commented example profile shipped in certs-example/: it loads, and `doctor` passes it
against stubs serving the example PKI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transport import examplepki
from transport.cli import main
from transport.config import example_pki_directory, load_profile
from transport.stubs.app import Stubs
from transport.vihf import AuthMode

EXAMPLE = Path(__file__).parent.parent / "certs-example" / "profile.example.toml"


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CISIS_EXAMPLE_PASSWORD", examplepki.DEFAULT_PASSWORD)


def test_the_example_profile_loads(password: None) -> None:
    profile = load_profile(EXAMPLE)
    assert profile.identity.mode is AuthMode.INDIRECTE
    assert set(profile.endpoints) == {"dmp", "tlsi"}
    assert profile.insi_credential is not None
    assert profile.ca_bundle == EXAMPLE.parent / "ca-bundle.pem"


def test_doctor_passes_the_example_profile_against_the_stubs(password, tmp_path, capsys) -> None:
    pki = examplepki.load(example_pki_directory())
    with Stubs(pki=pki, data_dir=tmp_path / "state", services=["patients", "lps"]) as stubs:
        code = main(["doctor", "--profile", str(EXAMPLE), "--endpoint", stubs.url, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["summary"]["fail"] == 0
    assert {check["name"] for check in report["checks"]} >= {"tls dmp", "tls tlsi", "vihf identity"}
