"""The ``wsse:Security`` header: SAML assertions in, and their verification on the receiving side.

The services want the signed assertion(s) alone in ``wsse:Security``: no Timestamp, no
BinarySecurityToken, no signature over the body (mutual TLS protects the message).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime, timedelta

from lxml import etree

from transport.errors import SignatureError
from transport.soap.addressing import SOAP12_NS, soap_header
from transport.vihf import SAML_NS, VerifiedVihf, verify_vihf
from transport.xmlsig import VerifySettings

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
_SECURITY = f"{{{WSSE_NS}}}Security"
_ASSERTION = f"{{{SAML_NS}}}Assertion"


def security_header(assertions: Sequence[etree._Element]) -> etree._Element:
    """A ``wsse:Security`` element holding ``assertions`` (signatures kept intact).

    An assertion that is the root of its own document, as :func:`transport.vihf.sign_vihf`
    returns it, is moved in (the caller's element then is the one in the header); one that
    already sits in a tree is copied, the caller's element left where it was.
    """
    security = etree.Element(_SECURITY, nsmap={"wsse": WSSE_NS})
    for assertion in assertions:
        # Either way the assertion keeps, declared on itself, every namespace it uses, so its
        # exclusive c14n (W3C Exclusive XML Canonicalization 1.0, which renders only the
        # namespaces visibly used), hence its signature, is the same inside the envelope as
        # where it was signed; a move saves the copy of a freshly signed VIHF on every call.
        security.append(assertion if assertion.getparent() is None else copy.deepcopy(assertion))
    return security


def apply_security(envelope: etree._Element, assertions: Sequence[etree._Element]) -> None:
    """Append a ``wsse:Security`` header with ``assertions`` to the envelope (none: no header)."""
    if assertions:
        soap_header(envelope).append(security_header(assertions))


def find_assertions(envelope: etree._Element) -> list[etree._Element]:
    """The SAML assertions of the single ``wsse:Security`` header; SignatureError when ambiguous."""
    securities = envelope.findall(f"{{{SOAP12_NS}}}Header/{_SECURITY}")
    if not securities:
        return []
    if len(securities) > 1:
        raise SignatureError("wrapping", "more than one wsse:Security header")
    return securities[0].findall(_ASSERTION)


def verify_security(
    envelope: etree._Element,
    settings: VerifySettings,
    *,
    now: datetime | None = None,
    max_age: timedelta | None = None,
) -> VerifiedVihf:
    """Verify the one VIHF a request carries in ``wsse:Security`` and return what it signs."""
    assertions = find_assertions(envelope)
    if not assertions:
        raise SignatureError("unsigned", "no SAML assertion in wsse:Security")
    if len(assertions) > 1:
        raise SignatureError("wrapping", "more than one SAML assertion in wsse:Security")
    return verify_vihf(assertions[0], settings, now=now, max_age=max_age)
