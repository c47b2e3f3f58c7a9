"""A SOAP echo service that checks what every CI-SIS service checks before its business logic.

It requires a SOAP 1.2 envelope, the WS-Addressing ``Action`` and ``MessageID``, and a VIHF in
``wsse:Security`` that verifies against the configured CA; it answers ``<XResponse>`` with the
children of the request's ``<X>`` and ``RelatesTo`` the request's MessageID. The smoke test and the
core's tests talk to it; the service stubs apply the same checks through :func:`check_envelope`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from lxml import etree

from transport.errors import SignatureError, VihfValidationError
from transport.soap.addressing import ANONYMOUS, SOAP12_NS, WSA_NS, new_message_id, read
from transport.soap.wsse import verify_security
from transport.stubs.server import StubRequest, StubResponse, soap12_fault
from transport.vihf import VerifiedVihf
from transport.xml import parse_xml
from transport.xmlsig import VerifySettings

log = logging.getLogger("transport.stubs")

_CERTIFICATE_REASONS = frozenset({"key-usage", "untrusted", "expired", "not-yet-valid"})


class Refused(Exception):
    """A request the service refuses: carries the SOAP fault to answer with."""

    def __init__(self, code: str, subcode: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.reason = reason

    def response(self) -> StubResponse:
        """The HTTP 500 SOAP fault response of this refusal."""
        return StubResponse(500, soap12_fault(self.code, self.reason, subcodes=(self.subcode,)))


@dataclass(frozen=True)
class Checked:
    """A request that passed the common checks: its envelope, action, MessageID and VIHF."""

    envelope: etree._Element
    action: str
    message_id: str
    vihf: VerifiedVihf


def check_envelope(
    body: bytes, settings: VerifySettings, *, max_age: timedelta | None = timedelta(minutes=10)
) -> Checked:
    """Parse and check a request; Refused carries the fault the real services would answer."""
    try:
        envelope = parse_xml(body)
    except SignatureError as error:
        raise Refused("Sender", "soap:MalformedMessage", error.message) from None
    if envelope.tag != f"{{{SOAP12_NS}}}Envelope":
        raise Refused("VersionMismatch", "soap:VersionMismatch", "a SOAP 1.2 envelope is required")
    action, message_id = read(envelope, "Action"), read(envelope, "MessageID")
    if not action or not message_id:
        raise Refused(
            "Sender",
            "wsa:MessageAddressingHeaderRequired",
            "wsa:Action and wsa:MessageID are required",
        )
    try:
        vihf = verify_security(envelope, settings, max_age=max_age)
    except SignatureError as error:
        subcode = (
            "soap:DMPInvalidCertificate"
            if error.reason in _CERTIFICATE_REASONS
            else "wsse:FailedCheck"
        )
        if error.reason == "unsigned":
            subcode = "wsse:InvalidSecurity"
        raise Refused("Sender", subcode, f"VIHF refusé : {error.message}") from None
    except VihfValidationError as error:
        raise Refused(
            "Sender", "soap:DMPVIHFInvalide", f"VIHF invalide : {error.message}"
        ) from None
    return Checked(envelope, action, message_id, vihf)


def response_envelope(action: str, relates_to: str, payload: etree._Element) -> bytes:
    """A SOAP 1.2 response with the WS-Addressing headers the services send back (Action, a
    MessageID of its own, To anonymous, RelatesTo the request's MessageID)."""
    envelope = etree.Element(f"{{{SOAP12_NS}}}Envelope", nsmap={"soap": SOAP12_NS, "wsa": WSA_NS})
    header = etree.SubElement(envelope, f"{{{SOAP12_NS}}}Header")
    etree.SubElement(header, f"{{{WSA_NS}}}Action").text = action
    etree.SubElement(header, f"{{{WSA_NS}}}MessageID").text = new_message_id()
    etree.SubElement(header, f"{{{WSA_NS}}}To").text = ANONYMOUS
    etree.SubElement(header, f"{{{WSA_NS}}}RelatesTo").text = relates_to
    etree.SubElement(envelope, f"{{{SOAP12_NS}}}Body").append(payload)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


class EchoService:
    """The echo handler; ``settings`` says which CA the VIHF signers must chain to."""

    def __init__(self, settings: VerifySettings) -> None:
        self.settings = settings

    def __call__(self, request: StubRequest) -> StubResponse:
        try:
            checked = check_envelope(request.body, self.settings)
        except Refused as refusal:
            log.info("refused: %s", refusal.subcode)
            return refusal.response()
        body = checked.envelope.find(f"{{{SOAP12_NS}}}Body")
        operation = body[0] if body is not None and len(body) else None
        if operation is None:
            return Refused("Sender", "soap:EmptyBody", "the body is empty").response()
        answer = etree.Element(f"{operation.tag}Response", nsmap=operation.nsmap)
        answer.extend(list(operation))
        return StubResponse(
            200, response_envelope(f"{checked.action}Response", checked.message_id, answer)
        )
