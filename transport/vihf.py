"""The VIHF: the SAML 2.0 assertion that identifies the caller to the DMP and other CI-SIS services.

:class:`Vihf` holds every attribute of the volet's table, validated the way the DMP would;
:func:`build_assertion` writes it as a ``saml2:Assertion`` in the order the schema and the
volet require; :func:`sign_vihf` signs it with a signature credential; :func:`verify_vihf`
checks a received one and reads it back, trusting only what the signature covers.
"""

from __future__ import annotations

import copy
import enum
import functools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from lxml import etree

from transport import ids
from transport.credentials import Signer, rfc2253_dn, subject_dn
from transport.errors import SignatureError, ValidationError, VihfValidationError
from transport.xml import Namespace, read_datetime
from transport.xmlsig import VerifySettings, sign_in_place, verify_enveloped

SAML_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
SAML = Namespace(SAML_NS)
"""The SAML 2.0 assertion namespace (OASIS SAML 2.0 Core), its builders and readers."""
HL7_NS = "urn:hl7-org:v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XS_NS = "http://www.w3.org/2001/XMLSchema"
X509_SUBJECT_NAME = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"

AC_SMARTCARD_PKI = "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI"
AC_UNSPECIFIED = "urn:oasis:names:tc:SAML:2.0:ac:classes:unspecified"
AC_TLS_CLIENT = "urn:oasis:names:tc:SAML:2.0:ac:classes:TLSClient"

PROFESSION_SYSTEM = "1.2.250.1.71.1.2.7"
"""TRE_G15 ProfessionSante: the code system of the first role."""
SPECIALTY_SYSTEM = "1.2.250.1.71.4.2.5"
"""TRE_R01 savoir-faire: the code system of a doctor's or pharmacist's specialty role."""
AUTOMATE_SYSTEM = "1.2.250.1.213.1.1.4.6"
PURPOSE_SYSTEM = "1.2.250.1.213.1.1.4.248"
SECTOR_SYSTEM = "1.2.250.1.71.4.2.4"

INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"
INS_TEST_OID = "1.2.250.1.213.1.4.10"
INS_DEMO_OID = "1.2.250.1.213.1.4.11"
log = logging.getLogger("transport.vihf")

INS_OIDS = frozenset({INS_NIR_OID, INS_NIA_OID, INS_TEST_OID, INS_DEMO_OID})

MODE_ATTRIBUTE_NAMES = ("Authentification_Mode", "Authentification_mode")
"""Both spellings found in official artefacts; the first is written by default, both are read."""

_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
_RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
_CONFIDENTIALITY = "urn:oasis:names:tc:xspa:1.0:resource:patient:hl7:confidentiality-code"
_DOCTOR_OR_PHARMACIST = frozenset({"10", "21"})
_SECTOR = re.compile(r"SA[0-9]{2}\^" + re.escape(SECTOR_SYSTEM))
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
_INS = re.compile(r"[12378][0-9]{4}(2A|2B|[0-9]{2})[0-9]{6}[0-9]{2}")


class AuthMode(enum.StrEnum):
    """How the caller authenticated: with a card, or through its structure."""

    DIRECTE = "DIRECTE"
    INDIRECTE = "INDIRECTE"
    INDIRECTE_RENFORCEE = "INDIRECTE_RENFORCEE"


@dataclass(frozen=True)
class Code:
    """An HL7 CE value: ``code`` in ``code_system`` (an OID), with its display name.

    ``original_text``: the CE's ``originalText`` (HL7 V3 Data Types, CD.originalText: the text
    the user entered or chose), which carries the reason of a break-glass access.
    """

    code: str
    code_system: str
    display_name: str = ""
    code_system_name: str | None = None
    original_text: str | None = None


_PURPOSE_SYSTEM_NAME = "mode acces VIHF 2.0"

NORMAL_ACCESS = Code("normal", PURPOSE_SYSTEM, "Accès normal", _PURPOSE_SYSTEM_NAME)
"""The purpose of use of an ordinary access (TRE_R248 ModeAcces ``normal``)."""

