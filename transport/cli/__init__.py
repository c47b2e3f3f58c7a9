"""``cisis-transport``: the command line, and the contract every command keeps.

Exit codes (sysexits-like): 0 success; 1 the service or the verifier said no; 2 bad usage or
input (a bad option, profile or path); 3 transport, TLS or credential failure; 70 internal error
(``EX_SOFTWARE``); 130 interrupted (Ctrl-C). No traceback ever reaches the user, except with
``--debug``. ``--json`` prints exactly one JSON document on stdout, an error included
(``{"error": {"type", "code", "message", "hint", "exit_code", …}}``). Logs and errors go to stderr
and never hold keys, passwords or patient identifiers. ``-v``/``-vv``/``-q`` and ``--debug`` go
before or after the subcommand; :data:`LOG_LEVEL_VARIABLE` sets the level too.

Each command family lives in its own module, imported only when it runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn, TextIO

from transport import __version__
from transport.cli import dmp, doctor, insi, smoke, stub, vihf
from transport.cli.common import print_json, wants_json
from transport.errors import CisisError, UsageError

EX_SOFTWARE = 70
"""Exit code of an internal error (sysexits.h ``EX_SOFTWARE``)."""
EX_INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT, as shells report it)."""
LOG_LEVEL_VARIABLE = "CISIS_LOG_LEVEL"
"""Environment variable holding the log level (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``);
``-v``/``-vv``/``-q`` override it."""

