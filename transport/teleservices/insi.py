"""INSi messages: the two searches and their ``RESULTAT``, written and read by client and stub.

``rechercherInsAvecTraitsIdentite`` sends ``RECSANSVITALE`` (``http://www.cnamts.fr/INSiRecSans``):
birth name, first name(s), sex, birth date, optional birthplace. ``rechercherInsAvecCarteVitale``
sends ``RECVITALE`` (``http://www.cnamts.fr/INSiRecVit``): the NIRs read from the Vitale card, the
birth date and rank. Both answer ``RESULTAT`` (``http://www.cnamts.fr/INSiResultat``): a report
(``CR``: ``00`` one identity found, ``01`` none, ``02`` several) and, for ``00``, the individual's
active INS (NIR or NIA), its history and the reference identity traits (``TIQ``).

Readers find elements by namespace whatever the prefixes, and accept the ``RESULTAT`` element, the
SOAP body or the whole envelope, with or without a header (the services' answers differ). Dates of
birth are kept as strings: they are "lunar" (``1950-00-00`` when the day and month are unknown).
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from lxml import etree

from transport.config import Profile
from transport.deprecation import renamed_keywords
from transport.errors import ValidationError
from transport.soap.addressing import SOAP12_NS
from transport.soap.trace import Tracer
from transport.teleservices.client import AccessMode, TeleservicesClient
from transport.vihf import INS_NIA_OID, Patient
from transport.xml import Namespace, element_text

RECSANS_NS = "http://www.cnamts.fr/INSiRecSans"
RECVIT_NS = "http://www.cnamts.fr/INSiRecVit"
RESULTAT_NS = "http://www.cnamts.fr/INSiResultat"
_recsans = Namespace(RECSANS_NS)
_recvit = Namespace(RECVIT_NS)
_r = Namespace(RESULTAT_NS)

ACTION_SEARCH_TRAITS = "urn:ServiceIdentiteCertifiee:1.0.0:rechercherInsAvecTraitsIdentite"
ACTION_SEARCH_VITALE = "urn:ServiceIdentiteCertifiee:1.0.0:rechercherInsAvecCarteVitale"
RESPONSE_ACTIONS = {
    ACTION_SEARCH_TRAITS: f"{ACTION_SEARCH_TRAITS}Response",
    ACTION_SEARCH_VITALE: f"{ACTION_SEARCH_VITALE}Response",
}
"""The output action of each operation (WSDL ``wsaw:Action``)."""

_LUNAR_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_COG = re.compile(r"[A-Za-z0-9]{5}")
_NIR = re.compile(r"[0-9]{6}[A-Za-z0-9][0-9]{6}")
_KEY = re.compile(r"[0-9]{2}")
_XSD_DATE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(Z|[+-][0-9]{2}:[0-9]{2})?")
_SEXES = frozenset({"M", "F"})


class Report(enum.StrEnum):
    """``CR/CodeCR``: the outcome of a search."""

    FOUND = "00"
    NOT_FOUND = "01"
    SEVERAL = "02"

    @property
    def label(self) -> str:
        """The ``LibelleCR`` the service sends with the code."""
        return _LABELS[self]


_LABELS = {
    Report.FOUND: "OK",
    Report.NOT_FOUND: "Aucune identite trouvee",
    Report.SEVERAL: "Plusieurs identites trouvees",
}


# --- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraitsSearch:
    """``RECSANSVITALE``: a search by identity traits.

    ``birth_name``: the birth name, upper case. ``first_names``: one ``Prenom`` each (callers
    usually send one first name per call). ``sex``: ``M`` or ``F``. ``birth_date``: ``YYYY-MM-DD``
    (lunar dates allowed). ``birthplace``: the INSEE COG code of the birthplace (5 characters,
    ``99xxx`` abroad), optional.
    """

    birth_name: str
    first_names: tuple[str, ...]
    sex: str
    birth_date: str
    birthplace: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "first_names", tuple(self.first_names))

    def validate(self) -> TraitsSearch:
        """Return self, or ValidationError naming the first trait the service would refuse."""
        _require("NomNaissance", self.birth_name)
        if not any(name.strip() for name in self.first_names):
            raise ValidationError("Prenom", "at least one first name is required")
        if self.sex not in _SEXES:
            raise ValidationError("Sexe", f"expected M or F, not {self.sex!r}")
        _check_lunar_date("DateNaissance", self.birth_date)
        if self.birthplace is not None and not _COG.fullmatch(self.birthplace):
            raise ValidationError("LieuNaissance", "expected a 5-character INSEE COG code")
        return self


@dataclass(frozen=True)
class Matricule:
    """A NIR as INSi carries it: 13 characters, its 2-digit key, and ``TypeMatricule``."""

    number: str
    key: str | None = None
    kind: str | None = None

    def validate(self, where: str) -> Matricule:
        """Return self, or ValidationError naming ``where`` when the NIR is malformed."""
        if not _NIR.fullmatch(self.number):
            raise ValidationError(f"{where}/NumIdentifiant", "a NIR is 13 characters")
        if self.key is not None and not _KEY.fullmatch(self.key):
            raise ValidationError(f"{where}/Cle", "the key is 2 digits")
        return self


@dataclass(frozen=True)
class VitaleSearch:
    """``RECVITALE``: a search with the data of a Vitale card.

    ``individual``: the beneficiary's own NIR (``MatriculeIndividu``) when the card holds it;
    ``holder``: the NIR of the insured person who opens the rights (``MatriculeOD``). At least one
    is required. ``birth_date``: ``YYYY-MM-DD`` (lunar). ``rank``: ``RangNaissance``, the rank
    among twins (``1`` usually).
    """

    birth_date: str
    individual: Matricule | None = None
    holder: Matricule | None = None
    birth_name: str | None = None
    rank: str | None = None

    def validate(self) -> VitaleSearch:
        """Return self, or ValidationError naming the first field the service would refuse."""
        if self.individual is None and self.holder is None:
            raise ValidationError("MatriculeIndividu", "a NIR from the card is required")
        if self.individual is not None:
            self.individual.validate("MatriculeIndividu")
        if self.holder is not None:
            self.holder.validate("MatriculeOD")
        _check_lunar_date("DateNaissance", self.birth_date)
        if self.rank is not None and not self.rank.isdigit():
            raise ValidationError("RangNaissance", f"not a rank: {self.rank!r}")
        return self


def _require(name: str, value: str | None) -> None:
    if value is None or not value.strip():
        raise ValidationError(name, "required")


def _check_lunar_date(name: str, value: str | None) -> None:
    if value is None or not _LUNAR_DATE.fullmatch(value):
        raise ValidationError(name, f"expected YYYY-MM-DD, not {value!r}")


def build_traits_search(search: TraitsSearch) -> etree._Element:
    """The ``RECSANSVITALE`` body of ``search`` (validated first)."""
    search.validate()
    element = etree.Element(_RECSANSVITALE, nsmap=_RECSANS_NSMAP)
    values = (
        (_RECSANS_NOM, search.birth_name),
        *((_RECSANS_PRENOM, first_name) for first_name in search.first_names),
        (_RECSANS_SEXE, search.sex),
        (_RECSANS_DATE, search.birth_date),
        (_RECSANS_LIEU, search.birthplace),
    )
    for tag, value in values:
        if value is not None:
            etree.SubElement(element, tag).text = value
    return element


# Qualified once: a batch builds one of these bodies per call.
_RECSANSVITALE = _recsans("RECSANSVITALE")
_RECSANS_NSMAP = {"insi_recsans_ins": RECSANS_NS}
_RECSANS_NOM = _recsans("NomNaissance")
_RECSANS_PRENOM = _recsans("Prenom")
_RECSANS_SEXE = _recsans("Sexe")
_RECSANS_DATE = _recsans("DateNaissance")
_RECSANS_LIEU = _recsans("LieuNaissance")


def read_traits_search(element: etree._Element) -> TraitsSearch:
    """Read and validate a ``RECSANSVITALE``; ValidationError names what is missing or wrong."""
    _recsans.expect(element, "RECSANSVITALE")
    return TraitsSearch(
        birth_name=_recsans.text(element, "NomNaissance") or "",
        first_names=tuple(
            (name.text or "").strip() for name in element.findall(_recsans("Prenom"))
        ),
        sex=_recsans.text(element, "Sexe") or "",
        birth_date=_recsans.text(element, "DateNaissance") or "",
        birthplace=_recsans.text(element, "LieuNaissance") or None,
    ).validate()


def build_vitale_search(search: VitaleSearch) -> etree._Element:
    """The ``RECVITALE`` body of ``search`` (validated first)."""
    search.validate()
    element = etree.Element(_recvit("RECVITALE"), nsmap={"insi_recvit_ins": RECVIT_NS})
    for tag, matricule in (
        ("MatriculeIndividu", search.individual),
        ("MatriculeOD", search.holder),
    ):
        if matricule is not None:
            element.append(_matricule_element(_recvit, tag, matricule))
    _recvit.optional(element, "NomNaissance", search.birth_name)
    _recvit.optional(element, "DateNaissance", search.birth_date)
    _recvit.optional(element, "RangNaissance", search.rank)
    return element


def read_vitale_search(element: etree._Element) -> VitaleSearch:
    """Read and validate a ``RECVITALE``; ValidationError names what is missing or wrong."""
    _recvit.expect(element, "RECVITALE")
    individual = element.find(_recvit("MatriculeIndividu"))
    holder = element.find(_recvit("MatriculeOD"))
    return VitaleSearch(
        birth_date=_recvit.text(element, "DateNaissance") or "",
        individual=_read_matricule(_recvit, individual) if individual is not None else None,
        holder=_read_matricule(_recvit, holder) if holder is not None else None,
        birth_name=_recvit.text(element, "NomNaissance") or None,
        rank=_recvit.text(element, "RangNaissance") or None,
    ).validate()


def _matricule_element(namespace: Namespace, tag: str, matricule: Matricule) -> etree._Element:
    element = etree.Element(namespace(tag))
    namespace.optional(element, "NumIdentifiant", matricule.number)
    namespace.optional(element, "Cle", matricule.key)
    namespace.optional(element, "TypeMatricule", matricule.kind)
    return element


def _read_matricule(namespace: Namespace, element: etree._Element) -> Matricule:
    children = _children(element)
    return Matricule(
        number=_text(children, namespace("NumIdentifiant")) or "",
        key=_text(children, namespace("Cle")) or None,
        kind=_text(children, namespace("TypeMatricule")) or None,
    )


def _children(element: etree._Element) -> dict[str, etree._Element]:
    """The first child of each tag: one pass over the children instead of one path search
    (``element.find``) per field read."""
    children: dict[str, etree._Element] = {}
    for child in element:
        children.setdefault(child.tag, child)
    return children


def _text(children: dict[str, etree._Element], tag: str) -> str | None:
    """The stripped text of ``children``'s ``tag`` ("" when empty, None when missing), as
    :func:`transport.xml.find_text` reads it."""
    return element_text(children.get(tag))


# --- the result ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ins:
    """An INS: the individual's NIR or NIA (``IdIndividu``), its authority ``oid`` and, for a
    historical one, the dates it was in use (``DateDeb``/``DateFin``)."""

    id: Matricule
    oid: str
    start: date | None = None
    end: date | None = None

    @property
    def value(self) -> str:
        """The 15-character INS (13 characters and the key), as the DMP and the VIHF carry it."""
        return f"{self.id.number}{self.id.key or ''}"

    @property
    def is_nia(self) -> bool:
        """True for a NIA (provisional number given while the NIR is unknown)."""
        return self.oid == INS_NIA_OID

    @property
    def patient(self) -> Patient:
        """The INS as the VIHF and the DMP services name a patient, passed on as the service
        returned it (:attr:`transport.vihf.Patient.as_returned`: a key failing the mod-97
        check, as the INSi qualification identities' do, is a logged warning, not a refusal)."""
        return Patient(self.value, self.oid, as_returned=True)


@dataclass(frozen=True)
class Traits:
    """``TIQ``: the reference identity traits. ``first_name``: the first first name
    (``Prenom``), ``first_names``: the whole list as one string (``ListePrenom``)."""

    birth_name: str | None
    first_names: str | None
    sex: str | None
    birth_date: str | None
    birthplace: str | None
    first_name: str | None = None


@dataclass(frozen=True)
class Individual:
    """``INDIVIDU``: the active INS, the former ones (most recent first) and the traits."""

    active: Ins
    traits: Traits
    history: tuple[Ins, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", tuple(self.history))


@dataclass(frozen=True)
class Resultat:
    """``RESULTAT``: the report code and label, and the individual when exactly one was found."""

    code: str
    label: str
    individual: Individual | None = None

    @classmethod
    def of(cls, report: Report, individual: Individual | None = None) -> Resultat:
        """The result of ``report`` with its standard label."""
        return cls(str(report), report.label, individual)

    @property
    def report(self) -> Report | None:
        """The report as a :class:`Report`, None for a code this library does not know."""
        try:
            return Report(self.code)
        except ValueError:
            return None


def build_resultat(resultat: Resultat) -> etree._Element:
    """The ``RESULTAT`` element of ``resultat``."""
    element = etree.Element(_r("RESULTAT"), nsmap={"insi_resultat_ins": RESULTAT_NS})
    report = etree.SubElement(element, _r("CR"))
    etree.SubElement(report, _r("CodeCR")).text = resultat.code
    etree.SubElement(report, _r("LibelleCR")).text = resultat.label
    individual = resultat.individual
    if individual is not None:
        holder = etree.SubElement(element, _r("INDIVIDU"))
        holder.append(_ins_element("INSACTIF", individual.active))
        holder.extend(_ins_element("INSHISTO", former) for former in individual.history)
        traits = etree.SubElement(holder, _r("TIQ"))
        for tag, value in (
            ("NomNaissance", individual.traits.birth_name),
            ("Prenom", individual.traits.first_name),
            ("ListePrenom", individual.traits.first_names),
            ("Sexe", individual.traits.sex),
            ("DateNaissance", individual.traits.birth_date),
            ("LieuNaissance", individual.traits.birthplace),
        ):
            _r.optional(traits, tag, value)
    return element


def _ins_element(tag: str, ins: Ins) -> etree._Element:
    element = etree.Element(_r(tag))
    element.append(_matricule_element(_r, "IdIndividu", ins.id))
    _r.optional(element, "OID", ins.oid)
    _r.optional(element, "DateDeb", ins.start.isoformat() if ins.start else None)
    _r.optional(element, "DateFin", ins.end.isoformat() if ins.end else None)
    return element


def read_resultat(element: etree._Element) -> Resultat:
    """Read a ``RESULTAT``, given itself, the SOAP body or the envelope; ValidationError when it
    is missing or lacks a required part. Children are found by name, in any order."""
    children = _children(_resultat_element(element))
    report = children.get(_CR)
    if report is None:
        raise ValidationError("CR", "RESULTAT without a report")
    report_children = _children(report)
    code = _text(report_children, _CODE_CR)
    if not code:
        raise ValidationError("CR/CodeCR", "required")
    holder = children.get(_INDIVIDU)
    return Resultat(
        code=code,
        label=_text(report_children, _LIBELLE_CR) or "",
        individual=_read_individual(holder) if holder is not None else None,
    )


# The RESULTAT's tags, qualified once: a batch reads one RESULTAT per call.
_CR = _r("CR")
_CODE_CR = _r("CodeCR")
_LIBELLE_CR = _r("LibelleCR")
_INDIVIDU = _r("INDIVIDU")
_INSACTIF = _r("INSACTIF")
_INSHISTO = _r("INSHISTO")
_TIQ = _r("TIQ")
_ID_INDIVIDU = _r("IdIndividu")
_OID = _r("OID")
_DATE_DEB = _r("DateDeb")
_DATE_FIN = _r("DateFin")
_TIQ_NOM = _r("NomNaissance")
_TIQ_LISTE_PRENOM = _r("ListePrenom")
_TIQ_SEXE = _r("Sexe")
_TIQ_DATE = _r("DateNaissance")
_TIQ_LIEU = _r("LieuNaissance")
_TIQ_PRENOM = _r("Prenom")


def _resultat_element(element: etree._Element) -> etree._Element:
    if element.tag == f"{{{SOAP12_NS}}}Envelope":
        body = element.find(f"{{{SOAP12_NS}}}Body")
        if body is None:
            raise ValidationError("Body", "the envelope has no body")
        element = body
    if element.tag == f"{{{SOAP12_NS}}}Body":
        found = element.find(_r("RESULTAT"))
        if found is None:
            raise ValidationError("RESULTAT", "the body holds no RESULTAT")
        element = found
    _r.expect(element, "RESULTAT")
    return element


def _read_individual(element: etree._Element) -> Individual:
    children = _children(element)
    active = children.get(_INSACTIF)
    traits = children.get(_TIQ)
    if active is None or traits is None:
        raise ValidationError("INDIVIDU", "INSACTIF and TIQ are required")
    found = _children(traits)
    return Individual(
        active=_read_ins(active, "INSACTIF"),
        traits=Traits(
            birth_name=_text(found, _TIQ_NOM),
            first_names=_text(found, _TIQ_LISTE_PRENOM),
            sex=_text(found, _TIQ_SEXE),
            birth_date=_text(found, _TIQ_DATE),
            birthplace=_text(found, _TIQ_LIEU),
            first_name=_text(found, _TIQ_PRENOM),
        ),
        history=tuple(
            _read_ins(former, "INSHISTO") for former in element if former.tag == _INSHISTO
        ),
    )


def _read_ins(element: etree._Element, where: str) -> Ins:
    children = _children(element)
    identifier = children.get(_ID_INDIVIDU)
    oid = _text(children, _OID)
    if identifier is None or not oid:
        raise ValidationError(where, "IdIndividu and OID are required")
    return Ins(
        id=_read_matricule(_r, identifier).validate(f"{where}/IdIndividu"),
        oid=oid,
        start=_xsd_date(_text(children, _DATE_DEB), f"{where}/DateDeb"),
        end=_xsd_date(_text(children, _DATE_FIN), f"{where}/DateFin"),
    )


def _xsd_date(value: str | None, where: str) -> date | None:
    if not value:
        return None
    match = _XSD_DATE.fullmatch(value)
    try:
        return date.fromisoformat(match.group(1)) if match else date.fromisoformat(value)
    except ValueError:
        raise ValidationError(where, f"not a date: {value!r}") from None


# --- the facade ----------------------------------------------------------------------------------

# The INS name charset (ANS, Référentiel INS, traits): upper-case letters joined by one space, an
# apostrophe or one or two hyphens.
_NAME = re.compile(r"[A-Z]+(?:(?:-{1,2}|[' ])[A-Z]+)*")
_COG_CODE = re.compile(r"(?:[0-9]{2}|2A|2B)[0-9]{3}")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "`": "'"})


