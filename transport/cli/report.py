"""How the command line reports a failure: one line on stderr and, under ``--json``, the
``{"error": {…}}`` document on stdout; the exit code of the contract (see :mod:`transport.cli`).

The service's own codes travel with the error (SOAP fault code, subcodes and details; DMP and
XDS codes); a value the user typed for a patient option is never repeated.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Sequence

from transport import __version__
from transport.cli.common import print_json
from transport.errors import (
    CisisError,
    ConfigurationError,
    CredentialError,
    DmpError,
    SignatureError,
    SoapFault,
    TLSError,
    TransportError,
    UsageError,
    ValidationError,
    XdsError,
)


def mapped(error: Exception) -> CisisError | None:
    """The contract's reading of an exception the library let through: a bad URL is exit 2, a
    file the user named that cannot be used exit 2, a transport failure (requests, ssl,
    sockets) exit 3; None for a bug."""
    import requests

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


def keep_traceback(debug: bool) -> str:
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


def patient_values(options: Sequence[str]) -> tuple[str, ...]:
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


def refuse(error: CisisError, as_json: bool, typed: Sequence[str]) -> int:
    """Report ``error`` (see :func:`report`), without the patient values ``typed``; its exit
    code."""

    quoted = isinstance(error, ValidationError)
    return report(
        as_json,
        type(error).__name__,
        _code(error),
        _redact(error.message, typed, quoted=quoted) or "",
        _redact(error.hint, typed, quoted=False),
        error.exit_code,
        _details(error),
    )


def report(
    as_json: bool,
    kind: str,
    code: str | None,
    message: str,
    hint: str | None,
    exit_code: int,
    details: dict[str, object] | None = None,
) -> int:
    """Print an error: one line on stderr, and under ``--json`` its JSON document on stdout;
    return ``exit_code``."""
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
                    **(details or {}),
                }
            }
        )
    return exit_code


def _code(error: CisisError) -> str:
    """The error's code: the service's (SOAP subcode, DMP or XDS code), the signature refusal's
    reason, else the error family (``usage``, ``configuration``, ``credential``, ``tls``…)."""

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
