"""The project's own WSDL/XSD (wsdl/): they load with the client, declare exactly the operations
the library implements with the official actions and element QNames, agree with the official
contracts, accept the official example messages, and what zeep writes from them is valid against
the official schemas."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import requests
import zeep.exceptions
from lxml import etree

from tests.conftest import REFERENCE
from transport.soap.addressing import SOAP12_NS
from transport.soap.wsdl import SoapClient, load_wsdl, wsdl_path
from transport.stubs.app import service_path
from transport.xml import parse_xml

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
SOAP12_BINDING_NS = "http://schemas.xmlsoap.org/wsdl/soap12/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
# The WS-Addressing WSDL binding namespaces an Action attribute may come in: the 2006/05 candidate
# recommendation (zeep, the DMP), the 2006/02 draft (the official INSi WSDL), the 2007 metadata.
ACTION_NAMESPACES = (
    "http://www.w3.org/2006/05/addressing/wsdl",
    "http://www.w3.org/2006/02/addressing/wsdl",
    "http://www.w3.org/2007/05/addressing/metadata",
)

HL7 = "urn:hl7-org:v3"
GDP = "asip:ci-sis:gdp:2010"
HAB = "urn:si-dmp-habilitations"
PAT = "urn:si-dmp-patients"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XDS = "urn:ihe:iti:xds-b:2007"
RECSANS = "http://www.cnamts.fr/INSiRecSans"
RECVIT = "http://www.cnamts.fr/INSiRecVit"
RESULTAT = "http://www.cnamts.fr/INSiResultat"
CTXBAM = "urn:siram:bam:ctxbam"
CTXLPS = "urn:siram:lps:ctxlps"
INSI_ACTION = "urn:ServiceIdentiteCertifiee:1.0.0:"


@dataclass(frozen=True)
class Operation:
    """One operation's contract: WS-Addressing actions and body root elements ("{ns}name")."""

    input_action: str
    output_action: str
    input_element: str
    output_element: str