_FAMILIES = {
    "smoke": smoke,
    "stub": stub,
    "vihf": vihf,
    "insi": insi,
    "doctor": doctor,
    "dmp": dmp,
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors raised as :class:`UsageError` (so that ``--json`` gets
    its one JSON document, and the exit code is the contract's 2)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("cisis-transport").strip()
        raise UsageError(
            f"{command}: {message}" if command else message, hint=f"see {self.prog} --help"
        )


def _logging_options(*, top: bool) -> argparse.ArgumentParser:
    """The options accepted before and after the subcommand. After it, their defaults are
    suppressed so that they do not undo what was given before it."""
    options = argparse.ArgumentParser(add_help=False)
    default = {} if top else {"default": argparse.SUPPRESS}
    options.add_argument(
        "-v", "--verbose", action="count", help="log each exchange (-vv: debug)", **default
    )
    options.add_argument("-q", "--quiet", action="store_true", help="errors only", **default)
    options.add_argument(
        "--debug", action="store_true", help="print the traceback of an internal error", **default
    )
    options.add_argument(
        "--json",
        action="store_true",
        help="one JSON document on stdout, errors included",
        **default,
    )
    return options


def parser() -> argparse.ArgumentParser:
    """The whole command line (each family adds its own subcommands)."""
    top = _Parser(
        prog="cisis-transport",
        description="SOAP/WS-Security client for the DMP and the téléservices (CI-SIS).",
        parents=[_logging_options(top=True)],
        epilog=f"exit codes: 0 ok, 1 the service said no, 2 bad usage or input, 3 transport, TLS "
        f"or credential failure, 70 internal error, 130 interrupted. {LOG_LEVEL_VARIABLE}="
        "DEBUG|INFO|WARNING|ERROR sets the log level.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    common = _logging_options(top=False)
    for family in _FAMILIES.values():
        family.add_parser(commands, common)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (see the module's docstring)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = arguments[: arguments.index("--")] if "--" in arguments else arguments
    as_json, debug = "--json" in options, "--debug" in options
    typed = _patient_values(options)
    try:
        args = parser().parse_args(arguments)
        _configure_logging(args)
        return _FAMILIES[args.command].run(args)
    except CisisError as error:
        return _refuse(error, as_json, typed)
    except KeyboardInterrupt:
        return _report(
            as_json, "Interrupted", "interrupted", "interrupted", None, EX_INTERRUPTED, {}
        )
    except Exception as error:  # the contract: an internal error is one line, never a traceback
        mapped = _mapped(error)
        if mapped is not None:
            return _refuse(mapped, as_json, typed)
        return _report(
            as_json,
            "InternalError",
            "internal",
            f"internal error ({type(error).__name__}), a bug in cisis-transport",
            _internal(error, debug),
            EX_SOFTWARE,
            {},
        )


def _configure_logging(args: argparse.Namespace) -> None:
    """stderr logging at the level of -v/-vv/-q, else of :data:`LOG_LEVEL_VARIABLE`."""
    verbose = getattr(args, "verbose", None) or 0
    if verbose or getattr(args, "quiet", False):
        level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.ERROR
    else:
        name = os.environ.get(LOG_LEVEL_VARIABLE, "WARNING").strip().upper()
        level = logging.getLevelNamesMapping().get(name)
        if level is None:
            raise UsageError(
                f"{LOG_LEVEL_VARIABLE}: not a log level",
                hint="DEBUG, INFO, WARNING or ERROR",
            )
    root = logging.getLogger()
    for previous in [item for item in root.handlers if isinstance(item, _StderrHandler)]:
        root.removeHandler(previous)  # main() run again in one process: one handler, new level
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes each record to ``sys.stderr`` as it is when the record comes, not as it was when
    logging was set up (a caller may have replaced it since, and closed the old one)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass  # always sys.stderr


def _mapped(error: Exception) -> CisisError | None:
    """The contract's reading of an exception the library let through: a bad URL is exit 2, a
    file the user named that cannot be used exit 2, a transport failure (requests, ssl,
    sockets) exit 3; None for a bug."""
    import requests

    from transport.errors import TransportError

    invalid = (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
        requests.exceptions.URLRequired,
    )
    if isinstance(error, invalid):
        return UsageError(
            f"the endpoint is not a valid https URL: {_one_line(error)}",
            hint="check --endpoint or the profile's [endpoints]",
        )
    if isinstance(error, requests.RequestException | ConnectionError | TimeoutError):
        return TransportError(
            f"the exchange failed: {_one_line(error)}",
            hint="check the endpoint, the network and the service",
        )
    if isinstance(error, OSError) and error.filename is not None:
        return UsageError(f"cannot use {error.filename}: {error.strerror}")
    if isinstance(error, OSError):
        return TransportError(f"the exchange failed: {_one_line(error)}")
    return None


def _one_line(error: Exception, limit: int = 240) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _internal(error: Exception, debug: bool) -> str:
    """Keep the traceback of a bug in a private file (mode 0600, the user's log folder) and
    return where, so that a report can carry it; with ``--debug`` print it too."""
    text = traceback.format_exc()
    if debug:
        print(text, file=sys.stderr, end="")
    try:
        from platformdirs import user_log_path

        folder = user_log_path("cisis-transport", ensure_exists=True)
        path = folder / f"internal-error-{os.getpid()}.txt"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(f"cisis-transport {__version__}\n{text}")
    except OSError:
        return "run the same command with --debug for the traceback"
    return f"attach {path} (or the --debug output) to a bug report"


PATIENT_OPTIONS = frozenset(
    {"--ins", "--nir", "--nir-od", "--nom", "--prenom", "--naissance", "--lieu", "--rang"}
    | {"--nom-naissance", "--address", "--telecom"}
)
"""The options whose values are patient data: an error never repeats them."""
_QUOTED = re.compile("'[^']*'|\"[^\"]*\"")


def _patient_values(options: Sequence[str]) -> tuple[str, ...]:
    """The values the user typed for :data:`PATIENT_OPTIONS` (``--nom X`` or ``--nom=X``)."""
    values = []
    for index, token in enumerate(options):
        name, equals, value = token.partition("=")
        if name in PATIENT_OPTIONS:
            if equals:
                values.append(value)
            elif index + 1 < len(options):
                values.append(options[index + 1])
    # Shorter values would also match ordinary words ("a", "of") of the message itself.
    return tuple(value for value in values if len(value.strip()) >= 3)


def _redact(text: str | None, typed: Sequence[str], *, quoted: bool) -> str | None:
    """``text`` without a patient value the user typed, nor (for a refused input, ``quoted``)
    any quoted value: an error names the field and the rule, never the value."""
    if text is None:
        return None
    if quoted:
        text = _QUOTED.sub("(the value given)", text)
    for value in sorted(typed, key=len, reverse=True):
        pattern = rf"(?<!\w){re.escape(value.strip())}(?!\w)"
        text = re.sub(pattern, "(the value given)", text, flags=re.IGNORECASE)
    return text


def _refuse(error: CisisError, as_json: bool, typed: Sequence[str]) -> int:
    from transport.errors import ValidationError

    quoted = isinstance(error, ValidationError)
    return _report(
        as_json,
        type(error).__name__,
        _code(error),
        _redact(error.message, typed, quoted=quoted) or "",
        _redact(error.hint, typed, quoted=False),
        error.exit_code,
        _details(error),
    )


def _report(
    as_json: bool,
    kind: str,
    code: str | None,
    message: str,
    hint: str | None,
    exit_code: int,
    details: dict[str, object],
) -> int:
    """Print an error: one line on stderr, and under ``--json`` its JSON document on stdout."""
    print(f"cisis-transport: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)
    if as_json:
        print_json(
            {
                "error": {
                    "type": kind,
                    "code": code,
                    "message": message,
                    "hint": hint,
                    "exit_code": exit_code,
                    **details,
                }
            }
        )
    return exit_code


def _code(error: CisisError) -> str:
    """The error's code: the service's (SOAP subcode, DMP or XDS code), the signature refusal's
    reason, else the error family (``usage``, ``configuration``, ``credential``, ``tls``…)."""
    from transport.errors import (
        ConfigurationError,
        CredentialError,
        SignatureError,
        SoapFault,
        TLSError,
        TransportError,
        ValidationError,
    )

    for family, name in (
        (ValidationError, "validation"),
        (ConfigurationError, "configuration"),
        (UsageError, "usage"),
        (CredentialError, "credential"),
        (TLSError, "tls"),
        (TransportError, "transport"),
    ):
        if isinstance(error, family):
            return name
    if isinstance(error, SoapFault):
        return error.subcode or error.code
    if isinstance(error, SignatureError):
        return error.reason
    code = getattr(error, "code", None)
    return str(code) if code else type(error).__name__


def _details(error: CisisError) -> dict[str, object]:
    """What the service or the check said beyond the message: fault code, subcodes and detail
    entries, DMP codes and texts, XDS registry errors, the refused field or signature reason."""
    from transport.errors import (
        CredentialError,
        DmpError,
        SignatureError,
        SoapFault,
        ValidationError,
        XdsError,
    )

    if isinstance(error, SoapFault):
        return {
            "fault_code": error.code,
            "subcodes": list(error.subcodes),
            "service_code": error.service_code,
            "details": list(error.details),
        }
    if isinstance(error, DmpError):
        return {
            "transaction": error.transaction,
            "details": [{"code": code, "text": text} for code, text in error.details],
        }
    if isinstance(error, XdsError):
        return {
            "transaction": error.transaction,
            "status": error.status,
            "details": list(error.errors),
        }
    if isinstance(error, ValidationError):
        return {"field": error.field}
    if isinstance(error, SignatureError):
        return {"reason": error.reason}
    if isinstance(error, CredentialError):
        return {"source": error.source}
    return {}


__all__ = ["EX_INTERRUPTED", "EX_SOFTWARE", "LOG_LEVEL_VARIABLE", "main", "parser", "wants_json"]