BREAK_GLASS_ACCESS = Code(
    "bris_de_glace", PURPOSE_SYSTEM, "Accès en mode bris de glace", _PURPOSE_SYSTEM_NAME
)
"""TRE_R248 ModeAcces ``bris_de_glace``: an emergency access by a professional who is not
authorized on the record (refused when the patient opposed it, ``OPPOSITION_BRIS_DE_GLACE``)."""

EMERGENCY_CENTER_ACCESS = Code(
    "centre_15", PURPOSE_SYSTEM, "Accès en mode centre de régulation", _PURPOSE_SYSTEM_NAME
)
"""TRE_R248 ModeAcces ``centre_15``: an access by the regulating doctor of an emergency call
centre (SAMU-Centre 15; refused when the patient opposed it, ``OPPOSITION_ACCES_URGENCE``)."""

SECRET_CONNECTION = Code(
    "INVISIBLE_REPRESENTANTS_LEGAUX",
    "1.2.250.1.213.1.1.4.13",
    "Non visible par les représentants légaux du patient",
)
"""The VIHF ``confidentiality-code`` of a secret connection ("connexion secrète": a minor seen
without their legal representatives' knowledge): what is submitted under it is hidden from the
legal representatives (the DMP confidentiality code of the same name)."""


class DmpAccessMode(enum.StrEnum):
    """The TRE_R248 ModeAcces code of a DMP access (the VIHF ``purposeofuse``).

    A name of its own: :class:`transport.teleservices.client.AccessMode` is the INSi's unrelated
    choice between a certificate and a CPS card.
    """

    NORMAL = "normal"
    BREAK_GLASS = "bris_de_glace"
    EMERGENCY_CENTER = "centre_15"


_PURPOSES = {
    DmpAccessMode.NORMAL: NORMAL_ACCESS,
    DmpAccessMode.BREAK_GLASS: BREAK_GLASS_ACCESS,
    DmpAccessMode.EMERGENCY_CENTER: EMERGENCY_CENTER_ACCESS,
}


@dataclass(frozen=True)
class DmpAccess:
    """How a professional accesses a DMP: the mode (``purposeofuse``), the reason they record
    for a break-glass access (required then, carried as the purpose's ``originalText``), and
    whether the connection is secret (the ``confidentiality-code`` attribute).
    """

    mode: DmpAccessMode = DmpAccessMode.NORMAL
    reason: str | None = None
    secret: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", DmpAccessMode(self.mode))
        if self.mode is DmpAccessMode.BREAK_GLASS and not (self.reason or "").strip():
            raise VihfValidationError(_PURPOSE, "a break-glass access records its reason")

    @property
    def purpose_of_use(self) -> Code:
        """The VIHF ``purposeofuse`` of this access."""
        return replace(_PURPOSES[self.mode], original_text=self.reason or None)

    def applied(self, vihf: Vihf) -> Vihf:
        """``vihf`` with this access's purpose of use and confidentiality code."""
        return replace(
            vihf,
            purpose_of_use=self.purpose_of_use,
            confidentiality_code=SECRET_CONNECTION if self.secret else None,
        )


@dataclass(frozen=True)
class Patient:
    """The patient a call concerns: INS (NIR or NIA, 15 characters with its key) and its OID.

    ``as_returned``: the INS is what a national service (INSi) returned or a peer sent, passed
    on as it is; its key is not recomputed into a refusal (the INSi qualification identities
    carry keys that fail the mod-97 check), a warning is logged instead. An INS typed by a user
    keeps the default (False): a wrong key is refused before anything is sent.
    """

    ins: str
    oid: str = INS_NIR_OID
    as_returned: bool = field(default=False, compare=False)

    @property
    def resource_id(self) -> str:
        """The HL7v2 CX form the VIHF carries: ``INS^^^&OID&ISO^NH``."""
        return f"{self.ins}^^^&{self.oid}&ISO^NH"

    @classmethod
    def from_resource_id(cls, value: str) -> Patient:
        """Read back a ``resource-id`` value; VihfValidationError when it is not in CX form."""
        match = re.fullmatch(r"([^^]+)\^\^\^&([0-9.]+)&ISO\^NH", value)
        if match is None:
            raise VihfValidationError(_RESOURCE_ID, "not an INS in CX form")
        # A received VIHF names the patient as its sender had it: read as sent.
        return cls(match.group(1), match.group(2), as_returned=True)


