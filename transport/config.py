"""Profiles: one TOML file describing who calls, with which keys, to which endpoints.

Paths in a profile are relative to the profile's own folder. Secrets never sit in the file: a
credential names the environment variable holding its password (``password_env``), or for a card
(PKCS#11) its PIN (``pin_env``; absent: asked on the terminal). See the README for the format;
:func:`example_profile` builds the zero-configuration one over the example PKI.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from transport import examplepki
from transport.credentials import Credential, Purpose, load_pem, load_pkcs12
from transport.errors import ConfigurationError
from transport.soap.channel import DEFAULT_DEADLINE, CallOptions, RetryPolicy
from transport.tls import DMP_CIPHERS, TLSSettings
from transport.vihf import (
    AC_SMARTCARD_PKI,
    MODE_ATTRIBUTE_NAMES,
    PROFESSION_SYSTEM,
    SPECIALTY_SYSTEM,
    AuthMode,
    Code,
    Lps,
    Vihf,
    VihfOptions,
)
from transport.xmlsig import SIGNATURE_ALGORITHMS


@dataclass(frozen=True)
class Pkcs11Spec:
    """A key on a PKCS#11 token (a CPS card): the module (the middleware's library), the token
    (by label or slot id; None: the only one present), the key (by label or ``CKA_ID`` bytes;
    None: the only one fit for the purpose) and the variable holding the PIN (None: prompt)."""

    module: str
    token_label: str | None = None
    slot: int | None = None
    key_label: str | None = None
    key_id: bytes | None = None
    pin_env: str | None = None


@dataclass(frozen=True)
class CredentialSpec:
    """Where a credential lives: a PKCS#12 file, a PEM certificate and key, or a PKCS#11 token,
    and the variable that holds its password (None: no password). For a token, ``password`` is
    the PIN (a program's own profile only: a profile file names ``pin_env``)."""

    pkcs12: Path | None = None
    certificate: Path | None = None
    key: Path | None = None
    password: str | None = field(default=None, repr=False)
    password_env: str | None = None
    pkcs11: Pkcs11Spec | None = None

    def load(self, purpose: Purpose, *, now: datetime | None = None) -> Credential:
        """Load and check the credential for ``purpose``; a token's PIN is asked at most once
        per process (see :func:`transport.pkcs11.load_pkcs11`)."""
        if self.pkcs11 is not None:
            from transport.pkcs11 import load_pkcs11  # python-pkcs11 is an optional extra

            token = self.pkcs11
            return load_pkcs11(
                token.module,
                token_label=token.token_label,
                slot=token.slot,
                key_label=token.key_label,
                key_id=token.key_id,
                pin=self.password,
                pin_env=token.pin_env,
                purpose=purpose,
                now=now,
            )
        if self.pkcs12 is not None:
            return load_pkcs12(
                self.pkcs12,
                self.password,
                password_env=self.password_env,
                purpose=purpose,
                now=now,
            )
        if self.certificate is not None:
            return load_pem(
                self.certificate,
                self.key,
                self.password,
                password_env=self.password_env,
                purpose=purpose,
                now=now,
            )
        raise ConfigurationError(
            "a credential needs `pkcs12`, `certificate` and `key`, or `pkcs11_module`"
        )


@dataclass(frozen=True)
class Profile:
    """Everything needed to call the services as one user of one structure.

    ``identity`` is the VIHF without a patient (each call adds its own); ``endpoints`` maps a
    service family (``dmp``, ``tlsi``) to its base URL. ``tlsi_idam`` is the software's CNDA
    authorisation number for the téléservices (``[lps] idam``; None: the homologation id is
    sent); ``insi_credential`` the INSI-AUTO/INSI-MANU certificate of the téléservices'
    certificate mode (``[credentials.insi]``; None: the ``tls`` one). ``deadline`` bounds each
    call (seconds, connection and whole answer included; ``[tls] deadline``), ``retries`` is how
    many times a read may be sent again (``[tls] retries``).
    """

    identity: Vihf
    tls_credential: CredentialSpec
    signature_credential: CredentialSpec
    ca_bundle: Path
    endpoints: Mapping[str, str]
    vihf_options: VihfOptions = field(default_factory=VihfOptions)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    source: str = "<built-in>"
    tlsi_idam: str | None = None
    insi_credential: CredentialSpec | None = None
    deadline: float = DEFAULT_DEADLINE
    retries: int = RetryPolicy.attempts - 1

    def tls_settings(self, *, dmp: bool = True) -> TLSSettings:
        """TLS settings for a DMP endpoint (restricted suites) or another service."""
        return TLSSettings(
            ca_bundle=self.ca_bundle,
            ciphers=DMP_CIPHERS if dmp else None,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )

    def call_options(self) -> CallOptions:
        """The channel options of the profile: its deadline and its retries of the reads."""
        return CallOptions(self.deadline, RetryPolicy(attempts=self.retries + 1))

    def endpoint(self, family: str) -> str:
        """The base URL of a service family, or ConfigurationError naming the missing key."""
        try:
            return self.endpoints[family]
        except KeyError:
            raise ConfigurationError(
                f"{self.source}: no endpoint for {family!r}",
                hint=f'add `{family} = "https://…"` under [endpoints], or pass --endpoint',
            ) from None


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and check a TOML profile; ConfigurationError names the file and the faulty key.

    Relative paths in it are resolved against the profile's own folder (wherever the command
    runs from), and the profile keeps them absolute, so that errors name the file looked for.
    """
    import tomllib  # only a profile file needs it: the example profile is built in code

    path = Path(os.path.abspath(path))  # absolute and without "..": errors name the real place
    if path.is_dir():
        raise ConfigurationError(f"profile {path}: is a folder", hint="name the TOML file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"profile not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigurationError(f"{path}: unreadable profile: {error}") from None
    return _profile(data, path.parent, str(path))


def check_endpoint(url: object, where: str) -> str:
    """``url`` when it is an ``https://`` URL with a host and a valid port; ConfigurationError
    naming ``where`` otherwise (RFC 3986 syntax, as requests reads it)."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"{where}: an endpoint is a URL string")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        raise ConfigurationError(
            f"{where}: {url!r} is not a valid URL (bad port?)", hint="https://host[:port]/path"
        ) from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise ConfigurationError(
            f"{where}: {url!r} is not an https URL", hint="https://host[:port]/path"
        )
    if port == 0:
        raise ConfigurationError(f"{where}: {url!r}: port 0", hint="a port from 1 to 65535")
    return url


