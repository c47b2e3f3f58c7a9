"""The smoke scenario: every step that exists, run in order, each timed and reported on one line.

Without a profile it needs nothing: a fresh example PKI in a temporary directory, the echo stub on a
free loopback port, then, in each authentication mode, credentials, a signed VIHF verified locally,
a call over mutual TLS that the stub verifies, and the refusal of a VIHF signed with an
authentication-only key. The service steps (DMP, INSi) join as their facades land.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from . import examplepki
from .client import build_envelope, raise_for_fault, send
from .config import Profile, example_profile
from .credentials import Credential, Purpose, load_pkcs12
from .errors import CisisError, SoapFault
from .stubs.echo import EchoService
from .stubs.server import ServerTLS, StubServer
from .tls import create_session
from .trace import Tracer
from .vihf import INS_TEST_OID, AuthMode, Patient, sign_vihf, verify_vihf
from .xmlparse import parse_xml
from .xmlsig import VerifySettings

TEST_PATIENT = Patient("279035121518989", INS_TEST_OID)
"""A well-formed test INS (test authority OID): never a real person's."""

ECHO_NS = "urn:cisis-transport:echo"


@dataclass(frozen=True)
class StepResult:
    """One step of a run: ``duration_ms`` in milliseconds, ``detail`` one line for a person."""

    name: str
    ok: bool
    duration_ms: float
    detail: str


def run_step(name: str, action: Callable[[], str]) -> StepResult:
    """Run one step, turning any library error into a failed result with its message."""
    started = time.perf_counter()
    try:
        detail = action()
        ok = True
    except CisisError as error:
        detail, ok = str(error), False
    except Exception as error:  # a smoke run reports every failure instead of stopping
        detail, ok = f"{type(error).__name__}: {error}", False
    return StepResult(name, ok, (time.perf_counter() - started) * 1000, detail)


def run(profile_path: Path | None = None, trace: Path | None = None) -> Iterator[StepResult]:
    """Run the scenario, yielding each step's result as soon as it is known."""
    if profile_path is not None:
        from .config import load_profile

        profile = load_profile(profile_path)
        yield from _profile_steps(profile)
        return
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cisis-smoke-")))
        holder: dict[str, object] = {}

        def make_pki() -> str:
            pki = examplepki.generate(directory / "pki")
            holder["pki"] = pki
            return f"fresh example PKI in {pki.directory}"

        result = run_step("example PKI", make_pki)
        yield result
        if not result.ok:
            return
        pki = holder["pki"]
        assert isinstance(pki, examplepki.ExamplePKI)
        server = StubServer(
            EchoService(VerifySettings(pki.ca_bundle)),
            ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle),
        )
        stack.enter_context(server)
        tracer = Tracer(trace) if trace is not None else None
        for mode in AuthMode:
            profile = example_profile(pki, mode, {"echo": f"{server.url}/echo"})
            yield from _mode_steps(profile, mode, tracer)
        yield run_step(
            "refusal: VIHF signed with an authentication key",
            lambda: _auth_key_refused(pki, server.url, tracer),
        )


def _credentials_step(
    name: str, profile: Profile, holder: dict[str, Credential], label: Callable[[Credential], str]
) -> StepResult:
    def load() -> str:
        holder["tls"] = profile.tls_credential.load(Purpose.TLS_CLIENT)
        holder["signature"] = profile.signature_credential.load(Purpose.SIGNATURE)
        return f"TLS {label(holder['tls'])}; signature {label(holder['signature'])}"

    return run_step(name, load)


def _profile_steps(profile: Profile) -> Iterator[StepResult]:
    holder: dict[str, Credential] = {}
    result = _credentials_step("credentials", profile, holder, lambda c: c.dn)
    yield result
    if result.ok:
        yield run_step("vihf", lambda: _vihf(profile, holder["signature"]))


def _mode_steps(profile: Profile, mode: AuthMode, tracer: Tracer | None) -> Iterator[StepResult]:
    holder: dict[str, Credential] = {}
    result = _credentials_step(
        f"credentials ({mode})", profile, holder, lambda c: c.common_name or c.dn
    )
    yield result
    if not result.ok:
        return
    yield run_step(f"vihf sign and verify ({mode})", lambda: _vihf(profile, holder["signature"]))
    yield run_step(
        f"call over mutual TLS ({mode})",
        lambda: _echo(profile, holder["tls"], holder["signature"], tracer),
    )


def _vihf(profile: Profile, signature: Credential) -> str:
    vihf = profile.identity.with_patient(TEST_PATIENT)
    assertion = sign_vihf(vihf, signature.signer, options=profile.vihf_options)
    verified = verify_vihf(assertion, VerifySettings(profile.ca_bundle))
    return f"{verified.vihf.mode} assertion {verified.assertion_id} signed by {verified.signer_dn}"


def _echo(profile: Profile, tls: Credential, signature: Credential, tracer: Tracer | None) -> str:
    assertion = sign_vihf(profile.identity.with_patient(TEST_PATIENT), signature.signer)
    answer = _call(profile, tls, assertion, tracer, "echo")
    text = answer.findtext(f".//{{{ECHO_NS}}}message")
    if text != "ping":
        raise AssertionError(f"the stub echoed {text!r} instead of 'ping'")
    return "the stub verified the VIHF and echoed the request"


def _call(
    profile: Profile,
    tls: Credential,
    assertion: etree._Element,
    tracer: Tracer | None,
    operation: str,
) -> etree._Element:
    url = profile.endpoint("echo")
    payload = etree.Element(f"{{{ECHO_NS}}}Echo", nsmap={None: ECHO_NS})
    etree.SubElement(payload, f"{{{ECHO_NS}}}message").text = "ping"
    envelope = build_envelope(f"{ECHO_NS}:Echo", url, payload, assertions=[assertion])
    body = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    prefix = tracer.next_prefix(operation) if tracer else None
    if tracer and prefix:
        tracer.write(prefix, "request", body)
    headers = {"Content-Type": f'application/soap+xml; charset=utf-8; action="{ECHO_NS}:Echo"'}
    with create_session(tls, profile.tls_settings()) as session:
        response = send(session, url, body, headers)
    if tracer and prefix:
        tracer.write(prefix, "response", response.content)
    return raise_for_fault(parse_xml(response.content))


def _auth_key_refused(pki: examplepki.ExamplePKI, url: str, tracer: Tracer | None) -> str:
    profile = example_profile(pki, AuthMode.INDIRECTE, {"echo": f"{url}/echo"})
    tls = profile.tls_credential.load(Purpose.TLS_CLIENT)
    # The authentication key signs on purpose: the point is to watch the service refuse it.
    auth_only = load_pkcs12(pki.p12("org-auth"), pki.password)
    assertion = sign_vihf(profile.identity.with_patient(TEST_PATIENT), auth_only.signer)
    try:
        _call(profile, tls, assertion, tracer, "echo-refused")
    except SoapFault as fault:
        if fault.subcode != "DMPInvalidCertificate":
            raise
        return f"refused as the DMP does: {fault.code}/{fault.subcode}"
    raise AssertionError("the stub accepted a VIHF signed with an authentication-only key")
