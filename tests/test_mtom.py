"""MTOM/XOP encoding and decoding: byte-exact round trips, chunking, malformed bodies, memory,
the official DMP examples, and a real exchange with a stub over mutual TLS."""

from __future__ import annotations

import base64
import errno
import hashlib
import itertools
import os
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests
from lxml import etree

from tests.conftest import REFERENCE
from transport.errors import TransportError, ValidationError
from transport.soap import mtom
from transport.soap.channel import send
from transport.soap.mtom import (
    XOP_NS,
    Attachment,
    Decoded,
    MtomError,
    decode,
    encode,
    include,
    new_content_id,
)
from transport.stubs.server import ServerTLS, StubRequest, StubResponse, StubServer
from transport.tls import TLSSettings, create_session
from transport.xml import parse_xml

DMP_EXAMPLES = REFERENCE / "dmp-examples"
MIB = 1024 * 1024
BOUNDARY = "b0undary"
CONTENT_TYPE = f'multipart/related; type="application/xop+xml"; boundary="{BOUNDARY}"'

EDGE_CASES = {
    "empty": b"",
    "one byte": b"x",
    "one CR": b"\r",
    "ends with CRLF": b"<ClinicalDocument/>\r\n",
    "ends with CRLF CRLF": b"<a/>\r\n\r\n",
    "starts with CRLF--": b"\r\n--not the boundary\r\n",
    "starts with CRLFCRLF": b"\r\n\r\nafter an empty line",
    "every byte value": bytes(range(256)) * 4,
    "only CR LF and dashes": b"\r\n-\r\n--\r\n---\r\n\r\n--",
}


def root_with_includes(*content_ids: str) -> bytes:
    """A SOAP 1.2 envelope whose body holds one xop:Include per content id."""
    soap = "http://www.w3.org/2003/05/soap-envelope"
    envelope = etree.Element(f"{{{soap}}}Envelope", nsmap={"soap": soap})
    body = etree.SubElement(envelope, f"{{{soap}}}Body")
    for content_id in content_ids:
        etree.SubElement(body, "Document").append(include(content_id))
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


def body_of(message) -> bytes:
    return b"".join(message.chunks())


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    return (data[index : index + size] for index in range(0, len(data), size))


