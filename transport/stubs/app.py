"""All the stubs behind one HTTPS server: the DMP-style services and the téléservices.

:class:`Stubs` starts the server on loopback (a free port by default) with the example PKI's server
certificate, requiring client certificates from its CA, and state in a data directory (a temporary
one unless given). DMP services answer under ``/si-dmp-server/v2/services/<service>``, the
téléservices under ``/lps``; each service dispatches on ``wsa:Action``. A DMP service answers only
connections in one of the DMP's TLS 1.2 suites (PDT-INF-579v4) or in TLS 1.3.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
import threading
import tomllib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from transport import examplepki
from transport.config import EXAMPLE_LPS, example_profile_file
from transport.stubs.patients import PatientRegistry
from transport.stubs.server import (
    Handler,
    ServerTLS,
    StubRequest,
    StubResponse,
    StubServer,
    soap12_fault,
)
from transport.stubs.store import DATABASE_NAME, BlobStore, Database
from transport.tls import DMP_CIPHERS
from transport.xmlsig import VerifySettings

log = logging.getLogger("transport.stubs")

DMP_PREFIX = "/si-dmp-server/v2/services/"
TELESERVICES_PATH = "/lps"

SERVICES: Mapping[str, tuple[str, str]] = {
    "patients": ("transport.stubs.dmp", "PatientsService"),
    "patientsPDQ": ("transport.stubs.dmp", "PdqService"),
    "habilitations": ("transport.stubs.dmp", "HabilitationsService"),
    "patientsSpecific": ("transport.stubs.dmp", "PatientsSpecificService"),
    "registry": ("transport.stubs.xds", "RegistryService"),
    "repository": ("transport.stubs.xds", "RepositoryService"),
    "lps": ("transport.stubs.insi", "TeleservicesService"),
}
"""Every stub service: its name, and the module and class implementing it. A service class is
built with a :class:`StubContext` and called with each :class:`StubRequest`."""

DMP_SERVICES = tuple(name for name in SERVICES if name != "lps")
"""The DMP services (everything but the téléservices)."""


def service_path(name: str) -> str:
    """The URL path a service answers on: ``/lps`` for the téléservices, else the DMP's."""
    return TELESERVICES_PATH if name == "lps" else f"{DMP_PREFIX}{name}"


def example_idams() -> frozenset[str]:
    """The software authorisation numbers (ContexteLPS ``IDAM``) the téléservices stub accepts by
    default: the example identity's (:data:`transport.config.EXAMPLE_LPS`) and the commented
    example profile's (its ``[lps] idam``, else its homologation id, which the client then
    sends)."""
    idams = {EXAMPLE_LPS.homologation_id}
    path = example_profile_file()
    if path.is_file():
        lps = tomllib.loads(path.read_text(encoding="utf-8")).get("lps", {})
        idams.add(lps.get("idam") or lps.get("homologation_id") or "")
    return frozenset(idam for idam in idams if idam)


class InjectedRefusals:
    """Temporary refusals the téléservices stub answers, for tests of how a client copes with
    a busy service: each queued kind answers one request, in order, before any check.

    Kinds: ``"429"`` (HTTP 429 Too Many Requests, RFC 6585 §4), ``"503"`` (HTTP 503 Service
    Unavailable, RFC 9110 §15.6.4), both with ``Retry-After: 0`` and no SOAP body, and
    ``"siram_40"`` (the SOAP fault ``siram_40``/``insi_102`` the live service answers when it
    is temporarily unavailable).
    """

    KINDS = frozenset({"429", "503", "siram_40"})

    def __init__(self) -> None:
        self._queued: deque[str] = deque()
        self._lock = threading.Lock()
        self.answered = 0

    def inject(self, *kinds: str) -> None:
        """Queue ``kinds`` (ValueError for an unknown one)."""
        unknown = set(kinds) - self.KINDS
        if unknown:
            raise ValueError(f"unknown refusal kind(s): {sorted(unknown)}")
        with self._lock:
            self._queued.extend(kinds)

    def take(self) -> str | None:
        """The next refusal to answer (counted in ``answered``), or None."""
        with self._lock:
            if not self._queued:
                return None
            self.answered += 1
            return self._queued.popleft()


@dataclass(frozen=True)
class StubContext:
    """What every service shares: the CA its callers' signatures must chain to, and the state.

    ``accepted_idams``: the IDAMs the téléservices accept (another gets ``desir_550``, as live);
    None accepts any. ``insi_refusals``: temporary refusals a test injects.
    """

    verify: VerifySettings
    database: Database
    blobs: BlobStore
    patients: PatientRegistry
    data_dir: Path
    accepted_idams: frozenset[str] | None = None
    insi_refusals: InjectedRefusals = field(default_factory=InjectedRefusals)

    @classmethod
    def open(
        cls,
        data_dir: Path,
        ca_bundle: Path,
        *,
        accepted_idams: Iterable[str] | None = None,
    ) -> StubContext:
        """The context over the state kept in ``data_dir`` (created when missing);
        ``accepted_idams`` None accepts any IDAM."""
        data_dir.mkdir(parents=True, exist_ok=True)
        database = Database(data_dir / DATABASE_NAME)
        return cls(
            VerifySettings(ca_bundle),
            database,
            BlobStore(data_dir / "documents"),
            PatientRegistry(database),
            data_dir,
            frozenset(accepted_idams) if accepted_idams is not None else None,
        )


