"""What a failed connection means and what to do about it: one ssl or socket error → message + hint.

Used by the channel for every call and by ``doctor`` for its checks, so that both say the same
thing about the same failure. The categories follow OpenSSL's reason codes (``ssl.SSLError.reason``)
and X.509 verification codes (``X509_V_ERR_*``, RFC 5280 path validation). Messages name hosts,
DNs and files, never a secret.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from transport.credentials import Credential, rfc2253_dn
from transport.errors import CisisError
from transport.tls import TLSSettings, create_context

TRUST_FIX = (
    "set [tls] ca_bundle to a PEM file holding the CA that issued the server's certificate "
    "(IGC-Santé roots and intermediates for the real services, the stub's ca-bundle.pem for a stub)"
)
"""What to do when the server's certificate is not trusted."""

NETWORK_FIX = "check the URL in [endpoints], the network and any firewall or proxy on the way"
"""What to do when a service cannot be reached or does not answer."""

CLIENT_REFUSED = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_ACCESS_DENIED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    }
)
"""OpenSSL reasons of an alert by which the server refuses our client certificate."""

_NOTHING_IN_COMMON = frozenset(
    {
        "NO_CIPHERS_AVAILABLE",
        "NO_SHARED_CIPHER",
        "NO_PROTOCOLS_AVAILABLE",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "UNSUPPORTED_PROTOCOL",
    }
)
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
_CERT_HAS_EXPIRED = 10  # X509_V_ERR_CERT_HAS_EXPIRED
_UP_FIX = (
    "check the URL in [endpoints] and that the service is up (a local stub: `cisis-transport stub`)"
)


@dataclass(frozen=True)
class Diagnosis:
    """One failure told in words: what was seen (``message``) and what to do (``hint``)."""

    message: str
    hint: str


def where(url: str) -> str:
    """``host:port`` of an https URL (port 443 when none is written), as messages name it."""
    parts = urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError:
        port = 443
    return f"{parts.hostname}:{port}"


def tls_failure(
    url: str, error: ssl.SSLError, credential: Credential | None, settings: TLSSettings
) -> Diagnosis:
    """A TLS failure with ``url``'s server: untrusted or misnamed server, our certificate
    refused, nothing in common, not TLS at all."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return verification_failure(url, error, settings)
    return handshake_failure(where(url), error, credential, settings)


def verification_failure(
    url: str, error: ssl.SSLCertVerificationError, settings: TLSSettings
) -> Diagnosis:
    """The server's certificate was refused: another host name, expired, or another CA (named
    when a second, unverified handshake can read it)."""
    reason = error.verify_message or str(error)
    if error.verify_code == _HOSTNAME_MISMATCH:
        return Diagnosis(
            f"the server's certificate does not name {urlsplit(url).hostname} ({reason})",
            "use the host name the server's certificate names in [endpoints]",
        )
    if error.verify_code == _CERT_HAS_EXPIRED:
        return Diagnosis(
            f"the server's certificate has expired ({reason})",
            "tell the service's operator; nothing to change on this side",
        )
    issuer = _server_issuer(url, settings)
    bundle = Path(settings.ca_bundle)
    if issuer is None:
        seen = (
            "its issuer could not be read (the server ended the handshake; our certificate "
            "is not shown to an unverified server)"
        )
    else:
        seen = f"it is issued by {rfc2253_dn(issuer)}"
        if any(ca.subject == issuer for ca in _bundle_certificates(bundle)):
            seen += ", a name the bundle holds but with another key (a different CA)"
    return Diagnosis(
        f"server certificate not trusted by the CA bundle {bundle} (certificate verify failed: "
        f"{reason}): {seen}",
        TRUST_FIX,
    )


def handshake_failure(
    place: str, error: ssl.SSLError, credential: Credential | None, settings: TLSSettings
) -> Diagnosis:
    """A handshake with ``place`` (``host:port``) that failed for another reason than the
    server's certificate."""
    reason = error.reason or str(error)
    if reason in CLIENT_REFUSED:
        return Diagnosis(f"{place} refused {_ours(credential)} ({reason})", client_fix(credential))
    if reason in _NOTHING_IN_COMMON:
        suites = ", ".join(settings.ciphers) if settings.ciphers else "OpenSSL's secure defaults"
        return Diagnosis(
            f"no protocol or cipher suite in common with {place} ({reason}); offered: TLS 1.2+ "
            f"with {suites}",
            "the service must accept TLS 1.2 or 1.3 with one of the offered suites",
        )
    if reason == "WRONG_VERSION_NUMBER":
        return Diagnosis(
            f"{place} does not speak TLS ({reason})",
            "check the port in [endpoints]: it may be a plain HTTP one",
        )
    return Diagnosis(f"TLS handshake with {place} failed ({reason})", TRUST_FIX)