# What the library implements, per project WSDL: the contract every other check is held to.
IMPLEMENTED: dict[str, dict[str, Operation]] = {
    "dmp/patients.wsdl": {
        "PatientGetDemographics_PRPA_IN201307UV02": Operation(
            "urn:hl7-org:v3:PRPA_IN201307UV02",
            "urn:hl7-org:v3:PRPA_IN201308UV02",
            f"{{{HL7}}}PRPA_IN201307UV02",
            f"{{{HL7}}}PRPA_IN201308UV02",
        ),
        "PatientAdd_PRPA_IN201311UV02": Operation(
            "urn:hl7-org:v3:PRPA_IN201311UV02",
            "urn:hl7-org:v3:PRPA_IN201311ResponseUV02",
            f"{{{HL7}}}PRPA_IN201311UV02",
            f"{{{GDP}}}PRPA_IN201311UV02_Response",
        ),
        "PatientRevise_PRPA_IN201314UV02": Operation(
            "urn:hl7-org:v3:PRPA_IN201314UV02",
            "urn:hl7-org:v3:PRPA_IN201314ResponseUV02",
            f"{{{HL7}}}PRPA_IN201314UV02",
            f"{{{GDP}}}PRPA_IN201314UV02_Response",
        ),
    },
    "dmp/patientsPDQ.wsdl": {
        "findCandidatesQuery": Operation(
            "urn:hl7-org:v3:PRPA_IN201305UV02",
            "urn:hl7-org:v3:PRPA_IN201306UV02",
            f"{{{HL7}}}PRPA_IN201305UV02",
            f"{{{HL7}}}PRPA_IN201306UV02",
        ),
    },
    "dmp/habilitations.wsdl": {
        "setAuthorization": Operation(
            f"{HAB}:HabilitationsEndPoint:setAuthorization",
            f"{HAB}:HabilitationsEndPoint:setAuthorizationResponse",
            f"{{{HAB}}}setAuthorization",
            f"{{{HAB}}}setAuthorizationResponse",
        ),
        "listAuthorizationByPatient": Operation(
            f"{HAB}:HabilitationsEndPoint:listAuthorizationByPatient",
            f"{HAB}:HabilitationsEndPoint:listAuthorizationByPatientResponse",
            f"{{{HAB}}}listAuthorizationByPatient",
            f"{{{HAB}}}listAuthorizationByPatientResponse",
        ),
    },
    "dmp/patientsSpecific.wsdl": {
        "patientList": Operation(
            f"{PAT}:PatientSpecificEndPoint:patientList",
            f"{PAT}:PatientSpecificEndPoint:patientListResponse",
            f"{{{PAT}}}patientList",
            f"{{{PAT}}}patientListResponse",
        ),
    },
    "dmp/registry.wsdl": {
        "DocumentRegistry_RegistryStoredQuery": Operation(
            "urn:ihe:iti:2007:RegistryStoredQuery",
            "urn:ihe:iti:2007:RegistryStoredQueryResponse",
            f"{{{QUERY}}}AdhocQueryRequest",
            f"{{{QUERY}}}AdhocQueryResponse",
        ),
        "DocumentRegistry_UpdateDocumentSet": Operation(
            "urn:ihe:iti:2010:UpdateDocumentSet",
            "urn:ihe:iti:2010:UpdateDocumentSet-Response",
            f"{{{LCM}}}SubmitObjectsRequest",
            f"{{{RS}}}RegistryResponse",
        ),
    },
    "dmp/repository.wsdl": {
        "DocumentRepository_ProvideAndRegisterDocumentSet-b": Operation(
            "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b",
            "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse",
            f"{{{XDS}}}ProvideAndRegisterDocumentSetRequest",
            f"{{{RS}}}RegistryResponse",
        ),
        "DocumentRepository_RetrieveDocumentSet": Operation(
            "urn:ihe:iti:2007:RetrieveDocumentSet",
            "urn:ihe:iti:2007:RetrieveDocumentSetResponse",
            f"{{{XDS}}}RetrieveDocumentSetRequest",
            f"{{{XDS}}}RetrieveDocumentSetResponse",
        ),
    },
    "insi/insi.wsdl": {
        "rechercherInsAvecTraitsIdentite": Operation(
            f"{INSI_ACTION}rechercherInsAvecTraitsIdentite",
            f"{INSI_ACTION}rechercherInsAvecTraitsIdentiteResponse",
            f"{{{RECSANS}}}RECSANSVITALE",
            f"{{{RESULTAT}}}RESULTAT",
        ),
        "rechercherInsAvecCarteVitale": Operation(
            f"{INSI_ACTION}rechercherInsAvecCarteVitale",
            f"{INSI_ACTION}rechercherInsAvecCarteVitaleResponse",
            f"{{{RECVIT}}}RECVITALE",
            f"{{{RESULTAT}}}RESULTAT",
        ),
    },
}

STUB_SERVICE = {
    "dmp/patients.wsdl": "patients",
    "dmp/patientsPDQ.wsdl": "patientsPDQ",
    "dmp/habilitations.wsdl": "habilitations",
    "dmp/patientsSpecific.wsdl": "patientsSpecific",
    "dmp/registry.wsdl": "registry",
    "dmp/repository.wsdl": "repository",
    "insi/insi.wsdl": "lps",
}

OFFICIAL = {
    "dmp/patients.wsdl": REFERENCE / "dmp-wsdl" / "wsdl" / "GestionDossierPatientPartage.wsdl",
    "dmp/patientsPDQ.wsdl": REFERENCE / "dmp-wsdl" / "wsdl" / "PDQSupplier.wsdl",
    "dmp/habilitations.wsdl": REFERENCE / "dmp-wsdl" / "wsdl" / "Habilitations.wsdl",
    "dmp/patientsSpecific.wsdl": REFERENCE / "dmp-wsdl" / "wsdl" / "PatientsSpecific.wsdl",
    "dmp/registry.wsdl": REFERENCE / "dmp-wsdl" / "wsdl" / "XDS.b_DocumentRegistry.wsdl",
    "dmp/repository.wsdl": REFERENCE / "dmp-wsdl" / "wsdl" / "XDS.b_DocumentRepository.wsdl",
    "insi/insi.wsdl": REFERENCE / "insi-wsdl" / "DESIR_ICIR_EXP_1.5.0.wsdl",
}
INSI_REMOTE_IMPORT = (
    "the official INSi WSDL imports ws-addr.xsd from http://www.w3.org/2006/03/addressing/, and "
    "load_wsdl forbids remote imports: it is read with lxml instead"
)
INSI_HEADERS = {f"{{{CTXBAM}}}ContexteBAM", f"{{{CTXLPS}}}ContexteLPS"}

needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"official WSDL/XSD/examples not available at {REFERENCE}"
)


# --- reading a WSDL with lxml: the view zeep does not give (output actions, header parts) -------


def _qname(context: etree._Element, value: str) -> str:
    """A prefixed QName attribute value as "{namespace}local", in ``context``'s scope."""
    prefix, _, local = value.rpartition(":")
    return f"{{{context.nsmap[prefix or None]}}}{local}"


def _action(message: etree._Element) -> str | None:
    for name, value in message.attrib.items():
        qname = etree.QName(name)
        if qname.localname == "Action" and qname.namespace in ACTION_NAMESPACES:
            return value
    return None


def _default_action(namespace: str, port_type: str, name: str) -> str:
    # WS-Addressing 1.0 Metadata §4.4.4: namespace, port type and message name (WSDL 1.1 default
    # names: operation + "Request"/"Response"), joined by ":" for a URN namespace, else "/".
    delimiter = ":" if namespace.startswith("urn:") else "/"
    return delimiter.join((namespace.rstrip(delimiter), port_type, name))


@dataclass(frozen=True)
class Declared:
    """An operation as a WSDL file declares it: its contract and its SOAP header elements."""

    operation: Operation
    headers: frozenset[str]


def read_wsdl(path: Path) -> dict[str, Declared]:
    """Every operation of the first binding of a WSDL file, read with lxml."""
    root = parse_xml(path.read_bytes())
    namespace = root.get("targetNamespace")
    w = f"{{{WSDL_NS}}}"
    messages = {m.get("name"): m for m in root.iter(f"{w}message")}
    binding = root.find(f"{w}binding")
    port_type_name = _qname(binding, binding.get("type")).rpartition("}")[2]
    port_type = root.find(f"{w}portType[@name='{port_type_name}']")
    declared = {}
    for operation in port_type.findall(f"{w}operation"):
        name = operation.get("name")
        bound = binding.find(f"{w}operation[@name='{name}']")
        ends = {}
        headers: set[str] = set()
        for end, suffix in (("input", "Request"), ("output", "Response")):
            abstract = operation.find(f"{w}{end}")
            message = messages[_qname(abstract, abstract.get("message")).rpartition("}")[2]]
            body = bound.find(f"{w}{end}/{{{SOAP12_BINDING_NS}}}body")
            wanted = (body.get("parts") or "").split() if body is not None else []
            parts = [
                p for p in message.findall(f"{w}part") if not wanted or p.get("name") in wanted
            ]
            assert len(parts) == 1, f"{path.name} {name} {end}: body parts {wanted or 'all'}"
            action = _action(abstract) or _default_action(
                namespace, port_type_name, abstract.get("name") or name + suffix
            )
            ends[end] = (action, _qname(parts[0], parts[0].get("element")))
        for header in bound.findall(f"{w}input/{{{SOAP12_BINDING_NS}}}header"):
            message = messages[_qname(header, header.get("message")).rpartition("}")[2]]
            part = message.find(f"{w}part[@name='{header.get('part')}']")
            headers.add(_qname(part, part.get("element")))
        declared[name] = Declared(
            Operation(ends["input"][0], ends["output"][0], ends["input"][1], ends["output"][1]),
            frozenset(headers),
        )
    return declared


def zeep_operations(document) -> dict[str, tuple[str | None, str, str]]:
    """Every operation zeep sees in a document: (input action, input element, output element)."""
    found = {}
    for service in document.services.values():
        for port in service.ports.values():
            for name, operation in port.binding.all().items():
                found[name] = (
                    operation.abstract.wsa_action,
                    operation.input.body.qname.text,
                    operation.output.body.qname.text,
                )
    return found