@dataclass(frozen=True)
class Lps:
    """The software (Logiciel de Professionnel de Santé) making the call."""

    name: str
    version: str
    homologation_id: str
    instance_id: str | None = None


@dataclass(frozen=True)
class Vihf:
    """Every attribute of a VIHF (volet transport synchrone, table of §4.3.1.5).

    ``subject_id``: NameID, the user's national identifier (IdNat). ``user_name``: the
    ``subject-id`` attribute, "NOM Prénom", required in the indirect modes. ``structure_id``:
    Identifiant_Structure. ``sector``: Secteur_Activite as ``SAxx^1.2.250.1.71.4.2.4`` (a bare
    ``SAxx`` is completed). ``roles``: profession first, then the specialty for doctors and
    pharmacists. ``patient``: None only for calls that concern no patient (TD0.4).
    """

    subject_id: str
    mode: AuthMode
    structure_id: str
    sector: str
    roles: tuple[Code, ...]
    lps: Lps
    user_name: str | None = None
    patient: Patient | None = None
    purpose_of_use: Code = NORMAL_ACCESS
    confidentiality_code: Code | None = None
    resource_urn: str = "urn:dmp"
    authn_context: str = AC_SMARTCARD_PKI
    authn_context_decl: str | None = None
    version: str = "3.0"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", AuthMode(self.mode))
        object.__setattr__(self, "roles", tuple(self.roles))
        if re.fullmatch(r"SA[0-9]{2}", self.sector):
            object.__setattr__(self, "sector", f"{self.sector}^{SECTOR_SYSTEM}")

    def with_patient(self, patient: Patient | None) -> Vihf:
        """The same identity for another patient (one VIHF is built per call)."""
        if patient is self.patient:
            return self
        # Every other field is already normalised: a copy with one field changed, without
        # dataclasses.replace's __init__ and __post_init__ (twice per call).
        changed = object.__new__(Vihf)
        changed.__dict__.update(self.__dict__, patient=patient)
        return changed

    def validate(self) -> Vihf:
        """Return self, or raise VihfValidationError for what the DMP would refuse."""
        _require("NameID", self.subject_id)
        _require("Identifiant_Structure", self.structure_id)
        _require("LPS_Nom", self.lps.name)
        _require("LPS_Version", self.lps.version)
        _require("LPS_ID_HOMOLOGATION_DMP", self.lps.homologation_id)
        _require("Ressource_URN", self.resource_urn)
        if not _SECTOR.fullmatch(self.sector):
            raise VihfValidationError(
                "Secteur_Activite",
                f"{self.sector!r} is not SAxx^{SECTOR_SYSTEM}",
                hint="use a code of JDV_J61-HealthcareFacilityTypeCode-DMP, e.g. SA07",
            )
        if self.mode is not AuthMode.DIRECTE:
            _require(_SUBJECT_ID, self.user_name, f"required in {self.mode} mode")
        self._validate_roles()
        if self.patient is not None:
            validate_ins(self.patient)
        return self

    def _validate_roles(self) -> None:
        if not self.roles:
            raise VihfValidationError(_ROLE, "at least one role (the profession) is required")
        for role in self.roles:
            if not role.code or not _OID.fullmatch(role.code_system):
                raise VihfValidationError(
                    _ROLE, f"malformed role {role.code!r}/{role.code_system!r}"
                )
        first = self.roles[0]
        needs_specialty = first.code in _DOCTOR_OR_PHARMACIST
        if first.code_system == PROFESSION_SYSTEM and needs_specialty and len(self.roles) < 2:
            raise VihfValidationError(
                _ROLE,
                "a doctor or pharmacist needs a second role with the specialty",
                hint=f"add e.g. Code('SM26', '{SPECIALTY_SYSTEM}', 'Qualifié en Médecine "
                "Générale (SM)')",
            )


