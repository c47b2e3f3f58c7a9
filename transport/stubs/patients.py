"""The DMP stub's patient registry: which DMPs exist, their status, and who is authorized on them.

Shared by the patient-management services (HL7v3, habilitations, patientsSpecific) and the XDS
registry and repository, which refuse documents of a patient whose DMP is not open. Times are
stored as :func:`now_text` writes them. Writes take the caller's connection, inside its
:meth:`transport.stubs.store.Database.transaction`.

Emergency accesses (:meth:`PatientRegistry.read_access`): a read made in the VIHF purpose of use
``bris_de_glace`` or ``centre_15`` (TRE_R248 ModeAcces) by a professional with no authorization
on an open DMP is let through unless the patient opposed that mode (the TD1.1/TD1.3b
observations ``OPPOSITION_BRIS_DE_GLACE``, ``OPPOSITION_ACCES_URGENCE``); the access is recorded
(mode, reason, time) and the professional becomes authorized, so that TD1.6, whose schema has no
access-mode field, lists them like any authorized professional, from the access's time. A
professional the patient blocked stays blocked in every mode.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from transport.dmp.hl7v3 import Author
from transport.stubs.store import Database
from transport.vihf import DmpAccessMode, Patient, Vihf, format_instant
from transport.xml import read_datetime

SCHEMA = """
CREATE TABLE IF NOT EXISTS dmp_patients (
    ins TEXT NOT NULL,
    oid TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    demographics TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    closed_at TEXT,
    close_reason TEXT,
    last_document_at TEXT,
    PRIMARY KEY (ins, oid)
);
-- The table keeps its first spelling: renaming it would orphan the rows of existing data dirs.
CREATE TABLE IF NOT EXISTS dmp_authorisations (
    ins TEXT NOT NULL,
    oid TEXT NOT NULL,
    professional TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('VALIDE', 'INTERDIT')),
    professional_name TEXT,
    updated_at TEXT NOT NULL,
    created_at TEXT,
    treating_physician INTEGER NOT NULL DEFAULT 0 CHECK (treating_physician IN (0, 1)),
    speciality_code TEXT,
    speciality_label TEXT,
    PRIMARY KEY (ins, oid, professional),
    FOREIGN KEY (ins, oid) REFERENCES dmp_patients (ins, oid)
);
CREATE TABLE IF NOT EXISTS dmp_emergency_accesses (
    ins TEXT NOT NULL,
    oid TEXT NOT NULL,
    professional TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('bris_de_glace', 'centre_15')),
    reason TEXT,
    accessed_at TEXT NOT NULL,
    FOREIGN KEY (ins, oid) REFERENCES dmp_patients (ins, oid)
);
"""

EMERGENCY_OPPOSITIONS = {
    DmpAccessMode.BREAK_GLASS: "OPPOSITION_BRIS_DE_GLACE",
    DmpAccessMode.EMERGENCY_CENTER: "OPPOSITION_ACCES_URGENCE",
}
"""The opposition (TD1.3a ``administrativeObservation``) that shuts out each emergency mode."""


class DmpStatus(enum.StrEnum):
    """The state of a patient's DMP in the stub."""

    ABSENT = "absent"
    OPEN = "open"
    CLOSED = "closed"


class Authorization(enum.StrEnum):
    """A professional's authorization on a DMP (TD0.2 ``AUTORISATION``, TD1.6 lists)."""

    VALID = "VALIDE"
    FORBIDDEN = "INTERDIT"
    ABSENT = "NON_EXISTE"


def now_text() -> str:
    """The current UTC time as the stub stores it (ISO 8601, milliseconds, ``Z``)."""
    return format_instant(datetime.now(UTC))


def parse_time(text: str) -> datetime:
    """A time stored by :func:`now_text`, as an aware UTC datetime."""
    return read_datetime(text, "stored time")


@dataclass(frozen=True)
class DmpRecord:
    """One patient's DMP: status, administrative data (a JSON object) and its dates.

    ``close_reason`` is the code given when it was last closed; ``last_document_at`` the time a
    document was last added (see :meth:`PatientRegistry.record_document`).
    """

    patient: Patient
    status: DmpStatus
    demographics: Mapping[str, Any]
    created_at: str
    updated_at: str
    closed_at: str | None = None
    close_reason: str | None = None
    last_document_at: str | None = None


@dataclass(frozen=True)
class AuthorizationRecord:
    """One professional's authorization on one DMP, as stored.

    ``speciality``: ``(code, label)`` such as ``("G15_10/SM26", "Médecin - …")``, or None.
    ``created_at``: when the authorization was first recorded.
    """

    patient: Patient
    professional: str
    status: Authorization
    professional_name: str | None
    speciality: tuple[str, str] | None
    treating_physician: bool
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class EmergencyAccess:
    """One recorded emergency access: who, in which mode, the reason they gave, when."""

    patient: Patient
    professional: str
    mode: DmpAccessMode
    reason: str | None
    accessed_at: str


def speciality(vihf: Vihf) -> tuple[str, str] | None:
    """The caller's ``(G15_<profession>/<specialty>, label)`` from the VIHF roles, as TD1.6
    lists it."""
    role = Author.from_vihf(vihf, "").role
    return (role.code, role.display_name) if role is not None else None


