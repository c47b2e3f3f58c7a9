"""A large document submitted (TD2.1) and retrieved (TD3.2) by DmpClient through the DMP stub over
mutual TLS on loopback: time against a plain file copy, and the client's peak memory.

Run from the project root: ``python benchmarks/dmp_transfer.py`` (options: ``--size-mb``,
``--runs``, ``--directory``). The stub runs in a child process, so that what is measured here is
the client alone: hashing the document (SHA-1 for the metadata, SHA-256 for the set's signature),
streaming it out as MTOM, and streaming the retrieved document to a file while decoding it. Each
run copies the document file (the baseline: every byte read once and written once), submits it,
and retrieves it into a directory, interleaved so that they see the same machine state. Prints
medians, ratios to the copy's median, the client's peak traced memory (tracemalloc) during one
more submit and one more retrieve, and the growth of the client process's maximum resident set
size across them.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).parent))

from mtom import MIB, copy, make_source

from transport import examplepki
from transport.config import example_profile
from transport.dmp.client import DmpClient
from transport.dmp.hl7v3 import Demographics
from transport.dmp.xds import DocumentEntry
from transport.stubs.app import DMP_SERVICES, Stubs
from transport.vihf import INS_TEST_OID, AuthMode, Patient

T = TypeVar("T")
PATIENT = Patient("279035121518989", INS_TEST_OID)


def serve(pki_directory: str, data: str, urls: multiprocessing.Queue, stop) -> None:
    """The child process: the DMP stub until ``stop`` is set."""
    pki = examplepki.load(pki_directory)
    with Stubs(pki=pki, data_dir=Path(data), services=DMP_SERVICES) as stubs:
        urls.put(stubs.dmp_base_url)
        stop.wait()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while block := reader.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def timed(action: Callable[[], T]) -> tuple[float, T]:
    """Seconds ``action`` took, and what it returned."""
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--directory", type=Path, default=None)
    args = parser.parse_args()
    size = args.size_mb * MIB
    with tempfile.TemporaryDirectory(dir=args.directory) as scratch:
        work = Path(scratch)
        pki = examplepki.generate(work / "pki")
        urls: multiprocessing.Queue = multiprocessing.Queue()
        stop = multiprocessing.Event()
        child = multiprocessing.Process(
            target=serve, args=(str(pki.directory), str(work / "state"), urls, stop)
        )
        child.start()
        try:
            profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": urls.get(timeout=60)})
            with DmpClient.from_profile(profile) as client:
                run(client, work, size, args)
        finally:
            stop.set()
            child.join()


def run(client: DmpClient, work: Path, size: int, args: argparse.Namespace) -> None:
    person = Demographics("BENCHMARK", ("ALICE",), sex="F", birth_date="19790328")
    client.create(PATIENT, person)
    source, copied, received = work / "document.bin", work / "copy.bin", work / "received"
    make_source(source, size)
    received.mkdir()
    expected = sha256_of(source)
    times: dict[str, list[float]] = {"copy": [], "submit": [], "retrieve": []}

    def submit() -> DocumentEntry:
        document = client.document(
            PATIENT, source, title="benchmark", mime_type="application/octet-stream"
        )
        return client.submit([document]).entries[0]

    def retrieve(entry: DocumentEntry) -> Path:
        (document,) = client.retrieve(PATIENT, [entry], directory=received).documents
        assert document.path is not None
        return document.path

    for _ in range(args.runs):
        times["copy"].append(timed(lambda: copy(source, copied))[0])
        seconds, entry = timed(submit)
        times["submit"].append(seconds)
        seconds, path = timed(lambda: retrieve(entry))  # noqa: B023 - called at once
        times["retrieve"].append(seconds)
        if sha256_of(path) != expected:
            raise SystemExit("the retrieved document differs from the submitted one")
        path.unlink()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    entry = submit()
    submit_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    retrieve(entry).unlink()
    retrieve_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    print(
        f"DMP transfer benchmark: {args.size_mb} MiB document, {args.runs} runs, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(
        f"{'operation':<14} {'median s':>9} {'min s':>8} {'max s':>8} {'MiB/s':>8} {'vs copy':>8}"
    )
    baseline = statistics.median(times["copy"])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"{name:<14} {median:9.3f} {min(samples):8.3f} {max(samples):8.3f}"
            f" {args.size_mb / median:8.0f} {median / baseline:7.2f}x"
        )
    print(
        f"client peak traced memory: submit {submit_peak / MIB:.2f} MiB, retrieve "
        f"{retrieve_peak / MIB:.2f} MiB; client max RSS grew by {growth / 1024:.0f} MiB "
        f"(to {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
