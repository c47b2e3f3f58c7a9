"""``doctor``: each check against real stubs on loopback, and the command line's lines and codes."""

from __future__ import annotations

import json
import ssl
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.test_cli import PROFILE
from transport import examplepki
from transport.cli import main
from transport.config import CredentialSpec, example_pki_directory, example_profile
from transport.doctor import Check, Report, Status, run_checks
from transport.stubs.app import DMP_PREFIX, Stubs
from transport.stubs.server import ServerTLS, StubResponse, StubServer
from transport.tls import DMP_CIPHERS
from transport.vihf import AuthMode


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> examplepki.ExamplePKI:
    """A second example PKI: same names, another CA (another key)."""
    return examplepki.generate(tmp_path_factory.mktemp("other-pki"))


STUB_SERVICES = ["patients", "lps"]


@pytest.fixture
def other_stubs(other_pki, tmp_path):
    with Stubs(pki=other_pki, data_dir=tmp_path / "other", services=["patients"]) as running:
        yield running


def endpoints(stubs: Stubs) -> dict[str, str]:
    return {"dmp": f"{stubs.url}{DMP_PREFIX.rstrip('/')}", "tlsi": stubs.teleservices_url}


def spec(pki: examplepki.ExamplePKI, name: str) -> CredentialSpec:
    return CredentialSpec(pkcs12=pki.p12(name), password=pki.password)


def by_name(checks: tuple[Check, ...]) -> dict[str, Check]:
    names = [check.name for check in checks]
    assert len(names) == len(set(names)), names
    return {check.name: check for check in checks}


def not_ok(checks: tuple[Check, ...]) -> list[Check]:
    return [check for check in checks if check.status is not Status.OK]


def test_every_check_passes_against_a_matching_stub(pki, stubs):
    profile = replace(
        example_profile(pki, endpoints=endpoints(stubs)), insi_credential=spec(pki, "insi-auto")
    )
    checks = run_checks(profile)
    found = by_name(checks)
    assert not_ok(checks) == []
    assert {
        "credential tls",
        "credential signature",
        "credential insi",
        "ca bundle",
        "credential pair",
        "vihf identity",
        "lps",
        "insi certificate",
        "tls dmp",
        "clock dmp",
        "tls tlsi",
        "clock tlsi",
    } <= set(found)
    assert found["tls dmp"].detail.startswith(("TLSv1.2 ", "TLSv1.3 "))
    assert "CN=localhost" in found["tls dmp"].detail
    assert "local clock" in found["clock dmp"].detail
    assert all(check.fix is None for check in checks)


def test_direct_mode_agrees_with_the_card_certificate(pki, stubs):
    profile = example_profile(pki, AuthMode.DIRECTE, {"dmp": stubs.dmp_url("patients")})
    checks = run_checks(profile)
    assert not_ok(checks) == []
    assert "NameID 899700000001" in by_name(checks)["vihf identity"].detail


def test_tls12_dmp_endpoint_negotiates_an_allowed_suite(pki):
    tls12 = ServerTLS(
        pki.server_cert, pki.server_key, pki.ca_bundle, maximum_version=ssl.TLSVersion.TLSv1_2
    )
    with StubServer(lambda request: StubResponse(200, b""), tls12) as server:
        checks = run_checks(example_profile(pki, endpoints={"dmp": server.url}))
    protocol, cipher = by_name(checks)["tls dmp"].detail.split()[:2]
    assert (protocol, cipher in DMP_CIPHERS) == ("TLSv1.2", True)
    assert by_name(checks)["clock dmp"].status is Status.OK


def test_stub_with_another_ca_fails_the_trust_check(pki, other_pki, other_stubs):
    checks = run_checks(example_profile(pki, endpoints={"dmp": other_stubs.dmp_url("patients")}))
    failed = not_ok(checks)
    assert [check.name for check in failed] == ["tls dmp"]
    check = failed[0]
    assert check.status is Status.FAIL
    assert f"server certificate not trusted by the CA bundle {pki.ca_bundle}" in check.detail
    assert "issued by CN=TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS EXEMPLE" in check.detail
    assert "another key" in check.detail
    assert check.fix is not None and "ca_bundle" in check.fix


