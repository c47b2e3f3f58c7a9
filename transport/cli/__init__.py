"""``cisis-transport``: the command line, and the contract every command keeps.

Exit codes (sysexits-like): 0 success; 1 the service or the verifier said no; 2 bad usage or
input (a bad option, profile or path); 3 transport, TLS or credential failure; 70 internal error
(``EX_SOFTWARE``); 130 interrupted (Ctrl-C). No traceback ever reaches the user, except with
``--debug``. ``--json`` prints exactly one JSON document on stdout, an error included
(``{"error": {"type", "code", "message", "hint", "exit_code", …}}``). Logs and errors go to stderr
and never hold keys, passwords or patient identifiers. ``-v``/``-vv``/``-q`` and ``--debug`` go
before or after the subcommand; :data:`LOG_LEVEL_VARIABLE` sets the level too.

Each command family lives in its own module (its parser, its handler), which imports what it
calls only when it runs; :mod:`transport.cli.report` renders errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from transport import __version__
from transport.cli import dmp, doctor, insi, smoke, stub, vihf
from transport.cli.report import keep_traceback, mapped, patient_values, refuse, report
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
    typed = patient_values(options)
    try:
        args = parser().parse_args(arguments)
        with _logging(args):
            return _FAMILIES[args.command].run(args)
    except CisisError as error:
        return refuse(error, as_json, typed)
    except KeyboardInterrupt:
        return report(as_json, "Interrupted", "interrupted", "interrupted", None, EX_INTERRUPTED)
    except Exception as error:  # the contract: an internal error is one line, never a traceback
        known = mapped(error)
        if known is not None:
            return refuse(known, as_json, typed)
        return report(
            as_json,
            "InternalError",
            "internal",
            f"internal error ({type(error).__name__}), a bug in cisis-transport",
            keep_traceback(debug),
            EX_SOFTWARE,
        )


@contextmanager
def _logging(args: argparse.Namespace) -> Iterator[None]:
    """stderr logging at the level of -v/-vv/-q, else of :data:`LOG_LEVEL_VARIABLE`, for the
    command's run only (main() may run several times in one process, as in tests)."""
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


__all__ = ["EX_INTERRUPTED", "EX_SOFTWARE", "LOG_LEVEL_VARIABLE", "main", "parser"]
