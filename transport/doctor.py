"""``doctor``: checks a profile before anyone calls a service, one verdict per check.

Each :class:`Check` says ok, warn or fail, what was seen and, when not ok, what to do. The checks:
each credential loads for its purpose (dates and usages; a warning 30 days before expiry), the CA
bundle reads, the TLS and signature certificates share their DN, the VIHF identity is valid and
agrees with the signing certificate, the LPS fields are present, the téléservices certificate is
named INSI-AUTO/INSI-MANU, and for each endpoint a mutual TLS handshake with the allowed suites
and the server's ``Date`` against the local clock. A configuration problem is a failed check,
never an exception. Details name files, DNs and URLs, never a secret or a patient.
"""

from __future__ import annotations

import enum
import http.client
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from transport.config import CredentialSpec, Profile
from transport.credentials import Credential, Purpose, rfc2253_dn
from transport.errors import CisisError
from transport.teleservices.client import ALLOWED_COMMON_NAMES, emitter_from_certificate
from transport.tls import TLSSettings, create_context, diagnose
from transport.tls.diagnose import TRUST_FIX
from transport.vihf import AuthMode
from transport.xmlsig import VerifySettings

EXPIRY_WARNING = timedelta(days=30)
"""A credential expiring sooner than this is warned about."""
CLOCK_WARNING = timedelta(seconds=60)
"""A local clock further than this from a server's is warned about."""
CLOCK_FAILURE = VerifySettings.clock_skew
"""A local clock further than this from a server's fails: the VIHF's allowed skew (5 min)."""