def test_client_certificate_refused_is_told_apart_from_trust(pki, other_pki, stubs):
    # Trusts the stub, but presents a certificate of a CA the stub does not know.
    profile = replace(
        example_profile(other_pki, endpoints=endpoints(stubs)), ca_bundle=pki.ca_bundle
    )
    check = by_name(run_checks(profile))["tls dmp"]
    assert check.status is Status.FAIL
    assert "refused our client certificate" in check.detail
    assert "not trusted" not in check.detail
    assert check.fix is not None and "ca_bundle" not in check.fix


def test_connection_refused_is_told_apart(pki, tmp_path):
    with Stubs(pki=pki, data_dir=tmp_path / "gone", services=["patients"]) as gone:
        url = gone.dmp_url("patients")
    checks = run_checks(example_profile(pki, endpoints={"dmp": url}))
    check = by_name(checks)["tls dmp"]
    assert check.status is Status.FAIL
    assert check.detail.startswith("connection refused by 127.0.0.1:")
    assert "clock dmp" not in by_name(checks)


@pytest.mark.parametrize(("offset", "status"), [(120, Status.WARN), (600, Status.FAIL)])
def test_local_clock_off_the_servers_date(pki, stubs, offset, status):
    now = datetime.now(UTC) + timedelta(seconds=offset)
    checks = run_checks(example_profile(pki, endpoints=endpoints(stubs)), now=now)
    check = by_name(checks)["clock dmp"]
    assert check.status is status
    assert "ahead of the server" in check.detail
    assert check.fix is not None and "NTP" in check.fix


def test_expired_certificate_fails(tmp_path):
    past = datetime.now(UTC) - timedelta(days=400)
    old = examplepki.generate(tmp_path / "old", now=past, validity_days=100, key_size=1024)
    checks = by_name(run_checks(example_profile(old)))
    for role in ("tls", "signature"):
        check = checks[f"credential {role}"]
        assert check.status is Status.FAIL
        assert "certificate expired on" in check.detail
        assert check.fix is not None and "renew" in check.fix
    assert checks["credential pair"].status is Status.WARN


def test_certificate_expiring_within_30_days_warns(tmp_path):
    soon = examplepki.generate(tmp_path / "soon", validity_days=10, key_size=1024)
    checks = run_checks(example_profile(soon))
    check = by_name(checks)["credential tls"]
    assert check.status is Status.WARN
    assert "expires in 9 days" in check.detail or "expires in 10 days" in check.detail
    assert check.fix is not None and check.fix.startswith("renew it before")
    assert Report(checks).passed


def test_signature_certificate_as_tls_credential_fails_the_usage_check(pki, stubs):
    profile = replace(
        example_profile(pki, endpoints=endpoints(stubs)), tls_credential=spec(pki, "org-sign")
    )
    checks = by_name(run_checks(profile))
    check = checks["credential tls"]
    assert check.status is Status.FAIL
    assert "not a TLS client authentication certificate" in check.detail
    assert check.fix is not None and "AUTH_CLI" in check.fix
    assert checks["tls dmp"].status is Status.WARN
    assert "did not load" in checks["tls dmp"].detail


def test_missing_lps_field_fails(pki):
    profile = example_profile(pki)
    lps = replace(profile.identity.lps, name="", homologation_id=" ")
    checks = by_name(run_checks(replace(profile, identity=replace(profile.identity, lps=lps))))
    check = checks["lps"]
    assert check.status is Status.FAIL
    assert "[lps] lacks name, homologation_id" in check.detail
    assert check.fix is not None and "homologation_id" in check.fix


@pytest.mark.parametrize(
    ("mode", "change", "expected"),
    [
        (AuthMode.INDIRECTE, {"structure_id": "499900000009009"}, 'structure_id = "4999000000010'),
        (AuthMode.DIRECTE, {"subject_id": "899700000099"}, 'subject_id = "899700000001"'),
    ],
)
def test_identity_not_matching_the_signing_certificate_fails(pki, mode, change, expected):
    profile = example_profile(pki, mode)
    profile = replace(profile, identity=replace(profile.identity, **change))
    check = by_name(run_checks(profile))["vihf identity"]
    assert check.status is Status.FAIL
    assert "signing certificate" in check.detail
    assert check.fix is not None and expected in check.fix


def test_tls_and_signature_certificates_of_different_holders_fail(pki):
    profile = replace(example_profile(pki), tls_credential=spec(pki, "insi-auto"))
    check = by_name(run_checks(profile))["credential pair"]
    assert check.status is Status.FAIL
    assert "different DNs" in check.detail


