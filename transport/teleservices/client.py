"""The téléservices (TLSi) transport messages, shared by the client and the stub.

Every request to ``https://<host>/lps`` carries, in this order: ``ctxbam:ContexteBAM``
(``urn:siram:bam:ctxbam``, Version ``01_02``), ``ctxlps:ContexteLPS`` (``urn:siram:lps:ctxlps``,
Nature ``CTXLPS``, Version ``01_00``), ``wsa:Action``, ``wsa:MessageID`` (``uuid:…``) and, in card
mode only, ``wsse:Security`` holding the signed "assertion PS". In software-certificate mode the
caller is the ``INSI-AUTO``/``INSI-MANU`` certificate of the mutual TLS session and there is no
``wsse:Security``.

This module writes and reads the two contexts and the assertion PS, builds the whole envelope
(:func:`build_request`) and sends it through a :class:`transport.soap.channel.Channel`
(:func:`post`). Faults come back as :class:`transport.errors.SoapFault`: its ``details`` hold the
``siram:Erreur`` ``code``, ``severite`` and ``messageID`` (read by
:func:`transport.soap.envelope.fault_details`).
Ids are canonical UUIDs; times are UTC, ISO 8601 with milliseconds and ``Z``.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.x509.oid import NameOID
from lxml import etree

from transport import ids
from transport.config import Profile, config_directory
from transport.credentials import Credential, Purpose, Signer, subject_dn
from transport.deprecation import Alias
from transport.errors import (
    ConfigurationError,
    CredentialError,
    SignatureError,
    SoapFault,
    ValidationError,
)
from transport.soap import addressing
from transport.soap.addressing import SOAP12_NS, Flavour
from transport.soap.channel import Call, CallOptions, Channel, Wire, WireLike
from transport.soap.envelope import build_envelope
from transport.soap.headers import Outgoing
from transport.soap.trace import Tracer
from transport.soap.wsse import apply_security
from transport.tls import TLSSettings
from transport.vihf import SAML, SAML_NS, X509_SUBJECT_NAME, format_instant, verify_assertion
from transport.xml import Namespace, find_text, read_datetime
from transport.xmlsig import VerifySettings, sign_in_place

CTXBAM_NS = "urn:siram:bam:ctxbam"
CTXLPS_NS = "urn:siram:lps:ctxlps"
SIRAM_NS = "urn:siram"
CTXBAM_VERSION = "01_02"
CTXLPS_VERSION = "01_00"
CTXLPS_NATURE = "CTXLPS"
IDAM_REFERENCE = "4"
"""The ``R`` attribute of ``LPS/IDAM``: the id is a CNDA authorization number."""

SEVERITIES = frozenset({"information", "avertissement", "erreur", "fatale", "fatal"})
"""The values of ``siram:Erreur/@severite``: the enumeration of ``schema_faultSOAP_V01_01.xsd``
and ``fatal``, the spelling the live service's ``siram_40`` faults use."""

_NIR = re.compile(r"[0-9]{6}[AB0-9][0-9]{6}")
_KEY = re.compile(r"[0-9]{2}")
_LUNAR_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PORTEUR = re.compile(r"[0-9]")


_bam = Namespace(CTXBAM_NS)
_lps = Namespace(CTXLPS_NS)


# --- ContexteLPS ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Software:
    """The calling software as ``ContexteLPS/LPS`` names it.

    ``idam``: the CNDA authorization number. ``version``: the software version. ``instance``: the
    installation's UUID, generated once and kept for the life of the installation. ``urn``: the
    CTXLPS ``Nom``, ``urn:lps:<name>:<version>`` (see :meth:`named`).
    """

    idam: str
    version: str
    instance: str
    urn: str

    nom = Alias("urn")

    @classmethod
    def named(cls, name: str, version: str, *, idam: str, instance: str) -> Software:
        """The software ``name`` in ``version``, with ``Nom`` in its ``urn:lps:`` form."""
        return cls(idam=idam, version=version, instance=instance, urn=f"urn:lps:{name}:{version}")


@dataclass(frozen=True)
class ContexteLPS:
    """The ``ContexteLPS`` header: a message id, its time (UTC), the emitter and the software."""

    id: str
    time: datetime
    emitter: str | None
    software: Software | None
    version: str = CTXLPS_VERSION
    nature: str | None = CTXLPS_NATURE

    @classmethod
    def new(
        cls, emitter: str | None, software: Software, *, now: datetime | None = None
    ) -> ContexteLPS:
        """A context for one new request: a fresh UUID and the current UTC time."""
        return cls(ids.uuid4(), now or datetime.now(UTC), emitter, software)


