"""The client's own cost on TD0.2 (test d'existence), each figure beside its baseline measured in
the same run: medians, spreads and ratios, as a table and as JSON.

Run from the project root: ``python benchmarks/client.py`` (``--quick`` for tiny counts, as CI
does; ``--json FILE`` to keep the figures). Figures:

- ``cpu``: client CPU of one TD0.2 in-process with the socket replaced by memory (build and sign
  the VIHF, envelope, serialise, the HTTP exchange; parse the answer and map it), against the
  floor: one RSA-2048 PKCS#1 v1.5 SHA-256 signature, one lxml serialisation of the same request
  envelope and one parse of the same answer; and against a careful integrator's zeep + signxml.
  Both clients run their own HTTP stack unchanged (ours: urllib3 pools directly; zeep: a requests
  session over urllib3) down to urllib3's connection, whose socket alone is swapped
  (:class:`MemoryConnection`): it takes the request bytes and answers the recorded HTTP answer
  with the request's ``MessageID``. Each path pays everything above the socket (request and
  header building, http.client's writing and parsing, urllib3's pool and response); neither pays
  TLS nor the network.
- ``calls/s`` at 1 and 8 threads: TD0.2 calls per second over keep-alive mutual TLS against an
  HTTPS echo server (a child process answering every POST with a recorded TD0.2 answer, so the
  client is the bottleneck), against a raw ``requests`` POST of the same request bytes.
- ``first call``: a new process that imports the library, loads the example profile and makes one
  TD0.2 against the echo server, against a process that only imports zeep, signxml, requests, lxml
  and cryptography.
- ``--help``: ``python -m transport --help`` against ``python -c pass``.

Each pair is measured interleaved (baseline, subject, baseline, …) so both see the same machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree

sys.path.insert(0, str(Path(__file__).parent))

from echo import answer_for, echo_server
from figures import (
    Figure,
    bytecode_env,
    figure,
    machine,
    per_call_cpu,
    print_table,
    wall_ms,
    write_json,
)

from transport import examplepki
from transport.config import example_profile
from transport.credentials import Purpose
from transport.dmp.client import DmpClient, software_device
from transport.soap.channel import CoalescingConnection, CoalescingPool
from transport.soap.trace import Tracer
from transport.stubs.app import DMP_SERVICES, Stubs
from transport.tls import create_session
from transport.vihf import INS_TEST_OID, AuthMode, Patient

PATIENT = Patient("279035121518989", INS_TEST_OID)


# --- the recorded exchange ----------------------------------------------------------------------


def record_exchange(pki: examplepki.ExamplePKI, work: Path) -> tuple[bytes, bytes]:
    """One TD0.2 against the real DMP stub, traced: its request and answer envelopes."""
    traces = work / "trace"
    with Stubs(pki=pki, data_dir=work / "state", services=DMP_SERVICES) as stubs:
        profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": stubs.dmp_base_url})
        with DmpClient.from_profile(profile, tracer=Tracer(traces)) as client:
            client.exists(PATIENT)
    request = next(traces.glob("*-request.xml")).read_bytes()
    answer = next(traces.glob("*-response.xml")).read_bytes()
    return request, answer


# --- the figures ----------------------------------------------------------------------------------


@dataclass
class Answered:
    """How many requests the memory sockets answered: every call measured must be one of them."""

    count: int = 0


class _MemorySocket:
    """What :class:`MemoryConnection` has for a socket: keeps what is sent; a read (http.client
    reads the answer through ``makefile``) gets the recorded answer, as the echo server sends it,
    to the request last sent."""

    def __init__(self, template: bytes, answered: Answered) -> None:
        self.template = template
        self.answered = answered
        self.sent = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def makefile(self, mode: str) -> io.BytesIO:
        _, _, body = bytes(self.sent).partition(b"\r\n\r\n")
        self.sent.clear()
        self.answered.count += 1
        answer = answer_for(self.template, body)
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml; charset=utf-8\r\n"
            f"Content-Length: {len(answer)}\r\n\r\n"
        )
        return io.BytesIO(head.encode() + answer)

    def settimeout(self, _: float | None) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryConnection(urllib3.connection.HTTPSConnection):
    """urllib3's HTTPS connection with memory for a socket: everything above the socket runs
    unchanged, the request is written and the answer parsed by http.client as over TLS."""

    template = b""
    answered = Answered()

    def connect(self) -> None:
        self.sock = _MemorySocket(self.template, self.answered)
        self.is_verified = True  # no peer to verify: the answer comes from memory

    @property
    def is_connected(self) -> bool:
        return self.sock is not None  # urllib3 would poll a real socket for a hang-up


class CoalescingMemoryConnection(MemoryConnection, CoalescingConnection):
    """Our wire's connection (head and small body in one write) with memory for a socket."""


