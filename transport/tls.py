"""Mutually-authenticated TLS for requests: the SSL context, the adapter and the session.

The context speaks TLS 1.2 at least, verifies the server against the configured CA bundle only
(never the system store, never off), presents the client's authentication certificate and, for the
DMP, offers only the TLS 1.2 cipher suites of PDT-INF-579. The TLS layer never parses XML.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from requests.adapters import HTTPAdapter

from .credentials import Credential, Purpose
from .errors import ConfigurationError, CredentialError

DMP_CIPHERS = (
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
)
"""The four TLS 1.2 suites the DMP accepts from an LPS (PDT-INF-579v4), OpenSSL names."""


@dataclass(frozen=True)
class TLSSettings:
    """How to reach a service: trust anchors, suites, timeouts (seconds) and pool size.

    ``ciphers`` is None for OpenSSL's secure defaults, or a tuple of TLS 1.2 suite names
    (:data:`DMP_CIPHERS` for the DMP); TLS 1.3 suites are not restricted by it.
    """

    ca_bundle: Path
    ciphers: tuple[str, ...] | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    pool_connections: int = 4
    pool_maxsize: int = 10


def create_context(credential: Credential | None, settings: TLSSettings) -> ssl.SSLContext:
    """An SSL context for a client: TLS >= 1.2, server verified against ``settings.ca_bundle``.

    ``credential`` is the client's authentication certificate (None only to test a refusal).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    bundle = Path(settings.ca_bundle)
    if not bundle.is_file():
        raise ConfigurationError(f"CA bundle not found: {bundle}", hint="set tls.ca_bundle")
    try:
        context.load_verify_locations(cafile=str(bundle))
    except ssl.SSLError as error:
        raise ConfigurationError(
            f"CA bundle {bundle} holds no usable certificate: {error}"
        ) from None
    if settings.ciphers:
        context.set_ciphers(":".join(settings.ciphers))
    if credential is not None:
        load_client_certificate(context, credential)
    return context


def load_client_certificate(context: ssl.SSLContext, credential: Credential) -> None:
    """Give ``context`` the credential's certificate, chain and key, once the certificate is
    checked for TLS client use (dates, clientAuth): CredentialError before any handshake.

    ``ssl`` only reads keys from a path, so the key is written encrypted under a random one-time
    password to an anonymous in-memory file (a 0600 temporary file where memfd is missing) that is
    closed as soon as OpenSSL has read it: the key never touches the disk unprotected.
    """
    credential.check(Purpose.TLS_CLIENT)
    if credential.private_key is None:
        raise CredentialError(
            credential.source, "this credential's key cannot be used by Python's TLS stack"
        )
    one_time = secrets.token_bytes(32)
    key_pem = credential.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(one_time),
    )
    chain_pem = b"".join(
        cert.public_bytes(serialization.Encoding.PEM)
        for cert in (credential.certificate, *credential.chain)
    )
    with _private_file(chain_pem) as cert_path, _private_file(key_pem) as key_path:
        context.load_cert_chain(cert_path, key_path, password=one_time)


@contextlib.contextmanager
def _private_file(data: bytes) -> Iterator[str]:
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("cisis-transport", 0)
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    handle, path = tempfile.mkstemp(prefix="cisis-transport-")
    try:
        _write_all(handle, data)  # mkstemp creates the file 0600
        os.close(handle)
        yield path
    finally:
        os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class MutualTLSAdapter(HTTPAdapter):
    """A requests adapter that always uses its own SSL context, whatever ``verify``/``cert`` say.

    Requests made through it default to ``(connect_timeout, read_timeout)`` when no timeout is
    given, so that a stalled service cannot hang a practitioner's application.
    """

    def __init__(self, context: ssl.SSLContext, settings: TLSSettings) -> None:
        self._context = context
        self._timeout = (settings.connect_timeout, settings.read_timeout)
        super().__init__(
            pool_connections=settings.pool_connections, pool_maxsize=settings.pool_maxsize
        )

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host_params, {"ssl_context": self._context, "cert_reqs": "CERT_REQUIRED"}

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # The context already holds the trust anchors and client certificate; letting requests
        # add its default bundle here would trust every public CA.
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


def create_session(credential: Credential | None, settings: TLSSettings) -> requests.Session:
    """A pooled keep-alive session whose HTTPS requests use mutual TLS with ``credential``.

    Plain ``http://`` is refused. Proxies come from the usual environment variables
    (``HTTPS_PROXY``, ``NO_PROXY``).
    """
    session = requests.Session()
    session.mount("https://", MutualTLSAdapter(create_context(credential, settings), settings))
    session.mount("http://", _RefusePlainHTTP())
    return session


class _RefusePlainHTTP(HTTPAdapter):
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raise ConfigurationError(
            f"refusing to send over plain HTTP: {request.url}",
            hint="the services are reached over https:// only",
        )
