"""A raw HTTP client for API tests: every JSON answer is checked against the spec.

`SpecClient(base_url)` sends exactly the bytes a test gives it (so tests can send broken
JSON) and returns `(status, body)`. Unless `validate=False`, the body must match the
OpenAPI schema of that path, method and status (see `tests.support.openapi`); every
checked operation is recorded in `checked`, so a test can assert which endpoints it walked.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp
import orjson

from tests.support.openapi import validate_response


class SpecClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.checked: set[tuple[str, int]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SpecClient:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def raw(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:
        assert self._session is not None, "use `async with SpecClient(...)`"
        async with self._session.request(
            method, self.base_url + path, data=body, headers=headers or {}
        ) as resp:
            return resp.status, await resp.read(), {k.lower(): v for k, v in resp.headers.items()}

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        *,
        token: str | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        validate: bool = True,
    ) -> tuple[int, Any]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if json is not None:
            body = orjson.dumps(json)
            all_headers.setdefault("Content-Type", "application/json")
        status, raw, resp_headers = await self.raw(method, path, body=body, headers=all_headers)
        assert resp_headers.get("access-control-allow-origin") == "*", "CORS header missing"
        value = orjson.loads(raw) if raw else None
        if validate:
            validate_response(method, path, status, value)
            self.checked.add((f"{method} {path.split('?')[0]}", status))
        return status, value

    async def register(self, username: str, password: str = "secret-pw", **extra: Any) -> Any:
        """Register through the dummy UIA flow; returns the 200 body."""
        status, challenge = await self.call(
            "POST", "/_matrix/client/v3/register", {"username": username, "password": password}
        )
        assert status == 401, challenge
        body = {
            "username": username,
            "password": password,
            "auth": {"type": "m.login.dummy", "session": challenge["session"]},
            **extra,
        }
        status, result = await self.call("POST", "/_matrix/client/v3/register", body)
        assert status == 200, result
        return result
