"""The server-side attack corpus: hostile requests against the running stubs over real mutual TLS.

Every case is refused with the fault (or HTTP status) the real service gives, leaves every SQLite
table and the blob store exactly as they were (compared before and after), and the stubs keep
serving (a valid registry query and a valid INSi search answer afterwards). Each family has a
control: the same request unmodified is accepted, so a refusal is the mutation's doing.
"""

from __future__ import annotations

import copy
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
from lxml import etree

from tests.test_hl7v3 import LPS, registration
from tests.test_stub_dmp import make_caller, new_patient
from tests.test_stub_insi import ECETINSI, envelope_for
from tests.test_stub_xds import (
    DOCTOR,
    PATIENT,
    Caller,
    entry,
    find,
    open_dmp,
    submission_set,
    submit,
)
from tests.test_vihf import OUTSIDE_THE_PROFILE, Forgery, forge
from transport import examplepki
from transport.credentials import load_pkcs12
from transport.dmp import xds
from transport.dmp.hl7v3 import Reason, RegistrationRequest
from transport.errors import SoapFault
from transport.soap import mtom
from transport.soap.addressing import SOAP12_NS, WSA_NS
from transport.soap.client import build_envelope, raise_for_fault, send
from transport.stubs.app import Stubs
from transport.stubs.store import DATABASE_NAME
from transport.teleservices.client import post as insi_post
from transport.teleservices.insi import Report, build_traits_search, read_resultat
from transport.tls import TLSSettings, create_session
from transport.vihf import AuthMode, Vihf, build_assertion, sign_vihf
from transport.xml import parse_xml

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP = "application/soap+xml; charset=utf-8"


@dataclass
class World:
    """The running stubs, seeded with an open DMP holding one document, and the callers."""

    stubs: Stubs
    pki: examplepki.ExamplePKI
    doctor: Caller
    insi: requests.Session

    def snapshot(self) -> dict[str, object]:
        """Every row of every table and every file of the blob store (path and SHA-256)."""
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


