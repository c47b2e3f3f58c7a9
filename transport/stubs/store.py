"""The stubs' durable state: one SQLite database and a directory of document contents.

Every service keeps its tables in the same database file (``stubs.sqlite3`` in the data directory)
and declares them with :meth:`Database.ensure`. Each write runs in :meth:`Database.transaction`,
so a stub killed at any moment restarts with every acknowledged change and none half made.
Document contents live beside it in :class:`BlobStore`, written to a temporary file, synced and
renamed before the row that names them is committed; a start removes the temporary files and the
contents no row names that a killed stub left behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

DATABASE_NAME = "stubs.sqlite3"
_CHUNK = 1024 * 1024
_TEMPORARY_PREFIX = ".incoming-"
_INCOMING = ".incoming"


class Database:
    """The SQLite database of the stubs, safe to share between the server's threads.

    A single connection serialised by a lock: the stubs favour simple, certain consistency over
    throughput.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute("PRAGMA foreign_keys=ON")

    def ensure(self, ddl: str) -> None:
        """Create the tables and indexes of ``ddl`` (``CREATE … IF NOT EXISTS`` statements)."""
        with self._lock:
            self._connection.executescript(ddl)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back when it raises."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one read-only statement."""
        with self._lock:
            return self._connection.execute(sql, parameters).fetchall()

    def close(self) -> None:
        """Close the connection (the data stays on disk)."""
        with self._lock:
            self._connection.close()


@dataclass(frozen=True)
class Blob:
    """Stored content: its SHA-256 (lowercase hex), its size in bytes, and where it lies."""

    sha256: str
    size: int
    path: Path


class BlobStore:
    """Content-addressed files under ``directory``: written once, synced, never modified.

    Opening a store removes what a stub killed mid-write left: the temporary files of
    :meth:`put` and the directories of :meth:`incoming` (no request is in flight yet).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f"{_TEMPORARY_PREFIX}*"):
            stale.unlink(missing_ok=True)
        shutil.rmtree(directory / _INCOMING, ignore_errors=True)

    def remove_unreferenced(self, referenced: Iterable[str]) -> int:
        """Remove every stored content whose SHA-256 is not in ``referenced`` (the hashes the
        committed rows name): a stub killed between storing a content and committing its row
        leaves one. Called at start, before any request; the number removed."""
        kept = set(referenced)
        removed = 0
        for path in self.directory.glob("??/*"):
            if path.is_file() and path.name not in kept:
                path.unlink()
                removed += 1
        return removed

    def put(self, source: BinaryIO | bytes) -> Blob:
        """Store the bytes of ``source`` (read to its end, chunk by chunk) and return the blob."""
        digest = hashlib.sha256()
        size = 0
        handle, temporary = tempfile.mkstemp(dir=self.directory, prefix=_TEMPORARY_PREFIX)
        try:
            with os.fdopen(handle, "wb") as target:
                for chunk in _chunks(source):
                    digest.update(chunk)
                    size += len(chunk)
                    target.write(chunk)
                target.flush()
                os.fsync(target.fileno())
            path = self.path(digest.hexdigest())
            path.parent.mkdir(exist_ok=True)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _sync_directory(path.parent)
        return Blob(digest.hexdigest(), size, path)

    def adopt(self, source: Path, sha256: str, size: int) -> Blob:
        """Move the file ``source`` (on the store's file system, of hash ``sha256`` and ``size``
        bytes, both already computed by whoever wrote it) into the store, synced."""
        with source.open("rb") as handle:
            os.fsync(handle.fileno())
        path = self.path(sha256)
        path.parent.mkdir(exist_ok=True)
        os.replace(source, path)
        _sync_directory(path.parent)
        return Blob(sha256, size, path)

    def incoming(self) -> Path:
        """A directory on the store's file system for files to :meth:`adopt`."""
        directory = self.directory / _INCOMING
        directory.mkdir(exist_ok=True)
        return directory

    def path(self, sha256: str) -> Path:
        """Where the content of hash ``sha256`` is (or would be) stored."""
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.directory / sha256[:2] / sha256

    def open(self, sha256: str) -> BinaryIO:
        """The stored content of hash ``sha256``, opened for reading."""
        return self.path(sha256).open("rb")


def _chunks(source: BinaryIO | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    while chunk := source.read(_CHUNK):
        yield chunk


def _sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