def opposed(record: DmpRecord, mode: DmpAccessMode) -> bool:
    """Whether the patient opposed access in ``mode`` (the standing observations stored with
    the DMP)."""
    opposition = EMERGENCY_OPPOSITIONS.get(mode)
    return any(
        item.get("code") == opposition and bool(item.get("value"))
        for item in record.demographics.get("observations", ())
    )


def _dmp(row: sqlite3.Row) -> DmpRecord:
    return DmpRecord(
        Patient(row["ins"], row["oid"]),
        DmpStatus(row["status"]),
        json.loads(row["demographics"]),
        row["created_at"],
        row["updated_at"],
        row["closed_at"],
        row["close_reason"],
        row["last_document_at"],
    )


def _authorization(row: sqlite3.Row) -> AuthorizationRecord:
    code, label = row["speciality_code"], row["speciality_label"]
    return AuthorizationRecord(
        Patient(row["ins"], row["oid"]),
        row["professional"],
        Authorization(row["status"]),
        row["professional_name"],
        (code, label or "") if code else None,
        bool(row["treating_physician"]),
        row["created_at"] or row["updated_at"],
        row["updated_at"],
    )


class PatientRegistry:
    """The two tables above, over the stubs' database."""

    def __init__(self, database: Database) -> None:
        self.database = database
        database.ensure(SCHEMA)

    def status(self, patient: Patient) -> DmpStatus:
        """Whether the patient's DMP is absent, open or closed."""
        rows = self.database.query(
            "SELECT status FROM dmp_patients WHERE ins = ? AND oid = ?", (patient.ins, patient.oid)
        )
        return DmpStatus(rows[0]["status"]) if rows else DmpStatus.ABSENT

    def demographics(self, patient: Patient) -> Mapping[str, Any]:
        """The administrative data stored with the DMP (empty when absent)."""
        rows = self.database.query(
            "SELECT demographics FROM dmp_patients WHERE ins = ? AND oid = ?",
            (patient.ins, patient.oid),
        )
        return json.loads(rows[0]["demographics"]) if rows else {}

    def authorization(self, patient: Patient, professional: str) -> Authorization:
        """The professional's (VIHF NameID) authorization on the patient's DMP."""
        rows = self.database.query(
            "SELECT status FROM dmp_authorisations WHERE ins = ? AND oid = ? AND professional = ?",
            (patient.ins, patient.oid, professional),
        )
        return Authorization(rows[0]["status"]) if rows else Authorization.ABSENT

    def record(self, patient: Patient) -> DmpRecord | None:
        """The patient's DMP, or None when there is none."""
        rows = self.database.query(
            "SELECT * FROM dmp_patients WHERE ins = ? AND oid = ?", (patient.ins, patient.oid)
        )
        return _dmp(rows[0]) if rows else None

    def records(self, status: DmpStatus) -> list[DmpRecord]:
        """Every DMP in ``status`` (open or closed), oldest first."""
        rows = self.database.query(
            "SELECT * FROM dmp_patients WHERE status = ? ORDER BY created_at", (status.value,)
        )
        return [_dmp(row) for row in rows]

    def create(
        self, connection: sqlite3.Connection, patient: Patient, demographics: Mapping[str, Any]
    ) -> None:
        """Open a DMP for a patient who has none."""
        now = now_text()
        connection.execute(
            "INSERT INTO dmp_patients (ins, oid, status, demographics, created_at, updated_at)"
            " VALUES (?, ?, 'open', ?, ?, ?)",
            (patient.ins, patient.oid, json.dumps(demographics), now, now),
        )

    def reactivate(self, connection: sqlite3.Connection, patient: Patient) -> None:
        """Open again a closed DMP (its close reason and date stay as history)."""
        connection.execute(
            "UPDATE dmp_patients SET status = 'open', updated_at = ? WHERE ins = ? AND oid = ?",
            (now_text(), patient.ins, patient.oid),
        )

    def update(
        self, connection: sqlite3.Connection, patient: Patient, demographics: Mapping[str, Any]
    ) -> None:
        """Replace the administrative data of a DMP."""
        connection.execute(
            "UPDATE dmp_patients SET demographics = ?, updated_at = ? WHERE ins = ? AND oid = ?",
            (json.dumps(demographics), now_text(), patient.ins, patient.oid),
        )

    def close(self, connection: sqlite3.Connection, patient: Patient, reason: str | None) -> None:
        """Close a DMP, keeping the reason (a code such as ``FERMETURE_DEMANDE_PATIENT``)."""
        now = now_text()
        connection.execute(
            "UPDATE dmp_patients SET status = 'closed', closed_at = ?, close_reason = ?,"
            " updated_at = ? WHERE ins = ? AND oid = ?",
            (now, reason, now, patient.ins, patient.oid),
        )

    def record_document(self, connection: sqlite3.Connection, patient: Patient) -> None:
        """Note that a document was just added to the DMP (TD0.4 ``LASTDOC`` filters on it)."""
        connection.execute(
            "UPDATE dmp_patients SET last_document_at = ? WHERE ins = ? AND oid = ?",
            (now_text(), patient.ins, patient.oid),
        )

    def read_access(self, patient: Patient, vihf: Vihf) -> Authorization:
        """The caller's authorization for a read under the VIHF's purpose of use: their stored
        one, or VALID when an emergency mode lets them in (recorded, see the module's
        docstring)."""
        professional = vihf.subject_id
        authorization = self.authorization(patient, professional)
        mode = vihf.purpose_of_use.code
        if authorization is not Authorization.ABSENT or mode not in EMERGENCY_OPPOSITIONS:
            return authorization
        record = self.record(patient)
        if record is None or record.status is not DmpStatus.OPEN:
            return authorization
        chosen = DmpAccessMode(mode)
        if opposed(record, chosen):
            return authorization
        with self.database.transaction() as connection:
            connection.execute(
                "INSERT INTO dmp_emergency_accesses (ins, oid, professional, mode, reason,"
                " accessed_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    patient.ins,
                    patient.oid,
                    professional,
                    chosen.value,
                    vihf.purpose_of_use.original_text,
                    now_text(),
                ),
            )
            self.set_authorization(
                connection,
                patient,
                professional,
                Authorization.VALID,
                vihf.user_name,
                speciality=speciality(vihf),
            )
        return Authorization.VALID

    def emergency_accesses(self, patient: Patient) -> list[EmergencyAccess]:
        """Every emergency access recorded on the patient's DMP, oldest first."""
        rows = self.database.query(
            "SELECT * FROM dmp_emergency_accesses WHERE ins = ? AND oid = ?"
            " ORDER BY accessed_at, rowid",
            (patient.ins, patient.oid),
        )
        return [
            EmergencyAccess(
                Patient(row["ins"], row["oid"]),
                row["professional"],
                DmpAccessMode(row["mode"]),
                row["reason"],
                row["accessed_at"],
            )
            for row in rows
        ]

    def authorization_record(
        self, patient: Patient, professional: str
    ) -> AuthorizationRecord | None:
        """The professional's stored authorization on the DMP, or None."""
        rows = self.database.query(
            "SELECT * FROM dmp_authorisations WHERE ins = ? AND oid = ? AND professional = ?",
            (patient.ins, patient.oid, professional),
        )
        return _authorization(rows[0]) if rows else None

    def authorizations_on(self, patient: Patient) -> list[AuthorizationRecord]:
        """Every professional authorized on or blocked from the patient's DMP, oldest first."""
        rows = self.database.query(
            "SELECT * FROM dmp_authorisations WHERE ins = ? AND oid = ?"
            " ORDER BY created_at, professional",
            (patient.ins, patient.oid),
        )
        return [_authorization(row) for row in rows]

    def authorizations_of(self, professional: str) -> list[AuthorizationRecord]:
        """Every DMP the professional is authorized on or blocked from, oldest first."""
        rows = self.database.query(
            "SELECT * FROM dmp_authorisations WHERE professional = ? ORDER BY created_at, ins",
            (professional,),
        )
        return [_authorization(row) for row in rows]

    def set_authorization(
        self,
        connection: sqlite3.Connection,
        patient: Patient,
        professional: str,
        status: Authorization,
        professional_name: str | None = None,
        *,
        speciality: tuple[str, str] | None = None,
    ) -> None:
        """Record an authorization inside the caller's transaction (ABSENT removes it).

        ``speciality``: the professional's ``(code, label)``, kept when None is given.
        """
        if status is Authorization.ABSENT:
            connection.execute(
                "DELETE FROM dmp_authorisations WHERE ins = ? AND oid = ? AND professional = ?",
                (patient.ins, patient.oid, professional),
            )
            return
        code, label = speciality or (None, None)
        now = now_text()
        connection.execute(
            "INSERT INTO dmp_authorisations (ins, oid, professional, status, professional_name,"
            " updated_at, created_at, speciality_code, speciality_label)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (ins, oid, professional) DO UPDATE SET status = excluded.status,"
            " professional_name = excluded.professional_name, updated_at = excluded.updated_at,"
            " speciality_code = coalesce(excluded.speciality_code, speciality_code),"
            " speciality_label = coalesce(excluded.speciality_label, speciality_label)",
            (
                patient.ins,
                patient.oid,
                professional,
                status.value,
                professional_name,
                now,
                now,
                code,
                label,
            ),
        )

    def set_treating_physician(
        self, connection: sqlite3.Connection, patient: Patient, professional: str, value: bool
    ) -> None:
        """Make the professional the DMP's treating doctor (the only one), or not; they must
        already be recorded on it."""
        if value:
            connection.execute(
                "UPDATE dmp_authorisations SET treating_physician = 0"
                " WHERE ins = ? AND oid = ? AND professional != ?",
                (patient.ins, patient.oid, professional),
            )
        connection.execute(
            "UPDATE dmp_authorisations SET treating_physician = ?, updated_at = ?"
            " WHERE ins = ? AND oid = ? AND professional = ?",
            (int(value), now_text(), patient.ins, patient.oid, professional),
        )