@contextlib.contextmanager
def memory_sockets(template: bytes) -> Iterator[Answered]:
    """Inside the block, every HTTPS connection urllib3 makes (requests' included) is a
    :class:`MemoryConnection` answering ``template`` (ours a
    :class:`CoalescingMemoryConnection`); the count of its answers is yielded."""
    MemoryConnection.template = template
    MemoryConnection.answered = answered = Answered()
    swaps = (
        (urllib3.HTTPSConnectionPool, MemoryConnection),
        (CoalescingPool, CoalescingMemoryConnection),
    )
    originals = [pool.ConnectionCls for pool, _ in swaps]
    for pool, memory in swaps:
        pool.ConnectionCls = memory
    try:
        yield answered
    finally:
        for (pool, _), original in zip(swaps, originals, strict=True):
            pool.ConnectionCls = original


def cpu_figures(profile, template: bytes, request: bytes, calls: int, runs: int) -> list[Figure]:
    """Client CPU per TD0.2 in-process (ms) against the floor and against a careful integrator."""
    signature = profile.signature_credential.load(Purpose.SIGNATURE)
    key = signature.private_key
    assert key is not None
    envelope = etree.fromstring(request)
    signed_info = b"x" * 700  # the size of a VIHF's canonical SignedInfo

    def floor() -> None:
        key.sign(signed_info, padding.PKCS1v15(), hashes.SHA256())
        etree.tostring(envelope)
        etree.fromstring(template)

    # Both sides post through urllib3 connections whose socket is memory (MemoryConnection):
    # what is measured is everything above the socket.
    samples: dict[str, list[float]] = {"ours": [], "floor": [], "integrator": []}
    with (
        memory_sockets(template) as answered,
        DmpClient(
            profile.endpoint("dmp"),
            identity=profile.identity,
            signature=signature,
            tls_credential=None,
            tls_settings=profile.tls_settings(),
        ) as client,
    ):
        integrator = careful_integrator(profile, signature)
        for _ in range(runs):
            samples["floor"].append(per_call_cpu(floor, calls))
            samples["integrator"].append(per_call_cpu(integrator, calls))
            samples["ours"].append(per_call_cpu(lambda: client.exists(PATIENT), calls))
    if answered.count != 2 * runs * (calls + 1):  # each run's calls and warm-up, both clients
        raise RuntimeError(f"{answered.count} calls answered from memory: one went elsewhere")
    name = "TD0.2 client CPU, in-process"
    return [
        figure(name, "ms", samples["ours"], "floor", samples["floor"]),
        figure(name, "ms", samples["ours"], "zeep + signxml", samples["integrator"]),
    ]


def careful_integrator(profile, signature) -> Callable[[], object]:
    """TD0.2 as a careful integrator writes it with zeep and signxml: the key loaded once, the
    zeep client made once, the assertion built with lxml and signed by signxml, the envelope made
    by zeep (WS-Addressing plugin, the assertion as a header), the answer read with lxml."""
    import zeep
    import zeep.wsa
    from signxml import XMLSigner, methods

    from transport.dmp import hl7v3
    from transport.soap.wsdl import wsdl_path
    from transport.vihf import build_assertion

    client = zeep.Client(
        str(wsdl_path("dmp/patients.wsdl")),
        transport=zeep.Transport(session=requests.Session()),
        plugins=[zeep.wsa.WsAddressingPlugin()],
    )
    operation = "PatientGetDemographics_PRPA_IN201307UV02"
    service = client.create_service(
        next(iter(client.wsdl.bindings)), profile.endpoint("dmp") + "/patients"
    )
    identity = profile.identity.with_patient(PATIENT)
    certificate = signature.certificate.public_bytes(serialization.Encoding.PEM).decode()
    issuer = signature.dn
    wsse = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
    device = software_device(profile.identity)

    def call() -> object:
        assertion = build_assertion(identity, issuer)
        signed = XMLSigner(
            method=methods.enveloped, c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"
        ).sign(assertion, key=signature.private_key, cert=certificate)
        security = etree.Element(f"{{{wsse}}}Security")
        security.append(signed)
        query = hl7v3.DemographicsQuery.new(hl7v3.Reason.TEST_EXST, PATIENT, device).build()
        result = service[operation](_value_1=list(query), _soapheaders=[security])
        return [e for e in result._value_1 if e.tag == "{urn:hl7-org:v3}acknowledgement"]

    return call


