"""cisis-transport: the SOAP 1.2 / WS-Security / mutual-TLS transport of the CI-SIS services.

The public API is re-exported here; each name's module owns one concern (see the README).
"""

import importlib

from transport.config import CredentialSpec, Profile, example_profile, load_profile
from transport.credentials import (
    Credential,
    Purpose,
    Signer,
    SoftwareSigner,
    load_pem,
    load_pkcs12,
    rfc2253_dn,
)
from transport.dmp.client import DmpClient, Document
from transport.errors import (
    CisisError,
    ConfigurationError,
    CredentialError,
    DmpError,
    FaultDetail,
    IntegrityError,
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
from transport.soap.addressing import Flavour
from transport.soap.envelope import build_envelope, raise_for_fault
from transport.soap.trace import Tracer
from transport.soap.wsse import verify_security
from transport.tls import DMP_CIPHERS, TLSSettings, create_context, create_session
from transport.vihf import (
    AuthMode,
    Code,
    Lps,
    Patient,
    VerifiedVihf,
    Vihf,
    VihfOptions,
    build_assertion,
    read_vihf,
    sign_vihf,
    verify_vihf,
)
from transport.xml import parse_xml
from transport.xmlsig import VerifySettings

__version__ = "0.1.0"

_LAZY = {"SoapClient": "transport.soap.wsdl", "wsdl_path": "transport.soap.wsdl"}
"""Names whose module imports zeep, imported on first use so that ``import transport`` does not."""


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'transport' has no attribute {name!r}")


__all__ = [
    "DMP_CIPHERS",
    "AuthMode",
    "CisisError",
    "Code",
    "ConfigurationError",
    "Credential",
    "CredentialError",
    "CredentialSpec",
    "DmpClient",
    "DmpError",
    "Document",
    "FaultDetail",
    "Flavour",
    "IntegrityError",
    "Lps",
    "MtomError",
    "Patient",
    "Profile",
    "Purpose",
    "ServiceError",
    "SignatureError",
    "Signer",
    "SoapClient",
    "SoapFault",
    "SoftwareSigner",
    "TLSError",
    "TLSSettings",
    "Tracer",
    "TransportError",
    "UsageError",
    "ValidationError",
    "VerifiedVihf",
    "VerifySettings",
    "Vihf",
    "VihfOptions",
    "VihfValidationError",
    "XdsError",
    "build_assertion",
    "build_envelope",
    "create_context",
    "create_session",
    "example_profile",
    "load_pem",
    "load_pkcs12",
    "load_profile",
    "parse_xml",
    "raise_for_fault",
    "read_vihf",
    "rfc2253_dn",
    "sign_vihf",
    "verify_security",
    "verify_vihf",
    "wsdl_path",
]
