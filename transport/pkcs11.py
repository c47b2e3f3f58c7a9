"""Keys on a smart card (a CPS card) or any PKCS#11 token: the credential, its signer, its errors.

The private key never leaves the token: the certificate is read from it, and each signature (VIHF,
assertion PS, TLS CertificateVerify) is made on it with ``CKM_RSA_PKCS`` over a DigestInfo hashed
here. That one mechanism is what every RSA card offers, and PKCS#1 v1.5 being deterministic, the
signature is byte for byte the one a software key would give. Needs the ``pkcs11`` extra
(python-pkcs11) and the token's PKCS#11 module: the CPS middleware's library in production,
SoftHSM2's in tests.

The PIN comes from the caller, an environment variable or a terminal prompt; it is passed to
``C_Login`` and not kept: one logged-in session per token serves every key of the token for the
process's life (so the card's authentication and signature keys ask for the PIN once).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from transport.credentials import Credential, Purpose, check_usage, hash_for, rsa_public_key
from transport.errors import CredentialError

# DER prefix of the DigestInfo of each hash (RFC 8017 section 9.2, note 1); the digest follows.
_DIGEST_INFO = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),  # RFC 8017 §9.2 note 1
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_EXTRA_HINT = "install the pkcs11 extra: pip install 'cisis-transport[pkcs11]'"
_REINSERT_HINT = "insert the card, then load the credential again (the PIN is asked again)"


def _pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:
        raise CredentialError(
            "PKCS#11", "python-pkcs11 is not installed", hint=_EXTRA_HINT
        ) from None
    return pkcs11


def _gone_errors() -> tuple[type[Exception], ...]:
    """The python-pkcs11 errors that mean the card or the session is no longer there."""
    errors = _pkcs11().exceptions
    return (
        errors.DeviceRemoved,
        errors.TokenNotPresent,
        errors.SessionClosed,
        errors.SessionHandleInvalid,
        errors.UserNotLoggedIn,
        errors.DeviceError,
        errors.TokenNotRecognised,
    )


@dataclass
class _TokenSession:
    """The process's logged-in session on one token, shared by its keys; ``lock`` serialises
    the operations, which PKCS#11 forbids to interleave on a session."""

    session: Any
    label: str
    lock: threading.Lock = field(default_factory=threading.Lock)


_sessions: dict[tuple[str, int, bytes], _TokenSession] = {}
_sessions_lock = threading.Lock()


@dataclass(frozen=True)
class Pkcs11Signer:
    """A :class:`~transport.credentials.DigestSigner` whose key stays on a PKCS#11 token."""

    certificate: x509.Certificate
    source: str
    _key: Any = field(repr=False)
    _token: _TokenSession = field(repr=False)
    _forget: Callable[[], None] = field(repr=False)

    def sign(self, data: bytes, algorithm: str = "rsa-sha256") -> bytes:
        digest = hashes.Hash(hash_for(algorithm))
        digest.update(data)
        return self.sign_digest(digest.finalize(), algorithm)

    def sign_digest(self, digest: bytes, algorithm: str = "rsa-sha256") -> bytes:
        hash_algorithm = hash_for(algorithm)
        if len(digest) != hash_algorithm.digest_size:
            raise ValueError(
                f"a {hash_algorithm.name} digest has {hash_algorithm.digest_size} bytes"
            )
        pkcs11 = _pkcs11()
        try:
            with self._token.lock:
                return bytes(
                    self._key.sign(
                        _DIGEST_INFO[hash_algorithm.name] + digest,
                        mechanism=pkcs11.Mechanism.RSA_PKCS,
                    )
                )
        except _gone_errors() as error:
            self._forget()
            raise CredentialError(
                self.source,
                f"the card was removed or its session ended ({type(error).__name__})",
                hint=_REINSERT_HINT,
            ) from None
        except pkcs11.PKCS11Error as error:
            raise CredentialError(
                self.source, f"the card refused to sign ({type(error).__name__}: {error})"
            ) from None


