"""The commented example profile shipped in certs-example/: it loads, and `doctor` passes it
against stubs serving the example PKI."""

from __future__ import annotations

import json
import shutil
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


def test_a_copied_profile_resolves_its_paths_against_its_own_folder(
    password, tmp_path, monkeypatch, capsys
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for path in EXAMPLE.parent.iterdir():
        if path.suffix in {".p12", ".pem", ".toml"}:
            shutil.copy(path, elsewhere / path.name)
    cwd = tmp_path / "somewhere-else"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    relative = Path("..") / "elsewhere" / EXAMPLE.name
    profile = load_profile(relative)
    assert profile.ca_bundle == elsewhere / "ca-bundle.pem"
    assert profile.signature_credential.pkcs12 == elsewhere / "org-sign.p12"
    assert main(["vihf", "build", "--profile", str(relative), "--out", "v.xml"]) == 0
    (elsewhere / "org-sign.p12").unlink()
    assert main(["vihf", "build", "--profile", str(relative), "--json"]) == 3
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["source"] == str(elsewhere / "org-sign.p12")  # the path looked for, resolved


def test_an_installed_package_generates_its_pki_in_the_cache_with_the_profile_beside_it(
    password, tmp_path, monkeypatch
) -> None:
    from transport import config

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "_usable", lambda directory: False)  # as without a checkout
    directory = config.example_pki_directory()
    assert directory == tmp_path / "cache" / "cisis-transport" / "example-pki"
    profile = load_profile(directory / "profile.example.toml")
    assert profile.ca_bundle == directory / "ca-bundle.pem" and profile.ca_bundle.is_file()
    assert profile.tls_credential.pkcs12 is not None and profile.tls_credential.pkcs12.is_file()


def test_stub_help_says_where_the_default_pki_is(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["stub", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "certs-example/" in out and "cisis-transport/example-pki" in out
    assert "profile.example.toml" in out


def test_the_wheel_ships_the_example_profile() -> None:
    import tomllib

    project = tomllib.loads((EXAMPLE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    included = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["certs-example/profile.example.toml"] == "transport/profile.example.toml"
