"""The HTTP vocabulary of every API: requests, responses, Matrix errors and JSON bodies.

The server is a plain ASGI application (no framework): a framework costs 30-45% of
throughput on this workload, and the Matrix APIs need little of one. This module holds
the pieces each handler touches; routing lives in `router.py`, the ASGI glue in `app.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from myelin.core.canonicaljson import CanonicalJsonError, decode_canonical_json
from myelin.errors import MatrixError as MatrixError  # handlers import it from here

#: Canonical-JSON failures that mean "not JSON at all" rather than "JSON we refuse".
_NOT_JSON_KINDS = frozenset({"syntax", "invalid_utf8", "lone_surrogate", "non_finite"})


def bad_json(error: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", error)


def missing_param(error: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", error)


def invalid_param(error: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", error)


def forbidden(error: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", error)


def not_found(error: str) -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", error)


@dataclass(slots=True)
class Response:
    """What a handler answers; `app.py` adds CORS and content headers."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: A body sent in chunks instead of `body` (media downloads); the handler puts the
    #: content-length in `headers`. Closed with its `aclose()` when it has one.
    stream: AsyncIterator[bytes] | None = None


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value))


def error_response(err: MatrixError) -> Response:
    resp = Response(err.status, orjson.dumps(err.body()))
    resp.headers.extend(err.headers)
    return resp


def html_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), content_type=b"text/html; charset=utf-8")


@dataclass(frozen=True, slots=True)
class Requester:
    """Who is calling, once an access token has been checked."""

    user_id: str
    device_id: str
    token_id: int
    is_guest: bool = False
    #: The application service acting (its `as_token` authenticated the request).
    app_service: str | None = None


@dataclass(slots=True)
class Request:
    """One HTTP request, read completely (bodies are small and bounded by the body limit)."""

    method: str
    path: str
    query_string: bytes
    headers: dict[str, str]
    body: bytes
    client_ip: str
    params: dict[str, str] = field(default_factory=dict)
    scheme: str = "http"
    requester: Requester | None = None
    _query: dict[str, list[str]] | None = None
    #: The ASGI receive channel, for routes declared `stream=True` (their `body` is empty).
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.query_string.decode("latin-1"), keep_blank_values=True)
        return self._query

    def public_base_url(self, configured: str | None) -> str:
        """The URL clients reach this server at: the configured one, else the scheme and
        Host the client itself used (right behind a proxy that keeps Host, too)."""
        if configured:
            return configured.rstrip("/")
        host = self.headers.get("host", "")
        if not host or any(c in host for c in '/\\ "<>'):
            host = "localhost"
        return f"{self.scheme}://{host}"

    def query_param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def access_token(self) -> str | None:
        """The token from `Authorization: Bearer` (preferred) or the deprecated query form."""
        auth = self.headers.get("authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
        return self.query_param("access_token")

    def user(self) -> Requester:
        """The authenticated requester; routes declared `auth=True` always have one."""
        if self.requester is None:  # a routing mistake, not a client error
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        return self.requester

    def json(self, *, canonical: bool = False) -> dict[str, Any]:
        """The body as a JSON object.

        Not JSON at all is M_NOT_JSON; valid JSON of the wrong shape is M_BAD_JSON. With
        `canonical`, floats, integers outside ±(2^53-1) and duplicate keys are refused too
        (M_BAD_JSON), as the spec requires wherever the body becomes part of a signed event.
        """
        if not self.body:
            raise MatrixError(400, "M_NOT_JSON", "Request body is empty; expected a JSON object")
        if canonical:
            try:
                value = decode_canonical_json(self.body)
            except CanonicalJsonError as exc:
                code = "M_NOT_JSON" if exc.kind in _NOT_JSON_KINDS else "M_BAD_JSON"
                raise MatrixError(400, code, f"Content not canonical JSON: {exc}") from None
        else:
            try:
                value = orjson.loads(self.body)
            except orjson.JSONDecodeError as exc:
                raise MatrixError(400, "M_NOT_JSON", f"Content not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise bad_json("Request body must be a JSON object")
        return value

    def json_or_empty(self) -> dict[str, Any]:
        """Like `json()`, but an empty body is an empty object (several endpoints allow it)."""
        if not self.body.strip():
            return {}
        return self.json()


# Typed accessors for JSON bodies: a wrong type is M_BAD_JSON, absence M_MISSING_PARAM.


def opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_json(f"'{key}' must be a string")
    return value


def req_str(body: dict[str, Any], key: str) -> str:
    value = opt_str(body, key)
    if value is None:
        raise missing_param(f"Missing '{key}'")
    return value


def opt_bool(body: dict[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_json(f"'{key}' must be a boolean")
    return value


def opt_dict(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_json(f"'{key}' must be an object")
    return value


def opt_str_list(body: dict[str, Any], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_json(f"'{key}' must be a list of strings")
    return value
