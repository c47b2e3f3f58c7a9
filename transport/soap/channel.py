"""The one SOAP exchange channel: what happens between an envelope and the answer's payload.

:meth:`Channel.call` is the only code that serialises a request, traces it, MTOM-encodes it,
posts it, streams and decodes the answer, checks it (:func:`transport.soap.envelope.read_answer`)
and turns every failure on the way into one of the :mod:`transport.errors` exceptions. It bounds
each call by a deadline (connect + send + the whole answer, on top of each socket operation's
timeout) and retries, with backoff and jitter, only the calls its caller marks idempotent, on a
connection failure or an HTTP 503/429 (RFC 9110 §15.6.4, RFC 6585 §4), never a write.

The wire it posts through is swappable, after httpx's ``BaseTransport.handle_request`` and
requests' adapters: anything with :class:`Wire`'s ``send``/``close``. The default,
:class:`PoolWire`, posts with urllib3's connection pools directly (HTTP/1.1, RFC 9112) over the
library's mutual-TLS context; :class:`RequestsWire` posts over a requests session a caller hands
the channel (:func:`transport.tls.create_session`'s, or their own); :class:`MockWire` answers from
a function, for tests where the wire is not the subject. Both network wires map every failure the
same way.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeAlias
from urllib.parse import unquote, urlsplit

import urllib3
from lxml import etree
from urllib3 import HTTPHeaderDict
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    LocationValueError,
    NewConnectionError,
    PoolError,
    ProtocolError,
    ProxyError,
    ProxySchemeUnknown,
)
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from transport import tls
from transport.credentials import Credential
from transport.errors import CisisError, ConfigurationError, ConnectError, TLSError, TransportError
from transport.soap import addressing, mtom
from transport.soap.envelope import SOAP_CONTENT_TYPE, content_type, read_answer
from transport.soap.mtom import DIGESTS  # in Call's body, its field ``mtom`` hides the module
from transport.soap.trace import Tracer
from transport.tls import TLSSettings, diagnose

if TYPE_CHECKING:
    # requests is imported only by the code that serves a caller's session: the default wire
    # never needs it.
    import requests

log = logging.getLogger("transport.soap")

Progress = Callable[[int, int | None], None]
"""A transfer progress callback: bytes moved so far, and the total when known."""

DEFAULT_DEADLINE = 300.0
"""Seconds a call may take by default, connection, request and whole answer included."""

RETRY_STATUSES = frozenset({429, 503})
"""HTTP statuses by which a service says "not now": Too Many Requests, Service Unavailable."""

_deadline_override: ContextVar[tuple[float | None] | None] = ContextVar(
    "cisis_transport_call_deadline", default=None
)
_SPACE_OR_CONTROL = re.compile("[\x00-\x20\x7f]")
_ROUTES_KEPT = 256  # URLs whose route a PoolWire remembers; a profile has a handful
_URL_FIX = "fix the service URL ([endpoints] in the profile, or --endpoint)"
_PROXY_FIX = "check HTTPS_PROXY and NO_PROXY, and that the proxy is up and lets HTTPS through"


# --- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How an idempotent call is retried: at most ``attempts`` sends in all, waiting before
    retry *n* a random time up to ``backoff`` × 2^(n-1) seconds, capped at ``max_backoff``
    ("full jitter"); a ``Retry-After`` in seconds is honoured up to ``max_backoff``."""

    attempts: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0

    def delay(self, retry: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        if retry_after is not None and retry_after.strip().isdigit():
            return min(float(retry_after), self.max_backoff)
        ceiling = min(self.max_backoff, self.backoff * 2 ** (retry - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


@dataclass(frozen=True)
class CallOptions:
    """A channel's defaults for each call: ``deadline`` in seconds (None: none) and the
    :class:`RetryPolicy` of idempotent calls."""

    deadline: float | None = DEFAULT_DEADLINE
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(frozen=True)
class Call:
    """One exchange to make: the request ``envelope`` for ``url``, with ``attachments`` sent as
    MTOM when ``mtom``; ``idempotent`` for a read that may safely be sent again; answer parts
    written to ``directory`` (else kept in memory), with the ``digests`` of
    :func:`transport.soap.mtom.decode` (only those checked); ``progress`` of the transfer;
    ``deadline`` in seconds, overriding the channel's; ``operation`` names the trace files (by
    default the action's last segment)."""

    url: str
    envelope: etree._Element
    attachments: tuple[mtom.Attachment, ...] = ()
    mtom: bool = False
    idempotent: bool = False
    directory: Path | None = None
    progress: Progress | None = None
    deadline: float | None = None
    operation: str | None = None
    digests: frozenset[str] = DIGESTS


@dataclass(frozen=True)
class Received:
    """An HTTP answer read whole: status, headers and its decoded body (the root part's bytes
    exactly, and any MIME parts)."""

    status: int
    headers: Mapping[str, str]
    decoded: mtom.Decoded


@dataclass(frozen=True)
class Answer:
    """A SOAP answer's payload (the Body's first element) and the MIME parts beside it."""

    payload: etree._Element
    parts: mtom.Decoded


# --- the wire ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WireRequest:
    """One HTTP POST: URL, headers, and the body (bytes, or an iterable of chunks with a
    ``len``)."""

    url: str
    headers: Mapping[str, str]
    body: bytes | Iterable[bytes]


class WireResponse(Protocol):
    """An HTTP answer whose body is read as it arrives."""

    status: int
    headers: Mapping[str, str]

    def iter_bytes(self) -> Iterator[bytes]:
        """The body in chunks, Content-Encoding undone; failures are TransportErrors."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class Wire(Protocol):
    """What a channel posts through: sends one request, raising only :mod:`transport.errors`
    exceptions (after httpx's ``BaseTransport.handle_request``)."""

    def send(self, request: WireRequest) -> WireResponse:
        """Post ``request`` and return the answer once its headers are in."""
        ...

    def close(self) -> None:
        """Close the pooled connections."""
        ...


WireLike: TypeAlias = "Wire | requests.Session"
"""What a channel is made over: a :class:`Wire`, or a requests session (a :class:`RequestsWire`)."""

_HEADERS = {"User-Agent": "cisis-transport", "Accept-Encoding": "gzip, deflate"}
"""Sent with every request of a :class:`PoolWire`, before the channel's own headers."""

_NO_RETRIES = urllib3.Retry(total=False, redirect=False)
"""urllib3 raises the first failure as it is (the channel retries): one immutable policy for
every call rather than urllib3 making one per call."""


_COALESCED = 64 * 1024
"""Largest first body chunk (bytes) written together with the request's head."""


class CoalescingConnection(urllib3.connection.HTTPSConnection):
    """urllib3's HTTPS connection writing a request's head and the first chunk of its body (up
    to :data:`_COALESCED` bytes) in one TLS write: http.client writes the head alone and urllib3
    then the body, two records, two system calls and the server's two reads for each call."""

    _holding = False
    _head: bytes | None = None

    def endheaders(self, message_body: object = None, *, encode_chunked: bool = False) -> None:
        # http.client's first write after this is the head: it is held for the body.
        self._holding = True
        super().endheaders(message_body, encode_chunked=encode_chunked)  # type: ignore[arg-type]

    def send(self, data: Any) -> None:
        if self._holding:
            self._holding = False
            self._head = data
            return
        head, self._head = self._head, None
        if head is not None:
            if isinstance(data, bytes) and len(data) <= _COALESCED:
                data = head + data
            else:
                super().send(head)
        super().send(data)

    def getresponse(self) -> urllib3.HTTPResponse:  # type: ignore[override]
        # A request without a body: its head still waits.
        head, self._head = self._head, None
        self._holding = False
        if head is not None:
            super().send(head)
        return super().getresponse()


class CoalescingPool(urllib3.HTTPSConnectionPool):
    """urllib3's HTTPS connection pool of :class:`CoalescingConnection` s, those of a
    :class:`PoolWire`."""

    ConnectionCls = CoalescingConnection


class PoolWire:
    """The default wire: urllib3 connection pools (keep-alive, ``pool_maxsize`` connections per
    host, enough for as many threads) over one mutual-TLS context of
    :func:`transport.tls.create_context`: verification always on, every socket operation bounded
    by the call's deadline. A host the environment's proxy does not bypass
    (:class:`transport.tls.Proxies`, read when the wire is made; no netrc) is reached through an
    HTTP CONNECT tunnel, TLS running end to end to the service with the same context. urllib3
    never retries nor follows a redirect here: the channel decides."""

    def __init__(
        self, context: ssl.SSLContext, settings: TLSSettings, credential: Credential | None = None
    ) -> None:
        self.settings = settings
        self.credential = credential  # to name it when a failure is diagnosed
        self._context = context
        self._proxies = tls.Proxies()
        # The pools are the wire's own, one per host (and proxy), kept until close: a manager's
        # pool cache would close one in use once more hosts than it holds were reached.
        self._routes: dict[str, _Route] = {}
        self._pools: dict[tuple[str, int, str | None], urllib3.HTTPSConnectionPool] = {}
        self._lock = threading.Lock()
        self._timeout = urllib3.Timeout(
            connect=settings.connect_timeout, read=settings.read_timeout
        )

    @classmethod
    def connect(cls, credential: Credential | None, settings: TLSSettings) -> PoolWire:
        """A wire presenting ``credential`` (None only to test a refusal) to the services."""
        return cls(tls.create_context(credential, settings), settings, credential)

    def send(self, request: WireRequest) -> WireResponse:
        url = request.url
        route = self._routes.get(url) or self._route(url)
        headers = {**_HEADERS, **request.headers}
        body = request.body
        if not isinstance(body, bytes) and hasattr(body, "__len__"):
            headers["Content-Length"] = str(len(body))  # else urllib3 sends it chunked
        try:
            connect = tls.remaining(self.settings.connect_timeout)
        except TimeoutError:  # the deadline passed before connecting: as a connect timeout
            raise _not_accepted(url, self.settings) from None
        timeout = self._timeout
        if connect != timeout.connect_timeout:  # the deadline is nearer than a connect timeout
            timeout = urllib3.Timeout(connect=connect, read=self.settings.read_timeout)
        tls.take_signing_failure()
        try:
            response = route.pool.urlopen(
                "POST",
                route.path,
                body=body,
                headers=headers,
                retries=_NO_RETRIES,
                redirect=False,
                assert_same_host=False,
                timeout=timeout,
                preload_content=False,
                release_conn=True,
            )
        except (Urllib3Error, OSError) as error:
            # The card's own error (wrong state, removed) says more than the failed handshake.
            failure = tls.take_signing_failure()
            if failure is not None:
                raise failure from None
            proxy = _proxy_name(route.proxy) if route.proxy else None
            raise _mapped(url, error, _Context(self.settings, self.credential, proxy)) from None
        return _PoolResponse(response, url)

    @property
    def hosts(self) -> tuple[str, ...]:
        """``host:port`` of every service this wire holds a connection pool for (none once
        closed)."""
        with self._lock:
            return tuple(f"{host}:{port}" for host, port, _ in self._pools)

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
            self._routes.clear()
        for pool in pools:
            pool.close()

    def _route(self, url: str) -> _Route:
        """How ``url`` is reached (its host's pool, direct or through the proxy, and the
        request target), decided once per URL."""
        try:
            parts = urllib3.util.parse_url(url)
        except LocationValueError as error:
            raise _mapped(url, error, _Context(self.settings, self.credential, None)) from None
        if parts.scheme == "http":
            raise tls.plain_http_refused(url)
        if parts.scheme != "https" or not parts.host:
            raise ConfigurationError(
                f"cannot post to {url}: expected https://host[:port]/path", hint=_URL_FIX
            )
        host, port = parts.host, parts.port or 443
        proxy = self._proxies.for_url(url)
        with self._lock:
            pool = self._pools.get((host, port, proxy))
            if pool is None:
                pool = self._new_pool(url, host, port, proxy)
                self._pools[host, port, proxy] = pool
            route = _Route(pool, parts.request_uri, proxy)
            if len(self._routes) >= _ROUTES_KEPT:  # a caller posting to ever new URLs
                self._routes.clear()
            self._routes[url] = route
        return route

    def _new_pool(
        self, url: str, host: str, port: int, proxy: str | None
    ) -> urllib3.HTTPSConnectionPool:
        options = {"maxsize": self.settings.pool_maxsize, "ssl_context": self._context}
        if proxy is None:
            return CoalescingPool(host, port, **options)
        address = proxy if "://" in proxy else f"http://{proxy}"
        try:
            auth = urllib3.util.parse_url(address).auth
            headers = urllib3.make_headers(proxy_basic_auth=unquote(auth)) if auth else None
            # A manager of one host only, so that it never closes the pool kept here.
            tunnels = urllib3.ProxyManager(address, num_pools=1, proxy_headers=headers, **options)
            tunnels.pool_classes_by_scheme = {
                **tunnels.pool_classes_by_scheme,
                "https": CoalescingPool,
            }
            return tunnels.connection_from_host(host, port, "https")
        except (ProxySchemeUnknown, LocationValueError) as error:
            raise ConfigurationError(
                f"the proxy {_proxy_name(proxy)} cannot be used for {diagnose.where(url)} "
                f"({type(error).__name__})",
                hint=_PROXY_FIX,
            ) from None


@dataclass(frozen=True)
class _Route:
    """How a :class:`PoolWire` reaches one URL: the pool of its host (direct, or tunnelled
    through ``proxy``) and the request target (path and query)."""

    pool: urllib3.HTTPSConnectionPool
    path: str
    proxy: str | None


class _PoolResponse:
    def __init__(self, response: urllib3.BaseHTTPResponse, url: str) -> None:
        self._response = response
        self._url = url
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    def iter_bytes(self) -> Iterator[bytes]:
        done = 0
        try:
            if _one_read(self.headers):
                # Most answers: urllib3's stream would read twice (the body, then its end).
                yield self._response.read(decode_content=True)
                return
            for chunk in self._response.stream(mtom.CHUNK_SIZE, decode_content=True):
                done += len(chunk)
                yield chunk
        except (Urllib3Error, OSError) as error:
            raise _cut(self._url, done, error) from None

    def close(self) -> None:
        # A body read whole has already given its connection back to the pool; one left unread
        # closes it, so that a half-read answer never reaches the next call.
        self._response.close()
        self._response.release_conn()


def _one_read(headers: Mapping[str, str]) -> bool:
    """Whether a body is read in one go: its declared length within a chunk and no
    Content-Encoding (a small compressed body may inflate far beyond a chunk)."""
    length = headers.get("Content-Length")
    return (
        length is not None
        and length.isdigit()
        and int(length) <= mtom.CHUNK_SIZE
        and "Content-Encoding" not in headers
    )


class RequestsWire:
    """A wire over a requests session: the one a caller hands the channel, normally from
    :func:`transport.tls.create_session` (mutual TLS, verification always on)."""

    def __init__(self, session: requests.Session) -> None:
        self.session = session

    def send(self, request: WireRequest) -> WireResponse:
        response = send(self.session, request.url, request.body, request.headers, stream=True)
        return _RequestsResponse(response, request.url)

    def close(self) -> None:
        self.session.close()


class _RequestsResponse:
    def __init__(self, response: requests.Response, url: str) -> None:
        self._response = response
        self._url = url
        self.status = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def iter_bytes(self) -> Iterator[bytes]:
        done = 0
        try:
            for chunk in self._response.iter_content(mtom.CHUNK_SIZE):
                done += len(chunk)
                yield chunk
        except _requests().exceptions.RequestException as error:
            raise _cut(self._url, done, error) from None

    def close(self) -> None:
        self._response.close()


@dataclass(frozen=True)
class MockRequest:
    """What a :class:`MockWire` handler receives: URL, headers and the whole body."""

    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class MockResponse:
    """What a :class:`MockWire` handler answers: status, body and headers (the SOAP 1.2
    Content-Type by default)."""

    status: int = 200
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": SOAP_CONTENT_TYPE})

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, in one chunk."""
        yield self.content

    def close(self) -> None:
        """Nothing to release."""


class MockWire:
    """A wire that answers each request with ``handler(request)``, without any network (after
    httpx's ``MockTransport``); ``requests`` keeps every request seen, in order."""

    def __init__(self, handler: Callable[[MockRequest], MockResponse]) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []

    def send(self, request: WireRequest) -> WireResponse:
        body = request.body if isinstance(request.body, bytes) else b"".join(request.body)
        seen = MockRequest(request.url, HTTPHeaderDict(request.headers), body)
        self.requests.append(seen)
        answer = self.handler(seen)
        return _MockAnswer(answer.status, HTTPHeaderDict(answer.headers), answer)

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class _MockAnswer:
    status: int
    headers: Mapping[str, str]
    answer: MockResponse

    def iter_bytes(self) -> Iterator[bytes]:
        return self.answer.iter_bytes()

    def close(self) -> None:
        self.answer.close()


# --- the channel ---------------------------------------------------------------------------------


class Channel:
    """Sends SOAP 1.2 exchanges through one wire, tracing them to ``tracer`` when given.

    ``wire``: a :class:`Wire`, or a requests session (wrapped in a :class:`RequestsWire`).
    ``options``: the deadline and retry policy of every call unless a call says otherwise.
    One channel may be shared between threads (as its wire and tracer may).
    """

    def __init__(
        self,
        wire: WireLike,
        *,
        tracer: Tracer | None = None,
        options: CallOptions | None = None,
    ) -> None:
        # A requests session exists only once requests is imported: no need to import it here.
        loaded = sys.modules.get("requests")
        session = loaded is not None and isinstance(wire, loaded.Session)
        self.wire: Wire = RequestsWire(wire) if session else wire  # type: ignore[arg-type]
        self.tracer = tracer
        self.options = options or CallOptions()

    @classmethod
    def connect(
        cls,
        credential: Credential | None,
        settings: TLSSettings,
        *,
        tracer: Tracer | None = None,
        options: CallOptions | None = None,
        wire: Wire | None = None,
    ) -> Channel:
        """A channel over a new mutual-TLS session presenting ``credential``, or over ``wire``
        when one is given (a test's :class:`MockWire`)."""
        return cls(wire or PoolWire.connect(credential, settings), tracer=tracer, options=options)

    def close(self) -> None:
        """Close the wire's pooled connections."""
        self.wire.close()

    @contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        """Within the block, calls made in this thread take ``seconds`` as their deadline (None:
        none) unless the :class:`Call` names its own: a per-call deadline for facade methods,
        ``with client.channel.deadline(30): client.exists(patient)``."""
        token = _deadline_override.set((seconds,))
        try:
            yield
        finally:
            _deadline_override.reset(token)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, call: Call) -> Answer:
        """Send ``call`` and return the answer's payload: SoapFault when the service answers a
        fault, TransportError (TLSError, ConnectError, MtomError…) when the exchange fails or
        the answer is not a SOAP 1.2 answer to this request (then with the answer's HTTP
        ``status``); no part file is left behind then."""
        received = self.exchange(call)
        with mtom.removing_parts_on_error(received.decoded):
            try:
                payload = read_answer(
                    call.url, received.status, received.decoded.root, call.envelope
                )
            except TransportError as error:
                # The caller tells "not now" (429, 503) from other refusals by the status, not
                # by the message's text.
                raise TransportError(
                    error.message, hint=error.hint, status=received.status
                ) from None
        return Answer(payload, received.decoded)

    def exchange(self, call: Call, root_type: str | None = None) -> Received:
        """Post ``call``'s envelope, serialised (UTF-8, with the XML declaration) as Content-Type
        ``root_type`` (by default SOAP 1.2's with the envelope's ``wsa:Action``), within its
        deadline and with its retries; return the answer read whole but not interpreted (for
        :mod:`transport.soap.wsdl`, whose zeep reads it)."""
        root = etree.tostring(call.envelope, xml_declaration=True, encoding="utf-8")
        if root_type is None:
            root_type = content_type(addressing.read(call.envelope, "Action") or "")
        _check_url(call.url)
        seconds = _deadline_of(call, self.options.deadline)
        at = time.monotonic() + seconds if seconds is not None else None
        policy = self.options.retry
        attempts = max(1, policy.attempts) if call.idempotent else 1
        operation = call.operation or _operation(root_type)
        with tls.deadline(at):
            for attempt in range(1, attempts):
                try:
                    received = self._bounded(call, root, root_type, operation, seconds)
                except ConnectError as error:
                    wait = _wait(policy, attempt, None, at)
                    if wait is None:
                        raise
                    reason = error.message
                else:
                    if received.status not in RETRY_STATUSES:
                        return received
                    wait = _wait(policy, attempt, received.headers.get("Retry-After"), at)
                    if wait is None:
                        return received
                    mtom.discard_parts(received.decoded)
                    reason = f"{call.url} answered HTTP {received.status}"
                log.warning(
                    "%s: %s; retry %d of %d in %.1f s",
                    operation,
                    reason,
                    attempt,
                    attempts - 1,
                    wait,
                )
                time.sleep(wait)
            return self._bounded(call, root, root_type, operation, seconds)

    def _bounded(
        self, call: Call, root: bytes, root_type: str, operation: str, seconds: float | None
    ) -> Received:
        """One attempt; any timeout once the deadline has passed is said to be the deadline's."""
        try:
            return self._attempt(call, root, root_type, operation)
        except TransportError:
            if tls.deadline_passed():
                raise _late(call.url, seconds) from None
            raise

    def _attempt(self, call: Call, root: bytes, root_type: str, operation: str) -> Received:
        prefix = self.tracer.next_prefix(operation) if self.tracer is not None else None
        with ExitStack() as stack:
            body, headers = self._request_body(call, root, root_type, prefix, stack)
            response = self.wire.send(WireRequest(call.url, headers, body))
            stack.callback(response.close)
            decoded = self._decode(call, response, prefix, stack)
        return Received(response.status, response.headers, decoded)

    def _request_body(
        self, call: Call, root: bytes, root_type: str, prefix: str | None, stack: ExitStack
    ) -> tuple[bytes | Iterable[bytes], dict[str, str]]:
        if self.tracer is not None and prefix is not None:
            self.tracer.write(prefix, "request", root)
        if not call.mtom:
            return root, {"Content-Type": root_type}
        action = _action(root_type)
        message = mtom.encode(root, call.attachments, action=action)
        trace = (
            stack.enter_context(self.tracer.open_mime(prefix, "request"))
            if self.tracer is not None and prefix is not None
            else None
        )
        # Only documents are worth a progress report: the upload of a request without any (a
        # retrieval's) would show as a transfer of its own before the download.
        progress = call.progress if call.attachments else None
        return _Upload(message, progress, trace), {"Content-Type": message.content_type}

    def _decode(
        self, call: Call, response: WireResponse, prefix: str | None, stack: ExitStack
    ) -> mtom.Decoded:
        answer_type = response.headers.get("Content-Type", "")
        multipart = answer_type.lower().startswith("multipart/")
        trace = (
            stack.enter_context(self.tracer.open_mime(prefix, "response"))
            if self.tracer is not None and prefix is not None and multipart
            else None
        )
        declared = response.headers.get("Content-Length")
        total = int(declared) if declared and declared.isdigit() else None
        progress = call.progress if multipart else None
        chunks = _downloaded(response.iter_bytes(), call.url, progress, total, trace)
        decoded = mtom.decode(chunks, answer_type, directory=call.directory, digests=call.digests)
        if self.tracer is not None and prefix is not None:
            self.tracer.write(prefix, "response", decoded.root)
        return decoded


class _Upload:
    """An MTOM body as the wires send it: iterable (files read in chunks) with a length (so it
    goes with ``Content-Length``), reporting progress and copying to the trace as it goes."""

    def __init__(
        self, message: mtom.MtomMessage, progress: Progress | None, trace: BinaryIO | None
    ) -> None:
        self.message = message
        self.progress = progress
        self.trace = trace

    def __len__(self) -> int:
        return self.message.length

    def __iter__(self) -> Iterator[bytes]:
        done = 0
        for chunk in self.message.chunks():
            done += len(chunk)
            if self.trace is not None:
                self.trace.write(chunk)
            if self.progress is not None:
                self.progress(done, self.message.length)
            yield chunk


def _downloaded(
    chunks: Iterator[bytes],
    url: str,
    progress: Progress | None,
    total: int | None,
    trace: BinaryIO | None,
) -> Iterator[bytes]:
    """The answer's chunks as they arrive, copied to the trace and reported; the deadline is
    checked between chunks too, whatever the wire."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        if trace is not None:
            trace.write(chunk)
        if progress is not None:
            progress(done, total)
        if tls.deadline_passed():
            raise TransportError(f"{url}: the call's deadline has passed")
        yield chunk


def _deadline_of(call: Call, default: float | None) -> float | None:
    """The call's own deadline, else that of an enclosing :meth:`Channel.deadline` block, else
    the channel's ``default`` (seconds; None: none)."""
    if call.deadline is not None:
        return call.deadline
    override = _deadline_override.get()
    return override[0] if override is not None else default


def _wait(
    policy: RetryPolicy, attempt: int, retry_after: str | None, at: float | None
) -> float | None:
    """Seconds to wait before retrying after ``attempt``, or None when the deadline ``at``
    (a monotonic instant) would pass first."""
    wait = policy.delay(attempt, retry_after)
    if at is not None and time.monotonic() + wait >= at:
        return None
    return wait


def _operation(root_type: str) -> str:
    """The trace name of an exchange: its action's last segment."""
    return _action(root_type).rpartition(":")[2] or "call"


def _action(root_type: str) -> str:
    """The ``action`` parameter of a SOAP 1.2 Content-Type (RFC 3902), or ""."""
    _, _, rest = root_type.partition('action="')
    return rest.partition('"')[0]


@functools.lru_cache(maxsize=256)
def _check_url(url: str) -> None:
    """ConfigurationError, before anything is sent, for a URL that is not https://host[:port].

    Cached: a client calls the same few URLs all day (a refused URL is not cached, it raises)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ConfigurationError(
            f"not a usable service URL: {url} ({error})", hint=_URL_FIX
        ) from None
    if parts.scheme.lower() == "http":
        return  # the wire refuses plain HTTP itself, saying so
    if parts.scheme.lower() != "https" or not parts.hostname or port == 0:
        raise ConfigurationError(
            f"not a usable service URL: {url} (expected https://host[:port]/path)", hint=_URL_FIX
        )
    if _SPACE_OR_CONTROL.search(url):
        raise ConfigurationError(
            "not a usable service URL: it holds spaces or control characters", hint=_URL_FIX
        )


def _late(url: str, seconds: float | None) -> TransportError:
    return TransportError(
        f"no complete answer from {diagnose.where(url)} within the call's deadline of "
        f"{seconds:g} s",
        hint="the service is slow or stalled: try again later, or raise [tls] deadline in the "
        "profile for large transfers",
    )


# --- failures, mapped ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What a failure's diagnosis names beside the URL: the TLS settings and credential of the
    wire (None when a caller's own session does not say), and the proxy on the way (its URL
    without user name or password)."""

    settings: TLSSettings | None
    credential: Credential | None
    proxy: str | None


def send(
    session: requests.Session,
    url: str,
    body: bytes | Iterable[bytes],
    headers: Mapping[str, str],
    *,
    stream: bool = False,
) -> requests.Response:
    """POST ``body`` to ``url`` over ``session``: the one ``session.post`` of the library, every
    requests/urllib3/ssl failure mapped to TLSError, ConnectError, TransportError or (a URL that
    cannot be used) ConfigurationError, as :class:`PoolWire` maps them. With ``stream``, the
    body is left unread for ``response.iter_content``; the caller closes the response."""
    try:
        return session.post(url, data=body, headers=dict(headers), stream=stream)
    except _requests().exceptions.RequestException as error:
        raise _requests_failure(session, url, error) from None


def _requests_failure(session: requests.Session, url: str, error: Exception) -> CisisError:
    """The library's error for requests' ``error`` while posting to ``url``: requests' own
    verdicts (a URL it refuses, a connect timeout, a proxy), else what urllib3 said under it."""
    exceptions = _requests().exceptions
    if isinstance(
        error,
        exceptions.InvalidURL
        | exceptions.MissingSchema
        | exceptions.InvalidSchema
        | exceptions.URLRequired,
    ):
        return ConfigurationError(f"cannot post to {url}: {_root_cause(error)}", hint=_URL_FIX)
    try:
        adapter = session.get_adapter(url)
    except exceptions.InvalidSchema:
        adapter = None
    settings = getattr(adapter, "settings", None)
    context = _Context(settings, getattr(adapter, "credential", None), _proxy(session, url))
    if isinstance(error, exceptions.ConnectTimeout):
        return _not_accepted(url, settings)
    if isinstance(error, exceptions.ProxyError):
        return _proxy_failed(context, error)
    return _mapped(
        url,
        error,
        context,
        wrapper=exceptions.RequestException,
        connection_failed=isinstance(error, exceptions.ConnectionError),
    )


def _mapped(
    url: str,
    error: Exception,
    context: _Context,
    *,
    wrapper: type[BaseException] | None = None,
    connection_failed: bool = False,
) -> CisisError:
    """The library's error for a failure of the wire while posting to ``url``: ``error`` is
    urllib3's, ssl's or the socket's, or one of ``wrapper`` (a client library's exception class)
    around them; ``connection_failed`` when that library already says the connection failed."""
    place = diagnose.where(url)
    chain = list(_chain(error))
    if any(isinstance(link, LocationValueError) for link in chain):
        return ConfigurationError(f"cannot post to {url}: {_root_cause(error)}", hint=_URL_FIX)
    if any(isinstance(link, ProxyError) for link in chain):
        return _proxy_failed(context, error)
    handshake = next((link for link in chain if isinstance(link, ssl.SSLError)), None)
    if handshake is not None:
        found = _tls_diagnosis(url, handshake, context)
        return TLSError(f"TLS with {place} failed: {found.message}", hint=found.hint)
    # urllib3 counts a connection that could not be made (NewConnectionError) as a timeout.
    timeout = next(
        (
            link
            for link in chain
            if isinstance(link, Urllib3Timeout) and not isinstance(link, NewConnectionError)
        ),
        None,
    )
    if isinstance(timeout, ConnectTimeoutError):
        return _not_accepted(url, context.settings)
    if timeout is not None:
        return TransportError(f"{place} did not answer in time", hint=diagnose.NETWORK_FIX)
    if not connection_failed and not any(
        isinstance(link, NewConnectionError | ProtocolError | PoolError) for link in chain
    ):
        return TransportError(f"the exchange with {place} failed: {_root_cause(error)}")
    socket_error = next(
        (
            link
            for link in chain
            if isinstance(link, OSError) and not (wrapper and isinstance(link, wrapper))
        ),
        None,
    )
    if socket_error is None or isinstance(socket_error, ConnectionResetError | BrokenPipeError):
        return ConnectError(
            f"{place} closed the connection before answering ({_root_cause(error)})",
            hint="try again; if it persists, the service may refuse our client certificate",
        )
    found = diagnose.connection_failure(url, socket_error, _connect_timeout(context.settings))
    return ConnectError(found.message, hint=found.hint)


def _connect_timeout(settings: TLSSettings | None) -> float:
    return settings.connect_timeout if settings is not None else TLSSettings.connect_timeout


def _not_accepted(url: str, settings: TLSSettings | None) -> ConnectError:
    return ConnectError(
        f"{diagnose.where(url)} did not accept the connection within "
        f"{_connect_timeout(settings):g} s",
        hint=diagnose.NETWORK_FIX,
    )


def _proxy_failed(context: _Context, error: Exception) -> ConnectError:
    return ConnectError(
        f"the proxy {context.proxy or '(none configured)'} failed: {_root_cause(error)}",
        hint=_PROXY_FIX,
    )


def _cut(url: str, done: int, error: Exception) -> TransportError:
    """The error for an answer whose body could not be read whole."""
    if any(isinstance(link, DecodeError) for link in _chain(error)):
        return TransportError(
            f"{diagnose.where(url)} sent an answer that cannot be decoded after {done} bytes "
            f"({_root_cause(error)})"
        )
    return TransportError(
        f"the answer from {diagnose.where(url)} was cut after {done} bytes ({_root_cause(error)})",
        hint="try again; if it persists, check the network and any proxy on the way",
    )


def _tls_diagnosis(url: str, error: ssl.SSLError, context: _Context) -> diagnose.Diagnosis:
    if context.settings is None:
        return diagnose.Diagnosis(str(error), diagnose.TRUST_FIX)
    return diagnose.tls_failure(url, error, context.credential, context.settings)


def _requests() -> ModuleType:
    """requests, for the code that serves a caller's session (which has imported it already)."""
    import requests

    return requests


def _proxy(session: requests.Session, url: str) -> str | None:
    """The proxy ``session`` uses for ``url``, without any user name or password."""
    utils = _requests().utils
    proxies = dict(utils.get_environ_proxies(url, no_proxy=None))
    proxies.update(session.proxies or {})
    chosen = utils.select_proxy(url, proxies)
    return _proxy_name(chosen) if chosen else None


def _proxy_name(proxy: str) -> str:
    """A proxy's URL as messages name it: scheme, host and port, never a user or password."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every error behind it: causes, contexts and urllib3's ``reason``s."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        link = pending.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        yield link
        for nested in (link.__cause__, link.__context__, getattr(link, "reason", None)):
            if isinstance(nested, BaseException):
                pending.append(nested)
        pending.extend(arg for arg in link.args if isinstance(arg, BaseException))


def _root_cause(error: BaseException) -> str:
    """The innermost error's message: the one that says what really failed."""
    *_, innermost = _chain(error)
    return str(innermost) or type(innermost).__name__