class StubApp:
    """The request handler: routes each request to the service mounted on its path."""

    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self.routes = dict(routes)

    def __call__(self, request: StubRequest) -> StubResponse:
        path = urlsplit(request.path).path.rstrip("/")
        handler = self.routes.get(path)
        if handler is None:
            return StubResponse(
                404, soap12_fault("Sender", f"aucun service à l'adresse {path}", subcodes=())
            )
        if path.startswith(DMP_PREFIX) and not dmp_suite(request.tls):
            # The real DMP would end the handshake; one port serves both families here.
            log.info("refused: TLS suite outside PDT-INF-579 on %s", path)
            return StubResponse(
                403, soap12_fault("Sender", "suite TLS non acceptée par le DMP", subcodes=())
            )
        return handler(request)


def dmp_suite(tls: tuple[str, str] | None) -> bool:
    """Whether a connection's ``(protocol, cipher)`` may reach the DMP: one of the four TLS 1.2
    suites of PDT-INF-579v4 (:data:`transport.tls.DMP_CIPHERS`), or TLS 1.3."""
    if tls is None:
        return False
    protocol, cipher = tls
    return protocol == "TLSv1.3" or (protocol == "TLSv1.2" and cipher in DMP_CIPHERS)


def build_routes(context: StubContext, services: Iterable[str] | None = None) -> dict[str, Handler]:
    """An instance of each named service (all of :data:`SERVICES` by default), by URL path."""
    routes: dict[str, Handler] = {}
    for name in services if services is not None else SERVICES:
        module_name, class_name = SERVICES[name]
        service = getattr(importlib.import_module(module_name), class_name)
        routes[service_path(name)] = service(context)
    return routes


class Stubs:
    """The stub server with its services and state; a context manager, or ``start``/``stop``.

    ``pki``: whose server certificate to present and whose CA clients must chain to (default: the
    example PKI of :func:`transport.config.example_pki_directory`). ``data_dir``: where the state
    lives (default: a temporary directory removed on stop). ``services``: a subset of
    :data:`SERVICES` to mount (default: all). ``accepted_idams``: the software authorisation
    numbers the téléservices accept (default :func:`example_idams`), any with
    ``accept_any_idam``.

    With the téléservices mounted, a second server on ``card_port`` (default: any free one)
    serves them over server-only TLS, as the real card-mode host does (the assertion PS is the
    credential there): :attr:`card_teleservices_url`. :attr:`teleservices_url` stays on mutual
    TLS for the certificate mode.
    """

    def __init__(
        self,
        *,
        pki: examplepki.ExamplePKI | None = None,
        data_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        services: Iterable[str] | None = None,
        max_request_bytes: int = 1024 * 1024 * 1024,
        card_port: int = 0,
        accepted_idams: Iterable[str] | None = None,
        accept_any_idam: bool = False,
    ) -> None:
        if pki is None:
            from transport.config import example_pki_directory

            pki = examplepki.load(example_pki_directory())
        self.pki = pki
        self._temporary = None
        if data_dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="cisis-stub-")
            data_dir = Path(self._temporary.name)
        idams = None if accept_any_idam else frozenset(accepted_idams or example_idams())
        self.context = StubContext.open(data_dir, pki.ca_bundle, accepted_idams=idams)
        routes = build_routes(self.context, services)
        self.server = StubServer(
            StubApp(routes),
            ServerTLS(pki.server_cert, pki.server_key, pki.ca_bundle),
            host=host,
            port=port,
            max_request_bytes=max_request_bytes,
        )
        self.card_server: StubServer | None = None
        if TELESERVICES_PATH in routes:
            self.card_server = StubServer(
                StubApp({TELESERVICES_PATH: routes[TELESERVICES_PATH]}),
                ServerTLS(pki.server_cert, pki.server_key, None),
                host=host,
                port=card_port,
                max_request_bytes=max_request_bytes,
            )

    @property
    def url(self) -> str:
        """The server's base URL, ``https://host:port``."""
        return self.server.url

    @property
    def dmp_base_url(self) -> str:
        """The base URL of the DMP services (``…/si-dmp-server/v2/services``), for DmpClient."""
        return f"{self.url}{DMP_PREFIX}".rstrip("/")

    def dmp_url(self, service: str) -> str:
        """The URL of one DMP service (``patients``, ``registry``, …)."""
        return f"{self.url}{DMP_PREFIX}{service}"

    @property
    def teleservices_url(self) -> str:
        """The URL of the téléservices (``…/lps``)."""
        return f"{self.url}{TELESERVICES_PATH}"

    @property
    def card_teleservices_url(self) -> str:
        """The URL of the téléservices in card mode (``…/lps`` over server-only TLS)."""
        if self.card_server is None:
            raise ValueError("the téléservices (lps) are not mounted")
        return f"{self.card_server.url}{TELESERVICES_PATH}"

    def start(self) -> Stubs:
        """Serve in background threads; return self."""
        if self.card_server is not None:
            self.card_server.start()
        self.server.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the card-mode server in a background one) until
        :meth:`stop` is called from another one."""
        if self.card_server is not None:
            self.card_server.start()
        self.server.serve_forever()

    def stop(self) -> None:
        """Stop serving, then close the state (and remove it when it was temporary)."""
        if self.card_server is not None:
            self.card_server.stop()
        self.server.stop()
        self.context.database.close()
        if self._temporary is not None:
            self._temporary.cleanup()

    def __enter__(self) -> Stubs:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
