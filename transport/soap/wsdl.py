"""The zeep glue, for services described by a WSDL: :class:`SoapClient`, :func:`load_wsdl`.

:class:`SoapClient` binds a WSDL (parsed once per process) to a
:class:`transport.soap.channel.Channel` and sends each operation with the volet's WS-Addressing
headers and a ``wsse:Security`` header holding the call's signed assertions; zeep writes the body
and reads the answer, the channel does everything in between (traces included). Faults come back
as :class:`transport.errors.SoapFault`, transport failures as
:class:`transport.errors.TransportError`. Importing this module imports zeep: ``import transport``
does not.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import zeep
import zeep.exceptions
from lxml import etree
from zeep.wsdl import Document

from transport.errors import SoapFault, TransportError
from transport.soap import addressing
from transport.soap.addressing import Flavour
from transport.soap.channel import Call, CallOptions, Channel, WireLike
from transport.soap.envelope import check_relates_to, raise_for_fault
from transport.soap.headers import Addressing, Compose, Outgoing, Security
from transport.soap.trace import Tracer

WSDL_DIRECTORY = Path(__file__).parent.parent / "wsdl"
"""Where the project's own WSDL/XSD are installed (``wsdl/`` at the top of a source checkout)."""

ZEEP_SETTINGS = zeep.Settings(
    strict=True,
    forbid_dtd=True,
    forbid_entities=True,
    forbid_external=True,
    xml_huge_tree=False,
)
"""Zeep settings for every client: no DTD, no entity, no remote import."""


def wsdl_path(name: str) -> Path:
    """The path of one of the project's WSDL files, in the wheel or in a source checkout."""
    for directory in (WSDL_DIRECTORY, Path(__file__).parent.parent.parent / "wsdl"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"WSDL {name!r} is not shipped with cisis-transport")


_documents: dict[tuple[str, int], Document] = {}
_documents_lock = threading.Lock()


def load_wsdl(path: str | Path) -> Document:
    """The parsed WSDL document of a local file, parsed once per process (per file version)."""
    location = Path(path).resolve()
    key = (str(location), location.stat().st_mtime_ns)
    with _documents_lock:
        document = _documents.get(key)
        if document is None:
            document = Document(str(location), zeep.Transport(), settings=ZEEP_SETTINGS)
            _documents[key] = document
    return document


@dataclass
class _Call:
    """What one operation call needs to share with the zeep hooks (kept in a context variable)."""

    operation: str
    assertions: tuple[etree._Element, ...]
    flavour: Flavour
    message_id: str = ""


_current: ContextVar[_Call] = ContextVar("cisis_transport_call")


class _Headers(zeep.Plugin):
    """Writes the volet's WS-Addressing and ``wsse:Security`` headers (the contributors
    :func:`transport.soap.envelope.build_envelope` uses) instead of zeep's; on the way back
    raises a SOAP fault as :class:`SoapFault` (zeep's own parser chokes on subcode prefixes it
    cannot resolve), then checks ``RelatesTo``."""

    def egress(
        self, envelope: etree._Element, http_headers: dict, operation: Any, binding_options: dict
    ) -> tuple[etree._Element, dict]:
        call = _current.get()
        action = operation.abstract.wsa_action or operation.soapaction or ""
        call.message_id = addressing.new_message_id(call.flavour)
        outgoing = Outgoing(action, binding_options["address"], call.message_id, call.flavour)
        Compose((Addressing(), Security(call.assertions))).apply(envelope, outgoing)
        return envelope, http_headers

    def ingress(
        self, envelope: etree._Element, http_headers: dict, operation: Any
    ) -> tuple[etree._Element, dict]:
        raise_for_fault(envelope)
        check_relates_to(envelope, _current.get().message_id)
        return envelope, http_headers


class _Transport(zeep.Transport):
    """Hands zeep's envelope to the channel (which serialises, traces, posts, reads and maps
    every failure) and gives zeep the answer's root part back."""

    def __init__(self, channel: Channel) -> None:
        super().__init__(cache=None)
        self.channel = channel

    def post_xml(self, address: str, envelope: etree._Element, headers: dict) -> SimpleNamespace:
        call = Call(address, envelope, operation=_current.get().operation)
        received = self.channel.exchange(call, headers.get("Content-Type"))
        # zeep reads a requests.Response's status, headers and content; MTOM is already decoded.
        return SimpleNamespace(
            status_code=received.status,
            headers={"Content-Type": received.decoded.root_content_type},
            content=received.decoded.root,
            encoding="utf-8",
        )


class SoapClient:
    """Calls the operations of one WSDL service over a mutual-TLS session.

    ``wsdl``: a path (see :func:`wsdl_path` for the shipped ones). ``session``: the wire, a
    :func:`transport.tls.create_session` session or any :class:`transport.soap.channel.Wire`.
    ``address``: the endpoint URL, overriding the WSDL's. ``flavour``: the WS-Addressing
    conventions (DMP or téléservices). ``options``: the channel's deadline and retries (calls
    through a WSDL are never retried: the client cannot know which are reads). One client is meant
    to live as long as the application and may be shared between threads.
    """

    def __init__(
        self,
        wsdl: str | Path,
        *,
        session: WireLike,
        address: str | None = None,
        flavour: Flavour = Flavour.DMP,
        tracer: Tracer | None = None,
        options: CallOptions | None = None,
        service_name: str | None = None,
        port_name: str | None = None,
    ) -> None:
        document = load_wsdl(wsdl)
        self.flavour = flavour
        self.channel = Channel(session, tracer=tracer, options=options)
        self._zeep = zeep.Client(
            document,
            transport=_Transport(self.channel),
            plugins=[_Headers()],
            settings=ZEEP_SETTINGS,
        )
        service = (
            document.services[service_name]
            if service_name
            else next(iter(document.services.values()))
        )
        port = service.ports[port_name] if port_name else next(iter(service.ports.values()))
        self.address = address or port.binding_options["address"]
        self._service = self._zeep.create_service(port.binding.name, self.address)

    @property
    def zeep_client(self) -> zeep.Client:
        """The underlying zeep client, for its type factory (``get_type``/``get_element``)."""
        return self._zeep

    def call(
        self, operation: str, *, assertions: Sequence[etree._Element] = (), **body: Any
    ) -> Any:
        """Send ``operation`` with ``body`` (zeep keyword arguments) and return zeep's result."""
        token = _current.set(_Call(operation, tuple(assertions), self.flavour))
        try:
            return self._service[operation](**body)
        except zeep.exceptions.Fault as fault:
            # Only reached for an error status whose body holds no SOAP fault: real faults were
            # raised by raise_for_fault on the way in.
            raise SoapFault(fault.message or "", code="Receiver") from None
        except zeep.exceptions.TransportError as error:
            raise TransportError(
                f"{self.address} answered HTTP {error.status_code} without a SOAP response"
            ) from None
        except (zeep.exceptions.XMLSyntaxError, zeep.exceptions.XMLParseError):
            raise TransportError(f"{self.address} answered with malformed XML") from None
        finally:
            _current.reset(token)
