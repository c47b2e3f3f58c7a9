"""What every stub checks before its business logic: the HTTP Content-Type, the SOAP 1.2 envelope,
the WS-Addressing headers, ``mustUnderstand``, and (for the DMP services) the VIHF.

The DMP and the téléservices bind SOAP 1.2 over HTTP (W3C SOAP 1.2 part 2 §7): a request is
``application/soap+xml`` (RFC 3902), whose optional ``action`` parameter, when sent, must be the
``wsa:Action``; the XDS.b repository takes MTOM (W3C SOAP MTOM, XOP):
``multipart/related; type="application/xop+xml"`` with a root part
``application/xop+xml; type="application/soap+xml"``. Any other media type is answered HTTP 415
(SOAP 1.2 part 2 §7.5.1.2). ``wsa:Action`` and ``wsa:MessageID`` appear exactly once (W3C
WS-Addressing 1.0 SOAP binding §6.4.1: ``MessageAddressingHeaderRequired``,
``InvalidAddressingHeader``/``InvalidCardinality``, ``ActionMismatch``). A header block marked
``mustUnderstand`` outside the namespaces a service processes is a ``MustUnderstand`` fault (SOAP
1.2 part 1 §5.4.8). The body of a document/literal request holds exactly one element, an instance
of the operation's input element (WS-I Basic Profile 1.1 R2201, R2712): anything else is a
``Sender`` fault, read once here for every service.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from lxml import etree

from transport.errors import MalformedXMLError, SignatureError, VihfValidationError
from transport.soap.addressing import ANONYMOUS, SOAP12_NS, WSA_NS, new_message_id
from transport.soap.envelope import SOAP_MEDIA_TYPE
from transport.soap.mtom import parse_content_type
from transport.soap.wsse import WSSE_NS, verify_security
from transport.stubs.server import StubRequest, StubResponse, soap12_fault
from transport.vihf import VerifiedVihf
from transport.xml import parse_xml
from transport.xmlsig import VerifySettings

log = logging.getLogger("transport.stubs")

XOP_MEDIA_TYPE = "application/xop+xml"
MULTIPART_RELATED = "multipart/related"
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
DMP_HEADERS = frozenset({WSA_NS, WSSE_NS})
"""The header namespaces the DMP services process (WS-Addressing, WS-Security)."""

_CERTIFICATE_REASONS = frozenset({"key-usage", "untrusted", "expired", "not-yet-valid"})
_MUST_UNDERSTAND = f"{{{SOAP12_NS}}}mustUnderstand"


class Refused(Exception):
    """A request the service refuses: the SOAP 1.2 fault to answer with, and its HTTP status.

    ``subcode`` is the outermost subcode (a QName, ``""`` for none), ``inner`` an optional
    subcode nested in it; ``status`` is 500 for a fault, 415 for an unsupported media type."""

    def __init__(
        self, code: str, subcode: str, reason: str, *, inner: str = "", status: int = 500
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.subcode = subcode
        self.inner = inner
        self.reason = reason
        self.status = status

    @property
    def subcodes(self) -> tuple[str, ...]:
        """The subcode QNames, outermost first."""
        return tuple(name for name in (self.subcode, self.inner) if name)

    def response(self) -> StubResponse:
        """The SOAP fault response of this refusal."""
        fault = soap12_fault(self.code, self.reason, subcodes=self.subcodes)
        return StubResponse(self.status, fault)


def unsupported_media_type(content_type: str, expected: str) -> Refused:
    """The HTTP 415 refusal of a body that is not of the ``expected`` media type."""
    shown = content_type.partition(";")[0].strip() or "aucun"
    return Refused(
        "Sender", "", f"type de contenu {shown!r} non pris en charge : {expected}", status=415
    )


def check_soap_content_type(content_type: str) -> str | None:
    """Refuse unless ``content_type`` is ``application/soap+xml``; its ``action`` or None."""
    media_type, parameters = parse_content_type(content_type)
    if media_type != SOAP_MEDIA_TYPE:
        raise unsupported_media_type(content_type, SOAP_MEDIA_TYPE)
    return parameters.get("action")


def check_mtom_content_type(content_type: str) -> str | None:
    """Refuse unless ``content_type`` is an MTOM package of a SOAP 1.2 envelope; its ``action``
    or None."""
    media_type, parameters = parse_content_type(content_type)
    start_info = parameters.get("start-info", SOAP_MEDIA_TYPE).lower()
    xop = parameters.get("type", "").lower() == XOP_MEDIA_TYPE
    if media_type != MULTIPART_RELATED or not xop or start_info != SOAP_MEDIA_TYPE:
        raise unsupported_media_type(content_type, f'{MULTIPART_RELATED}; type="{XOP_MEDIA_TYPE}"')
    return parameters.get("action")


def check_xop_root(content_type: str) -> None:
    """Refuse an MTOM root part that is not ``application/xop+xml; type="application/soap+xml"``."""
    media_type, parameters = parse_content_type(content_type)
    if media_type != XOP_MEDIA_TYPE or parameters.get("type", "").lower() != SOAP_MEDIA_TYPE:
        raise unsupported_media_type(content_type, f'{XOP_MEDIA_TYPE}; type="{SOAP_MEDIA_TYPE}"')


@dataclass(frozen=True)
class Envelope:
    """A request envelope that passed the SOAP and WS-Addressing checks; ``payload`` is the
    body's one element."""

    element: etree._Element
    action: str
    message_id: str
    payload: etree._Element


