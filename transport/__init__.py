"""cisis-transport: the SOAP 1.2 / WS-Security / mutual-TLS transport of the CI-SIS services.

What a user needs is importable from here: the clients of the DMP (CI-SIS Volet Transport
Synchrone client lourd) and of the Assurance Maladie téléservices (INSi), the profiles that
configure them, the exceptions they raise and the values their calls take. Everything else stays
in its module (``transport.soap.envelope.build_envelope``, ``transport.xml.parse_xml``,
``transport.credentials.rfc2253_dn``…), one module per concern (see the README's layout).
"""

from __future__ import annotations

import importlib

# typing is not imported for its TYPE_CHECKING alone: importing the package (for ``--help``,
# for one of its modules) costs no more than the modules used; type checkers read the constant
# by its name as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from transport.config import Profile, example_profile, load_profile
    from transport.dmp.client import DmpClient, Document
    from transport.dmp.hl7v3 import Demographics
    from transport.errors import (
        CisisError,
        ConfigurationError,
        ConnectError,
        CredentialError,
        DmpError,
        IntegrityError,
        MalformedXMLError,
        MtomError,
        ServiceError,
        SignatureError,
        SoapFault,
        TLSError,
        TransportError,
        UsageError,
        ValidationError,
        VihfValidationError,
        XdsError,
    )
    from transport.soap.trace import Tracer
    from transport.teleservices.client import AccessMode, TeleservicesClient
    from transport.teleservices.insi import InsiClient
    from transport.vihf import (
        INS_NIA_OID,
        INS_NIR_OID,
        INS_TEST_OID,
        AuthMode,
        DmpAccess,
        DmpAccessMode,
        Patient,
    )


__version__ = "0.1.0"

__all__ = [
    "INS_NIA_OID",
    "INS_NIR_OID",
    "INS_TEST_OID",
    "AccessMode",
    "AuthMode",
    "CisisError",
    "ConfigurationError",
    "ConnectError",
    "CredentialError",
    "Demographics",
    "DmpAccess",
    "DmpAccessMode",
    "DmpClient",
    "DmpError",
    "Document",
    "InsiClient",
    "IntegrityError",
    "MalformedXMLError",
    "MtomError",
    "Patient",
    "Profile",
    "ServiceError",
    "SignatureError",
    "SoapFault",
    "TLSError",
    "TeleservicesClient",
    "Tracer",
    "TransportError",
    "UsageError",
    "ValidationError",
    "VihfValidationError",
    "XdsError",
    "example_profile",
    "load_profile",
]

_HOMES = {
    **dict.fromkeys(("Profile", "example_profile", "load_profile"), "transport.config"),
    **dict.fromkeys(("DmpClient", "Document"), "transport.dmp.client"),
    "Demographics": "transport.dmp.hl7v3",
    "Tracer": "transport.soap.trace",
    **dict.fromkeys(("AccessMode", "TeleservicesClient"), "transport.teleservices.client"),
    "InsiClient": "transport.teleservices.insi",
    **dict.fromkeys(
        (
            "INS_NIA_OID",
            "INS_NIR_OID",
            "INS_TEST_OID",
            "AuthMode",
            "DmpAccess",
            "DmpAccessMode",
            "Patient",
        ),
        "transport.vihf",
    ),
}
"""Where each exported name lives. The names are imported on first use, so that importing one
module of the package (the command line's ``--help``, a stub) does not import every service."""


def __getattr__(name: str) -> object:
    home = _HOMES.get(name) or ("transport.errors" if name in __all__ else None)
    if home is None:
        raise AttributeError(f"module 'transport' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
