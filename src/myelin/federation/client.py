"""Outbound federation requests: server discovery, `X-Matrix` signing, JSON in and out.

Server name resolution (server-server-api.md, "Resolving server names"), first cut:

- an IP literal, or a name with an explicit port, is connected to directly
  (`https://<host>:<port>`, default port 8448);
- a bare hostname asks `https://<host>/.well-known/matrix/server` once (cached) and uses
  the delegated name the same way; without one it is `<host>:8448`. SRV records are not
  looked up.

TLS is verified with the default context (the system store, or `SSL_CERT_FILE`). The
`Host` header is always the server name being contacted (or the delegated one).
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson

from myelin.core.federation import sign_request
from myelin.core.signing import SigningKey

# aiohttp (about 11 MB resident) is imported where a request is made, not at start-up:
# a server that never talks to another one does not pay for it.
if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("myelin.federation.client")

DEFAULT_PORT = 8448
REQUEST_TIMEOUT = 60.0
WELL_KNOWN_TTL_S = 3600.0


def path_segment(value: str) -> str:
    """A path parameter percent-encoded for a federation URL."""
    return quote(value, safe="")


class FederationError(Exception):
    """A remote server answered with an error, or could not be reached (`status` 0)."""

    def __init__(self, status: int, body: Any, message: str = "") -> None:
        errcode = body.get("errcode") if isinstance(body, dict) else None
        error = body.get("error") if isinstance(body, dict) else None
        super().__init__(message or f"{status} {errcode or ''} {error or ''}".strip())
        self.status = status
        self.body = body
        self.errcode: str | None = errcode if isinstance(errcode, str) else None


@dataclass(frozen=True, slots=True)
class Target:
    """Where a server name is reached: URL base and Host header."""

    base: str
    host_header: str


def split_host_port(name: str) -> tuple[str, int | None]:
    """`host[:port]` or `[v6]:port` -> (host, port or None)."""
    if name.startswith("["):
        end = name.find("]")
        host = name[1:end]
        rest = name[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = name.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return name, None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class FederationClient:
    """Signed requests from `server_name` to other servers (one aiohttp session)."""

    def __init__(self, server_name: str, key: SigningKey) -> None:
        self.server_name = server_name
        self.key = key
        self._session: aiohttp.ClientSession | None = None
        self._well_known: dict[str, tuple[float, str | None]] = {}
        self._ssl = ssl.create_default_context()

    def _http(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=200),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def resolve(self, server_name: str) -> Target:
        host, port = split_host_port(server_name)
        if port is not None or _is_ip(host):
            return Target(f"https://{_url_host(host)}:{port or DEFAULT_PORT}", server_name)
        delegated = await self._delegation(host)
        if delegated is not None:
            d_host, d_port = split_host_port(delegated)
            return Target(f"https://{_url_host(d_host)}:{d_port or DEFAULT_PORT}", delegated)
        return Target(f"https://{host}:{DEFAULT_PORT}", server_name)

    async def _delegation(self, host: str) -> str | None:
        cached = self._well_known.get(host)
        if cached is not None and time.monotonic() - cached[0] < WELL_KNOWN_TTL_S:
            return cached[1]
        import aiohttp

        delegated: str | None = None
        try:
            async with self._http().get(
                f"https://{host}/.well-known/matrix/server",
                timeout=aiohttp.ClientTimeout(total=10),
                allow_redirects=True,
            ) as resp:
                if resp.status == 200:
                    body = orjson.loads(await resp.read())
                    value = body.get("m.server") if isinstance(body, dict) else None
                    if isinstance(value, str) and value:
                        delegated = value
        except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError, OSError):
            delegated = None
        self._well_known[host] = (time.monotonic(), delegated)
        return delegated

    async def request(
        self,
        method: str,
        destination: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        timeout_s: float | None = None,
        signed: bool = True,
    ) -> Any:
        """Send one request; the parsed JSON answer of a 200. Raises FederationError."""
        import aiohttp
        from yarl import URL

        uri = path
        if query:
            uri += "?" + urlencode(
                [(k, v) for k, vs in query.items() for v in (vs if isinstance(vs, list) else [vs])]
            )
        target = await self.resolve(destination)
        headers = {"Host": target.host_header}
        data: bytes | None = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        if signed:
            headers["Authorization"] = sign_request(
                method, uri, self.server_name, destination, self.key, body
            )
        url = URL(target.base + uri, encoded=True)
        try:
            async with self._http().request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s or REQUEST_TIMEOUT),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise FederationError(0, None, f"{destination} unreachable: {exc}") from None
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        if status != 200:
            raise FederationError(status, parsed)
        return parsed

    async def get_server_keys(self, server_name: str) -> Any:
        """`GET /_matrix/key/v2/server` of a server (unsigned request)."""
        return await self.request(
            "GET", server_name, "/_matrix/key/v2/server", signed=False, timeout_s=15
        )
