"""The OpenSSL that Python's :mod:`ssl` module runs on, called through :mod:`ctypes` for what
neither ``ssl`` nor cryptography offers, and a PKCS#12 (RFC 7292) reader on it.

:func:`load` opens the file of CPython's ``_ssl`` extension, so that the functions found are those
of the very libssl/libcrypto ``ssl`` is linked with, and requires that library to be OpenSSL 3.0
or later and to report the version ``ssl`` was built against. Nothing here logs or keeps a secret.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Prototype = tuple[Any, tuple[Any, ...]]
"""A C function's ctypes result type and argument types."""

_VERSION: dict[str, Prototype] = {"OpenSSL_version_num": (ctypes.c_ulong, ())}


class OpenSSLUnavailable(Exception):
    """OpenSSL cannot be called here, or did not do what was asked; the message says why (never
    with a secret in it)."""


def load(prototypes: Mapping[str, Prototype]) -> ctypes.CDLL:
    """A handle on the ``ssl`` module's OpenSSL whose functions named in ``prototypes`` have their
    types set (each caller gets its own handle, so that types set by one never affect another).

    Raises :class:`OpenSSLUnavailable` on another Python than CPython, when a function is missing,
    or when the library is older than OpenSSL 3.0 or not the version ``ssl`` reports.
    """
    import _ssl  # the extension module: its dependencies are the libraries to call
    import ssl

    if sys.implementation.name != "cpython":
        raise OpenSSLUnavailable(f"{sys.implementation.name} is not CPython")
    try:
        library = ctypes.CDLL(_ssl.__file__)
        for name, (restype, argtypes) in {**_VERSION, **prototypes}.items():
            function = getattr(library, name)
            function.restype = restype
            function.argtypes = argtypes
    except (OSError, AttributeError) as error:
        raise OpenSSLUnavailable(f"OpenSSL functions not reachable ({error})") from None
    if library.OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
        raise OpenSSLUnavailable("the ssl module and its library disagree on OpenSSL's version")
    if ssl.OPENSSL_VERSION_INFO < (3, 0):
        raise OpenSSLUnavailable(f"{ssl.OPENSSL_VERSION} is older than OpenSSL 3.0")
    return library


# --- PKCS#12 ----------------------------------------------------------------------------------

_POINTER = ctypes.POINTER(ctypes.c_void_p)
_PKCS12_PROTOTYPES: dict[str, Prototype] = {
    "d2i_PKCS12": (
        ctypes.c_void_p,
        (ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long),
    ),
    "PKCS12_parse": (
        ctypes.c_int,
        (ctypes.c_void_p, ctypes.c_char_p, _POINTER, _POINTER, _POINTER),
    ),
    "PKCS12_free": (None, (ctypes.c_void_p,)),
    "EVP_PKEY2PKCS8": (ctypes.c_void_p, (ctypes.c_void_p,)),
    "i2d_PKCS8_PRIV_KEY_INFO": (ctypes.c_int, (ctypes.c_void_p, _POINTER)),
    "PKCS8_PRIV_KEY_INFO_free": (None, (ctypes.c_void_p,)),
    "EVP_PKEY_free": (None, (ctypes.c_void_p,)),
    "i2d_X509": (ctypes.c_int, (ctypes.c_void_p, _POINTER)),
    "X509_free": (None, (ctypes.c_void_p,)),
    "OPENSSL_sk_num": (ctypes.c_int, (ctypes.c_void_p,)),
    "OPENSSL_sk_value": (ctypes.c_void_p, (ctypes.c_void_p, ctypes.c_int)),
    "OPENSSL_sk_free": (None, (ctypes.c_void_p,)),
    "OPENSSL_cleanse": (None, (ctypes.c_void_p, ctypes.c_size_t)),
    "ERR_clear_error": (None, ()),
}


@dataclass(frozen=True)
class Pkcs12Contents:
    """What a PKCS#12 holds, as DER, in the split OpenSSL's ``PKCS12_parse`` makes."""

    key: memoryview | None
    """The private key as a PKCS#8 PrivateKeyInfo (RFC 5208), in memory of ours that is zeroed
    when the reading ends."""
    certificate: bytes | None
    """The X.509 certificate of that key."""
    others: tuple[bytes, ...]
    """The other certificates (the chain), in the order OpenSSL lists them."""


@functools.cache
def _pkcs12_library() -> ctypes.CDLL:
    return load(_PKCS12_PROTOTYPES)


