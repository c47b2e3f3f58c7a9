"""The command line's contract, command by command: bad input of every class (missing file,
folder, wrong type, bad URL, unreachable service, wrong password, Ctrl-C, a bug) gives no
traceback, the documented exit code, and under ``--json`` exactly one JSON document on stdout."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli_insi import INSI_PROFILE
from transport.cli import main
from transport.stubs.server import ServerTLS, StubRequest, StubResponse, StubServer

INS = "279035121518989"
UNREACHABLE = "https://127.0.0.1:1"
"""Nothing listens on port 1 of the loopback: the connection is refused at once."""


@pytest.fixture
def env(pki, monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("TEST_P12_PASSWORD", pki.password)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the bug reports' folder
    monkeypatch.delenv("CISIS_LOG_LEVEL", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_profile(
    pki,
    folder: Path,
    *,
    endpoint: str = UNREACHABLE,
    tls: str = "",
    tail: str = "",
    name: str = "p.toml",
) -> Path:
    """A profile over the session's PKI; ``tls`` lines go in [tls], ``tail`` after the end."""
    text = INSI_PROFILE.format(pki=pki.directory).replace(
        'dmp = "https://127.0.0.1:1/si-dmp-server/v2/services"',
        f'dmp = "{endpoint}/si-dmp-server/v2/services"\ntlsi = "{endpoint}/lps"',
    )
    text = text.replace('ca_bundle = "', f'{tls}\nca_bundle = "' if tls else 'ca_bundle = "')
    text += f"\n{tail}\n" if tail else ""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def batch_input(folder: Path) -> Path:
    path = folder / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["nom", "prenoms", "sexe", "naissance"])
        writer.writerows([("DUPONT", "ALICE", "F", "1979-03-28")] * 12)
    return path


def commands(folder: Path) -> dict[str, list[str]]:
    """Every command that reads a profile (:data:`NAMES`), with well-formed arguments."""
    document = folder / "doc.txt"
    document.write_text("a document\n", encoding="utf-8")
    return {
        "vihf build": ["vihf", "build"],
        "doctor": ["doctor"],
        "smoke": ["smoke", "--ins", INS, "--only", "td0.2-unknown,insi-cr00"],
        "insi search": [
            *("insi", "search", "--nom", "DUPONT", "--prenom", "ALICE"),
            *("--sexe", "F", "--naissance", "1979-03-28"),
        ],
        "insi vitale": ["insi", "vitale", "--nir", INS, "--naissance", "1979-03-28"],
        "insi batch": ["insi", "batch", str(batch_input(folder)), "--out", str(folder / "o.csv")],
        "dmp exists": ["dmp", "exists", "--ins", INS],
        "dmp consult": ["dmp", "consult", "--ins", INS],
        "dmp search": ["dmp", "search", "--ins", INS],
        "dmp submit": ["dmp", "submit", "--ins", INS, "--raw", str(document)],
        "dmp retrieve": [
            *("dmp", "retrieve", "--ins", INS, "--document-id", "1.2.3"),
            *("--out", str(folder / "out.bin")),
        ],
        "dmp patients": ["dmp", "patients"],
    }


NAMES = [
    "vihf build", "doctor", "smoke", "insi search", "insi vitale", "insi batch", "dmp exists",
    "dmp consult", "dmp search", "dmp submit", "dmp retrieve", "dmp patients",
]  # fmt: skip


def run(capsys, argv: list[str]) -> tuple[int, object, str]:
    """Run with --json; the exit code, the one JSON document on stdout, stderr."""
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return code, json.loads(captured.out), captured.err


def assert_error(document: object, code: int, *needles: str) -> dict:
    assert isinstance(document, dict) and set(document) == {"error"}, document
    error = document["error"]
    assert {"type", "code", "message", "hint", "exit_code"} <= set(error)
    assert error["exit_code"] == code
    for needle in needles:
        assert needle in error["message"], error
    return error


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "profile not found"),
        ("folder", "is a folder"),
        ("timeout-type", "connect_timeout"),
        ("timeout-negative", "read_timeout"),
        ("bad-port", "not a valid URL"),
        ("not-a-url", "not an https URL"),
        ("validity-type", "validity_seconds"),
        ("algorithm", "algorithm"),
        ("name-type", "user_name"),
    ],
)
def test_a_bad_profile_is_exit_2_with_one_json_error(name, case, expected, pki, env, capsys):
    argv = commands(env)[name]
    profile = {
        "missing": lambda: env / "missing.toml",
        "folder": lambda: env,
        "timeout-type": lambda: write_profile(pki, env, tls='connect_timeout = "ten"'),
        "timeout-negative": lambda: write_profile(pki, env, tls="read_timeout = -5"),
        "bad-port": lambda: write_profile(pki, env, endpoint="https://127.0.0.1:99999"),
        "not-a-url": lambda: write_profile(pki, env, endpoint="127.0.0.1:8443"),
        "validity-type": lambda: write_profile(pki, env, tail='[vihf]\nvalidity_seconds = "x"'),
        "algorithm": lambda: write_profile(pki, env, tail='[vihf]\nalgorithm = "rsa-md5"'),
        "name-type": lambda: _retyped(write_profile(pki, env)),
    }[case]()
    code, document, err = run(capsys, [*argv, "--profile", str(profile)])
    assert code == 2
    assert_error(document, 2, expected)
    assert len(err.strip().splitlines()) == 1