def load_pkcs11(
    module: str | os.PathLike[str],
    *,
    token_label: str | None = None,
    slot: int | None = None,
    key_label: str | None = None,
    key_id: bytes | None = None,
    pin: str | None = None,
    pin_env: str | None = None,
    purpose: Purpose | None = None,
    now: datetime | None = None,
) -> Credential:
    """Open a key held on a PKCS#11 token, with its certificate read from the token.

    ``module`` is the PKCS#11 library (the CPS middleware's, or SoftHSM2's
    ``/usr/lib/softhsm/libsofthsm2.so``). The token is the one labelled ``token_label``, or in
    slot ``slot``, or the only one present. The key is the private key labelled ``key_label`` or
    with ``CKA_ID`` ``key_id``; with neither, the only one whose certificate allows ``purpose``.
    Its certificate is the token's certificate with the same ``CKA_ID`` (else the same label);
    the chain is the token's certificates that issued it. The PIN is ``pin``, else the variable
    ``pin_env``, else asked on the terminal; it is only needed when the process has not logged in
    to that token yet. With ``purpose``, the certificate is checked for validity and usage.
    Every failure is a CredentialError saying what to do.
    """
    library = _library(str(module))
    pkcs11 = _pkcs11()
    source = str(module)
    try:
        token = _token(library, source, token_label, slot)
        source = f"pkcs11:token={token.label}"
        credential = _load(library, token, source, key_label, key_id, purpose, pin, pin_env)
    except _gone_errors() as error:
        raise CredentialError(
            source, f"the card was removed ({type(error).__name__})", hint=_REINSERT_HINT
        ) from None
    except pkcs11.PKCS11Error as error:
        raise CredentialError(
            source, f"the token failed ({type(error).__name__}: {error})"
        ) from None
    return credential.check(purpose, now=now) if purpose is not None else credential


def _load(
    library: Any,
    token: Any,
    source: str,
    key_label: str | None,
    key_id: bytes | None,
    purpose: Purpose | None,
    pin: str | None,
    pin_env: str | None,
) -> Credential:
    entry, key = _open_key(library, token, source, key_label, key_id, purpose, pin, pin_env)
    with entry.lock:  # the session may already serve another credential's signatures
        source = f"{source};object={key.label or bytes(key.id).hex()}"
        certificate = _certificate(entry.session, key, source)
        _check_key_matches(key, certificate, source)
        chain = tuple(_issuers(entry.session, certificate))
    serial = _serial_key(library.so, token)
    signer = Pkcs11Signer(certificate, source, key, entry, lambda: _forget(serial, entry))
    return Credential(source, certificate, chain, signer)


def close_sessions() -> None:
    """Close this process's sessions on every token, which logs out of the cards: credentials
    loaded before then fail to sign until loaded again (with the PIN). For the end of a
    practitioner's work, a change of card, or a test."""
    with _sessions_lock:
        entries = list(_sessions.values())
        _sessions.clear()
    for entry in entries:
        with entry.lock, contextlib.suppress(_pkcs11().PKCS11Error):
            entry.session.close()


def _library(module: str) -> Any:
    pkcs11 = _pkcs11()
    if os.sep in module and not Path(module).is_file():
        raise CredentialError(
            module,
            "PKCS#11 module not found",
            hint="install the card's middleware (CPS: Cryptolib CPS) or set pkcs11_module to its "
            "library, e.g. /usr/lib/softhsm/libsofthsm2.so for SoftHSM2",
        )
    try:
        return pkcs11.lib(module)
    except pkcs11.PKCS11Error as error:
        raise CredentialError(
            module,
            f"cannot load the PKCS#11 module: {error or type(error).__name__}",
            hint="check that pkcs11_module names the middleware's PKCS#11 library (a .so) and "
            "that its configuration is readable (SoftHSM2: SOFTHSM2_CONF)",
        ) from None


