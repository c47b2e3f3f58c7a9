"""Streaming, byte-exact MTOM/XOP for the XDS.b repository calls (ITI-41 submit, ITI-43 retrieve).

:func:`encode` lays out a ``multipart/related`` body (a root ``application/xop+xml`` part holding
the SOAP envelope, then one binary part per attachment) and :meth:`MtomMessage.chunks` streams it,
reading attachment files in :data:`CHUNK_SIZE` blocks. :func:`decode` reads such a body from a
stream or an iterable of chunks and gives the root part's bytes and every other part, each written
to its own file when a directory is given, so that no attachment is ever held whole in memory. A
part going to a file is hashed and written while the next bytes are read, each digest and the
write by a thread of its own (hashlib and file writes release the GIL), and only with the digests
the caller checks.

A part's bytes are exactly those between its header block's CRLFCRLF and the CRLF that precedes the
next delimiter: nothing is stripped (zeep strips CR/LF at both ends, which breaks XDS size/hash).

Decisions on points the standards leave open or that peers get wrong:

- Framing follows RFC 2046 §5.1.1 strictly: lines end with CRLF. A body whose lines end with a bare
  LF is refused, because accepting it would make a part that ends with CR ambiguous.
- A delimiter is CRLF ``--boundary`` followed by optional spaces or tabs and CRLF, or by ``--`` for
  the last one; a line that merely starts with ``--boundary`` and goes on is data.
- Content-Transfer-Encoding ``binary``, ``8bit``, ``7bit`` or none: the bytes are taken as they are;
  ``base64`` is decoded (streamed): MIME allows it and it costs little to accept; anything else
  (quoted-printable) is refused, since no SOAP stack sends it.
- The root part is the one the ``start`` parameter names, else the first (RFC 2387 §3.2).
- Preamble and epilogue are read and ignored.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import io
import os
import queue
import re
import secrets
import sys
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

from lxml import etree

from transport import ids
from transport.errors import MtomError, ValidationError

XOP_NS = "http://www.w3.org/2004/08/xop/include"
CHUNK_SIZE = 1024 * 1024
"""Bytes read at a time from an attachment file or from a stream being decoded."""
MAX_IN_MEMORY = 64 * 1024 * 1024
"""Default for the largest part :func:`decode` keeps in memory, in bytes."""
MAX_HEADER_BLOCK = 64 * 1024
"""Largest header block of one part, in bytes; a longer one is taken as a malformed body."""
DIGESTS = frozenset({"sha256", "sha1"})
"""The digests :func:`decode` can compute of each part (hashlib names), and its default."""

_FLUSH = 64 * 1024  # decoded bytes are written out in blocks of at least this size
_QUEUED = 2  # blocks waiting in each lane of a HashingWriter: memory stays bounded (a few MiB)
_WRITEBACK = 8 * 1024 * 1024  # bytes written between two starts of a file's writeback
_MAX_PADDING = 256  # transport padding (spaces, tabs) accepted after a boundary
_CRLF_HINT = "MIME lines end with CRLF; a body saved with bare LF line ends cannot be decoded"
_DEFAULT_PART_TYPE = "text/plain; charset=us-ascii"  # RFC 2045 §5.2, for a part without one
_IDENTITY_ENCODINGS = frozenset({"", "binary", "8bit", "7bit"})
# Visible ASCII without <, >, " and \, which end or quote a Content-ID.
_CONTENT_ID = re.compile(r"[!#-;=?-\[\]-~]+")
# Printable ASCII: no CR or LF that would end the header early.
_HEADER_VALUE = re.compile(r"[ -~]+")
# Printable ASCII a quoted-string carries without escapes (no " or \).
_QUOTABLE = re.compile(r"[ !#-\[\]-~]*")
# RFC 2046 §5.1.1 bchars, 1 to 70, not ending with a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_PARAMETER = re.compile(r';\s*([^\s;=]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))', re.DOTALL)


# --- encoding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attachment:
    """A part to send: its Content-ID (without ``<>``), its bytes or a file read in chunks, its
    MIME type."""

    content_id: str
    source: bytes | Path
    content_type: str = "application/octet-stream"

    def __post_init__(self) -> None:
        _check_content_id(self.content_id, "content_id")
        _check_header_value(self.content_type, "content_type")
        if not isinstance(self.source, bytes | Path):
            raise ValidationError("source", "an attachment is bytes or a pathlib.Path")

    @property
    def size(self) -> int:
        """The attachment's length in bytes (a file's current size)."""
        if isinstance(self.source, bytes):
            return len(self.source)
        return self.source.stat().st_size


@dataclass(frozen=True)
class _FileRange:
    """An attachment file and the size it had when the message was encoded."""

    path: Path
    size: int


@dataclass(frozen=True)
class MtomMessage:
    """An encoded multipart/related message, ready to POST.

    ``content_type`` is the HTTP ``Content-Type`` value; ``length`` the body's size in bytes;
    ``root`` the root XML part (the SOAP envelope with its ``xop:Include`` elements). The message
    is an iterable with a length, so an HTTP client (requests' ``data=message``, with the
    ``Content-Type`` header) sends it with ``Content-Length``; ``message.chunks()`` sends it
    chunked. It can be sent again: every iteration reads the files afresh.
    """

    content_type: str
    length: int
    root: bytes
    boundary: str
    root_content_id: str
    _layout: tuple[bytes | _FileRange, ...] = field(repr=False)

    def chunks(self) -> Iterator[bytes]:
        """The whole body, in order; files are read :data:`CHUNK_SIZE` bytes at a time."""
        for piece in self._layout:
            if isinstance(piece, _FileRange):
                yield from _read_file(piece)
            elif piece:
                yield piece

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()

    def __len__(self) -> int:
        return self.length


def encode(
    root: bytes,
    attachments: Sequence[Attachment],
    *,
    action: str | None = None,
    boundary: str | None = None,
) -> MtomMessage:
    """Lay out ``root`` (UTF-8 SOAP 1.2 envelope bytes) and ``attachments`` as an MTOM message.

    ``action`` is the SOAP action (the ``wsa:Action``), repeated in the ``action`` parameters as
    SOAP 1.2 over HTTP expects. ``boundary`` defaults to a fresh random one (192 bits) that cannot
    occur in the content; a given one must not occur in ``root`` or in an attachment given as bytes
    (files are not scanned). Raises ValidationError for a bad argument.
    """
    boundary = (
        _new_boundary() if boundary is None else _checked_boundary(boundary, root, attachments)
    )
    if action is not None:
        _check_quotable(action, "action")
    _check_unique([attachment.content_id for attachment in attachments])
    root_id = new_content_id()
    action_parameter = f'; action="{action}"' if action else ""
    root_type = f'application/xop+xml; charset=UTF-8; type="application/soap+xml"{action_parameter}'
    layout: list[bytes | _FileRange] = [_part_head(boundary, root_type, root_id, first=True), root]
    for attachment in attachments:
        layout.append(_part_head(boundary, attachment.content_type, attachment.content_id))
        layout.append(_source_piece(attachment))
    layout.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    content_type = (
        f'multipart/related; type="application/xop+xml"; boundary="{boundary}"; '
        f'start="<{root_id}>"; start-info="application/soap+xml"{action_parameter}'
    )
    length = sum(piece.size if isinstance(piece, _FileRange) else len(piece) for piece in layout)
    return MtomMessage(content_type, length, root, boundary, root_id, tuple(layout))


def include(content_id: str) -> etree._Element:
    """An ``<xop:Include href="cid:…"/>`` element referring to the part ``content_id``; the id is
    percent-encoded as RFC 2392 asks (``:`` becomes ``%3A``, ``@`` stays)."""
    _check_content_id(content_id, "content_id")
    element = etree.Element(f"{{{XOP_NS}}}Include", nsmap={"xop": XOP_NS})
    element.set("href", f"cid:{quote(content_id, safe='@')}")
    return element


def new_content_id(domain: str = "cisis-transport") -> str:
    """A fresh, unique Content-ID (without ``<>``): ``<uuid4>@<domain>``."""
    _check_content_id(domain, "domain")
    return f"{ids.uuid4()}@{domain}"


def _new_boundary() -> str:
    return f"MIMEBoundary_{secrets.token_hex(24)}"


def _checked_boundary(boundary: str, root: bytes, attachments: Sequence[Attachment]) -> str:
    if not _BOUNDARY.fullmatch(boundary):
        raise ValidationError("boundary", "1 to 70 RFC 2046 boundary characters")
    marker = f"--{boundary}".encode("ascii")
    contents = [root, *(a.source for a in attachments if isinstance(a.source, bytes))]
    if any(marker in content for content in contents):
        raise ValidationError("boundary", "the boundary occurs in the content")
    return boundary


def _check_unique(content_ids: list[str]) -> None:
    if len(set(content_ids)) != len(content_ids):
        raise ValidationError("content_id", "two attachments have the same Content-ID")


def _check_content_id(value: str, name: str) -> None:
    if not _CONTENT_ID.fullmatch(value):
        raise ValidationError(
            name, f'{value!r} is not a Content-ID (visible ASCII without <, >, " or \\)'
        )


def _check_header_value(value: str, name: str) -> None:
    if not _HEADER_VALUE.fullmatch(value):
        raise ValidationError(name, f"{value!r} is not a printable ASCII header value")


def _check_quotable(value: str, name: str) -> None:
    if not _QUOTABLE.fullmatch(value):
        raise ValidationError(name, f"{value!r} holds characters a MIME header cannot carry")


def _part_head(boundary: str, content_type: str, content_id: str, *, first: bool = False) -> bytes:
    """The delimiter line and header block that open one part (the CRLF before the delimiter
    belongs to the delimiter, RFC 2046 §5.1.1, so the first part has none)."""
    return (
        ("" if first else "\r\n")
        + f"--{boundary}\r\n"
        + f"Content-Type: {content_type}\r\n"
        + "Content-Transfer-Encoding: binary\r\n"
        + f"Content-ID: <{content_id}>\r\n\r\n"
    ).encode("ascii")


def _source_piece(attachment: Attachment) -> bytes | _FileRange:
    if isinstance(attachment.source, bytes):
        return attachment.source
    if not attachment.source.is_file():
        raise ValidationError("source", f"{attachment.source} is not a file")
    return _FileRange(attachment.source, attachment.size)


def _read_file(piece: _FileRange) -> Iterator[bytes]:
    """The file's bytes; refuses a file whose size changed since encoding (``length`` would lie)."""
    with piece.path.open("rb") as handle:
        remaining = piece.size
        while remaining:
            block = handle.read(min(CHUNK_SIZE, remaining))
            if not block:
                raise MtomError(f"{piece.path} became shorter while it was being sent")
            remaining -= len(block)
            yield block
        if handle.read(1):
            raise MtomError(f"{piece.path} became longer while it was being sent")


