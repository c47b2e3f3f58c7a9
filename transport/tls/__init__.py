"""Mutually-authenticated TLS: the SSL context every wire uses, the proxies of the environment
read once (:class:`Proxies`), the call deadline (:func:`deadline`) every TLS socket operation
honours, and a requests adapter and session over them.

The context speaks TLS 1.2 at least, verifies the server against the configured CA bundle only
(never the system store, never off), presents the client's authentication certificate and, for the
DMP, offers only the TLS 1.2 cipher suites of PDT-INF-579. The TLS layer never parses XML.

A key that stays on a card (a PKCS#11 credential) cannot be handed to Python's ``ssl``, which only
reads key files. For such a key the context's OpenSSL ``SSL_CTX`` (the very libssl that ``_ssl``
links, reached through ctypes) gets an RSA key whose method sends each signature to the
credential's :class:`~transport.credentials.DigestSigner`; the connection is then held to TLS 1.2
with RSA PKCS#1 v1.5 signatures, the only scheme CPS cards perform (TLS 1.3 requires RSA-PSS).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import secrets
import ssl
import tempfile
import threading
import time
import urllib.request
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from transport import openssl
from transport.credentials import Credential, DigestSigner, Purpose, rsa_public_key
from transport.errors import ConfigurationError, CredentialError

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
    context.sslsocket_class = DeadlineSocket
    return context


# --- The call's deadline: every socket operation bounded by what is left of it ---------------

_deadline: ContextVar[float | None] = ContextVar("cisis_transport_deadline", default=None)


@contextlib.contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Bound every TLS socket operation made inside the block (connect, handshake, each send
    and receive) to ``at``, a :func:`time.monotonic` instant, on top of the per-operation
    timeouts; past it, the operation raises :class:`TimeoutError`. None: no bound."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def deadline_passed() -> bool:
    """Whether the deadline of the enclosing :func:`deadline` block (if any) has passed."""
    at = _deadline.get()
    return at is not None and time.monotonic() >= at


def remaining(timeout: float | None) -> float | None:
    """``timeout`` (seconds, None: none) shortened to what is left of the enclosing
    :func:`deadline`; TimeoutError when nothing is left."""
    at = _deadline.get()
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise TimeoutError("the call's deadline has passed")
    return left if timeout is None else min(timeout, left)


class DeadlineSocket(ssl.SSLSocket):
    """The TLS socket of every context made here: each handshake, send and receive waits no
    longer than its own timeout nor than what is left of the call's :func:`deadline`, so a
    server trickling its answer a byte at a time cannot hold a call beyond it."""

    _timeout: float | None = None  # the timeout asked for; the socket's may be shorter
    _shortened = False

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._shortened = False
        # urllib3 sets the same timeout before every request on a kept-alive connection:
        # setting it again would cost system calls for nothing.
        if super().gettimeout() != value:
            super().settimeout(value)

    def _bound(self) -> None:
        # Before the socket is connected, ssl itself probes it without blocking: left alone.
        if not getattr(self, "_connected", False):
            return
        bounded = remaining(self._timeout)
        if bounded != self._timeout:
            super().settimeout(bounded)
            self._shortened = True
        elif self._shortened:
            # Back to the timeout asked for: far from the deadline again, or a kept-alive
            # connection used by a call without deadline after one with a deadline.
            super().settimeout(self._timeout)
            self._shortened = False

    def do_handshake(self, block: bool = False) -> None:
        self._bound()
        super().do_handshake(block)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._bound()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self._bound()
        return super().recv_into(buffer, nbytes, flags)  # type: ignore[arg-type]

    def send(self, data: Any, flags: int = 0) -> int:
        self._bound()
        return super().send(data, flags)


def load_client_certificate(context: ssl.SSLContext, credential: Credential) -> None:
    """Give ``context`` the credential's certificate, chain and key, once the certificate is
    checked for TLS client use (dates, clientAuth): CredentialError before any handshake.

    ``ssl`` only reads keys from a path, so the key is written encrypted under a random one-time
    password to an anonymous in-memory file (a 0600 temporary file where memfd is missing) that is
    closed as soon as OpenSSL has read it: the key never touches the disk unprotected.
    """
    credential.check(Purpose.TLS_CLIENT)
    if credential.private_key is None:
        _use_external_key(context, credential)
        return
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


# --- Keys outside the process: OpenSSL signs through the credential's signer ------------------

# An external key signs only RSA PKCS#1 v1.5, which TLS 1.3 forbids for CertificateVerify.
_EXTERNAL_SIGALGS = b"RSA+SHA256:RSA+SHA384:RSA+SHA512"
_NID_ALGORITHMS = {672: "rsa-sha256", 673: "rsa-sha384", 674: "rsa-sha512"}  # NID_sha256…
_SSL_CTRL_CHAIN_CERT = 89
_SSL_CTRL_SET_CLIENT_SIGALGS_LIST = 102
_EVP_PKEY_RSA = 6
_APP_DATA = 0  # RSA_set_app_data's ex_data index
_CERT_REQUIRED_FLAGS = 3  # SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT

_SIGN = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_uint,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint),
    ctypes.c_void_p,
)
_RAW = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int
)
_PROTOTYPES: dict[str, openssl.Prototype] = {
    "SSL_CTX_get_options": (ctypes.c_uint64, (ctypes.c_void_p,)),
    "SSL_CTX_get_verify_mode": (ctypes.c_int, (ctypes.c_void_p,)),
    "SSL_CTX_ctrl": (
        ctypes.c_long,
        (ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p),
    ),
    "SSL_CTX_use_certificate": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_void_p)),
    "SSL_CTX_use_PrivateKey": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_void_p)),
    "d2i_X509": (
        ctypes.c_void_p,
        (ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_long),
    ),
    "X509_free": (None, (ctypes.c_void_p,)),
    "BN_bin2bn": (ctypes.c_void_p, (ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p)),
    "BN_free": (None, (ctypes.c_void_p,)),
    "RSA_new": (ctypes.c_void_p, ()),
    "RSA_free": (None, (ctypes.c_void_p,)),
    "RSA_set0_key": (
        ctypes.c_int,
        (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p),
    ),
    "RSA_set_method": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_void_p)),
    "RSA_set_ex_data": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)),
    "RSA_get_ex_data": (ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_int)),
    "RSA_PKCS1_OpenSSL": (ctypes.c_void_p, ()),
    "RSA_meth_dup": (ctypes.c_void_p, (ctypes.c_void_p,)),
    "RSA_meth_set1_name": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_char_p)),
    "RSA_meth_set_sign": (ctypes.c_int, (ctypes.c_void_p, _SIGN)),
    "RSA_meth_set_priv_enc": (ctypes.c_int, (ctypes.c_void_p, _RAW)),
    "RSA_meth_set_priv_dec": (ctypes.c_int, (ctypes.c_void_p, _RAW)),
    "EVP_PKEY_new": (ctypes.c_void_p, ()),
    "EVP_PKEY_assign": (ctypes.c_int, (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)),
    "EVP_PKEY_free": (None, (ctypes.c_void_p,)),
    "ERR_get_error": (ctypes.c_ulong, ()),
    "ERR_error_string_n": (None, (ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t)),
    "ERR_clear_error": (None, ()),
}


@dataclass(frozen=True)
class _ExternalKey:
    signer: DigestSigner
    source: str
    size: int  # bytes of a signature


_external_keys: dict[int, _ExternalKey] = {}
_handles = itertools.count(1)
_failure = threading.local()  # the CredentialError of this thread's last failed handshake


def _openssl_unavailable(reason: str) -> CredentialError:
    return CredentialError(
        "TLS",
        f"a key held on a card cannot be used for TLS here: {reason}",
        hint="use CPython 3.11+ linked with OpenSSL 3 (Debian's python3), or the card's "
        "certificate exported with its key in a PKCS#12 file where policy allows",
    )


@functools.cache
def _openssl() -> tuple[ctypes.CDLL, int]:
    """The functions of the libssl/libcrypto ``_ssl`` uses, and our RSA method's address."""
    try:
        library = openssl.load(_PROTOTYPES)
    except openssl.OpenSSLUnavailable as error:
        raise _openssl_unavailable(str(error)) from None
    method = library.RSA_meth_dup(library.RSA_PKCS1_OpenSSL())
    if not method:
        raise _openssl_unavailable("cannot create an RSA method")
    library.RSA_meth_set1_name(method, b"cisis-transport external signer")
    library.RSA_meth_set_sign(method, _sign_callback)
    library.RSA_meth_set_priv_enc(method, _refuse_raw_callback)
    library.RSA_meth_set_priv_dec(method, _refuse_raw_callback)
    return library, method