def normalise_name(value: str, field: str) -> str:
    """``value`` as the service expects a name: accents removed, upper case, single spaces;
    ValidationError naming ``field`` when other characters remain (Æ, Œ, digits…)."""
    value = value or ""
    if value.isascii():
        # Already plain (most rows of a batch): NFKD changes no ASCII character.
        plain = value.translate(_APOSTROPHES)
    else:
        decomposed = unicodedata.normalize("NFKD", value).translate(_APOSTROPHES)
        plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    text = " ".join(plain.upper().split())
    if not text:
        raise ValidationError(field, "required")
    if not _NAME.fullmatch(text):
        raise ValidationError(
            field,
            f"{text!r} holds characters the service refuses",
            hint="letters A-Z only, words joined by a space, an apostrophe or a hyphen "
            "(write Æ as AE and Œ as OE)",
        )
    return text


def normalise_birth_date(value: str | date) -> str:
    """A birth date as ``YYYY-MM-DD``; the day, or the day and month, may be ``00`` when
    unknown (a "lunar" date); ValidationError otherwise."""
    if isinstance(value, date):
        return value.isoformat()
    text = (value or "").strip()
    if not _LUNAR_DATE.fullmatch(text):
        raise ValidationError("DateNaissance", f"expected YYYY-MM-DD, not {text!r}")
    year, month, day = (int(part) for part in text.split("-"))
    if month == 0 and day != 0:
        raise ValidationError("DateNaissance", f"{text}: a day without a month")
    try:
        date(year, month or 1, day or 1)
    except ValueError:
        raise ValidationError("DateNaissance", f"{text} is not a date") from None
    return text