# --- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A received attachment: its Content-ID (without ``<>``), MIME type, headers (names in lower
    case), size in bytes, SHA-256 and SHA-1 (hex; the XDS ``hash`` is a SHA-1) of its bytes, each
    None unless :func:`decode` was asked for it, and its bytes, in the file ``path`` or in
    ``data``."""

    content_id: str
    content_type: str
    headers: Mapping[str, str]
    size: int
    sha256: str | None
    sha1: str | None
    path: Path | None = None
    data: bytes | None = None

    def read_bytes(self) -> bytes:
        """The whole attachment (read from its file when it has one)."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def open(self) -> BinaryIO:
        """A binary stream over the attachment, to read it in chunks."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return self.path.open("rb")


@dataclass(frozen=True)
class Decoded:
    """A decoded message: the root part's bytes exactly, its MIME type, the other parts by
    Content-ID (without ``<>``)."""

    root: bytes
    root_content_type: str
    parts: Mapping[str, Part]

    def part_for(self, include: etree._Element) -> Part:
        """The part an ``xop:Include`` element refers to (its ``cid:`` href, percent-decoded)."""
        if include.tag != f"{{{XOP_NS}}}Include":
            raise MtomError(f"expected an xop:Include element, found {include.tag}")
        href = include.get("href") or ""
        scheme, colon, address = href.partition(":")
        if not colon or scheme.lower() != "cid":
            raise MtomError(f"xop:Include href {href!r} is not a cid: URL")
        content_id = unquote(address)
        try:
            return self.parts[content_id]
        except KeyError:
            raise MtomError(
                f"no MIME part has the Content-ID <{content_id}> an xop:Include refers to"
            ) from None


def decode(
    source: BinaryIO | Iterable[bytes] | bytes,
    content_type: str,
    *,
    directory: Path | None = None,
    max_in_memory: int = MAX_IN_MEMORY,
    digests: Collection[str] = DIGESTS,
    writeback: bool = False,
) -> Decoded:
    """Decode a body of type ``content_type`` (the HTTP header value) read from ``source``: a binary
    stream (``read``), an iterable of byte chunks (``response.iter_content(n)``) or bytes. With
    requests, post with ``stream=True`` and pass ``response.iter_content(CHUNK_SIZE)``, which undoes
    any Content-Encoding (``response.raw`` does not).

    With ``directory``, each attachment goes to a new file there (mode 0600) as it arrives; without
    it, attachments are kept as bytes. The root part is always kept in memory. A part kept in memory
    may not exceed ``max_in_memory`` bytes. ``digests`` names those of :data:`DIGESTS` to compute
    of each part (each costs a pass of the CPU over the bytes: ask only for those checked).
    ``writeback`` starts writing part files to disk as their bytes arrive, for a caller that
    syncs them once decoded (a store acknowledging them): its ``fsync`` then waits little. A body
    that is not multipart (a plain SOAP fault) is the root, with no parts. Raises MtomError on a
    malformed body, ValidationError for an unknown digest; files already written are removed.
    """
    if not DIGESTS.issuperset(digests):
        raise ValidationError("digests", f"the digests computed are among {sorted(DIGESTS)}")
    media_type, parameters = parse_content_type(content_type)
    chunks = _chunks_of(source)
    if not media_type.startswith("multipart/"):
        return Decoded(_read_all(chunks, max_in_memory), content_type, MappingProxyType({}))
    if media_type != "multipart/related":
        raise MtomError(f"expected multipart/related, got {media_type}")
    boundary = parameters.get("boundary", "")
    if not 0 < len(boundary) <= 70 or not boundary.isascii():
        raise MtomError("the multipart/related Content-Type has no valid boundary parameter")
    start = parameters.get("start")
    options = _Options(directory, max_in_memory, tuple(sorted(digests)), writeback)
    parser = _Parser(boundary.encode("ascii"), _unbracket(start) if start else None, options)
    try:
        for chunk in chunks:
            parser.feed(chunk)
        return parser.close()
    except BaseException:
        parser.discard()
        raise


def discard_parts(decoded: Decoded) -> None:
    """Remove the files of ``decoded``'s parts (those decoded into a directory)."""
    for part in decoded.parts.values():
        if part.path is not None:
            part.path.unlink(missing_ok=True)