def _only_binding(path: Path):
    """The one binding of a WSDL file, as zeep reads it."""
    (binding,) = load_wsdl(path).bindings.values()
    return binding


def _written_by_zeep(wsdl: Path, operation: str, **body) -> etree._Element:
    """The request envelope zeep writes for ``operation`` (without the client's headers)."""
    # Straight from the binding, without a zeep Client: the official PatientsSpecific.wsdl gives
    # its SOAP 1.2 binding a SOAP 1.1 address, from which a zeep Client cannot be built.
    return _only_binding(wsdl).get(operation).create(**body).content


# --- the project's WSDL ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(IMPLEMENTED))
def test_project_wsdl_loads_with_the_client(name):
    path = wsdl_path(name)
    assert load_wsdl(path) is load_wsdl(path)
    client = SoapClient(path, session=requests.Session())
    assert client.address == f"https://localhost:8443{service_path(STUB_SERVICE[name])}"


@pytest.mark.parametrize("name", list(IMPLEMENTED))
def test_project_wsdl_declares_exactly_the_implemented_operations(name):
    path = wsdl_path(name)
    expected = IMPLEMENTED[name]
    seen_by_zeep = zeep_operations(load_wsdl(path))
    assert set(seen_by_zeep) == set(expected)
    for operation, contract in expected.items():
        # zeep sends the input action as wsa:Action: it must be the official one.
        assert seen_by_zeep[operation] == (
            contract.input_action,
            contract.input_element,
            contract.output_element,
        )
    assert {op: d.operation for op, d in read_wsdl(path).items()} == expected


def test_soap_action_repeats_the_wsa_action():
    # The SOAP 1.2 Content-Type action parameter, which zeep takes from soapAction, must not
    # contradict wsa:Action.
    for name, expected in IMPLEMENTED.items():
        binding = _only_binding(wsdl_path(name))
        for operation, contract in expected.items():
            assert binding.get(operation).soapaction == contract.input_action


def test_insi_wsdl_declares_the_context_headers():
    declared = read_wsdl(wsdl_path("insi/insi.wsdl"))
    assert {op: d.headers for op, d in declared.items()} == {
        op: INSI_HEADERS for op in IMPLEMENTED["insi/insi.wsdl"]
    }


def test_zeep_writes_the_context_headers_of_our_insi_wsdl():
    envelope = _written_by_zeep(
        wsdl_path("insi/insi.wsdl"),
        "rechercherInsAvecTraitsIdentite",
        NomNaissance="ECETINSI",
        _soapheaders=_context_headers(),
    )
    header = envelope.find(f"{{{SOAP12_NS}}}Header")
    assert [child.tag for child in header] == [
        f"{{{CTXBAM}}}ContexteBAM",
        f"{{{CTXLPS}}}ContexteLPS",
    ]
    assert header.find(f"{{{CTXLPS}}}ContexteLPS/{{{CTXLPS}}}LPS/{{{CTXLPS}}}IDAM").get("R") == "4"


def _context_headers() -> dict:
    return {
        "NO1_ContexteBAM": {
            "Version": "01_02",
            "Id": "5e0c8c54-2a8e-4c55-9d6e-0a1b2c3d4e5f",
            "Temps": "2026-01-02T03:04:05.678Z",
            "Emetteur": "10B0152872",
            "COUVERTURE": {},
        },
        "NO1_ContexteLPS": {
            "Nature": "CTXLPS",
            "Version": "01_00",
            "Id": "9f1d2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b",
            "Temps": "2026-01-02T03:04:05.678Z",
            "Emetteur": "10B0152872",
            "LPS": {
                "IDAM": {"_value_1": "PDP17NF21DD0", "R": "4"},
                "Version": "1.0",
                "Instance": "636c9d43-1a19-5b8c-a8b1-ac43227cfe46",
                "Nom": "urn:lps:cisis-transport:1.0",
            },
        },
    }


# --- against the official contracts ----------------------------------------------------------


