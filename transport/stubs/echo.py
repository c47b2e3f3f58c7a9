"""A SOAP echo service that checks what every CI-SIS service checks before its business logic.

It applies :func:`transport.stubs.soap.check_envelope` (``application/soap+xml``, a SOAP 1.2
envelope, the WS-Addressing ``Action`` and ``MessageID``, a VIHF in ``wsse:Security`` that verifies
against the configured CA) and answers ``<XResponse>`` with the children of the request's ``<X>``
and ``RelatesTo`` the request's MessageID. The smoke test and the core's tests talk to it.
"""

from __future__ import annotations

import logging

from lxml import etree

from transport.stubs.server import StubRequest, StubResponse
from transport.stubs.soap import Refused, check_envelope, response_envelope
from transport.xmlsig import VerifySettings

log = logging.getLogger("transport.stubs")


class EchoService:
    """The echo handler; ``settings`` says which CA the VIHF signers must chain to."""

    def __init__(self, settings: VerifySettings) -> None:
        self.settings = settings

    def __call__(self, request: StubRequest) -> StubResponse:
        try:
            checked = check_envelope(request, self.settings)
        except Refused as refusal:
            log.info("refused: %s", refusal.subcode or refusal.code)
            return refusal.response()
        operation = checked.payload
        answer = etree.Element(f"{operation.tag}Response", nsmap=operation.nsmap)
        answer.extend(list(operation))
        return StubResponse(
            200, response_envelope(f"{checked.action}Response", checked.message_id, answer)
        )
