"""One exception hierarchy for everything the library can refuse or fail at.

Every error carries a message a person can act on and, where the service or the spec defines one,
the code that identifies it (SOAP fault code and subcode, service error code, severity). The command
line maps each family to its exit code: usage and input errors to 2, service answers to 1,
credential, TLS and transport failures to 3.

::

    CisisError (3)
    ├── UsageError (2)
    │   ├── ConfigurationError
    │   ├── ValidationError
    │   │   └── VihfValidationError
    │   └── MalformedXMLError: bytes that are not well-formed XML, or hold a DTD
    ├── CredentialError (3)
    ├── TransportError (3): the exchange did not complete
    │   ├── ConnectError: no connection, or lost before any answer (a read may be retried)
    │   ├── TLSError
    │   └── MtomError
    ├── SignatureError (3)
    └── ServiceError (1): the service answered, and it is an error
        ├── SoapFault (FaultDetail records)
        ├── DmpError
        ├── XdsError (RegistryError records)
        └── IntegrityError

:class:`MalformedXMLError` says what the bytes are, not who sent them: a file or value the
caller gives is bad input (2). Where the bytes come from a peer, the code that received them
says what it means: the exchange channel turns an answer that is not XML into a
:class:`TransportError` (the service did not speak SOAP), a stub answers a request that is not
XML with a SOAP ``Sender`` fault (W3C SOAP 1.2 part 1 §5.4.6). It is not a
:class:`SignatureError`: bytes that are not XML were not signed; a verifier handed a signature
document that is not XML refuses it itself (reason ``malformed``).
"""

from __future__ import annotations

from dataclasses import dataclass


class CisisError(Exception):
    """Base class of every error raised by cisis-transport.

    ``hint`` says what to do about it, when the library knows.
    """

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(CisisError):
    """Bad input from the caller: an option, a profile, a value that cannot be sent."""

    exit_code = 2


class ConfigurationError(UsageError):
    """A profile or setting is missing, unreadable or inconsistent."""