def build_contexte_lps(context: ContexteLPS) -> etree._Element:
    """The ``ctxlps:ContexteLPS`` element of ``context``."""
    element = etree.Element(_lps("ContexteLPS"), nsmap={"ctxlps": CTXLPS_NS})
    if context.nature is not None:
        element.set("Nature", context.nature)
    element.set("Version", context.version)
    etree.SubElement(element, _lps("Id")).text = context.id
    etree.SubElement(element, _lps("Temps")).text = format_instant(context.time)
    if context.emitter is not None:
        etree.SubElement(element, _lps("Emetteur")).text = context.emitter
    software = context.software
    if software is not None:
        lps = etree.SubElement(element, _lps("LPS"))
        etree.SubElement(lps, _lps("IDAM"), R=IDAM_REFERENCE).text = software.idam
        etree.SubElement(lps, _lps("Version")).text = software.version
        etree.SubElement(lps, _lps("Instance")).text = software.instance
        etree.SubElement(lps, _lps("Nom")).text = software.urn
    return element


def read_contexte_lps(element: etree._Element) -> ContexteLPS:
    """Read a ``ctxlps:ContexteLPS``; ValidationError names the first missing or wrong field."""
    _lps.expect(element, "ContexteLPS")
    nature = element.get("Nature")
    if nature is not None and nature != CTXLPS_NATURE:
        raise ValidationError("ContexteLPS/@Nature", f"must be {CTXLPS_NATURE}, not {nature!r}")
    lps = element.find(_lps("LPS"))
    software = None
    if lps is not None:
        software = Software(
            idam=_lps.text(lps, "IDAM") or "",
            version=_lps.text(lps, "Version") or "",
            instance=_lps.text(lps, "Instance") or "",
            urn=_lps.text(lps, "Nom") or "",
        )
    return ContexteLPS(
        id=_required(element, _lps("Id"), "ContexteLPS/Id"),
        time=read_datetime(_required(element, _lps("Temps"), "ContexteLPS/Temps"), "Temps"),
        emitter=_lps.text(element, "Emetteur"),
        software=software,
        version=_version(element, "ContexteLPS"),
        nature=nature,
    )


# --- ContexteBAM ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Nir:
    """A NIR as the contexts carry it: 13 characters (``2A``/``2B`` for Corsica) and the key."""

    number: str
    key: str

    def validate(self, where: str) -> Nir:
        """Return self, or ValidationError naming ``where`` when the NIR is malformed."""
        if not _NIR.fullmatch(self.number):
            raise ValidationError(f"{where}/Num", "a NIR is 13 characters (6 digits, A/B/digit, 6)")
        if not _KEY.fullmatch(self.key):
            raise ValidationError(f"{where}/Cle", "the NIR key is 2 digits")
        return self


@dataclass(frozen=True)
class Beneficiary:
    """``COUVERTURE/BENEFICIAIRE``, read from a Vitale card: NIR, birth date (``YYYY-MM-DD``,
    lunar dates allowed), rank of birth, and ``card_holder`` (CTXBAM ``Porteur``, one digit)."""

    nir: Nir | None = None
    certified_on: date | None = None
    birth_date: str | None = None
    rank: int | None = None
    card_holder: str | None = None

    porteur = Alias("card_holder")


@dataclass(frozen=True)
class Coverage:
    """``COUVERTURE``: empty for a search by identity traits, filled from a Vitale card else.

    ``scheme``: the health insurance scheme (CTXBAM ``GrandRegime``), ``fund``: the fund
    (``Organisme``), ``centre``: the paying centre (``CodeCentre``), ``insured``: the insured
    person's NIR, ``beneficiary``: the card's beneficiary.
    """

    scheme: str | None = None
    fund: str | None = None
    centre: str | None = None
    insured: Nir | None = None
    beneficiary: Beneficiary | None = None

    grand_regime = Alias("scheme")
    organisme = Alias("fund")
    code_centre = Alias("centre")


@dataclass(frozen=True)
class ContexteBAM:
    """The ``ContexteBAM`` header: a message id, its time (UTC), the emitter and the coverage.

    ``reference_date`` is ``DateRef``, the date the rights are asked for (UTC), when given.
    """

    id: str
    time: datetime
    emitter: str | None
    coverage: Coverage = field(default_factory=Coverage)
    reference_date: datetime | None = None
    version: str = CTXBAM_VERSION

    @classmethod
    def new(
        cls,
        emitter: str | None,
        coverage: Coverage | None = None,
        *,
        now: datetime | None = None,
    ) -> ContexteBAM:
        """A context for one new request: a fresh UUID and the current UTC time."""
        return cls(ids.uuid4(), now or datetime.now(UTC), emitter, coverage or Coverage())


