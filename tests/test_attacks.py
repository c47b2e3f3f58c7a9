"""The server-side attack corpus: hostile requests against the running stubs over real mutual TLS.

Families: XML, envelope and transport, MTOM, signatures, TLS, INSi access modes. Every case is
refused with the fault (or HTTP status) the real service gives, leaves every SQLite table and the
blob store exactly as they were (compared before and after), and the stubs keep serving (a valid
registry query and a valid INSi search answer afterwards). Each family has a control: the same
request unmodified is accepted, so that a refusal is the mutation's doing.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.client
import shutil
import sqlite3
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from lxml import etree

from tests.test_hl7v3 import LPS, registration
from tests.test_stub_dmp import make_caller, new_patient
from tests.test_stub_insi import ECETINSI, envelope_for
from tests.test_stub_xds import DOCTOR, PATIENT, Caller, entry, find, open_dmp, submission_set
from tests.test_vihf import OUTSIDE_THE_PROFILE, Forgery, forge
from transport import examplepki
from transport.credentials import SoftwareSigner, load_pkcs12
from transport.dmp import xds
from transport.dmp.hl7v3 import Reason, RegistrationRequest
from transport.errors import SoapFault
from transport.soap import mtom
from transport.soap.addressing import SOAP12_NS, WSA_NS
from transport.soap.channel import send
from transport.soap.envelope import build_envelope, raise_for_fault
from transport.soap.wsse import WSSE_NS
from transport.stubs.app import Stubs
from transport.stubs.store import DATABASE_NAME
from transport.teleservices.client import AssertionPS, build_assertion_ps, sign_assertion_ps
from transport.teleservices.client import post as insi_post
from transport.teleservices.insi import Report, build_traits_search, read_resultat
from transport.tls import DMP_CIPHERS, TLSSettings, create_session
from transport.vihf import SAML_NS, AuthMode, Vihf, VihfOptions, build_assertion, sign_vihf
from transport.xml import parse_xml
from transport.xmlsig import DSIG_NS, sign_enveloped

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP = "application/soap+xml; charset=utf-8"
S = f"{{{SAML_NS}}}"
DS = f"{{{DSIG_NS}}}"
NON_DMP_SUITE = "ECDHE-RSA-AES128-SHA256"
"""A TLS 1.2 suite OpenSSL offers by default that is not one of the DMP's four."""


