"""A SoftHSM2 token shaped like a CPS card, for the PKCS#11 tests.

The token lives in a temporary directory named by a generated ``SOFTHSM2_CONF``; it holds the
example PKI's card keys and certificates under the ids and labels below, the PERSONNES
intermediate (as a card may carry its issuer), and one key without a certificate.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from transport import examplepki
from transport.credentials import load_pkcs12

MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
LABEL = "CPS-TEST"
PIN = "246810"
SO_PIN = "13579111"
KEYS = {"cps-auth": ("CPS-AUTH", b"\x01"), "cps-sign": ("CPS-SIGN", b"\x02")}
"""Example PKI name → (label, CKA_ID) of the key and of its certificate on the token."""
ORPHAN = ("ORPHAN", b"\x09")
"""A key the token holds without any certificate."""


@dataclass(frozen=True)
class SoftToken:
    """A SoftHSM2 token ready for use: its module, label, user PIN and configuration file."""

    module: str
    label: str
    pin: str
    config: Path


def missing() -> str | None:
    """Why SoftHSM2 tests cannot run here, or None."""
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install '.[pkcs11]')"
    if module() is None:
        return "SoftHSM2's PKCS#11 module is not installed (Debian package softhsm2)"
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not installed (Debian package softhsm2)"
    return None


def module() -> str | None:
    return next((path for path in MODULES if Path(path).is_file()), None)


def write_config(directory: Path) -> Path:
    """A SoftHSM2 configuration keeping its tokens under ``directory``."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    config = directory / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    return config


def create_token(config: Path, pki: examplepki.ExamplePKI) -> SoftToken:
    """Initialise a token with ``softhsm2-util`` and import the card keys and certificates.

    The caller has set ``SOFTHSM2_CONF`` to ``config`` in this process: the module reads it when
    it is first initialised.
    """
    path = module()
    assert path is not None
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            LABEL,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ],
        env={"SOFTHSM2_CONF": str(config), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    import pkcs11
    from pkcs11.util.rsa import decode_rsa_private_key

    token = pkcs11.lib(path).get_token(token_label=LABEL)
    with token.open(rw=True, user_pin=PIN) as session:
        for name, (label, key_id) in KEYS.items():
            credential = load_pkcs12(pki.p12(name), pki.password)
            assert credential.private_key is not None
            der = credential.private_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            _import_key(session, decode_rsa_private_key(der), label, key_id)
            _import_certificate(session, credential.certificate, label, key_id)
        intermediate = load_pkcs12(pki.p12("cps-auth"), pki.password).chain[0]
        _import_certificate(session, intermediate, "IGC-SANTE TEST PERSONNES", b"")
        orphan = load_pkcs12(pki.p12("org-sign"), pki.password).private_key
        assert orphan is not None
        der = orphan.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        _import_key(session, decode_rsa_private_key(der), *ORPHAN)
    return SoftToken(path, LABEL, PIN, config)


def _import_key(session, attributes: dict, label: str, key_id: bytes) -> None:
    from pkcs11 import Attribute

    attributes.update(
        {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.LABEL: label,
            Attribute.ID: key_id,
            Attribute.SIGN: True,
        }
    )
    session.create_object(attributes)


def _import_certificate(session, certificate, label: str, key_id: bytes) -> None:
    from pkcs11 import Attribute, CertificateType, ObjectClass

    attributes = {
        Attribute.CLASS: ObjectClass.CERTIFICATE,
        Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
        Attribute.TOKEN: True,
        Attribute.LABEL: label,
        Attribute.SUBJECT: certificate.subject.public_bytes(),
        Attribute.VALUE: certificate.public_bytes(serialization.Encoding.DER),
    }
    if key_id:
        attributes[Attribute.ID] = key_id
    session.create_object(attributes)
