"""Access as practice really happens, against the real stubs over mutual TLS: the emergency
purposes of use (break-glass, emergency centre) and the patient's oppositions, what TD1.6 then
lists, and an INS the INSi returned (its key failing the mod-97 check) used for DMP calls."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.test_dmp_client import COLLEAGUE, make_client, opened
from tests.test_hl7v3 import demographics
from tests.test_insi_client import make_client as make_insi_client
from tests.test_stub_dmp import new_patient
from tests.test_stub_xds import entry
from transport.dmp.client import DmpClient, Document
from transport.dmp.hl7v3 import OPPOSITION_BREAK_GLASS, OPPOSITION_EMERGENCY, Observation
from transport.errors import DmpError, ValidationError, VihfValidationError, XdsError
from transport.stubs.app import SERVICES, Stubs
from transport.teleservices.insi import InsiClient
from transport.vihf import (
    BREAK_GLASS_ACCESS,
    INS_TEST_OID,
    SAML,
    DmpAccess,
    DmpAccessMode,
    Patient,
    build_assertion,
    read_vihf,
    validate_ins,
)

STUB_SERVICES = list(SERVICES)
BREAK_GLASS = DmpAccess(DmpAccessMode.BREAK_GLASS, "patient unconscious in the emergency room")
EMERGENCY_CENTER = DmpAccess(DmpAccessMode.EMERGENCY_CENTER)
OPPOSITION_OF = {
    DmpAccessMode.BREAK_GLASS: OPPOSITION_BREAK_GLASS,
    DmpAccessMode.EMERGENCY_CENTER: OPPOSITION_EMERGENCY,
}
LIVE_INS_WITH_A_BAD_KEY = "181036322045660"


@pytest.fixture(scope="module")
def owner(stubs: Stubs) -> Iterator[DmpClient]:
    with make_client(stubs) as made:
        yield made


@pytest.fixture(scope="module")
def stranger(stubs: Stubs) -> Iterator[DmpClient]:
    """A professional authorized on none of the patients the tests open."""
    with make_client(stubs, subject=COLLEAGUE) as made:
        yield made


def opened_with(owner: DmpClient, **opposed: bool) -> Patient:
    """A new open DMP whose patient opposed the modes named True (break_glass, emergency)."""
    patient = new_patient()
    oppositions = (
        Observation(OPPOSITION_BREAK_GLASS, opposed.get("break_glass", False)),
        Observation(OPPOSITION_EMERGENCY, opposed.get("emergency", False)),
    )
    owner.create(patient, demographics(), oppositions=oppositions)
    return patient


# --- the VIHF ------------------------------------------------------------------------------------


def test_the_purpose_of_use_and_the_break_glass_reason_travel_in_the_vihf(owner: DmpClient):
    vihf = BREAK_GLASS.applied(owner.identity).with_patient(new_patient())
    assertion = build_assertion(vihf, "CN=issuer")
    purpose = assertion.find(".//{urn:hl7-org:v3}PurposeOfUse")
    assert purpose.get("code") == "bris_de_glace"
    assert purpose.get("codeSystem") == "1.2.250.1.213.1.1.4.248"
    assert purpose.findtext("{urn:hl7-org:v3}originalText") == BREAK_GLASS.reason
    back = read_vihf(assertion)
    assert back.purpose_of_use == BREAK_GLASS.purpose_of_use
    assert back.purpose_of_use.code == BREAK_GLASS_ACCESS.code
    assert back.confidentiality_code is None
    assert assertion.find(SAML("AttributeStatement")) is not None


def test_a_secret_connection_carries_the_confidentiality_code(owner: DmpClient):
    vihf = DmpAccess(secret=True).applied(owner.identity)
    back = read_vihf(build_assertion(vihf, "CN=issuer"))
    assert back.confidentiality_code is not None
    assert back.confidentiality_code.code == "INVISIBLE_REPRESENTANTS_LEGAUX"
    assert back.purpose_of_use.code == "normal"


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_break_glass_access_records_its_reason(reason):
    with pytest.raises(VihfValidationError, match="reason"):
        DmpAccess(DmpAccessMode.BREAK_GLASS, reason)


# --- the stub's rules ----------------------------------------------------------------------------


def test_normal_access_without_authorization_is_still_refused(owner, stranger, stubs):
    patient = opened_with(owner)
    with pytest.raises(DmpError) as refused:
        stranger.consult(patient)
    assert refused.value.code == "DMPAccessDenied"
    assert stubs.context.patients.emergency_accesses(patient) == []


@pytest.mark.parametrize("access", [BREAK_GLASS, EMERGENCY_CENTER], ids=lambda a: a.mode.value)
def test_an_emergency_mode_reads_unopposed_records_and_is_recorded_and_listed(
    owner, stranger, stubs, access
):
    # The other mode's opposition does not shut this one out.
    other = "emergency" if access.mode is DmpAccessMode.BREAK_GLASS else "break_glass"
    patient = opened_with(owner, **{other: True})
    record = stranger.with_access(access).consult(patient)
    assert record.patient == patient
    recorded = stubs.context.patients.emergency_accesses(patient)
    assert [(item.professional, item.mode, item.reason) for item in recorded] == [
        (COLLEAGUE, access.mode, access.reason)
    ]
    listed = {item.professional_id: item for item in owner.list_authorizations(patient).entries}
    assert COLLEAGUE in listed and listed[COLLEAGUE].mode.value == "ACTIVE"


@pytest.mark.parametrize("access", [BREAK_GLASS, EMERGENCY_CENTER], ids=lambda a: a.mode.value)
def test_an_emergency_mode_the_patient_opposed_is_refused_and_not_recorded(
    owner, stranger, stubs, access
):
    opposed = "break_glass" if access.mode is DmpAccessMode.BREAK_GLASS else "emergency"
    patient = opened_with(owner, **{opposed: True})
    with pytest.raises(DmpError) as refused:
        stranger.with_access(access).consult(patient)
    assert refused.value.code == "DMPAccessDenied"
    assert stubs.context.patients.emergency_accesses(patient) == []
    listed = [item.professional_id for item in owner.list_authorizations(patient).entries]
    assert COLLEAGUE not in listed


def test_break_glass_finds_and_retrieves_the_documents(owner, stranger, stubs):
    patient = opened(owner)
    content = b"compte rendu d'urgence\n"
    owner.submit([Document(entry(content, patient), content)], sign=False)
    with pytest.raises(XdsError):
        stranger.find_documents(patient)
    urgent = stranger.with_access(BREAK_GLASS)
    found = urgent.find_documents(patient)
    assert len(found.documents) == 1
    retrieved = urgent.retrieve(patient, found.documents)
    assert retrieved.complete and retrieved.documents[0].read_bytes() == content
    assert [item.mode for item in stubs.context.patients.emergency_accesses(patient)] == [
        DmpAccessMode.BREAK_GLASS
    ]


def test_with_access_leaves_the_original_client_normal(owner, stranger):
    urgent = stranger.with_access(BREAK_GLASS)
    assert urgent.identity.purpose_of_use.code == "bris_de_glace"
    assert stranger.identity.purpose_of_use.code == "normal"
    assert urgent.channel is stranger.channel


# --- an INS as INSi returned it ------------------------------------------------------------


def test_a_typed_ins_with_a_wrong_key_is_refused_before_sending(owner):
    with pytest.raises(VihfValidationError, match="key"):
        owner.consult(Patient(LIVE_INS_WITH_A_BAD_KEY, INS_TEST_OID))


def test_an_ins_as_returned_only_warns_and_the_warning_names_no_ins(caplog):
    with caplog.at_level(logging.WARNING, logger="transport.vihf"):
        validate_ins(Patient(LIVE_INS_WITH_A_BAD_KEY, INS_TEST_OID, as_returned=True))
    assert "key check" in caplog.text
    assert LIVE_INS_WITH_A_BAD_KEY not in caplog.text
    assert LIVE_INS_WITH_A_BAD_KEY[:13] not in caplog.text


def test_the_ins_the_insi_stub_returns_goes_through_to_the_dmp_stub(pki, load, stubs, owner):
    with make_insi_client(pki, load, stubs) as teleservices:
        outcome = InsiClient(teleservices).search_by_traits("HERMANN", "GATIEN", "M", "1981-03-24")
    assert outcome.code == "00" and outcome.active is not None
    assert outcome.active.value == LIVE_INS_WITH_A_BAD_KEY  # as the live service sends it
    patient = outcome.active.patient
    assert patient.as_returned
    if owner.exists(patient).exists:  # the module's stubs may already hold it
        record = owner.consult(patient)
    else:
        record = owner.create(patient, demographics())
    assert record.patient.ins == LIVE_INS_WITH_A_BAD_KEY
    assert owner.consult(patient).patient.ins == LIVE_INS_WITH_A_BAD_KEY


def test_a_patient_equals_itself_whatever_its_origin():
    typed = Patient(LIVE_INS_WITH_A_BAD_KEY, INS_TEST_OID)
    assert typed == Patient(LIVE_INS_WITH_A_BAD_KEY, INS_TEST_OID, as_returned=True)
    with pytest.raises(ValidationError):
        validate_ins(typed)


def test_a_secret_connection_hides_what_it_submits_from_legal_representatives(owner):
    patient = opened(owner)
    content = b"consultation confidentielle\n"
    secret = owner.with_access(DmpAccess(secret=True))
    sent = secret.submit([Document(entry(content, patient), content)], sign=False)
    plain = b"compte rendu ordinaire\n"
    owner.submit([Document(entry(plain, patient), plain)], sign=False)
    found = {item.unique_id: item for item in owner.find_documents(patient).documents}
    codes = {uid: {code.code for code in item.confidentiality} for uid, item in found.items()}
    hidden = codes.pop(sent.entries[0].unique_id)
    assert "INVISIBLE_REPRESENTANTS_LEGAUX" in hidden
    (others,) = codes.values()
    assert "INVISIBLE_REPRESENTANTS_LEGAUX" not in others
