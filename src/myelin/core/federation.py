"""Pure parts of the Server-Server API: request signing and the `X-Matrix` header.

server-server-api.md, "Request Authentication": a request is authenticated by signing the
JSON object `{method, uri, origin, destination[, content]}` with the origin's server key
and sending the signature in an `Authorization: X-Matrix ...` header. Both sides build the
same object here, so what one signs is byte for byte what the other verifies.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.core.base64 import encode_base64
from myelin.core.canonicaljson import CanonicalJsonError
from myelin.core.signing import SigningKey, signature_blob

__all__ = [
    "XMatrix",
    "XMatrixError",
    "format_x_matrix",
    "parse_x_matrix",
    "request_json",
    "server_acl_allows",
    "sign_request",
]


class XMatrixError(ValueError):
    """An `Authorization` header that is not a usable `X-Matrix` one."""


@dataclass(frozen=True, slots=True)
class XMatrix:
    """The parameters of one `X-Matrix` authorization header."""

    origin: str
    destination: str | None
    key: str
    sig: str


def request_json(
    method: str, uri: str, origin: str, destination: str, content: Any = None
) -> dict[str, Any]:
    """The object whose signature authenticates a request (`content` only if there is a
    body: a GET is signed without the key)."""
    obj: dict[str, Any] = {
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(
    method: str, uri: str, origin: str, destination: str, key: SigningKey, content: Any = None
) -> str:
    """The complete `Authorization` header value for a request from `origin`."""
    blob = signature_blob(request_json(method, uri, origin, destination, content))
    sig = encode_base64(key.sign(blob))
    return format_x_matrix(XMatrix(origin, destination, key.key_id, sig))


def format_x_matrix(auth: XMatrix) -> str:
    """The header as the spec recommends senders write it: one space, lower-case names,
    quoted values, no whitespace around commas."""
    parts = [f'origin="{auth.origin}"']
    if auth.destination is not None:
        parts.append(f'destination="{auth.destination}"')
    parts += [f'key="{auth.key}"', f'sig="{auth.sig}"']
    return "X-Matrix " + ",".join(parts)


def _params(text: str) -> dict[str, str]:
    """RFC 9110 auth-params: `name=value` pairs, values quoted (with backslash escapes) or
    bare tokens; colons are allowed in bare values for old servers."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise XMatrixError("a parameter has no value")
        name = text[i:eq].strip().lower()
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            value: list[str] = []
            while True:
                if i >= n:
                    raise XMatrixError("unterminated quoted value")
                c = text[i]
                if c == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    value.append(c)
                    i += 1
            params[name] = "".join(value)
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            params[name] = text[i:end].strip()
            i = end
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] != ",":
            raise XMatrixError("parameters must be separated by commas")
    return params


def parse_x_matrix(header: str) -> XMatrix:
    """Parse an `Authorization` header value. Raises XMatrixError."""
    scheme, sep, rest = header.strip().partition(" ")
    if not sep or scheme.lower() != "x-matrix":
        raise XMatrixError("not an X-Matrix authorization")
    params = _params(rest.strip())
    try:
        return XMatrix(
            origin=params["origin"],
            destination=params.get("destination"),
            key=params["key"],
            sig=params["sig"],
        )
    except KeyError as exc:
        raise XMatrixError(f"missing parameter {exc.args[0]}") from None


def signed_request_blob(
    method: str, uri: str, origin: str, destination: str, content: Mapping[str, Any] | None
) -> bytes:
    """The bytes an inbound request's signature must cover. A body that is not canonical
    JSON (a float, a large integer) is still authenticated as its sender encoded it, with
    sorted keys: refusing such content is the endpoint's business, with its own error."""
    obj = request_json(method, uri, origin, destination, content)
    try:
        return signature_blob(obj)
    except CanonicalJsonError:
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:
            raise XMatrixError(f"content cannot be encoded: {exc}") from None


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
        re.IGNORECASE | re.DOTALL,
    )


def _host(server_name: str) -> str:
    if server_name.startswith("["):
        return server_name[: server_name.find("]") + 1]
    host, sep, port = server_name.rpartition(":")
    return host if sep and port.isdigit() else server_name


def server_acl_allows(content: Mapping[str, Any] | None, server_name: str) -> bool:
    """Whether an `m.room.server_acl` content lets `server_name` take part in the room
    (client-server-api "Server Access Control Lists"): the port is ignored, IP literals
    are refused unless `allow_ip_literals` (default true), then `deny` wins over `allow`;
    a server matching no `allow` glob is refused. No ACL allows everyone."""
    if content is None:
        return True
    host = _host(server_name)
    if content.get("allow_ip_literals", True) is False:
        bare = host[1:-1] if host.startswith("[") else host
        try:
            ipaddress.ip_address(bare)
            return False
        except ValueError:
            pass
    deny = content.get("deny")
    for pattern in deny if isinstance(deny, list) else []:
        if isinstance(pattern, str) and _glob(pattern).fullmatch(host):
            return False
    allow = content.get("allow")
    for pattern in allow if isinstance(allow, list) else []:
        if isinstance(pattern, str) and _glob(pattern).fullmatch(host):
            return True
    return False