def _ssl_ctx(library: ctypes.CDLL, context: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` behind ``context``: CPython's context object holds it right after its
    object header. Checked against the context's options and verify mode before any use."""
    if not isinstance(context, ssl.SSLContext):
        raise _openssl_unavailable(f"{type(context).__name__} is not an ssl.SSLContext")
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if (
        not pointer
        or library.SSL_CTX_get_options(pointer) != context.options
        or context.verify_mode is not ssl.CERT_REQUIRED
        or library.SSL_CTX_get_verify_mode(pointer) != _CERT_REQUIRED_FLAGS
    ):
        raise _openssl_unavailable("this Python's SSL context does not have the expected layout")
    return pointer


def _openssl_error(library: ctypes.CDLL) -> str:
    code = library.ERR_get_error()
    library.ERR_clear_error()
    if not code:
        return "unknown OpenSSL error"
    buffer = ctypes.create_string_buffer(256)
    library.ERR_error_string_n(code, buffer, len(buffer))
    return buffer.value.decode(errors="replace")


def _use_external_key(context: ssl.SSLContext, credential: Credential) -> None:
    """Present ``credential``'s certificate and chain on ``context`` with a key whose every
    signature is made by its signer (the card), for as long as the context lives."""
    signer = credential.signer
    if not isinstance(signer, DigestSigner):
        raise CredentialError(
            credential.source, "this credential's signer cannot sign for TLS (no sign_digest)"
        )
    library, method = _openssl()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    pointer = _ssl_ctx(library, context)
    if not library.SSL_CTX_ctrl(
        pointer, _SSL_CTRL_SET_CLIENT_SIGALGS_LIST, 0, ctypes.c_char_p(_EXTERNAL_SIGALGS)
    ):
        raise _openssl_unavailable(_openssl_error(library))
    for index, certificate in enumerate((credential.certificate, *credential.chain)):
        _add_certificate(
            library, pointer, certificate.public_bytes(serialization.Encoding.DER), index
        )
    public = rsa_public_key(credential.certificate, credential.source)
    handle = next(_handles)
    _external_keys[handle] = _ExternalKey(signer, credential.source, (public.key_size + 7) // 8)
    # A socket keeps its context alive, so the key is needed no longer than the context.
    weakref.finalize(context, _external_keys.pop, handle, None)
    key = _rsa_key(library, method, public.public_numbers(), handle)
    try:
        if library.SSL_CTX_use_PrivateKey(pointer, key) != 1:
            raise CredentialError(
                credential.source,
                f"OpenSSL refused the card's key for TLS: {_openssl_error(library)}",
            )
    finally:
        library.EVP_PKEY_free(key)


def _add_certificate(library: ctypes.CDLL, pointer: int, der: bytes, index: int) -> None:
    buffer = ctypes.create_string_buffer(der, len(der))
    cursor = ctypes.c_void_p(ctypes.addressof(buffer))
    x509 = library.d2i_X509(None, ctypes.byref(cursor), len(der))
    if not x509:
        raise _openssl_unavailable(f"OpenSSL cannot read a certificate: {_openssl_error(library)}")
    try:
        if index == 0:
            done = library.SSL_CTX_use_certificate(pointer, x509) == 1
        else:
            done = library.SSL_CTX_ctrl(pointer, _SSL_CTRL_CHAIN_CERT, 1, x509) == 1
        if not done:
            raise _openssl_unavailable(_openssl_error(library))
    finally:
        library.X509_free(x509)  # the SSL_CTX holds its own reference


def _rsa_key(library: ctypes.CDLL, method: int, numbers: Any, handle: int) -> int:
    """An EVP_PKEY with the public half of the key and our method for its private operations."""
    rsa = library.RSA_new()
    modulus = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    exponent = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
    n = library.BN_bin2bn(modulus, len(modulus), None)
    e = library.BN_bin2bn(exponent, len(exponent), None)
    if not (rsa and n and e and library.RSA_set0_key(rsa, n, e, None) == 1):
        for number in (n, e):
            library.BN_free(number)
        library.RSA_free(rsa)
        raise _openssl_unavailable(_openssl_error(library))
    key = library.EVP_PKEY_new()
    if not (
        library.RSA_set_method(rsa, method) == 1
        and library.RSA_set_ex_data(rsa, _APP_DATA, handle) == 1
        and key
        and library.EVP_PKEY_assign(key, _EVP_PKEY_RSA, rsa) == 1
    ):
        library.RSA_free(rsa)
        library.EVP_PKEY_free(key)
        raise _openssl_unavailable(_openssl_error(library))
    return key


@_SIGN
def _sign_callback(nid: int, digest: int, length: int, out: int, out_length: Any, rsa: int) -> int:
    # Called by OpenSSL inside the handshake, in the thread that makes it: an exception cannot
    # cross OpenSSL, so it is kept for the wire (MutualTLSAdapter.send, the channel's) to raise
    # once the handshake failed.
    library, _method = _openssl()
    key = _external_keys.get(library.RSA_get_ex_data(rsa, _APP_DATA) or 0)
    if key is None:
        return 0
    try:
        algorithm = _NID_ALGORITHMS.get(nid)
        if algorithm is None:
            raise CredentialError(key.source, f"TLS asked for an unsupported hash (NID {nid})")
        signature = key.signer.sign_digest(ctypes.string_at(digest, length), algorithm)
        if len(signature) != key.size:
            raise CredentialError(key.source, "the card returned a signature of the wrong size")
    except CredentialError as error:
        _failure.error = error
        return 0
    except Exception as error:  # any signer failure must end the handshake, not the process
        _failure.error = CredentialError(key.source, f"signing for TLS failed: {error}")
        return 0
    ctypes.memmove(out, signature, len(signature))
    out_length[0] = len(signature)
    return 1


@_RAW
def _refuse_raw_callback(length: int, data: int, out: int, rsa: int, padding: int) -> int:
    # Raw RSA (PSS padding done by OpenSSL, decryption) never reaches the card: the sigalgs
    # set above keep TLS on PKCS#1 v1.5 signatures, so this is only a guard.
    return -1


def take_signing_failure() -> CredentialError | None:
    """The CredentialError that ended this thread's last handshake with a card key, once: a
    wire clears it before sending and raises it, rather than the failed handshake, after."""
    error = getattr(_failure, "error", None)
    _failure.error = None
    return error


class Proxies:
    """The proxies of the environment for HTTPS, read once when made: ``HTTPS_PROXY``,
    ``ALL_PROXY`` and ``NO_PROXY`` (either case, as :func:`urllib.request.getproxies` reads
    them). Scanning the whole environment on every request costs a fifth of a SOAP call's client
    CPU, so whether a host bypasses the proxy under ``NO_PROXY`` (requests' rules: host names,
    domain suffixes, IP addresses and CIDR blocks, ``*``) is also decided once per host."""

    def __init__(self) -> None:
        found = urllib.request.getproxies()
        self._no_proxy = found.pop("no", None)
        self.environment: dict[str, str] = found
        """The proxy URLs by scheme (``https``, ``all``…), as the environment names them."""
        self._bypassed: dict[str, bool] = {}

    def for_url(self, url: str) -> str | None:
        """The proxy URL (as the environment writes it) to reach ``url`` through, or None to
        go direct."""
        if not self.environment or self.bypasses(url):
            return None
        from requests.utils import select_proxy  # only where a proxy is configured

        return select_proxy(url, self.environment)

    def bypasses(self, url: str) -> bool:
        """Whether ``url``'s host is reached directly under ``NO_PROXY``."""
        host = urlsplit(url).netloc
        bypassed = self._bypassed.get(host)
        if bypassed is None:
            # "," is a NO_PROXY naming no host: requests then reads no variable of its own.
            no_proxy = self._no_proxy or ","
            from requests.utils import should_bypass_proxies  # only where a proxy is configured

            bypassed = should_bypass_proxies(url, no_proxy=no_proxy)
            self._bypassed[host] = bypassed  # the same answer whichever thread writes it
        return bypassed


def plain_http_refused(url: str) -> ConfigurationError:
    """The error of every wire asked to send to an ``http://`` URL: the services are HTTPS only."""
    return ConfigurationError(
        f"refusing to send over plain HTTP: {url}",
        hint="the services are reached over https:// only",
    )


_SESSION = frozenset({"MutualTLSAdapter", "ProxySnapshotSession", "create_session"})


def __getattr__(name: str) -> Any:
    # The requests adapter and session live in transport.tls.session, imported on first use:
    # the default wire (urllib3 directly) never needs requests, whose import (beyond urllib3)
    # costs a new process tens of milliseconds.
    if name in _SESSION:
        from transport.tls import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