class ValidationError(UsageError):
    """A value would be refused by the service; ``field`` names it."""

    def __init__(self, field: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {message}", hint=hint)
        self.field = field


class VihfValidationError(ValidationError):
    """The VIHF lacks an attribute its mode requires, or holds a malformed value."""


class MalformedXMLError(UsageError):
    """XML given to :func:`transport.xml.parse_xml` is not well-formed, or declares a DTD or
    entities (refused so that XXE and entity expansion cannot happen, W3C XML 1.0 §2.8)."""


class CredentialError(CisisError):
    """A key or certificate cannot be loaded or used: ``source`` names the file or token."""

    def __init__(self, source: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(f"{source}: {reason}", hint=hint)
        self.source = source
        self.reason = reason


class TransportError(CisisError):
    """The exchange did not complete: connection refused, timeout, broken HTTP.

    ``status`` is the HTTP status code (RFC 9110 §15) of the answer when the failure is an answer
    that is not a SOAP 1.2 answer to the request (``503``, ``429``, ``500`` without a fault…), None
    when no HTTP answer came.
    """

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class ConnectError(TransportError):
    """No connection could be made, or it was lost before any answer: refused, unreachable,
    closed early, the proxy failed. Nothing came back, so an idempotent read may be retried."""


class TLSError(TransportError):
    """The TLS handshake failed: untrusted server, refused client certificate, protocol mismatch."""


class MtomError(TransportError):
    """A multipart/related (MTOM/XOP) body is malformed, or an attachment changed while sent."""


class SignatureError(CisisError):
    """An XML signature or the certificate behind it was refused.

    ``reason`` is one of: ``unsigned``, ``invalid-signature``, ``untrusted``, ``expired``,
    ``not-yet-valid``, ``key-usage``, ``wrapping``, ``stale``, ``malformed``, ``profile`` (an
    algorithm or transform outside the signing profile).
    """

    def __init__(self, reason: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class ServiceError(CisisError):
    """The service answered, and the answer is an error."""

    exit_code = 1


@dataclass(frozen=True)
class FaultDetail:
    """A service-level error found in a SOAP fault detail (for instance ``siram:Erreur``).

    ``severity`` is the service's own word (``erreur``, ``fatale``, ``error``…) when given.
    """

    code: str
    message: str = ""
    severity: str | None = None
    message_id: str | None = None


class SoapFault(ServiceError):
    """A SOAP 1.2 fault: ``code`` (``Sender``, ``Receiver``…), ``subcodes`` outermost first.

    ``subcode`` is the innermost subcode's local name (``DMPInvalidCertificate``, ``siram_40``…),
    ``service_code`` and ``severity`` come from the first structured fault detail when present.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: str,
        subcodes: tuple[str, ...] = (),
        details: tuple[FaultDetail, ...] = (),
        hint: str | None = None,
    ) -> None:
        label = subcodes[-1] if subcodes else code
        super().__init__(f"SOAP fault {label}: {reason}", hint=hint)
        self.reason = reason
        self.code = code
        self.subcodes = subcodes
        self.details = details

    @property
    def subcode(self) -> str | None:
        """Local name of the innermost subcode, or None."""
        return self.subcodes[-1].rpartition(":")[2] if self.subcodes else None

    @property
    def service_code(self) -> str | None:
        """Code of the first service error in the fault detail, or None."""
        return self.details[0].code if self.details else None

    @property
    def severity(self) -> str | None:
        """Severity of the first service error in the fault detail, or None."""
        return self.details[0].severity if self.details else None


class DmpError(ServiceError):
    """The DMP refused a patient or authorization transaction: an HL7v3 acknowledgement ``AE`` or
    ``AR``, or an ``output/status`` other than ``DMPOk``.

    ``transaction`` names it (``TD0.2``…); ``code`` is the DMP code (``DMPAccessDenied``,
    ``DMPNotFound``…); ``details`` every (code, text) pair of the answer, first one first.
    """

    def __init__(
        self,
        transaction: str,
        code: str,
        text: str = "",
        *,
        details: tuple[tuple[str, str], ...] = (),
        hint: str | None = None,
    ) -> None:
        message = f"{transaction} refused: {code}" + (f": {text}" if text else "")
        super().__init__(message, hint=hint)
        self.transaction = transaction
        self.code = code
        self.text = text
        self.details = details or ((code, text),)


@dataclass(frozen=True)
class RegistryError:
    """One XDS.b ``rs:RegistryError`` (ebRS 3.0 §2.1.6, IHE ITI TF-3 §4.2.4): ``code``
    (``XDSRegistryError``, ``DMPAccessDenied``…), ``context`` (the text), ``severity``
    (``Error``/``Warning``), ``location`` when the service names one."""

    code: str
    context: str
    severity: str = "Error"
    location: str | None = None

    @property
    def is_error(self) -> bool:
        """True for an error, False for a warning."""
        return self.severity == "Error"


class XdsError(ServiceError):
    """An XDS.b registry or repository answered ``Failure`` or ``PartialSuccess``.

    ``status`` is the ebRS status URN; ``errors`` the :class:`RegistryError` list, errors and
    warnings; ``code`` the first error's code.
    """

    def __init__(
        self,
        transaction: str,
        status: str,
        errors: tuple[RegistryError, ...],
        *,
        hint: str | None = None,
    ) -> None:
        failing = [error for error in errors if error.is_error] or list(errors)
        summary = "; ".join(f"{error.code}: {error.context}" for error in failing[:3])
        label = status.rpartition(":")[2]
        super().__init__(f"{transaction} {label}" + (f": {summary}" if summary else ""), hint=hint)
        self.transaction = transaction
        self.status = status
        self.errors = errors

    @property
    def code(self) -> str | None:
        """The code of the first error (a warning's when there is no error), or None."""
        failing = [error for error in self.errors if error.is_error] or list(self.errors)
        return failing[0].code if failing else None


class IntegrityError(ServiceError):
    """A retrieved document differs from what the registry says of it (size or SHA-1 hash)."""

    def __init__(self, document_unique_id: str, what: str, expected: str, received: str) -> None:
        super().__init__(
            f"document {document_unique_id}: {what} is {received}, the registry says {expected}",
            hint="the document was not kept; retry, and report it to the service if it persists",
        )
        self.document_unique_id = document_unique_id
        self.expected = expected
        self.received = received
