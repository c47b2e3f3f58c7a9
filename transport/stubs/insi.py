"""The téléservices stub at ``/lps``: INSi, checked the way the Assurance Maladie service checks.

Every request goes through, in order: the checks of :mod:`transport.stubs.soap` (an
``application/soap+xml`` body, else HTTP 415; a well-formed SOAP 1.2 envelope; one ``wsa:Action``,
matching the media type's ``action`` when sent, and one ``wsa:MessageID``; no ``mustUnderstand``
header outside WS-Addressing, WS-Security and the two contexts); a valid ``ContexteBAM``
(Version ``01_02``) and ``ContexteLPS`` (Version ``01_00``, with ``LPS/IDAM``); then the access
mode. With a ``wsse:Security`` header (card mode) it must hold exactly one assertion PS, which
must verify against the stubs' CA and be signed with a signature certificate by the card holder
it names. Without one (software-certificate mode), the mutual-TLS client certificate's CN must be
``INSI-AUTO`` or ``INSI-MANU``. As the real service has a host per mode, the stubs serve the
certificate mode on mutual TLS and the card mode on a server-only TLS port of its own
(:attr:`transport.stubs.app.Stubs.card_teleservices_url`), where a request without an assertion
PS has no certificate to show and is refused (``desir_560``).

Faults are SOAP 1.2 faults (HTTP 500, 415 for a media type) with subcode ``soap:siram_NN`` (the
prefix bound to the SOAP 1.2 envelope namespace, as live faults have it) and a
``siram:Erreur`` detail (``code``, ``severite``, ``messageID`` echoing the request's MessageID
when it has one):

============================================  ========  =========  ==========  ================
refusal                                       Code      subcode    code        source
============================================  ========  =========  ==========  ================
no ContexteLPS, or no IDAM in it              Sender    siram_100  desir_550   live capture
certificate CN, or assertion PS refused       Sender    siram_100  desir_560   code: padoa doc
malformed XML, not SOAP 1.2, no WS-A,         Sender    siram_10   desir_500   project's choice
bad context, unknown action, bad body,
media type (HTTP 415), mustUnderstand
birth name missing                            Sender    siram_10   insi_19     ABAK tests
state unreadable (SQLite error)               Receiver  siram_40   insi_102    live capture
============================================  ========  =========  ==========  ================

No full list of the real codes is public: the subcodes of desir_560 and
of desir_500, and desir_500 itself, are this project's choices.

Answers: a normal ``RESULTAT`` in a body without a SOAP header, as every captured INSi response
(so no ``wsa:RelatesTo``; the MessageID is echoed in faults only).

State: the test identities live in the ``insi_`` tables of the stubs' SQLite database, seeded
idempotently with test persons of the CNDA INSi conformance test plan. Their NIRs are invented for
the stub (valid keys, authority :data:`~transport.vihf.INS_TEST_OID`, spec §5); the NIA of
PROVISOIRE MATRICULE has the NIA authority. HOUILLES PIERRE PAUL JACQUES is deliberately absent
(CR 01); the two DE VINCI LEONARDO differ only by birthplace (CR 02 without it).

Search by traits: same birth name, sex and birth date, same birthplace when one is given, and first
names that match the person's list (:func:`first_names_match`); one person → CR 00, none → CR 01,
more → CR 02. A person is found by its seeded traits and answered with them, but where the live
qualification service answers others (:data:`LIVE_ANSWERS`: TCHITCHI OLA, found by the test
plan's traits, answers first names CATARINA BELLA and birthplace 63220).

Search with Vitale card data: the card's NIR (``MatriculeIndividu``, else ``MatriculeOD``: a test
person is their own insured person) is looked up among the NIRs, active or former, of the test
persons (never a NIA: cards carry NIRs); its key, when sent, must be that NIR's key; the birth date
must be the person's, and the birth name too when sent. The answer is the person's active INS.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID
from lxml import etree

from transport.errors import MalformedXMLError, SignatureError, ValidationError
from transport.soap.addressing import SOAP12_NS, WSA_NS
from transport.soap.wsse import WSSE_NS, find_assertions
from transport.stubs.app import StubContext
from transport.stubs.server import StubRequest, StubResponse, soap12_fault
from transport.stubs.soap import Envelope, Refused, check_soap_content_type, read_envelope
from transport.stubs.store import Database
from transport.teleservices.client import (
    CTXBAM_NS,
    CTXBAM_VERSION,
    CTXLPS_NS,
    CTXLPS_VERSION,
    read_contexte_bam,
    read_contexte_lps,
    siram_error,
    verify_assertion_ps,
)
from transport.teleservices.insi import (
    ACTION_SEARCH_TRAITS,
    ACTION_SEARCH_VITALE,
    Individual,
    Ins,
    Matricule,
    Report,
    Resultat,
    Traits,
    TraitsSearch,
    VitaleSearch,
    build_resultat,
    read_traits_search,
    read_vitale_search,
)
from transport.vihf import INS_NIA_OID, INS_TEST_OID
from transport.xml import parse_xml
from transport.xmlsig import VerifySettings

log = logging.getLogger("transport.stubs")

ALLOWED_COMMON_NAMES = frozenset({"INSI-AUTO", "INSI-MANU"})
"""The CNs a software certificate must have to call INSi."""
UNDERSTOOD_HEADERS = frozenset({WSA_NS, WSSE_NS, CTXBAM_NS, CTXLPS_NS})
"""The header namespaces the service processes (a ``mustUnderstand`` block outside: refused)."""
ASSERTION_MAX_AGE = timedelta(minutes=10)
"""How old an assertion PS may be (the real limit is not published; the VIHF's is used)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS insi_persons (
    person_id INTEGER PRIMARY KEY,
    birth_name TEXT NOT NULL,
    first_names TEXT NOT NULL,
    sex TEXT NOT NULL CHECK (sex IN ('M', 'F')),
    birth_date TEXT NOT NULL,
    birthplace TEXT NOT NULL,
    answered_first_names TEXT,
    answered_birthplace TEXT
);
CREATE INDEX IF NOT EXISTS insi_persons_traits ON insi_persons (birth_name, birth_date);
CREATE TABLE IF NOT EXISTS insi_identifiers (
    number TEXT NOT NULL,
    oid TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT,
    person_id INTEGER NOT NULL REFERENCES insi_persons (person_id),
    position INTEGER NOT NULL,
    start_date TEXT,
    end_date TEXT,
    PRIMARY KEY (number, oid),
    UNIQUE (person_id, position)
);
"""
"""An identifier at position 0 is the person's active INS; 1, 2… their former ones. A person's
``answered_`` traits, when set, are answered instead of those it is found by (NULL: the same)."""

ADDED_COLUMNS = (
    ("insi_persons", "answered_first_names", "TEXT"),
    ("insi_persons", "answered_birthplace", "TEXT"),
)
"""Columns added to :data:`SCHEMA` after its first version: a database made before gets them
(NULL, so every person already stored answers as before)."""


@dataclass(frozen=True)
class AnsweredTraits:
    """Traits the live service answers for a test person other than those it is found by:
    ``first_names`` (``ListePrenom``, space-separated; its first one is ``Prenom``) and
    ``birthplace`` (``LieuNaissance``, INSEE code); None where it answers the searched one."""

    first_names: str | None = None
    birthplace: str | None = None


def _person(
    name: str,
    first_names: str,
    sex: str,
    birth_date: str,
    birthplace: str,
    ins: str,
    *history: Ins,
    oid: str = INS_TEST_OID,
) -> Individual:
    traits = Traits(name, first_names, sex, birth_date, birthplace, first_names.split()[0])
    return Individual(Ins(Matricule(ins[:13], ins[13:]), oid), traits, history)


TEST_PERSONS: tuple[Individual, ...] = (
    _person(
        "ECETINSI",
        "PIERRE-ALAIN MURIEL FLORIANT",
        "M",
        "2009-07-14",
        "63220",
        "109076322051718",
        Ins(
            Matricule("2090763220517", "65", "NIR"),
            INS_TEST_OID,
            date(2009, 7, 20),
            date(2019, 2, 28),
        ),
    ),
    _person("DE VINCI", "LEONARDO", "M", "2014-02-01", "63220", "114026322039113"),
    _person("DE VINCI", "LEONARDO", "M", "2014-02-01", "99127", "114029912705830"),
    _person(
        "PROVISOIRE", "MATRICULE", "M", "2009-07-01", "63220", "109076322090221", oid=INS_NIA_OID
    ),
    _person(
        "D'ARTAGNAN DE L'HERAULT", "PIERRE-ALAIN", "M", "2001-06-17", "63220", "101066322012708"
    ),
    _person("ADRTROIS", "TOUSSAINT", "M", "1960-01-01", "2B020", "160012B02003378"),
    # Found by the CNDA test plan's traits; answered as the live qualification service does.
    _person("TCHITCHI", "OLA CATARINA BELLA", "F", "1936-06-21", "97411", "236069741108675"),
    _person("CORSE", "ANTHONY", "M", "1980-03-02", "2B020", "180032B02004588"),
    # As the live qualification service answers it: its key (60) fails the mod-97 check (10).
    _person("HERMANN", "GATIEN", "M", "1981-03-24", "63220", "181036322045660"),
    _person("NESSI", "NATHALIE", "F", "1977-07-14", "75115", "277077511531849"),
    _person("ADRUN", "ZOE", "F", "1975-12-31", "69123", "275126912340265"),
    _person("ADRDEUX", "LAURENT", "M", "1981-01-01", "33063", "181013306315743"),
    _person("ADRTROIS", "DOMINIQUE", "F", "1997-02-26", "13055", "297021305526492"),
)
"""The seeded test identities (persons of the CNDA INSi conformance test plan, invented NIRs but
for HERMANN GATIEN, whose INS is the live qualification service's, key included)."""

LIVE_ANSWERS: dict[str, AnsweredTraits] = {
    # TCHITCHI OLA F 1936-06-21: the live qualification service answers these.
    "236069741108675": AnsweredTraits("CATARINA BELLA", "63220"),
}
"""The test persons the live service answers with other traits, by active INS (``Ins.value``)."""


def normalise(value: str) -> str:
    """A name as the stub compares it: upper case, spaces collapsed."""
    return " ".join(value.upper().split())


def first_names_match(requested: Sequence[str], first_names: str) -> bool:
    """Whether the first name(s) of a search designate a person whose first names are
    ``first_names``: the requested names, joined, are the whole list or its beginning, or a
    single requested name is any one of the list."""
    wanted = normalise(" ".join(requested)).split()
    listed = normalise(first_names).split()
    if not wanted:
        return False
    return wanted == listed[: len(wanted)] or (len(wanted) == 1 and wanted[0] in listed)


class InsiRegistry:
    """The INSi test identities in the stubs' database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        database.ensure(SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        for table, column, kind in ADDED_COLUMNS:
            present = {row["name"] for row in self.database.query(f"PRAGMA table_info({table})")}
            if column not in present:
                with self.database.transaction() as connection:
                    connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def seed(self) -> None:
        """Add every :data:`TEST_PERSONS` entry not already there, with its
        :data:`LIVE_ANSWERS` traits (set on one already there too, so an older database answers
        as the live service)."""
        for person in TEST_PERSONS:
            self.add(person, LIVE_ANSWERS.get(person.active.value))

    def add(self, individual: Individual, answered: AnsweredTraits | None = None) -> bool:
        """Store ``individual``, found by its traits and answering ``answered`` ones where given,
        unless its active INS is already known (then only ``answered``, when given, is set on
        it); True when added."""
        active = individual.active
        with self.database.transaction() as connection:
            known = connection.execute(
                "SELECT person_id FROM insi_identifiers WHERE number = ? AND oid = ?",
                (active.id.number, active.oid),
            ).fetchone()
            if known:
                if answered is not None:
                    _set_answered(connection, known["person_id"], answered)
                return False
            traits = individual.traits
            person_id = connection.execute(
                "INSERT INTO insi_persons (birth_name, first_names, sex, birth_date, birthplace)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    normalise(traits.birth_name or ""),
                    normalise(traits.first_names or ""),
                    traits.sex,
                    traits.birth_date,
                    traits.birthplace,
                ),
            ).lastrowid
            if answered is not None:
                _set_answered(connection, person_id, answered)
            for position, ins in enumerate((active, *individual.history)):
                connection.execute(
                    "INSERT INTO insi_identifiers (number, oid, key, kind, person_id, position,"
                    " start_date, end_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ins.id.number,
                        ins.oid,
                        ins.id.key,
                        ins.id.kind,
                        person_id,
                        position,
                        ins.start.isoformat() if ins.start else None,
                        ins.end.isoformat() if ins.end else None,
                    ),
                )
        return True

    def search_traits(self, search: TraitsSearch) -> Resultat:
        """The answer to a search by traits (see the module's matching rules)."""
        birthplace = search.birthplace.upper() if search.birthplace else None
        rows = self.database.query(
            "SELECT * FROM insi_persons WHERE birth_name = ? AND sex = ? AND birth_date = ?"
            " AND (? IS NULL OR birthplace = ?) ORDER BY person_id",
            (normalise(search.birth_name), search.sex, search.birth_date, birthplace, birthplace),
        )
        matches = [row for row in rows if first_names_match(search.first_names, row["first_names"])]
        return self._answer(matches)

    def search_vitale(self, search: VitaleSearch) -> Resultat:
        """The answer to a search with Vitale card data (see the module's mapping)."""
        card_nir = search.individual or search.holder
        assert card_nir is not None  # VitaleSearch.validate requires one
        rows = self.database.query(
            "SELECT p.* FROM insi_persons p JOIN insi_identifiers i USING (person_id)"
            " WHERE i.number = ? AND i.oid != ? AND (? IS NULL OR i.key = ?)"
            " ORDER BY p.person_id",
            (card_nir.number, INS_NIA_OID, card_nir.key, card_nir.key),
        )
        matches = [
            row
            for row in rows
            if row["birth_date"] == search.birth_date
            and (search.birth_name is None or row["birth_name"] == normalise(search.birth_name))
        ]
        return self._answer(matches)

    def _answer(self, matches: list[sqlite3.Row]) -> Resultat:
        if not matches:
            return Resultat.of(Report.NOT_FOUND)
        if len(matches) > 1:
            return Resultat.of(Report.SEVERAL)
        return Resultat.of(Report.FOUND, self._individual(matches[0]))

    def _individual(self, person: sqlite3.Row) -> Individual:
        identifiers = [
            Ins(
                Matricule(row["number"], row["key"], row["kind"]),
                row["oid"],
                date.fromisoformat(row["start_date"]) if row["start_date"] else None,
                date.fromisoformat(row["end_date"]) if row["end_date"] else None,
            )
            for row in self.database.query(
                "SELECT * FROM insi_identifiers WHERE person_id = ? ORDER BY position",
                (person["person_id"],),
            )
        ]
        first_names = person["answered_first_names"] or person["first_names"]
        traits = Traits(
            birth_name=person["birth_name"],
            first_names=first_names,
            sex=person["sex"],
            birth_date=person["birth_date"],
            birthplace=person["answered_birthplace"] or person["birthplace"],
            first_name=first_names.split()[0],
        )
        return Individual(identifiers[0], traits, tuple(identifiers[1:]))


def _set_answered(connection: sqlite3.Connection, person_id: int, answered: AnsweredTraits) -> None:
    connection.execute(
        "UPDATE insi_persons SET answered_first_names = ?, answered_birthplace = ?"
        " WHERE person_id = ?",
        (
            normalise(answered.first_names) if answered.first_names else None,
            answered.birthplace,
            person_id,
        ),
    )


class Refusal(Exception):
    """A request the service refuses: the SOAP fault and the ``siram:Erreur`` to answer with."""

    def __init__(
        self,
        code: str,
        subcode: str,
        service_code: str,
        reason: str,
        detail: str,
        severity: str = "erreur",
        *,
        status: int = 500,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.subcode = subcode
        self.service_code = service_code
        self.reason = reason
        self.detail = detail
        self.severity = severity

    def response(self, message_id: str | None) -> StubResponse:
        """The SOAP fault of this refusal (HTTP ``status``), echoing ``message_id`` when known."""
        error = siram_error(
            self.service_code, self.detail, severity=self.severity, message_id=message_id
        )
        fault = soap12_fault(
            self.code,
            self.reason,
            # As live faults do: the subcode's prefix is the envelope's (``soap:siram_100``).
            subcodes=(f"soap:{self.subcode}",),
            detail=error,
        )
        return StubResponse(self.status, fault)


def invalid_request(detail: str, status: int = 500) -> Refusal:
    """A request that does not follow the service's contract (HTTP 415 for its media type)."""
    return Refusal(
        "Sender",
        "siram_10",
        "desir_500",
        "La requête n'est pas conforme au service.",
        detail,
        status=status,
    )


def unknown_software(detail: str) -> Refusal:
    """A request whose software is not identified (no ContexteLPS or no IDAM)."""
    return Refusal(
        "Sender",
        "siram_100",
        "desir_550",
        "L'accès par ce progiciel au service n'est pas autorisé. Contactez l'éditeur du progiciel"
        " ou votre responsable informatique.",
        detail,
    )


def access_denied(detail: str) -> Refusal:
    """A caller whose certificate or assertion PS does not give access to INSi."""
    return Refusal(
        "Sender",
        "siram_100",
        "desir_560",
        "Vous ne disposez pas des droits suffisants pour accéder à ce service.",
        detail,
    )


def unavailable(detail: str) -> Refusal:
    """The service cannot answer now."""
    return Refusal(
        "Receiver",
        "siram_40",
        "insi_102",
        "Le service est temporairement inaccessible. Veuillez renouveler votre demande"
        " ultérieurement.",
        detail,
        severity="fatal",  # the live spelling (the schema's enumeration says "fatale")
    )


def _header(envelope: etree._Element, namespace: str, name: str) -> etree._Element | None:
    found = envelope.findall(f"{{{SOAP12_NS}}}Header/{{{namespace}}}{name}")
    if len(found) > 1:
        raise invalid_request(f"En-tête {name} en double.")
    return found[0] if found else None


def check_contexts(envelope: etree._Element, accepted_idams: frozenset[str] | None) -> None:
    """Refuse a request without a valid ContexteBAM and ContexteLPS, or whose software's IDAM is
    not among ``accepted_idams`` (None: any)."""
    bam = _header(envelope, CTXBAM_NS, "ContexteBAM")
    lps = _header(envelope, CTXLPS_NS, "ContexteLPS")
    if lps is None:
        raise unknown_software("ContexteLPS absent : numéro d'autorisation du logiciel inconnu.")
    if bam is None:
        raise invalid_request("ContexteBAM absent.")
    try:
        bam_context = read_contexte_bam(bam)
        lps_context = read_contexte_lps(lps)
    except ValidationError as error:
        raise invalid_request(f"Contexte invalide : {error.message}") from None
    if bam_context.version != CTXBAM_VERSION:
        raise invalid_request(f"ContexteBAM Version {bam_context.version} non supportée.")
    if lps_context.version != CTXLPS_VERSION:
        raise invalid_request(f"ContexteLPS Version {lps_context.version} non supportée.")
    if lps_context.software is None or not lps_context.software.idam:
        raise unknown_software("Numéro d'autorisation du logiciel inconnu.")
    if accepted_idams is not None and lps_context.software.idam not in accepted_idams:
        raise unknown_software("Numéro d'autorisation du logiciel inconnu.")


def check_access(
    envelope: etree._Element, certificate: x509.Certificate | None, settings: VerifySettings
) -> None:
    """Refuse a caller without access: in card mode (a ``wsse:Security`` header) its one
    assertion PS must verify with ``settings``; otherwise the TLS certificate's CN is checked."""
    if envelope.find(f"{{{SOAP12_NS}}}Header/{{{WSSE_NS}}}Security") is not None:
        try:
            assertions = find_assertions(envelope)
            if len(assertions) != 1:
                raise SignatureError("malformed", "wsse:Security must hold one assertion PS")
            verify_assertion_ps(assertions[0], settings, max_age=ASSERTION_MAX_AGE)
        except SignatureError as error:
            raise access_denied(f"Assertion PS refusée : {error.message}") from None
        return
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if certificate else []
    if not names or str(names[0].value) not in ALLOWED_COMMON_NAMES:
        raise access_denied(
            "Niveau d'accès insuffisant : le certificat logiciel doit être nommé INSI-AUTO ou"
            " INSI-MANU."
        )


class TeleservicesService:
    """The ``/lps`` handler: INSi's two searches over the test identities."""

    def __init__(self, context: StubContext) -> None:
        self.settings = context.verify
        self.accepted_idams = context.accepted_idams
        self.refusals = context.insi_refusals
        self.registry = InsiRegistry(context.database)
        self.registry.seed()
        self.operations: dict[str, Callable[[etree._Element], Resultat]] = {
            ACTION_SEARCH_TRAITS: self.search_traits,
            ACTION_SEARCH_VITALE: self.search_vitale,
        }

    def __call__(self, request: StubRequest) -> StubResponse:
        message_id = read_message_id(request.body)
        injected = self.refusals.take()
        if injected in ("429", "503"):
            log.info("lps answered an injected HTTP %s", injected)
            return StubResponse(
                int(injected), b"busy\n", "text/plain; charset=utf-8", {"Retry-After": "0"}
            )
        try:
            if injected is not None:
                raise unavailable("Refus temporaire injecté.")
            checked = _envelope(request)
            check_contexts(checked.element, self.accepted_idams)
            check_access(checked.element, request.client_certificate, self.settings)
            operation = self.operations.get(checked.action)
            if operation is None:
                raise invalid_request(f"Action inconnue : {checked.action}")
            resultat = operation(checked.payload)
        except Refusal as refusal:
            log.info("lps refused: %s %s", refusal.subcode, refusal.service_code)
            return refusal.response(message_id)
        return StubResponse(200, _answer(build_resultat(resultat)))

    def search_traits(self, payload: etree._Element) -> Resultat:
        """``rechercherInsAvecTraitsIdentite``."""
        try:
            search = read_traits_search(payload)
        except ValidationError as error:
            if error.field == "NomNaissance":
                raise Refusal(
                    "Sender",
                    "siram_10",
                    "insi_19",
                    "Le champ nom de naissance est obligatoire.",
                    error.message,
                ) from None
            raise invalid_request(f"Traits d'identité invalides : {error.message}") from None
        return _guarded(lambda: self.registry.search_traits(search))

    def search_vitale(self, payload: etree._Element) -> Resultat:
        """``rechercherInsAvecCarteVitale``."""
        try:
            search = read_vitale_search(payload)
        except ValidationError as error:
            raise invalid_request(
                f"Données de la carte Vitale invalides : {error.message}"
            ) from None
        return _guarded(lambda: self.registry.search_vitale(search))


def _guarded(search: Callable[[], Resultat]) -> Resultat:
    try:
        return search()
    except sqlite3.Error as error:
        raise unavailable(f"Base des identités indisponible : {error}") from None


def _envelope(request: StubRequest) -> Envelope:
    """The checked envelope (see :mod:`transport.stubs.soap`), refused as INSi does."""
    try:
        action_parameter = check_soap_content_type(request.content_type)
        checked = read_envelope(
            request.body, understood=UNDERSTOOD_HEADERS, action_parameter=action_parameter
        )
    except Refused as refused:
        raise invalid_request(f"Message refusé : {refused.reason}", refused.status) from None
    return checked


def read_message_id(body: bytes) -> str | None:
    """The request's ``wsa:MessageID`` for the fault to echo, when the body is a readable SOAP
    envelope with exactly one."""
    try:
        envelope = parse_xml(body)
    except MalformedXMLError:
        return None
    found = envelope.findall(f"{{{SOAP12_NS}}}Header/{{{WSA_NS}}}MessageID")
    if len(found) != 1:
        return None
    return (found[0].text or "").strip() or None


def _answer(payload: etree._Element) -> bytes:
    envelope = etree.Element(f"{{{SOAP12_NS}}}Envelope", nsmap={"soap": SOAP12_NS})
    etree.SubElement(envelope, f"{{{SOAP12_NS}}}Body").append(payload)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