def _retyped(profile: Path) -> Path:
    text = profile.read_text(encoding="utf-8")
    profile.write_text(text.replace('user_name = "MEDECIN0001 PAUL"', "user_name = 12"), "utf-8")
    return profile


# smoke and doctor report each failed step or check (exit 1); the others fail as a whole.
UNREACHABLE_EXIT = {"smoke": 1, "doctor": 1, "vihf build": 0}


@pytest.mark.parametrize("name", NAMES)
def test_an_unreachable_service_is_exit_3(name, pki, env, capsys):
    argv = commands(env)[name]
    code, document, err = run(capsys, [*argv, "--profile", str(write_profile(pki, env))])
    expected = UNREACHABLE_EXIT.get(name, 3)
    assert code == expected
    if name == "insi batch":
        # The summary is the document; the reason is said, and the run stopped early.
        assert document["unanswered"] == 12 and document["stopped"] is True
        assert "refused" in document["transport_error"].lower()
        assert "transport failure:" in err and "stopped after 5 transport failures" in err
    elif expected == 3:
        assert_error(document, 3)


@pytest.mark.parametrize("name", NAMES)
def test_a_wrong_password_is_exit_3(name, pki, env, monkeypatch, capsys):
    monkeypatch.setenv("TEST_P12_PASSWORD", "wrong")
    argv = commands(env)[name]
    code, document, _ = run(capsys, [*argv, "--profile", str(write_profile(pki, env))])
    if name == "doctor":
        assert code == 1 and document["summary"]["fail"] >= 1  # doctor's job is to say so
        return
    assert code == 3
    error = assert_error(document, 3, "wrong password")
    assert error["type"] == "CredentialError" and error["source"].endswith(".p12")


@pytest.mark.parametrize("name", NAMES)
def test_ctrl_c_is_exit_130(name, pki, env, monkeypatch, capsys):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("transport.config.load_profile", interrupted)
    monkeypatch.setattr("transport.smoke.load_profile", interrupted)
    argv = commands(env)[name]
    code, document, err = run(capsys, [*argv, "--profile", str(write_profile(pki, env))])
    assert code == 130
    assert_error(document, 130, "interrupted")
    assert err.strip() == "cisis-transport: interrupted"


