"""A client of the Identity Service API (identity-service-api, v2 endpoints).

The homeserver talks to an identity server a client names (`id_server`, host and optional
port, always HTTPS) for: looking a 3PID up (hashed lookup), storing a third-party invite,
binding a validated 3PID to a Matrix ID, unbinding one (signed by this server, as the spec
lets the homeserver that controls the user ID do), and checking that an identity server's
public key is still valid. `id_access_token` is sent as a Bearer token.

Identity-server errors that are JSON Matrix errors are passed through to the client
(associations.yaml asks this of unbind); an unreachable server is 502 M_UNKNOWN.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from myelin.core.base64 import encode_urlsafe_base64
from myelin.core.federation import sign_request
from myelin.core.signing import SigningKey
from myelin.errors import MatrixError
from myelin.http_session import LazySession

TIMEOUT_S = 20.0
#: An id_server is a host name and optional port (identity-service-api), nothing more.
_FORBIDDEN_CHARS = frozenset("/\\?#@ \t\r\n")


class IdentityError(MatrixError):
    """An identity server refused or could not be reached."""


def check_id_server(id_server: str) -> str:
    """The id_server as given, or 400 M_INVALID_PARAM when it is not a host[:port]."""
    if not id_server or len(id_server) > 255 or any(c in _FORBIDDEN_CHARS for c in id_server):
        raise MatrixError(400, "M_INVALID_PARAM", "id_server must be a host name and port")
    return id_server


def lookup_hash(medium: str, address: str, pepper: str) -> str:
    """The sha256 lookup form of identity-service-api "Hashing": unpadded URL-safe Base64
    of SHA-256 over `"<address> <medium> <pepper>"`."""
    digest = hashlib.sha256(f"{address} {medium} {pepper}".encode()).digest()
    return encode_urlsafe_base64(digest)


class IdentityClient:
    """HTTP calls to identity servers; one connection pool for the process."""

    def __init__(self, server_name: str, key: SigningKey, *, verify_tls: bool = True) -> None:
        self.server_name = server_name
        self.key = key
        self._http = LazySession(
            TIMEOUT_S, tls=ssl.create_default_context() if verify_tls else False
        )

    async def close(self) -> None:
        await self._http.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One request; the JSON answer of a 2xx, else IdentityError."""
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = orjson.dumps(body)
            sent["Content-Type"] = "application/json"
        import aiohttp  # loaded with the session (myelin.http_session), not at start-up

        try:
            async with self._http.get().request(method, url, data=data, headers=sent) as resp:
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise IdentityError(502, "M_UNKNOWN", f"Identity server unreachable: {exc}") from None
        try:
            parsed = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            parsed = None
        if 200 <= status < 300 and isinstance(parsed, dict):
            return parsed
        if isinstance(parsed, dict) and isinstance(parsed.get("errcode"), str):
            error = parsed.get("error")
            raise IdentityError(
                status if 400 <= status < 500 else 502,
                parsed["errcode"],
                error if isinstance(error, str) else "Identity server error",
            )
        raise IdentityError(
            status if 400 <= status < 500 else 502,
            "M_UNKNOWN",
            f"Identity server answered HTTP {status}",
        )

    @staticmethod
    def base(id_server: str) -> str:
        return f"https://{check_id_server(id_server)}/_matrix/identity/v2"

    async def lookup(self, id_server: str, token: str, medium: str, address: str) -> str | None:
        """The Matrix ID bound to the 3PID, None if none (hashed v2 lookup)."""
        base = self.base(id_server)
        details = await self.request("GET", base + "/hash_details", token=token)
        algorithms = details.get("algorithms")
        pepper = details.get("lookup_pepper")
        if isinstance(algorithms, list) and "sha256" in algorithms and isinstance(pepper, str):
            query = lookup_hash(medium, address, pepper)
            body = {"algorithm": "sha256", "pepper": pepper, "addresses": [query]}
        elif isinstance(algorithms, list) and "none" in algorithms:
            query = f"{address} {medium}"
            body = {"algorithm": "none", "pepper": pepper or "", "addresses": [query]}
        else:
            raise IdentityError(502, "M_UNKNOWN", "Identity server offers no lookup we know")
        answer = await self.request("POST", base + "/lookup", body=body, token=token)
        mappings = answer.get("mappings")
        mxid = mappings.get(query) if isinstance(mappings, dict) else None
        return mxid if isinstance(mxid, str) else None

    async def store_invite(self, id_server: str, token: str, params: dict[str, Any]) -> Any:
        """`POST /store-invite`: the token, display name and public keys of the invite."""
        return await self.request(
            "POST", self.base(id_server) + "/store-invite", body=params, token=token
        )

    async def bind(
        self, id_server: str, token: str, sid: str, client_secret: str, mxid: str
    ) -> Any:
        return await self.request(
            "POST",
            self.base(id_server) + "/3pid/bind",
            body={"sid": sid, "client_secret": client_secret, "mxid": mxid},
            token=token,
        )

    async def validated_3pid(self, id_server: str, token: str | None, sid: str, secret: str) -> Any:
        """`GET /3pid/getValidated3pid`: the medium and address a session of the identity
        server validated (400 if it did not)."""
        query = urlencode({"sid": sid, "client_secret": secret})
        return await self.request(
            "GET", self.base(id_server) + "/3pid/getValidated3pid?" + query, token=token
        )

    async def unbind(self, id_server: str, mxid: str, medium: str, address: str) -> None:
        """`POST /3pid/unbind`, signed by this server (it controls `mxid`)."""
        path = "/_matrix/identity/v2/3pid/unbind"
        body = {"mxid": mxid, "threepid": {"medium": medium, "address": address}}
        auth = sign_request("POST", path, self.server_name, id_server, self.key, body)
        await self.request(
            "POST",
            f"https://{check_id_server(id_server)}{path}",
            body=body,
            headers={"Authorization": auth},
        )

    async def key_is_valid(self, validity_url: str, public_key: str) -> bool:
        """Ask an invite's `key_validity_url` whether `public_key` is still valid; an
        unreachable server or an unclear answer counts as not valid."""
        if not validity_url.startswith("https://"):
            return False
        sep = "&" if "?" in validity_url else "?"
        url = f"{validity_url}{sep}public_key={quote(public_key, safe='')}"
        try:
            answer = await self.request("GET", url)
        except IdentityError:
            return False
        return answer.get("valid") is True