def file_pieces(path: Path, size: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(size):
            yield block


def write_random(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` random bytes, 1 MiB at a time; return their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        while size > 0:
            block = os.urandom(min(MIB, size))
            digest.update(block)
            handle.write(block)
            size -= len(block)
    return digest.hexdigest()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    for block in file_pieces(path, MIB):
        digest.update(block)
    return digest.hexdigest()


def hand_built(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    """A multipart body with BOUNDARY, each part given as its header block + CRLFCRLF + data."""
    body = preamble + b"".join(b"--%s\r\n%s\r\n" % (BOUNDARY.encode(), part) for part in parts)
    return body + b"--%s--%s" % (BOUNDARY.encode(), epilogue)


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("data", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_bytes_round_trip_exactly(data: bytes) -> None:
    root = root_with_includes("doc@example")
    message = encode(root, [Attachment("doc@example", data, "text/xml")])
    body = body_of(message)
    assert len(body) == message.length
    decoded = decode(body, message.content_type)
    assert decoded.root == root
    assert decoded.root_content_type.startswith("application/xop+xml")
    part = decoded.part_for(parse_xml(decoded.root).find(f".//{{{XOP_NS}}}Include"))
    assert part.read_bytes() == data
    assert part.size == len(data)
    assert part.sha256 == hashlib.sha256(data).hexdigest()
    assert part.content_type == "text/xml"
    assert part.path is None


@pytest.mark.parametrize("data", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_file_round_trip_exactly(data: bytes, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    received = tmp_path / "received"
    received.mkdir()
    message = encode(b"<r/>", [Attachment("doc@example", source)])
    decoded = decode(body_of(message), message.content_type, directory=received)
    part = decoded.parts["doc@example"]
    assert part.path is not None
    assert part.path.parent == received
    assert part.data is None
    assert part.path.read_bytes() == data
    with part.open() as stream:
        assert stream.read() == data
    assert part.sha256 == hashlib.sha256(data).hexdigest()


def test_several_parts_in_order_and_by_include(tmp_path: Path) -> None:
    contents = {new_content_id(): os.urandom(size) + b"\r\n" for size in (0, 1, 1000, 70_000)}
    ids = list(contents)
    on_disk = tmp_path / "third.bin"
    on_disk.write_bytes(contents[ids[2]])
    attachments = [
        Attachment(content_id, on_disk if index == 2 else data, f"application/x-{index}")
        for index, (content_id, data) in enumerate(contents.items())
    ]
    root = root_with_includes(*reversed(ids))
    message = encode(root, attachments, action="urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b")
    body = body_of(message)
    # Parts go on the wire in the order given.
    positions = [body.index(f"Content-ID: <{content_id}>".encode()) for content_id in ids]
    assert positions == sorted(positions)
    decoded = decode(body, message.content_type)
    assert list(decoded.parts) == ids
    for element in parse_xml(decoded.root).iter(f"{{{XOP_NS}}}Include"):
        part = decoded.part_for(element)
        assert part.read_bytes() == contents[part.content_id]
        assert part.content_type == f"application/x-{ids.index(part.content_id)}"


def test_the_action_goes_in_both_content_types() -> None:
    message = encode(b"<r/>", [], action="urn:ihe:iti:2007:RetrieveDocumentSet")
    assert message.content_type.startswith("multipart/related;")
    for parameter in (
        'type="application/xop+xml"',
        f'boundary="{message.boundary}"',
        f'start="<{message.root_content_id}>"',
        'start-info="application/soap+xml"',
        'action="urn:ihe:iti:2007:RetrieveDocumentSet"',
    ):
        assert parameter in message.content_type
    decoded = decode(body_of(message), message.content_type)
    assert decoded.root_content_type == (
        'application/xop+xml; charset=UTF-8; type="application/soap+xml";'
        ' action="urn:ihe:iti:2007:RetrieveDocumentSet"'
    )


def test_a_message_can_be_sent_again_and_its_length_is_exact(tmp_path: Path) -> None:
    source = tmp_path / "doc.bin"
    write_random(source, 3 * mtom.CHUNK_SIZE + 17)
    message = encode(b"<r/>", [Attachment("a@x", source), Attachment("b@x", b"\r\n")])
    first, second = body_of(message), b"".join(message)
    assert first == second
    assert len(first) == message.length == len(message)
    assert max(len(chunk) for chunk in message.chunks()) <= mtom.CHUNK_SIZE


def test_every_boundary_is_new_and_absent_from_the_content() -> None:
    first, second = encode(b"<r/>", []), encode(b"<r/>", [])
    assert first.boundary != second.boundary
    assert len(first.boundary) >= 40


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 4096])
def test_decoding_does_not_depend_on_how_the_body_is_cut(size: int) -> None:
    data = {"a@x": b"\r\n--" + bytes(range(256)) + b"\r\n", "b@x": b"", "c@x": b"--\r\n"}
    message = encode(b"<r/>\r\n", [Attachment(key, value) for key, value in data.items()])
    decoded = decode(pieces(body_of(message), size), message.content_type)
    assert decoded.root == b"<r/>\r\n"
    assert {key: part.read_bytes() for key, part in decoded.parts.items()} == data


def test_a_cut_anywhere_in_the_body_changes_nothing() -> None:
    data = b"\r\n--\r\n" + bytes(range(256)) + b"\r\n"
    message = encode(b"<r/>", [Attachment("a@x", data), Attachment("b@x", b"")])
    body = body_of(message)
    for cut in range(len(body) + 1):
        decoded = decode([body[:cut], body[cut:]], message.content_type)
        assert decoded.root == b"<r/>", cut
        assert decoded.parts["a@x"].read_bytes() == data, cut
        assert decoded.parts["b@x"].read_bytes() == b"", cut


@pytest.mark.parametrize("size", [1, 7, 4096, 65537])
def test_multi_megabyte_file_streamed_from_disk_in_odd_chunks(tmp_path: Path, size: int) -> None:
    source = tmp_path / "document.bin"
    expected = write_random(source, 3 * MIB + 5)
    wire = tmp_path / "message.mime"
    message = encode(root_with_includes("big@x"), [Attachment("big@x", source)])
    with wire.open("wb") as handle:
        for chunk in message.chunks():
            handle.write(chunk)
    received = tmp_path / "received"
    received.mkdir()
    decoded = decode(file_pieces(wire, size), message.content_type, directory=received)
    part = decoded.parts["big@x"]
    assert part.size == 3 * MIB + 5
    assert part.sha256 == expected
    assert part.path is not None
    assert sha256_of_file(part.path) == expected
    assert [path.name for path in received.iterdir()] == [part.path.name]


# --- decoding what other implementations send --------------------------------------------------


def test_lines_that_look_like_the_boundary_are_data() -> None:
    tricky = (
        b"\r\n--" + BOUNDARY.encode() + b"X\r\n"  # the boundary, longer
        b"\r\n--" + BOUNDARY.encode()[:-1] + b"\r\n"  # the boundary, shorter
        b"\n--" + BOUNDARY.encode() + b"\r\n"  # after a bare LF: not a line start
        b"x--" + BOUNDARY.encode() + b"\r\n"  # inside a line
        b"\r\n--" + BOUNDARY.encode() + b"-\r\n"  # one dash is not the closing "--"
    )
    body = hand_built(
        b"Content-ID: <root>\r\n\r\n<r/>", b"Content-ID: <data>\r\n\r\n" + tricky + b"\r\n"
    )
    decoded = decode(body, CONTENT_TYPE)
    assert decoded.parts["data"].read_bytes() == tricky + b"\r\n"


def test_unquoted_parameters_preamble_epilogue_padding_and_folding() -> None:
    body = hand_built(
        b"content-id: <attachment@x>\r\nCONTENT-TYPE: image/png;\r\n\tname=scan.png\r\n"
        b"\r\n\x00\r\n",
        b'Content-Type: application/xop+xml;\r\n type="application/soap+xml"\r\n'
        b"Content-Id:   <root@x>  \r\n\r\n<r/>",
        preamble=b"This is a preamble.\r\n--b0undary is not here\r\n",
        epilogue=b"\r\nepilogue, ignored\r\n",
    ).replace(b"--b0undary\r\nContent-Type", b"--b0undary \t \r\nContent-Type")
    content_type = (
        "Multipart/Related; BOUNDARY=b0undary; type=application/xop+xml; start=<root@x>;"
        " start-info=application/soap+xml"
    )
    for cut in range(len(body) + 1):
        decoded = decode([body[:cut], body[cut:]], content_type)
        assert decoded.root == b"<r/>", cut
        assert decoded.parts["attachment@x"].read_bytes() == b"\x00\r\n", cut
    assert decoded.root_content_type == 'application/xop+xml; type="application/soap+xml"'
    part = decoded.parts["attachment@x"]
    assert part.content_type == "image/png; name=scan.png"
    assert part.headers["content-id"] == "<attachment@x>"


def test_without_start_the_first_part_is_the_root() -> None:
    body = hand_built(b"Content-ID: <first>\r\n\r\n<r/>", b"Content-ID: <second>\r\n\r\ndata")
    decoded = decode(body, CONTENT_TYPE)
    assert decoded.root == b"<r/>"
    assert list(decoded.parts) == ["second"]


def test_a_root_without_headers_and_a_part_without_content_type() -> None:
    body = hand_built(b"\r\n<r/>", b"Content-ID: <p>\r\n\r\n")
    decoded = decode(body, CONTENT_TYPE)
    assert decoded.root == b"<r/>"
    assert decoded.parts["p"].read_bytes() == b""
    assert decoded.parts["p"].content_type == "text/plain; charset=us-ascii"


@pytest.mark.parametrize("encoding", ["binary", "8bit", "7BIT"])
def test_identity_transfer_encodings_keep_the_bytes(encoding: str) -> None:
    header = f"Content-ID: <p>\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n".encode()
    body = hand_built(b"Content-ID: <r>\r\n\r\n<r/>", header + b"  text \r\n")
    assert decode(body, CONTENT_TYPE).parts["p"].read_bytes() == b"  text \r\n"


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_base64_parts_are_decoded(size: int) -> None:
    data = bytes(range(256)) * 3
    encoded = b"\r\n".join(pieces(base64.b64encode(data), 76))
    header = b"Content-ID: <p>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    body = hand_built(b"Content-ID: <r>\r\n\r\n<r/>", header + encoded)
    part = decode(pieces(body, size), CONTENT_TYPE).parts["p"]
    assert part.read_bytes() == data
    assert part.sha256 == hashlib.sha256(data).hexdigest()


def test_a_plain_soap_body_is_the_root() -> None:
    fault = b"<soap:Envelope xmlns:soap='http://www.w3.org/2003/05/soap-envelope'/>\r\n"
    decoded = decode(pieces(fault, 5), "application/soap+xml; charset=utf-8")
    assert decoded == Decoded(fault, "application/soap+xml; charset=utf-8", {})


# --- refusals ----------------------------------------------------------------------------------


def test_mtom_errors_are_transport_errors() -> None:
    assert issubclass(MtomError, TransportError)


def _truncations() -> dict[str, bytes]:
    good = hand_built(b"Content-ID: <r>\r\n\r\n<r/>", b"Content-ID: <p>\r\n\r\ndata")
    return {
        "empty body": b"",
        "no boundary at all": b"just some bytes",
        "inside the root's headers": good[:20],
        "inside a part": good[: good.index(b"data") + 2],
        "just before the closing dashes": good[:-2],
        "one closing dash": good[:-1],
        "no closing boundary": good.rpartition(b"\r\n--")[0],
    }


@pytest.mark.parametrize("body", _truncations().values(), ids=_truncations().keys())
def test_a_truncated_body_is_refused(body: bytes) -> None:
    with pytest.raises(MtomError, match="ends"):
        decode(body, CONTENT_TYPE)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (
            hand_built(b"Content-ID: <a>\r\n\r\n<r/>"),
            CONTENT_TYPE + '; start="<root>"',
            "<root> the start parameter names",
        ),
        (hand_built(b"Content-ID: <r>\r\n\r\n<r/>", b"\r\nx"), CONTENT_TYPE, "no Content-ID"),
        (
            hand_built(b"Content-ID: <r>\r\n\r\n<r/>", b"Content-ID: <r>\r\n\r\nx"),
            CONTENT_TYPE,
            "two parts",
        ),
        (hand_built(b"Content-ID <r>\r\n\r\n<r/>"), CONTENT_TYPE, "not a header field"),
        (
            hand_built(b"Content-ID: <r>\r\n\r\n", b"Content-ID: <p>\r\n" + b"X: y\r\n" * 20000),
            CONTENT_TYPE,
            "do not end with an empty line",
        ),
        (
            hand_built(b"Content-ID: <r>\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"),
            CONTENT_TYPE,
            "quoted-printable",
        ),
        (
            hand_built(b"Content-ID: <r>\r\nContent-Transfer-Encoding: base64\r\n\r\nA*==\r\n"),
            CONTENT_TYPE,
            "not valid base64",
        ),
        (
            hand_built(b"Content-ID: <r>\r\nContent-Transfer-Encoding: base64\r\n\r\nQUJD\r\nQQ"),
            CONTENT_TYPE,
            "base64 quantum",
        ),
        (hand_built(b"\r\n<r/>"), "multipart/related; type=application/xop+xml", "boundary"),
        (hand_built(b"\r\n<r/>"), f"multipart/mixed; boundary={BOUNDARY}", "multipart/related"),
    ],
    ids=[
        "missing start part",
        "part without Content-ID",
        "duplicate Content-ID",
        "header line without colon",
        "missing header terminator",
        "quoted-printable",
        "bad base64",
        "truncated base64",
        "no boundary parameter",
        "not related",
    ],
)
def test_malformed_bodies_are_refused(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(MtomError, match=message):
        decode(body, content_type)


def test_a_refused_body_leaves_no_file_behind(tmp_path: Path) -> None:
    message = encode(b"<r/>", [Attachment("a@x", os.urandom(300_000)), Attachment("b@x", b"x")])
    body = body_of(message)
    with pytest.raises(MtomError):
        decode(pieces(body[:-300], 4096), message.content_type, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("encoding", ["quoted-printable", "x-uuencode"])
def test_a_part_refused_for_its_transfer_encoding_leaves_no_file_nor_handle(
    tmp_path: Path, encoding: str
) -> None:
    body = hand_built(
        b"Content-ID: <r>\r\n\r\n<r/>",
        b"Content-ID: <ok>\r\n\r\nkept until the refusal",
        f"Content-ID: <p>\r\nContent-Transfer-Encoding: {encoding}\r\n\r\nx".encode(),
    )
    with pytest.raises(MtomError, match=encoding):
        decode(body, CONTENT_TYPE, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []
    descriptors = Path("/proc/self/fd")
    if descriptors.is_dir():
        opened = [os.path.realpath(entry) for entry in descriptors.iterdir()]
        assert not [path for path in opened if path.startswith(str(tmp_path))]


def test_bare_lf_line_ends_are_refused_with_a_hint() -> None:
    body = hand_built(b"Content-ID: <r>\r\n\r\n<r/>").replace(b"\r\n", b"\n")
    with pytest.raises(MtomError) as caught:
        decode(body, CONTENT_TYPE)
    assert "CRLF" in str(caught.value)


def test_parts_kept_in_memory_are_bounded(tmp_path: Path) -> None:
    message = encode(b"<r/>", [Attachment("a@x", b"y" * 5000)])
    with pytest.raises(MtomError, match="larger than 4096 bytes"):
        decode(body_of(message), message.content_type, max_in_memory=4096)
    decoded = decode(body_of(message), message.content_type, directory=tmp_path, max_in_memory=4096)
    assert decoded.parts["a@x"].size == 5000
    with pytest.raises(MtomError, match="larger than 4096 bytes"):
        decode(b"z" * 5000, "application/soap+xml", max_in_memory=4096)


def test_part_for_refuses_what_it_cannot_resolve() -> None:
    message = encode(root_with_includes("a@x"), [Attachment("a@x", b"1")])
    decoded = decode(body_of(message), message.content_type)
    with pytest.raises(MtomError, match="Content-ID <missing@x>"):
        decoded.part_for(include("missing@x"))
    other = etree.Element(f"{{{XOP_NS}}}Include", href="http://example.org/a@x")
    with pytest.raises(MtomError, match="not a cid: URL"):
        decoded.part_for(other)
    with pytest.raises(MtomError, match="xop:Include"):
        decoded.part_for(etree.Element("Document"))


def test_an_attachment_file_that_changes_size_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "doc.bin"
    source.write_bytes(b"12345")
    message = encode(b"<r/>", [Attachment("a@x", source)])
    source.write_bytes(b"1234")
    with pytest.raises(MtomError, match="shorter"):
        body_of(message)
    source.write_bytes(b"123456")
    with pytest.raises(MtomError, match="longer"):
        body_of(message)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Attachment("<a@x>", b""),
        lambda: Attachment("a b@x", b""),
        lambda: Attachment("a@x", b"", "text/xml\r\nX-Injected: 1"),
        lambda: Attachment("a@x", "not bytes"),  # type: ignore[arg-type]
        lambda: encode(b"<r/>", [Attachment("a@x", b""), Attachment("a@x", b"1")]),
        lambda: encode(b"<r/>", [], action='urn:"quoted"'),
        lambda: encode(b"<r/>", [], boundary="x" * 71),
        lambda: encode(b"<r/>--abc", [], boundary="abc"),
        lambda: encode(b"<r/>", [Attachment("a@x", b"\r\n--abc\r\n")], boundary="abc"),
        lambda: encode(b"<r/>", [Attachment("a@x", Path("/nonexistent/file"))]),
        lambda: include("a>b"),
        lambda: new_content_id("bad domain"),
    ],
    ids=[
        "brackets in Content-ID",
        "space in Content-ID",
        "CRLF in content type",
        "source not bytes",
        "duplicate Content-ID",
        "quote in action",
        "boundary too long",
        "boundary in root",
        "boundary in attachment",
        "missing file",
        "bad include id",
        "bad domain",
    ],
)
def test_bad_encoder_arguments_are_refused(build) -> None:
    with pytest.raises(ValidationError):
        build()


def test_a_chosen_boundary_is_used() -> None:
    message = encode(b"<r/>", [Attachment("a@x", b"--ab")], boundary="abc")
    assert body_of(message).startswith(b"--abc\r\n")
    assert decode(body_of(message), message.content_type).parts["a@x"].read_bytes() == b"--ab"


def test_include_percent_encodes_and_part_for_decodes() -> None:
    element = include("doc_1%@urn:ihe:iti:xds-b:2007")
    assert element.get("href") == "cid:doc_1%25@urn%3Aihe%3Aiti%3Axds-b%3A2007"
    assert element.tag == f"{{{XOP_NS}}}Include"
    first, second = new_content_id(), new_content_id("example.org")
    assert first != second
    assert first.endswith("@cisis-transport")
    assert second.endswith("@example.org")


# --- memory ------------------------------------------------------------------------------------


def test_fifty_megabytes_stream_through_small_memory(tmp_path: Path) -> None:
    size = 50 * MIB
    source = tmp_path / "big.bin"
    expected = write_random(source, size)
    message = encode(root_with_includes("big@x"), [Attachment("big@x", source)])
    wire = tmp_path / "message.mime"
    tracemalloc.start()
    try:
        with wire.open("wb") as handle:
            for chunk in message.chunks():
                handle.write(chunk)
        encode_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        received = tmp_path / "received"
        received.mkdir()
        with wire.open("rb") as stream:
            decoded = decode(stream, message.content_type, directory=received)
        decode_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert wire.stat().st_size == message.length
    part = decoded.parts["big@x"]
    assert part.size == size
    assert part.sha256 == expected
    assert part.path is not None
    assert sha256_of_file(part.path) == expected
    assert encode_peak < 4 * MIB, encode_peak
    # The decoder holds a few chunks (the one read, its buffer, those queued for the digests and
    # the file), never an amount that grows with the part.
    assert decode_peak < (mtom._QUEUED + 5) * mtom.CHUNK_SIZE, decode_peak


@pytest.mark.parametrize(
    "digests", [set(), {"sha1"}, {"sha256"}, {"sha1", "sha256"}], ids=lambda d: "+".join(sorted(d))
)
@pytest.mark.parametrize("into", ["memory", "files"])
def test_only_the_digests_asked_for_are_computed(
    tmp_path: Path, digests: set[str], into: str
) -> None:
    data = os.urandom(3 * MIB + 1)
    message = encode(root_with_includes("doc@x"), [Attachment("doc@x", data)])
    directory = tmp_path if into == "files" else None
    decoded = decode(
        pieces(body_of(message), 65537), message.content_type, directory=directory, digests=digests
    )
    part = decoded.parts["doc@x"]
    assert part.read_bytes() == data
    assert part.sha1 == (
        hashlib.sha1(data, usedforsecurity=False).hexdigest() if "sha1" in digests else None
    )
    assert part.sha256 == (hashlib.sha256(data).hexdigest() if "sha256" in digests else None)


def test_an_unknown_digest_is_refused() -> None:
    message = encode(b"<r/>", [Attachment("doc@x", b"x")])
    with pytest.raises(ValidationError, match="digests"):
        decode(body_of(message), message.content_type, digests={"md5"})


def test_a_part_file_that_cannot_be_written_is_an_error_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread's error (here ENOSPC: the file is /dev/full) reaches the caller."""
    real_fdopen = os.fdopen

    def full_disk(descriptor: int, mode: str = "r", *args, **kwargs):
        os.close(descriptor)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), mode, *args, **kwargs)

    message = encode(root_with_includes("doc@x"), [Attachment("doc@x", os.urandom(2 * MIB))])
    monkeypatch.setattr(mtom.os, "fdopen", full_disk)
    with pytest.raises(OSError) as failed:
        decode(pieces(body_of(message), 4096), message.content_type, directory=tmp_path)
    assert failed.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform != "linux", reason="the writeback hint is Linux's")
def test_writeback_hands_every_written_byte_to_the_disk_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 25 * MIB + 5  # three starts of writeback, 8 MiB apart, and a tail the fsync writes
    source = tmp_path / "big.bin"
    expected = write_random(source, size)
    message = encode(root_with_includes("big@x"), [Attachment("big@x", source)])
    handed: list[tuple[int, int]] = []
    real_fadvise = os.posix_fadvise

    def recording(descriptor: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        handed.append((offset, length))
        real_fadvise(descriptor, offset, length, advice)

    monkeypatch.setattr(mtom.os, "posix_fadvise", recording)
    received = tmp_path / "received"
    received.mkdir()
    decoded = decode(message.chunks(), message.content_type, directory=received, writeback=True)
    part = decoded.parts["big@x"]
    assert part.path is not None and sha256_of_file(part.path) == expected
    # Contiguous ranges from the start, each at least 8 MiB, none past what was written.
    lengths = [length for _, length in handed]
    assert [offset for offset, _ in handed] == list(itertools.accumulate([0, *lengths[:-1]]))
    assert len(handed) == 3 and min(lengths) >= 8 * MIB
    assert sum(lengths) <= size


def test_hashing_writer_without_a_file_hashes_every_block() -> None:
    blocks = [os.urandom(n) for n in (0, 1, 4096, 300_000, 77)]
    sha1, sha256 = hashlib.sha1(usedforsecurity=False), hashlib.sha256()
    writer = mtom.HashingWriter(None, [sha1, sha256])
    for block in blocks:
        writer.write(block)
    writer.finish()
    whole = b"".join(blocks)
    assert sha1.hexdigest() == hashlib.sha1(whole, usedforsecurity=False).hexdigest()
    assert sha256.hexdigest() == hashlib.sha256(whole).hexdigest()


def test_each_digest_of_a_hashing_writer_has_a_lane_of_its_own() -> None:
    """A digest still working on the first block does not hold the other back: the second one
    sees every block while the first waits for it (one thread for both would never get there)."""
    blocks = [os.urandom(1000), os.urandom(2000)]
    second_saw_all = threading.Event()

    class Waiting:
        def __init__(self) -> None:
            self.saw_the_other_finish = False

        def update(self, data: bytes) -> None:
            self.saw_the_other_finish = second_saw_all.wait(timeout=20)

    class Counting:
        def __init__(self) -> None:
            self.seen: list[bytes] = []

        def update(self, data: bytes) -> None:
            self.seen.append(data)
            if len(self.seen) == len(blocks):
                second_saw_all.set()

    first, second = Waiting(), Counting()
    writer = mtom.HashingWriter(None, [first, second])
    for block in blocks:
        writer.write(block)
    writer.finish()
    assert first.saw_the_other_finish
    assert second.seen == blocks


# --- the official DMP examples -----------------------------------------------------------------


def _require(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"official example {path.name} not found under {DMP_EXAMPLES}")
    return path


def test_official_td21_capture(tmp_path: Path) -> None:
    """The TD2.1 (ITI-41) capture of the official examples, decoded.

    Its quirks (spec §6): it is the multipart body alone, without the HTTP headers, so the test
    supplies the Content-Type (boundary from its first line, start = its root Content-ID); it was
    saved with bare LF line ends, which MIME forbids, so the test restores CRLF; its envelope uses
    the SOAP 1.1 namespace; its Content-IDs are file names, not addr-specs.
    """
    capture = _require(DMP_EXAMPLES / "TD2.1_-_Alimentation_request.xml").read_bytes()
    assert b"\r" not in capture
    boundary = capture.split(b"\n", 1)[0][2:].decode("ascii")
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}";'
        ' start="<rootpart@soapui.org>"; start-info="application/soap+xml"'
    )
    with pytest.raises(MtomError, match="CRLF"):
        decode(capture, content_type)
    wire = capture.replace(b"\n", b"\r\n")
    decoded = decode(pieces(wire, 1000), content_type, directory=tmp_path)
    assert decoded.root_content_type.startswith("application/xop+xml;")
    assert 'action="DocumentRepository_ProvideAndRegisterDocumentSet-b"' in (
        decoded.root_content_type
    )
    assert decoded.root.endswith(b"</soap:Envelope>")
    includes = list(parse_xml(decoded.root).iter(f"{{{XOP_NS}}}Include"))
    assert len(includes) == len(decoded.parts) == 2
    found = {
        decoded.part_for(element).content_id: decoded.part_for(element) for element in includes
    }
    assert set(found) == set(decoded.parts)
    for part in found.values():
        assert part.content_type.startswith("text/xml")
        assert part.headers["content-transfer-encoding"] == "binary"
        assert part.content_id in part.headers["content-disposition"]
        parse_xml(part.read_bytes())
    # The standalone copies of the two documents match the parts to the byte (the CDA file has
    # a BOM the capture lacks); the trailing CRLF of the CDA, which zeep would strip, is kept.
    document = found["WS_DMP_TD2.1-DocumentME2.xml"].read_bytes()
    standalone = _require(DMP_EXAMPLES / "TD2.1-DocumentME2.xml").read_bytes()
    assert document == standalone.removeprefix(b"\xef\xbb\xbf")
    assert document.endswith(b"</ClinicalDocument>\r\n")
    signature = found["WS_DMP_TD2.1-SignatureXades.xml"].read_bytes()
    standalone = _require(DMP_EXAMPLES / "TD2.1-SignatureXades.xml").read_bytes()
    assert signature == standalone.replace(b"\n", b"\r\n")


def test_official_td32_response_structure() -> None:
    """The TD3.2 (ITI-43) response example is the root part alone; its xop:Include href is
    percent-encoded the way the DMP does it, which ours must produce and resolve."""
    root = _require(DMP_EXAMPLES / "TD3.2_-_Consultation_d_un_document_response.xml").read_bytes()
    official = parse_xml(root).find(f".//{{{XOP_NS}}}Include")
    href = official.get("href")
    content_id = unquote(href.removeprefix("cid:"))
    assert include(content_id).get("href") == href
    document = b'<?xml version="1.0"?>\r\n<ClinicalDocument xmlns="urn:hl7-org:v3"/>\r\n'
    message = encode(
        root,
        [Attachment(content_id, document, "text/xml")],
        action="urn:ihe:iti:2007:RetrieveDocumentSetResponse",
    )
    decoded = decode(pieces(body_of(message), 333), message.content_type)
    assert decoded.root == root
    received = parse_xml(decoded.root).find(f".//{{{XOP_NS}}}Include")
    assert decoded.part_for(received).read_bytes() == document


# --- over the wire -----------------------------------------------------------------------------


def echo_attachments(directory: Path):
    """A stub handler that decodes an MTOM request into ``directory`` and answers an MTOM
    response carrying the same attachments back, read from the files it wrote."""

    def handler(request: StubRequest) -> StubResponse:
        decoded = decode(request.stream, request.content_type, directory=directory)
        received = [
            decoded.part_for(element)
            for element in parse_xml(decoded.root).iter(f"{{{XOP_NS}}}Include")
        ]
        ids = [part.content_id for part in received]
        attachments = [Attachment(part.content_id, part.path) for part in received if part.path]
        answer = encode(root_with_includes(*ids), attachments, action="urn:test:EchoResponse")
        chunked = request.headers.get("transfer-encoding") == "chunked"
        return StubResponse(
            200,
            answer.chunks(),
            answer.content_type,
            {"X-Upload": "chunked" if chunked else request.headers.get("content-length", "")},
            # Answer the way we were asked: chunked, or with a length.
            length=None if chunked else answer.length,
        )

    return handler


@pytest.fixture(scope="module")
def mtom_server(pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubServer]:
    handler = echo_attachments(tmp_path_factory.mktemp("server-parts"))
    with StubServer(handler, ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle)) as server:
        yield server


@pytest.fixture(scope="module")
def session(pki, load) -> Iterator[requests.Session]:
    with create_session(load("org-auth"), TLSSettings(ca_bundle=pki.ca_bundle)) as session:
        yield session


@pytest.mark.parametrize(
    ("upload", "download"),
    [("length", "iter_content"), ("chunked", "raw"), ("chunked", "iter_content")],
)
def test_exchange_with_a_stub_over_mutual_tls(
    mtom_server: StubServer, session: requests.Session, tmp_path: Path, upload: str, download: str
) -> None:
    source = tmp_path / "document.bin"
    expected = write_random(source, 3 * MIB + 1)
    small = b"\r\n<ClinicalDocument/>\r\n"
    message = encode(
        root_with_includes("big@x", "small@x"),
        [Attachment("big@x", source), Attachment("small@x", small, "text/xml")],
        action="urn:test:Echo",
    )
    data = message if upload == "length" else message.chunks()
    headers = {"Content-Type": message.content_type}
    with session.post(
        f"{mtom_server.url}/mtom", data=data, headers=headers, stream=True
    ) as response:
        assert response.status_code == 200
        assert response.headers["X-Upload"] == (
            "chunked" if upload == "chunked" else str(message.length)
        )
        chunks = response.raw if download == "raw" else response.iter_content(8191)
        decoded = decode(chunks, response.headers["Content-Type"], directory=tmp_path)
    assert decoded.parts["big@x"].sha256 == expected
    assert decoded.parts["big@x"].size == 3 * MIB + 1
    assert decoded.parts["small@x"].read_bytes() == small
    assert decoded.root == root_with_includes("big@x", "small@x")


def test_the_project_send_posts_a_message(
    mtom_server: StubServer, session: requests.Session
) -> None:
    message = encode(root_with_includes("a@x"), [Attachment("a@x", b"\x00\r\n\xff")])
    response = send(
        session, f"{mtom_server.url}/mtom", message, {"Content-Type": message.content_type}
    )
    assert response.headers["X-Upload"] == str(message.length)
    decoded = decode(response.content, response.headers["Content-Type"])
    assert decoded.parts["a@x"].read_bytes() == b"\x00\r\n\xff"
