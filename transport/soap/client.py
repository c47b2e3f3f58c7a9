"""The SOAP 1.2 client: a zeep client over one mutually-authenticated session.

:class:`SoapClient` binds a WSDL (parsed once per process) to a :mod:`transport.tls` session and
sends each operation with the volet's WS-Addressing headers and a ``wsse:Security`` header holding
the call's signed assertions. Faults come back as :class:`transport.errors.SoapFault`, transport
failures as :class:`transport.errors.TransportError`. With a
:class:`transport.soap.trace.Tracer`, the exact bytes of every exchange are written to disk.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.wsdl import Document

from transport.errors import FaultDetail, SoapFault, TLSError, TransportError
from transport.soap import addressing
from transport.soap.addressing import Flavour
from transport.soap.trace import Tracer
from transport.soap.wsse import apply_security
from transport.xml import XMLSecurityError, parse_xml

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
    trace_prefix: str | None = None


_current: ContextVar[_Call] = ContextVar("cisis_transport_call")


class _Addressing(zeep.Plugin):
    """Replaces zeep's WS-Addressing headers with the volet's; on the way back raises a SOAP
    fault as :class:`SoapFault` (zeep's own parser chokes on subcode prefixes it cannot resolve),
    then checks ``RelatesTo``."""

    def egress(
        self, envelope: etree._Element, http_headers: dict, operation: Any, binding_options: dict
    ) -> tuple[etree._Element, dict]:
        call = _current.get()
        action = operation.abstract.wsa_action or operation.soapaction or ""
        call.message_id = addressing.new_message_id(call.flavour)
        elements = addressing.headers(
            action, binding_options["address"], call.message_id, call.flavour
        )
        addressing.replace_headers(envelope, elements)
        return envelope, http_headers

    def ingress(
        self, envelope: etree._Element, http_headers: dict, operation: Any
    ) -> tuple[etree._Element, dict]:
        raise_for_fault(envelope)
        relates_to = addressing.read(envelope, "RelatesTo")
        call = _current.get()
        if relates_to is not None and relates_to != call.message_id:
            raise TransportError(
                f"the response relates to {relates_to}, not to the request {call.message_id}"
            )
        return envelope, http_headers


class _SecurityHeader:
    """The zeep ``wsse`` hook: puts the call's assertions in ``wsse:Security``.

    Responses are not signed by these services (mutual TLS authenticates them), so ``verify``
    accepts them as they are.
    """

    def apply(self, envelope: etree._Element, headers: dict) -> tuple[etree._Element, dict]:
        apply_security(envelope, _current.get().assertions)
        return envelope, headers

    def verify(self, envelope: etree._Element) -> etree._Element:
        return envelope


class _Transport(zeep.Transport):
    """Posts over the mutual-TLS session, writes traces, and never logs message content."""

    def __init__(self, session: requests.Session, tracer: Tracer | None) -> None:
        super().__init__(session=session, cache=None)
        self.tracer = tracer

    def post(self, address: str, message: bytes, headers: dict) -> requests.Response:
        call = _current.get()
        if self.tracer is not None:
            call.trace_prefix = self.tracer.next_prefix(call.operation)
            self.tracer.write(call.trace_prefix, "request", message)
        response = send(self.session, address, message, headers)
        if self.tracer is not None and call.trace_prefix is not None:
            self.tracer.write(call.trace_prefix, "response", response.content)
        return response


def send(
    session: requests.Session,
    address: str,
    body: Any,
    headers: dict[str, str],
    *,
    stream: bool = False,
) -> requests.Response:
    """POST ``body`` to ``address`` and map requests' failures to TLSError/TransportError.

    With ``stream``, the answer's body is left unread for ``response.iter_content`` (a large
    MTOM answer goes to disk as it arrives); the caller closes the response.
    """
    try:
        return session.post(address, data=body, headers=headers, stream=stream)
    except requests.exceptions.SSLError as error:
        raise TLSError(
            f"TLS handshake with {address} failed: {_root_cause(error)}",
            hint="check the CA bundle, the client certificate and that the server speaks TLS 1.2+",
        ) from None
    except requests.exceptions.Timeout:
        raise TransportError(f"{address} did not answer in time") from None
    except requests.exceptions.ConnectionError as error:
        if any(isinstance(link, ssl.SSLError) for link in _chain(error)):
            raise TLSError(
                f"TLS connection to {address} was refused: {_root_cause(error)}",
                hint="the server may require a client certificate it trusts",
            ) from None
        raise TransportError(f"cannot connect to {address}: {_root_cause(error)}") from None


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every error behind it: causes, contexts and urllib3's ``reason``s."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        link = pending.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        for nested in (link.__cause__, link.__context__, getattr(link, "reason", None)):
            if isinstance(nested, BaseException):
                pending.append(nested)
        pending.extend(arg for arg in link.args if isinstance(arg, BaseException))


def _root_cause(error: BaseException) -> str:
    """The innermost error's message: the one that says what really failed."""
    *_, innermost = _chain(error)
    return str(innermost)