def normalise_cog(value: str) -> str:
    """An INSEE COG code of a birthplace: 5 digits (``2A``/``2B`` for Corsica, ``99xxx``
    abroad), upper case; ValidationError otherwise."""
    text = (value or "").strip().upper()
    if not _COG_CODE.fullmatch(text):
        raise ValidationError("LieuNaissance", f"{text!r} is not an INSEE COG code (5 characters)")
    return text


def vitale_query(
    birth_date: str | date,
    *,
    individual: str | Matricule | None = None,
    holder: str | Matricule | None = None,
    birth_name: str | None = None,
    rank: int | str | None = None,
) -> VitaleSearch:
    """The normalised, validated search of a Vitale card's data (see
    :meth:`InsiClient.search_by_vitale` for each field's INSi name); ValidationError first."""
    return VitaleSearch(
        birth_date=normalise_birth_date(birth_date),
        individual=_matricule(individual, "MatriculeIndividu"),
        holder=_matricule(holder, "MatriculeOD"),
        birth_name=normalise_name(birth_name, "NomNaissance") if birth_name else None,
        rank=str(rank) if rank is not None else None,
    ).validate()


@renamed_keywords(
    nom_naissance="birth_name",
    prenoms="first_names",
    sexe="sex",
    date_naissance="birth_date",
    lieu_naissance="birthplace",
)
def traits_query(
    birth_name: str,
    first_names: str | Sequence[str],
    sex: str,
    birth_date: str | date,
    birthplace: str | None = None,
) -> TraitsSearch:
    """The normalised, validated search of these traits, with every first name apart
    (``first_names`` as a list, or one string separated by spaces).

    The INSi names (CNAM, INSi guide): ``birth_name`` is ``NomNaissance``, ``first_names``
    ``Prenom``, ``sex`` ``Sexe`` (``M``/``F``), ``birth_date`` ``DateNaissance`` (``YYYY-MM-DD``
    or a date), ``birthplace`` ``LieuNaissance`` (an INSEE COG code).
    """
    family = normalise_name(birth_name, "NomNaissance")
    names = [first_names] if isinstance(first_names, str) else list(first_names)
    normalised = tuple(
        normalise_name(name, "Prenom") for value in names for name in (value or "").split()
    )
    if not normalised:
        raise ValidationError("Prenom", "at least one first name is required")
    code = (sex or "").strip().upper()
    if code not in _SEXES:
        raise ValidationError("Sexe", f"expected M or F, not {sex!r}")
    return TraitsSearch(
        birth_name=family,
        first_names=normalised,
        sex=code,
        birth_date=normalise_birth_date(birth_date),
        birthplace=normalise_cog(birthplace) if birthplace else None,
    ).validate()


