"""SOAP header contributors: each writes its header blocks into a request and checks them in one.

After zeep's ``wsse`` objects and their ``Compose``: a contributor's ``apply(envelope, call)``
puts its blocks in ``soap:Header`` (SOAP 1.2 Part 1 §5.2), ``verify(envelope)`` refuses an
envelope whose blocks are missing or ambiguous and returns it. :class:`Addressing` writes the
WS-Addressing 1.0 headers in the call's flavour, :class:`Security` the ``wsse:Security`` header
holding the call's SAML assertions (OASIS WSS 1.1 SOAP Message Security, SAML Token Profile 1.1);
the service families add their own (the téléservices' contexts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from lxml import etree

from transport.errors import ValidationError
from transport.soap import addressing
from transport.soap.addressing import Flavour
from transport.soap.wsse import apply_security, find_assertions


@dataclass(frozen=True)
class Outgoing:
    """What a contributor knows of the request it writes into: the ``action``, the address it
    is sent ``to``, its ``message_id`` and the WS-Addressing ``flavour``."""

    action: str
    to: str
    message_id: str
    flavour: Flavour = Flavour.DMP


class HeaderContributor(Protocol):
    """Writes header blocks into a request envelope, and checks them in a received one."""

    def apply(self, envelope: etree._Element, call: Outgoing) -> None:
        """Put this contributor's blocks in ``envelope``'s ``soap:Header``."""
        ...

    def verify(self, envelope: etree._Element) -> etree._Element:
        """Return ``envelope``, or raise when its blocks are missing or ambiguous."""
        ...


@dataclass(frozen=True)
class Addressing:
    """The WS-Addressing headers of the call's flavour, first in the header (replacing any)."""

    def apply(self, envelope: etree._Element, call: Outgoing) -> None:
        """Write ``Action``, ``MessageID`` (and for the DMP ``To``, ``ReplyTo``)."""
        elements = addressing.headers(call.action, call.to, call.message_id, call.flavour)
        addressing.replace_headers(envelope, elements)

    def verify(self, envelope: etree._Element) -> etree._Element:
        """ValidationError unless the envelope names its ``Action`` and ``MessageID``."""
        for name in ("Action", "MessageID"):
            if addressing.read(envelope, name) is None:
                raise ValidationError(f"wsa:{name}", "required in the SOAP header")
        return envelope


@dataclass(frozen=True)
class Security:
    """``wsse:Security`` with ``assertions`` (none: no header), appended to the header."""

    assertions: tuple[etree._Element, ...] = ()

    def apply(self, envelope: etree._Element, call: Outgoing) -> None:
        """Append the ``wsse:Security`` header holding the assertions
        (:func:`transport.soap.wsse.security_header`: a root assertion moved in, others copied)."""
        apply_security(envelope, self.assertions)

    def verify(self, envelope: etree._Element) -> etree._Element:
        """SignatureError (``wrapping``) when the envelope holds more than one
        ``wsse:Security`` header; the assertions' signatures are checked by their own readers
        (:func:`transport.soap.wsse.verify_security` for a VIHF)."""
        find_assertions(envelope)
        return envelope


@dataclass(frozen=True)
class Compose:
    """Several contributors applied, and verified, in order."""

    contributors: tuple[HeaderContributor, ...]

    def apply(self, envelope: etree._Element, call: Outgoing) -> None:
        """Apply each contributor in turn."""
        for contributor in self.contributors:
            contributor.apply(envelope, call)

    def verify(self, envelope: etree._Element) -> etree._Element:
        """Verify with each contributor in turn."""
        for contributor in self.contributors:
            envelope = contributor.verify(envelope)
        return envelope