@pytest.mark.parametrize("debug", [False, True])
def test_an_internal_error_is_one_line_and_exit_70(debug, pki, env, monkeypatch, capsys):
    def broken(*_args, **_kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr("transport.config.load_profile", broken)
    argv = [*commands(env)["dmp exists"], "--profile", str(write_profile(pki, env))]
    code = main([*argv, "--json", *(["--debug"] if debug else [])])
    captured = capsys.readouterr()
    assert code == 70
    error = assert_error(json.loads(captured.out), 70, "internal error (IndexError)")
    assert "bug report" in error["hint"]
    report = Path(error["hint"].split()[1])
    assert report.is_relative_to(env / "state")
    assert report.is_file() and report.stat().st_mode & 0o077 == 0
    assert "IndexError" in report.read_text(encoding="utf-8")
    if debug:
        assert "Traceback (most recent call last)" in captured.err
    else:
        assert "Traceback" not in captured.err
        assert len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["stub", "--pki", "/nonexistent"], "no such folder"),
        (["stub", "--port", "-1"], "a port is a number"),
        (["stub", "--port", "http"], "a port is a number"),
        (["smoke", "--only", "nonexistent"], "no such step"),
        (["vihf", "verify", "/nonexistent.xml", "--ca", "/nonexistent.pem"], "/nonexistent"),
        (["vihf", "verify", "{folder}", "--ca", "{ca}"], "is a folder"),
        (["vihf", "verify", "{text}", "--ca", "{ca}"], "not well-formed XML"),
        (["vihf", "verify", "{text}", "--ca", "/nonexistent.pem"], "--ca /nonexistent.pem"),
        (["vihf", "verify", "{ca}", "--ca", "{text}"], "not a PEM file"),
        (["vihf", "verify", "{text}", "--ca", "{ca}", "--max-age", "soon"], "seconds"),
        (["vihf", "build", "--out", "/nonexistent/vihf.xml"], "does not exist"),
        (["vihf", "build", "--out", "{folder}"], "is a folder"),
        (["vihf", "build", "--out", "{text}"], "the file exists"),
        (["dmp", "exists", "--ins", INS, "--trace", "{text}"], "not a folder"),
        # A folder that cannot be made (under a file: refused even to root).
        (["smoke", "--trace", "{text}/trace"], "cannot create the folder"),
        (["dmp", "exists", "--ins", INS, "--endpoint", "no-url"], "not an https URL"),
        (["dmp", "exists", "--ins", INS, "--endpoint", "https://h:99999/x"], "not a valid URL"),
        (["dmp", "submit", "--ins", INS, "{folder}"], "is a folder"),
        (["dmp", "submit", "--ins", INS, "/nonexistent.pdf"], "no such file"),
        (
            ["dmp", "retrieve", "--ins", INS, "--document-id", "1", "--out", "/nonexistent/d"],
            "does not exist",
        ),
        (["dmp", "retrieve", "--ins", INS, "--document-id", "1", "--out", "{text}"], "exists"),
        (["insi", "batch", "{text}", "--out", "/nonexistent/out.csv"], "does not exist"),
        (["insi", "batch", "/nonexistent.csv", "--out", "{folder}/o.csv"], "no such file"),
        (["insi", "batch", "{folder}", "--out", "{folder}/o.csv"], "is a folder"),
        (["insi", "search", "--nom", "X", "--prenom", "Y"], "required"),
        (
            [
                *("insi", "search", "--nom", "X", "--prenom", "Y", "--sexe", "M"),
                *("--naissance", "1990-01-01", "--trace", "{text}"),
            ],
            "not a folder",
        ),
        (["insi", "vitale", "--nir", "279035121518988", "--naissance", "1979-03-28"], "key"),
        (["--json", "stub", "--data", "{text}"], "not a folder"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_exit_2_with_one_json_error(argv, expected, pki, env, capsys):
    text = env / "file.txt"
    text.write_text("not xml\n", encoding="utf-8")
    values = {"folder": str(env), "text": str(text), "ca": str(pki.ca_bundle)}
    code, document, err = run(capsys, [item.format(**values) for item in argv])
    assert code == 2
    assert_error(document, 2, expected)
    assert len(err.strip().splitlines()) == 1
    assert text.read_text(encoding="utf-8") == "not xml\n"  # never overwritten


def test_vihf_verify_max_age_0_refuses_rather_than_turning_the_check_off(pki, env, capsys) -> None:
    out = env / "vihf.xml"
    assert (
        main(["vihf", "build", "--profile", str(write_profile(pki, env)), "--out", str(out)]) == 0
    )
    capsys.readouterr()
    argv = ["vihf", "verify", str(out), "--ca", str(pki.ca_bundle), "--clock-skew", "0"]
    code, document, _ = run(capsys, [*argv, "--max-age", "0"])
    assert (code, document["valid"], document["reason"]) == (1, False, "stale")
    code, document, _ = run(capsys, [*argv, "--max-age", "3600"])
    assert (code, document["valid"]) == (0, True)


def test_vihf_build_replaces_its_out_file_only_with_force(pki, env, capsys) -> None:
    out = env / "vihf.xml"
    out.write_text("keep me", encoding="utf-8")
    argv = ["vihf", "build", "--profile", str(write_profile(pki, env)), "--out", str(out)]
    assert main(argv) == 2 and out.read_text(encoding="utf-8") == "keep me"
    assert main([*argv, "--force"]) == 0 and out.read_bytes().startswith(b"<?xml")
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "vihf", "build"],
        ["vihf", "build", "-v"],
        ["vihf", "-v", "build"],
        ["-vv", "vihf", "build"],
        ["vihf", "build", "-q"],
    ],
)
def test_verbosity_is_accepted_before_or_after_the_subcommand(argv, env, capsys) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("<?xml")


