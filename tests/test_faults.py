"""Faults injected into the stub: SIGKILL during a submission (mid-upload, mid-decode, once the
content is stored, after the answer), during a TD1.1 and a TD0.3 write, then a restart on the same
data directory; and a full disk under the data directory.

After each kill the store must be whole: an acknowledged write is there (documents byte-exact), a
write is never half made (no row without its blob, no blob without its row, no temporary file
left). A write the stub committed but could not acknowledge before dying may be there too: no
system can tell its caller about a commit it dies right after; it must then be whole as well.

The full disk is a 2 MB tmpfs mounted over the data directory when the test runs as root (as in
CI); elsewhere a ``RLIMIT_FSIZE`` of 2 MB on the stub's child process stands in for it (the
failing write then raises ``EFBIG`` instead of ``ENOSPC``; the stub's path is the same).
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests.test_hl7v3 import demographics, oppositions
from transport import examplepki
from transport.config import example_profile
from transport.dmp.client import DmpClient, Document
from transport.errors import CisisError, SoapFault
from transport.stubs.store import DATABASE_NAME
from transport.vihf import INS_TEST_OID, AuthMode, Patient, ins_key

CHILD = """
import sys
from pathlib import Path
from transport import examplepki
from transport.stubs.app import DMP_SERVICES, Stubs

stubs = Stubs(pki=examplepki.load(sys.argv[1]), data_dir=Path(sys.argv[2]), services=DMP_SERVICES)
print(stubs.dmp_base_url, flush=True)
stubs.serve_forever()
"""
BIG = 48 * 1024 * 1024
COLLEAGUE = "899700000002"
_serial = iter(range(10**6))


def new_patient() -> Patient:
    """A fresh test INS, unique across this module's runs (the pid keeps processes apart)."""
    body = f"27903{os.getpid() % 100:02d}{next(_serial):06d}"
    return Patient(body + ins_key(body), INS_TEST_OID)


@dataclass
class Child:
    """The stub served by a child process on ``data``; ``limit``: its RLIMIT_FSIZE in bytes."""

    pki: examplepki.ExamplePKI
    data: Path
    limit: int | None = None
    process: subprocess.Popen[str] | None = field(default=None, repr=False)
    url: str = ""

    def start(self) -> Child:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(self.pki.directory), str(self.data)],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=self._limit if self.limit else None,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("https://"), "the stub did not start"
        return self

    def _limit(self) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.limit))
        # Past the limit the write fails with EFBIG instead of killing the stub.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def client(self, subject: str | None = None) -> DmpClient:
        """A DMP client of the example doctor (or of the professional ``subject``)."""
        profile = example_profile(self.pki, AuthMode.INDIRECTE, {"dmp": self.url})
        if subject is not None:
            profile = replace(profile, identity=replace(profile.identity, subject_id=subject))
        return DmpClient.from_profile(profile)


@pytest.fixture
def child(pki: examplepki.ExamplePKI, tmp_path: Path) -> Iterator[Child]:
    running = Child(pki, tmp_path / "data")
    yield running
    if running.process is not None and running.process.poll() is None:
        running.kill()


@dataclass
class Outcome:
    """What a call in a thread gave: its result, or the project exception it raised."""

    result: object = None
    error: CisisError | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def acknowledged(self) -> bool:
        return self.done.is_set() and self.error is None


def in_thread(call: Callable[[], object]) -> Outcome:
    outcome = Outcome()

    def run() -> None:
        try:
            outcome.result = call()
        except CisisError as error:
            outcome.error = error
        finally:
            outcome.done.set()

    threading.Thread(target=run, daemon=True).start()
    return outcome


def wait_for(condition: Callable[[], bool], outcome: Outcome) -> None:
    """Poll until ``condition`` holds or the call ended (then the kill lands after it)."""
    while not condition() and not outcome.done.is_set():
        time.sleep(0.001)


def files(directory: Path, pattern: str) -> list[Path]:
    return (
        [path for path in directory.glob(pattern) if path.is_file()] if directory.exists() else []
    )


def decoding(child: Child) -> bool:
    """Whether the stub has begun a document's file: the request's MTOM body is decoded as it
    arrives, each part straight into its file on the store's file system."""
    return bool(files(child.data / "documents" / ".incoming", "*/*"))


def uploading(child: Child) -> bool:
    """Whether a document's bytes are arriving: its file holds some, not yet stored."""
    return any(
        path.stat().st_size > 0 for path in files(child.data / "documents" / ".incoming", "*/*")
    )


def stored(child: Child) -> bool:
    return bool(files(child.data / "documents", "??/*"))


def rows(data: Path, sql: str, parameters: tuple[str, ...] = ()) -> list[tuple]:
    with closing(sqlite3.connect(data / DATABASE_NAME)) as connection:
        return connection.execute(sql, parameters).fetchall()


def assert_store_whole(data: Path) -> None:
    """Every row names a blob holding its bytes, every blob is named, no temporary file is left."""
    documents = data / "documents"
    named = {sha for (sha,) in rows(data, "SELECT sha256 FROM xds_documents")}
    blobs = {path.name: path for path in files(documents, "??/*")}
    assert set(blobs) == named
    for sha, path in blobs.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert not files(documents, ".incoming-*")
    assert not list((documents / ".incoming").glob("*"))