def read_envelope(
    body: bytes, *, understood: Collection[str], action_parameter: str | None = None
) -> Envelope:
    """Parse ``body`` (no DTD, no entities) as a SOAP 1.2 envelope with one ``wsa:Action`` (equal
    to ``action_parameter``, the media type's, when given) and one ``wsa:MessageID``, whose
    ``mustUnderstand`` header blocks are all in the ``understood`` namespaces, and whose body
    holds one element (:func:`body_payload`)."""
    try:
        envelope = parse_xml(body)
    except MalformedXMLError as error:
        raise Refused("Sender", "soap:MalformedMessage", error.message) from None
    if envelope.tag == f"{{{SOAP11_NS}}}Envelope":
        raise Refused("VersionMismatch", "", "une enveloppe SOAP 1.2 est requise")
    if envelope.tag != f"{{{SOAP12_NS}}}Envelope":
        raise Refused("Sender", "soap:MalformedMessage", "une enveloppe SOAP 1.2 est requise")
    header = envelope.find(f"{{{SOAP12_NS}}}Header")
    blocks = [child for child in header if isinstance(child.tag, str)] if header is not None else []
    _check_must_understand(blocks, understood)
    action, message_id = _one(blocks, "Action"), _one(blocks, "MessageID")
    if action_parameter is not None and action_parameter != action:
        raise Refused(
            "Sender",
            "wsa:InvalidAddressingHeader",
            "le paramètre action du type de contenu n'est pas wsa:Action",
            inner="wsa:ActionMismatch",
        )
    return Envelope(envelope, action, message_id, body_payload(envelope))


def body_payload(envelope: etree._Element) -> etree._Element:
    """The one element the SOAP 1.2 ``envelope``'s body holds (comments and white space aside);
    Refused (``Sender``, ``soap:MalformedMessage``) when the body is missing, empty or holds more
    than one element."""
    body = envelope.find(f"{{{SOAP12_NS}}}Body")
    elements = [child for child in body if isinstance(child.tag, str)] if body is not None else []
    if len(elements) != 1:
        raise Refused(
            "Sender",
            "soap:MalformedMessage",
            f"le corps SOAP doit contenir un seul élément, il en contient {len(elements)}",
        )
    return elements[0]


def _check_must_understand(blocks: list[etree._Element], understood: Collection[str]) -> None:
    for block in blocks:
        if block.get(_MUST_UNDERSTAND, "false").strip() not in ("true", "1"):
            continue
        if etree.QName(block).namespace not in understood:
            raise Refused(
                "MustUnderstand",
                "",
                f"en-tête obligatoire non compris : {etree.QName(block).localname}",
            )


def _one(blocks: list[etree._Element], name: str) -> str:
    found = [block for block in blocks if block.tag == f"{{{WSA_NS}}}{name}"]
    if len(found) > 1:
        raise Refused(
            "Sender",
            "wsa:InvalidAddressingHeader",
            f"wsa:{name} en double",
            inner="wsa:InvalidCardinality",
        )
    text = (found[0].text or "").strip() if found else ""
    if not text:
        raise Refused(
            "Sender",
            "wsa:MessageAddressingHeaderRequired",
            "wsa:Action et wsa:MessageID sont obligatoires",
        )
    return text


@dataclass(frozen=True)
class Checked:
    """A request that passed the common checks: its envelope, action, MessageID, the body's one
    element (``payload``) and VIHF."""

    envelope: etree._Element
    action: str
    message_id: str
    payload: etree._Element
    vihf: VerifiedVihf


def check_envelope(
    request: StubRequest,
    settings: VerifySettings,
    *,
    root: bytes | None = None,
    max_age: timedelta | None = timedelta(minutes=10),
) -> Checked:
    """Check a DMP request (Content-Type, envelope, WS-Addressing, VIHF); ``root`` is the SOAP
    part of an MTOM request (then the request's Content-Type must be MTOM's). Refused carries
    the fault the real services would answer."""
    if root is None:
        action_parameter = check_soap_content_type(request.content_type)
        root = request.body
    else:
        action_parameter = check_mtom_content_type(request.content_type)
    envelope = read_envelope(root, understood=DMP_HEADERS, action_parameter=action_parameter)
    vihf = _verified_vihf(envelope, settings, max_age)
    return Checked(envelope.element, envelope.action, envelope.message_id, envelope.payload, vihf)


def _verified_vihf(
    envelope: Envelope, settings: VerifySettings, max_age: timedelta | None
) -> VerifiedVihf:
    try:
        return verify_security(envelope.element, settings, max_age=max_age)
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
