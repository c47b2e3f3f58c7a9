"""WS-Addressing 1.0 headers in the two flavours the French services expect.

The DMP (volet transport synchrone) wants ``MessageID`` (``urn:uuid:``), ``To``, ``ReplyTo``
anonymous and ``Action``, with ``mustUnderstand`` on ``ReplyTo`` and ``Action``; the téléservices
want only ``Action`` and ``MessageID`` (``uuid:``), without ``mustUnderstand``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from lxml import etree

from transport import ids
from transport.xml import find_first

WSA_NS = "http://www.w3.org/2005/08/addressing"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
ANONYMOUS = f"{WSA_NS}/anonymous"
_MUST_UNDERSTAND = f"{{{SOAP12_NS}}}mustUnderstand"
_HEADER = f"{{{SOAP12_NS}}}Header"


class Flavour(enum.Enum):
    """Which service family's WS-Addressing conventions to follow."""

    DMP = "dmp"
    TLSI = "tlsi"


def new_message_id(flavour: Flavour = Flavour.DMP) -> str:
    """A fresh MessageID: ``urn:uuid:…`` for the DMP, ``uuid:…`` for the téléservices."""
    prefix = "urn:uuid:" if flavour is Flavour.DMP else "uuid:"
    return f"{prefix}{ids.uuid4()}"


def _wsa(name: str, text: str | None = None, *, must_understand: bool = False) -> etree._Element:
    element = etree.Element(f"{{{WSA_NS}}}{name}", nsmap={"wsa": WSA_NS})
    if must_understand:
        element.set(_MUST_UNDERSTAND, "true")
    element.text = text
    return element


def headers(action: str, to: str, message_id: str, flavour: Flavour) -> list[etree._Element]:
    """The WS-Addressing header elements of one request, in the order the services send them."""
    if flavour is Flavour.TLSI:
        return [_wsa("Action", action), _wsa("MessageID", message_id)]
    reply_to = _wsa("ReplyTo", must_understand=True)
    reply_to.append(_wsa("Address", ANONYMOUS))
    return [
        _wsa("MessageID", message_id),
        _wsa("To", to),
        reply_to,
        _wsa("Action", action, must_understand=True),
    ]


def soap_header(envelope: etree._Element) -> etree._Element:
    """The envelope's ``soap:Header``, created first in the envelope when missing."""
    header = find_first(envelope, _HEADER)
    if header is None:
        header = etree.Element(_HEADER)
        envelope.insert(0, header)
    return header


def replace_headers(envelope: etree._Element, elements: Iterable[etree._Element]) -> None:
    """Put ``elements`` in the SOAP header instead of any WS-Addressing header already there."""
    header = soap_header(envelope)
    for existing in header.findall(f"{{{WSA_NS}}}*"):
        header.remove(existing)
    for position, element in enumerate(elements):
        header.insert(position, element)


def read(envelope: etree._Element, name: str) -> str | None:
    """The text of the WS-Addressing header ``name`` (``Action``, ``RelatesTo``…), or None."""
    found = find_first(envelope, f"{{{SOAP12_NS}}}Header/{{{WSA_NS}}}{name}")
    return found.text.strip() if found is not None and found.text else None