@needs_reference
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                raises=zeep.exceptions.ExternalReferenceForbidden,
                strict=True,
                reason=INSI_REMOTE_IMPORT,
            ),
        )
        if name == "insi/insi.wsdl"
        else name
        for name in IMPLEMENTED
    ],
)
def test_official_wsdl_loads_with_the_client(name):
    document = load_wsdl(OFFICIAL[name])
    assert set(IMPLEMENTED[name]) <= set(zeep_operations(document))


@needs_reference
@pytest.mark.parametrize("name", list(IMPLEMENTED))
def test_official_wsdl_has_our_operations(name):
    official = read_wsdl(OFFICIAL[name])
    try:
        seen_by_zeep = zeep_operations(load_wsdl(OFFICIAL[name]))
    except zeep.exceptions.ExternalReferenceForbidden:
        assert name == "insi/insi.wsdl", INSI_REMOTE_IMPORT
        seen_by_zeep = {}
    ours = read_wsdl(wsdl_path(name))
    for operation, contract in IMPLEMENTED[name].items():
        assert official[operation].operation == contract
        assert ours[operation].headers <= official[operation].headers
        if operation in seen_by_zeep:
            # zeep's view of the official file agrees with the lxml reading (explicit actions).
            action, input_element, output_element = seen_by_zeep[operation]
            assert (input_element, output_element) == (
                contract.input_element,
                contract.output_element,
            )
            assert action in (None, contract.input_action)


@needs_reference
def test_default_actions_of_the_official_dmp_wsdl_match_the_official_exchange():
    # Habilitations.wsdl declares no wsaw:Action: its default action is what TD0.3 sends.
    request = _example("dmp-examples/TD0.3_-_Mise_jour_de_l_autorisation_request.xml")
    response = _example("dmp-examples/TD0.3_-_Mise_jour_de_l_autorisation_response.xml")
    official = read_wsdl(OFFICIAL["dmp/habilitations.wsdl"])["setAuthorization"].operation
    wsa = "{http://www.w3.org/2005/08/addressing}"
    assert request.findtext(f"{{{SOAP12_NS}}}Header/{wsa}Action") == official.input_action
    assert response.findtext(f"{{{SOAP12_NS}}}Header/{wsa}Action") == official.output_action


# --- the official examples against our schemas -----------------------------------------------


def _example(relative: str) -> etree._Element:
    path = REFERENCE / relative
    if not path.is_file():
        pytest.skip(f"official example not available at {path}")
    # Every example read here is UTF-8 or ASCII (see spec/README.md §6 for those that are not).
    return parse_xml(path.read_bytes())


def _body(envelope: etree._Element) -> etree._Element:
    body = envelope.find(f"{{{SOAP12_NS}}}Body")
    (root,) = body
    return root


def _header(envelope: etree._Element, tag: str) -> etree._Element:
    return envelope.find(f"{{{SOAP12_NS}}}Header/{tag}")


def _schema_of(paths: list[Path]) -> etree.XMLSchema:
    imports = "".join(
        f'<xs:import namespace="{parse_xml(p.read_bytes()).get("targetNamespace")}" '
        f'schemaLocation="{p.resolve().as_uri()}"/>'
        for p in paths
    )
    return etree.XMLSchema(
        etree.fromstring(f'<xs:schema xmlns:xs="{XSD_NS}">{imports}</xs:schema>')
    )


@pytest.fixture(scope="module")
def our_schema() -> etree.XMLSchema:
    """Every XSD of the project's WSDL, in one schema."""
    root = wsdl_path("dmp/patients.wsdl").parent.parent
    return _schema_of(sorted(root.glob("*/*.xsd")))


def _assert_valid(schema: etree.XMLSchema, element: etree._Element) -> None:
    assert schema.validate(element), schema.error_log


