"""Local stand-ins of the services: real HTTPS servers over mutual TLS that verify what they get."""

from .server import ServerTLS, StubRequest, StubResponse, StubServer, soap12_fault

__all__ = ["ServerTLS", "StubRequest", "StubResponse", "StubServer", "soap12_fault"]