def build_contexte_bam(context: ContexteBAM) -> etree._Element:
    """The ``ctxbam:ContexteBAM`` element of ``context`` (NIRs are checked first)."""
    element = etree.Element(_bam("ContexteBAM"), nsmap={"ctxbam": CTXBAM_NS})
    element.set("Version", context.version)
    etree.SubElement(element, _bam("Id")).text = context.id
    etree.SubElement(element, _bam("Temps")).text = format_instant(context.time)
    if context.emitter is not None:
        etree.SubElement(element, _bam("Emetteur")).text = context.emitter
    if context.reference_date is not None:
        etree.SubElement(element, _bam("DateRef")).text = format_instant(context.reference_date)
    coverage = context.coverage
    holder = etree.SubElement(element, _bam("COUVERTURE"))
    for tag, value in (
        ("GrandRegime", coverage.scheme),
        ("Organisme", coverage.fund),
        ("CodeCentre", coverage.centre),
    ):
        if value is not None:
            etree.SubElement(holder, _bam(tag)).text = value
    if coverage.insured is not None:
        insured = etree.SubElement(holder, _bam("ASSURE"))
        _nir_element(insured, "Id", coverage.insured.validate("ASSURE/Id"))
    if coverage.beneficiary is not None:
        holder.append(_beneficiary_element(coverage.beneficiary))
    return element


def _nir_element(parent: etree._Element, tag: str, nir: Nir) -> etree._Element:
    element = etree.SubElement(parent, _bam(tag))
    etree.SubElement(element, _bam("Num")).text = nir.number
    etree.SubElement(element, _bam("Cle")).text = nir.key
    return element


def _beneficiary_element(beneficiary: Beneficiary) -> etree._Element:
    element = etree.Element(_bam("BENEFICIAIRE"))
    if beneficiary.nir is not None:
        nir = _nir_element(element, "Nir", beneficiary.nir.validate("BENEFICIAIRE/Nir"))
        certified_on = beneficiary.certified_on
        if certified_on is not None:
            etree.SubElement(nir, _bam("DateCertification")).text = certified_on.isoformat()
    if beneficiary.birth_date is not None:
        if not _LUNAR_DATE.fullmatch(beneficiary.birth_date):
            raise ValidationError("BENEFICIAIRE/DateNai", "expected YYYY-MM-DD")
        etree.SubElement(element, _bam("DateNai")).text = beneficiary.birth_date
    if beneficiary.rank is not None:
        etree.SubElement(element, _bam("Rang")).text = str(beneficiary.rank)
    if beneficiary.card_holder is not None:
        if not _PORTEUR.fullmatch(beneficiary.card_holder):
            raise ValidationError("BENEFICIAIRE/Porteur", "expected one digit")
        etree.SubElement(element, _bam("Porteur")).text = beneficiary.card_holder
    return element


def read_contexte_bam(element: etree._Element) -> ContexteBAM:
    """Read a ``ctxbam:ContexteBAM``; ValidationError names the first missing or wrong field."""
    _bam.expect(element, "ContexteBAM")
    nature = element.get("Nature")
    if nature is not None and nature != "CTXBAM":
        raise ValidationError("ContexteBAM/@Nature", f"must be CTXBAM, not {nature!r}")
    holder = element.find(_bam("COUVERTURE"))
    if holder is None:
        raise ValidationError("ContexteBAM/COUVERTURE", "required (empty for a traits search)")
    reference = _bam.text(element, "DateRef")
    return ContexteBAM(
        id=_required(element, _bam("Id"), "ContexteBAM/Id"),
        time=read_datetime(_required(element, _bam("Temps"), "ContexteBAM/Temps"), "Temps"),
        emitter=_bam.text(element, "Emetteur"),
        coverage=_read_coverage(holder),
        reference_date=read_datetime(reference, "DateRef") if reference is not None else None,
        version=_version(element, "ContexteBAM"),
    )


def _read_coverage(holder: etree._Element) -> Coverage:
    insured = holder.find(f"{_bam('ASSURE')}/{_bam('Id')}")
    beneficiary = holder.find(_bam("BENEFICIAIRE"))
    return Coverage(
        scheme=_bam.text(holder, "GrandRegime"),
        fund=_bam.text(holder, "Organisme"),
        centre=_bam.text(holder, "CodeCentre"),
        insured=_read_nir(insured, "ASSURE/Id") if insured is not None else None,
        beneficiary=_read_beneficiary(beneficiary) if beneficiary is not None else None,
    )