def after_handshake(
    place: str,
    cause: OSError | http.client.HTTPException,
    credential: Credential | None,
    read_timeout: float,
) -> Diagnosis:
    """The exchange failed once our side of the handshake was done: in TLS 1.3 that is where a
    server refusing our certificate says so (an alert), or just hangs up."""
    if isinstance(cause, ssl.SSLError) and cause.reason in CLIENT_REFUSED:
        return Diagnosis(
            f"{place} refused {_ours(credential)} ({cause.reason})", client_fix(credential)
        )
    if isinstance(cause, TimeoutError):
        return Diagnosis(
            f"no HTTP answer from {place} within {read_timeout:g} s after the handshake",
            NETWORK_FIX,
        )
    # An EOF or a reset right after a completed handshake, before any HTTP answer: a TLS 1.3
    # server whose refusal alert was lost when it closed the connection.
    reason = getattr(cause, "reason", None) or str(cause) or type(cause).__name__
    return Diagnosis(
        f"{place} hung up right after the handshake ({reason}): most likely it refused "
        f"{_ours(credential)}",
        client_fix(credential),
    )


def connection_failure(url: str, error: OSError, connect_timeout: float) -> Diagnosis:
    """A TCP connection to ``url``'s server that could not be made: refused, unknown host,
    no answer within ``connect_timeout`` seconds, or another socket error."""
    place = where(url)
    if isinstance(error, ConnectionRefusedError):
        return Diagnosis(f"connection refused by {place}", _UP_FIX)
    if isinstance(error, socket.gaierror):
        return Diagnosis(f"host {urlsplit(url).hostname} not found", "check the URL in [endpoints]")
    if isinstance(error, TimeoutError):
        return Diagnosis(f"no answer from {place} within {connect_timeout:g} s", NETWORK_FIX)
    reason = error.strerror or str(error) or type(error).__name__
    return Diagnosis(f"cannot reach {place} ({reason})", NETWORK_FIX)


def client_fix(credential: Credential | None) -> str:
    """What to do when the service refuses our client certificate."""
    if credential is None:
        return "configure the client certificate the service expects ([credentials.tls])"
    return (
        "the service does not accept this certificate: use one from the CA it expects "
        "(IGC-Santé ORG AUTH_CLI or card for the real services; the stub's own PKI for a stub), "
        f"and check that {credential.source} is valid and not revoked"
    )


def _ours(credential: Credential | None) -> str:
    if credential is None:
        return "the connection (no client certificate was presented)"
    return f"our client certificate {credential.dn} issued by {credential.issuer_dn}"


def _server_issuer(url: str, settings: TLSSettings) -> x509.Name | None:
    """The issuer of the certificate a server presents, read over a handshake that does not
    verify it, presents no client certificate and sends nothing: only to name it in the message."""
    parts = urlsplit(url)
    try:
        context = create_context(None, settings)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(
                (parts.hostname, parts.port or 443),
                timeout=settings.connect_timeout,
            ) as raw,
            context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError, CisisError):
        return None
    return x509.load_der_x509_certificate(der).issuer if der else None


def _bundle_certificates(bundle: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(bundle.read_bytes())
    except (OSError, ValueError):
        return []