def _number(section: Mapping[str, Any], key: str, default: float, where: str) -> float:
    """A positive, finite number of seconds, or ConfigurationError naming the key."""
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{where}: `{key}` must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{where}: `{key}` must be more than 0 seconds")
    return float(value)


def _endpoints(data: Mapping[str, Any], source: str) -> dict[str, str]:
    section = data.get("endpoints", {})
    if not isinstance(section, Mapping):
        raise ConfigurationError(f"{source}: [endpoints] must be a table of URLs")
    return {
        str(key): check_endpoint(value, f"{source} [endpoints] {key}")
        for key, value in section.items()
    }


def _section(data: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    value = data.get(name)
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{source}: missing [{name}] section")
    return value


def _string(section: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = section.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where}: `{key}` must be a non-empty string")
    return value


def _profile(data: Mapping[str, Any], base: Path, source: str) -> Profile:
    identity = _section(data, "identity", source)
    lps = _section(data, "lps", source)
    credentials = _section(data, "credentials", source)
    tls = _section(data, "tls", source)
    vihf_section = data.get("vihf", {})
    if not isinstance(vihf_section, Mapping):
        raise ConfigurationError(f"{source}: [vihf] must be a table")
    where = f"{source} [identity]"
    roles = identity.get("roles")
    if not isinstance(roles, list) or not roles:
        raise ConfigurationError(f"{where}: `roles` must list at least the profession")
    vihf = Vihf(
        subject_id=_string(identity, "subject_id", where),
        mode=_mode(_string(identity, "mode", where), where),
        structure_id=_string(identity, "structure_id", where),
        sector=_string(identity, "sector", where),
        roles=tuple(_role(role, where) for role in roles),
        lps=Lps(
            name=_string(lps, "name", f"{source} [lps]"),
            version=_string(lps, "version", f"{source} [lps]"),
            homologation_id=_string(lps, "homologation_id", f"{source} [lps]"),
            instance_id=_optional_string(lps, "instance_id", f"{source} [lps]"),
        ),
        user_name=_optional_string(identity, "user_name", where),
        authn_context=_string(identity, "authn_context", where, AC_SMARTCARD_PKI),
        authn_context_decl=_optional_string(identity, "authn_context_decl", where),
    )
    return Profile(
        identity=vihf,
        tls_credential=_credential(credentials, "tls", base, source),
        signature_credential=_credential(credentials, "signature", base, source),
        ca_bundle=base / _string(tls, "ca_bundle", f"{source} [tls]"),
        endpoints=_endpoints(data, source),
        vihf_options=_vihf_options(vihf_section, f"{source} [vihf]"),
        connect_timeout=_number(tls, "connect_timeout", 10.0, f"{source} [tls]"),
        read_timeout=_number(tls, "read_timeout", 60.0, f"{source} [tls]"),
        source=source,
        tlsi_idam=_optional_string(lps, "idam", f"{source} [lps]"),
        insi_credential=(
            _credential(credentials, "insi", base, source) if "insi" in credentials else None
        ),
        deadline=_number(tls, "deadline", DEFAULT_DEADLINE, f"{source} [tls]"),
        retries=_retries(tls, f"{source} [tls]"),
    )


def _retries(section: Mapping[str, Any], where: str) -> int:
    value = section.get("retries", RetryPolicy.attempts - 1)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise ConfigurationError(f"{where}: `retries` must be a whole number from 0 to 10")
    return value


def _vihf_options(section: Mapping[str, Any], where: str) -> VihfOptions:
    """``[vihf]``: the mode attribute's spelling, the validity (seconds), the algorithm."""
    mode_attribute = _string(section, "mode_attribute", where, VihfOptions.mode_attribute)
    if mode_attribute not in MODE_ATTRIBUTE_NAMES:
        raise ConfigurationError(
            f"{where}: `mode_attribute` is one of {', '.join(MODE_ATTRIBUTE_NAMES)}"
        )
    algorithm = _string(section, "algorithm", where, VihfOptions.algorithm)
    if algorithm not in SIGNATURE_ALGORITHMS:
        raise ConfigurationError(
            f"{where}: `algorithm` is one of {', '.join(SIGNATURE_ALGORITHMS)}"
        )
    validity = (
        timedelta(seconds=_number(section, "validity_seconds", 0, where))
        if "validity_seconds" in section
        else None
    )
    return VihfOptions(mode_attribute=mode_attribute, validity=validity, algorithm=algorithm)


def _optional_string(section: Mapping[str, Any], key: str, where: str) -> str | None:
    return _string(section, key, where) if key in section else None


def _mode(value: str, where: str) -> AuthMode:
    try:
        return AuthMode(value)
    except ValueError:
        allowed = ", ".join(mode.value for mode in AuthMode)
        raise ConfigurationError(f"{where}: mode {value!r} is not one of {allowed}") from None


def _role(role: Any, where: str) -> Code:
    if not isinstance(role, Mapping) or "code" not in role or "system" not in role:
        raise ConfigurationError(f"{where}: each role needs `code` and `system`")
    return Code(str(role["code"]), str(role["system"]), str(role.get("display", "")))


def _credential(
    credentials: Mapping[str, Any], name: str, base: Path, source: str
) -> CredentialSpec:
    where = f"{source} [credentials.{name}]"
    section = credentials.get(name)
    if not isinstance(section, Mapping):
        raise ConfigurationError(f"{source}: missing [credentials.{name}] section")
    for secret, variable in (("password", "password_env"), ("pin", "pin_env")):
        if secret in section:
            raise ConfigurationError(
                f"{where}: {secret}s do not belong in a profile",
                hint=f"put it in an environment variable and name it with `{variable}`",
            )
    if "pkcs11_module" in section:
        return CredentialSpec(pkcs11=_pkcs11_spec(section, base, where))
    if "pkcs12" in section:
        return CredentialSpec(
            pkcs12=base / _string(section, "pkcs12", where),
            password_env=_optional_string(section, "password_env", where),
        )
    if "certificate" in section:
        key = _optional_string(section, "key", where)
        return CredentialSpec(
            certificate=base / _string(section, "certificate", where),
            key=base / key if key else None,
            password_env=_optional_string(section, "password_env", where),
        )
    raise ConfigurationError(
        f"{where}: give `pkcs12`, `certificate` and `key`, or `pkcs11_module` (a card)"
    )


def _pkcs11_spec(section: Mapping[str, Any], base: Path, where: str) -> Pkcs11Spec:
    module = _string(section, "pkcs11_module", where)
    if "/" in module and not Path(module).is_absolute():
        module = str(base / module)  # a bare file name is left to the loader's search path
    slot = section.get("slot")
    if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int)):
        raise ConfigurationError(f"{where}: `slot` must be an integer (the PKCS#11 slot id)")
    key_id = _optional_string(section, "key_id", where)
    try:
        key_bytes = bytes.fromhex(key_id) if key_id is not None else None
    except ValueError:
        raise ConfigurationError(
            f'{where}: `key_id` must be hexadecimal (the key\'s CKA_ID, e.g. "01")'
        ) from None
    return Pkcs11Spec(
        module=module,
        token_label=_optional_string(section, "token_label", where),
        slot=slot,
        key_label=_optional_string(section, "key_label", where),
        key_id=key_bytes,
        pin_env=_optional_string(section, "pin_env", where),
    )


