"""The whole patient record (TD1.3a): legal representative, deceasedInd, birthplace, written by
TD1.1/TD1.3b, kept by the DMP stub over real mutual TLS, and shown by ``dmp consult``."""

from __future__ import annotations

import json
from dataclasses import replace

from tests.test_cli_dmp import dmp  # noqa: F401  (the fixture)
from tests.test_dmp_client import make_client
from tests.test_hl7v3 import (
    LPS,
    REPRESENTATIVE,
    assert_valid,
    demographics,
    registration,
    schemas_present,
)
from tests.test_stub_dmp import new_patient
from transport.dmp.hl7v3 import (
    HL7_NS,
    Address,
    Demographics,
    Reason,
    RegistrationRequest,
)
from transport.stubs.app import DMP_SERVICES
from transport.vihf import INS_TEST_OID

STUB_SERVICES = DMP_SERVICES
BIRTH_PLACE = Address(postal_code="63220", city="ARLANC")


def whole(person: Demographics) -> Demographics:
    return replace(
        person,
        deceased=False,
        birth_place=BIRTH_PLACE,
        legal_representatives=(REPRESENTATIVE,),
    )


def test_creation_and_update_write_the_whole_person_valid_against_the_schema():
    for reason in (Reason.CREA_RD, Reason.MODIF_DATA):
        request = RegistrationRequest.new(
            registration(reason, demographics=whole(demographics())),
            LPS,
        )
        built = request.build()
        person = built.find(f".//{{{HL7_NS}}}patientPerson")
        assert person.find(f"{{{HL7_NS}}}deceasedInd").get("value") == "false"
        holder = f"{{{HL7_NS}}}personalRelationship/{{{HL7_NS}}}relationshipHolder1"
        assert person.findtext(f"{holder}/{{{HL7_NS}}}name/{{{HL7_NS}}}family") == "REPRESENTANT"
        place = f"{{{HL7_NS}}}birthPlace/{{{HL7_NS}}}addr/{{{HL7_NS}}}postalCode"
        assert person.findtext(place) == "63220"
        assert RegistrationRequest.read(built).registration.demographics == whole(demographics())
        if schemas_present():  # the official schemas, when the machine has them
            assert_valid(built)


def test_the_stub_keeps_the_whole_record_and_consult_shows_it(stubs, dmp):  # noqa: F811
    patient = new_patient()
    with make_client(stubs) as client:
        created = client.create(patient, whole(demographics()))
        assert created.demographics is not None
        record = client.consult(patient)
    assert record.demographics == whole(demographics())

    code, out, _ = dmp("consult", "--ins", patient.ins, "--json")
    person = json.loads(out)["demographics"]
    assert code == 0 and person["deceased"] is False
    assert person["birth_place"]["postal_code"] == "63220"
    (representative,) = person["legal_representatives"]
    assert representative["relationship"] == "FTH" and representative["family"] == "REPRESENTANT"
    assert representative["telecoms"][0] == {"value": "tel:0900000000", "use": "HP"}

    code, out, _ = dmp("consult", "--ins", patient.ins)
    assert code == 0 and "born 19790328 in 63220 ARLANC" in out
    assert "legal representative (FTH): REPRESENTANT JEAN" in out
    assert "3 rue de l'Exemple Résidence 59000 LILLE" in out
    assert INS_TEST_OID not in out
