"""HTTP requests of the homeserver to application services (application-service-api.md,
"Homeserver -> Application Service API").

Every request carries `Authorization: Bearer <hs_token>`. A request to a `/_matrix/app/v1`
path that the AS does not answer successfully is retried once at the legacy path the
spec lists, for application services that predate the versioned API.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import orjson

from myelin.appservice.registration import AppService
from myelin.http_session import LazySession

log = logging.getLogger("myelin.appservice")

REQUEST_TIMEOUT = 30.0
#: Queries made while a client waits (user, alias, third-party lookups): a dead AS must
#: not hold the client's request for long.
QUERY_TIMEOUT = 10.0
V1 = "/_matrix/app/v1"


def _legacy(path: str) -> str:
    """The pre-v1 path of a v1 path (the spec's "Legacy routes")."""
    rest = path[len(V1) :]
    if rest.startswith("/thirdparty/"):
        return "/_matrix/app/unstable" + rest
    return rest


class AppServiceClient:
    """One shared aiohttp session for every application service; closed at shutdown."""

    def __init__(self) -> None:
        self._http = LazySession(REQUEST_TIMEOUT)

    async def close(self) -> None:
        await self._http.close()

    async def request(
        self,
        service: AppService,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        time_limit: float = REQUEST_TIMEOUT,
    ) -> tuple[int, Any]:
        """(status, parsed JSON or None); a connection failure or timeout is status 0."""
        status, value = await self._once(service, method, path, query, body, time_limit)
        if status != 200 and path.startswith(V1) and status in (0, 404, 405, 500, 501):
            legacy_status, legacy_value = await self._once(
                service, method, _legacy(path), query, body, time_limit
            )
            if legacy_status == 200:
                return legacy_status, legacy_value
        return status, value

    async def _once(
        self,
        service: AppService,
        method: str,
        path: str,
        query: dict[str, str] | None,
        body: Any,
        time_limit: float,
    ) -> tuple[int, Any]:
        if service.url is None:
            return 0, None
        # Imported where a request is made, not at start-up (see `myelin.http_session`).
        import aiohttp

        headers = {"Authorization": f"Bearer {service.hs_token}"}
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            async with self._http.get().request(
                method,
                service.url + path,
                params=query,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=time_limit),
            ) as resp:
                raw = await resp.read()
                try:
                    value = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    value = None
                return resp.status, value
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("application service %s unreachable on %s: %s", service.id, path, exc)
            return 0, None


def quoted(value: str) -> str:
    """A path segment: every reserved character escaped (IDs hold ':', '#', '@')."""
    return quote(value, safe="")