@dataclass
class World:
    """The running stubs, seeded with an open DMP holding one document, and the callers.

    ``pki`` is the session's example PKI plus one more trusted root, ``dates``, whose signing
    certificates the tests issue with the validity they need."""

    stubs: Stubs
    pki: examplepki.ExamplePKI
    dates: examplepki.Issued
    doctor: Caller
    insi: requests.Session

    def snapshot(self) -> dict[str, object]:
        """Every row of every table and every file of the blob store, its incoming area included
        (path and SHA-256)."""
        connection = sqlite3.connect(self.stubs.context.data_dir / DATABASE_NAME)
        try:
            tables = [
                row[0]
                for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            state: dict[str, object] = {
                table: sorted(map(tuple, connection.execute(f"SELECT * FROM {table}")))  # noqa: S608
                for table in tables
            }
        finally:
            connection.close()
        blobs = self.stubs.context.blobs.directory
        state["blobs"] = sorted(
            (str(path.relative_to(blobs)), hashlib.sha256(path.read_bytes()).hexdigest())
            for path in blobs.rglob("*")
            if path.is_file()
        )
        return state

    def serving(self) -> None:
        """Assert that the registry and INSi still answer valid requests."""
        assert find(self.doctor).status == xds.SUCCESS
        envelope = envelope_for(build_traits_search(ECETINSI))
        answer = insi_post(self.insi, self.stubs.teleservices_url, envelope)
        assert read_resultat(answer).report is Report.FOUND

    def signer(self, not_before: timedelta, not_after: timedelta) -> SoftwareSigner:
        """A signature credential under the ``dates`` root, valid from now + ``not_before`` to
        now + ``not_after``."""
        now = datetime.now(UTC)
        issued = examplepki.issue(
            self.dates,
            x509.Name.from_rfc4514_string("CN=SIGNATAIRE DATE,OU=499900000001001,O=TEST,C=FR"),
            key_usage={"digital_signature", "content_commitment"},
            extended_key_usage=(ExtendedKeyUsageOID.EMAIL_PROTECTION,),
            not_before=now + not_before,
            not_after=now + not_after,
        )
        return SoftwareSigner(issued.key, issued.cert)


@pytest.fixture(scope="module")
def world(pki: examplepki.ExamplePKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("attack-pki")
    shutil.copytree(pki.directory, directory, dirs_exist_ok=True)
    now = datetime.now(UTC)
    dates = examplepki.make_ca(
        "TEST AC DATES", not_before=now - timedelta(days=800), not_after=now + timedelta(days=800)
    )
    bundle = directory / "ca-bundle.pem"
    bundle.write_bytes(bundle.read_bytes() + dates.cert.public_bytes(Encoding.PEM))
    attack_pki = examplepki.ExamplePKI(directory, pki.password)
    # The attacks' software is the test's own: any IDAM is accepted.
    data = tmp_path_factory.mktemp("attacks")
    with Stubs(pki=attack_pki, data_dir=data, accept_any_idam=True) as stubs:
        open_dmp(stubs, PATIENT, DOCTOR)
        doctor = Caller(stubs)
        seed = entry(b"seed document")
        message = iti41_message(
            doctor, [(seed, "seed@cisis")], [part("seed@cisis", b"seed document")]
        )
        assert post(doctor.session, stubs.dmp_url("repository"), message).status_code == 200
        credential = load_pkcs12(attack_pki.p12("insi-auto"), attack_pki.password)
        with create_session(credential, TLSSettings(ca_bundle=attack_pki.ca_bundle)) as insi:
            yield World(stubs, attack_pki, dates, doctor, insi)


@dataclass(frozen=True)
class Sent:
    """A request as it goes on the wire: URL, body, headers."""

    url: str
    body: bytes
    headers: dict[str, str]


def refused_unchanged(
    world: World, request: Sent, session: requests.Session | None = None
) -> requests.Response:
    """Send ``request``; assert an HTTP error, no state change, and that the stubs still serve."""
    before = world.snapshot()
    response = send(session or world.doctor.session, request.url, request.body, request.headers)
    assert response.status_code >= 400, response.content[:300]
    assert world.snapshot() == before
    world.serving()
    return response


def rejected_unchanged(world: World, request: Sent) -> xds.RegistryResult:
    """Send an ITI-41 ``request``; assert a registry Failure, no state change, still serving."""
    before = world.snapshot()
    response = send(world.doctor.session, request.url, request.body, request.headers)
    decoded = mtom.decode([response.content], response.headers.get("Content-Type", ""))
    body = raise_for_fault(parse_xml(decoded.root)).find(f"{{{SOAP12_NS}}}Body")[0]
    result = xds.read_registry_response(body)
    assert not result.ok and result.errors
    assert world.snapshot() == before
    world.serving()
    return result


def fault_of(response: requests.Response) -> SoapFault:
    """The SOAP fault a response carries."""
    with pytest.raises(SoapFault) as caught:
        raise_for_fault(parse_xml(response.content))
    return caught.value


def soap(action: str) -> dict[str, str]:
    return {"Content-Type": f'{SOAP}; action="{action}"'}


def accepted(world: World, request: Sent, table: str) -> None:
    """Send ``request``; assert it is accepted and changes ``table``."""
    before = world.snapshot()
    response = send(world.doctor.session, request.url, request.body, request.headers)
    assert response.status_code == 200, response.content[:300]
    assert world.snapshot()[table] != before[table]


# --- a TD1.1 (creates a DMP), the request most attacks below start from --------------------------

VihfMaker = Callable[[Vihf], list[etree._Element]]
"""Makes the assertions of a request's ``wsse:Security`` from the identity it must carry."""


def td11(world: World, vihf: VihfMaker | None = None) -> tuple[str, etree._Element, str]:
    """URL, envelope and action of a TD1.1 creating a new patient's DMP, its VIHF made by
    ``vihf`` (default: signed by ORG SIGN as the client signs it)."""
    caller = make_caller(world.stubs, world.pki, AuthMode.INDIRECTE)
    patient = new_patient()
    request = RegistrationRequest.new(registration(Reason.CREA_RD, patient, caller.author()), LPS)
    url = world.stubs.dmp_url("patients")
    identity = caller.identity.with_patient(patient)
    assertions = vihf(identity) if vihf is not None else [sign_vihf(identity, caller.signer)]
    envelope = build_envelope(request.action, url, request.build(), assertions=assertions)
    caller.session.close()
    return url, envelope, request.action


def td11_sent(world: World, vihf: VihfMaker | None = None) -> Sent:
    url, envelope, action = td11(world, vihf)
    return Sent(url, etree.tostring(envelope, xml_declaration=True, encoding="utf-8"), soap(action))


def test_control_a_td11_as_sent_creates_the_dmp(world):
    accepted(world, td11_sent(world), "dmp_patients")


# --- XML ---------------------------------------------------------------------------------------


def _doctype(declarations: str, reference: str = "") -> Callable[[bytes], bytes]:
    def attack(body: bytes) -> bytes:
        declaration, _, rest = body.partition(b"?>")
        hostile = f"<!DOCTYPE soap:Envelope [{declarations}]>".encode()
        rest = rest.replace(b"<soap:Body>", b"<soap:Body>" + reference.encode(), 1)
        return declaration + b"?>" + hostile + rest

    return attack


def _in_body(fragment: bytes) -> Callable[[bytes], bytes]:
    def attack(body: bytes) -> bytes:
        return body.replace(b"<soap:Body>", b"<soap:Body>" + fragment, 1)

    return attack


LAUGHS = '<!ENTITY l0 "lol">' + "".join(
    f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10)
)
HUGE = 11 * 1024 * 1024  # over libxml2's 10 MB limit on one text node without XML_PARSE_HUGE

XML_ATTACKS: dict[str, Callable[[bytes], bytes]] = {
    "internal DTD": _doctype("<!ELEMENT x ANY>"),
    "external entity (file)": _doctype('<!ENTITY x SYSTEM "file:///etc/passwd">', "&x;"),
    "external entity (network)": _doctype('<!ENTITY x SYSTEM "http://127.0.0.1:9/x">', "&x;"),
    "parameter entity": _doctype('<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;'),
    "billion laughs": _doctype(LAUGHS, "&l9;"),
    "quadratic blowup": _doctype(f'<!ENTITY a "{"x" * 50_000}">', "&a;" * 2_000),
    "undeclared entity": _in_body(b"&undeclared;"),
    "deep nesting": _in_body(b"<a>" * 5_000 + b"</a>" * 5_000),
    "huge attribute": _in_body(b'<a b="' + b"x" * HUGE + b'"/>'),
    "huge text": _in_body(b"<a>" + b"x" * HUGE + b"</a>"),
    "invalid UTF-8": lambda body: body.replace(b"<soap:Body>", b"<soap:Body>\xff\xfe\xc3(", 1),
    "declared UTF-16": lambda body: body.replace(b"encoding='utf-8'", b"encoding='utf-16'", 1),
    "NUL byte": _in_body(b"<a>\x00</a>"),
    "truncated": lambda body: body[: len(body) // 2],
    "two roots": lambda body: body + body[body.index(b"?>") + 2 :],
    "empty": lambda body: b"",
}


@pytest.mark.parametrize("attack", XML_ATTACKS.values(), ids=XML_ATTACKS.keys())
def test_hostile_xml_in_a_td11_is_refused(world, attack):
    sent = td11_sent(world)
    hostile = attack(sent.body)
    assert hostile != sent.body
    fault = fault_of(refused_unchanged(world, replace(sent, body=hostile)))
    assert (fault.code, fault.subcode) == ("Sender", "MalformedMessage")


@pytest.mark.parametrize("name", ["billion laughs", "external entity (file)", "deep nesting"])
def test_hostile_xml_to_insi_is_refused(world, name):
    body = etree.tostring(envelope_for(build_traits_search(ECETINSI)), encoding="utf-8")
    body = b"<?xml version='1.0' encoding='utf-8'?>" + body
    hostile = XML_ATTACKS[name](body)
    sent = Sent(world.stubs.teleservices_url, hostile, {"Content-Type": SOAP})
    fault = fault_of(refused_unchanged(world, sent, world.insi))
    assert (fault.subcode, fault.details[0].code) == ("siram_10", "desir_500")


@pytest.mark.parametrize("name", ["billion laughs", "external entity (file)", "huge text"])
def test_hostile_xml_in_an_iti41_root_part_is_refused(world, name):
    metadata = entry(b"content")
    message = iti41_message(world.doctor, [(metadata, "a@x")], [part("a@x", b"content")])
    root = message.root
    hostile = mtom.encode(XML_ATTACKS[name](root), [part("a@x", b"content")])
    sent = Sent(world.stubs.dmp_url("repository"), body_of(hostile), type_of(hostile))
    assert fault_of(refused_unchanged(world, sent)).subcode == "MalformedMessage"


def _raw_post(world: World, path: str, headers: dict[str, str], body: bytes) -> int:
    """POST with exactly ``headers`` (a Content-Length that lies, say); the status."""
    context = client_context(world)
    host, port = world.stubs.server._server.server_address[:2]
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=30)
    try:
        connection.putrequest("POST", path)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        connection.send(body)
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_declared_size_over_the_limit_is_refused_before_reading(world):
    before = world.snapshot()
    headers = {"Content-Type": SOAP, "Content-Length": str(10**12)}
    status = _raw_post(world, "/si-dmp-server/v2/services/patients", headers, b"<x/>")
    assert status == 413
    assert world.snapshot() == before
    world.serving()


def test_a_streamed_body_over_the_limit_is_refused(pki, tmp_path):
    with Stubs(
        pki=pki, data_dir=tmp_path, services=["registry"], max_request_bytes=10_000
    ) as small:
        doctor = Caller(small)
        sent = send(doctor.session, small.dmp_url("registry"), iter([b"<x/>"] * 10_000), soap("a"))
        assert sent.status_code == 413
        open_dmp(small, PATIENT, DOCTOR)
        assert find(doctor).status == xds.SUCCESS


# --- envelope and transport --------------------------------------------------------------------

MEDIA_TYPES = {
    "text/xml": "text/xml; charset=utf-8",
    "image/png": "image/png",
    "application/xml": "application/xml",
    "none": None,
    "multipart": 'multipart/related; type="application/xop+xml"; boundary="b"',
    "soap+xml lookalike": "application/soap+xmlx",
}


@pytest.mark.parametrize("content_type", MEDIA_TYPES.values(), ids=MEDIA_TYPES.keys())
def test_a_td11_in_another_media_type_is_refused_415(world, content_type):
    sent = td11_sent(world)
    headers = {"Content-Type": content_type} if content_type else {}
    response = refused_unchanged(world, replace(sent, headers=headers))
    assert response.status_code == 415
    assert fault_of(response).code == "Sender"


def _header(envelope: etree._Element) -> etree._Element:
    return envelope.find(f"{{{SOAP12_NS}}}Header")


def _without(name: str) -> Callable[[etree._Element], None]:
    def mutate(envelope: etree._Element) -> None:
        header = _header(envelope)
        header.remove(header.find(f"{{{WSA_NS}}}{name}"))

    return mutate


def _twice(name: str, namespace: str = WSA_NS) -> Callable[[etree._Element], None]:
    def mutate(envelope: etree._Element) -> None:
        header = _header(envelope)
        header.append(copy.deepcopy(header.find(f"{{{namespace}}}{name}")))

    return mutate


def _unknown_must_understand(envelope: etree._Element) -> None:
    block = etree.SubElement(_header(envelope), "{urn:example:unknown}Extension")
    block.set(f"{{{SOAP12_NS}}}mustUnderstand", "true")


def _soap11(envelope: etree._Element) -> None:
    for element in envelope.iter(f"{{{SOAP12_NS}}}*"):
        element.tag = f"{{{SOAP11_NS}}}{etree.QName(element).localname}"
    etree.cleanup_namespaces(envelope)


ENVELOPE_MUTATIONS = {
    "no wsa:Action": (_without("Action"), "Sender", ("MessageAddressingHeaderRequired",)),
    "no wsa:MessageID": (_without("MessageID"), "Sender", ("MessageAddressingHeaderRequired",)),
    "two wsa:Action": (
        _twice("Action"),
        "Sender",
        ("InvalidAddressingHeader", "InvalidCardinality"),
    ),
    "two wsa:MessageID": (
        _twice("MessageID"),
        "Sender",
        ("InvalidAddressingHeader", "InvalidCardinality"),
    ),
    "mustUnderstand unknown header": (_unknown_must_understand, "MustUnderstand", ()),
    "SOAP 1.1": (_soap11, "VersionMismatch", ()),
    "two wsse:Security": (_twice("Security", WSSE_NS), "Sender", ("FailedCheck",)),
}


@pytest.mark.parametrize("mutation", ENVELOPE_MUTATIONS.values(), ids=ENVELOPE_MUTATIONS.keys())
def test_a_td11_with_a_broken_envelope_is_refused(world, mutation):
    mutate, code, subcodes = mutation
    url, envelope, action = td11(world)
    mutate(envelope)
    fault = fault_of(refused_unchanged(world, Sent(url, etree.tostring(envelope), soap(action))))
    assert fault.code == code
    assert tuple(name.rpartition(":")[2] for name in fault.subcodes) == subcodes


def test_a_td11_whose_media_type_action_is_another_is_refused(world):
    sent = td11_sent(world)
    other = replace(sent, headers=soap("urn:hl7-org:v3:PRPA_IN201314UV02"))
    assert fault_of(refused_unchanged(world, other)).subcodes[-1].endswith("ActionMismatch")


INSI_MUTATIONS = {
    "no wsa:MessageID": _without("MessageID"),
    "two wsa:Action": _twice("Action"),
    "mustUnderstand unknown header": _unknown_must_understand,
    "SOAP 1.1": _soap11,
}


@pytest.mark.parametrize("mutate", INSI_MUTATIONS.values(), ids=INSI_MUTATIONS.keys())
def test_insi_with_a_broken_envelope_is_refused(world, mutate):
    envelope = envelope_for(build_traits_search(ECETINSI))
    mutate(envelope)
    sent = Sent(world.stubs.teleservices_url, etree.tostring(envelope), {"Content-Type": SOAP})
    fault = fault_of(refused_unchanged(world, sent, world.insi))
    assert (fault.subcode, fault.details[0].code) == ("siram_10", "desir_500")


def _body(envelope: etree._Element) -> etree._Element:
    return envelope.find(f"{{{SOAP12_NS}}}Body")


def _emptied(envelope: etree._Element) -> None:
    _body(envelope).clear()


def _doubled(envelope: etree._Element) -> None:
    _body(envelope).append(copy.deepcopy(_body(envelope)[0]))


def _commented_away(envelope: etree._Element) -> None:
    # A comment is not an element: a body holding only one is still an empty body.
    _emptied(envelope)
    _body(envelope).append(etree.Comment(" no operation "))


BODY_MUTATIONS = {"no element": _emptied, "two elements": _doubled, "a comment": _commented_away}


def registry_query(world: World) -> tuple[str, etree._Element, str]:
    """URL, envelope and action of an ITI-18 FindDocuments as the doctor sends it."""
    url = world.stubs.dmp_url("registry")
    query = xds.query_request(xds.find_documents(PATIENT, (xds.APPROVED,)))
    assertion = sign_vihf(world.doctor.identity.with_patient(PATIENT), world.doctor.signer)
    envelope = build_envelope(xds.ACTION_STORED_QUERY, url, query, assertions=[assertion])
    return url, envelope, xds.ACTION_STORED_QUERY


@pytest.mark.parametrize("mutate", BODY_MUTATIONS.values(), ids=BODY_MUTATIONS.keys())
@pytest.mark.parametrize("request_of", [td11, registry_query], ids=["TD1.1", "ITI-18"])
def test_a_dmp_body_without_exactly_one_element_is_refused(world, request_of, mutate):
    url, envelope, action = request_of(world)
    mutate(envelope)
    fault = fault_of(refused_unchanged(world, Sent(url, etree.tostring(envelope), soap(action))))
    assert (fault.code, fault.subcode) == ("Sender", "MalformedMessage")
    assert "un seul élément" in fault.reason


@pytest.mark.parametrize("mutate", BODY_MUTATIONS.values(), ids=BODY_MUTATIONS.keys())
def test_an_insi_body_without_exactly_one_element_is_refused(world, mutate):
    envelope = envelope_for(build_traits_search(ECETINSI))
    mutate(envelope)
    sent = Sent(world.stubs.teleservices_url, etree.tostring(envelope), {"Content-Type": SOAP})
    fault = fault_of(refused_unchanged(world, sent, world.insi))
    assert (fault.subcode, fault.details[0].code) == ("siram_10", "desir_500")
    assert "un seul élément" in fault.details[0].message


def test_insi_in_another_media_type_is_refused_415(world):
    body = etree.tostring(envelope_for(build_traits_search(ECETINSI)))
    sent = Sent(world.stubs.teleservices_url, body, {"Content-Type": "text/xml"})
    response = refused_unchanged(world, sent, world.insi)
    assert response.status_code == 415
    assert fault_of(response).subcode == "siram_10"


# --- MTOM: ITI-41 submissions ------------------------------------------------------------------


def part(content_id: str, content: bytes) -> mtom.Attachment:
    return mtom.Attachment(content_id, content, "text/plain")


def iti41_message(
    caller: Caller,
    documents: Sequence[tuple[xds.DocumentEntry, str]],
    attachments: Sequence[mtom.Attachment],
) -> mtom.MtomMessage:
    """An ITI-41 of ``documents`` (metadata, the cid its xop:Include names) carrying
    ``attachments``, the VIHF signed by ``caller``."""
    outgoing = [xds.OutgoingDocument(metadata, cid) for metadata, cid in documents]
    payload = xds.provide_and_register_request(submission_set(), outgoing)
    url = caller.stubs.dmp_url("repository")
    assertion = sign_vihf(caller.identity.with_patient(PATIENT), caller.signer)
    envelope = build_envelope(xds.ACTION_PROVIDE_AND_REGISTER, url, payload, assertions=[assertion])
    root = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    return mtom.encode(root, tuple(attachments), action=xds.ACTION_PROVIDE_AND_REGISTER)


def body_of(message: mtom.MtomMessage) -> bytes:
    return b"".join(message.chunks())


def type_of(message: mtom.MtomMessage) -> dict[str, str]:
    return {"Content-Type": message.content_type}


def post(session: requests.Session, url: str, message: mtom.MtomMessage) -> requests.Response:
    return send(session, url, body_of(message), type_of(message))


def iti41_sent(world: World, content: bytes = b"attack document") -> tuple[Sent, mtom.MtomMessage]:
    metadata = entry(content)
    message = iti41_message(world.doctor, [(metadata, "doc@x")], [part("doc@x", content)])
    return Sent(world.stubs.dmp_url("repository"), body_of(message), type_of(message)), message


def test_control_an_iti41_as_sent_is_stored(world):
    sent, _ = iti41_sent(world)
    accepted(world, sent, "xds_documents")


def test_an_iti41_as_plain_soap_is_refused_415(world):
    sent, message = iti41_sent(world)
    plain = Sent(sent.url, message.root, soap(xds.ACTION_PROVIDE_AND_REGISTER))
    assert refused_unchanged(world, plain).status_code == 415


@pytest.mark.parametrize(
    "change",
    [('type="application/xop+xml"', 'type="text/xml"'), ("multipart/related", "multipart/mixed")],
    ids=["type not xop", "multipart/mixed"],
)
def test_an_iti41_of_another_multipart_type_is_refused_415(world, change):
    sent, message = iti41_sent(world)
    headers = {"Content-Type": message.content_type.replace(*change)}
    assert refused_unchanged(world, replace(sent, headers=headers)).status_code == 415


def test_an_iti41_whose_root_part_is_not_xop_is_refused_415(world):
    sent, _ = iti41_sent(world)
    body = sent.body.replace(b"application/xop+xml; charset=UTF-8", b"text/plain", 1)
    assert refused_unchanged(world, replace(sent, body=body)).status_code == 415


def test_a_registry_query_as_mtom_is_refused_415(world):
    query = xds.query_request(xds.find_documents(PATIENT, (xds.APPROVED,)))
    url = world.stubs.dmp_url("registry")
    assertion = sign_vihf(world.doctor.identity.with_patient(PATIENT), world.doctor.signer)
    envelope = build_envelope(xds.ACTION_STORED_QUERY, url, query, assertions=[assertion])
    message = mtom.encode(etree.tostring(envelope), ())
    sent = Sent(url, body_of(message), type_of(message))
    assert refused_unchanged(world, sent).status_code == 415


def _end(message: mtom.MtomMessage) -> bytes:
    return f"\r\n--{message.boundary}--\r\n".encode()


MALFORMED_PACKAGES: dict[str, Callable[[bytes, mtom.MtomMessage], bytes]] = {
    "truncated in the part": lambda body, m: body[: len(body) - len(_end(m)) - 5],
    "no end boundary": lambda body, m: body[: -len(_end(m))],
    "end boundary only": lambda body, m: _end(m).lstrip(b"\r\n"),
    "duplicated Content-ID": lambda body, m: body.replace(
        b"<doc@x>", f"<{m.root_content_id}>".encode(), 1
    ),
    "base64 part that is not base64": lambda body, m: body.replace(
        b"Content-ID: <doc@x>", b"Content-Transfer-Encoding: base64\r\nContent-ID: <doc@x>", 1
    ).replace(b"attack document", b"!!not base64!!", 1),
    "unknown transfer encoding": lambda body, m: body.replace(
        b"Content-ID: <doc@x>", b"Content-Transfer-Encoding: x-evil\r\nContent-ID: <doc@x>", 1
    ),
    "header line without a colon": lambda body, m: body.replace(
        b"Content-ID: <doc@x>", b"garbage\r\nContent-ID: <doc@x>", 1
    ),
}


@pytest.mark.parametrize("malform", MALFORMED_PACKAGES.values(), ids=MALFORMED_PACKAGES.keys())
def test_a_malformed_mtom_package_is_refused_and_leaves_no_file(world, malform):
    sent, message = iti41_sent(world)
    hostile = malform(sent.body, message)
    assert hostile != sent.body
    fault = fault_of(refused_unchanged(world, replace(sent, body=hostile)))
    assert (fault.code, fault.subcode) == ("Sender", "MalformedMessage")


def test_an_include_of_a_missing_part_is_rejected(world):
    metadata = entry(b"content")
    message = iti41_message(world.doctor, [(metadata, "missing@x")], [part("a@x", b"content")])
    sent = Sent(world.stubs.dmp_url("repository"), body_of(message), type_of(message))
    assert rejected_unchanged(world, sent).errors[0].code == "XDSMissingDocument"


def test_two_documents_including_one_part_are_rejected(world):
    first, second = entry(b"same"), entry(b"same")
    documents = [(first, "one@x"), (second, "one@x")]
    message = iti41_message(world.doctor, documents, [part("one@x", b"same")])
    sent = Sent(world.stubs.dmp_url("repository"), body_of(message), type_of(message))
    assert rejected_unchanged(world, sent).errors[0].code == "XDSRepositoryMetadataError"


METADATA_LIES = {
    "size": ({"size": 99}, "XDSRepositoryMetadataError"),
    "hash": ({"hash": "0" * 40}, "XDSRepositoryMetadataError"),
    "other patient": ({"patient": new_patient()}, "XDSPatientIdDoesNotMatch"),
}


@pytest.mark.parametrize("lie", METADATA_LIES.values(), ids=METADATA_LIES.keys())
def test_metadata_that_lies_about_the_part_is_rejected(world, lie):
    changes, code = lie
    metadata = replace(entry(b"content"), **changes)
    message = iti41_message(world.doctor, [(metadata, "a@x")], [part("a@x", b"content")])
    sent = Sent(world.stubs.dmp_url("repository"), body_of(message), type_of(message))
    assert rejected_unchanged(world, sent).errors[0].code == code


# --- signatures: the VIHF of a TD1.1 -------------------------------------------------------------


def signed_by(world: World, name: str, **options: object) -> VihfMaker:
    """A VIHF maker signing with the credential ``name`` of the attack PKI."""
    signer = load_pkcs12(world.pki.p12(name), world.pki.password).signer

    def make(identity: Vihf) -> list[etree._Element]:
        return [sign_vihf(identity, signer, **options)]  # type: ignore[arg-type]

    return make


def changed(world: World, change: Callable[[etree._Element], etree._Element | None]) -> VihfMaker:
    """A VIHF maker signing as the client does, then passing the assertion through ``change``
    (which edits it in place, or returns what to send instead)."""
    sign = signed_by(world, "org-sign")

    def make(identity: Vihf) -> list[etree._Element]:
        (assertion,) = sign(identity)
        result = change(assertion)
        return [assertion] if result is None else [result]

    return make


def forged_vihf(world: World, how: Forgery) -> VihfMaker:
    """A VIHF maker signing with ORG SIGN's key as ``how`` says (see tests.test_vihf.forge)."""
    credential = load_pkcs12(world.pki.p12("org-sign"), world.pki.password)

    def make(identity: Vihf) -> list[etree._Element]:
        unsigned = build_assertion(identity, credential.dn)
        return [forge(unsigned, world.pki.directory / "org-sign.key", credential.certificate, how)]

    return make


def test_control_a_td11_with_a_forged_vihf_inside_the_profile_creates_the_dmp(world):
    accepted(world, td11_sent(world, forged_vihf(world, Forgery())), "dmp_patients")


@pytest.mark.parametrize("how", OUTSIDE_THE_PROFILE.values(), ids=OUTSIDE_THE_PROFILE.keys())
def test_a_td11_whose_vihf_is_signed_outside_the_profile_is_refused(world, how):
    fault = fault_of(refused_unchanged(world, td11_sent(world, forged_vihf(world, how))))
    assert (fault.code, fault.subcode) == ("Sender", "FailedCheck")
    assert fault.reason.startswith("VIHF refusé")


def _name_id(assertion: etree._Element) -> etree._Element:
    return assertion.find(f"{S}Subject/{S}NameID")


def _tamper_name_id(assertion: etree._Element) -> None:
    _name_id(assertion).text = "899700000666"


def _tamper_signature_value(assertion: etree._Element) -> None:
    node = assertion.find(f"{DS}Signature/{DS}SignatureValue")
    value = bytearray(base64.b64decode(node.text))
    value[7] ^= 1
    node.text = base64.b64encode(bytes(value)).decode()


def _unsigned(assertion: etree._Element) -> None:
    assertion.remove(assertion.find(f"{DS}Signature"))


def _wrapped(outer_id: str | None) -> Callable[[etree._Element], etree._Element]:
    def change(genuine: etree._Element) -> etree._Element:
        evil = copy.deepcopy(genuine)
        if outer_id is not None:
            evil.set("ID", outer_id)
        _name_id(evil).text = "899700000666"
        advice = etree.Element(f"{S}Advice")
        advice.append(copy.deepcopy(genuine))
        evil.insert(3, advice)
        return evil

    return change


def _signature_moved(assertion: etree._Element) -> None:
    assertion.find(f"{S}Subject").append(assertion.find(f"{DS}Signature"))


def _duplicate_id(assertion: etree._Element) -> None:
    assertion.find(f"{S}Subject").set("ID", assertion.get("ID"))


def _key_info(world: World, *names: str, pki: examplepki.ExamplePKI | None = None):
    def change(assertion: etree._Element) -> None:
        data = assertion.find(f"{DS}Signature/{DS}KeyInfo/{DS}X509Data")
        for node in list(data):
            data.remove(node)
        for name in names:
            source = pki or world.pki
            der = load_pkcs12(source.p12(name), source.password).certificate.public_bytes(
                Encoding.DER
            )
            etree.SubElement(data, f"{DS}X509Certificate").text = base64.b64encode(der).decode()

    return change


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> examplepki.ExamplePKI:
    """A look-alike example PKI the stubs do not trust."""
    return examplepki.generate(tmp_path_factory.mktemp("stranger"))


def _by(signer: SoftwareSigner, **options: object) -> VihfMaker:
    return lambda identity: [sign_vihf(identity, signer, **options)]  # type: ignore[arg-type]


SIGNATURE_ATTACKS: dict[str, tuple[Callable[[World, examplepki.ExamplePKI], VihfMaker], str]] = {
    "no wsse:Security": (lambda w, s: lambda identity: [], "InvalidSecurity"),
    "unsigned": (lambda w, s: changed(w, _unsigned), "InvalidSecurity"),
    "tampered NameID": (lambda w, s: changed(w, _tamper_name_id), "FailedCheck"),
    "tampered SignatureValue": (lambda w, s: changed(w, _tamper_signature_value), "FailedCheck"),
    "wrapped, another ID": (lambda w, s: changed(w, _wrapped("_evil")), "FailedCheck"),
    "wrapped, same ID": (lambda w, s: changed(w, _wrapped(None)), "FailedCheck"),
    "signature moved into Subject": (lambda w, s: changed(w, _signature_moved), "InvalidSecurity"),
    "duplicate ID": (lambda w, s: changed(w, _duplicate_id), "FailedCheck"),
    "two assertions": (
        lambda w, s: lambda identity: signed_by(w, "org-sign")(identity) * 2,
        "FailedCheck",
    ),
    "KeyInfo another trusted certificate": (
        lambda w, s: changed(w, _key_info(w, "cps-sign")),
        "FailedCheck",
    ),
    "KeyInfo a stranger first": (
        lambda w, s: changed(w, _key_info(w, "org-sign", pki=s)),
        "DMPInvalidCertificate",
    ),
    "untrusted signer": (
        lambda w, s: _by(load_pkcs12(s.p12("org-sign"), s.password).signer),
        "DMPInvalidCertificate",
    ),
    "expired signer": (
        lambda w, s: _by(w.signer(timedelta(days=-400), timedelta(days=-1))),
        "DMPInvalidCertificate",
    ),
    "not-yet-valid signer": (
        lambda w, s: _by(w.signer(timedelta(days=1), timedelta(days=400))),
        "DMPInvalidCertificate",
    ),
    "authentication key": (lambda w, s: signed_by(w, "org-auth"), "DMPInvalidCertificate"),
    "IssueInstant too old": (
        lambda w, s: signed_by(w, "org-sign", now=datetime.now(UTC) - timedelta(minutes=20)),
        "FailedCheck",
    ),
    "IssueInstant in the future": (
        lambda w, s: signed_by(w, "org-sign", now=datetime.now(UTC) + timedelta(minutes=20)),
        "FailedCheck",
    ),
    "Conditions over": (
        lambda w, s: signed_by(
            w,
            "org-sign",
            now=datetime.now(UTC) - timedelta(minutes=9),
            options=VihfOptions(validity=timedelta(minutes=1)),
        ),
        "FailedCheck",
    ),
}


@pytest.mark.parametrize("attack", SIGNATURE_ATTACKS.values(), ids=SIGNATURE_ATTACKS.keys())
def test_a_td11_with_a_hostile_vihf_is_refused(world, stranger, attack):
    make, subcode = attack
    fault = fault_of(refused_unchanged(world, td11_sent(world, make(world, stranger))))
    assert (fault.code, fault.subcode) == ("Sender", subcode)


def test_a_signer_of_the_dates_root_within_its_validity_is_accepted(world):
    signer = world.signer(timedelta(days=-1), timedelta(days=1))
    accepted(world, td11_sent(world, _by(signer)), "dmp_patients")


def test_saml_comment_injection_reads_the_whole_signed_name_id(world):
    """An XML comment splits the NameID: exclusive c14n drops it, so the signature covers
    "<DOCTOR>9"; a reader of the first text node would see DOCTOR, who is authorised elsewhere."""
    signer = load_pkcs12(world.pki.p12("org-sign"), world.pki.password)

    def make(identity: Vihf) -> list[etree._Element]:
        unsigned = build_assertion(replace(identity, subject_id=DOCTOR), signer.dn)
        comment = etree.Comment(" ")
        comment.tail = "9"
        _name_id(unsigned).append(comment)
        return [sign_enveloped(unsigned, signer.signer, after=f"{S}Issuer")]

    before = world.snapshot()["dmp_authorisations"]
    sent = td11_sent(world, make)
    assert b"<!-- -->9" in sent.body
    assert send(world.doctor.session, sent.url, sent.body, sent.headers).status_code == 200
    added = set(world.snapshot()["dmp_authorisations"]) - set(before)
    assert [row for row in added if f"{DOCTOR}9" in row]
    assert not [row for row in added if DOCTOR in row and f"{DOCTOR}9" not in row]


# --- TLS ---------------------------------------------------------------------------------------


def client_context(
    world: World,
    certificate: str | None = "org-auth",
    *,
    pki: examplepki.ExamplePKI | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A client context trusting the stubs, with ``certificate`` of ``pki`` (the attack PKI)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(world.pki.ca_bundle))
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if ciphers is not None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
    if certificate is not None:
        source = (pki or world.pki).directory
        context.load_cert_chain(source / f"{certificate}.pem", source / f"{certificate}.key")
    return context


def _https(world: World, context: ssl.SSLContext, path: str, body: bytes, headers: dict[str, str]):
    host, port = world.stubs.server._server.server_address[:2]
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=30)
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