class Status(enum.StrEnum):
    """The verdict of a check: ``ok``; ``warn`` works now but needs attention; ``fail``."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One check: its ``name`` (``credential tls``, ``tls dmp``…), verdict, one-line ``detail``
    of what was seen, and the ``fix`` for a warning or a failure (None when ok)."""

    name: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class Report:
    """The checks of one run, in order, and their tally."""

    checks: tuple[Check, ...]

    @property
    def counts(self) -> dict[str, int]:
        """How many checks ended in each status, by status name (``ok``, ``warn``, ``fail``)."""
        tally = Counter(check.status for check in self.checks)
        return {str(status): tally[status] for status in Status}

    @property
    def passed(self) -> bool:
        """True when no check failed (warnings allowed)."""
        return all(check.status is not Status.FAIL for check in self.checks)

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready data: ``checks`` (name, status, detail, fix) and ``summary``."""
        return {"checks": [asdict(check) for check in self.checks], "summary": self.counts}


def run_checks(profile: Profile, *, now: datetime | None = None) -> tuple[Check, ...]:
    """Check ``profile``: credentials, CA bundle, identity, LPS fields, then each endpoint.

    ``now`` (UTC) stands for the local clock, for the certificates' dates and against the servers'
    ``Date``; default: the system clock, read when each answer arrives. Never raises for a
    configuration problem: each one is a failed check with the error's message and a fix.
    """
    clock = _clock(now)
    loaded: dict[str, Credential | None] = {}
    checks: list[Check] = []
    roles = [("tls", profile.tls_credential, Purpose.TLS_CLIENT)]
    roles.append(("signature", profile.signature_credential, Purpose.SIGNATURE))
    if profile.insi_credential is not None:
        roles.append(("insi", profile.insi_credential, Purpose.TLS_CLIENT))
    for role, spec, purpose in roles:
        check, loaded[role] = _credential_check(role, spec, purpose, now, clock())
        checks.append(check)
    checks.append(_guard("ca bundle", TRUST_FIX, lambda: _ca_bundle_check(profile, clock())))
    checks.append(_pair_check(loaded["tls"], loaded["signature"]))
    checks.append(
        _guard("vihf identity", "correct [identity]", lambda: _identity_check(profile, loaded))
    )
    checks.append(_lps_check(profile))
    if "tlsi" in profile.endpoints or profile.insi_credential is not None:
        insi = _guard("insi certificate", _INSI_FIX, lambda: _insi_check(profile, loaded))
        checks.append(insi)
    checks.extend(_endpoint_checks(profile, loaded, clock))
    return tuple(checks)


def _clock(now: datetime | None) -> Callable[[], datetime]:
    if now is None:
        return lambda: datetime.now(UTC)
    fixed = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return lambda: fixed


def _guard(name: str, fix: str, check: Callable[[], Check]) -> Check:
    """Run ``check``; a library error becomes a failed check with its message and hint."""
    try:
        return check()
    except CisisError as error:
        return Check(name, Status.FAIL, error.message, error.hint or fix)
    except (OSError, ValueError) as error:  # unreadable or malformed files the loaders let pass
        return Check(name, Status.FAIL, f"{type(error).__name__}: {error}", fix)


# --- credentials ---------------------------------------------------------------------------------

_CREDENTIAL_FIX = {
    "tls": "point [credentials.tls] at the ORG AUTH_CLI certificate or the card's authentication "
    "key, and export its password variable",
    "signature": "point [credentials.signature] at the ORG SIGN certificate or the card's "
    "signature key, and export its password variable",
    "insi": "point [credentials.insi] at the structure's INSI-AUTO/INSI-MANU certificate, and "
    "export its password variable",
}


def _credential_check(
    role: str, spec: CredentialSpec, purpose: Purpose, now: datetime | None, moment: datetime
) -> tuple[Check, Credential | None]:
    """Load through ``spec.load(purpose)`` (whatever holds the key), which checks dates and usages;
    then warn when the certificate ends within :data:`EXPIRY_WARNING`."""
    name = f"credential {role}"
    try:
        credential = spec.load(purpose, now=now)
    except CisisError as error:
        return Check(name, Status.FAIL, error.message, error.hint or _CREDENTIAL_FIX[role]), None
    usages = ", ".join(sorted(credential.key_usages | credential.extended_key_usages))
    end = credential.not_valid_after
    detail = f"{credential.dn} ({usages}) valid until {end:%Y-%m-%d}"
    left = end - moment
    if left < EXPIRY_WARNING:
        fix = (
            f"renew it before {end:%Y-%m-%d} (IGC-Santé) and point [credentials.{role}] at the "
            "new file"
        )
        return Check(name, Status.WARN, f"{detail}: expires in {left.days} days", fix), credential
    return Check(name, Status.OK, detail), credential


def _ca_bundle_check(profile: Profile, moment: datetime) -> Check:
    bundle = Path(profile.ca_bundle)
    try:
        certificates = x509.load_pem_x509_certificates(bundle.read_bytes())
    except OSError as error:
        return Check("ca bundle", Status.FAIL, f"{bundle}: {error.strerror}", TRUST_FIX)
    except ValueError:
        return Check("ca bundle", Status.FAIL, f"{bundle}: no PEM certificate", TRUST_FIX)
    names = "; ".join(rfc2253_dn(certificate.subject) for certificate in certificates)
    detail = f"{bundle}: {len(certificates)} certificate(s): {names}"
    expired = [c for c in certificates if c.not_valid_after_utc < moment]
    if expired:
        gone = "; ".join(rfc2253_dn(certificate.subject) for certificate in expired)
        return Check("ca bundle", Status.WARN, f"{detail}; expired: {gone}", TRUST_FIX)
    return Check("ca bundle", Status.OK, detail)


def _pair_check(tls: Credential | None, signature: Credential | None) -> Check:
    # The DMP wants the authentication and signature certificates of one holder, same DN
    # (CI-SIS DMP volet: the VIHF is signed by the holder authenticated by TLS).
    if tls is None or signature is None:
        return Check(
            "credential pair",
            Status.WARN,
            "not compared: a credential did not load",
            "fix the failed credential above",
        )
    if tls.dn != signature.dn:
        return Check(
            "credential pair",
            Status.FAIL,
            f"the TLS certificate {tls.dn} and the signature certificate {signature.dn} have "
            "different DNs",
            "use the authentication and signature certificates of one holder (ORG AUTH_CLI with "
            "ORG SIGN of the same structure, or the two keys of one card)",
        )
    return Check("credential pair", Status.OK, f"TLS and signature certificates of {tls.dn}")


# --- identity ------------------------------------------------------------------------------------


def _identity_check(profile: Profile, loaded: dict[str, Credential | None]) -> Check:
    """The VIHF as the DMP would validate it, then the attribute its mode takes from the
    signing certificate: the IdNat (CN of a card) as NameID in DIRECTE mode, the structure id
    (OU of an ORG certificate) as Identifiant_Structure in the indirect modes."""
    identity = profile.identity.validate()
    signature = loaded["signature"]
    if signature is None:
        return Check(
            "vihf identity",
            Status.WARN,
            f"{identity.mode} VIHF valid; not compared with the signing certificate (not loaded)",
            "fix the signature credential above",
        )
    if identity.mode is AuthMode.DIRECTE:
        if signature.idnat is None:
            return Check(
                "vihf identity",
                Status.FAIL,
                f"DIRECTE mode, but the signing certificate {signature.dn} is not a card's (its CN "
                "is no IdNat)",
                "sign with the card's signature key, or use an indirect mode with ORG SIGN",
            )
        if identity.subject_id != signature.idnat:
            return Check(
                "vihf identity",
                Status.FAIL,
                f"NameID {identity.subject_id} is not the IdNat {signature.idnat} of the signing "
                "certificate",
                f'set [identity] subject_id = "{signature.idnat}"',
            )
        agreed = f"NameID {identity.subject_id}"
    else:
        unit = signature.organizational_unit
        if identity.structure_id != unit:
            return Check(
                "vihf identity",
                Status.FAIL,
                f"Identifiant_Structure {identity.structure_id} is not the OU {unit} of the "
                f"signing certificate {signature.dn}",
                f'set [identity] structure_id = "{unit}", or sign with the ORG SIGN certificate '
                "of that structure",
            )
        agreed = f"Identifiant_Structure {identity.structure_id}"
    return Check(
        "vihf identity",
        Status.OK,
        f"{identity.mode}: Issuer {signature.dn}, {agreed} matches the signing certificate",
    )


def _lps_check(profile: Profile) -> Check:
    lps = profile.identity.lps
    fields = {"name": lps.name, "version": lps.version, "homologation_id": lps.homologation_id}
    missing = [key for key, value in fields.items() if not (value or "").strip()]
    if missing:
        return Check(
            "lps",
            Status.FAIL,
            f"[lps] lacks {', '.join(missing)} (LPS_Nom, LPS_Version and LPS_ID_HOMOLOGATION_DMP "
            "are required in every VIHF)",
            "fill [lps] name, version and homologation_id (the CNDA homologation number)",
        )
    idam = profile.tlsi_idam or f"{lps.homologation_id} (the homologation id)"
    return Check(
        "lps",
        Status.OK,
        f"{lps.name} {lps.version}, homologation {lps.homologation_id}, "
        f"instance {lps.instance_id or '(none)'}, téléservices IDAM {idam}",
    )


_INSI_FIX = (
    "give [credentials.insi] the structure's ORG AUTH_CLI certificate named INSI-AUTO (batch) or "
    "INSI-MANU (desk), or call the téléservices in card mode"
)


def _insi_check(profile: Profile, loaded: dict[str, Credential | None]) -> Check:
    """The certificate of the téléservices' certificate mode: ``[credentials.insi]``, else the
    TLS one (as :meth:`TeleservicesClient.from_profile` picks it). A wrong CN fails when the
    credential was given for that purpose, and only warns on the TLS one (card mode remains)."""
    explicit = profile.insi_credential is not None
    credential = loaded["insi" if explicit else "tls"]
    if credential is None:
        return Check(
            "insi certificate",
            Status.WARN,
            "not checked: the credential did not load",
            "fix the failed credential above",
        )
    emitter = emitter_from_certificate(credential)
    if credential.common_name in ALLOWED_COMMON_NAMES:
        return Check(
            "insi certificate",
            Status.OK,
            f"CN {credential.common_name}, emitter (OU) {emitter}: accepted in certificate mode",
        )
    detail = (
        f"{credential.source} is named {credential.common_name!r}, not INSI-AUTO or INSI-MANU: "
        "the téléservices refuse it in certificate mode (desir_560)"
    )
    return Check("insi certificate", Status.FAIL if explicit else Status.WARN, detail, _INSI_FIX)


# --- endpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """What one exchange with an endpoint showed."""

    protocol: str
    cipher: str
    server: x509.Certificate
    status: int
    date: str | None
    received: datetime


def _endpoint_checks(
    profile: Profile, loaded: dict[str, Credential | None], clock: Callable[[], datetime]
) -> list[Check]:
    if not profile.endpoints:
        return [
            Check(
                "endpoints",
                Status.WARN,
                f"{profile.source} names no endpoint: TLS and clock checks skipped",
                "add [endpoints] dmp/tlsi to the profile, or pass --endpoint URL",
            )
        ]
    checks = []
    for family, url in profile.endpoints.items():
        role = "insi" if family == "tlsi" and profile.insi_credential is not None else "tls"
        credential = loaded.get(role)
        if credential is None:
            checks.append(
                Check(
                    f"tls {family}",
                    Status.WARN,
                    f"{url} not checked: the {role} credential did not load",
                    "fix the failed credential above",
                )
            )
            continue
        settings = profile.tls_settings(dmp=family == "dmp")
        answer, check = _tls_check(family, url, credential, settings, clock)
        checks.append(check)
        if answer is not None:
            checks.append(_clock_check(family, answer))
    return checks


def _tls_check(
    family: str,
    url: str,
    credential: Credential,
    settings: TLSSettings,
    clock: Callable[[], datetime],
) -> tuple[_Answer | None, Check]:
    """Handshake and one GET, telling apart: refused connection, untrusted server, client
    certificate refused, nothing in common; the request's answer carries the server's Date."""
    name = f"tls {family}"
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 443}"
    if parts.scheme != "https" or not parts.hostname:
        return None, Check(name, Status.FAIL, f"{url} is not an https:// URL", "fix [endpoints]")
    try:
        answer = _exchange(url, credential, settings, clock)
    except _AfterHandshake as error:
        found = diagnose.after_handshake(where, error.cause, credential, settings.read_timeout)
    except CisisError as error:
        return None, Check(name, Status.FAIL, error.message, error.hint or TRUST_FIX)
    except ssl.SSLError as error:
        found = diagnose.tls_failure(url, error, credential, settings)
    except OSError as error:
        found = diagnose.connection_failure(url, error, settings.connect_timeout)
    else:
        server = answer.server
        return answer, Check(
            name,
            Status.OK,
            f"{answer.protocol} {answer.cipher} with {where}; server {rfc2253_dn(server.subject)} "
            f"issued by {rfc2253_dn(server.issuer)}",
        )
    return None, Check(name, Status.FAIL, found.message, found.hint)


def _exchange(
    url: str, credential: Credential, settings: TLSSettings, clock: Callable[[], datetime]
) -> _Answer:
    parts = urlsplit(url)
    context = create_context(credential, settings)
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port or 443, timeout=settings.connect_timeout, context=context
    )
    try:
        connection.connect()
        tls = connection.sock
        assert isinstance(tls, ssl.SSLSocket)
        tls.settimeout(settings.read_timeout)
        protocol, cipher = tls.version() or "?", tls.cipher()[0]
        server = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
        # Any HTTP answer carries Date; a GET changes nothing on a SOAP endpoint.
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request("GET", path, headers={"User-Agent": "cisis-transport doctor"})
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as error:
            raise _AfterHandshake(error) from error
        received = clock()
        return _Answer(
            protocol, cipher, server, response.status, response.getheader("Date"), received
        )
    finally:
        connection.close()


class _AfterHandshake(Exception):
    """The exchange failed once our side of the handshake was done: in TLS 1.3 that is where
    a server refusing our certificate says so (or just hangs up)."""

    def __init__(self, cause: OSError | http.client.HTTPException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _clock_check(family: str, answer: _Answer) -> Check:
    name = f"clock {family}"
    if answer.date is None:
        return Check(
            name,
            Status.WARN,
            f"the server sent no Date header (HTTP {answer.status}): clock not compared",
            "compare the computer's clock with a time server (NTP)",
        )
    try:
        server_time = parsedate_to_datetime(answer.date)
    except (TypeError, ValueError):
        return Check(
            name,
            Status.WARN,
            f"unreadable Date header {answer.date!r}: clock not compared",
            "compare the computer's clock with a time server (NTP)",
        )
    if server_time.tzinfo is None:
        server_time = server_time.replace(tzinfo=UTC)
    skew = answer.received - server_time
    seconds = skew.total_seconds()
    detail = (
        f"local clock {abs(seconds):.1f} s {'ahead of' if seconds >= 0 else 'behind'} the server "
        f"(Date: {answer.date})"
    )
    fix = (
        "synchronise the computer's clock (NTP): a VIHF more than "
        f"{CLOCK_FAILURE.total_seconds():g} s off the service's time is refused"
    )
    if abs(skew) > CLOCK_FAILURE:
        return Check(name, Status.FAIL, detail, fix)
    if abs(skew) > CLOCK_WARNING:
        return Check(name, Status.WARN, detail, fix)
    return Check(name, Status.OK, detail)
