"""A large document submitted (TD2.1) and retrieved (TD3.2) by DmpClient over mutual TLS on
loopback, against a raw streaming POST and GET of the same bytes: time, throughput, and the peak
resident memory each one adds to a fresh process.

Run from the project root: ``python benchmarks/dmp_transfer.py`` (``--size-mb``, ``--runs``,
``--directory``, ``--quick``, ``--json FILE``). Two servers run in child processes: the DMP stub
(SQLite, documents fsynced to disk) and a sink of the same kind (``http.server`` over the same
mutual TLS) that reads and drops a POST's body and streams a file for a GET. Every measured
operation runs in a fresh child process, which makes its connection and pays the operation's
one-off costs (a small document submitted, and retrieved, first: the modules a first submission
imports are the start-up figures' business), reads its resident set size, resets its peak
(``/proc/self/clear_refs``), runs the operation once, and reports the time, the peak's growth (so
earlier runs cannot hide a growth, as a process-wide ``ru_maxrss`` would) and the CPU time the
operation cost its own process and the server's (``/proc/<pid>/stat``): on a shared machine,
throughput follows the load, CPU time much less. Each run sends a new document (its first bytes
changed), as a connector does. Figures, interleaved run by run:

- ``submit``: ``DmpClient.submit`` of the file (SHA-1 and SHA-256 of the document, the MTOM upload
  streamed from the file, decoded by the stub into its store as it arrives, hashed, synced)
  against a raw POST of the file;
- ``retrieve``: ``DmpClient.retrieve`` into a directory (the MTOM answer decoded to disk as it
  arrives, size and SHA-1 checked) against a raw streamed GET into a file;
- the peak RSS growth of each, in MiB, against the raw one's;
- the CPU seconds of each, client and server together, against the raw one's (a raw transfer
  through the sink: the least any client and server over this TLS can spend).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from echo import QuietHandler, serve_tls
from figures import Figure, figure, machine, print_table, write_json
from mtom import MIB, make_source

from transport import examplepki
from transport.config import example_profile
from transport.credentials import Purpose
from transport.dmp.client import DmpClient
from transport.dmp.hl7v3 import Demographics
from transport.stubs.app import DMP_SERVICES, Stubs
from transport.tls import create_session
from transport.vihf import INS_TEST_OID, AuthMode, Patient

PATIENT = Patient("279035121518989", INS_TEST_OID)
_CHUNK = 256 * 1024


# --- the servers (child processes) ----------------------------------------------------------------


def _serve_stub(pki_directory: str, data: str, ready: multiprocessing.Queue) -> None:
    pki = examplepki.load(pki_directory)
    with Stubs(pki=pki, data_dir=Path(data), services=DMP_SERVICES) as stubs:
        ready.put(stubs.dmp_base_url)
        while True:  # until the parent terminates this process
            time.sleep(3600)


def _serve_sink(pki_directory: str, served: str, ready: multiprocessing.Queue) -> None:
    """POST: the body read and dropped; GET: the file ``served`` streamed."""
    pki = examplepki.load(pki_directory)

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                left -= len(self.rfile.read(min(_CHUNK, left)) or b"\0" * left)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            size = os.path.getsize(served)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with open(served, "rb") as source:
                while block := source.read(_CHUNK):
                    self.wfile.write(block)

    serve_tls(pki, Handler, ready)


@contextlib.contextmanager
def child_server(target: Callable[..., None], *arguments: str) -> Iterator[tuple[str, int]]:
    """The URL a server started in a child process prints, and the child's pid; the child
    stopped on exit."""
    ready: multiprocessing.Queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=target, args=(*arguments, ready), daemon=True)
    child.start()
    try:
        yield ready.get(timeout=60), child.pid
    finally:
        child.terminate()
        child.join()


# --- the operations (each in a fresh child process) -----------------------------------------------


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process ``pid`` has used, in seconds (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The fields after the command name (which may hold spaces, in parentheses).
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(operation: str, pki_directory: str, server: int, url: str, work: str, out) -> None:
    """The child: set up, then one ``operation`` timed, with its peak RSS growth (MiB) and the
    CPU seconds it cost this process and the process ``server``."""
    pki = examplepki.load(pki_directory)
    profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": url})
    source, received = Path(work) / "document.bin", Path(work) / "received"
    received.mkdir(exist_ok=True)
    if operation.startswith("raw"):
        tls = profile.tls_credential.load(Purpose.TLS_CLIENT)
        session = create_session(tls, profile.tls_settings(dmp=False))
        session.post(url + "/sink", data=b"warm-up").raise_for_status()
        action = _raw_post if operation == "raw POST" else _raw_get
        run = lambda: action(session, url, source, received)  # noqa: E731
    else:
        client = DmpClient.from_profile(profile)
        # The connection is made, and the operation's one-off costs paid (the XDS, CDA and XAdES
        # modules a first submission imports, which the start-up figures count), before measuring.
        warm_up, warm_up_entry = Path(work) / "warm-up.bin", Path(work) / "warm-up-entry"
        _submit(client, warm_up, received, warm_up_entry)
        if operation == "retrieve":
            _retrieve(client, warm_up, Path(tempfile.mkdtemp(dir=work)), warm_up_entry)
        entry_file = Path(work) / "entry"
        run = lambda: (_submit if operation == "submit" else _retrieve)(  # noqa: E731
            client, source, received, entry_file
        )
    before = _rss_kib("VmRSS:")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    server_cpu = cpu_seconds(server)
    started, cpu = time.perf_counter(), time.process_time()
    run()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    out.put((elapsed, (_rss_kib("VmHWM:") - before) / 1024, cpu + cpu_seconds(server) - server_cpu))


def _raw_post(session, url: str, source: Path, _: Path) -> None:
    with source.open("rb") as body:
        session.post(url + "/sink", data=body).raise_for_status()


def _raw_get(session, url: str, _: Path, received: Path) -> None:
    with (
        session.get(url + "/document", stream=True) as answer,
        (received / "raw.bin").open("wb") as target,
    ):
        answer.raise_for_status()
        for block in answer.iter_content(_CHUNK):
            target.write(block)


def _submit(client: DmpClient, source: Path, _: Path, entry_file: Path) -> None:
    document = client.document(
        PATIENT, source, title="benchmark", mime_type="application/octet-stream"
    )
    entry = client.submit([document]).entries[0]
    entry_file.write_text(entry.unique_id, encoding="ascii")


def _retrieve(client: DmpClient, source: Path, received: Path, entry_file: Path) -> None:
    unique_id = entry_file.read_text(encoding="ascii")
    entry = client.get_documents(PATIENT, unique_ids=[unique_id]).by_unique_id(unique_id)
    (document,) = client.retrieve(PATIENT, [entry], directory=received).documents
    assert document.path is not None and document.size == source.stat().st_size


def measured(
    operation: str, pki_directory: Path, server: tuple[str, int], work: Path
) -> tuple[float, float, float]:
    """Seconds, peak RSS growth (MiB) and CPU seconds (client and ``server``, a URL and pid) of
    ``operation`` in a fresh child process."""
    url, pid = server
    out: multiprocessing.Queue = multiprocessing.Queue()
    child = multiprocessing.Process(
        target=_measure, args=(operation, str(pki_directory), pid, url, str(work), out)
    )
    child.start()
    try:
        return out.get(timeout=600)
    finally:
        child.join()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while block := reader.read(MIB):
            digest.update(block)
    return digest.hexdigest()


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--directory", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a 2 MiB document, one run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures there")
    args = parser.parse_args(argv)
    size_mb, runs = (2, 1) if args.quick else (args.size_mb, args.runs)
    with tempfile.TemporaryDirectory(dir=args.directory, prefix="cisis-bench-") as scratch:
        work = Path(scratch)
        pki = examplepki.generate(work / "pki")
        source = work / "document.bin"
        make_source(source, size_mb * MIB)
        with (
            child_server(_serve_stub, str(pki.directory), str(work / "state")) as dmp,
            child_server(_serve_sink, str(pki.directory), str(source)) as sink,
        ):
            profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": dmp[0]})
            with DmpClient.from_profile(profile) as client:
                client.create(PATIENT, Demographics("BENCHMARK", ("ALICE",), "F", "19790328"))
            figures = measure(pki.directory, dmp, sink, work, runs, size_mb)
    header = f"DMP transfer: {size_mb} MiB document, {runs} run(s), {machine()}"
    print_table(figures, header)
    if args.json:
        write_json(args.json, header, figures)


def measure(
    pki_directory: Path,
    dmp: tuple[str, int],
    sink: tuple[str, int],
    work: Path,
    runs: int,
    size_mb: int,
) -> list[Figure]:
    samples: dict[str, list[tuple[float, float, float]]] = {
        name: [] for name in ("raw POST", "submit", "raw GET", "retrieve")
    }
    source = work / "document.bin"
    (work / "warm-up.bin").write_bytes(b"warm-up")
    for _ in range(runs):
        # A new document each run, as a connector sends: the same bytes again would replace the
        # blob of the run before (the stub stores by SHA-256), a cost no new document has.
        with source.open("r+b") as document:
            document.write(os.urandom(32))
        expected = sha256_of(source)
        for name in samples:
            server = sink if name.startswith("raw") else dmp
            samples[name].append(measured(name, pki_directory, server, work))
            for received in (work / "received").iterdir():
                if sha256_of(received) != expected:
                    raise SystemExit(f"{name}: the received document differs from the original")
                received.unlink()
    figures = []
    for ours, raw in (("submit", "raw POST"), ("retrieve", "raw GET")):
        rate = [size_mb / seconds for seconds, _, _ in samples[ours]]
        raw_rate = [size_mb / seconds for seconds, _, _ in samples[raw]]
        figures.append(figure(f"{ours} throughput", "MiB/s", rate, raw, raw_rate))
        growth = [mib for _, mib, _ in samples[ours]]
        raw_growth = [mib for _, mib, _ in samples[raw]]
        figures.append(figure(f"{ours} peak RSS growth", "MiB", growth, raw, raw_growth))
        cpu = [seconds for _, _, seconds in samples[ours]]
        raw_cpu = [seconds for _, _, seconds in samples[raw]]
        figures.append(figure(f"{ours} CPU, client + server", "s", cpu, raw, raw_cpu))
    return figures


if __name__ == "__main__":
    main()
