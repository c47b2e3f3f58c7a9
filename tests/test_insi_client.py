"""The téléservices client and the INSi facade against the ``/lps`` stub over mutual TLS: both
access modes, the installation id, traces, faults with their hints, the first-name practice."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from lxml import etree

from transport.config import example_profile
from transport.errors import ConfigurationError, SoapFault, ValidationError
from transport.soap.addressing import SOAP12_NS, read
from transport.soap.trace import Tracer
from transport.soap.wsdl import wsdl_path
from transport.soap.wsse import WSSE_NS
from transport.stubs.insi import TEST_PERSONS
from transport.teleservices.client import (
    CTXLPS_NS,
    AccessMode,
    ContexteBAM,
    ContexteLPS,
    Software,
    TeleservicesClient,
    build_request,
    installation_id,
    post,
    read_contexte_lps,
)
from transport.teleservices.insi import (
    ACTION_SEARCH_TRAITS,
    RECSANS_NS,
    RECVIT_NS,
    InsiClient,
    Report,
    TraitsSearch,
    build_traits_search,
    read_resultat,
    traits_query,
)
from transport.tls import TLSSettings
from transport.vihf import AuthMode

ECETINSI = TraitsSearch("ECETINSI", ("PIERRE-ALAIN",), "M", "2009-07-14")


pytestmark = pytest.mark.usefixtures("config_home")
STUB_SERVICES = ["lps"]


def software() -> Software:
    return Software.named("cisis-transport", "0.1.0", idam="CISIS-TEST", instance=installation_id())


def make_client(pki, load, stubs, *, tls="insi-auto", card=False, tracer=None):
    return TeleservicesClient(
        stubs.teleservices_url,
        software(),
        TLSSettings(ca_bundle=pki.ca_bundle),
        tls_credential=load(tls),
        signature=load("cps-sign") if card else None,
        sector="SA07" if card else None,
        tracer=tracer,
    )


def traces(directory: Path) -> list[etree._Element]:
    return [etree.fromstring(path.read_bytes()) for path in sorted(directory.glob("*-request.xml"))]


# --- the installation id -------------------------------------------------------------------------


def test_installation_id_is_created_once_and_kept(config_home):
    first = installation_id()
    assert uuid.UUID(first)
    assert (config_home / "cisis-transport" / "installation-id").read_text().strip() == first
    assert installation_id() == first


def test_a_corrupt_installation_id_is_refused(config_home):
    (config_home / "cisis-transport").mkdir(parents=True)
    (config_home / "cisis-transport" / "installation-id").write_text("not a uuid")
    with pytest.raises(ConfigurationError):
        installation_id()


# --- the two access modes ------------------------------------------------------------------------


def test_certificate_mode_sends_no_security_and_traces_the_exact_bytes(pki, load, stubs, tmp_path):
    tracer = Tracer(tmp_path / "trace")
    with make_client(pki, load, stubs, tracer=tracer) as client:
        assert client.mode is AccessMode.CERTIFICATE
        answer = client.call(ACTION_SEARCH_TRAITS, build_traits_search(ECETINSI))
    assert read_resultat(answer).individual == TEST_PERSONS[0]
    [request] = traces(tmp_path / "trace")
    assert request.find(f"{{{SOAP12_NS}}}Header/{{{WSSE_NS}}}Security") is None
    context = read_contexte_lps(request.find(f"{{{SOAP12_NS}}}Header/{{{CTXLPS_NS}}}ContexteLPS"))
    assert context.emitter == load("insi-auto").organizational_unit
    assert context.software.instance == installation_id()
    [response] = sorted((tmp_path / "trace").glob("*-response.xml"))
    assert read_resultat(etree.fromstring(response.read_bytes())).report is Report.FOUND


def test_any_operation_of_a_vendor_held_wsdl_gets_the_same_headers(pki, load, stubs, tmp_path):
    # The project's INSi WSDL stands in for a contract the vendor holds (ADRi, IMTi…).
    tracer = Tracer(tmp_path / "trace")
    with make_client(pki, load, stubs, tracer=tracer) as client:
        answer = client.call_operation(
            wsdl_path("insi/insi.wsdl"),
            "rechercherInsAvecTraitsIdentite",
            NomNaissance=ECETINSI.birth_name,
            Prenom=list(ECETINSI.first_names),
            Sexe=ECETINSI.sex,
            DateNaissance=ECETINSI.birth_date,
        )
        with pytest.raises(ConfigurationError, match="rechercherAutreChose"):
            client.call_operation(wsdl_path("insi/insi.wsdl"), "rechercherAutreChose")
    assert read_resultat(answer).individual == TEST_PERSONS[0]
    [request] = traces(tmp_path / "trace")
    assert read(request, "Action") == ACTION_SEARCH_TRAITS
    header = request.find(f"{{{SOAP12_NS}}}Header")
    assert [etree.QName(child).localname for child in header] == [
        "ContexteBAM",
        "ContexteLPS",
        "Action",
        "MessageID",
    ]


def test_card_mode_signs_a_fresh_assertion_ps_per_call(pki, load, stubs, tmp_path):
    tracer = Tracer(tmp_path / "trace")
    with make_client(pki, load, stubs, tls="cps-auth", card=True, tracer=tracer) as client:
        assert client.mode is AccessMode.CARD
        for _ in range(2):
            answer = client.call(ACTION_SEARCH_TRAITS, build_traits_search(ECETINSI))
            assert read_resultat(answer).individual == TEST_PERSONS[0]
    ids = []
    for request in traces(tmp_path / "trace"):
        [assertion] = request.iterfind(f".//{{{WSSE_NS}}}Security/*")
        assert assertion.findtext("{*}Subject/{*}NameID") == load("cps-sign").common_name
        method = assertion.find(".//{*}SignatureMethod").get("Algorithm")
        assert method.endswith("rsa-sha256")
        ids.append(assertion.get("ID"))
    assert len(set(ids)) == 2


def test_a_wrongly_named_certificate_is_warned_about_then_refused(pki, load, stubs, caplog):
    with caplog.at_level(logging.WARNING, logger="transport.tlsi"):
        client = make_client(pki, load, stubs, tls="org-auth")
    assert "INSI-AUTO" in caplog.text and "desir_560" in caplog.text
    with client, pytest.raises(SoapFault) as caught:
        client.call(ACTION_SEARCH_TRAITS, build_traits_search(ECETINSI))
    fault = caught.value
    assert (fault.subcode, fault.service_code, fault.severity) == (
        "siram_100",
        "desir_560",
        "erreur",
    )
    assert "INSI-AUTO" in fault.hint


def test_a_request_without_contexte_lps_is_refused_with_its_message_id(pki, load, stubs):
    client = make_client(pki, load, stubs)
    envelope = build_request(
        ACTION_SEARCH_TRAITS,
        build_traits_search(ECETINSI),
        contexte_bam=ContexteBAM.new(client.emitter),
        contexte_lps=ContexteLPS.new(client.emitter, client.software),
    )
    header = envelope.find(f"{{{SOAP12_NS}}}Header")
    header.remove(header.find(f"{{{CTXLPS_NS}}}ContexteLPS"))
    with client, pytest.raises(SoapFault) as caught:
        post(client.channel, client.url, envelope)
    fault = caught.value
    assert (fault.subcode, fault.service_code) == ("siram_100", "desir_550")
    assert fault.details[0].message_id == read(envelope, "MessageID")
    assert "idam" in fault.hint


def test_a_service_fault_carries_the_siram_codes_and_a_hint(pki, load, stubs):
    payload = etree.Element(f"{{{RECSANS_NS}}}RECSANSVITALE")
    for tag, value in (("Prenom", "PIERRE"), ("Sexe", "M"), ("DateNaissance", "2009-07-14")):
        etree.SubElement(payload, f"{{{RECSANS_NS}}}{tag}").text = value
    with make_client(pki, load, stubs) as client, pytest.raises(SoapFault) as caught:
        client.call(ACTION_SEARCH_TRAITS, payload)
    fault = caught.value
    assert (fault.code, fault.subcode, fault.service_code) == ("Sender", "siram_10", "insi_19")
    assert fault.details[0].message_id and "birth name" in fault.hint


def test_from_profile_uses_the_profile_lps_idam_and_insi_credential(pki, load, stubs):
    profile = example_profile(pki, AuthMode.DIRECTE, {"tlsi": stubs.teleservices_url})
    with TeleservicesClient.from_profile(profile, AccessMode.CARD) as client:
        assert client.software.idam == profile.identity.lps.homologation_id
        assert client.emitter == load("cps-sign").common_name
        answer = client.call(ACTION_SEARCH_TRAITS, build_traits_search(ECETINSI))
    assert read_resultat(answer).report is Report.FOUND


# --- the INSi facade -----------------------------------------------------------------------------


def test_insi_from_profile_searches_then_closes_its_connections(pki, stubs):
    profile = example_profile(pki, AuthMode.DIRECTE, {"tlsi": stubs.teleservices_url})
    with InsiClient.from_profile(profile, AccessMode.CARD) as client:
        assert client.teleservices.mode is AccessMode.CARD
        outcome = client.search_by_traits("ECETINSI", "PIERRE-ALAIN", "M", "2009-07-14")
        wire = client.teleservices.channel.wire
        assert outcome.active == TEST_PERSONS[0].active
        assert wire.hosts == (urlsplit(stubs.teleservices_url).netloc,)
    assert wire.hosts == ()


@pytest.fixture
def insi(pki, load, stubs, tmp_path) -> Iterator[tuple[InsiClient, Path]]:
    tracer = Tracer(tmp_path / "insi-trace")
    with make_client(pki, load, stubs, tracer=tracer) as client:
        yield InsiClient(client), tmp_path / "insi-trace"


def sent_first_names(directory: Path) -> list[list[str]]:
    return [
        [name.text for name in request.iter(f"{{{RECSANS_NS}}}Prenom")]
        for request in traces(directory)
    ]


def test_search_by_traits_normalises_and_finds_the_identity_with_its_history(insi):
    client, trace = insi
    outcome = client.search_by_traits(" Écétinsi ", "pierre-alain", "m", "2009-07-14")
    assert (outcome.code, outcome.label) == ("00", "OK")
    assert outcome.active == TEST_PERSONS[0].active
    assert outcome.history == TEST_PERSONS[0].history and len(outcome.history) == 1
    assert outcome.traits.first_names == "PIERRE-ALAIN MURIEL FLORIANT"
    assert outcome.qualifiable
    [request] = traces(trace)
    assert request.findtext(f".//{{{RECSANS_NS}}}NomNaissance") == "ECETINSI"
    assert request.findtext(f".//{{{RECSANS_NS}}}Sexe") == "M"


def test_one_call_per_first_name_stopping_at_the_first_cr_00(insi):
    client, trace = insi
    outcome = client.search_by_traits("ECETINSI", ["JEAN", "MURIEL", "FLORIANT"], "M", "2009-07-14")
    assert outcome.report is Report.FOUND
    assert sent_first_names(trace) == [["JEAN"], ["MURIEL"]]
    assert [search.first_names for search in outcome.searches] == [("JEAN",), ("MURIEL",)]


def test_every_first_name_then_all_together_before_cr_01(insi):
    client, trace = insi
    outcome = client.search_by_traits("HOUILLES", "PIERRE PAUL JACQUES", "M", "1993-01-27")
    assert (outcome.code, outcome.label) == ("01", "Aucune identite trouvee")
    assert outcome.active is None and not outcome.qualifiable
    assert sent_first_names(trace) == [["PIERRE"], ["PAUL"], ["JACQUES"], ["PIERRE PAUL JACQUES"]]


def test_homonyms_give_cr_02_until_the_birthplace_tells_them_apart(insi):
    client, _trace = insi
    several = client.search_by_traits("DE VINCI", "LEONARDO", "M", "2014-02-01")
    assert several.code == "02" and several.active is None and not several.qualifiable
    found = client.search_by_traits("de vinci", "Leonardo", "M", date(2014, 2, 1), "63220")
    assert found.code == "00" and found.traits.birthplace == "63220"


@pytest.mark.parametrize(
    ("traits", "field"),
    [
        (("D'ÆION", "CŒUR", "M", "2001-01-01"), "NomNaissance"),
        (("DUPONT", "JEAN2", "M", "2001-01-01"), "Prenom"),
        (("DUPONT", " ", "M", "2001-01-01"), "Prenom"),
        (("DUPONT", "JEAN", "X", "2001-01-01"), "Sexe"),
        (("DUPONT", "JEAN", "M", "2001-13-01"), "DateNaissance"),
        (("DUPONT", "JEAN", "M", "2001-00-05"), "DateNaissance"),
        (("DUPONT", "JEAN", "M", "01/02/2001"), "DateNaissance"),
        (("DUPONT", "JEAN", "M", "2001-01-01", "750"), "LieuNaissance"),
    ],
)
def test_bad_traits_are_refused_before_anything_is_sent(insi, traits, field):
    client, trace = insi
    with pytest.raises(ValidationError) as caught:
        client.search_by_traits(*traits)
    assert caught.value.field == field
    assert traces(trace) == []


def test_lunar_dates_and_corsican_places_are_accepted():
    query = traits_query("d’artagnan de l’hérault", "Pierre-Alain", "M", "2001-00-00", "2b020")
    assert query.birth_name == "D'ARTAGNAN DE L'HERAULT"
    assert (query.birth_date, query.birthplace) == ("2001-00-00", "2B020")


def test_search_by_vitale_finds_the_active_ins(insi):
    client, trace = insi
    person = TEST_PERSONS[0]
    outcome = client.search_by_vitale(person.traits.birth_date, individual=person.active.value)
    assert outcome.active == person.active and outcome.qualifiable
    [request] = traces(trace)
    assert request.find(f".//{{{RECVIT_NS}}}MatriculeIndividu") is not None
    with pytest.raises(ValidationError):
        client.search_by_vitale("2009-07-14", individual="12345")


def test_the_french_keywords_still_work_and_warn(insi):
    client, _trace = insi
    person = TEST_PERSONS[0]
    with pytest.warns(DeprecationWarning, match="nir_individu"):
        outcome = client.search_by_vitale(
            person.traits.birth_date, nir_individu=person.active.value
        )
    assert outcome.active == person.active
    with pytest.warns(DeprecationWarning, match="lieu_naissance"):
        query = traits_query("De Vinci", "Leonardo", "M", "2014-02-01", lieu_naissance="63220")
    assert query.birthplace == "63220"
    with pytest.raises(TypeError, match="both"):
        traits_query("De Vinci", "Leonardo", "M", "2014-02-01", birthplace="1", lieu_naissance="2")