@contextmanager
def removing_parts_on_error(decoded: Decoded) -> Iterator[None]:
    """Removes ``decoded``'s part files when the block raises: nothing half-checked is left."""
    try:
        yield
    except BaseException:
        discard_parts(decoded)
        raise


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and parameters (names in lower case, values unquoted) of a
    Content-Type; lenient about unquoted values holding ``/`` or ``<>``, which peers send."""
    media_type, _, rest = value.partition(";")
    parameters = {}
    for match in _PARAMETER.finditer(f";{rest}"):
        name, quoted, bare = match.groups()
        parameters[name.lower()] = (
            re.sub(r"\\(.)", r"\1", quoted, flags=re.DOTALL) if quoted is not None else bare.strip()
        )
    return media_type.strip().lower(), parameters


def _unbracket(content_id: str) -> str:
    content_id = content_id.strip()
    if content_id.startswith("<") and content_id.endswith(">"):
        return content_id[1:-1].strip()
    return content_id


def _chunks_of(source: BinaryIO | Iterable[bytes] | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        yield bytes(source)
    elif hasattr(source, "read"):
        while block := source.read(CHUNK_SIZE):
            yield block
    else:
        for chunk in source:
            if chunk:
                yield chunk


def _read_all(chunks: Iterator[bytes], limit: int) -> bytes:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise MtomError(f"the body is larger than {limit} bytes")
    return bytes(body)


class _State(enum.Enum):
    PREAMBLE = "before the first boundary"
    HEADERS = "inside the headers of a part"
    BODY = "inside a part"
    EPILOGUE = "after the closing boundary"


class _Kind(enum.Enum):
    NEXT = "another part follows"
    CLOSE = "the closing delimiter"
    DATA = "not a delimiter"
    MORE = "more bytes needed to tell"


def _delimiter_kind(buffer: bytearray, after: int) -> tuple[_Kind, int]:
    """What the delimiter match ending at ``after`` is, and where the next part's headers (or the
    epilogue) begin."""
    tail = bytes(buffer[after : after + 2 + _MAX_PADDING])
    if len(tail) < 2:
        return _Kind.MORE, 0
    if tail.startswith(b"--"):
        return _Kind.CLOSE, after + 2
    rest = tail.lstrip(b" \t")
    if rest.startswith(b"\r\n"):
        return _Kind.NEXT, after + len(tail) - len(rest) + 2
    if rest in (b"", b"\r") and len(tail) < 2 + _MAX_PADDING:
        return _Kind.MORE, 0
    return _Kind.DATA, 0


@dataclass(frozen=True)
class _Options:
    """What :func:`decode` was asked: where part files go, the in-memory limit, the digests,
    whether to start the files' writeback early."""

    directory: Path | None
    max_in_memory: int
    digests: tuple[str, ...]
    writeback: bool


