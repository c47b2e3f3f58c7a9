"""The one way this library parses XML it receives: no DTD, no entities, no network.

Every byte that comes from a peer (a response, a request to a stub, a file given on the command
line) goes through :func:`parse_xml`, so that XXE, entity expansion and external fetches are refused
in one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from lxml import etree

from transport.errors import SignatureError

_PARSER_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_blank_text": False,
}


class XMLSecurityError(SignatureError):
    """The XML holds a DTD or entity declaration, or is not well-formed."""

    def __init__(self, message: str) -> None:
        super().__init__("malformed", message)


def safe_parser() -> etree.XMLParser:
    """A new lxml parser with DTDs, entity resolution and network access disabled."""
    return etree.XMLParser(**_PARSER_OPTIONS)


def parse_xml(data: bytes) -> etree._Element:
    """Parse untrusted XML bytes into an element; refuse any DOCTYPE."""
    try:
        root = etree.fromstring(data, safe_parser())
    except etree.XMLSyntaxError as error:
        raise XMLSecurityError(f"not well-formed XML: {error}") from None
    _refuse_doctype(root)
    return root


def iterparse_xml(
    source: BinaryIO, events: tuple[str, ...] = ("start", "end")
) -> Iterator[tuple[str, etree._Element]]:
    """Parse untrusted XML from a binary file event by event, under :func:`parse_xml`'s rules,
    so that a caller can stop early (the header of a large document) without reading the rest."""
    try:
        context = etree.iterparse(source, events=events, **_PARSER_OPTIONS)
        for count, (event, element) in enumerate(context):
            if count == 0:
                # A DOCTYPE precedes the root element: known at the first event.
                _refuse_doctype(element)
            yield event, element
    except etree.XMLSyntaxError as error:
        raise XMLSecurityError(f"not well-formed XML: {error}") from None


def _refuse_doctype(element: etree._Element) -> None:
    docinfo = element.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise XMLSecurityError("XML with a DOCTYPE is refused")