def _read_nir(element: etree._Element, where: str) -> Nir:
    return Nir(_bam.text(element, "Num") or "", _bam.text(element, "Cle") or "").validate(where)


def _read_beneficiary(element: etree._Element) -> Beneficiary:
    nir = element.find(_bam("Nir"))
    certified = nir.findtext(_bam("DateCertification")) if nir is not None else None
    rank = _bam.text(element, "Rang")
    if rank is not None and not rank.isdigit():
        raise ValidationError("BENEFICIAIRE/Rang", f"not an integer: {rank!r}")
    try:
        certified_on = date.fromisoformat(certified.strip()) if certified else None
    except ValueError:
        raise ValidationError("BENEFICIAIRE/Nir/DateCertification", "expected YYYY-MM-DD") from None
    return Beneficiary(
        nir=_read_nir(nir, "BENEFICIAIRE/Nir") if nir is not None else None,
        certified_on=certified_on,
        birth_date=_bam.text(element, "DateNai"),
        rank=int(rank) if rank is not None else None,
        card_holder=_bam.text(element, "Porteur"),
    )


# --- shared readers ------------------------------------------------------------------------------


def _required(element: etree._Element, tag: str, what: str) -> str:
    value = find_text(element, tag)
    if not value:
        raise ValidationError(what, "required")
    return value


def _version(element: etree._Element, what: str) -> str:
    version = element.get("Version")
    if not version:
        raise ValidationError(f"{what}/@Version", "required")
    return version


# --- assertion PS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssertionPS:
    """The "assertion PS" of card mode: who the professional is, as their card says.

    ``professional_id``: ``Subject/NameID``, the professional's id on the card (the CN of its
    certificates). ``billing_id``: the ``identifiantFacturation`` attribute. ``sector``: the
    ``secteurActivite`` attribute, a bare code such as ``SA05``.
    """

    professional_id: str
    billing_id: str | None = None
    sector: str | None = None
    name_qualifier: str = "CPS"


_ATTRIBUTES = (("identifiantFacturation", "billing_id"), ("secteurActivite", "sector"))


def build_assertion_ps(
    assertion: AssertionPS,
    issuer: str,
    *,
    now: datetime | None = None,
    assertion_id: str | None = None,
) -> etree._Element:
    """The unsigned ``saml2:Assertion`` of ``assertion``; ``issuer`` is the signer's RFC 2253 DN.

    Issuer, Subject/NameID (with ``NameQualifier``) and an AttributeStatement with the attributes
    that are set: no Conditions and no AuthnStatement, as the services' samples show.
    """
    if not assertion.professional_id.strip():
        raise ValidationError("NameID", "the professional's id is required")
    element = etree.Element(
        SAML("Assertion"),
        nsmap={"saml2": SAML_NS},
        ID=assertion_id or f"_{ids.uuid4()}",
        IssueInstant=format_instant(now or datetime.now(UTC)),
        Version="2.0",
    )
    etree.SubElement(element, SAML("Issuer"), Format=X509_SUBJECT_NAME).text = issuer
    subject = etree.SubElement(element, SAML("Subject"))
    name_id = etree.SubElement(subject, SAML("NameID"), NameQualifier=assertion.name_qualifier)
    name_id.text = assertion.professional_id
    values = [(name, getattr(assertion, key)) for name, key in _ATTRIBUTES]
    if any(value is not None for _name, value in values):
        statement = etree.SubElement(element, SAML("AttributeStatement"))
        for name, value in values:
            if value is not None:
                attribute = etree.SubElement(statement, SAML("Attribute"), Name=name)
                etree.SubElement(attribute, SAML("AttributeValue")).text = value
    return element


def sign_assertion_ps(
    assertion: AssertionPS,
    signer: Signer,
    *,
    now: datetime | None = None,
    assertion_id: str | None = None,
    algorithm: str = "rsa-sha256",
) -> etree._Element:
    """Build and sign the assertion PS with the card's signature key (RSA-SHA256 by default).

    The ``Issuer`` is the RFC 2253 DN of ``signer.certificate``; ``ds:Signature`` follows it.
    """
    issuer = subject_dn(signer.certificate)
    unsigned = build_assertion_ps(assertion, issuer, now=now, assertion_id=assertion_id)
    sign_in_place(unsigned, signer, algorithm=algorithm, after=SAML("Issuer"))
    return unsigned