def first_name_attempts(query: TraitsSearch) -> Iterator[TraitsSearch]:
    """The searches of the field's practice: one per first name, then (when there are several)
    all of them together in one ``Prenom`` separated by spaces; made one at a time, since most
    searches stop at the first first name."""
    for name in query.first_names:
        yield TraitsSearch(query.birth_name, (name,), query.sex, query.birth_date, query.birthplace)
    if len(query.first_names) > 1:
        joined = (" ".join(query.first_names),)
        yield TraitsSearch(query.birth_name, joined, query.sex, query.birth_date, query.birthplace)


@dataclass(frozen=True)
class SearchOutcome:
    """What a search found: the ``RESULTAT`` kept, the searches sent in order, and the traits
    asked for (None for a Vitale search)."""

    resultat: Resultat
    searches: tuple[TraitsSearch | VitaleSearch, ...]
    query: TraitsSearch | None = None

    @property
    def code(self) -> str:
        """``CodeCR``: ``00`` one identity, ``01`` none, ``02`` several."""
        return self.resultat.code

    @property
    def label(self) -> str:
        """``LibelleCR``."""
        return self.resultat.label

    @property
    def report(self) -> Report | None:
        """The code as a :class:`Report` (None for a code this library does not know)."""
        return self.resultat.report

    @property
    def active(self) -> Ins | None:
        """The active INS (NIR or NIA), for CR 00."""
        individual = self.resultat.individual
        return individual.active if individual else None

    @property
    def history(self) -> tuple[Ins, ...]:
        """The former INS, most recent first."""
        individual = self.resultat.individual
        return individual.history if individual else ()

    @property
    def traits(self) -> Traits | None:
        """The reference identity traits, to be copied into the patient's record."""
        individual = self.resultat.individual
        return individual.traits if individual else None

    @property
    def qualifiable(self) -> bool:
        """True when the answer allows the identity to be qualified: one identity (CR 00) whose
        birth name, sex and birth date are the ones searched (for a Vitale search: its birth
        date). Qualification also needs the identity checked on an identity document, which
        only the desk can do."""
        traits = self.traits
        if self.resultat.report is not Report.FOUND or traits is None:
            return False
        if self.query is None:
            searched = self.searches[-1] if self.searches else None
            return isinstance(searched, VitaleSearch) and searched.birth_date == traits.birth_date
        return (traits.birth_name, traits.sex, traits.birth_date) == (
            self.query.birth_name,
            self.query.sex,
            self.query.birth_date,
        )