class _Parser:
    """A push parser: :meth:`feed` it chunks of any size, then :meth:`close` it."""

    def __init__(self, boundary: bytes, start: str | None, options: _Options) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._start = start
        self._options = options
        # The first boundary line has no CRLF before it when there is no preamble.
        self._buffer = bytearray(b"\r\n")
        self._scan_from = 0
        self._state = _State.PREAMBLE
        self._sink: _Sink | None = None
        self._root: Part | None = None
        self._parts: dict[str, Part] = {}
        self._seen_ids: set[str] = set()
        self._count = 0
        self._files: list[Path] = []

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._step(final=False):
            pass

    def close(self) -> Decoded:
        while self._step(final=True):
            pass
        if self._state is not _State.EPILOGUE:
            raise MtomError(
                f"the multipart body ends {self._state.value}, without its closing boundary",
                hint=_CRLF_HINT if self._state is _State.PREAMBLE else None,
            )
        if self._root is None and self._start:
            raise MtomError(f"no part has the Content-ID <{self._start}> the start parameter names")
        if self._root is None:
            raise MtomError("the multipart body has no part")
        return Decoded(
            self._root.read_bytes(), self._root.content_type, MappingProxyType(self._parts)
        )

    def discard(self) -> None:
        """Remove the files written so far."""
        if self._sink is not None:
            self._sink.abandon()
        for path in self._files:
            path.unlink(missing_ok=True)

    def _step(self, *, final: bool) -> bool:
        """Consume what the buffer allows; True when another step may consume more."""
        if self._state is _State.HEADERS:
            return self._read_headers()
        if self._state is _State.EPILOGUE:
            self._buffer.clear()
            return False
        return self._scan(final=final)

    def _scan(self, *, final: bool) -> bool:
        buffer = self._buffer
        found = buffer.find(self._delimiter, self._scan_from)
        if found < 0:
            # A delimiter may still start in the last len(delimiter) - 1 bytes.
            self._scan_from = max(self._scan_from, len(buffer) - len(self._delimiter) + 1)
            if self._scan_from >= _FLUSH or final:
                self._emit(self._scan_from)
            return False
        kind, end = _delimiter_kind(buffer, found + len(self._delimiter))
        if kind is _Kind.DATA:
            self._scan_from = found + 1
            return True
        if kind is _Kind.MORE:
            self._scan_from = found
            if found >= _FLUSH:
                self._emit(found)
            return False
        self._emit(found)
        del self._buffer[: end - found]  # _emit may have replaced the buffer
        if self._sink is not None:
            self._finish_part(self._sink)
        self._state = _State.HEADERS if kind is _Kind.NEXT else _State.EPILOGUE
        return True

    def _emit(self, size: int) -> None:
        """Hand the first ``size`` buffered bytes to the current part (the preamble has none)."""
        if size <= 0:
            return
        buffer = self._buffer
        if self._sink is None:
            del buffer[:size]
        elif size * 2 >= len(buffer):
            # Most of the buffer goes: the buffer itself is handed over and its short tail copied,
            # rather than the other way round (a chunk's bytes are copied once, into the buffer).
            self._buffer = buffer[size:]
            del buffer[size:]
            self._sink.write(buffer)
        else:
            self._sink.write(buffer[:size])
            del buffer[:size]
        self._scan_from -= size

    def _read_headers(self) -> bool:
        buffer = self._buffer
        if buffer.startswith(b"\r\n"):
            block_end, body_start = 0, 2
        else:
            block_end = buffer.find(b"\r\n\r\n", 0, MAX_HEADER_BLOCK + 4)
            if block_end < 0:
                if len(buffer) >= MAX_HEADER_BLOCK + 4:
                    raise MtomError(
                        f"the headers of part {self._count + 1} do not end with an empty line"
                        f" within {MAX_HEADER_BLOCK} bytes"
                    )
                return False
            body_start = block_end + 4
        self._count += 1
        headers = _parse_headers(bytes(buffer[:block_end]), self._count)
        del buffer[:body_start]
        self._sink = self._open_part(headers)
        self._state = _State.BODY
        self._scan_from = 0
        return True

    def _open_part(self, headers: dict[str, str]) -> _Sink:
        content_id = _unbracket(headers.get("content-id", ""))
        is_root = content_id == self._start if self._start is not None else self._count == 1
        if not is_root and not content_id:
            raise MtomError(f"part {self._count} has no Content-ID")
        if content_id in self._seen_ids:
            raise MtomError(f"two parts have the Content-ID <{content_id}>")
        if content_id:
            self._seen_ids.add(content_id)
        sink = _Sink(self._count, headers, content_id, is_root, self._options)
        if sink.path is not None:
            self._files.append(sink.path)
        return sink

    def _finish_part(self, sink: _Sink) -> None:
        part = sink.finish()
        self._sink = None
        if sink.is_root:
            self._root = part
        else:
            self._parts[part.content_id] = part


