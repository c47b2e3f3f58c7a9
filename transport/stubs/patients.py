"""The DMP stub's patient registry: which DMPs exist, their status, and who is authorised on them.

Shared by the patient-management services (HL7v3, habilitations, patientsSpecific) and the XDS
registry and repository, which refuse documents of a patient whose DMP is not open.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..vihf import Patient
from .store import Database

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
    PRIMARY KEY (ins, oid)
);
CREATE TABLE IF NOT EXISTS dmp_authorisations (
    ins TEXT NOT NULL,
    oid TEXT NOT NULL,
    professional TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('VALIDE', 'INTERDIT')),
    professional_name TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (ins, oid, professional),
    FOREIGN KEY (ins, oid) REFERENCES dmp_patients (ins, oid)
);
"""


class DmpStatus(enum.StrEnum):
    """The state of a patient's DMP in the stub."""

    ABSENT = "absent"
    OPEN = "open"
    CLOSED = "closed"


class Authorisation(enum.StrEnum):
    """A professional's authorisation on a DMP (TD0.2 ``AUTORISATION``, TD1.6 lists)."""

    VALID = "VALIDE"
    FORBIDDEN = "INTERDIT"
    ABSENT = "NON_EXISTE"


def now_text() -> str:
    """The current UTC time as the stub stores it (ISO 8601, milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    def authorisation(self, patient: Patient, professional: str) -> Authorisation:
        """The professional's (VIHF NameID) authorisation on the patient's DMP."""
        rows = self.database.query(
            "SELECT status FROM dmp_authorisations WHERE ins = ? AND oid = ? AND professional = ?",
            (patient.ins, patient.oid, professional),
        )
        return Authorisation(rows[0]["status"]) if rows else Authorisation.ABSENT

    def set_authorisation(
        self,
        connection: sqlite3.Connection,
        patient: Patient,
        professional: str,
        status: Authorisation,
        professional_name: str | None = None,
    ) -> None:
        """Record an authorisation inside the caller's transaction (ABSENT removes it)."""
        if status is Authorisation.ABSENT:
            connection.execute(
                "DELETE FROM dmp_authorisations WHERE ins = ? AND oid = ? AND professional = ?",
                (patient.ins, patient.oid, professional),
            )
            return
        connection.execute(
            "INSERT INTO dmp_authorisations"
            " (ins, oid, professional, status, professional_name, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (ins, oid, professional) DO UPDATE SET status = excluded.status,"
            " professional_name = excluded.professional_name, updated_at = excluded.updated_at",
            (patient.ins, patient.oid, professional, status.value, professional_name, now_text()),
        )