def read_assertion_ps(element: etree._Element) -> AssertionPS:
    """Read an assertion PS (signed or not: nothing is verified here)."""
    name_id = element.find(f"{SAML('Subject')}/{SAML('NameID')}")
    if name_id is None or not (name_id.text or "").strip():
        raise ValidationError("NameID", "the assertion PS names no professional")
    values: dict[str, str] = {}
    for attribute in element.iterfind(f"{SAML('AttributeStatement')}/{SAML('Attribute')}"):
        value = attribute.findtext(SAML("AttributeValue"))
        if value is not None:
            values.setdefault(attribute.get("Name", ""), value.strip())
    return AssertionPS(
        professional_id=(name_id.text or "").strip(),
        billing_id=values.get("identifiantFacturation"),
        sector=values.get("secteurActivite"),
        name_qualifier=name_id.get("NameQualifier", ""),
    )


@dataclass(frozen=True)
class VerifiedAssertionPS:
    """A verified assertion PS: what it says, and who signed it."""

    assertion: AssertionPS
    assertion_id: str
    issue_instant: datetime
    signer_dn: str
    algorithm: str
    element: etree._Element = field(repr=False)


def verify_assertion_ps(
    element: etree._Element,
    settings: VerifySettings,
    *,
    now: datetime | None = None,
    max_age: timedelta | None = None,
) -> VerifiedAssertionPS:
    """Verify a signed assertion PS and read it back from what the signature covers.

    Refuses (SignatureError): unsigned, altered, wrapped, untrusted signer, a signer certificate
    that is not a signature one (when ``settings.require_non_repudiation``, the default), an
    ``Issuer`` that is not the signer's DN, a ``NameID`` that is not the signer's CN (the card's
    holder signs for themself), an ``IssueInstant`` in the future or older than ``max_age``.
    """
    signed = verify_assertion(element, settings, now=now, max_age=max_age)
    try:
        assertion = read_assertion_ps(signed.element)
    except ValidationError as error:
        raise SignatureError("malformed", error.message) from None
    holder = signed.signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_names = {str(attribute.value) for attribute in holder}
    if assertion.professional_id not in common_names:
        raise SignatureError(
            "malformed", "the NameID of the assertion PS is not the signer's card holder"
        )
    return VerifiedAssertionPS(
        assertion,
        signed.element.get("ID", ""),
        signed.issue_instant,
        signed.signer_dn,
        signed.algorithm,
        signed.element,
    )


# --- the emitter ---------------------------------------------------------------------------------


def emitter_from_certificate(credential: Credential) -> str:
    """The contexts' ``Emetteur`` in certificate mode: the OU (the structure's id) of the
    ``INSI-AUTO``/``INSI-MANU`` certificate."""
    unit = credential.organizational_unit
    if not unit:
        raise CredentialError(
            credential.source,
            "the certificate has no OU, from which the téléservices emitter is taken",
            hint="use the structure's IGC-Santé ORG AUTH_CLI certificate named INSI-AUTO/INSI-MANU",
        )
    return unit


def emitter_from_assertion(assertion: etree._Element) -> str:
    """The contexts' ``Emetteur`` in card mode: the ``NameID`` of the assertion PS."""
    return read_assertion_ps(assertion).professional_id


# --- faults --------------------------------------------------------------------------------------


def siram_error(
    code: str, message: str, *, severity: str = "erreur", message_id: str | None = None
) -> etree._Element:
    """The ``siram:Erreur`` of a fault detail: service ``code`` (``desir_5xx``, ``insi_1xx``…),
    ``severity`` (one of :data:`SEVERITIES`), the request's MessageID, the technical message."""
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severite {severity!r} (use {', '.join(sorted(SEVERITIES))})")
    element = etree.Element(f"{{{SIRAM_NS}}}Erreur", nsmap={"siram": SIRAM_NS})
    element.set("code", code)
    element.set("severite", severity)
    if message_id:
        element.set("messageID", message_id)
    element.text = message
    return element


# --- faults: what to do -------------------------------------------------------------------------

_HINTS = {
    "desir_550": "the service does not know this software: set `idam` under [lps] in the profile "
    "to the CNDA authorization number (IDAM) of the software",
    "desir_560": "access refused: in certificate mode use the structure's ORG AUTH_CLI certificate "
    "named INSI-AUTO or INSI-MANU; in card mode check the card and its signature certificate",
    "desir_500": "the service could not read the request: run again with --trace and compare the "
    "request with the service's contract",
    "insi_19": "the birth name (nom de naissance) is required",
    "insi_102": "the service is temporarily unavailable: send the request again later",
    "insi_111": "the téléservices are unavailable: send the request again later",
}
_SUBCODE_HINTS = {"siram_40": "the service failed on its side: send the request again later"}


