"""Mutual TLS for requests: an adapter that always uses the context of
:func:`transport.tls.create_context`, and the library's session over it (proxies of the
environment read once, no netrc, plain HTTP refused), for callers who post with requests.

The library's own default wire does not use requests (:class:`transport.soap.channel.PoolWire`);
this module is imported only when a session is asked for.
"""

from __future__ import annotations

import ssl
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_hooks
from requests.structures import CaseInsensitiveDict

from transport.credentials import Credential
from transport.tls import (
    Proxies,
    TLSSettings,
    create_context,
    plain_http_refused,
    remaining,
    take_signing_failure,
)


class MutualTLSAdapter(HTTPAdapter):
    """A requests adapter that always uses its own SSL context, whatever ``verify``/``cert`` say.

    Requests made through it default to ``(connect_timeout, read_timeout)`` when no timeout is
    given, so that a stalled service cannot hang a practitioner's application; inside a
    :func:`transport.tls.deadline` block the connect timeout is shortened to what is left of it.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        settings: TLSSettings,
        *,
        credential: Credential | None = None,
    ) -> None:
        self._context = context
        self._timeout = (settings.connect_timeout, settings.read_timeout)
        self.settings = settings
        self.credential = credential  # to name it when a failure is diagnosed
        super().__init__(
            pool_connections=settings.pool_connections, pool_maxsize=settings.pool_maxsize
        )

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, _ = super().build_connection_pool_key_attributes(request, True, None)
        return host_params, {"ssl_context": self._context, "cert_reqs": "CERT_REQUIRED"}

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # The context already holds the trust anchors and client certificate; letting requests
        # add its default bundle here would trust every public CA.
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            connect, read = self._timeout
            try:
                kwargs["timeout"] = (remaining(connect), read)
            except (
                TimeoutError
            ) as error:  # the deadline passed before connecting: as requests says it
                raise requests.exceptions.ConnectTimeout(str(error), request=request) from None
        take_signing_failure()
        try:
            return super().send(request, **kwargs)
        except requests.exceptions.ConnectionError:
            # The card's own error (wrong state, removed) says more than the failed handshake.
            failure = take_signing_failure()
            if failure is not None:
                raise failure from None
            raise


def create_session(credential: Credential | None, settings: TLSSettings) -> requests.Session:
    """A pooled keep-alive session whose HTTPS requests use mutual TLS with ``credential``.

    Plain ``http://`` is refused. Proxies come from the usual environment variables
    (``HTTPS_PROXY``, ``NO_PROXY``), read when the session is made; ``~/.netrc`` is not read.
    """
    session = ProxySnapshotSession()
    adapter = MutualTLSAdapter(
        create_context(credential, settings), settings, credential=credential
    )
    session.mount("https://", adapter)
    session.mount("http://", _RefusePlainHTTP())
    return session


class ProxySnapshotSession(requests.Session):
    """A requests session that reads the proxy environment once, when it is made
    (:class:`Proxies`).

    ``trust_env`` is off (no netrc, no ``REQUESTS_CA_BUNDLE``: the adapter's context decides
    trust anyway). A proxy set explicitly in ``session.proxies`` takes precedence over the
    environment's. A request without cookies, authentication or query parameters is prepared
    without copying the session's (empty) cookie jar.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self._proxies = Proxies()

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        environment = self._proxies.environment
        if environment and not self._proxies.bypasses(url):
            merged["proxies"] = {**environment, **merged["proxies"]}
        return merged

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        # requests copies the session's cookie jar and merges auth and query parameters into
        # every request: half of its cost on a SOAP call, which has none of them. Any of them
        # present takes requests' own path.
        if (
            request.auth
            or request.cookies
            or request.params
            or self.auth
            or self.params
            or len(self.cookies)
        ):
            return super().prepare_request(request)
        headers = CaseInsensitiveDict(self.headers)
        for name, value in (request.headers or {}).items():
            if value is None:
                headers.pop(name, None)  # as requests' merge: None removes a session header
            else:
                headers[name] = value
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=request.method.upper(),
            url=request.url,
            headers=headers,
            files=request.files,
            data=request.data,
            json=request.json,
            params={},
            auth=None,
            cookies=None,
            hooks=merge_hooks(request.hooks, self.hooks),
        )
        return prepared


class _RefusePlainHTTP(HTTPAdapter):
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raise plain_http_refused(request.url or "")