@pytest.fixture(scope="module")
def world(pki: examplepki.ExamplePKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with Stubs(pki=pki, data_dir=tmp_path_factory.mktemp("attacks")) as stubs:
        open_dmp(stubs, PATIENT, DOCTOR)
        doctor = Caller(stubs)
        assert submit(doctor, (entry(b"seed document"), b"seed document")).ok
        credential = load_pkcs12(pki.p12("insi-auto"), pki.password)
        with create_session(credential, TLSSettings(ca_bundle=pki.ca_bundle)) as insi:
            yield World(stubs, pki, doctor, insi)


@dataclass(frozen=True)
class Sent:
    """A request as it goes on the wire: URL, body, headers."""

    url: str
    body: bytes | Iterator[bytes]
    headers: dict[str, str]


def refused_unchanged(world: World, request: Sent, session: requests.Session | None = None):
    """Send ``request``; assert the state did not change and the stubs still serve; the response."""
    before = world.snapshot()
    response = send(session or world.doctor.session, request.url, request.body, request.headers)
    assert response.status_code >= 400, response.content[:300]
    assert world.snapshot() == before
    world.serving()
    return response


def fault_of(response: requests.Response) -> SoapFault:
    """The SOAP fault a response carries."""
    with pytest.raises(SoapFault) as caught:
        raise_for_fault(parse_xml(response.content))
    return caught.value


# --- a TD1.1 (creates a DMP) and its mutations ---------------------------------------------------


VihfMaker = Callable[[Vihf], etree._Element]
"""Makes the ``wsse:Security`` assertion of a request from the identity it must carry."""


def td11(world: World, vihf: VihfMaker | None = None) -> tuple[str, etree._Element, str]:
    """URL, envelope and action of a TD1.1 creating a new patient's DMP, its VIHF made by
    ``vihf`` (default: signed as the client signs it)."""
    caller = make_caller(world.stubs, world.pki, AuthMode.INDIRECTE)
    patient = new_patient()
    request = RegistrationRequest.new(registration(Reason.CREA_RD, patient, caller.author()), LPS)
    url = world.stubs.dmp_url("patients")
    identity = caller.identity.with_patient(patient)
    assertion = vihf(identity) if vihf is not None else sign_vihf(identity, caller.signer)
    envelope = build_envelope(request.action, url, request.build(), assertions=[assertion])
    caller.session.close()
    return url, envelope, request.action


def soap(action: str) -> dict[str, str]:
    return {"Content-Type": f'{SOAP}; action="{action}"'}


def test_control_a_td11_as_sent_creates_the_dmp(world):
    url, envelope, action = td11(world)
    before = world.snapshot()
    response = send(world.doctor.session, url, etree.tostring(envelope), soap(action))
    assert response.status_code == 200
    assert world.snapshot()["dmp_patients"] != before["dmp_patients"]


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
    url, envelope, _ = td11(world)
    headers = {"Content-Type": content_type} if content_type else {}
    response = refused_unchanged(world, Sent(url, etree.tostring(envelope), headers))
    assert response.status_code == 415
    assert fault_of(response).code == "Sender"


def _header(envelope: etree._Element) -> etree._Element:
    return envelope.find(f"{{{SOAP12_NS}}}Header")


def _without(name: str) -> Callable[[etree._Element], None]:
    def mutate(envelope: etree._Element) -> None:
        header = _header(envelope)
        header.remove(header.find(f"{{{WSA_NS}}}{name}"))

    return mutate


def _twice(name: str) -> Callable[[etree._Element], None]:
    def mutate(envelope: etree._Element) -> None:
        header = _header(envelope)
        header.append(copy.deepcopy(header.find(f"{{{WSA_NS}}}{name}")))

    return mutate


def _unknown_must_understand(envelope: etree._Element) -> None:
    block = etree.SubElement(_header(envelope), "{urn:example:unknown}Extension")
    block.set(f"{{{SOAP12_NS}}}mustUnderstand", "true")


def _soap11(envelope: etree._Element) -> None:
    for element in envelope.iter(f"{{{SOAP12_NS}}}*"):
        element.tag = f"{{{SOAP11_NS}}}{etree.QName(element).localname}"
    etree.cleanup_namespaces(envelope)


ENVELOPE_MUTATIONS = {
    "no wsa:Action": (_without("Action"), ("MessageAddressingHeaderRequired",)),
    "no wsa:MessageID": (_without("MessageID"), ("MessageAddressingHeaderRequired",)),
    "two wsa:Action": (_twice("Action"), ("InvalidAddressingHeader", "InvalidCardinality")),
    "two wsa:MessageID": (_twice("MessageID"), ("InvalidAddressingHeader", "InvalidCardinality")),
    "mustUnderstand unknown header": (_unknown_must_understand, ()),
}


@pytest.mark.parametrize("mutation", ENVELOPE_MUTATIONS.values(), ids=ENVELOPE_MUTATIONS.keys())
def test_a_td11_with_broken_addressing_is_refused(world, mutation):
    mutate, subcodes = mutation
    url, envelope, action = td11(world)
    mutate(envelope)
    fault = fault_of(refused_unchanged(world, Sent(url, etree.tostring(envelope), soap(action))))
    assert tuple(code.rpartition(":")[2] for code in fault.subcodes) == subcodes
    if not subcodes:
        assert fault.code == "MustUnderstand"


def test_a_td11_as_soap_11_is_a_version_mismatch(world):
    url, envelope, action = td11(world)
    _soap11(envelope)
    fault = fault_of(refused_unchanged(world, Sent(url, etree.tostring(envelope), soap(action))))
    assert fault.code == "VersionMismatch"


def test_a_td11_whose_media_type_action_is_another_is_refused(world):
    url, envelope, _ = td11(world)
    other = soap("urn:hl7-org:v3:PRPA_IN201314UV02")
    fault = fault_of(refused_unchanged(world, Sent(url, etree.tostring(envelope), other)))
    assert fault.subcodes[-1].endswith("ActionMismatch")


def test_insi_in_another_media_type_is_refused_415(world):
    body = etree.tostring(envelope_for(build_traits_search(ECETINSI)))
    request = Sent(world.stubs.teleservices_url, body, {"Content-Type": "text/xml"})
    response = refused_unchanged(world, request, world.insi)
    assert response.status_code == 415
    assert fault_of(response).subcode == "siram_10"


def test_insi_with_an_unknown_must_understand_header_is_refused(world):
    envelope = envelope_for(build_traits_search(ECETINSI))
    _unknown_must_understand(envelope)
    request = Sent(world.stubs.teleservices_url, etree.tostring(envelope), {"Content-Type": SOAP})
    assert fault_of(refused_unchanged(world, request, world.insi)).subcode == "siram_10"


def iti41(world: World, content: bytes = b"attack document") -> tuple[bytes, str, mtom.MtomMessage]:
    """The root part, the action and the MTOM message of an ITI-41 submitting ``content``."""
    metadata = entry(content)
    content_id = mtom.new_content_id()
    payload = xds.provide_and_register_request(
        submission_set(), [xds.OutgoingDocument(metadata, content_id)]
    )
    url = world.stubs.dmp_url("repository")
    assertion = sign_vihf(world.doctor.identity.with_patient(PATIENT), world.doctor.signer)
    envelope = build_envelope(xds.ACTION_PROVIDE_AND_REGISTER, url, payload, assertions=[assertion])
    root = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    attachment = mtom.Attachment(content_id, content, metadata.mime_type)
    message = mtom.encode(root, (attachment,), action=xds.ACTION_PROVIDE_AND_REGISTER)
    return root, xds.ACTION_PROVIDE_AND_REGISTER, message


def _body(message: mtom.MtomMessage) -> bytes:
    return b"".join(message.chunks())


def test_control_an_iti41_as_sent_is_stored(world):
    _, _, message = iti41(world)
    before = world.snapshot()
    url = world.stubs.dmp_url("repository")
    response = send(
        world.doctor.session, url, _body(message), {"Content-Type": message.content_type}
    )
    assert response.status_code == 200
    assert world.snapshot()["xds_documents"] != before["xds_documents"]


def test_an_iti41_as_plain_soap_is_refused_415(world):
    root, action, _ = iti41(world)
    url = world.stubs.dmp_url("repository")
    response = refused_unchanged(world, Sent(url, root, soap(action)))
    assert response.status_code == 415


@pytest.mark.parametrize(
    "replace",
    [('type="application/xop+xml"', 'type="text/xml"'), ("multipart/related", "multipart/mixed")],
    ids=["type not xop", "multipart/mixed"],
)
def test_an_iti41_of_another_multipart_type_is_refused_415(world, replace):
    _, _, message = iti41(world)
    content_type = message.content_type.replace(*replace)
    url = world.stubs.dmp_url("repository")
    response = refused_unchanged(world, Sent(url, _body(message), {"Content-Type": content_type}))
    assert response.status_code == 415


def test_an_iti41_whose_root_part_is_not_xop_is_refused_415(world):
    _, _, message = iti41(world)
    body = _body(message).replace(b"application/xop+xml; charset=UTF-8", b"text/plain", 1)
    url = world.stubs.dmp_url("repository")
    response = refused_unchanged(world, Sent(url, body, {"Content-Type": message.content_type}))
    assert response.status_code == 415


def test_a_registry_query_as_mtom_is_refused_415(world):
    query = xds.query_request(xds.find_documents(PATIENT, (xds.APPROVED,)))
    url = world.stubs.dmp_url("registry")
    assertion = sign_vihf(world.doctor.identity.with_patient(PATIENT), world.doctor.signer)
    envelope = build_envelope(xds.ACTION_STORED_QUERY, url, query, assertions=[assertion])
    message = mtom.encode(etree.tostring(envelope), ())
    response = refused_unchanged(
        world, Sent(url, _body(message), {"Content-Type": message.content_type})
    )
    assert response.status_code == 415


# --- signatures: the VIHF of a TD1.1 -------------------------------------------------------------


def forged_vihf(world: World, how: Forgery, signer: str = "org-sign") -> VihfMaker:
    """A VIHF maker signing with ``signer``'s key as ``how`` says (see tests.test_vihf.forge)."""
    credential = load_pkcs12(world.pki.p12(signer), world.pki.password)

    def make(identity: Vihf) -> etree._Element:
        unsigned = build_assertion(identity, credential.dn)
        key = world.pki.directory / f"{signer}.key"
        return forge(unsigned, key, credential.certificate, how)

    return make


def test_control_a_td11_with_a_forged_vihf_inside_the_profile_creates_the_dmp(world):
    url, envelope, action = td11(world, forged_vihf(world, Forgery()))
    before = world.snapshot()
    response = send(world.doctor.session, url, etree.tostring(envelope), soap(action))
    assert response.status_code == 200
    assert world.snapshot()["dmp_patients"] != before["dmp_patients"]


@pytest.mark.parametrize("how", OUTSIDE_THE_PROFILE.values(), ids=OUTSIDE_THE_PROFILE.keys())
def test_a_td11_whose_vihf_is_signed_outside_the_profile_is_refused(world, how):
    url, envelope, action = td11(world, forged_vihf(world, how))
    fault = fault_of(refused_unchanged(world, Sent(url, etree.tostring(envelope), soap(action))))
    assert (fault.code, fault.subcode) == ("Sender", "FailedCheck")
    assert fault.reason.startswith("VIHF refusé")
