"""``cisis-transport dmp <transaction>`` against the DMP stub: every subcommand, JSON parsed, the
retrieved file byte-exact, exit codes per error family."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.test_cli import PROFILE
from tests.test_stub_dmp import new_patient
from transport.cli import main
from transport.stubs.app import DMP_SERVICES
from transport.vihf import INS_TEST_OID
from transport.xml import parse_xml

STUB_SERVICES = DMP_SERVICES


@pytest.fixture
def dmp(pki, stubs, tmp_path, monkeypatch, capsys):
    """Run ``cisis-transport dmp …`` with a profile pointing at the stub; (code, out, err)."""
    monkeypatch.setenv("TEST_P12_PASSWORD", pki.password)
    profile = tmp_path / "profile.toml"
    profile.write_text(PROFILE.format(pki=pki.directory), encoding="utf-8")

    def run(*argv: str, patient: bool = True) -> tuple[int, str, str]:
        options = ["--profile", str(profile), "--endpoint", stubs.dmp_base_url]
        code = main(["dmp", *argv, *options, *(["--ins-oid", INS_TEST_OID] if patient else [])])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_every_transaction_from_the_command_line(dmp, tmp_path: Path) -> None:
    ins = new_patient().ins
    person = ["--nom", "TESTPATIENT", "--prenom", "ALICE", "--prenom", "MARIE"]
    born = ["--sexe", "F", "--naissance", "1979-03-28"]

    assert dmp("exists", "--ins", ins)[1].strip() == "no DMP for this patient"
    code, out, _ = dmp("create", "--ins", ins, *person, *born, "--opposition", "urgence")
    assert code == 0 and out.startswith(f"created DMP {ins} (open) TESTPATIENT ALICE MARIE")
    code, out, _ = dmp("exists", "--ins", ins, "--json")
    report = json.loads(out)
    assert code == 0 and report["exists"] and report["active"]
    assert report["authorization"] == "VALIDE"
    code, out, _ = dmp("consult", "--ins", ins)
    assert "OPPOSITION_ACCES_URGENCE: yes" in out and "OPPOSITION_BRIS_DE_GLACE: no" in out
    code, out, _ = dmp("update", "--ins", ins, "--nom", "NOUVEAU", "--prenom", "ALICE", *born)
    assert code == 0 and "updated DMP" in out and "NOUVEAU" in out

    assert dmp("authorize", "--ins", ins)[1].startswith("DMPOk")
    code, out, _ = dmp("authorizations", "--ins", ins, "--json")
    assert [entry["professional_id"] for entry in json.loads(out)["entries"]] == ["899700000001"]
    code, out, _ = dmp("patients", "--json", patient=False)
    assert ins in [p["identifiers"][0]["extension"] for p in json.loads(out)["patients"]]
    code, out, _ = dmp(
        "find-patient", "--nom", "NOUVEAU", "--naissance", "1979-03-28", patient=False
    )
    assert code == 0 and ins in out

    document = tmp_path / "compte-rendu.txt"
    document.write_bytes(b"Compte rendu\r\nligne 2\r\n" + bytes(range(256)))
    code, out, _ = dmp("submit", str(document), "--ins", ins, "--json", "--raw")
    (entry,) = json.loads(out)["entries"]
    assert code == 0 and entry["size"] == document.stat().st_size
    assert entry["mime_type"] == "text/plain" and entry["title"] == "compte-rendu.txt"
    code, out, _ = dmp("search", "--ins", ins)
    assert out.startswith("1 document(s)") and entry["unique_id"] in out
    # The JSON lists what the lines list: the set's signature document only with --signatures.
    code, out, _ = dmp("search", "--ins", ins, "--json")
    assert [item["unique_id"] for item in json.loads(out)["entries"]] == [entry["unique_id"]]
    code, out, _ = dmp("search", "--ins", ins, "--json", "--signatures")
    assert len(json.loads(out)["entries"]) == 2

    copy = tmp_path / "copie.txt"
    code, out, _ = dmp(
        "retrieve", "--ins", ins, "--document-id", entry["unique_id"], "--out", str(copy)
    )
    assert code == 0 and copy.read_bytes() == document.read_bytes()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".cisis-")] == []

    for command in ("mask", "archive"):
        assert dmp(command, "--ins", ins, "--document-id", entry["unique_id"])[0] == 0
    code, out, _ = dmp("search", "--ins", ins, "--status", "archived", "--json")
    (archived,) = json.loads(out)["entries"]
    assert archived["status"].endswith("Archived") and archived["confidentiality"][-1]["code"] == (
        "MASQUE_PS"
    )

    assert dmp("close", "--ins", ins, "--nom", "NOUVEAU", "--prenom", "ALICE")[1].startswith(
        f"closed DMP {ins} (closed)"
    )
    assert dmp("reactivate", "--ins", ins, "--nom", "NOUVEAU", "--prenom", "ALICE")[0] == 0


def test_exit_codes(dmp, tmp_path: Path) -> None:
    code, _, err = dmp("consult", "--ins", new_patient().ins)
    assert code == 1 and "DMPNotFound" in err and "TD1.1" in err
    code, out, _ = dmp("consult", "--ins", new_patient().ins, "--json")
    error = json.loads(out)["error"]
    assert (error["code"], error["transaction"], error["exit_code"]) == ("DMPNotFound", "TD1.3a", 1)
    assert error["details"][0]["code"] == "DMPNotFound" and "TD1.1" in error["hint"]

    code, _, err = dmp("exists", "--ins", "123")
    assert code == 2 and "INS" in err

    code, _, err = dmp("submit", str(tmp_path / "absent.pdf"), "--ins", new_patient().ins)
    assert code == 2 and "no such file" in err

    main_code = main(
        ["dmp", "exists", "--ins", new_patient().ins, "--endpoint", "https://127.0.0.1:1/x"]
    )
    assert main_code == 3


def test_replace_from_the_command_line(dmp, tmp_path: Path) -> None:
    ins = new_patient().ins
    person = ["--nom", "TESTPATIENT", "--prenom", "ALICE", "--sexe", "F"]
    assert dmp("create", "--ins", ins, *person, "--naissance", "1979-03-28")[0] == 0
    first, second = tmp_path / "v1.txt", tmp_path / "v2.txt"
    first.write_bytes(b"version 1\r\n")
    second.write_bytes(b"version 2\r\n" + bytes(range(256)))
    code, out, _ = dmp(
        "submit", str(first), "--ins", ins, "--json", "--raw", "--signature-layout", "dmp"
    )
    (old,) = json.loads(out)["entries"]
    code, out, _ = dmp(
        "replace", "--ins", ins, "--document-id", old["unique_id"], str(second), "--raw",
        "--signature-layout", "xades-1.3.2",
    )  # fmt: skip
    assert code == 0 and out.startswith("replaced 1 document(s)")
    assert f"{old['unique_id']}  deprecated" in out
    code, out, _ = dmp("search", "--ins", ins, "--status", "approved", "--status", "deprecated",
                       "--json")  # fmt: skip
    statuses = {
        item["title"]: item["status"].rpartition(":")[2] for item in json.loads(out)["entries"]
    }
    assert statuses == {"v1.txt": "Deprecated", "v2.txt": "Approved"}
    (new,) = [item for item in json.loads(out)["entries"] if item["title"] == "v2.txt"]
    copy = tmp_path / "copy.txt"
    retrieved = dmp("retrieve", "--ins", ins, "--document-id", new["unique_id"], "--out", str(copy))
    assert retrieved[0] == 0 and copy.read_bytes() == second.read_bytes()

    # The old entry is deprecated: the registry refuses to replace it again (exit 1, one JSON).
    code, out, _ = dmp(
        "replace", "--ins", ins, "--document-id", old["unique_id"], str(first), "--json", "--raw"
    )
    assert code == 1 and json.loads(out)["error"]["code"] == "XDSRegistryMetadataError"
    code, _, err = dmp("replace", "--ins", ins, "--document-id", new["unique_id"], "absent.txt")
    assert code == 2 and "no such file" in err


PDF = b"%PDF-1.4\n% a report\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
CONSULTATION = "11488-4^2.16.840.1.113883.6.1^CR de consultation"


def test_submit_makes_and_reads_cda_documents(dmp, tmp_path: Path) -> None:
    from transport.dmp import cda

    ins = new_patient().ins
    person = ["--nom", "TESTPATIENT", "--prenom", "ALICE", "--sexe", "F"]
    assert dmp("create", "--ins", ins, *person, "--naissance", "1979-03-28")[0] == 0
    report = tmp_path / "report.pdf"
    report.write_bytes(PDF)

    # A PDF needs its type code; without it, a usage error and nothing sent.
    code, out, _ = dmp("submit", str(report), "--ins", ins, "--json")
    error = json.loads(out)["error"]
    assert code == 2 and "--type-code" in error["message"] and "--raw" in error["hint"]
    junk = tmp_path / "scan.bin"
    junk.write_bytes(bytes(range(256)))
    code, _, err = dmp("submit", str(junk), "--ins", ins)
    assert code == 2 and "neither a CDA" in err
    assert json.loads(dmp("search", "--ins", ins, "--json")[1])["entries"] == []

    code, out, _ = dmp(
        "submit", str(report), "--ins", ins, "--type-code", CONSULTATION, "--json",
        "--hidden-from-patient",
    )  # fmt: skip
    assert code == 0
    (wrapped,) = json.loads(out)["entries"]
    assert wrapped["format_code"]["code"] == "urn:ihe:iti:xds-sd:pdf:2008"
    assert wrapped["type_code"]["code"] == "11488-4" and wrapped["title"] == "report"
    assert wrapped["mime_type"] == "text/xml"
    assert [code["code"] for code in wrapped["confidentiality"]][-1] == "INVISIBLE_PATIENT"
    assert wrapped["authors"][0]["person"].startswith("899700000001^")
    # What the DMP keeps is the CDA level 1 document, its body the PDF's exact bytes.
    copy = tmp_path / "copy.xml"
    retrieved = dmp("retrieve", "--ins", ins, "--document-id", wrapped["unique_id"], "--out",
                    str(copy))  # fmt: skip
    assert retrieved[0] == 0
    header = cda.read_header(copy)
    assert header.id.unique_id == wrapped["unique_id"]
    body = parse_xml(copy.read_bytes()).findtext(".//{urn:hl7-org:v3}nonXMLBody/{*}text")
    assert base64.b64decode(body) == PDF

    # That CDA file, submitted again as a new document, is read, not wrapped.
    resubmitted = tmp_path / "resubmitted.xml"
    resubmitted.write_bytes(copy.read_bytes().replace(wrapped["unique_id"].encode(), b"1.2.3.99"))
    code, out, _ = dmp("submit", str(resubmitted), "--ins", ins, "--json")
    (read,) = json.loads(out)["entries"]
    assert code == 0 and read["unique_id"] == "1.2.3.99"
    assert read["format_code"] == wrapped["format_code"] and read["size"] == len(
        resubmitted.read_bytes()
    )

    # Visibility later: shown to the patient, masked, unmasked.
    for command in ("show-to-patient", "mask", "unmask"):
        assert dmp(command, "--ins", ins, "--document-id", wrapped["unique_id"])[0] == 0
    code, out, _ = dmp("search", "--ins", ins, "--json")
    (now,) = [
        item for item in json.loads(out)["entries"] if item["unique_id"] == wrapped["unique_id"]
    ]
    assert [code["code"] for code in now["confidentiality"]] == ["N"]
    code, out, _ = dmp("unmask", "--ins", ins, "--document-id", wrapped["unique_id"], "--json")
    assert code == 2 and "not masked" in json.loads(out)["error"]["message"]


def _consulted(dmp, ins: str) -> dict:
    code, out, _ = dmp("consult", "--ins", ins, "--json")
    assert code == 0
    return json.loads(out)


def _oppositions_of(record: dict) -> dict[str, bool]:
    return {item["code"]["code"]: item["value"] for item in record["observations"]}


def test_update_without_opposition_keeps_the_patients_oppositions(dmp) -> None:
    ins = new_patient().ins
    person = ["--nom", "OPPOSANTE", "--prenom", "JEANNE"]
    born = ["--sexe", "F", "--naissance", "1961-07-14"]
    both = ["--opposition", "bris-de-glace", "--opposition", "urgence"]
    address = ["--address", "12 RUE DES LILAS;BAT B|75011|PARIS", "--telecom", "tel:0102030405^HP"]
    assert dmp("create", "--ins", ins, *person, *born, *both, *address)[0] == 0
    expected = {"OPPOSITION_BRIS_DE_GLACE": True, "OPPOSITION_ACCES_URGENCE": True}
    assert _oppositions_of(_consulted(dmp, ins)) == expected

    # A new given name only: the oppositions, sex, birth date, address and telecom stay.
    code, _, err = dmp("update", "--ins", ins, "--nom", "OPPOSANTE", "--prenom", "JEANNETTE")
    assert code == 0, err
    record = _consulted(dmp, ins)
    assert _oppositions_of(record) == expected
    person_now = record["demographics"]
    assert person_now["given"] == ["JEANNETTE"]
    assert (person_now["sex"], person_now["birth_date"]) == ("F", "19610714")
    assert person_now["addresses"] == [
        {
            "street_lines": ["12 RUE DES LILAS", "BAT B"],
            "postal_code": "75011",
            "city": "PARIS",
            "country": None,
            "additional_locator": None,
        }
    ]
    assert person_now["telecoms"] == [{"value": "tel:0102030405", "use": "HP"}]

    # Lifting one opposition is explicit, and touches that one only.
    code, _, _ = dmp("update", "--ins", ins, *person, "--lift-opposition", "urgence")
    assert code == 0
    assert _oppositions_of(_consulted(dmp, ins)) == {
        "OPPOSITION_BRIS_DE_GLACE": True,
        "OPPOSITION_ACCES_URGENCE": False,
    }
    code, _, _ = dmp("update", "--ins", ins, *person, "--no-addresses", "--telecom", "tel:06^MC")
    person_now = _consulted(dmp, ins)["demographics"]
    assert code == 0 and person_now["addresses"] == []
    assert person_now["telecoms"] == [{"value": "tel:06", "use": "MC"}]


def test_update_refuses_contradictory_oppositions(dmp) -> None:
    ins = new_patient().ins
    code, _, err = dmp(
        "update", "--ins", ins, "--nom", "X", "--prenom", "Y",
        "--opposition", "urgence", "--lift-opposition", "urgence",
    )  # fmt: skip
    assert code == 2 and "urgence" in err


def test_dmp_commands_default_to_the_ins_authority_smoke_uses(pki, stubs, tmp_path, capsys):
    """One default INS OID: a patient made under the test authority, as smoke makes its
    patients, is the one ``dmp exists`` finds without ``--ins-oid``."""
    from transport.smoke import TEST_PATIENT

    profile = tmp_path / "profile.toml"
    profile.write_text(PROFILE.format(pki=pki.directory), encoding="utf-8")
    options = ["--profile", str(profile), "--endpoint", stubs.dmp_base_url, "--json"]
    ins = new_patient().ins
    person = ["--nom", "OID", "--prenom", "ALICE", "--sexe", "F", "--naissance", "1979-03-28"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEST_P12_PASSWORD", pki.password)
        oid = ["--ins-oid", TEST_PATIENT.oid]
        assert main(["dmp", "create", "--ins", ins, *person, *oid, *options]) == 0
        capsys.readouterr()
        assert main(["dmp", "exists", "--ins", ins, *options]) == 0
    assert json.loads(capsys.readouterr().out)["exists"] is True


def test_documents_retrieved_into_a_folder_are_named_after_them(pki, stubs, tmp_path) -> None:
    from transport import DmpClient, example_profile
    from transport.dmp.hl7v3 import Demographics
    from transport.vihf import AuthMode

    profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": stubs.dmp_base_url})
    patient = new_patient()
    with DmpClient.from_profile(profile) as client:
        client.create(patient, Demographics("NOMME", ("ALICE",), sex="F", birth_date="19790328"))
        documents = [
            client.document(patient, b"%PDF-1.4\n", title="a", mime_type="application/pdf"),
            client.document(patient, b"<a/>", title="b", mime_type="text/xml"),
            client.document(patient, b"\x00\x01", title="c", mime_type="application/x-unknown"),
        ]
        client.submit(documents)
        found = client.find_documents(patient).documents
        folder = tmp_path / "downloads"
        folder.mkdir()
        (folder / "keep.txt").write_text("mine", encoding="utf-8")
        moves: list[tuple[int, int | None]] = []
        first = client.retrieve(
            patient,
            found,
            directory=folder,
            progress=lambda done, whole: moves.append((done, whole)),
        )
        second = client.retrieve(patient, found, directory=folder)  # the names are taken now
    extension = {"application/pdf": ".pdf", "text/xml": ".xml", "application/x-unknown": ".bin"}
    for document in first.documents:
        assert document.path is not None
        assert document.path.name == document.document_unique_id + extension[document.mime_type]
    for document in second.documents:
        assert document.path is not None
        assert (
            document.path.name
            == document.document_unique_id + "-1" + (extension[document.mime_type])
        )
        assert document.read_bytes() == next(
            d.read_bytes()
            for d in first.documents
            if d.document_unique_id == document.document_unique_id
        )
    assert (folder / "keep.txt").read_text(encoding="utf-8") == "mine"
    # Progress reports the download alone: one transfer, growing, never the request's upload.
    assert moves and [done for done, _ in moves] == sorted(done for done, _ in moves)
    assert len({whole for _, whole in moves}) == 1
    assert not [path for path in folder.iterdir() if path.suffix == ".part"]


def test_access_modes_and_the_ins_override_from_the_command_line(dmp, stubs) -> None:
    from tests.test_dmp_client import COLLEAGUE, make_client
    from tests.test_hl7v3 import demographics

    patient = new_patient()
    with make_client(stubs, subject=COLLEAGUE) as colleague:
        colleague.create(patient, demographics())
    code, out, _ = dmp("consult", "--ins", patient.ins, "--json")
    assert code == 1 and json.loads(out)["error"]["code"] == "DMPAccessDenied"
    code, out, _ = dmp("consult", "--ins", patient.ins, "--access", "break-glass", "--json")
    assert code == 2 and "--reason" in json.loads(out)["error"]["message"]
    code, _, _ = dmp("consult", "--ins", patient.ins, "--reason", "why", "--json")
    assert code == 2
    reason = ["--reason", "unconscious patient"]
    code, out, _ = dmp("consult", "--ins", patient.ins, "--access", "break-glass", *reason)
    assert code == 0 and out.startswith(f"found DMP {patient.ins}")
    (recorded,) = stubs.context.patients.emergency_accesses(patient)
    assert recorded.reason == "unconscious patient" and recorded.mode.value == "bris_de_glace"

    live = "181036322045660"  # the INSi qualification identity: its key fails mod-97
    code, out, _ = dmp("exists", "--ins", live, "--json")
    assert code == 2 and "key" in json.loads(out)["error"]["message"] and live not in out
    code, out, _ = dmp("exists", "--ins", live, "--ins-unchecked", "--json")
    assert code == 0 and "exists" in json.loads(out)