TYPED_EXAMPLES = [
    ("dmp-examples/TD0.3_-_Mise_jour_de_l_autorisation_request.xml", None),
    ("dmp-examples/TD0.3_-_Mise_jour_de_l_autorisation_response.xml", None),
    ("insi-examples/TEST_2.04_cas2.xml", None),
    ("insi-examples/TEST_2.05.xml", None),
    ("dmp-examples/WS_INS2_rechercherInsAvecTraitsIdentite_response.xml", None),
    ("dmp-examples/WS_INS2_rechercherInsAvecTraitsIdentite_request.xml", None),
    ("insi-examples/INSi_request_with_AssertionPS.xml", None),
    ("insi-examples/INSi_request_with_AssertionPS.xml", f"{{{CTXBAM}}}ContexteBAM"),
    ("insi-examples/INSi_request_with_AssertionPS.xml", f"{{{CTXLPS}}}ContexteLPS"),
    (
        "dmp-examples/WS_INS2_rechercherInsAvecTraitsIdentite_request.xml",
        f"{{{CTXBAM}}}ContexteBAM",
    ),
    (
        "dmp-examples/WS_INS2_rechercherInsAvecTraitsIdentite_request.xml",
        f"{{{CTXLPS}}}ContexteLPS",
    ),
]


@needs_reference
@pytest.mark.parametrize(("relative", "header"), TYPED_EXAMPLES)
def test_official_example_validates_against_our_typed_schema(our_schema, relative, header):
    envelope = _example(relative)
    element = _header(envelope, header) if header else _body(envelope)
    assert element is not None
    _assert_valid(our_schema, element)


OPEN_EXAMPLES = [
    "dmp-examples/TD0.2_-_Test_d_existence_request.xml",
    "dmp-examples/TD0.2_-_Test_d_existence_response.xml",
    "dmp-examples/TD1.3a_-_Consultation_request.xml",
    "dmp-examples/TD1.3a_-_Consultation_response.xml",
    "dmp-examples/TD3.1_-_Recherche_de_document_request.xml",
    "dmp-examples/TD3.1_-_Recherche_de_document_response.xml",
    "dmp-examples/TD3.2_-_Consultation_d_un_document_request.xml",
    "dmp-examples/TD3.2_-_Consultation_d_un_document_response.xml",
    "dmp-examples/TD2.1_-_Alimentation_response.xml",
]


@needs_reference
@pytest.mark.parametrize("relative", OPEN_EXAMPLES)
def test_official_example_root_is_declared_by_our_schema(our_schema, relative):
    # Open content: what is checked is that the body's root QName is one our schemas declare.
    _assert_valid(our_schema, _body(_example(relative)))


def _mutated(element: etree._Element, path: str, text: str | None = None) -> etree._Element:
    """A copy of ``element`` with the node at ``path`` (ElementPath) removed, or its text set."""
    copy = etree.fromstring(etree.tostring(element))
    target = copy.find(path)
    if text is None:
        target.getparent().remove(target)
    else:
        target.text = text
    return copy


@needs_reference
def test_our_typed_schemas_refuse_what_the_official_ones_refuse(our_schema):
    set_authorization = _body(
        _example("dmp-examples/TD0.3_-_Mise_jour_de_l_autorisation_request.xml")
    )
    resultat = _body(_example("insi-examples/TEST_2.05.xml"))
    request = _example("insi-examples/INSi_request_with_AssertionPS.xml")
    lps = _header(request, f"{{{CTXLPS}}}ContexteLPS")
    bam = _header(request, f"{{{CTXBAM}}}ContexteBAM")
    r = f"{{{RESULTAT}}}"
    refused = [
        _mutated(set_authorization, f"{{{HAB}}}action", "MODIFIER"),
        _mutated(resultat, f"{r}CR"),
        _mutated(resultat, f"{r}INDIVIDU/{r}INSACTIF/{r}IdIndividu/{r}NumIdentifiant", "12345"),
        _mutated(resultat, f"{r}INDIVIDU/{r}TIQ/{r}DateNaissance", "01/07/2009"),
        _mutated(lps, f"{{{CTXLPS}}}Temps", "hier"),
        _mutated(bam, f"{{{CTXBAM}}}COUVERTURE"),
    ]
    lps_without_version = etree.fromstring(etree.tostring(lps))
    del lps_without_version.attrib["Version"]
    refused.append(lps_without_version)
    for element in refused:
        assert not our_schema.validate(element), etree.tostring(element)