def fault_hint(fault: SoapFault) -> str | None:
    """An English hint of what to do about a téléservices fault, for the codes known here
    (``siram:Erreur/@code`` first, then the ``siram_NN`` subcode); None for the others."""
    return _HINTS.get(fault.service_code or "") or _SUBCODE_HINTS.get(fault.subcode or "")


# --- the envelope --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contexts:
    """The header contributor of the two téléservices contexts (a
    :class:`transport.soap.headers.HeaderContributor`): ContexteBAM then ContexteLPS, first in
    the header, before WS-Addressing."""

    contexte_bam: ContexteBAM
    contexte_lps: ContexteLPS

    def apply(self, envelope: etree._Element, call: Outgoing) -> None:
        """Insert both contexts at the head of ``soap:Header``."""
        header = addressing.soap_header(envelope)
        header.insert(0, build_contexte_bam(self.contexte_bam))
        header.insert(1, build_contexte_lps(self.contexte_lps))

    def verify(self, envelope: etree._Element) -> etree._Element:
        """ValidationError unless the header holds one well-formed context of each kind."""
        for tag, reader in (
            (_bam("ContexteBAM"), read_contexte_bam),
            (_lps("ContexteLPS"), read_contexte_lps),
        ):
            found = envelope.findall(f"{{{SOAP12_NS}}}Header/{tag}")
            if len(found) != 1:
                name = etree.QName(tag).localname
                raise ValidationError(name, "exactly one is required in the SOAP header")
            reader(found[0])
        return envelope


def build_request(
    action: str,
    payload: etree._Element,
    *,
    contexte_bam: ContexteBAM,
    contexte_lps: ContexteLPS,
    assertions: Sequence[etree._Element] = (),
    message_id: str | None = None,
) -> etree._Element:
    """The whole SOAP 1.2 request: ContexteBAM, ContexteLPS, wsa:Action, wsa:MessageID (a new
    ``uuid:`` one unless given) and, when ``assertions`` are given (card mode), wsse:Security."""
    # The téléservices send no wsa:To, so the address build_envelope would put there is unused.
    return build_envelope(
        action,
        "",
        payload,
        assertions=assertions,
        flavour=Flavour.TLSI,
        message_id=message_id,
        headers=[Contexts(contexte_bam, contexte_lps)],
    )


class RequestTemplate:
    """The envelope of :func:`build_request` for one emitter and software, without coverage,
    built once: a client sending thousands of searches copies it and fills only the per-call
    values (the contexts' ids and instant, the action, the MessageID, the payload), which yields
    the envelope :func:`build_request` writes for the same values."""

    _EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

    def __init__(self, emitter: str | None, software: Software) -> None:
        self._envelope = build_request(
            "",
            etree.Element("placeholder"),
            contexte_bam=ContexteBAM("", self._EPOCH, emitter),
            contexte_lps=ContexteLPS("", self._EPOCH, emitter, software),
            message_id="",
        )
        body = self._envelope[1]
        body.remove(body[0])

    def fill(
        self,
        action: str,
        payload: etree._Element,
        *,
        now: datetime | None = None,
        assertions: Sequence[etree._Element] = (),
    ) -> etree._Element:
        """A new request: fresh UUIDs for both contexts' ``Id`` and for ``wsa:MessageID``, the
        current UTC time (or ``now``) as both contexts' ``Temps``, ``action``, ``payload`` as the
        body and, when ``assertions`` are given (card mode), wsse:Security."""
        envelope = copy.deepcopy(self._envelope)
        # The order build_request writes: ContexteBAM, ContexteLPS, wsa:Action, wsa:MessageID.
        bam, lps, wsa_action, wsa_message_id = envelope[0]
        instant = format_instant(now or datetime.now(UTC))
        bam[0].text, bam[1].text = ids.uuid4(), instant
        lps[0].text, lps[1].text = ids.uuid4(), instant
        wsa_action.text = action
        wsa_message_id.text = addressing.new_message_id(Flavour.TLSI)
        envelope[1].append(payload)
        apply_security(envelope, assertions)
        return envelope


