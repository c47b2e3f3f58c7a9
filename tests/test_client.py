"""The SOAP client end to end: zeep over mutual TLS to the echo stub, headers, faults, traces,
and the envelope checked against the official SOAP 1.2, WS-Addressing and SAML 2.0 schemas."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import DATA, REFERENCE
from tests.test_vihf import PATIENT
from transport import examplepki
from transport.credentials import Purpose, load_pkcs12
from transport.errors import SignatureError, SoapFault, TransportError
from transport.soap.addressing import SOAP12_NS, WSA_NS, Flavour
from transport.soap.envelope import build_envelope
from transport.soap.trace import Tracer
from transport.soap.wsdl import SoapClient, load_wsdl
from transport.soap.wsse import WSSE_NS
from transport.stubs.server import ServerTLS, StubResponse, StubServer
from transport.tls import create_session
from transport.vihf import SAML_NS, AuthMode, sign_vihf

WSDL = DATA / "echo.wsdl"
MUST_UNDERSTAND = f"{{{SOAP12_NS}}}mustUnderstand"


def client_for(profile, *, tracer=None, address=None) -> SoapClient:
    session = create_session(
        profile.tls_credential.load(Purpose.TLS_CLIENT), profile.tls_settings()
    )
    return SoapClient(
        WSDL, session=session, address=address or profile.endpoint("echo"), tracer=tracer
    )


def vihf_for(profile):
    signer = profile.signature_credential.load(Purpose.SIGNATURE).signer
    return sign_vihf(profile.identity.with_patient(PATIENT), signer)


def test_call_in_each_mode(profile, tmp_path):
    tracer = Tracer(tmp_path)
    client = client_for(profile, tracer=tracer)
    result = client.call("Echo", assertions=[vihf_for(profile)], message="bonjour")
    assert result == "bonjour"
    sent = etree.fromstring((tmp_path / "001-Echo-request.xml").read_bytes())
    header = sent.find(f"{{{SOAP12_NS}}}Header")
    names = [etree.QName(child).localname for child in header]
    assert names == ["MessageID", "To", "ReplyTo", "Action", "Security"]
    assert header.find(f"{{{WSA_NS}}}MessageID").text.startswith("urn:uuid:")
    assert header.find(f"{{{WSA_NS}}}To").text == profile.endpoint("echo")
    assert header.find(f"{{{WSA_NS}}}Action").text == "urn:cisis-transport:echo:Echo"
    assert header.find(f"{{{WSA_NS}}}Action").get(MUST_UNDERSTAND) == "true"
    assert header.find(f"{{{WSA_NS}}}ReplyTo").get(MUST_UNDERSTAND) == "true"
    assert header.find(f"{{{WSA_NS}}}ReplyTo/{{{WSA_NS}}}Address").text == (
        "http://www.w3.org/2005/08/addressing/anonymous"
    )
    security = header.find(f"{{{WSSE_NS}}}Security")
    assert [etree.QName(child).localname for child in security] == ["Assertion"]
    answer = etree.fromstring((tmp_path / "001-Echo-response.xml").read_bytes())
    relates_to = answer.find(f"{{{SOAP12_NS}}}Header/{{{WSA_NS}}}RelatesTo").text
    assert relates_to == header.find(f"{{{WSA_NS}}}MessageID").text


def test_traces_are_numbered_and_private(profile, tmp_path):
    client = client_for(profile, tracer=Tracer(tmp_path))
    for word in ("un", "deux"):
        client.call("Echo", assertions=[vihf_for(profile)], message=word)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == [
        "001-Echo-request.xml",
        "001-Echo-response.xml",
        "002-Echo-request.xml",
        "002-Echo-response.xml",
    ]
    assert all((tmp_path / name).stat().st_mode & 0o777 == 0o600 for name in files)
    assert b"deux" in (tmp_path / "002-Echo-request.xml").read_bytes()


@pytest.mark.parametrize("mode", [AuthMode.INDIRECTE], ids=str)
def test_tlsi_flavour_sends_action_and_uuid_message_id_only(profile, tmp_path):
    session = create_session(
        profile.tls_credential.load(Purpose.TLS_CLIENT), profile.tls_settings()
    )
    client = SoapClient(
        WSDL,
        session=session,
        address=profile.endpoint("echo"),
        flavour=Flavour.TLSI,
        tracer=Tracer(tmp_path),
    )
    client.call("Echo", assertions=[vihf_for(profile)], message="x")
    header = etree.fromstring((tmp_path / "001-Echo-request.xml").read_bytes())[0]
    wsa = [child for child in header if etree.QName(child).namespace == WSA_NS]
    assert [etree.QName(child).localname for child in wsa] == ["Action", "MessageID"]
    assert wsa[1].text.startswith("uuid:")
    assert all(child.get(MUST_UNDERSTAND) is None for child in wsa)


@pytest.mark.parametrize("mode", [AuthMode.INDIRECTE], ids=str)
def test_fault_for_an_authentication_only_signer(profile, pki):
    client = client_for(profile)
    auth_only = load_pkcs12(pki.p12("org-auth"), pki.password).signer
    assertion = sign_vihf(profile.identity.with_patient(PATIENT), auth_only)
    with pytest.raises(SoapFault) as caught:
        client.call("Echo", assertions=[assertion], message="x")
    assert caught.value.code == "Sender"
    assert caught.value.subcode == "DMPInvalidCertificate"
    assert caught.value.exit_code == 1
    assert "nonRepudiation" in caught.value.reason


@pytest.mark.parametrize("mode", [AuthMode.INDIRECTE], ids=str)
def test_fault_without_assertion(profile):
    with pytest.raises(SoapFault) as caught:
        client_for(profile).call("Echo", message="x")
    assert caught.value.subcode == "InvalidSecurity"


def test_wsdl_is_parsed_once_per_process():
    assert load_wsdl(WSDL) is load_wsdl(WSDL)


def _serve(pki: examplepki.ExamplePKI, body: bytes, status: int = 200) -> StubServer:
    def handler(request):
        return StubResponse(status, body)

    return StubServer(handler, ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle))


@pytest.mark.parametrize("mode", [AuthMode.INDIRECTE], ids=str)
def test_response_relating_to_another_message_is_refused(profile, pki):
    answer = (
        f'<soap:Envelope xmlns:soap="{SOAP12_NS}" xmlns:wsa="{WSA_NS}"><soap:Header>'
        "<wsa:RelatesTo>urn:uuid:00000000-0000-0000-0000-000000000000</wsa:RelatesTo>"
        '</soap:Header><soap:Body><EchoResponse xmlns="urn:cisis-transport:echo">'
        "<message>x</message></EchoResponse></soap:Body></soap:Envelope>"
    ).encode()
    with _serve(pki, answer) as server:
        client = client_for(profile, address=f"{server.url}/echo")
        with pytest.raises(TransportError, match="relates to"):
            client.call("Echo", assertions=[vihf_for(profile)], message="x")


@pytest.mark.parametrize("mode", [AuthMode.INDIRECTE], ids=str)
def test_response_with_a_dtd_is_refused(profile, pki):
    answer = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]>'
        b'<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>'
        b'<EchoResponse xmlns="urn:cisis-transport:echo"><message>&e;</message></EchoResponse>'
        b"</soap:Body></soap:Envelope>"
    )
    with _serve(pki, answer) as server:
        client = client_for(profile, address=f"{server.url}/echo")
        with pytest.raises(Exception) as caught:
            client.call("Echo", assertions=[vihf_for(profile)], message="x")
    assert "boom" not in str(caught.value)
    assert type(caught.value).__name__ in {"DTDForbidden", "TransportError", "EntitiesForbidden"}


@pytest.mark.parametrize("mode", [AuthMode.INDIRECTE], ids=str)
def test_http_error_without_soap_is_a_transport_error(profile, pki):
    with _serve(pki, b"", status=503) as server:
        client = client_for(profile, address=f"{server.url}/echo")
        with pytest.raises(TransportError, match="503"):
            client.call("Echo", assertions=[vihf_for(profile)], message="x")


def test_find_assertions_refuses_two_security_headers(pki, load):
    from transport.soap.wsse import find_assertions, security_header

    envelope = build_envelope("a", "b", etree.Element("x"))
    header = envelope.find(f"{{{SOAP12_NS}}}Header")
    header.append(security_header([]))
    header.append(security_header([]))
    with pytest.raises(SignatureError) as caught:
        find_assertions(envelope)
    assert caught.value.reason == "wrapping"


# --- schema validation against the official schemas shipped by Debian packages ---

XT = "/usr/share/xml/xmltooling/"


def _soap12_xsd() -> str | None:
    candidates = [os.environ.get("CISIS_SOAP12_XSD", "")]
    candidates += glob.glob("/opt/yaws/usr/lib/yaws-*/priv/soap-envelope.xsd")
    candidates += glob.glob("/usr/lib/yaws-*/priv/soap-envelope.xsd")
    return next((path for path in candidates if path and Path(path).is_file()), None)


SCHEMAS = {
    "http://www.w3.org/XML/1998/namespace": XT + "xml.xsd",
    "http://www.w3.org/2000/09/xmldsig#": XT + "xmldsig-core-schema.xsd",
    "http://www.w3.org/2001/04/xmlenc#": XT + "xenc-schema.xsd",
    "http://www.w3.org/2005/08/addressing": "/usr/share/xml/shibboleth/ws-addr.xsd",
    SAML_NS: "/usr/share/xml/opensaml/saml-schema-assertion-2.0.xsd",
}


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    locations = dict(SCHEMAS)
    soap = _soap12_xsd()
    missing = [path for path in locations.values() if not Path(path).is_file()]
    if soap is None or missing:
        pytest.skip(
            "official schemas missing (Debian xmltooling-schemas, opensaml-schemas, "
            f"shibboleth-sp-common, erlang-yaws' soap-envelope.xsd): {missing or 'SOAP 1.2'}"
        )
    locations[SOAP12_NS] = soap
    # The roles are HL7 CE values (xsi:type="CE"): the HL7v3 datatypes come with the official
    # DMP schemas.
    hl7 = REFERENCE / "dmp-wsdl" / "schema" / "HL7V3" / "NE2008" / "coreschemas" / "datatypes.xsd"
    if not hl7.is_file():
        pytest.skip(f"HL7v3 datatypes schema not available at {hl7} (../shared/reference)")
    locations["urn:hl7-org:v3"] = str(hl7)
    # Dependencies first: libxml2 then skips the schemas' own http:// imports.
    imports = "".join(
        f'<xs:import namespace="{namespace}" schemaLocation="file://{path}"/>'
        for namespace, path in locations.items()
    )
    wrapper = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
    return etree.XMLSchema(etree.fromstring(wrapper))


def test_envelope_validates_against_soap_wsa_and_saml_schemas(profile, tmp_path, schema):
    client_for(profile, tracer=Tracer(tmp_path)).call(
        "Echo", assertions=[vihf_for(profile)], message="valide"
    )
    envelope = etree.fromstring((tmp_path / "001-Echo-request.xml").read_bytes())
    assert schema.validate(envelope), schema.error_log
    assertions = envelope.findall(f".//{{{SAML_NS}}}Assertion")
    assert len(assertions) == 1
    # The assertion is also validated strictly on its own (the Security header is lax).
    assert schema.validate(etree.fromstring(etree.tostring(assertions[0]))), schema.error_log


def test_schema_catches_a_broken_envelope(profile, tmp_path, schema):
    client_for(profile, tracer=Tracer(tmp_path)).call(
        "Echo", assertions=[vihf_for(profile)], message="x"
    )
    envelope = etree.fromstring((tmp_path / "001-Echo-request.xml").read_bytes())
    envelope.find(f".//{{{WSA_NS}}}Action").set(MUST_UNDERSTAND, "maybe")
    assert not schema.validate(envelope)
    assertion = envelope.find(f".//{{{SAML_NS}}}Assertion")
    assertion.remove(assertion.find(f"{{{SAML_NS}}}Issuer"))
    assert not schema.validate(etree.fromstring(etree.tostring(assertion)))
