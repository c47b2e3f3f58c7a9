"""transport.openssl: the ssl module's OpenSSL through ctypes, and its PKCS#12 reader, checked
against cryptography's own PKCS#12 loader on the example PKI's files."""

from __future__ import annotations

import ctypes
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from transport import openssl
from transport.examplepki import ExamplePKI

NAMES = ("org-auth", "org-sign", "cps-auth", "cps-sign")


def _der_element(data: bytes, offset: int) -> tuple[int, int]:
    """(start of the content, end of the element) of the DER element at ``offset``."""
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:  # long form: the next (length & 0x7F) bytes hold the length
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return start, start + length


def corrupt_mac(data: bytes) -> bytes:
    """``data`` with the last byte of its MAC value flipped (PFX → macData → DigestInfo →
    digest, RFC 7292 section 4)."""
    content, _ = _der_element(data, 0)
    _, end = _der_element(data, content)  # version
    _, end = _der_element(data, end)  # authSafe
    mac_data, _ = _der_element(data, end)
    digest_info, _ = _der_element(data, mac_data)
    _, end = _der_element(data, digest_info)  # digestAlgorithm
    _, digest_end = _der_element(data, end)
    assert data[end] == 0x04  # OCTET STRING: the digest
    return data[: digest_end - 1] + bytes([data[digest_end - 1] ^ 1]) + data[digest_end:]


@pytest.mark.parametrize("name", NAMES)
def test_reads_what_cryptography_reads(pki: ExamplePKI, name: str) -> None:
    data = pki.p12(name).read_bytes()
    expected = pkcs12.load_pkcs12(data, pki.password.encode())
    assert expected.key is not None and expected.cert is not None
    with openssl.read_pkcs12(data, pki.password.encode()) as contents:
        assert contents.key is not None
        key = serialization.load_der_private_key(contents.key, None)  # validated here
    assert key.private_numbers() == expected.key.private_numbers()  # type: ignore[union-attr]
    assert contents.certificate == expected.cert.certificate.public_bytes(
        serialization.Encoding.DER
    )
    assert contents.others == tuple(
        item.certificate.public_bytes(serialization.Encoding.DER)
        for item in expected.additional_certs
    )
    assert len(contents.others) == 2  # the intermediate and the root, in the file's order


def test_the_key_bytes_are_zeroed_when_the_reading_ends(pki: ExamplePKI) -> None:
    with openssl.read_pkcs12(pki.p12("org-sign").read_bytes(), pki.password.encode()) as contents:
        key = contents.key
        assert key is not None and any(key)
    assert len(key) > 1000 and not any(key)


def test_the_key_bytes_are_zeroed_when_the_block_fails(pki: ExamplePKI) -> None:
    with (
        pytest.raises(RuntimeError),
        openssl.read_pkcs12(pki.p12("org-sign").read_bytes(), pki.password.encode()) as contents,
    ):
        key = contents.key
        raise RuntimeError("the caller failed")
    assert key is not None and not any(key)


REFUSED = (
    "wrong password",
    "no password",
    "password with a NUL byte",
    "corrupt MAC",
    "truncated",
    "not a PKCS#12",
    "empty",
)


def refused_input(pki: ExamplePKI, case: str) -> tuple[bytes, bytes | None]:
    """The file and password of a case of :data:`REFUSED`."""
    data = pki.p12("org-auth").read_bytes()
    password = pki.password.encode()
    return {
        "wrong password": (data, b"not the password"),
        "no password": (data, None),
        "password with a NUL byte": (data, password + b"\0"),
        "corrupt MAC": (corrupt_mac(data), password),
        "truncated": (data[: len(data) // 2], password),
        "not a PKCS#12": (pki.cert("org-auth").read_bytes(), password),
        "empty": (b"", password),
    }[case]


@pytest.mark.parametrize("case", REFUSED)
def test_refusals_raise_unavailable_and_leave_no_openssl_error(pki: ExamplePKI, case: str) -> None:
    data, password = refused_input(pki, case)
    with pytest.raises(openssl.OpenSSLUnavailable) as caught, openssl.read_pkcs12(data, password):
        pass
    assert pki.password not in str(caught.value)
    # The error queue is shared with the ssl module: a refusal must not leave an entry behind.
    library = openssl.load({"ERR_peek_error": (ctypes.c_ulong, ())})
    assert library.ERR_peek_error() == 0


def test_corrupt_mac_changes_only_the_mac(pki: ExamplePKI) -> None:
    data = pki.p12("org-auth").read_bytes()
    corrupted = corrupt_mac(data)
    assert len(corrupted) == len(data)
    assert sum(a != b for a, b in zip(data, corrupted, strict=True)) == 1
    with pytest.raises(ValueError):  # cryptography refuses it too
        pkcs12.load_pkcs12(corrupted, pki.password.encode())


def test_load_refuses_a_missing_function() -> None:
    with pytest.raises(openssl.OpenSSLUnavailable, match="OpenSSL functions not reachable"):
        openssl.load({"no_such_openssl_function": (None, ())})


def test_load_refuses_another_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.implementation, "name", "pypy")
    with pytest.raises(openssl.OpenSSLUnavailable, match="pypy is not CPython"):
        openssl.load({})


def test_each_handle_has_its_own_prototypes() -> None:
    first = openssl.load({"OPENSSL_cleanse": (None, (ctypes.c_void_p, ctypes.c_size_t))})
    second = openssl.load({})
    assert first.OPENSSL_cleanse.argtypes is not None
    assert second.OPENSSL_cleanse.argtypes is None