def _require(name: str, value: str | None, why: str = "required") -> None:
    if value is None or not value.strip():
        raise VihfValidationError(name, why)


def ins_key(body: str) -> str:
    """The two-digit key of an INS's first 13 characters (Corsica's 2A and 2B count as 19 and
    18)."""
    return f"{97 - int(body.replace('2A', '19').replace('2B', '18')) % 97:02d}"


def validate_ins(patient: Patient) -> None:
    """Raise VihfValidationError unless ``patient`` holds a well-formed INS with a right key
    (a wrong key is only a logged warning for an INS :attr:`Patient.as_returned`)."""
    if patient.oid not in INS_OIDS:
        raise VihfValidationError(
            _RESOURCE_ID,
            f"unknown INS authority {patient.oid}",
            hint="INS-NIR 1.2.250.1.213.1.4.8, NIA .4.9, test .4.10, demonstration .4.11",
        )
    if not _INS.fullmatch(patient.ins):
        raise VihfValidationError(_RESOURCE_ID, "the INS must be 13 characters and a 2-digit key")
    if ins_key(patient.ins[:13]) != patient.ins[13:]:
        if patient.as_returned:
            log.warning("an INS as returned by its service fails the key check; sent as it is")
            return
        raise VihfValidationError(_RESOURCE_ID, "the INS key does not match its 13 characters")


@dataclass(frozen=True)
class VihfOptions:
    """How the assertion is written and signed.

    ``mode_attribute``: the spelling of the authentication mode attribute name (see
    :data:`MODE_ATTRIBUTE_NAMES`). ``validity``: when set, a ``Conditions`` element bounds the
    assertion to [now, now + validity]. ``algorithm``: the signature algorithm.
    """

    mode_attribute: str = MODE_ATTRIBUTE_NAMES[0]
    validity: timedelta | None = None
    algorithm: str = "rsa-sha256"


def format_instant(moment: datetime) -> str:
    """A SAML/TLSi instant: UTC, ISO 8601 with milliseconds and ``Z``
    (``YYYY-MM-DDThh:mm:ss.sssZ``, an ``xsd:dateTime``)."""
    # Formatted by hand: strftime costs twice as much, on every VIHF.
    u = moment.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond // 1000:03d}Z"
    )


def build_assertion(
    vihf: Vihf,
    issuer: str,
    *,
    options: VihfOptions = VihfOptions(),
    now: datetime | None = None,
    assertion_id: str | None = None,
) -> etree._Element:
    """The unsigned ``saml2:Assertion`` of ``vihf``; ``issuer`` is the signer's RFC 2253 DN.

    The assertion is a copy of the identity's template (built and validated once per identity,
    issuer and options) with the per-call values filled in: ``ID``, the instants and the patient.
    """
    if vihf.patient is not None:
        validate_ins(vihf.patient)
    now = now or datetime.now(UTC)
    template = _template(vihf.with_patient(None), vihf.patient is not None, issuer, options)
    assertion = copy.deepcopy(template.element)
    assertion.set("ID", assertion_id or f"_{ids.uuid4()}")
    instant = format_instant(now)
    assertion.set("IssueInstant", instant)
    assertion[template.authn_statement].set("AuthnInstant", instant)
    if template.conditions is not None:
        conditions = assertion[template.conditions]
        conditions.set("NotBefore", instant)
        conditions.set("NotOnOrAfter", format_instant(now + options.validity))
    if vihf.patient is not None:
        assertion[template.attributes][template.resource_id][0].text = vihf.patient.resource_id
    return assertion


@dataclass(frozen=True)
class _Template:
    """An identity's assertion with placeholders, and the child positions of what each call
    fills: ``element[authn_statement]``, ``element[conditions]`` (None: no validity), and
    ``element[attributes][resource_id]`` (the patient's attribute; None: no patient)."""

    element: etree._Element
    authn_statement: int
    conditions: int | None
    attributes: int
    resource_id: int | None


