"""The stub server as a whole: routing, limits, hostile input, concurrency, the command line."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests

from transport.credentials import load_pkcs12
from transport.errors import SoapFault
from transport.soap.channel import send
from transport.soap.envelope import raise_for_fault
from transport.stubs.app import SERVICES, Stubs, service_path
from transport.stubs.server import ServerTLS, StubRequest, StubResponse, StubServer
from transport.tls import TLSSettings, create_session
from transport.xml import parse_xml

from .test_stub_xds import DOCTOR, PATIENT, Caller, entry, find, open_dmp, retrieve, submit

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
    b"<soap:Envelope xmlns:soap='http://www.w3.org/2003/05/soap-envelope'>"
    b"<soap:Body>&lol2;</soap:Body></soap:Envelope>"
)


@pytest.fixture
def session(pki):
    credential = load_pkcs12(pki.p12("org-auth"), pki.password)
    with create_session(credential, TLSSettings(ca_bundle=pki.ca_bundle)) as opened:
        yield opened


STUB_SERVICES = ["registry", "repository", "lps"]


def post(session, url: str, body: bytes, content_type: str = "application/soap+xml"):
    return send(session, url, body, {"Content-Type": content_type})


def test_unknown_path_is_a_soap_fault(fresh_stubs, session):
    response = post(session, f"{fresh_stubs.url}/si-dmp-server/v2/services/nothing", b"<x/>")
    assert response.status_code == 404
    with pytest.raises(SoapFault, match="nothing"):
        raise_for_fault(parse_xml(response.content))


HOSTILE = {
    "empty": b"",
    "not xml": b"\x00\xff garbage",
    "entities": BILLION_LAUGHS,
    "soap 1.1": b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body/></s:Envelope>",
    "no headers": b"<soap:Envelope xmlns:soap='http://www.w3.org/2003/05/soap-envelope'><soap:Body/>"
    b"</soap:Envelope>",
    "random": random.Random(7).randbytes(4096),
}


@pytest.mark.parametrize("name", ["registry", "repository", "lps"])
@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_gets_a_fault_and_the_server_keeps_serving(fresh_stubs, session, name, body):
    response = post(session, f"{fresh_stubs.url}{service_path(name)}", body)
    assert 400 <= response.status_code < 600
    with pytest.raises(SoapFault):
        raise_for_fault(parse_xml(response.content))
    follow_up = post(session, f"{fresh_stubs.url}{service_path(name)}", b"<x/>")
    assert follow_up.status_code >= 400 and follow_up.content.startswith(b"<?xml")


def test_request_size_limit(pki, tmp_path, session):
    with Stubs(pki=pki, data_dir=tmp_path, services=["registry"], max_request_bytes=1000) as small:
        url = small.dmp_url("registry")
        refused = post(session, url, b"<x/>" * 1000)
        # The server closes the connection, and says so: the next request opens a new one.
        assert refused.status_code == 413 and refused.headers["Connection"] == "close"
        chunked = post(session, url, iter([b"<x/>"] * 1000))
        assert chunked.status_code == 413
        assert post(session, url, b"<x/>").status_code == 500  # still serving: a SOAP fault


def _server(pki, handler, limit: int = 1024 * 1024 * 1024) -> StubServer:
    tls = ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)
    return StubServer(handler, tls, max_request_bytes=limit)


def _odd_chunks(data: bytes) -> Iterator[bytes]:
    sizes = itertools.cycle([1, 7, 65537, 3000])
    index = 0
    while index < len(data):
        size = next(sizes)
        yield data[index : index + size]
        index += size


def test_a_handler_reads_the_body_as_it_arrives_and_what_it_leaves_is_drained(pki, session):
    """Handlers read the request stream straight from the connection: the whole body in pieces
    (its SHA-256 answered), or a few bytes only (the rest read and dropped by the server, so that
    the next request on the kept-alive connection is read from its start)."""

    def handler(request: StubRequest) -> StubResponse:
        if request.path == "/few":
            return StubResponse(200, request.stream.read(10), "text/plain")
        digest = hashlib.sha256()
        while block := request.stream.read(1000):
            digest.update(block)
        return StubResponse(200, digest.hexdigest().encode(), "text/plain")

    bodies = [os.urandom(size) for size in (0, 1, 300_000, 2 * 1024 * 1024 + 3)]
    with _server(pki, handler) as server:
        for body in bodies:
            for data in (body, _odd_chunks(body)):  # with a Content-Length, then chunked
                whole = send(session, f"{server.url}/whole", data, {})
                assert whole.status_code == 200
                assert whole.content == hashlib.sha256(body).hexdigest().encode()
                few = send(session, f"{server.url}/few", body, {})
                assert few.status_code == 200 and few.content == body[:10]


def test_a_body_over_the_limit_is_refused_even_by_a_handler_that_swallows_errors(pki, session):
    calls: list[str] = []

    def swallowing(request: StubRequest) -> StubResponse:
        calls.append(request.path)
        try:
            request.stream.read()
        except Exception:  # the point: the server answers 413 all the same
            return StubResponse(200, b"swallowed", "text/plain")
        return StubResponse(200, b"read", "text/plain")

    with _server(pki, swallowing, limit=10_000) as server:
        chunked = send(session, f"{server.url}/chunked", iter([b"<x/>"] * 10_000), {})
        assert chunked.status_code == 413 and chunked.headers["Connection"] == "close"
        declared = send(session, f"{server.url}/declared", b"x" * 10_001, {})
        assert declared.status_code == 413
        assert calls == ["/chunked"]  # a declared length over the limit never reaches a handler
        fits = send(session, f"{server.url}/fits", b"x" * 10_000, {})
        assert fits.status_code == 200 and fits.content == b"read"


def test_chunked_request_body(fresh_stubs):
    caller = Caller(fresh_stubs)
    open_dmp(fresh_stubs, PATIENT, DOCTOR)
    content = os.urandom(300_000)
    metadata = entry(content)
    # Caller.post sends MTOM bodies as a generator: requests uploads them chunked.
    assert submit(caller, (metadata, content)).ok
    assert retrieve(caller, metadata.unique_id)[1] == {metadata.unique_id: content}


def test_concurrent_clients(fresh_stubs):
    open_dmp(fresh_stubs, PATIENT, DOCTOR)
    callers = [Caller(fresh_stubs) for _ in range(4)]
    contents = [os.urandom(20_000 + n) for n in range(16)]
    entries = [entry(content) for content in contents]

    def round_trip(number: int) -> bool:
        caller = callers[number % len(callers)]
        submitted = submit(caller, (entries[number], contents[number])).ok
        _, back = retrieve(caller, entries[number].unique_id)
        return submitted and back == {entries[number].unique_id: contents[number]}

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trip, range(len(contents))))
    assert len(find(callers[0]).entries) == len(contents)


def test_no_client_certificate(fresh_stubs, pki):
    with pytest.raises(requests.exceptions.SSLError):
        requests.post(
            fresh_stubs.dmp_url("registry"), data=b"<x/>", verify=str(pki.ca_bundle), timeout=10
        )


def test_log_lines_carry_no_patient_identifier(fresh_stubs, caller_log):
    caller = Caller(fresh_stubs)
    open_dmp(fresh_stubs, PATIENT, DOCTOR)
    assert submit(caller, (entry(b"x"), b"x")).ok
    find(caller)
    lines = caller_log()
    assert any("registry" in line and "200" in line for line in lines)
    assert not [line for line in lines if PATIENT.ins in line or DOCTOR in line]


@pytest.fixture
def caller_log(caplog):
    caplog.set_level("INFO", logger="transport.stubs")
    return lambda: [record.getMessage() for record in caplog.records]


def test_every_service_is_mounted(pki, tmp_path):
    with Stubs(pki=pki, data_dir=tmp_path) as everything:
        assert set(everything.server._server.app.routes) == {service_path(n) for n in SERVICES}


def test_stub_command_serves_until_interrupted(pki, tmp_path):
    data = tmp_path / "state"
    command = [sys.executable, "-m", "transport", "stub", "--port", "0", "--data", str(data)]
    process = subprocess.Popen(
        [*command, "--pki", str(pki.directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline()
        match = re.search(r"listening on (https://\S+)", first)
        assert match, first + process.stderr.read()
        listing = [process.stdout.readline() for _ in SERVICES]
        assert any(service_path("registry") in line for line in listing)
        credential = load_pkcs12(pki.p12("org-auth"), pki.password)
        with create_session(credential, TLSSettings(ca_bundle=pki.ca_bundle)) as opened:
            url = f"{match.group(1)}{service_path('registry')}"
            response = post(opened, url, b"<x/>")
        assert response.status_code == 500
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "stopped" in out
    assert (data / "stubs.sqlite3").is_file()
    assert f"POST {service_path('registry')} -> 500" in err


def test_acknowledged_document_survives_a_killed_stub(pki, tmp_path):
    data = tmp_path / "state"
    with Stubs(pki=pki, data_dir=data, services=["registry"]) as seeding:
        open_dmp(seeding, PATIENT, DOCTOR)
    command = [sys.executable, "-m", "transport", "stub", "--port", "0", "--data", str(data)]
    process = subprocess.Popen(
        [*command, "--pki", str(pki.directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        url = re.search(r"listening on (https://\S+)", process.stdout.readline()).group(1)
        remote = SimpleNamespace(pki=pki, dmp_url=lambda name: f"{url}{service_path(name)}")
        content = bytes(range(256)) * 1000 + b"\r\n"
        metadata = entry(content)
        assert submit(Caller(remote), (metadata, content)).ok
    finally:
        process.kill()  # SIGKILL: no clean shutdown, no chance to flush anything more
        process.wait(timeout=30)
    with Stubs(pki=pki, data_dir=data, services=["registry", "repository"]) as restarted:
        assert retrieve(Caller(restarted), metadata.unique_id)[1] == {metadata.unique_id: content}