def test_insi_certificate_name(pki, stubs):
    profile = example_profile(pki, endpoints={"tlsi": stubs.teleservices_url})
    check = by_name(run_checks(profile))["insi certificate"]
    assert (check.status, "desir_560" in check.detail) == (Status.WARN, True)
    explicit = replace(profile, insi_credential=spec(pki, "org-auth"))
    assert by_name(run_checks(explicit))["insi certificate"].status is Status.FAIL


def test_unloadable_credentials_and_bundle_are_failed_checks(pki, tmp_path, monkeypatch):
    monkeypatch.delenv("DOCTOR_UNSET_PASSWORD", raising=False)
    profile = replace(
        example_profile(pki, endpoints={"dmp": "https://127.0.0.1:1/"}),
        tls_credential=CredentialSpec(pkcs12=tmp_path / "missing.p12"),
        signature_credential=CredentialSpec(
            pkcs12=pki.p12("org-sign"), password_env="DOCTOR_UNSET_PASSWORD"
        ),
        ca_bundle=tmp_path / "no-bundle.pem",
    )
    checks = by_name(run_checks(profile))
    assert "PKCS#12 file not found" in checks["credential tls"].detail
    assert "DOCTOR_UNSET_PASSWORD is not set" in checks["credential signature"].detail
    assert checks["ca bundle"].status is Status.FAIL
    assert all(check.fix for check in checks.values() if check.status is not Status.OK)


def test_no_endpoint_is_said_and_nothing_leaks(pki):
    checks = run_checks(example_profile(pki))
    assert by_name(checks)["endpoints"].status is Status.WARN
    text = json.dumps(Report(checks).as_dict(), ensure_ascii=False)
    assert pki.password not in text


# --- the command line ----------------------------------------------------------------------------

_PLACEHOLDER_DMP = "https://127.0.0.1:1/si-dmp-server/v2/services"


def profile_file(pki, url: str, tmp_path: Path, monkeypatch) -> Path:
    """test_cli's profile, its DMP endpoint ``url``."""
    monkeypatch.setenv("TEST_P12_PASSWORD", pki.password)
    path = tmp_path / "profile.toml"
    text = PROFILE.format(pki=pki.directory)
    path.write_text(text.replace(_PLACEHOLDER_DMP, url), encoding="utf-8")
    return path


def test_cli_prints_one_line_per_check_and_exits_1_on_failure(
    pki, other_stubs, tmp_path, monkeypatch, capsys
):
    path = profile_file(pki, other_stubs.dmp_url("patients"), tmp_path, monkeypatch)
    assert main(["doctor", "--profile", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok    credential tls ")
    failed = [index for index, line in enumerate(lines) if line.startswith("fail  tls dmp ")]
    assert len(failed) == 1
    assert "server certificate not trusted by the CA bundle" in lines[failed[0]]
    assert lines[failed[0] + 1].startswith("      fix: set [tls] ca_bundle")
    ok = sum(line.startswith("ok    ") for line in lines)
    assert ok == 6
    assert lines[-1] == f"{ok} ok, 0 warnings, 1 failed"
    assert pki.password not in "\n".join(lines)


def test_cli_json_against_a_matching_stub_exits_0(pki, stubs, tmp_path, monkeypatch, capsys):
    path = profile_file(pki, stubs.dmp_url("patients"), tmp_path, monkeypatch)
    assert main(["doctor", "--profile", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    assert statuses["tls dmp"] == statuses["clock dmp"] == "ok"
    assert report["summary"] == {"ok": len(statuses), "warn": 0, "fail": 0}


def test_cli_without_profile_checks_a_running_stub_given_by_endpoint(tmp_path, capsys):
    example = examplepki.load(example_pki_directory())
    with Stubs(pki=example, data_dir=tmp_path / "state", services=["patients"]) as running:
        assert main(["doctor", "--endpoint", running.url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["note"] is None
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    assert statuses["tls dmp"] == "ok" and statuses["insi certificate"] == "ok"


def test_cli_without_profile_or_endpoint_says_what_is_skipped(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("note: the example profile points at the bundled stubs")
    assert "warn  endpoints" in out


def test_cli_unreadable_profile_is_bad_usage(tmp_path, capsys):
    assert main(["doctor", "--profile", str(tmp_path / "none.toml")]) == 2
    assert "profile not found" in capsys.readouterr().err
