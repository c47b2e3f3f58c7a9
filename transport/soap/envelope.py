"""SOAP 1.2 envelopes: the request as the services expect it, and the answer read back.

One copy each of the envelope's building (:func:`build_envelope`), the fault's reading
(:func:`raise_for_fault`, :func:`fault_details`) and the answer's checks (:func:`read_answer`:
envelope, fault, HTTP status, ``wsa:RelatesTo``, payload), after SOAP 1.2 Part 1 (W3C, 2007) §5
and §5.4 and WS-Addressing 1.0 SOAP Binding (W3C, 2006).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

from lxml import etree

from transport.errors import FaultDetail, MalformedXMLError, SoapFault, TransportError
from transport.soap import addressing
from transport.soap.addressing import SOAP12_NS, Flavour
from transport.soap.headers import Addressing, Compose, HeaderContributor, Outgoing, Security
from transport.xml import find_first, parse_xml

SOAP_MEDIA_TYPE = "application/soap+xml"
"""The media type of a SOAP 1.2 message (RFC 3902)."""
SOAP_CONTENT_TYPE = f"{SOAP_MEDIA_TYPE}; charset=utf-8"
"""The HTTP Content-Type of a SOAP 1.2 message (RFC 3902), before its ``action`` parameter."""


def content_type(action: str) -> str:
    """The Content-Type of a SOAP 1.2 request for ``action`` (RFC 3902's ``action`` parameter)."""
    return f'{SOAP_CONTENT_TYPE}; action="{action}"'


def build_envelope(
    action: str,
    to: str,
    payload: etree._Element,
    *,
    assertions: Sequence[etree._Element] = (),
    flavour: Flavour = Flavour.DMP,
    message_id: str | None = None,
    headers: Sequence[HeaderContributor] = (),
) -> etree._Element:
    """A complete SOAP 1.2 request envelope: WS-Addressing headers in ``flavour``'s form (a new
    MessageID unless given), then ``wsse:Security`` with ``assertions`` (none: no header; see
    :func:`transport.soap.wsse.security_header`), then what the other ``headers`` contributors
    write, and ``payload`` as the body's one child."""
    call = Outgoing(action, to, message_id or addressing.new_message_id(flavour), flavour)
    envelope = copy.deepcopy(_skeleton(action, to, flavour))
    find_first(envelope, _MESSAGE_ID).text = call.message_id
    envelope[1].append(payload)
    if assertions or headers:
        Compose((Security(tuple(assertions)), *headers)).apply(envelope, call)
    return envelope


_MESSAGE_ID = f"{{{SOAP12_NS}}}Header/{{{addressing.WSA_NS}}}MessageID"


@functools.lru_cache(maxsize=256)
def _skeleton(action: str, to: str, flavour: Flavour) -> etree._Element:
    """The envelope of every call of ``action`` to ``to``: the header holding the WS-Addressing
    headers (an empty MessageID) and an empty body; a call copies it and fills in the rest."""
    envelope = etree.Element(f"{{{SOAP12_NS}}}Envelope", nsmap={"soap": SOAP12_NS})
    etree.SubElement(envelope, f"{{{SOAP12_NS}}}Header")
    etree.SubElement(envelope, f"{{{SOAP12_NS}}}Body")
    Addressing().apply(envelope, Outgoing(action, to, "", flavour))
    return envelope


def fault_details(detail: etree._Element | None) -> tuple[FaultDetail, ...]:
    """The service errors in a fault detail: every element with a ``code`` attribute
    (``siram:Erreur`` for the téléservices)."""
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


_FAULT = f"{{{SOAP12_NS}}}Body/{{{SOAP12_NS}}}Fault"


def raise_for_fault(envelope: etree._Element) -> etree._Element:
    """Return ``envelope`` unless its body is a SOAP 1.2 fault, which is raised as SoapFault
    (code and subcodes by local name, outermost first; details from :func:`fault_details`)."""
    soap = SOAP12_NS
    fault = find_first(envelope, _FAULT)
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


def check_relates_to(answer: etree._Element, message_id: str | None) -> None:
    """TransportError when the answer's ``wsa:RelatesTo`` names another request than
    ``message_id`` (an answer without RelatesTo is accepted: not every service sends it)."""
    relates_to = addressing.read(answer, "RelatesTo")
    if relates_to is not None and relates_to != message_id:
        raise TransportError(f"the response relates to {relates_to}, not to {message_id}")


def read_answer(url: str, status: int, content: bytes, request: etree._Element) -> etree._Element:
    """The payload (the Body's first element) of the SOAP 1.2 answer ``content`` to ``request``,
    received from ``url`` with HTTP ``status``.

    SoapFault when the answer is a fault; TransportError when it is not a SOAP 1.2 envelope, comes
    with an error status and no fault, relates to another request, or has an empty body.
    """
    try:
        answer = parse_xml(content)
    except MalformedXMLError:
        raise TransportError(f"{url} answered HTTP {status} without a SOAP envelope") from None
    if answer.tag != f"{{{SOAP12_NS}}}Envelope":
        raise TransportError(f"{url} answered {answer.tag}, not a SOAP 1.2 envelope")
    raise_for_fault(answer)
    if status != 200:
        raise TransportError(f"{url} answered HTTP {status} without a SOAP fault")
    check_relates_to(answer, addressing.read(request, "MessageID"))
    body = answer.find(f"{{{SOAP12_NS}}}Body")
    payload = next(iter(body.iterchildren("{*}*")), None) if body is not None else None
    if payload is None:
        raise TransportError(f"{url} answered an envelope with an empty body")
    return payload
