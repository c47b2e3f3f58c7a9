"""What every command of the command line shares: the profile, the trace folder, output files,
progress bars and JSON printing.

This module imports only what it needs at the top, so that ``cisis-transport --help`` stays
light; the command modules import it, never the reverse.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transport.errors import UsageError

if TYPE_CHECKING:
    from transport.config import Profile
    from transport.soap.trace import Tracer
    from transport.vihf import Patient

INS_OID_HELP = "INS authority OID (default 1.2.250.1.213.1.4.10, the test authority)"
"""The help of every ``--ins-oid``: one default for ``smoke``, ``dmp`` and ``vihf build``."""


MODES = ("INDIRECTE", "INDIRECTE_RENFORCEE", "DIRECTE")
"""The VIHF authentication modes ``--mode`` accepts (CI-SIS *Volet Transport Synchrone*,
``Authentification_Mode``; the values of :class:`transport.vihf.AuthMode`)."""


def ins_oid(value: str | None) -> str:
    """The INS authority of ``--ins-oid``; by default the test authority (1.2.250.1.213.1.4.10,
    ANS *Référentiel INS*) for every command: the tool targets test environments, and one
    default means ``dmp exists`` finds the patient ``smoke`` created."""
    from transport.vihf import INS_TEST_OID

    return value or INS_TEST_OID


def add_trace_option(parser: argparse.ArgumentParser) -> None:
    """``--trace DIR``: every exchange written to DIR."""
    parser.add_argument("--trace", type=Path, metavar="DIR", help="write every exchange to DIR")


def wants_json(args: argparse.Namespace) -> bool:
    """Whether the command line asked for ``--json`` (before or after the subcommand)."""
    return bool(getattr(args, "json", False))


def patient(ins: str, oid: str | None, *, as_returned: bool = False) -> Patient:
    """The patient of ``--ins``/``--ins-oid`` (spaces dropped, upper case), checked: a
    ValidationError names the option and the rule (ANS *Référentiel INS*: 13 characters and
    the key), never the value. ``as_returned`` (an explicit override): a wrong key only warns,
    for an INS copied from an INSi answer (see :attr:`transport.vihf.Patient.as_returned`)."""
    from transport.errors import ValidationError, VihfValidationError
    from transport.vihf import Patient, validate_ins

    chosen = Patient(ins.replace(" ", "").upper(), ins_oid(oid), as_returned=as_returned)
    try:
        validate_ins(chosen)
    except VihfValidationError as error:
        option = "--ins-oid" if "authority" in error.message else "--ins"
        rule = error.message.removeprefix(f"{error.field}: ")
        raise ValidationError(option, rule, hint=error.hint) from None
    return chosen


def load_profile_or_example(path: Path | None, mode: str | None = None) -> Profile:
    """The profile at ``path``, or the example profile over the example PKI in ``mode``
    (``INDIRECTE`` by default); ``--mode`` applies to the example profile only."""
    from transport import examplepki
    from transport.config import example_pki_directory, example_profile, load_profile
    from transport.vihf import AuthMode

    if path is not None:
        if mode is not None:
            raise UsageError(
                "--mode applies to the example profile only; set the mode in the profile"
            )
        return load_profile(path)
    return example_profile(examplepki.load(example_pki_directory()), AuthMode(mode or "INDIRECTE"))


def tracer(path: Path | None) -> Tracer | None:
    """The tracer of ``--trace DIR`` (created when missing), or UsageError naming DIR."""
    if path is None:
        return None
    from transport.soap.trace import Tracer

    if path.exists() and not path.is_dir():
        raise UsageError(f"--trace {path}: not a folder", hint="name a folder (created if missing)")
    try:
        made = Tracer(path)
    except OSError as error:
        raise UsageError(
            f"--trace {path}: cannot create the folder: {error.strerror}",
            hint="name a folder you can write to",
        ) from None
    if not os.access(made.directory, os.W_OK | os.X_OK):
        raise UsageError(f"--trace {path}: folder not writable", hint="name a writable folder")
    return made


def output_target(path: Path, option: str, *, force: bool) -> Path:
    """The absolute path an ``--out`` option names, checked before anything is sent: its folder
    exists, it is not a folder, and it exists only with ``--force``."""
    target = path.absolute()
    if target.is_dir():
        raise UsageError(f"{option} {path}: is a folder", hint="name the file to write")
    if not target.parent.is_dir():
        raise UsageError(
            f"{option} {path}: folder {target.parent} does not exist", hint="create it first"
        )
    if target.exists() and not force:
        raise UsageError(
            f"{option} {path}: the file exists", hint="pass --force to replace it, or another name"
        )
    return target


def write_output(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a scratch file beside it, renamed only once complete:
    a whole file or none (the scratch file is removed on error)."""
    descriptor, name = tempfile.mkstemp(prefix=".cisis-", suffix=".part", dir=target.parent)
    scratch = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def print_json(document: object) -> None:
    """Print one JSON document on stdout (dataclasses, enums, dates and paths converted)."""
    print(json.dumps(document, indent=2, ensure_ascii=False, default=json_value))
    sys.stdout.flush()


def json_value(value: Any) -> Any:
    """JSON for what ``json`` does not know: dataclasses, paths, times, enums, bytes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            item.name: getattr(value, item.name) for item in dataclasses.fields(value) if item.repr
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


PROGRESS_THRESHOLD = 1024 * 1024
"""Transfers above this many bytes show a progress bar (on a terminal)."""


def byte_progress(verb: str, total: int | None) -> Callable[[int, int | None], None] | None:
    """A progress callback ``(done, whole)`` drawing a tqdm bar (rate, time left) on stderr
    for a transfer above :data:`PROGRESS_THRESHOLD`, when stderr is a terminal; else None."""
    if not sys.stderr.isatty() or (total is not None and total < PROGRESS_THRESHOLD):
        return None
    from tqdm import tqdm

    bar: tqdm | None = None

    def show(done: int, whole: int | None) -> None:
        nonlocal bar
        if done <= 0:
            return  # nothing moved yet: no empty bar before the first byte
        if bar is None:
            bar = tqdm(
                total=whole or total,
                desc=verb,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                leave=True,
            )
        bar.update(done - bar.n)
        if bar.total and done >= bar.total:
            bar.close()

    return show


def row_progress(total: int) -> Callable[[int, int], None] | None:
    """A progress callback ``(done, total)`` for rows, a tqdm bar on stderr when it is a
    terminal (None otherwise: a redirected stderr gets no progress lines)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="row", file=sys.stderr, desc="rows")

    def show(done: int, _total: int) -> None:
        bar.update(done - bar.n)
        if done >= bar.total:
            bar.close()

    return show