def post(
    channel: Channel | WireLike,
    url: str,
    envelope: etree._Element,
    *,
    tracer: Tracer | None = None,
    idempotent: bool = False,
) -> etree._Element:
    """Send ``envelope`` (from :func:`build_request`) to ``url`` through ``channel`` (a
    :class:`transport.soap.channel.Channel`, or a wire or requests session to make one with
    ``tracer``) and return the first child of the answer's body (``RESULTAT`` for INSi); an
    ``idempotent`` request (a search) may be retried by the channel.

    SoapFault (with a hint for the known ``siram:Erreur`` codes) when the service answers a fault;
    TransportError when the exchange fails or the answer is not a SOAP 1.2 envelope with a body
    relating to this request.
    """
    if not isinstance(channel, Channel):
        channel = Channel(channel, tracer=tracer)
    try:
        return channel.call(Call(url, envelope, idempotent=idempotent)).payload
    except SoapFault as fault:
        fault.hint = fault.hint or fault_hint(fault)
        raise


# --- the installation ----------------------------------------------------------------------------

INSTALLATION_FILE = "installation-id"


def installation_id(directory: Path | None = None) -> str:
    """The installation's UUID (``ContexteLPS/LPS/Instance``): read from ``installation-id`` in
    ``directory`` (default :func:`config_directory`), created there once if missing.

    Two processes starting together agree on one id: the file is published with a hard link,
    which never replaces an existing one.
    """
    directory = directory or config_directory()
    path = directory / INSTALLATION_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as handle:
            handle.write(f"{uuid.uuid4()}\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(handle.name, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(handle.name)
    text = path.read_text(encoding="utf-8").strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ConfigurationError(
            f"{path}: not an installation UUID",
            hint="restore the file, or delete it to declare a new installation",
        ) from None


# --- the client ----------------------------------------------------------------------------------

log = logging.getLogger("transport.tlsi")

ALLOWED_COMMON_NAMES = frozenset({"INSI-AUTO", "INSI-MANU"})
"""The CNs the services accept on an IGC-Santé ORG AUTH_CLI software certificate (the INSi
service refuses any other with DESIR_560)."""


class AccessMode(enum.StrEnum):
    """How the caller is authenticated: the structure's software certificate, or a CPx card."""

    CERTIFICATE = "certificate"
    CARD = "card"


class TeleservicesClient:
    """Calls the téléservices at one ``/lps`` URL as one software installation and one caller.

    Certificate mode (no ``signature``): the mutual-TLS ``tls_credential`` is the structure's
    INSI-AUTO/INSI-MANU certificate, the emitter is its OU, no ``wsse:Security`` is sent; a
    certificate with another CN is warned about when the client is made, before anything is sent.
    Card mode (``signature`` given): every call carries an assertion PS signed with the card's
    signature credential (RSA-SHA256), naming the card holder (``billing_id`` and ``sector``
    as its attributes when given); the emitter is the holder's id; ``tls_credential`` may be None
    (the real card-mode host authenticates the server only).

    One channel (:class:`transport.soap.channel.Channel`, over a pooled keep-alive mutual-TLS
    session unless ``wire`` is given) serves every call, with ``options`` (deadline, retries of
    the searches); the client may be shared between threads.
    """

    def __init__(
        self,
        url: str,
        software: Software,
        tls_settings: TLSSettings,
        *,
        tls_credential: Credential | None,
        signature: Credential | None = None,
        billing_id: str | None = None,
        sector: str | None = None,
        tracer: Tracer | None = None,
        options: CallOptions | None = None,
        wire: Wire | None = None,
    ) -> None:
        self.url = url
        self.software = software
        self._signature = signature
        self._professional: AssertionPS | None = None
        if signature is None:
            if tls_credential is None:
                raise ConfigurationError(
                    "certificate mode needs the INSI-AUTO/INSI-MANU TLS credential"
                )
            self.mode = AccessMode.CERTIFICATE
            self.emitter = emitter_from_certificate(tls_credential)
            warn_unless_insi_certificate(tls_credential)
        else:
            self.mode = AccessMode.CARD
            holder = signature.common_name
            if not holder:
                raise CredentialError(signature.source, "the signature certificate has no CN")
            self._professional = AssertionPS(holder, billing_id=billing_id, sector=sector)
            self.emitter = holder
        self._template = RequestTemplate(self.emitter, software)
        self.channel = Channel.connect(
            tls_credential, tls_settings, tracer=tracer, options=options, wire=wire
        )

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        mode: AccessMode,
        *,
        url: str | None = None,
        tracer: Tracer | None = None,
    ) -> TeleservicesClient:
        """A client for ``profile``: its ``tlsi`` endpoint (or ``url``), its LPS with the
        installation id, and in certificate mode its ``insi`` credential (else its ``tls`` one),
        in card mode its ``tls`` and ``signature`` credentials."""
        endpoint = url or profile.endpoint("tlsi")
        settings = profile.tls_settings(dmp=False)
        if mode is AccessMode.CARD:
            return cls(
                endpoint,
                profile_software(profile),
                settings,
                tls_credential=profile.tls_credential.load(Purpose.TLS_CLIENT),
                signature=profile.signature_credential.load(Purpose.SIGNATURE),
                sector=profile.identity.sector,
                tracer=tracer,
                options=profile.call_options(),
            )
        spec = profile.insi_credential or profile.tls_credential
        return cls(
            endpoint,
            profile_software(profile),
            settings,
            tls_credential=spec.load(Purpose.TLS_CLIENT),
            tracer=tracer,
            options=profile.call_options(),
        )

    def call(
        self,
        action: str,
        payload: etree._Element,
        *,
        coverage: Coverage | None = None,
        idempotent: bool = False,
    ) -> etree._Element:
        """Send ``payload`` as ``action`` with fresh contexts (``coverage`` in ContexteBAM, empty
        by default) and, in card mode, a freshly signed assertion PS; return the answer's body
        payload. Any téléservice (ADRi, IMTi…) can be called this way with its body built from
        its WSDL. ``idempotent``: a read (a search), which the channel may retry when the service
        is unreachable or temporarily unavailable. SoapFault for a fault (with the siram codes and
        a hint), TransportError else."""
        assertions = []
        if self._signature is not None and self._professional is not None:
            assertions.append(sign_assertion_ps(self._professional, self._signature.signer))
        if coverage is None:
            envelope = self._template.fill(action, payload, assertions=assertions)
        else:
            envelope = build_request(
                action,
                payload,
                contexte_bam=ContexteBAM.new(self.emitter, coverage),
                contexte_lps=ContexteLPS.new(self.emitter, self.software),
                assertions=assertions,
            )
        return post(self.channel, self.url, envelope, idempotent=idempotent)

    def call_operation(
        self,
        wsdl: str | Path,
        operation: str,
        *,
        coverage: Coverage | None = None,
        **arguments: object,
    ) -> etree._Element:
        """Call ``operation`` of any téléservice whose WSDL the vendor holds (ADRi, IMTi…): zeep
        writes the body from ``arguments`` (the input element's children, by name), the action
        comes from the WSDL, and headers and security are those of :meth:`call`."""
        found = _wsdl_operation(wsdl, operation)
        action = found.abstract.wsa_action or found.soapaction
        if not action:
            raise ConfigurationError(f"{operation} has no action in {wsdl}")
        message = found.input.serialize(**arguments)
        body = message.content.find(f"{{{SOAP12_NS}}}Body")
        if body is None or len(body) != 1:
            raise ConfigurationError(f"{operation} in {wsdl} is not a document/literal operation")
        return self.call(action, body[0], coverage=coverage)

    def close(self) -> None:
        """Close the pooled connections."""
        self.channel.close()

    def __enter__(self) -> TeleservicesClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _wsdl_operation(wsdl: str | Path, operation: str) -> Any:
    """The SOAP 1.2 binding operation named ``operation`` in ``wsdl``."""
    # Imported here: zeep is needed only by this call, and ``import transport`` must not load it.
    from zeep.wsdl.bindings import Soap12Binding

    from transport.soap.wsdl import load_wsdl

    for binding in load_wsdl(wsdl).bindings.values():
        if isinstance(binding, Soap12Binding):
            with contextlib.suppress(ValueError):
                return binding.get(operation)
    raise ConfigurationError(f"no SOAP 1.2 operation {operation!r} in {wsdl}")


def warn_unless_insi_certificate(credential: Credential) -> bool:
    """Log a warning and return False when the certificate's CN is not one the téléservices
    accept in certificate mode (they would refuse every call with ``desir_560``)."""
    if credential.common_name in ALLOWED_COMMON_NAMES:
        return True
    log.warning(
        "the TLS certificate %s is named %r, not INSI-AUTO or INSI-MANU: the téléservices will "
        "refuse it in certificate mode (desir_560); use the structure's ORG AUTH_CLI certificate "
        "named INSI-AUTO (batch) or INSI-MANU (desk), or card mode",
        credential.source,
        credential.common_name,
    )
    return False


def profile_software(profile: Profile, directory: Path | None = None) -> Software:
    """The ``ContexteLPS/LPS`` of ``profile``: its LPS name and version, its téléservices
    authorization number (``[lps] idam``, else the homologation id) and the installation id."""
    lps = profile.identity.lps
    return Software.named(
        lps.name,
        lps.version,
        idam=profile.tlsi_idam or lps.homologation_id,
        instance=installation_id(directory),
    )