# --- zeep reads the official examples with our WSDL ------------------------------------------


def _zeep_element(wsdl: str, tag: str):
    document = load_wsdl(wsdl_path(wsdl))
    return document.types.get_element(tag), document.types


@needs_reference
@pytest.mark.parametrize(
    "relative",
    [
        "insi-examples/TEST_2.04_cas2.xml",
        "insi-examples/TEST_2.05.xml",
        "dmp-examples/WS_INS2_rechercherInsAvecTraitsIdentite_response.xml",
    ],
)
def test_zeep_reads_the_official_resultat_examples(relative):
    body = _body(_example(relative))
    # zeep parses the replies it receives without comments (TEST_2.05 has one inside INSACTIF).
    for comment in body.xpath("//comment()"):
        comment.getparent().remove(comment)
    element, types = _zeep_element("insi/insi.wsdl", f"{{{RESULTAT}}}RESULTAT")
    result = element.parse(body, types)
    r = f"{{{RESULTAT}}}"
    assert result.CR.CodeCR == body.findtext(f"{r}CR/{r}CodeCR")
    active = body.find(f"{r}INDIVIDU/{r}INSACTIF")
    assert result.INDIVIDU.INSACTIF.IdIndividu.NumIdentifiant == active.findtext(
        f"{r}IdIndividu/{r}NumIdentifiant"
    )
    assert active.findtext(f"{r}OID") == result.INDIVIDU.INSACTIF.OID
    former = body.findall(f"{r}INDIVIDU/{r}INSHISTO")
    assert len(result.INDIVIDU.INSHISTO) == len(former)
    for parsed, raw in zip(result.INDIVIDU.INSHISTO, former, strict=True):
        # TEST_2.04 puts DateDeb/DateFin before IdIndividu: xs:all takes them in any order.
        assert parsed.IdIndividu.Cle == raw.findtext(f"{r}IdIndividu/{r}Cle")
        text = raw.findtext(f"{r}DateDeb")
        assert parsed.DateDeb == (date.fromisoformat(text) if text else None)
    assert result.INDIVIDU.TIQ.DateNaissance == body.findtext(
        f"{r}INDIVIDU/{r}TIQ/{r}DateNaissance"
    )


@needs_reference
def test_zeep_reads_the_official_set_authorization_response():
    body = _body(_example("dmp-examples/TD0.3_-_Mise_jour_de_l_autorisation_response.xml"))
    element, types = _zeep_element("dmp/habilitations.wsdl", f"{{{HAB}}}setAuthorizationResponse")
    result = element.parse(body, types)
    assert result.output.status == body.findtext(f"{{{HAB}}}output/{{{HAB}}}status")
    assert result.output.context == body.findtext(f"{{{HAB}}}output/{{{HAB}}}context")


# --- what zeep writes from our WSDL is valid against the official schemas ---------------------


def _official_inline_schema(relative: str) -> etree.XMLSchema:
    path = REFERENCE / relative
    root = parse_xml(path.read_bytes())
    schema = root.find(f"{{{WSDL_NS}}}types/{{{XSD_NS}}}schema")
    return etree.XMLSchema(etree.fromstring(etree.tostring(schema)))


def _official_xsd(relative: str) -> etree.XMLSchema:
    return etree.XMLSchema(parse_xml((REFERENCE / relative).read_bytes()))


DMP_REQUESTS = [
    ("dmp/habilitations.wsdl", "setAuthorization", {"action": "AJOUT", "role": "MEDECIN_TRAITANT"}),
    ("dmp/habilitations.wsdl", "setAuthorization", {"action": "SUPPRESSION"}),
    ("dmp/habilitations.wsdl", "listAuthorizationByPatient", {"mode": "TOUTE"}),
    (
        "dmp/patientsSpecific.wsdl",
        "patientList",
        {"startDate": "20250101000000", "dateType": "LASTDOC"},
    ),
]


@needs_reference
@pytest.mark.parametrize(("name", "operation", "body"), DMP_REQUESTS)
def test_dmp_requests_written_from_our_wsdl_are_valid_officially(name, operation, body):
    official = _official_inline_schema(OFFICIAL[name].relative_to(REFERENCE).as_posix())
    _assert_valid(official, _body(_written_by_zeep(wsdl_path(name), operation, **body)))