def big_document(client: DmpClient, patient: Patient, path: Path) -> Document:
    path.write_bytes(os.urandom(BIG))
    return client.document(patient, path, title="Compte rendu", mime_type="application/pdf")


def opened(client: DmpClient) -> Patient:
    patient = new_patient()
    client.create(patient, demographics(), oppositions=oppositions())
    return patient


KILL_POINTS: dict[str, Callable[[Child], bool]] = {
    "mid-upload": uploading,
    "mid-decode": decoding,
    "content-stored": stored,
    "after-answer": lambda child: False,
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_submission_killed_then_restarted_is_whole(
    child: Child, tmp_path: Path, point: str, record_property
) -> None:
    record_property("faults", 1)  # for tools/security_report.py
    child.start()
    with child.client() as client:
        patient = opened(client)
        document = big_document(client, patient, tmp_path / "big.pdf")
        outcome = in_thread(lambda: client.submit([document]))
        wait_for(lambda: KILL_POINTS[point](child), outcome)
        child.kill()
        outcome.done.wait()
    if point == "after-answer":
        assert outcome.acknowledged
    if point in ("mid-upload", "mid-decode"):
        # Killed before the content was stored: the stub cannot have acknowledged.
        assert not outcome.acknowledged

    child.start()
    assert_store_whole(child.data)
    with child.client() as client:
        found = client.find_documents(patient).documents
        if outcome.acknowledged:
            assert [entry.unique_id for entry in found] == [document.entry.unique_id]
        assert len(found) <= 1
        for entry in found:
            content = client.retrieve(patient, [entry]).documents[0].read_bytes()
            assert content == (tmp_path / "big.pdf").read_bytes()


def test_td11_and_td03_killed_at_random_points_are_whole(child: Child, record_property) -> None:
    """Kills at random instants within a write's round trip: each write is whole or absent."""
    randomness = random.Random(14)
    rounds = 6
    record_property("faults", 2 * rounds)  # for tools/security_report.py
    for _ in range(rounds):
        child.start()
        with child.client() as client:
            patient = new_patient()
            creation = in_thread(lambda patient=patient: client.create(patient, demographics()))
            time.sleep(randomness.uniform(0, 0.05))
            child.kill()
            creation.done.wait()
        dmps = rows(child.data, "SELECT ins FROM dmp_patients WHERE ins = ?", (patient.ins,))
        assert len(dmps) <= 1
        if creation.acknowledged:
            assert dmps
        child.start()
        with child.client() as client:
            # A restarted stub serves the DMP it committed, whole: readable, or absent.
            assert client.exists(patient).exists is bool(dmps)
            if not dmps:
                client.create(patient, demographics())
        # TD0.3 by a colleague, who is not authorized until it is committed.
        with child.client(COLLEAGUE) as colleague:
            authorization = in_thread(lambda patient=patient: colleague.set_authorization(patient))
            time.sleep(randomness.uniform(0, 0.05))
            child.kill()
            authorization.done.wait()
        granted = rows(
            child.data,
            "SELECT professional FROM dmp_authorisations WHERE ins = ? AND professional LIKE ?",
            (patient.ins, f"%{COLLEAGUE}"),
        )
        if authorization.acknowledged:
            assert granted
    child.start()
    assert_store_whole(child.data)


def _mount_tmpfs(directory: Path) -> bool:
    if os.geteuid() != 0:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    return mounted.returncode == 0


def test_full_disk_gives_a_fault_not_a_corrupt_store(
    pki: examplepki.ExamplePKI, tmp_path: Path, record_property
) -> None:
    data = tmp_path / "data"
    tmpfs = _mount_tmpfs(data)
    record_property("faults", 1)  # for tools/security_report.py
    record_property("full_disk", "tmpfs" if tmpfs else "RLIMIT_FSIZE")
    # The documents are decoded onto the full disk as they arrive: storing them fails.
    child = Child(pki, data, limit=None if tmpfs else 2 * 1024 * 1024)
    try:
        child.start()
        with child.client() as client:
            patient = opened(client)
            small = client.document(
                patient, b"%PDF-1.4 small", title="Petit", mime_type="application/pdf"
            )
            client.submit([small])
            large = client.document(
                patient, os.urandom(3 * 1024 * 1024), title="Gros", mime_type="application/pdf"
            )
            with pytest.raises(SoapFault) as refused:
                client.submit([large])
            assert refused.value.code.endswith("Receiver")
            # The stub keeps serving, and what it acknowledged is still whole.
            found = client.find_documents(patient).documents
            assert [entry.unique_id for entry in found] == [small.entry.unique_id]
            assert client.retrieve(patient, found).documents[0].read_bytes() == b"%PDF-1.4 small"
        child.kill()
        assert_store_whole(data)
    finally:
        if child.process is not None and child.process.poll() is None:
            child.kill()
        if tmpfs:
            subprocess.run(["umount", "--lazy", str(data)], check=False)
