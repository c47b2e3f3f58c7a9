"""INSi batch against a service that answers after a WAN's latency: rows per second at
concurrency 8 against sequential, and the batch's CPU per row against a raw POST's.

Run from the project root: ``python benchmarks/insi_batch.py`` (``--rows``, ``--runs``,
``--latency-ms``, ``--quick``, ``--json FILE``). One INSi search by traits is recorded against the
téléservices stub (certificate mode); an echo server in a child process then answers every POST
with that answer after ``--latency-ms`` (50 ms by default, a service across a WAN). Figures, each
run interleaved with its baseline:

- ``rows/s``: ``run_batch`` of ``--rows`` rows at concurrency 8 against the same at concurrency 1
  (the ratio is the speed-up; the ideal is 8);
- ``CPU per row``: this process's CPU (every thread) per row of the sequential batch, against a
  raw ``requests`` POST of the recorded request bytes per row (the floor of TLS and HTTP).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from echo import echo_server
from figures import Figure, figure, machine, print_table, write_json

from transport import examplepki
from transport.config import CredentialSpec, example_profile
from transport.credentials import Purpose
from transport.soap.trace import Tracer
from transport.stubs.app import Stubs
from transport.teleservices.client import AccessMode, TeleservicesClient
from transport.teleservices.insi import InsiClient, traits_query
from transport.teleservices.insi_batch import run_batch
from transport.tls import create_session
from transport.vihf import AuthMode

ROW = ("ECETINSI", "PIERRE-ALAIN MURIEL FLORIANT", "M", "2009-07-14")  # a CNDA test person: CR 00


def insi_profile(pki: examplepki.ExamplePKI, url: str):
    """The example profile in certificate mode (the ``insi-auto`` credential) for ``url``."""
    profile = example_profile(pki, AuthMode.INDIRECTE, {"tlsi": url})
    insi = CredentialSpec(pkcs12=pki.p12("insi-auto"), password=pki.password)
    return replace(profile, insi_credential=insi)


def record_exchange(pki: examplepki.ExamplePKI, work: Path) -> tuple[bytes, bytes]:
    """One INSi search by traits against the téléservices stub, traced: request and answer."""
    traces = work / "trace"
    with Stubs(pki=pki, data_dir=work / "state", services=["lps"], accept_any_idam=True) as stubs:
        profile = insi_profile(pki, stubs.teleservices_url)
        tracer = Tracer(traces)
        with TeleservicesClient.from_profile(
            profile, AccessMode.CERTIFICATE, tracer=tracer
        ) as tele:
            InsiClient(tele).search_query(traits_query(*ROW))
    (request,) = traces.glob("*-request.xml")  # CR 00 at the first call
    (answer,) = traces.glob("*-response.xml")
    return request.read_bytes(), answer.read_bytes()


def write_rows(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "nom", "prenoms", "sexe", "naissance", "lieu"])
        for number in range(rows):
            writer.writerow([f"P{number}", *ROW, ""])


def batch(insi: InsiClient, source: Path, work: Path, concurrency: int) -> tuple[float, float]:
    """Seconds and CPU seconds of one whole batch into a new output file."""
    output = work / f"out-{time.monotonic_ns()}.csv"
    started, cpu = time.perf_counter(), time.process_time()
    summary = run_batch(source, output, insi.search_outcome, concurrency=concurrency)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if summary.unanswered:
        raise SystemExit(f"{summary.unanswered} rows were left unanswered")
    output.unlink()
    return elapsed, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="rows per batch (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (default 3)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the service's latency")
    parser.add_argument("--quick", action="store_true", help="tiny counts (CI's smoke run)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures there")
    args = parser.parse_args(argv)
    rows, runs = (16, 1) if args.quick else (args.rows, args.runs)
    with tempfile.TemporaryDirectory(prefix="cisis-bench-") as scratch:
        work = Path(scratch)
        os.environ["XDG_CONFIG_HOME"] = str(work / "config")  # the installation id
        pki = examplepki.generate(work / "pki")
        request, template = record_exchange(pki, work)
        source = work / "rows.csv"
        write_rows(source, rows)
        with echo_server(pki, template, delay=args.latency_ms / 1000) as url:
            figures = measure(insi_profile(pki, url + "/lps"), request, source, work, rows, runs)
    header = (
        f"INSi batch: {rows} rows x {runs} runs, service latency {args.latency_ms:.0f} ms, "
        f"{machine()}"
    )
    print_table(figures, header)
    if args.json:
        write_json(args.json, header, figures)


def measure(
    profile, request: bytes, source: Path, work: Path, rows: int, runs: int
) -> list[Figure]:
    sequential: list[float] = []
    concurrent: list[float] = []
    cpu_per_row: list[float] = []
    raw_cpu_per_row: list[float] = []
    tls = profile.insi_credential.load(Purpose.TLS_CLIENT)
    raw = create_session(tls, profile.tls_settings(dmp=False))
    headers = {"Content-Type": "application/soap+xml; charset=utf-8"}
    url = profile.endpoint("tlsi")
    with TeleservicesClient.from_profile(profile, AccessMode.CERTIFICATE) as tele:
        insi = InsiClient(tele)
        insi.search_query(traits_query(*ROW))  # the connection is made before timing
        raw.post(url, data=request, headers=headers)
        for _ in range(runs):
            cpu = time.process_time()
            for _ in range(rows):
                raw.post(url, data=request, headers=headers)
            raw_cpu_per_row.append((time.process_time() - cpu) * 1000 / rows)
            elapsed, cpu_seconds = batch(insi, source, work, 1)
            sequential.append(rows / elapsed)
            cpu_per_row.append(cpu_seconds * 1000 / rows)
            elapsed, _ = batch(insi, source, work, 8)
            concurrent.append(rows / elapsed)
    raw.close()
    return [
        figure("INSi batch rows/s, concurrency 8", "rows/s", concurrent, "sequential", sequential),
        figure("INSi batch CPU per row", "ms", cpu_per_row, "raw POST", raw_cpu_per_row),
    ]


if __name__ == "__main__":
    main()