def _matricule(value: str | Matricule | None, where: str) -> Matricule | None:
    if value is None or isinstance(value, Matricule):
        return value
    text = "".join(value.split()).upper()
    if len(text) not in (13, 15):
        raise ValidationError(where, "a NIR is 13 characters, or 15 with its key")
    return Matricule(text[:13], text[13:] or None).validate(where)


class InsiClient:
    """INSi's two searches over a :class:`~transport.teleservices.client.TeleservicesClient`;
    closing it (or leaving its ``with`` block) closes the téléservices client's connections."""

    def __init__(self, teleservices: TeleservicesClient) -> None:
        self.teleservices = teleservices

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        mode: AccessMode = AccessMode.CERTIFICATE,
        *,
        url: str | None = None,
        tracer: Tracer | None = None,
    ) -> InsiClient:
        """A client for ``profile`` in access ``mode``, with the endpoint and the credentials
        :meth:`.TeleservicesClient.from_profile` loads for that mode."""
        return cls(TeleservicesClient.from_profile(profile, mode, url=url, tracer=tracer))

    def close(self) -> None:
        """Close the pooled connections."""
        self.teleservices.close()

    def __enter__(self) -> InsiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def search(self, search: TraitsSearch | VitaleSearch) -> Resultat:
        """Send one search as it is (validated first) and read its ``RESULTAT``."""
        if isinstance(search, TraitsSearch):
            answer = self.teleservices.call(
                ACTION_SEARCH_TRAITS, build_traits_search(search), idempotent=True
            )
        else:
            answer = self.teleservices.call(
                ACTION_SEARCH_VITALE, build_vitale_search(search), idempotent=True
            )
        return read_resultat(answer)

    @renamed_keywords(
        nom_naissance="birth_name",
        prenoms="first_names",
        sexe="sex",
        date_naissance="birth_date",
        lieu_naissance="birthplace",
    )
    def search_by_traits(
        self,
        birth_name: str,
        first_names: str | Sequence[str],
        sex: str,
        birth_date: str | date,
        birthplace: str | None = None,
    ) -> SearchOutcome:
        """Search the INS of these traits the way the field does: one call per first name, then
        one with all first names together, stopping at the first CR 00.

        The traits are normalised (upper case, accents removed) and validated before anything is
        sent (ValidationError); see :func:`traits_query` for each trait's INSi name and format.
        Without a CR 00, the outcome keeps a CR 02 if any call answered one (the birthplace may
        tell the homonyms apart), else the last answer.
        """
        query = traits_query(birth_name, first_names, sex, birth_date, birthplace)
        return self.search_query(query)

    def search_query(self, query: TraitsSearch) -> SearchOutcome:
        """:meth:`search_by_traits` of an already normalised query."""
        sent: list[TraitsSearch | VitaleSearch] = []
        kept: Resultat | None = None
        for attempt in first_name_attempts(query.validate()):
            sent.append(attempt)
            resultat = self.search(attempt)
            if resultat.report is Report.FOUND:
                return SearchOutcome(resultat, tuple(sent), query)
            if kept is None or kept.report is not Report.SEVERAL:
                kept = resultat
        assert kept is not None  # a validated query has a first name, hence one attempt
        return SearchOutcome(kept, tuple(sent), query)

    @renamed_keywords(
        date_naissance="birth_date",
        nir_individu="individual",
        nir_ouvrant_droit="holder",
        nom_naissance="birth_name",
        rang_naissance="rank",
    )
    def search_by_vitale(
        self,
        birth_date: str | date,
        *,
        individual: str | Matricule | None = None,
        holder: str | Matricule | None = None,
        birth_name: str | None = None,
        rank: int | str | None = None,
    ) -> SearchOutcome:
        """Search the INS with the data read from a Vitale card, validated before anything is
        sent: the beneficiary's NIR ``individual`` (INSi ``MatriculeIndividu``) and/or the NIR of
        the insured person who opens the rights ``holder`` (``MatriculeOD``), 13 characters or 15
        with the key; ``birth_date`` (``DateNaissance``), ``birth_name`` (``NomNaissance``) and
        ``rank`` among twins (``RangNaissance``)."""
        search = vitale_query(
            birth_date, individual=individual, holder=holder, birth_name=birth_name, rank=rank
        )
        return SearchOutcome(self.search(search), (search,))

    def search_outcome(self, query: TraitsSearch | VitaleSearch) -> SearchOutcome:
        """The outcome of an already normalised query: :meth:`search_query` for traits, one
        ``RECVITALE`` call for a Vitale card's data (what a batch mixing both sends)."""
        if isinstance(query, TraitsSearch):
            return self.search_query(query)
        return SearchOutcome(self.search(query.validate()), (query,))
