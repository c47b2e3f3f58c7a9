"""Exact traces of the exchanges: the bytes sent and received, one pair of files per call.

Files are ``NNN-<operation>-request.xml`` and ``NNN-<operation>-response.xml`` in the trace
directory, numbered in call order across threads. For an MTOM exchange the root XML part is written
as ``.xml`` and the raw multipart body beside it as ``.mime``. Traces hold what went over the wire,
patient data and assertions included: they are written 0600 and meant for the integrator's eyes.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from pathlib import Path
from typing import BinaryIO


class Tracer:
    """Writes each exchange to ``directory`` (created 0700 if missing)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._counter = itertools.count(_next_index(self.directory))
        self._lock = threading.Lock()

    def next_prefix(self, operation: str) -> str:
        """A new ``NNN-<operation>`` file prefix for one exchange."""
        with self._lock:
            index = next(self._counter)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", operation) or "call"
        return f"{index:03d}-{safe}"

    def write(self, prefix: str, direction: str, data: bytes, *, mime: bytes | None = None) -> None:
        """Write the XML of one direction (``request``/``response``), and the raw MIME if any."""
        self._write(f"{prefix}-{direction}.xml", data)
        if mime is not None:
            self._write(f"{prefix}-{direction}.mime", mime)

    def open_mime(self, prefix: str, direction: str) -> BinaryIO:
        """The ``.mime`` file of one direction, open for writing, for a multipart body written
        as it streams (a large MTOM body is never held whole in memory)."""
        return self._open(f"{prefix}-{direction}.mime")

    def _write(self, name: str, data: bytes) -> None:
        with self._open(name) as handle:
            handle.write(data)

    def _open(self, name: str) -> BinaryIO:
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        return os.fdopen(fd, "wb")


def _next_index(directory: Path) -> int:
    numbers = [
        int(match.group(1))
        for path in directory.iterdir()
        if (match := re.match(r"([0-9]{3,})-", path.name))
    ]
    return max(numbers, default=0) + 1