def _token(library: Any, module: str, label: str | None, slot: int | None) -> Any:
    flags = _pkcs11().TokenFlag
    tokens = [
        token
        for token in (present.get_token() for present in library.get_slots(token_present=True))
        if token.flags & flags.TOKEN_INITIALIZED  # a blank card (or SoftHSM2's free slot)
    ]
    if not tokens:
        raise CredentialError(
            module, "no token present (no card in the reader)", hint="insert the CPS card"
        )
    if slot is not None:
        chosen = [token for token in tokens if token.slot.slot_id == slot]
        wanted = f"in slot {slot}"
    elif label is not None:
        chosen = [token for token in tokens if token.label == label]
        wanted = f"labelled {label!r}"
    else:
        chosen, wanted = tokens, "(none named)"
    present = ", ".join(f"{token.label!r} (slot {token.slot.slot_id})" for token in tokens)
    if not chosen:
        raise CredentialError(
            module, f"no token {wanted}", hint=f"tokens present: {present}; insert the right card"
        )
    if len(chosen) > 1:
        raise CredentialError(
            module,
            f"{len(chosen)} tokens match {wanted}",
            hint=f"name one with token_label or slot; tokens present: {present}",
        )
    return chosen[0]


def _serial_key(module: str, token: Any) -> tuple[str, int, bytes]:
    return (module, token.slot.slot_id, bytes(token.serial))


def _forget(serial: tuple[str, int, bytes], entry: _TokenSession) -> None:
    with _sessions_lock:
        if _sessions.get(serial) is entry:
            del _sessions[serial]


def _open_key(
    library: Any,
    token: Any,
    source: str,
    key_label: str | None,
    key_id: bytes | None,
    purpose: Purpose | None,
    pin: str | None,
    pin_env: str | None,
) -> tuple[_TokenSession, Any]:
    """The token's logged-in session (reused, or opened with the PIN) and the key in it."""
    serial = _serial_key(library.so, token)
    with _sessions_lock:
        entry = _sessions.get(serial)
        if entry is not None:
            try:
                with entry.lock:
                    return entry, _find_key(entry.session, source, key_label, key_id, purpose)
            except _gone_errors():
                del _sessions[serial]  # the card was taken out since: log in again
        entry = _TokenSession(_login(library, token, source, pin, pin_env), token.label)
        try:
            key = _find_key(entry.session, source, key_label, key_id, purpose)
        except BaseException:
            entry.session.close()
            raise
        _sessions[serial] = entry
        return entry, key


def _login(library: Any, token: Any, source: str, pin: str | None, pin_env: str | None) -> Any:
    pkcs11 = _pkcs11()
    secret = _pin(token, source, pin, pin_env)
    errors = pkcs11.exceptions
    try:
        return token.open(user_pin=secret)
    except errors.PinIncorrect:
        raise CredentialError(
            source, "wrong PIN" + _tries_left(library, token), hint=_pin_hint(pin_env)
        ) from None
    except errors.PinLocked:
        raise CredentialError(
            source,
            "PIN locked (too many wrong PINs)",
            hint="unblock the card with its PUK (CPS: the CPS management tool or the ANS)",
        ) from None
    except (errors.PinLenRange, errors.PinInvalid):
        raise CredentialError(
            source, "the PIN has the wrong length or characters", hint=_pin_hint(pin_env)
        ) from None
    except errors.PinExpired:
        raise CredentialError(
            source, "the PIN has expired", hint="change it with the card's tool"
        ) from None
    except _gone_errors() as error:
        raise CredentialError(
            source, f"the card is not there ({type(error).__name__})", hint=_REINSERT_HINT
        ) from None
    except pkcs11.PKCS11Error as error:
        raise CredentialError(source, f"login refused ({type(error).__name__}: {error})") from None


def _pin(token: Any, source: str, pin: str | None, pin_env: str | None) -> str:
    if pin is not None:
        return pin
    if pin_env:
        value = os.environ.get(pin_env)
        if value is None:
            raise CredentialError(
                source, f"the PIN variable {pin_env} is not set", hint=f"export {pin_env}=…"
            )
        return value
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(f"PIN of card {token.label!r}: ")
    raise CredentialError(
        source,
        "a PIN is needed and there is no terminal to ask it",
        hint="name the variable holding it with pin_env",
    )


def _pin_hint(pin_env: str | None) -> str:
    where = f"the value of {pin_env}" if pin_env else "the PIN typed"
    return f"check {where}; the card locks itself after a few wrong PINs"


