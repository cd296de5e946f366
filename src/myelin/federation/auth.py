"""Authentication of inbound federation requests (`Authorization: X-Matrix ...`).

The signature covers the method, the request target (path and query exactly as sent),
both server names and the JSON body; it is checked against the origin's key, fetched
through the keyring. A request naming another destination is refused with 401, as the
spec requires; so is one whose key is unknown or whose signature does not verify.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson

from myelin.clientapi.http import MatrixError, Request, Response
from myelin.core.federation import XMatrixError, parse_x_matrix, signed_request_blob
from myelin.core.identifiers import is_valid_server_name
from myelin.core.signing import SignatureError, verify_signature
from myelin.federation.keyring import Keyring

FederationHandler = Callable[[Request, str], Awaitable[Response]]
"""A federation route: the request and the authenticated origin server name."""


def _unauthorized(error: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", error)


class FederationAuth:
    def __init__(self, server_name: str, keyring: Keyring) -> None:
        self.server_name = server_name
        self.keyring = keyring

    async def authenticate(self, req: Request) -> str:
        """The origin server of a correctly signed request; MatrixError 401 otherwise."""
        header = req.headers.get("authorization")
        if header is None:
            raise _unauthorized("Missing X-Matrix authorization")
        try:
            auth = parse_x_matrix(header)
        except XMatrixError as exc:
            raise _unauthorized(f"Bad X-Matrix authorization: {exc}") from None
        if not is_valid_server_name(auth.origin):
            raise MatrixError(400, "M_INVALID_PARAM", "The origin is not a valid server name")
        if auth.destination is not None and auth.destination != self.server_name:
            raise _unauthorized(f"Request is for {auth.destination[:100]}, not this server")
        content = None
        if req.body:
            try:
                content = orjson.loads(req.body)
            except orjson.JSONDecodeError:
                raise MatrixError(400, "M_NOT_JSON", "Content not JSON") from None
        uri = req.path
        if req.query_string:
            uri += "?" + req.query_string.decode("latin-1")
        key = await self.keyring.verify_key(auth.origin, auth.key)
        if key is None:
            raise _unauthorized(f"Unknown key {auth.key[:50]} of {auth.origin[:100]}")
        try:
            blob = signed_request_blob(req.method, uri, auth.origin, self.server_name, content)
            verify_signature(blob, auth.sig, key)
        except (SignatureError, XMatrixError):
            raise _unauthorized("Invalid request signature") from None
        return auth.origin

    def wrap(self, handler: FederationHandler) -> Callable[[Request], Awaitable[Response]]:
        async def route(req: Request) -> Response:
            origin = await self.authenticate(req)
            return await handler(req, origin)

        return route