def _parse_headers(block: bytes, number: int) -> dict[str, str]:
    """A part's header fields, names in lower case; folded lines are unfolded."""
    headers: dict[str, str] = {}
    name = ""
    lines = block.decode("latin-1").split("\r\n") if block else []
    for index, line in enumerate(lines, 1):
        if line[:1] in (" ", "\t") and name:
            headers[name] = f"{headers[name]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise MtomError(f"line {index} of the headers of part {number} is not a header field")
        name = name.lower()
        headers[name] = value.strip()
    return headers


class _Base64:
    """Decodes a base64 transfer encoding arriving in chunks cut anywhere."""

    def __init__(self, number: int) -> None:
        self._number = number
        self._pending = b""

    def decode(self, data: bytes) -> bytes:
        data = self._pending + data.translate(None, b" \t\r\n")
        usable = len(data) - len(data) % 4
        self._pending = data[usable:]
        try:
            return binascii.a2b_base64(data[:usable], strict_mode=True)
        except binascii.Error:
            raise MtomError(f"part {self._number} is not valid base64") from None

    def finish(self) -> None:
        if self._pending:
            raise MtomError(f"part {self._number} ends inside a base64 quantum")


class _Sink:
    """Receives one part's bytes: to a file (through a :class:`HashingWriter`) or to memory,
    counting and hashing them."""

    def __init__(
        self,
        number: int,
        headers: dict[str, str],
        content_id: str,
        is_root: bool,
        options: _Options,
    ) -> None:
        self.is_root = is_root
        self.path: Path | None = None
        # Checked before the file is made: a refused part leaves nothing behind.
        self._transfer = _transfer_decoder(headers.get("content-transfer-encoding", ""), number)
        self._hashes = {
            name: hashlib.new(name, usedforsecurity=name != "sha1") for name in options.digests
        }
        self._writer: HashingWriter | None = None
        if options.directory is not None and not is_root:
            descriptor, name = tempfile.mkstemp(
                prefix="mtom-", suffix=".part", dir=options.directory
            )
            self.path = Path(name)
            self._writer = HashingWriter(
                os.fdopen(descriptor, "wb"),
                tuple(self._hashes.values()),
                writeback=options.writeback,
            )
        self._number = number
        self._headers = headers
        self._content_id = content_id
        self._limit = options.max_in_memory
        self._size = 0
        self._memory = bytearray()

    def write(self, data: bytes | bytearray) -> None:
        """Take ``data``, which the caller hands over (it is not used again)."""
        if self._transfer is not None:
            data = self._transfer.decode(bytes(data))
        self._size += len(data)
        if self._writer is not None:
            self._writer.write(data)
            return
        if self._size > self._limit:
            raise MtomError(
                f"part {self._number} is larger than {self._limit} bytes",
                hint=None if self.is_root else "decode with a directory to keep parts in files",
            )
        for digest in self._hashes.values():
            digest.update(data)
        self._memory += data

    def finish(self) -> Part:
        if self._transfer is not None:
            self._transfer.finish()
        if self._writer is not None:
            self._writer.finish()
        return Part(
            self._content_id,
            self._headers.get("content-type", _DEFAULT_PART_TYPE),
            MappingProxyType(self._headers),
            self._size,
            self._hexdigest("sha256"),
            self._hexdigest("sha1"),
            self.path,
            bytes(self._memory) if self._writer is None else None,
        )

    def abandon(self) -> None:
        """Stop writing the part's file and close it (the decoder removes it)."""
        if self._writer is not None:
            self._writer.close()

    def _hexdigest(self, name: str) -> str | None:
        digest = self._hashes.get(name)
        return digest.hexdigest() if digest is not None else None