class SoapClient:
    """Calls the operations of one WSDL service over a mutual-TLS session.

    ``wsdl``: a path (see :func:`wsdl_path` for the shipped ones). ``address``: the endpoint URL,
    overriding the WSDL's. ``flavour``: the WS-Addressing conventions (DMP or téléservices).
    One client is meant to live as long as the application and may be shared between threads.
    """

    def __init__(
        self,
        wsdl: str | Path,
        *,
        session: requests.Session,
        address: str | None = None,
        flavour: Flavour = Flavour.DMP,
        tracer: Tracer | None = None,
        service_name: str | None = None,
        port_name: str | None = None,
    ) -> None:
        document = load_wsdl(wsdl)
        self.flavour = flavour
        self._zeep = zeep.Client(
            document,
            wsse=_SecurityHeader(),
            transport=_Transport(session, tracer),
            plugins=[_Addressing()],
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


def fault_details(detail: etree._Element | None) -> tuple[FaultDetail, ...]:
    """The service errors in a fault detail: every element with a ``code`` attribute."""
    if detail is None:
        return ()
    found = []
    for element in detail.iter():
        code = element.get("code")
        if code:
            found.append(
                FaultDetail(
                    code=code,
                    message=(element.text or "").strip(),
                    severity=element.get("severite") or element.get("severity"),
                    message_id=element.get("messageID"),
                )
            )
    return tuple(found)


def build_envelope(
    action: str,
    to: str,
    payload: etree._Element,
    *,
    assertions: Sequence[etree._Element] = (),
    flavour: Flavour = Flavour.DMP,
    message_id: str | None = None,
) -> etree._Element:
    """A complete SOAP 1.2 request envelope, for callers that post without a WSDL (MTOM, tests).

    Same headers as :class:`SoapClient` sends: WS-Addressing in ``flavour``'s form, then
    ``wsse:Security`` with ``assertions``.
    """
    soap = addressing.SOAP12_NS
    envelope = etree.Element(f"{{{soap}}}Envelope", nsmap={"soap": soap})
    etree.SubElement(envelope, f"{{{soap}}}Header")
    etree.SubElement(envelope, f"{{{soap}}}Body").append(payload)
    identifier = message_id or addressing.new_message_id(flavour)
    addressing.replace_headers(envelope, addressing.headers(action, to, identifier, flavour))
    apply_security(envelope, assertions)
    return envelope


def raise_for_fault(envelope: etree._Element) -> etree._Element:
    """Return ``envelope`` unless its body is a SOAP 1.2 fault, which is raised as SoapFault."""
    soap = addressing.SOAP12_NS
    fault = envelope.find(f"{{{soap}}}Body/{{{soap}}}Fault")
    if fault is None:
        return envelope
    code = fault.findtext(f"{{{soap}}}Code/{{{soap}}}Value") or ""
    subcodes = []
    holder = fault.find(f"{{{soap}}}Code/{{{soap}}}Subcode")
    while holder is not None:
        subcodes.append((holder.findtext(f"{{{soap}}}Value") or "").rpartition(":")[2])
        holder = holder.find(f"{{{soap}}}Subcode")
    raise SoapFault(
        fault.findtext(f"{{{soap}}}Reason/{{{soap}}}Text") or "",
        code=code.rpartition(":")[2] or "Receiver",
        subcodes=tuple(subcodes),
        details=fault_details(fault.find(f"{{{soap}}}Detail")),
    )


def answer_payload(
    url: str, status: int, content: bytes, request: etree._Element
) -> etree._Element:
    """The payload (the Body's first element) of the SOAP 1.2 answer ``content`` to ``request``,
    received from ``url`` with HTTP ``status``.

    SoapFault when the answer is a fault; TransportError when it is not a SOAP 1.2 envelope, comes
    with an error status and no fault, relates to another request, or has an empty body.
    """
    try:
        answer = parse_xml(content)
    except XMLSecurityError:
        raise TransportError(f"{url} answered HTTP {status} without a SOAP envelope") from None
    soap = addressing.SOAP12_NS
    if answer.tag != f"{{{soap}}}Envelope":
        raise TransportError(f"{url} answered {answer.tag}, not a SOAP 1.2 envelope")
    raise_for_fault(answer)
    if status != 200:
        raise TransportError(f"{url} answered HTTP {status} without a SOAP fault")
    relates_to = addressing.read(answer, "RelatesTo")
    sent_id = addressing.read(request, "MessageID")
    if relates_to is not None and relates_to != sent_id:
        raise TransportError(f"the response relates to {relates_to}, not to {sent_id}")
    body = answer.find(f"{{{soap}}}Body")
    payload = next(iter(body.iterchildren("{*}*")), None) if body is not None else None
    if payload is None:
        raise TransportError(f"{url} answered an envelope with an empty body")
    return payload