@functools.lru_cache(maxsize=64)
def _template(identity: Vihf, with_patient: bool, issuer: str, options: VihfOptions) -> _Template:
    """The assertion of a validated ``identity`` with placeholders for the per-call values; a
    practice signs thousands of VIHFs for one identity, so building one costs a copy."""
    identity.validate()
    placeholder = Patient("", INS_TEST_OID) if with_patient else None
    element = _build(identity.with_patient(placeholder), issuer, options, _EPOCH)
    attributes = element.find(SAML("AttributeStatement"))
    names = [attribute.get("Name") for attribute in attributes]
    conditions = element.find(SAML("Conditions"))
    return _Template(
        element,
        element.index(element.find(SAML("AuthnStatement"))),
        element.index(conditions) if conditions is not None else None,
        element.index(attributes),
        names.index(_RESOURCE_ID) if with_patient else None,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _build(vihf: Vihf, issuer: str, options: VihfOptions, now: datetime) -> etree._Element:
    """The assertion of ``vihf`` in the order of the schema and the volet (ID left empty)."""
    assertion = etree.Element(
        SAML("Assertion"),
        nsmap={"saml2": SAML_NS, "xsi": XSI_NS, "xs": XS_NS},
        ID="",
        IssueInstant=format_instant(now),
        Version="2.0",
    )
    etree.SubElement(assertion, SAML("Issuer"), Format=X509_SUBJECT_NAME).text = issuer
    subject = etree.SubElement(assertion, SAML("Subject"))
    etree.SubElement(subject, SAML("NameID")).text = vihf.subject_id
    if options.validity is not None:
        etree.SubElement(
            assertion,
            SAML("Conditions"),
            NotBefore=format_instant(now),
            NotOnOrAfter=format_instant(now + options.validity),
        )
    statement = etree.SubElement(
        assertion, SAML("AuthnStatement"), AuthnInstant=format_instant(now)
    )
    context = etree.SubElement(statement, SAML("AuthnContext"))
    etree.SubElement(context, SAML("AuthnContextClassRef")).text = vihf.authn_context
    if vihf.authn_context_decl:
        etree.SubElement(context, SAML("AuthnContextDecl")).text = vihf.authn_context_decl
    attributes = etree.SubElement(assertion, SAML("AttributeStatement"))
    for name, values in _attributes(vihf, options):
        attribute = etree.SubElement(attributes, SAML("Attribute"), Name=name)
        for value in values:
            holder = etree.SubElement(attribute, SAML("AttributeValue"))
            if isinstance(value, Code):
                tag = "PurposeOfUse" if name == _PURPOSE else "Role"
                holder.append(_code_element(tag, value))
            else:
                holder.set(f"{{{XSI_NS}}}type", "xs:string")
                holder.text = value
    return assertion


def _attributes(vihf: Vihf, options: VihfOptions) -> Iterator[tuple[str, tuple[str | Code, ...]]]:
    yield "Identifiant_Structure", (vihf.structure_id,)
    yield "Secteur_Activite", (vihf.sector,)
    if vihf.user_name:
        yield _SUBJECT_ID, (vihf.user_name,)
    yield _ROLE, vihf.roles
    yield "VIHF_Version", (vihf.version,)
    yield options.mode_attribute, (str(vihf.mode),)
    if vihf.patient is not None:
        yield _RESOURCE_ID, (vihf.patient.resource_id,)
    yield "Ressource_URN", (vihf.resource_urn,)
    yield _PURPOSE, (vihf.purpose_of_use,)
    if vihf.confidentiality_code is not None:
        yield _CONFIDENTIALITY, (vihf.confidentiality_code,)
    if vihf.lps.instance_id:
        yield "LPS_ID", (vihf.lps.instance_id,)
    yield "LPS_Nom", (vihf.lps.name,)
    yield "LPS_Version", (vihf.lps.version,)
    yield "LPS_ID_HOMOLOGATION_DMP", (vihf.lps.homologation_id,)


def _code_element(tag: str, code: Code) -> etree._Element:
    element = etree.Element(f"{{{HL7_NS}}}{tag}", nsmap={None: HL7_NS})
    element.set("code", code.code)
    element.set("codeSystem", code.code_system)
    if code.code_system_name:
        element.set("codeSystemName", code.code_system_name)
    if code.display_name:
        element.set("displayName", code.display_name)
    element.set(f"{{{XSI_NS}}}type", "CE")
    if code.original_text:
        etree.SubElement(element, f"{{{HL7_NS}}}originalText").text = code.original_text
    return element


def sign_vihf(
    vihf: Vihf,
    signer: Signer,
    *,
    options: VihfOptions = VihfOptions(),
    now: datetime | None = None,
    assertion_id: str | None = None,
) -> etree._Element:
    """Build and sign the assertion of ``vihf`` with a signature credential's signer.

    The ``Issuer`` is the RFC 2253 DN of ``signer.certificate``; ``ds:Signature`` follows it.
    """
    issuer = subject_dn(signer.certificate)
    assertion = build_assertion(vihf, issuer, options=options, now=now, assertion_id=assertion_id)
    sign_in_place(assertion, signer, algorithm=options.algorithm, after=_ISSUER)
    return assertion


_ISSUER = SAML("Issuer")


@dataclass(frozen=True)
class VerifiedVihf:
    """A verified VIHF: the identity read from the signed assertion, and who signed it."""

    vihf: Vihf
    assertion_id: str
    issue_instant: datetime
    issuer: str
    signer_dn: str
    algorithm: str
    element: etree._Element = field(repr=False)


def verify_vihf(
    assertion: etree._Element,
    settings: VerifySettings,
    *,
    now: datetime | None = None,
    max_age: timedelta | None = None,
) -> VerifiedVihf:
    """Verify a signed VIHF and read it back.

    Refuses (SignatureError): unsigned, altered, wrapped, untrusted or non-signature signer, an
    ``Issuer`` that is not the signer's DN, an ``IssueInstant`` in the future or older than
    ``max_age``, a ``Conditions`` window that excludes ``now`` (all with ``settings.clock_skew``).
    A VIHF whose content would be refused raises VihfValidationError.
    """
    signed = verify_assertion(assertion, settings, now=now, max_age=max_age)
    vihf = read_vihf(signed.element).validate()
    return VerifiedVihf(
        vihf,
        signed.element.get("ID", ""),
        signed.issue_instant,
        signed.signer_dn,
        signed.signer_dn,
        signed.algorithm,
        signed.element,
    )


@dataclass(frozen=True)
class SignedAssertion:
    """A SAML 2.0 assertion whose signature verified: ``element`` as the signature covers it
    (the only part to read), the ``signer`` certificate and its RFC 2253 DN (the ``Issuer``),
    the SignatureMethod URI, the ``IssueInstant``."""

    element: etree._Element
    signer: x509.Certificate
    signer_dn: str
    algorithm: str
    issue_instant: datetime


def verify_assertion(
    assertion: etree._Element,
    settings: VerifySettings,
    *,
    now: datetime | None = None,
    max_age: timedelta | None = None,
) -> SignedAssertion:
    """Verify what a VIHF and an assertion PS share: a SAML 2.0 ``Assertion`` (SAML 2.0 Core
    §2.3.3) with a valid enveloped signature by a trusted signer
    (:func:`transport.xmlsig.verify_enveloped`), whose ``Issuer`` is the signer's DN and whose
    times hold at ``now`` (:func:`check_times`); SignatureError otherwise."""
    now = now or datetime.now(UTC)
    if assertion.tag != SAML("Assertion"):
        raise SignatureError("malformed", f"not a SAML 2.0 assertion: {assertion.tag}")
    verified = verify_enveloped(assertion, settings, now=now)
    signed = verified.element
    signer_dn = rfc2253_dn(verified.signer.subject)
    issuer = SAML.text(signed, "Issuer")
    if issuer != signer_dn:
        raise SignatureError("malformed", f"Issuer {issuer!r} is not the signer's DN {signer_dn!r}")
    issued = check_times(signed, now, settings.clock_skew, max_age)
    return SignedAssertion(signed, verified.signer, signer_dn, verified.algorithm, issued)


def signed_instant(value: str | None, what: str) -> datetime:
    """A signed ``xsd:dateTime`` (SAML 2.0 Core §1.3.3: UTC, with its zone) as an aware UTC
    datetime; SignatureError ``malformed`` when it is not one or has no time zone."""
    try:
        return read_datetime(value, what, default_zone=None)
    except ValidationError as error:
        raise SignatureError("malformed", error.message) from None


def check_times(
    signed: etree._Element, now: datetime, skew: timedelta, max_age: timedelta | None
) -> datetime:
    """Check a signed assertion's ``IssueInstant`` (not in the future, not older than ``max_age``)
    and its ``Conditions`` window against ``now`` with ``skew``; return the issue instant."""
    issued = signed_instant(signed.get("IssueInstant"), "IssueInstant")
    if issued > now + skew:
        raise SignatureError("stale", f"IssueInstant {signed.get('IssueInstant')} is in the future")
    if max_age is not None and issued < now - max_age - skew:
        raise SignatureError("stale", f"IssueInstant {signed.get('IssueInstant')} is too old")
    conditions = signed.find(SAML("Conditions"))
    if conditions is not None:
        if conditions.get("NotBefore"):
            not_before = signed_instant(conditions.get("NotBefore"), "NotBefore")
            if now + skew < not_before:
                raise SignatureError("stale", "the assertion is not valid yet (NotBefore)")
        if conditions.get("NotOnOrAfter"):
            not_after = signed_instant(conditions.get("NotOnOrAfter"), "NotOnOrAfter")
            if now - skew >= not_after:
                raise SignatureError("stale", "the assertion has expired (NotOnOrAfter)")
    return issued


def read_vihf(assertion: etree._Element) -> Vihf:
    """Read a :class:`Vihf` from an assertion element (signed or not; nothing is verified here)."""
    values: dict[str, list[str | Code]] = {}
    for attribute in assertion.iterfind(f"{SAML('AttributeStatement')}/{SAML('Attribute')}"):
        name = attribute.get("Name", "")
        values.setdefault(name, []).extend(_values(attribute))

    def one(name: str) -> str | None:
        found = values.get(name)
        return found[0] if found and isinstance(found[0], str) else None

    def code(name: str) -> Code | None:
        found = values.get(name)
        return found[0] if found and isinstance(found[0], Code) else None

    mode = next((one(name) for name in MODE_ATTRIBUTE_NAMES if one(name)), None)
    if mode not in AuthMode.__members__:
        raise VihfValidationError("Authentification_Mode", f"missing or unknown: {mode!r}")
    resource = one(_RESOURCE_ID)
    return Vihf(
        subject_id=SAML.text(assertion, "Subject/NameID") or "",
        mode=AuthMode(mode),
        structure_id=one("Identifiant_Structure") or "",
        sector=one("Secteur_Activite") or "",
        roles=tuple(value for value in values.get(_ROLE, []) if isinstance(value, Code)),
        lps=Lps(
            name=one("LPS_Nom") or "",
            version=one("LPS_Version") or "",
            homologation_id=one("LPS_ID_HOMOLOGATION_DMP") or "",
            instance_id=one("LPS_ID"),
        ),
        user_name=one(_SUBJECT_ID),
        patient=Patient.from_resource_id(resource) if resource else None,
        purpose_of_use=code(_PURPOSE) or NORMAL_ACCESS,
        confidentiality_code=code(_CONFIDENTIALITY),
        resource_urn=one("Ressource_URN") or "",
        authn_context=SAML.text(assertion, "AuthnStatement/AuthnContext/AuthnContextClassRef")
        or "",
        authn_context_decl=SAML.text(assertion, "AuthnStatement/AuthnContext/AuthnContextDecl"),
        version=one("VIHF_Version") or "",
    )


def _values(attribute: etree._Element) -> Iterator[str | Code]:
    for holder in attribute.iterfind(SAML("AttributeValue")):
        child = next(iter(holder), None)
        if child is None:
            yield holder.text or ""
        else:
            yield Code(
                child.get("code", ""),
                child.get("codeSystem", ""),
                child.get("displayName", ""),
                child.get("codeSystemName"),
                child.findtext(f"{{{HL7_NS}}}originalText"),
            )
