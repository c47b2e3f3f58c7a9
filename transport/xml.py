"""XML in one place: parsing what is received, building and reading elements, instants.

Every byte that comes from a peer (a response, a request to a stub, a file given on the command
line) goes through :func:`parse_xml`: no DTD, no entities, no network, so that XXE, entity
expansion and external fetches are refused in one place. :class:`Namespace` builds and reads
the elements of one namespace; :func:`read_datetime` (``xsd:dateTime``) and :func:`read_ts`
(HL7 V3 TS) read the instants the messages carry, :func:`format_ts` writes an HL7 TS.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import BinaryIO

from lxml import etree

from transport.errors import MalformedXMLError, ValidationError

_PARSER_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_blank_text": False,
}


def safe_parser() -> etree.XMLParser:
    """A new lxml parser with DTDs, entity resolution and network access disabled."""
    return etree.XMLParser(**_PARSER_OPTIONS)


_THREAD = threading.local()


def _thread_parser() -> etree.XMLParser:
    # A parser serves one parse at a time: one per thread, made once rather than per message.
    parser = getattr(_THREAD, "parser", None)
    if parser is None:
        parser = _THREAD.parser = safe_parser()
    return parser


def parse_xml(data: bytes) -> etree._Element:
    """Parse untrusted XML bytes into an element; MalformedXMLError when they are not
    well-formed or hold a DOCTYPE."""
    try:
        root = etree.fromstring(data, _thread_parser())
    except etree.XMLSyntaxError as error:
        raise MalformedXMLError(f"not well-formed XML: {error}") from None
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
        raise MalformedXMLError(f"not well-formed XML: {error}") from None


def _refuse_doctype(element: etree._Element) -> None:
    docinfo = element.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise MalformedXMLError("XML with a DOCTYPE is refused")


# --- building and reading elements ---------------------------------------------------------------


@dataclass(frozen=True)
class Namespace:
    """An XML namespace (``uri``) and the builders and readers of the elements in it.

    Calling it qualifies a name, or each step of a path: ``HL7("patient/id")`` is
    ``{urn:hl7-org:v3}patient/{urn:hl7-org:v3}id`` (James Clark notation, as lxml wants).
    """

    uri: str

    def __call__(self, path: str) -> str:
        return _qualified(self.uri, path)

    def root(self, name: str, **attributes: str | None) -> etree._Element:
        """A new element ``name`` declaring this namespace as the default one."""
        return etree.Element(self(name), _attributes(attributes), nsmap={None: self.uri})

    def sub(
        self,
        parent: etree._Element,
        name: str,
        text: str | None = None,
        /,
        **attributes: str | None,
    ) -> etree._Element:
        """:func:`subelement` of ``name`` in this namespace."""
        return subelement(parent, self(name), text, **attributes)

    def optional(self, parent: etree._Element, name: str, text: str | None) -> None:
        """A child ``name`` of ``parent`` holding ``text``, written only when ``text`` is not
        None (an optional element of a schema)."""
        if text is not None:
            subelement(parent, self(name), text)

    def find(self, element: etree._Element | None, path: str) -> etree._Element | None:
        """The first element at ``path`` (steps in this namespace) under ``element``, or None."""
        if element is None:
            return None
        return _compiled_steps(self.uri, path).first(element)

    def findall(self, element: etree._Element, path: str) -> Iterator[etree._Element]:
        """Every element at ``path`` (steps in this namespace) under ``element``, in order."""
        return iter(_compiled_steps(self.uri, path)(element))

    def text(self, element: etree._Element | None, path: str) -> str | None:
        """:func:`find_text` at ``path`` (steps in this namespace)."""
        return element_text(self.find(element, path))

    def require(
        self, element: etree._Element | None, path: str, what: str | None = None
    ) -> etree._Element:
        """:func:`find_required` at ``path`` (steps in this namespace); ``what`` defaults to
        ``path``."""
        return _required(self.find(element, path), what or path)

    def expect(self, element: etree._Element, name: str, what: str | None = None) -> None:
        """:func:`expect_tag` of ``name`` in this namespace; ``what`` defaults to ``name``."""
        expect_tag(element, self(name), what or name)


@functools.lru_cache(maxsize=4096)
def _qualified(uri: str, path: str) -> str:
    # Readers and builders ask for the same few hundred paths on every message: each is
    # qualified once, so lxml's own cache of compiled paths is keyed by the same string.
    return "/".join(f"{{{uri}}}{step}" for step in path.split("/"))


_STEP = re.compile(r"(?:\{([^{}]*)\})?([A-Za-z_][\w.-]*|\*)")


@dataclass(frozen=True)
class ChildPath:
    """A path of child steps, each an lxml tag selector (``{uri}name``, ``name`` for no
    namespace, ``*`` or ``{uri}*``), walked from the element it is called on."""

    tags: tuple[str, ...]

    def __call__(self, element: etree._Element) -> list[etree._Element]:
        """The matching elements, in document order."""
        found = [element]
        for tag in self.tags:
            found = [child for parent in found for child in parent.iterchildren(tag)]
        return found

    def first(self, element: etree._Element) -> etree._Element | None:
        """The first matching element in document order, or None."""
        node = element
        for tag in self.tags:
            node = next(node.iterchildren(tag), None)
            if node is None:
                # The first element of some step has no match below it: a later one may.
                found = self(element)
                return found[0] if found else None
        # Through the first element of each step: nothing else can come before it.
        return node


@functools.lru_cache(maxsize=4096)
def compiled_path(path: str) -> ChildPath:
    """``path``, child steps in James Clark notation (``{uri}name/{uri}name``, as lxml's ``find``
    takes them; ``*`` for any name), checked and split once; calling it returns the matching
    elements in document order.

    lxml's ``find`` interprets its ElementPath in Python at every call (about 2 µs a step), and
    an XPath evaluation lets go of the GIL: with threads waiting for it, every lookup then costs
    a context switch. Walking ``iterchildren`` keeps both in C and the GIL held.
    """
    tags = []
    for step in _clark_steps(path):
        if _STEP.fullmatch(step) is None:
            raise ValueError(f"not a path of child steps: {path!r}")
        tags.append(step)
    return ChildPath(tuple(tags))


@functools.lru_cache(maxsize=4096)
def _compiled_steps(uri: str, path: str) -> ChildPath:
    # One cache lookup per read instead of two (the qualified path, then its XPath).
    return compiled_path(_qualified(uri, path))


def _clark_steps(path: str) -> list[str]:
    # A namespace URI holds slashes: split only on those outside braces.
    steps, depth, start = [], 0, 0
    for position, character in enumerate(path):
        depth += {"{": 1, "}": -1}.get(character, 0)
        if character == "/" and depth == 0:
            steps.append(path[start:position])
            start = position + 1
    steps.append(path[start:])
    return steps


def find_first(element: etree._Element | None, path: str) -> etree._Element | None:
    """The first element at ``path`` (see :func:`compiled_path`) under ``element``, or None."""
    if element is None:
        return None
    return compiled_path(path).first(element)


def _attributes(attributes: dict[str, str | None]) -> dict[str, str]:
    # An attribute given as None is left out: optional attributes are written only when known.
    return {key: value for key, value in attributes.items() if value is not None}


def subelement(
    parent: etree._Element, tag: str, text: str | None = None, /, **attributes: str | None
) -> etree._Element:
    """A new child ``tag`` (Clark notation) of ``parent``, with ``text`` when not None and the
    ``attributes`` that are not None."""
    element = etree.SubElement(parent, tag, _attributes(attributes))
    if text is not None:
        element.text = text
    return element


def find_text(element: etree._Element | None, path: str) -> str | None:
    """The text of the first element at ``path`` under ``element``, stripped of surrounding
    white space ("" for an empty element); None when there is no such element."""
    return element_text(element.find(path) if element is not None else None)


def element_text(found: etree._Element | None) -> str | None:
    """The text of ``found`` stripped of surrounding white space ("" for an empty element);
    None when ``found`` is None."""
    return (found.text or "").strip() if found is not None else None


def find_required(element: etree._Element | None, path: str, what: str) -> etree._Element:
    """The first element at ``path`` under ``element``; ValidationError naming ``what`` when
    there is none."""
    return _required(element.find(path) if element is not None else None, what)


def _required(found: etree._Element | None, what: str) -> etree._Element:
    if found is None:
        raise ValidationError(what, "missing element")
    return found


def expect_tag(element: etree._Element, tag: str, what: str) -> None:
    """Refuse ``element`` unless it is a ``tag`` (Clark notation): ValidationError naming
    ``what``."""
    if element.tag != tag:
        expected, found = etree.QName(tag).localname, localname(element)
        raise ValidationError(what, f"expected {expected}, found {found}")


def localname(element: etree._Element) -> str:
    """The element's name without its namespace ("" for a comment or processing instruction)."""
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


