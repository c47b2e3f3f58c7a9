"""Local stand-ins of the services: real HTTPS servers over mutual TLS that verify what they get."""

from transport.stubs.app import SERVICES, StubContext, Stubs, service_path
from transport.stubs.server import ServerTLS, StubRequest, StubResponse, StubServer, soap12_fault

__all__ = [
    "SERVICES",
    "ServerTLS",
    "StubContext",
    "StubRequest",
    "StubResponse",
    "StubServer",
    "Stubs",
    "service_path",
    "soap12_fault",
]