@needs_reference
@pytest.mark.parametrize(("name", "operation", "body"), DMP_REQUESTS)
def test_dmp_requests_written_from_the_official_wsdl_are_valid_for_us(
    our_schema, name, operation, body
):
    _assert_valid(our_schema, _body(_written_by_zeep(OFFICIAL[name], operation, **body)))


@needs_reference
def test_insi_requests_written_from_our_wsdl_are_valid_officially():
    xsd = "insi-wsdl/xsd/"
    recsans = _official_xsd(f"{xsd}ServiceIdentiteCertifiee/INSi_RECSANS_INS.xsd")
    recvitale = _official_xsd(f"{xsd}ServiceIdentiteCertifiee/INSi_RECVITALE_INS.xsd")
    bam = _official_xsd(f"{xsd}CTX/ROOT_ctxbam_CTXBAM_V01_02.xsd")
    lps = _official_xsd(f"{xsd}CTX/ROOT_ctxlps_CTXLPS_V01_00.xsd")
    wsdl = wsdl_path("insi/insi.wsdl")
    by_traits = _written_by_zeep(
        wsdl,
        "rechercherInsAvecTraitsIdentite",
        NomNaissance="ECETINSI",
        Prenom=["PIERRE-ALAIN"],
        Sexe="M",
        DateNaissance="2009-07-14",
        LieuNaissance="63220",
        _soapheaders=_context_headers(),
    )
    _assert_valid(recsans, _body(by_traits))
    _assert_valid(bam, _header(by_traits, f"{{{CTXBAM}}}ContexteBAM"))
    _assert_valid(lps, _header(by_traits, f"{{{CTXLPS}}}ContexteLPS"))
    by_card = _written_by_zeep(
        wsdl,
        "rechercherInsAvecCarteVitale",
        MatriculeIndividu={"NumIdentifiant": "1090763220834", "Cle": "89"},
        NomNaissance="ECETINSI",
        DateNaissance="2009-07-14",
        RangNaissance="1",
    )
    _assert_valid(recvitale, _body(by_card))


# --- open content: a body built with lxml travels through zeep unchanged ---------------------

CARRIED = [
    (
        "dmp-examples/TD0.2_-_Test_d_existence_request.xml",
        "dmp/patients.wsdl",
        "PatientGetDemographics_PRPA_IN201307UV02",
        "dmp-wsdl/schema/HL7V3/NE2009/multicacheschemas/PRPA_IN201307UV02.xsd",
    ),
    (
        "dmp-examples/TD3.1_-_Recherche_de_document_request.xml",
        "dmp/registry.wsdl",
        "DocumentRegistry_RegistryStoredQuery",
        "dmp-wsdl/schema/ebRS/query.xsd",
    ),
]


def _same_tree(a: etree._Element, b: etree._Element) -> bool:
    """Same names, attributes, texts and child elements, whatever the prefixes and comments."""
    children_a = list(a.iterchildren(etree.Element))
    children_b = list(b.iterchildren(etree.Element))
    return (
        a.tag == b.tag
        and dict(a.attrib) == dict(b.attrib)
        and (a.text or "").strip() == (b.text or "").strip()
        and len(children_a) == len(children_b)
        and all(_same_tree(x, y) for x, y in zip(children_a, children_b, strict=True))
    )


@needs_reference
@pytest.mark.parametrize(("relative", "name", "operation", "official_xsd"), CARRIED)
def test_an_lxml_body_travels_through_our_open_schema(relative, name, operation, official_xsd):
    original = _body(_example(relative))
    official = _schema_of([REFERENCE / official_xsd])
    _assert_valid(official, original)
    copy = etree.fromstring(etree.tostring(original))
    sent = _body(
        _written_by_zeep(wsdl_path(name), operation, _value_1=list(copy), _attr_1=dict(copy.attrib))
    )
    _assert_valid(official, sent)
    assert _same_tree(sent, original)