def example_pki_directory() -> Path:
    """The example PKI: ``certs-example/`` of a source checkout when valid, else one generated
    once in the user's cache folder (:func:`cached_pki_directory`; again when it nears expiry),
    with the example profile beside it."""
    checkout = Path(__file__).resolve().parent.parent / "certs-example"
    cached = cached_pki_directory()
    for directory in (checkout, cached):
        if _usable(directory):
            return directory
    examplepki.generate(cached)
    _copy_example_profile(cached)
    return cached


EXAMPLE_PROFILE = "profile.example.toml"
"""The commented example profile's file name: in ``certs-example/`` of a checkout, in the
package of a wheel, and beside a generated example PKI."""


def example_profile_file() -> Path:
    """The commented example profile: the wheel's copy, else the checkout's."""
    here = Path(__file__).resolve().parent
    packaged = here / EXAMPLE_PROFILE
    return packaged if packaged.is_file() else here.parent / "certs-example" / EXAMPLE_PROFILE


def _copy_example_profile(directory: Path) -> None:
    """Put the example profile beside a generated PKI, where its relative paths hold."""
    source = example_profile_file()
    if source.is_file():
        (directory / EXAMPLE_PROFILE).write_bytes(source.read_bytes())


def config_directory() -> Path:
    """The user's cisis-transport configuration folder (platformdirs: ``~/.config/
    cisis-transport`` on Linux, ``XDG_CONFIG_HOME`` honoured), where the installation id lives."""
    from platformdirs import user_config_path

    return user_config_path("cisis-transport", appauthor=False)


