"""``cisis-transport``: the command line, and the contract every command keeps.

Exit codes (sysexits-like): 0 success; 1 the service or the verifier said no; 2 bad usage or
input (a bad option, profile or path); 3 transport, TLS or credential failure; 70 internal error
(``EX_SOFTWARE``); 130 interrupted (Ctrl-C). No traceback ever reaches the user, except with
``--debug``. ``--json`` prints exactly one JSON document on stdout, an error included
(``{"error": {"type", "code", "message", "hint", "exit_code", …}}``). Logs and errors go to stderr
and never hold keys, passwords or patient identifiers. ``-v``/``-vv``/``-q`` and ``--debug`` go
before or after the subcommand; :data:`LOG_LEVEL_VARIABLE` sets the level too.

Each command family lives in its own module (its options, its handler), imported only when
its command is parsed, so that ``cisis-transport --help`` imports none of them; each module
imports what it calls only when it runs; :mod:`transport.cli.report` renders errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from contextlib import contextmanager

from transport import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any, NoReturn

EX_SOFTWARE = 70
"""Exit code of an internal error (sysexits.h ``EX_SOFTWARE``)."""
EX_INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT, as shells report it)."""
LOG_LEVEL_VARIABLE = "CISIS_LOG_LEVEL"
"""Environment variable holding the log level (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``);
``-v``/``-vv``/``-q`` override it."""

_FAMILIES = {
    "smoke": ("transport.cli.smoke", "run every supported step, one line each"),
    "stub": ("transport.cli.stub", "serve the DMP and téléservices stubs until Ctrl-C"),
    "vihf": ("transport.cli.vihf", "build or verify a VIHF"),
    "insi": ("transport.cli.insi", "search INS with INSi, one by one or in batch"),
    "doctor": ("transport.cli.doctor", "check a profile before calling any service"),
    "dmp": ("transport.cli.dmp", "call one DMP transaction (TD0.2 … TD3.3d)"),
}
"""Each command family: the module that declares its options (``add_arguments(parser,
common)``) and runs it (``run(args)``), and the one line ``--help`` shows for it."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors raised as :class:`UsageError` (so that ``--json`` gets
    its one JSON document, and the exit code is the contract's 2)."""

    def error(self, message: str) -> NoReturn:
        from transport.errors import UsageError

        command = self.prog.removeprefix("cisis-transport").strip()
        raise UsageError(
            f"{command}: {message}" if command else message, hint=f"see {self.prog} --help"
        )


class _Family(_Parser):
    """The parser of one command family, filled with the family's options by its module the
    first time it parses or formats its help: the top-level ``--help`` lists the families
    without importing their modules. Its own subcommands are plain :class:`_Parser`."""

    def __init__(
        self, *args: Any, module: str, common: argparse.ArgumentParser, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._module: str | None = module
        self._common = common

    def _fill(self) -> None:
        if self._module is not None:
            module, self._module = self._module, None
            importlib.import_module(module).add_arguments(self, self._common)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", _Parser)
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._fill()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._fill()
        return super().format_help()

    def format_usage(self) -> str:
        self._fill()
        return super().format_usage()


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
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Family)
    common = _logging_options(top=False)
    for name, (module, help_text) in _FAMILIES.items():
        commands.add_parser(name, parents=[common], help=help_text, module=module, common=common)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (see the module's docstring)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = arguments[: arguments.index("--")] if "--" in arguments else arguments
    as_json = "--json" in options
    try:
        args = parser().parse_args(arguments)
        with _logging(args):
            return importlib.import_module(_FAMILIES[args.command][0]).run(args)
    except KeyboardInterrupt:
        from transport.cli.report import report

        return report(as_json, "Interrupted", "interrupted", "interrupted", None, EX_INTERRUPTED)
    except Exception as error:  # the contract: an internal error is one line, never a traceback
        return _failed(error, options)


def _failed(error: Exception, options: Sequence[str]) -> int:
    """Report ``error`` as the contract says (the refusal of a :class:`CisisError` or of what
    :func:`transport.cli.report.mapped` recognises, else an internal error); its exit code.
    The reporting modules are imported here: a command that succeeds never needs them."""
    from transport.cli.report import keep_traceback, mapped, patient_values, refuse, report
    from transport.errors import CisisError

    as_json, typed = "--json" in options, patient_values(options)
    known = error if isinstance(error, CisisError) else mapped(error)
    if known is not None:
        return refuse(known, as_json, typed)
    return report(
        as_json,
        "InternalError",
        "internal",
        f"internal error ({type(error).__name__}), a bug in cisis-transport",
        keep_traceback("--debug" in options),
        EX_SOFTWARE,
    )


@contextmanager
def _logging(args: argparse.Namespace) -> Iterator[None]:
    """stderr logging at the level of -v/-vv/-q, else of :data:`LOG_LEVEL_VARIABLE`, for the
    command's run only (main() may run several times in one process, as in tests)."""
    import logging

    from transport.errors import UsageError

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
