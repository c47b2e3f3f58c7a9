"""Property-based fuzzing of every reader of what a peer sends, and of the MTOM decoder.

Each reader gets realistic messages (built by the project's builders, as the stubs and the
services send them) mutated by hypothesis (elements removed, duplicated or emptied, text and
attributes replaced, children added), and random bytes: whatever it is given, it returns a result
or raises a project exception (:class:`transport.errors.CisisError`), never another one. The MTOM
decoder gives the same result however the body is chunked, and leaves no file after a refusal. The
VIHF builder and verifier round-trip on generated identities.

CI runs a bounded number of examples per property; a deeper run is one command::

    FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_fuzz_readers.py
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from tests.test_hl7v3 import CASES, indirect_vihf
from tests.test_stub_insi import ECETINSI
from tests.test_stub_xds import entry, submission_set
from transport.dmp import xds
from transport.errors import CisisError
from transport.soap import mtom
from transport.soap.envelope import raise_for_fault
from transport.stubs.insi import TEST_PERSONS, invalid_request
from transport.teleservices.client import read_assertion_ps
from transport.teleservices.insi import (
    Report,
    Resultat,
    VitaleSearch,
    build_resultat,
    build_traits_search,
    build_vitale_search,
    read_resultat,
    read_traits_search,
    read_vitale_search,
)
from transport.vihf import (
    INS_OIDS,
    AuthMode,
    Patient,
    Vihf,
    build_assertion,
    ins_key,
    read_vihf,
    sign_vihf,
    verify_vihf,
)
from transport.xml import parse_xml

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis directory left in the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

Reader = Callable[[etree._Element], Any]


def _xds_seeds() -> dict[str, tuple[Callable[[], etree._Element], Reader]]:
    document = entry(b"fuzzed")
    stored = replace(document, entry_uuid=xds.new_entry_uuid())
    request = xds.DocumentRequest("1.2.250.1.213.4.1.1.1.2", document.unique_id)
    error = xds.RegistryError("XDSRegistryError", "refus", "Error", "lieu")
    return {
        "ITI-18 answer": (lambda: xds.query_response([stored, stored]), xds.read_query_response),
        "ITI-18 references": (
            lambda: xds.query_response(object_refs=["urn:uuid:1"], total=3),
            xds.read_query_response,
        ),
        "registry response": (lambda: xds.registry_response([error]), xds.read_registry_response),
        "ITI-43 answer": (
            lambda: xds.retrieve_response([(request, "text/plain", "a@x")], [error]),
            xds.read_retrieve_response,
        ),
        "ITI-43 request": (
            lambda: xds.retrieve_request([request, request]),
            xds.read_retrieve_request,
        ),
        "ITI-18 request": (
            lambda: xds.query_request(xds.find_documents(document.patient, (xds.APPROVED,))),
            xds.read_query_request,
        ),
        "ITI-41 request": (
            lambda: xds.provide_and_register_request(
                submission_set(), [xds.OutgoingDocument(document, "a@x")]
            ),
            xds.read_provide_and_register,
        ),
        "ITI-57 request": (
            lambda: xds.update_status_request(
                submission_set(), "urn:uuid:1", xds.APPROVED, xds.ARCHIVED
            ),
            xds.read_submit_objects,
        ),
    }


def _insi_seeds() -> dict[str, tuple[Callable[[], etree._Element], Reader]]:
    found = Resultat.of(Report.FOUND, TEST_PERSONS[0])
    vitale = VitaleSearch(
        TEST_PERSONS[0].traits.birth_date or "", individual=TEST_PERSONS[0].active.id
    )
    return {
        "RESULTAT found": (lambda: build_resultat(found), read_resultat),
        "RESULTAT several": (lambda: build_resultat(Resultat.of(Report.SEVERAL)), read_resultat),
        "traits search": (lambda: build_traits_search(ECETINSI), read_traits_search),
        "Vitale search": (lambda: build_vitale_search(vitale), read_vitale_search),
        "siram fault": (
            lambda: parse_xml(invalid_request("détail").response("uuid:1").body),
            raise_for_fault,
        ),
    }


SEEDS: dict[str, tuple[Callable[[], etree._Element], Reader]] = {
    **{name: (lambda case=case: case.build().build(), case.reader) for name, case in CASES.items()},
    **_xds_seeds(),
    **_insi_seeds(),
}


# --- mutations ---------------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
_OPERATIONS = ("remove", "duplicate", "empty", "text", "attribute", "drop attribute", "child")


def _mutate(root: etree._Element, data: st.DataObject) -> etree._Element:
    """``root`` (a copy) changed by one to four operations hypothesis picks."""
    root = parse_xml(etree.tostring(root))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        nodes = [node for node in root.iter() if isinstance(node.tag, str)]
        node = nodes[data.draw(st.integers(0, len(nodes) - 1), label="node")]
        operation = data.draw(st.sampled_from(_OPERATIONS), label="operation")
        parent = node.getparent()
        if operation == "remove" and parent is not None:
            parent.remove(node)
        elif operation == "duplicate" and parent is not None:
            parent.insert(parent.index(node), parse_xml(etree.tostring(node)))
        elif operation == "empty":
            for child in list(node):
                node.remove(child)
            node.text = None
        elif operation == "text":
            node.text = data.draw(_TEXT, label="text")
        elif operation == "attribute":
            names = sorted(node.attrib) or ["root"]
            name = data.draw(st.sampled_from(names), label="attribute")
            node.set(name, data.draw(_TEXT, label="value"))
        elif operation == "drop attribute" and node.attrib:
            del node.attrib[data.draw(st.sampled_from(sorted(node.attrib)), label="dropped")]
        elif operation == "child":
            etree.SubElement(node, node.tag).text = data.draw(_TEXT, label="child text")
    return root


def _read(reader: Reader, element: etree._Element) -> None:
    """Run ``reader``: a result or a project exception; anything else fails the property."""
    with contextlib.suppress(CisisError):
        reader(element)


@pytest.mark.parametrize("name", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_a_mutated_message_reads_or_raises_a_project_error(name, data):
    build, reader = SEEDS[name]
    _read(reader, _mutate(build(), data))


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_reads_as_built(name):
    build, reader = SEEDS[name]
    try:
        reader(parse_xml(etree.tostring(build())))
    except CisisError as error:  # the fault seed reads as the exception it carries
        assert name == "siram fault", error


_RANDOM_XML = st.one_of(
    st.binary(max_size=512),
    st.builds(
        lambda tag, text: f"<{tag}>{text}</{tag}>".encode(),
        st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,8}", fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60).map(
            lambda text: text.replace("<", "&lt;").replace("&", "&amp;")
        ),
    ),
)


@pytest.mark.parametrize("name", sorted(SEEDS))
@FUZZ
@given(data=_RANDOM_XML)
def test_random_bytes_read_or_raise_a_project_error(name, data):
    _, reader = SEEDS[name]
    try:
        element = parse_xml(data)
    except CisisError:
        return
    _read(reader, element)


@pytest.mark.parametrize("reader", [read_vihf, read_assertion_ps], ids=["VIHF", "assertion PS"])
@FUZZ
@given(data=st.data())
def test_a_mutated_assertion_reads_or_raises_a_project_error(reader, data):
    assertion = build_assertion(indirect_vihf(), "CN=FUZZ,O=TEST,C=FR", now=NOW)
    _read(reader, _mutate(assertion, data))


# --- the MTOM decoder --------------------------------------------------------------------------


def _package(parts: list[bytes]) -> mtom.MtomMessage:
    root = b"<soap:Envelope xmlns:soap='http://www.w3.org/2003/05/soap-envelope'><soap:Body/>"
    root += b"</soap:Envelope>"
    attachments = [mtom.Attachment(f"p{n}@x", part) for n, part in enumerate(parts)]
    return mtom.encode(root, attachments)


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(body) + 1) for cut in cuts})
    return [body[start:end] for start, end in zip([0, *points], [*points, len(body)], strict=True)]


def _decoded(source: object, content_type: str, directory: Path | None) -> tuple[bytes, dict]:
    decoded = mtom.decode(source, content_type, directory=directory)  # type: ignore[arg-type]
    return decoded.root, {cid: part.read_bytes() for cid, part in decoded.parts.items()}


@FUZZ
@given(
    parts=st.lists(st.binary(max_size=300), max_size=3),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_mtom_decodes_the_same_however_the_body_is_chunked(parts, cuts, tmp_path_factory):
    message = _package(parts)
    body = b"".join(message.chunks())
    whole = _decoded(body, message.content_type, None)
    directory = tmp_path_factory.mktemp("mtom")
    assert _decoded(_split(body, cuts), message.content_type, directory) == whole
    assert whole[1] == {f"p{n}@x": part for n, part in enumerate(parts)}


@FUZZ
@given(
    parts=st.lists(st.binary(max_size=200), min_size=1, max_size=2),
    data=st.data(),
)
def test_a_mutated_mtom_body_decodes_or_refuses_leaving_no_file(parts, data, tmp_path_factory):
    message = _package(parts)
    body = bytearray(b"".join(message.chunks()))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        position = data.draw(st.integers(0, max(len(body) - 1, 0)), label="position")
        operation = data.draw(st.sampled_from(("cut", "flip", "insert", "delete")), label="op")
        if operation == "cut":
            del body[position:]
        elif operation == "flip" and body:
            body[position] ^= data.draw(st.integers(1, 255), label="bits")
        elif operation == "insert":
            body[position:position] = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        elif body:
            del body[position : position + data.draw(st.integers(1, 40), label="length")]
    directory = tmp_path_factory.mktemp("mtom")
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=6), label="cuts")
    try:
        _decoded(_split(bytes(body), cuts), message.content_type, directory)
    except CisisError:
        assert list(directory.iterdir()) == []


def test_a_part_refused_for_its_encoding_leaves_no_file(tmp_path):
    message = _package([b"content"])
    body = b"".join(message.chunks()).replace(
        b"Content-ID: <p0@x>", b"Content-Transfer-Encoding: x-evil\r\nContent-ID: <p0@x>", 1
    )
    with pytest.raises(CisisError, match="Content-Transfer-Encoding"):
        mtom.decode(body, message.content_type, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- the VIHF builder and verifier on generated identities ---------------------------------------

_NAME = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd", "Zs")), min_size=1).filter(
    str.strip
)


@st.composite
def _identities(draw: st.DrawFn) -> Vihf:
    body = draw(st.from_regex(r"[12][0-9]{12}", fullmatch=True))
    patient = Patient(body + ins_key(body), draw(st.sampled_from(sorted(INS_OIDS))))
    return replace(
        indirect_vihf(),
        subject_id=draw(st.from_regex(r"[0-9A-Z/]{1,20}", fullmatch=True)),
        structure_id=draw(st.from_regex(r"[0-9]{9,15}", fullmatch=True)),
        user_name=draw(_NAME),
        mode=draw(st.sampled_from(list(AuthMode))),
        patient=patient,
    )


@FUZZ
@given(identity=_identities())
def test_the_vihf_round_trips_on_generated_identities(identity, load, verify_settings):
    verified = verify_vihf(sign_vihf(identity, load("org-sign").signer), verify_settings)
    assert verified.vihf == identity