def _tries_left(library: Any, token: Any) -> str:
    """What the token says of the tries left: PKCS#11 gives flags, not a count."""
    flags = _pkcs11().TokenFlag
    try:
        fresh = next(
            present.get_token()
            for present in library.get_slots(token_present=True)
            if present.slot_id == token.slot.slot_id
        ).flags
    except (StopIteration, _pkcs11().PKCS11Error):
        return ""
    if fresh & flags.USER_PIN_LOCKED:
        return "; the PIN is now locked"
    if fresh & flags.USER_PIN_FINAL_TRY:
        return "; one try left before the card locks"
    if fresh & flags.USER_PIN_COUNT_LOW:
        return "; few tries left before the card locks"
    return ""


def _private_keys(session: Any, **attributes: Any) -> list[Any]:
    pkcs11 = _pkcs11()
    template = {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY}
    for name, value in attributes.items():
        template[getattr(pkcs11.Attribute, name)] = value
    return list(session.get_objects(template))


def _find_key(
    session: Any,
    source: str,
    key_label: str | None,
    key_id: bytes | None,
    purpose: Purpose | None,
) -> Any:
    selection: dict[str, Any] = {}
    if key_label is not None:
        selection["LABEL"] = key_label
    if key_id is not None:
        selection["ID"] = key_id
    keys = _private_keys(session, **selection)
    if not selection and purpose is not None:
        keys = [key for key in keys if _allows(session, key, purpose, source)]
    if len(keys) == 1:
        return keys[0]
    available = ", ".join(
        f"{key.label!r} (id {bytes(key.id).hex()})" for key in _private_keys(session)
    )
    wanted = " and ".join(
        f"{name.lower()} {value.hex() if isinstance(value, bytes) else repr(value)}"
        for name, value in selection.items()
    ) or (f"for {purpose.value}" if purpose is not None else "(none named)")
    if not keys:
        raise CredentialError(
            source,
            f"no private key {wanted} on the token",
            hint=f"keys on the token: {available or 'none'}; set key_label or key_id",
        )
    raise CredentialError(
        source,
        f"{len(keys)} private keys match {wanted}",
        hint=f"name one with key_label or key_id; keys on the token: {available}",
    )


def _allows(session: Any, key: Any, purpose: Purpose, source: str) -> bool:
    try:
        check_usage(_certificate(session, key, source), purpose, source)
    except CredentialError:
        return False
    return True


def _certificates(session: Any, **attributes: Any) -> Iterator[x509.Certificate]:
    pkcs11 = _pkcs11()
    template = {pkcs11.Attribute.CLASS: pkcs11.ObjectClass.CERTIFICATE}
    for name, value in attributes.items():
        template[getattr(pkcs11.Attribute, name)] = value
    for found in session.get_objects(template):
        try:
            yield x509.load_der_x509_certificate(bytes(found[pkcs11.Attribute.VALUE]))
        except ValueError:
            continue  # a certificate object the token holds but that is not X.509 DER


def _certificate(session: Any, key: Any, source: str) -> x509.Certificate:
    for attributes in ({"ID": bytes(key.id)}, {"LABEL": key.label}):
        if all(value for value in attributes.values()):
            found = list(_certificates(session, **attributes))
            if found:
                return found[0]
    raise CredentialError(
        source,
        "no certificate for this key on the token (none with the same id or label)",
        hint="the card's certificates are written with its keys; with SoftHSM2, import the "
        "certificate with the key's id",
    )


def _check_key_matches(key: Any, certificate: x509.Certificate, source: str) -> None:
    pkcs11 = _pkcs11()
    numbers = rsa_public_key(certificate, source).public_numbers()
    try:
        modulus = int.from_bytes(bytes(key[pkcs11.Attribute.MODULUS]), "big")
    except pkcs11.PKCS11Error:
        return  # a token that hides the modulus: the signature check of the peer will tell
    if modulus != numbers.n:
        raise CredentialError(source, "the key on the token does not match its certificate")


def _issuers(session: Any, certificate: x509.Certificate) -> Iterator[x509.Certificate]:
    """The token's certificates above ``certificate``, closest first (cards seldom hold any)."""
    others = [found for found in _certificates(session) if found != certificate]
    current = certificate
    while current.issuer != current.subject:
        issuer = next((found for found in others if found.subject == current.issuer), None)
        if issuer is None:
            return
        yield issuer
        others.remove(issuer)
        current = issuer