class HashingWriter:
    """Feeds blocks to ``hashes`` (hashlib objects, or anything with ``update``) and writes them
    to ``file`` when one is given, each in a lane of its own (a thread and a bounded queue), so
    that reading or parsing the next blocks, every digest and the write all overlap: hashlib and
    file writes release the GIL on large buffers, so they run on as many cores as there are. A
    block is shared by the lanes, never copied; at most :data:`_QUEUED` blocks wait in each lane
    (memory stays bounded). An error of a lane (a full disk) is raised by the next :meth:`write`
    or by :meth:`finish`.

    With ``writeback`` (Linux), the file's pages are handed to the disk every :data:`_WRITEBACK`
    bytes (``posix_fadvise`` ``DONTNEED`` starts the writeback of dirty pages and drops none of
    them), so that an ``fsync`` of the finished file waits for the last few only."""

    def __init__(
        self, file: BinaryIO | None, hashes: Sequence[Any], *, writeback: bool = False
    ) -> None:
        self._file = file
        # Elsewhere DONTNEED may drop the pages just written: the hint is Linux's only.
        self._writeback = writeback and file is not None and sys.platform == "linux"
        self._written = 0
        self._handed = 0  # bytes whose writeback was started
        consumers = [digest.update for digest in hashes]
        if file is not None:
            consumers.append(self._write)
        self._lanes = tuple(_Lane(consumer) for consumer in consumers)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (handed over: the caller does not modify it afterwards)."""
        for lane in self._lanes:
            lane.put(data)

    def finish(self) -> None:
        """Wait for every queued block to be hashed and written and the file closed; raises the
        first error a lane or the close met."""
        self.close()
        for lane in self._lanes:
            lane.raise_error()

    def close(self) -> None:
        """Wait for the lanes and close the file (once), keeping any error for :meth:`finish`."""
        for lane in self._lanes:
            lane.close()
        if self._file is None or self._file.closed:
            return
        try:
            self._file.close()
        except OSError as error:  # the last buffered bytes could not be written
            self._lanes[-1].keep_error(error)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._file is not None
        self._file.write(data)
        self._written += len(data)
        if not self._writeback or self._written - self._handed < _WRITEBACK:
            return
        self._file.flush()
        os.posix_fadvise(
            self._file.fileno(), self._handed, self._written - self._handed, os.POSIX_FADV_DONTNEED
        )
        self._handed = self._written


class _Lane:
    """One consumer of a :class:`HashingWriter`'s blocks, in a thread of its own, fed through a
    queue of at most :data:`_QUEUED` blocks; its first error is kept for the writer to raise."""

    def __init__(self, consume: Callable[[bytes | bytearray | memoryview], object]) -> None:
        self._consume = consume
        self._queue: queue.Queue[bytes | bytearray | memoryview | None] = queue.Queue(_QUEUED)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hashing-writer", daemon=True)
        self._thread.start()

    def put(self, data: bytes | bytearray | memoryview) -> None:
        self.raise_error()
        self._queue.put(data)

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def keep_error(self, error: BaseException) -> None:
        self._error = self._error or error

    def close(self) -> None:
        """Let the thread consume what is queued, and wait for it (once)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drained unconsumed, so that put() never blocks on a full queue
            try:
                self._consume(data)
            except BaseException as error:  # raised in the thread that queues the blocks
                self._error = error


def _transfer_decoder(encoding: str, number: int) -> _Base64 | None:
    encoding = encoding.strip().lower()
    if encoding in _IDENTITY_ENCODINGS:
        return None
    if encoding == "base64":
        return _Base64(number)
    raise MtomError(
        f"part {number} has Content-Transfer-Encoding {encoding!r}; binary, 8bit, 7bit and base64"
        " are supported"
    )