def rate_figures(profile, request: bytes, calls: int, runs: int) -> list[Figure]:
    """TD0.2 calls/s at 1 and 8 threads against a raw requests POST of the same bytes."""
    url = profile.endpoint("dmp") + "/patients"
    tls = profile.tls_credential.load(Purpose.TLS_CLIENT)
    raw = create_session(tls, profile.tls_settings())
    headers = {"Content-Type": "application/soap+xml; charset=utf-8"}
    figures = []
    with DmpClient.from_profile(profile) as client:
        for threads in (1, 8):
            ours: list[float] = []
            base: list[float] = []
            for _ in range(runs):
                base.append(
                    rate(lambda: raw.post(url, data=request, headers=headers), calls, threads)
                )
                ours.append(rate(lambda: client.exists(PATIENT), calls, threads))
            figures.append(
                figure(f"TD0.2 calls/s, {threads} thread(s)", "calls/s", ours, "raw POST", base)
            )
    raw.close()
    return figures


def rate(action: Callable[[], object], calls: int, threads: int) -> float:
    action()  # the connection is made before timing
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: action(), range(threads)))  # one connection per thread
        start = time.perf_counter()
        list(pool.map(lambda _: action(), range(calls)))
        return calls / (time.perf_counter() - start)


_FIRST_CALL = """
import sys
from pathlib import Path
from transport import examplepki
from transport.config import example_profile
from transport.dmp.client import DmpClient
from transport.vihf import INS_TEST_OID, AuthMode, Patient
pki = examplepki.load(Path(sys.argv[1]))
profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": sys.argv[2]})
with DmpClient.from_profile(profile) as client:
    client.exists(Patient("279035121518989", INS_TEST_OID))
"""
_BARE_IMPORTS = "import zeep, signxml, requests, lxml.etree, cryptography.x509"


def process_figures(
    pki: examplepki.ExamplePKI, base_url: str, runs: int, work: Path
) -> list[Figure]:
    """A new process's first TD0.2, and ``--help``, each against its bare baseline (ms), every
    process with bytecode caches (warmed by one untimed run of each command)."""
    python = sys.executable
    env = bytecode_env(work / "pycache")
    first = [python, "-c", _FIRST_CALL, str(pki.directory), base_url]
    pairs = (
        ("first TD0.2 in a new process", first, "bare imports", [python, "-c", _BARE_IMPORTS]),
        ("cisis-transport --help", [python, "-m", "transport", "--help"], "python -c pass",
         [python, "-c", "pass"]),
    )  # fmt: skip
    figures = []
    for name, command, baseline_name, baseline in pairs:
        wall_ms(baseline, env)
        wall_ms(command, env)
        ours: list[float] = []
        base: list[float] = []
        for _ in range(runs):
            base.append(wall_ms(baseline, env))
            ours.append(wall_ms(command, env))
        figures.append(figure(name, "ms", ours, baseline_name, base))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per run (default 300)")
    parser.add_argument("--runs", type=int, default=5, help="interleaved runs (default 5)")
    parser.add_argument("--quick", action="store_true", help="tiny counts (CI's smoke run)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures there")
    args = parser.parse_args(argv)
    calls, runs = (10, 2) if args.quick else (args.calls, args.runs)
    with tempfile.TemporaryDirectory(prefix="cisis-bench-") as scratch:
        work = Path(scratch)
        pki = examplepki.generate(work / "pki")
        request, template = record_exchange(pki, work)
        with echo_server(pki, template) as echo:
            base_url = echo + "/si-dmp-server/v2/services"
            profile = example_profile(pki, AuthMode.INDIRECTE, {"dmp": base_url})
            figures = cpu_figures(profile, template, request, calls, runs)
            figures += rate_figures(profile, request, calls, runs)
            figures += process_figures(pki, base_url, runs, work)
    header = f"TD0.2 client cost: {calls} calls x {runs} runs, {machine()}"
    print_table(figures, header)
    if args.json:
        write_json(args.json, header, figures)


if __name__ == "__main__":
    main()