@contextlib.contextmanager
def read_pkcs12(data: bytes, password: bytes | None) -> Iterator[Pkcs12Contents]:
    """The contents of the PKCS#12 ``data``, its MAC verified and its bags decrypted by OpenSSL
    with ``password``, for the ``with`` block; the key's bytes are zeroed when the block ends.

    Raises :class:`OpenSSLUnavailable` when OpenSSL cannot be called here or cannot read the file
    (malformed, wrong password, an algorithm its default provider lacks…), without saying more:
    the caller then reads the file another way, which reports the error.
    """
    library = _pkcs12_library()
    if password is not None and b"\0" in password:
        raise OpenSSLUnavailable("a C string cannot hold this password")  # it would be cut short
    cursor = ctypes.c_char_p(data)  # d2i moves this pointer along, never writes the bytes
    pkcs12 = library.d2i_PKCS12(None, ctypes.byref(cursor), len(data))
    if not pkcs12:
        raise _failure(library, "not a PKCS#12 structure")
    key, certificate, stack = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    try:
        parsed = library.PKCS12_parse(
            pkcs12, password, ctypes.byref(key), ctypes.byref(certificate), ctypes.byref(stack)
        )
        if parsed != 1:
            raise _failure(library, "OpenSSL could not verify or decrypt the PKCS#12")
        count = library.OPENSSL_sk_num(stack) if stack else 0
        others = tuple(_der(library, library.OPENSSL_sk_value(stack, i)) for i in range(count))
        certificate_der = _der(library, certificate.value) if certificate else None
        # The key last: once exported, nothing can fail before the block that zeroes it.
        buffer = _pkcs8(library, key.value) if key else None
        try:
            view = None if buffer is None else memoryview(buffer).cast("B")  # bytes-like
            yield Pkcs12Contents(view, certificate_der, others)
        finally:
            if buffer is not None:
                library.OPENSSL_cleanse(buffer, len(buffer))
    finally:
        _free(library, pkcs12, key, certificate, stack)


def _pkcs8(library: ctypes.CDLL, key: int) -> ctypes.Array[ctypes.c_char]:
    """``key`` as PKCS#8 DER in a buffer of our own, which the caller zeroes after use."""
    info = library.EVP_PKEY2PKCS8(key)
    if not info:
        raise _failure(library, "OpenSSL could not export the private key")
    try:
        failure = "OpenSSL could not export the private key"
        return _encoded(library, library.i2d_PKCS8_PRIV_KEY_INFO, info, failure)
    finally:
        library.PKCS8_PRIV_KEY_INFO_free(info)  # which zeroes the key octets it held (p8_pkey.c)


def _der(library: ctypes.CDLL, x509: int) -> bytes:
    return _encoded(library, library.i2d_X509, x509, "OpenSSL could not export a certificate").raw


def _encoded(
    library: ctypes.CDLL, i2d: Any, item: int, failure: str
) -> ctypes.Array[ctypes.c_char]:
    """``item`` DER-encoded by OpenSSL's ``i2d`` function into a buffer of our own (zeroed
    before raising when the encoding comes out short: it may be a key)."""
    size = i2d(item, None)
    if size <= 0:
        raise _failure(library, failure)
    buffer = ctypes.create_string_buffer(size)
    cursor = ctypes.c_void_p(ctypes.addressof(buffer))
    if i2d(item, ctypes.byref(cursor)) != size:
        library.OPENSSL_cleanse(buffer, size)
        raise _failure(library, failure)
    return buffer


def _free(
    library: ctypes.CDLL,
    pkcs12: int,
    key: ctypes.c_void_p,
    certificate: ctypes.c_void_p,
    stack: ctypes.c_void_p,
) -> None:
    """Free what ``PKCS12_parse`` made (each pointer may be null) and the PKCS12 itself."""
    if stack:
        for index in range(library.OPENSSL_sk_num(stack)):
            library.X509_free(library.OPENSSL_sk_value(stack, index))
        library.OPENSSL_sk_free(stack)
    library.X509_free(certificate)  # each *_free ignores a null pointer
    library.EVP_PKEY_free(key)  # which zeroes the key's numbers (BN_clear_free)
    library.PKCS12_free(pkcs12)


def _failure(library: ctypes.CDLL, reason: str) -> OpenSSLUnavailable:
    library.ERR_clear_error()  # the queue is the ssl module's too: leave it as found
    return OpenSSLUnavailable(reason)