def test_the_log_level_variable_sets_the_level_and_a_bad_one_is_a_usage_error(
    pki, env, monkeypatch, capsys
) -> None:
    argv = [*commands(env)["dmp exists"], "--profile", str(write_profile(pki, env))]
    monkeypatch.setenv("CISIS_LOG_LEVEL", "info")
    assert main(argv) == 3
    assert "INFO transport.cli.dmp: dmp exists: calling the DMP" in capsys.readouterr().err
    monkeypatch.setenv("CISIS_LOG_LEVEL", "chatty")
    code, document, _ = run(capsys, argv)
    assert code == 2 and "CISIS_LOG_LEVEL" in document["error"]["message"]


def test_errors_never_echo_the_patient_values_typed(pki, env, capsys) -> None:
    profile = str(write_profile(pki, env))
    cases = [
        ["dmp", "exists", "--ins", "27903512151898X", "--profile", profile],
        [
            *("insi", "search", "--nom", "ZÆBULONE", "--prenom", "ALICE", "--sexe", "F"),
            *("--naissance", "1979-03-28", "--profile", profile),
        ],
        [
            *("insi", "search", "--nom", "DUPONT", "--prenom", "ALICE", "--sexe", "F"),
            *("--naissance", "1979-13-45", "--profile", profile),
        ],
        ["insi", "vitale", "--nir", "279035121518988", "--naissance", "1979-03-28"],
    ]
    for argv in cases:
        code, document, err = run(capsys, argv)
        assert code == 2, document
        for value in ("27903512151898X", "ZÆBULONE", "1979-13-45", "279035121518988"):
            assert value not in err and value not in json.dumps(document, ensure_ascii=False)


def test_help_imports_neither_stubs_nor_services() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from transport.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        "assert 'call one DMP transaction' in out.getvalue()\n"
        "heavy = [m for m in sys.modules if m.startswith(('transport.stubs', 'transport.doctor',"
        " 'transport.smoke', 'transport.teleservices', 'transport.dmp', 'transport.cli.',"
        " 'transport.errors', 'transport.config', 'transport.credentials'))]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        (["dmp", "--help"], ["exists", "submit", "retrieve", "archive"]),
        (["dmp", "exists", "--help"], ["--ins", "--access", "--profile", "--trace", "--json"]),
        (["insi", "batch", "--help"], ["--profile"]),
        (["vihf", "build", "--help"], ["--ins", "--out", "--force"]),
        (["stub", "--help"], ["--host", "--port", "Serve the DMP", "Default PKI"]),
        (["doctor", "--help"], ["--profile", "--endpoint", "--verbose"]),
        (["smoke", "--help"], ["--profile", "--only"]),
    ],
)
def test_each_command_family_declares_its_options_when_parsed(capsys, argv, options) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    assert all(option in shown for option in options), shown


def test_a_real_process_gets_no_traceback_and_one_json_document(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "transport", "stub", "--port", "-1", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["error"]["exit_code"] == 2


def _cut_answer(request: StubRequest) -> StubResponse:
    """An INSi answer that announces 4000 bytes and ends the connection after a few."""

    def body() -> Iterator[bytes]:
        yield b'<?xml version="1.0"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/'
        raise ConnectionAbortedError("the stub hangs up mid-body")

    return StubResponse(200, body(), length=4000)


@pytest.fixture
def cutting_server(pki) -> Iterator[StubServer]:
    with StubServer(_cut_answer, ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)) as s:
        yield s


def test_an_insi_answer_cut_mid_body_is_a_transport_failure(
    cutting_server, pki, env, capsys
) -> None:
    profile = write_profile(pki, env, endpoint=cutting_server.url, tls="read_timeout = 5")
    argv = [*commands(env)["insi search"], "--profile", str(profile)]
    code, document, _ = run(capsys, argv)
    assert code == 3
    assert_error(document, 3)


@pytest.mark.parametrize("as_json", [False, True])
def test_the_stub_serves_until_ctrl_c_then_exits_0(as_json, tmp_path) -> None:
    command = [sys.executable, "-m", "transport", "stub", "--port", "0"]
    process = subprocess.Popen(
        [*command, *(["--json"] if as_json else []), "--data", str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    if as_json:
        lines = [first]
        while lines[-1] not in {"}\n", ""}:  # the document, up to its closing brace
            lines.append(process.stdout.readline())
        listening = json.loads("".join(lines))
        assert listening["url"].startswith("https://127.0.0.1:")
        assert listening["temporary"] is False and listening["state"] == str(tmp_path / "state")
    else:
        assert first.startswith("cisis-transport stub listening on https://127.0.0.1:")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in err
    assert (out == "") if as_json else out.rstrip().endswith("stopped")