# --- instants ------------------------------------------------------------------------------------

# XML Schema 1.1 Part 2 §3.3.7 dateTime, the four-digit years the services use.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?"
)


def read_datetime(value: str | None, what: str, *, default_zone: tzinfo | None = UTC) -> datetime:
    """An ``xsd:dateTime`` (``YYYY-MM-DDThh:mm:ss[.s+][Z|±hh:mm]``) as an aware UTC datetime.

    A value without a time zone is in ``default_zone``, or refused when it is None. Fractions
    beyond the microsecond are dropped. ValidationError naming ``what`` when it is not one.
    """
    match = _DATE_TIME.fullmatch((value or "").strip())
    if match is None:
        raise ValidationError(what, f"not an xsd:dateTime: {value!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if zone is None and default_zone is None:
        raise ValidationError(what, f"no time zone: {value!r}")
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=_zone(zone) if zone is not None else default_zone,
        )
    except ValueError:
        raise ValidationError(what, f"not a calendar date and time: {value!r}") from None
    return moment.astimezone(UTC)


def _zone(text: str) -> tzinfo:
    if text == "Z":
        return UTC
    offset = timedelta(hours=int(text[1:3]), minutes=int(text[4:6]))
    return timezone(-offset if text[0] == "-" else offset)


def read_ts(value: str, what: str = "time") -> datetime:
    """An HL7 V3 TS of 8 to 14 digits (``YYYYMMDD[HH[MM[SS]]]``, HL7 V3 Data Types R1) as an
    aware UTC datetime; ValidationError naming ``what`` when it is not one."""
    digits = value.strip()
    if not digits.isdigit() or len(digits) not in (8, 10, 12, 14):
        raise ValidationError(what, "not an HL7 date (YYYYMMDD[HHMMSS])")
    padded = digits.ljust(14, "0")
    fields = (padded[0:4], padded[4:6], padded[6:8], padded[8:10], padded[10:12], padded[12:14])
    try:
        return datetime(*(int(field) for field in fields), tzinfo=UTC)
    except ValueError:
        raise ValidationError(what, "not a calendar date") from None


def format_ts(moment: datetime) -> str:
    """An HL7 V3 TS (and XDS DTM) in UTC to the second, ``YYYYMMDDHHMMSS``; a naive
    ``moment`` is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Formatted by hand: strftime costs half as much again, on every HL7 message.
    u = moment.astimezone(UTC)
    return f"{u.year:04d}{u.month:02d}{u.day:02d}{u.hour:02d}{u.minute:02d}{u.second:02d}"
