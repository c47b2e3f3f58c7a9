"""Header contributors: what each writes where, and what each refuses in a received envelope."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
from lxml import etree

from tests.test_tlsi import NOW, SOFTWARE
from transport.errors import SignatureError, ValidationError
from transport.soap.addressing import SOAP12_NS, WSA_NS, Flavour
from transport.soap.envelope import build_envelope
from transport.soap.headers import Addressing, Compose, Outgoing, Security
from transport.soap.wsse import security_header
from transport.teleservices.client import (
    CTXLPS_NS,
    ContexteBAM,
    ContexteLPS,
    Contexts,
    build_request,
)

HEADER = f"{{{SOAP12_NS}}}Header"


def names(envelope: etree._Element) -> list[str]:
    return [etree.QName(child).localname for child in envelope.find(HEADER)]


@dataclass(frozen=True)
class Marker:
    """A contributor that appends one element naming the call's action."""

    def apply(self, envelope: etree._Element, call: Outgoing) -> None:
        etree.SubElement(envelope.find(HEADER), "{urn:test}Marker").text = call.action

    def verify(self, envelope: etree._Element) -> etree._Element:
        if envelope.find(f"{HEADER}/{{urn:test}}Marker") is None:
            raise ValidationError("Marker", "missing")
        return envelope


def test_contributors_write_in_order_after_addressing_and_security(load) -> None:
    assertion = etree.fromstring(
        b'<saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion"/>'
    )
    envelope = build_envelope(
        "urn:a", "https://x/", etree.Element("p"), assertions=[assertion], headers=[Marker()]
    )
    assert names(envelope) == ["MessageID", "To", "ReplyTo", "Action", "Security", "Marker"]
    assert envelope.findtext(f"{HEADER}/{{urn:test}}Marker") == "urn:a"
    assert Compose((Addressing(), Security(), Marker())).verify(envelope) is envelope


def test_addressing_refuses_an_envelope_without_message_id() -> None:
    envelope = build_envelope("urn:a", "https://x/", etree.Element("p"), flavour=Flavour.TLSI)
    assert Addressing().verify(envelope) is envelope
    header = envelope.find(HEADER)
    header.remove(header.find(f"{{{WSA_NS}}}MessageID"))
    with pytest.raises(ValidationError, match="wsa:MessageID"):
        Addressing().verify(envelope)


def test_security_refuses_two_security_headers() -> None:
    envelope = build_envelope("urn:a", "https://x/", etree.Element("p"))
    envelope.find(HEADER).extend([security_header([]), security_header([])])
    with pytest.raises(SignatureError) as caught:
        Security().verify(envelope)
    assert caught.value.reason == "wrapping"


def test_envelopes_of_one_action_share_nothing() -> None:
    # Built from one cached skeleton: each has its own MessageID and payload, and changing one
    # leaves the next untouched.
    first = build_envelope("urn:a", "https://x/", etree.Element("p1"))
    first.find(HEADER).find(f"{{{WSA_NS}}}To").text = "https://changed/"
    second = build_envelope("urn:a", "https://x/", etree.Element("p2"), message_id="urn:uuid:2")
    assert second.findtext(f"{HEADER}/{{{WSA_NS}}}To") == "https://x/"
    assert second.findtext(f"{HEADER}/{{{WSA_NS}}}MessageID") == "urn:uuid:2"
    assert first.findtext(f"{HEADER}/{{{WSA_NS}}}MessageID") not in ("", "urn:uuid:2")
    assert [child.tag for child in second.find(f"{{{SOAP12_NS}}}Body")] == ["p2"]


def test_a_root_assertion_is_moved_in_and_one_in_a_tree_is_copied() -> None:
    saml = "urn:oasis:names:tc:SAML:2.0:assertion"
    alone = etree.fromstring(f'<saml2:Assertion xmlns:saml2="{saml}" ID="a"/>'.encode())
    holder = etree.fromstring(f'<h><saml2:Assertion xmlns:saml2="{saml}" ID="b"/></h>'.encode())
    placed = holder[0]
    security = security_header([alone, placed])
    assert security[0] is alone  # moved: no copy of a freshly signed VIHF
    assert placed.getparent() is holder and security[1] is not placed  # copied, left in place
    assert [a.get("ID") for a in security] == ["a", "b"]


def test_the_teleservices_contexts_come_first_and_are_checked() -> None:
    contexts = Contexts(ContexteBAM.new("E", now=NOW), ContexteLPS.new("E", SOFTWARE, now=NOW))
    envelope = build_request(
        "urn:a",
        etree.Element("p"),
        contexte_bam=contexts.contexte_bam,
        contexte_lps=contexts.contexte_lps,
    )
    assert names(envelope) == ["ContexteBAM", "ContexteLPS", "Action", "MessageID"]
    assert contexts.verify(envelope) is envelope
    doubled = copy.deepcopy(envelope)
    doubled.find(HEADER).append(copy.deepcopy(doubled.find(f"{HEADER}/{{{CTXLPS_NS}}}ContexteLPS")))
    with pytest.raises(ValidationError, match="ContexteLPS"):
        contexts.verify(doubled)
    header = envelope.find(HEADER)
    header.remove(header.find(f"{{{CTXLPS_NS}}}ContexteLPS"))
    with pytest.raises(ValidationError, match="ContexteLPS"):
        contexts.verify(envelope)