def cached_pki_directory() -> Path:
    """Where an installed package keeps its example PKI: ``example-pki`` in the user's cache
    folder (platformdirs: ``~/.cache/cisis-transport`` on Linux, ``XDG_CACHE_HOME`` honoured)."""
    from platformdirs import user_cache_path

    return user_cache_path("cisis-transport", appauthor=False) / "example-pki"


def _usable(directory: Path) -> bool:
    try:
        pki = examplepki.load(directory)
        credential = load_pkcs12(pki.p12("org-sign"), pki.password)
    except Exception:  # missing, corrupt or foreign files: regenerate rather than fail
        return False
    return credential.not_valid_after > datetime.now(UTC) + timedelta(days=1)


EXAMPLE_LPS = Lps("cisis-transport", "0.1.0", "CISIS-TRANSPORT-EXEMPLE", "cisis-transport-example")
"""The software identity used with the example PKI (not a real CNDA homologation number)."""

_DOCTOR = (
    Code("10", PROFESSION_SYSTEM, "Médecin"),
    Code("SM26", SPECIALTY_SYSTEM, "Qualifié en Médecine Générale (SM)"),
)


def example_profile(
    pki: examplepki.ExamplePKI,
    mode: AuthMode = AuthMode.INDIRECTE,
    endpoints: Mapping[str, str] | None = None,
) -> Profile:
    """A profile over the example PKI: ORG certificates in the indirect modes, the CPS-like card
    certificates in ``DIRECTE`` mode, a general practitioner as the user."""
    direct = mode is AuthMode.DIRECTE
    identity = Vihf(
        subject_id="899700000001",
        mode=mode,
        structure_id="499900000001001",
        sector="SA07",
        roles=_DOCTOR,
        lps=EXAMPLE_LPS,
        user_name=None if direct else "MEDECIN0001 PAUL",
        authn_context_decl=AC_SMARTCARD_PKI if mode is AuthMode.INDIRECTE_RENFORCEE else None,
    )
    return Profile(
        identity=identity,
        tls_credential=CredentialSpec(
            pkcs12=pki.p12("cps-auth" if direct else "org-auth"), password=pki.password
        ),
        signature_credential=CredentialSpec(
            pkcs12=pki.p12("cps-sign" if direct else "org-sign"), password=pki.password
        ),
        ca_bundle=pki.ca_bundle,
        endpoints=dict(endpoints or {}),
        source=f"example profile ({pki.directory})",
    )