TLS_REFUSALS = {
    "no client certificate": lambda w, s: client_context(w, None),
    "certificate of another CA": lambda w, s: client_context(w, pki=s),
    "TLS 1.1": lambda w, s: client_context(w, maximum=ssl.TLSVersion.TLSv1_1),
    "TLS 1.0": lambda w, s: client_context(w, maximum=ssl.TLSVersion.TLSv1),
}


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("make", TLS_REFUSALS.values(), ids=TLS_REFUSALS.keys())
def test_a_td11_over_a_refused_tls_connection_never_arrives(world, stranger, make):
    sent = td11_sent(world)
    before = world.snapshot()
    path = "/si-dmp-server/v2/services/patients"
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _https(world, make(world, stranger), path, sent.body, sent.headers)
    assert world.snapshot() == before
    world.serving()


def test_a_dmp_path_refuses_a_tls12_suite_outside_pdt_inf_579(world):
    sent = td11_sent(world)
    before = world.snapshot()
    context = client_context(world, ciphers=NON_DMP_SUITE)
    path = "/si-dmp-server/v2/services/patients"
    status, body = _https(world, context, path, sent.body, sent.headers)
    assert status == 403 and b"TLS" in body
    assert world.snapshot() == before
    world.serving()


@pytest.mark.parametrize("suite", DMP_CIPHERS)
def test_control_each_dmp_suite_reaches_the_dmp(world, suite):
    sent = td11_sent(world)
    context = client_context(world, ciphers=suite)
    status, _ = _https(
        world, context, "/si-dmp-server/v2/services/patients", sent.body, sent.headers
    )
    assert status == 200


