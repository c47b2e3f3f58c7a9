"""MTOM encode and decode of one large attachment through files, against a plain file copy.

Run from the project root: ``python benchmarks/mtom.py`` (options: ``--size-mb``, ``--runs``,
``--directory``). Each run copies the attachment file (the baseline: the least any streaming
encoder or decoder must do, reading and writing every byte once), reads and hashes it (SHA-256,
which the decoder computes for every part), encodes it into an MTOM body written to a file, and
decodes that body into a directory, with both digests (the default, what the stub checks) and with
the SHA-1 only (what a retrieval checks); they are interleaved run by run so that they see the
same machine state. Prints medians, ratios to the baseline's median, and the peak
memory of one more encode and decode traced with tracemalloc.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lxml import etree

from transport.soap.mtom import CHUNK_SIZE, DIGESTS, Attachment, decode, encode, include

MIB = 1024 * 1024
T = TypeVar("T")


def make_source(path: Path, size: int) -> None:
    """Write ``size`` random bytes to ``path``, 1 MiB at a time."""
    with path.open("wb") as handle:
        while size > 0:
            handle.write(os.urandom(min(MIB, size)))
            size -= MIB


def copy(source: Path, target: Path) -> None:
    """The baseline: read and write every byte once, in the blocks the encoder uses."""
    with source.open("rb") as reader, target.open("wb") as writer:
        while block := reader.read(CHUNK_SIZE):
            writer.write(block)


def read_and_hash(source: Path) -> str:
    """What decoding adds to a copy: the SHA-256 every decoded part gets."""
    digest = hashlib.sha256()
    with source.open("rb") as reader:
        while block := reader.read(CHUNK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def encode_to(source: Path, wire: Path) -> str:
    """Encode ``source`` as the one attachment of an MTOM body written to ``wire``."""
    root = b"<Envelope>" + etree.tostring(include("document@benchmark")) + b"</Envelope>"
    message = encode(root, [Attachment("document@benchmark", source)], action="urn:benchmark")
    with wire.open("wb") as writer:
        for chunk in message.chunks():
            writer.write(chunk)
    return message.content_type


def decode_from(
    wire: Path, content_type: str, directory: Path, digests: frozenset[str] = DIGESTS
) -> None:
    """Decode the body in ``wire``, its attachment going to a file in ``directory``, computing
    ``digests``."""
    with wire.open("rb") as reader:
        decoded = decode(reader, content_type, directory=directory, digests=digests)
    for part in decoded.parts.values():
        assert part.path is not None
        part.path.unlink()


def timed(action: Callable[..., T], *arguments: object) -> tuple[float, T]:
    """Seconds ``action(*arguments)`` took, and what it returned."""
    started = time.perf_counter()
    result = action(*arguments)
    return time.perf_counter() - started, result


def traced_peak(action: Callable[..., object], *arguments: object) -> int:
    """Peak bytes allocated by Python while ``action(*arguments)`` runs."""
    tracemalloc.start()
    try:
        action(*arguments)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="attachment size in MiB")
    parser.add_argument("--runs", type=int, default=7, help="measured runs (after one warm-up)")
    parser.add_argument("--directory", type=Path, default=None, help="where to put the files")
    options = parser.parse_args()
    size = options.size_mb * MIB

    with tempfile.TemporaryDirectory(prefix="mtom-bench-", dir=options.directory) as name:
        work = Path(name)
        source, copied, wire = work / "source.bin", work / "copy.bin", work / "message.mime"
        received = work / "received"
        received.mkdir()
        make_source(source, size)
        content_type = encode_to(source, wire)  # warm-up, and the content type to decode
        copy(source, copied)
        decode_from(wire, content_type, received)

        times: dict[str, list[float]] = {
            "copy": [],
            "read+sha256": [],
            "encode": [],
            "decode": [],
            "decode sha1": [],
        }
        for _ in range(options.runs):
            times["copy"].append(timed(copy, source, copied)[0])
            times["read+sha256"].append(timed(read_and_hash, source)[0])
            # Every encoding draws a new boundary: decode with the content type of this one.
            seconds, content_type = timed(encode_to, source, wire)
            times["encode"].append(seconds)
            times["decode"].append(timed(decode_from, wire, content_type, received)[0])
            sha1_only = timed(decode_from, wire, content_type, received, frozenset({"sha1"}))
            times["decode sha1"].append(sha1_only[0])
        times["encode+decode"] = [
            e + d for e, d in zip(times["encode"], times["decode"], strict=True)
        ]
        encode_peak = traced_peak(encode_to, source, wire)
        content_type = encode_to(source, wire)
        decode_peak = traced_peak(decode_from, wire, content_type, received)

    baseline = statistics.median(times["copy"])
    print(
        f"MTOM benchmark: {options.size_mb} MiB attachment through files, {options.runs} runs,"
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"{'operation':<15}{'median s':>10}{'min s':>9}{'max s':>9}{'MiB/s':>9}{'vs copy':>9}")
    for label, values in times.items():
        median = statistics.median(values)
        print(
            f"{label:<15}{median:>10.3f}{min(values):>9.3f}{max(values):>9.3f}"
            f"{options.size_mb / median:>9.0f}{median / baseline:>8.2f}x"
        )
    print(
        f"peak traced memory: encode {encode_peak / MIB:.2f} MiB, decode"
        f" {decode_peak / MIB:.2f} MiB; process max RSS"
        f" {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