def test_control_insi_takes_the_suite_the_dmp_refuses(world):
    envelope = envelope_for(build_traits_search(ECETINSI))
    context = client_context(world, "insi-auto", ciphers=NON_DMP_SUITE)
    body = etree.tostring(envelope)
    status, _ = _https(world, context, "/lps", body, {"Content-Type": SOAP})
    assert status == 200


# --- INSi access modes ---------------------------------------------------------------------------


def insi_sent(world: World, assertions: Sequence[etree._Element] = ()) -> Sent:
    envelope = envelope_for(build_traits_search(ECETINSI), assertions=list(assertions))
    return Sent(world.stubs.teleservices_url, etree.tostring(envelope), {"Content-Type": SOAP})


def _card(world: World, signer: str = "cps-sign", **fields: str) -> etree._Element:
    holder = load_pkcs12(world.pki.p12("cps-sign"), world.pki.password).common_name
    assertion = AssertionPS(fields.get("holder", holder), billing_id="123456789", sector="SA07")
    credential = load_pkcs12(world.pki.p12(signer), world.pki.password)
    return sign_assertion_ps(assertion, credential.signer)


def _forged_card(world: World, how: Forgery) -> etree._Element:
    credential = load_pkcs12(world.pki.p12("cps-sign"), world.pki.password)
    unsigned = build_assertion_ps(
        AssertionPS(credential.common_name, billing_id="123456789", sector="SA07"), credential.dn
    )
    return forge(unsigned, world.pki.directory / "cps-sign.key", credential.certificate, how)


def _session(world: World, name: str) -> requests.Session:
    credential = load_pkcs12(world.pki.p12(name), world.pki.password)
    return create_session(credential, TLSSettings(ca_bundle=world.pki.ca_bundle))


def test_control_card_mode_with_a_forged_assertion_inside_the_profile(world):
    sent = insi_sent(world, [_forged_card(world, Forgery())])
    with _session(world, "cps-auth") as session:
        response = send(session, sent.url, sent.body, sent.headers)
    assert read_resultat(insi_post_body(response)).report is Report.FOUND


def insi_post_body(response: requests.Response) -> etree._Element:
    """The RESULTAT of an INSi answer."""
    envelope = raise_for_fault(parse_xml(response.content))
    return envelope.find(f"{{{SOAP12_NS}}}Body")[0]


INSI_ACCESS = {
    "software certificate not INSI-*": ("org-auth", lambda w: [], "desir_560"),
    "card assertion signed by the authentication key": (
        "cps-auth",
        lambda w: [_card(w, "cps-auth")],
        "desir_560",
    ),
    "card assertion for another holder": (
        "cps-auth",
        lambda w: [_card(w, holder="SOMEONE ELSE")],
        "desir_560",
    ),
    "two card assertions": ("cps-auth", lambda w: [_card(w), _card(w)], "desir_560"),
    "card assertion with inclusive c14n": (
        "cps-auth",
        lambda w: [_forged_card(w, OUTSIDE_THE_PROFILE["inclusive c14n"])],
        "desir_560",
    ),
    "card assertion with an XPath transform": (
        "cps-auth",
        lambda w: [_forged_card(w, OUTSIDE_THE_PROFILE["XPath transform"])],
        "desir_560",
    ),
    "INSI-AUTO with a stray unsigned assertion": (
        "insi-auto",
        lambda w: [_unsigned_copy(_card(w))],
        "desir_560",
    ),
}


def _unsigned_copy(assertion: etree._Element) -> etree._Element:
    _unsigned(assertion)
    return assertion


@pytest.mark.parametrize("case", INSI_ACCESS.values(), ids=INSI_ACCESS.keys())
def test_insi_refuses_a_caller_without_access(world, case):
    certificate, assertions, code = case
    with _session(world, certificate) as session:
        response = refused_unchanged(world, insi_sent(world, assertions(world)), session)
    fault = fault_of(response)
    assert (fault.subcode, fault.details[0].code) == ("siram_100", code)
