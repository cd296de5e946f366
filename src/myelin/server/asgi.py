"""The ASGI application: body limit, CORS, routing, authentication, rate limits, errors.

Every response, error or not, carries the CORS headers the spec recommends, and `OPTIONS`
on any known path answers the preflight without running the endpoint's logic. Errors are
always standard Matrix error bodies; an unexpected exception is logged and becomes a 500
M_UNKNOWN without details leaking to the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from myelin.appservice.service import AppServices
from myelin.clientapi.http import MatrixError, Request, Requester, Response, error_response
from myelin.clientapi.ratelimit import RateLimiter
from myelin.clientapi.router import Router
from myelin.userapi.accounts import UserAPI

log = logging.getLogger("myelin.http")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (
        b"access-control-allow-headers",
        b"X-Requested-With, Content-Type, Authorization",
    ),
]


class BodyTooLarge(Exception):
    pass


class App:
    """One ASGI callable serving the client, federation and key APIs."""

    def __init__(
        self,
        router: Router,
        users: UserAPI,
        *,
        max_body: int,
        limiter: RateLimiter | None,
    ) -> None:
        self.router = router
        self.users = users
        self.max_body = max_body
        self.limiter = limiter
        #: Application services: their `as_token`s authenticate too (set at wiring).
        self.appservices: AppServices | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        try:
            response = await self._handle(scope, receive)
        except Exception:  # the last line of defence: never a bare traceback to the client
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            response = error_response(MatrixError(500, "M_UNKNOWN", "Internal server error"))
        headers = [
            (b"content-type", response.content_type),
            *([] if response.stream else [(b"content-length", str(len(response.body)).encode())]),
            *CORS_HEADERS,
            *response.headers,
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if response.stream is not None:
            await _send_stream(send, response.stream, head=scope["method"] == "HEAD")
        else:
            body = b"" if scope["method"] == "HEAD" else response.body
            await send({"type": "http.response.body", "body": body})
        if log.isEnabledFor(logging.DEBUG):  # access log: debug only (no query: tokens)
            log.debug(
                "request method=%s path=%s status=%d ms=%.1f",
                scope["method"],
                scope["path"],
                response.status,
                (time.perf_counter() - started) * 1000,
            )

    async def _handle(self, scope: Scope, receive: Receive) -> Response:
        method: str = scope["method"]
        raw_path = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        if method == "OPTIONS":
            if self.router.known_path(path):
                return Response(204, b"", content_type=b"text/plain")
            return error_response(MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request"))
        route_method = "GET" if method == "HEAD" else method
        try:
            match = self.router.resolve(route_method, path)
        except MatrixError as err:
            return error_response(err)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        client_ip = client[0] if client else ""
        try:
            body = b"" if match.route.stream else await self._read_body(headers, receive)
        except BodyTooLarge:
            return error_response(
                MatrixError(413, "M_TOO_LARGE", f"Request body exceeds {self.max_body} bytes")
            )
        req = Request(
            method=method,
            path=path,
            query_string=scope.get("query_string", b""),
            headers=headers,
            body=body,
            client_ip=client_ip,
            params=match.params,
            receive=receive if match.route.stream else None,
            scheme="https" if scope.get("scheme") == "https" else "http",
        )
        route = match.route
        try:
            if route.auth:
                req.requester = await self._authenticate(req, route.allow_guest)
            if route.ratelimit and self.limiter is not None and self._limited(req):
                key = req.requester.user_id if req.requester else f"ip:{client_ip}"
                wait_ms = self.limiter.check(key)
                if wait_ms:
                    limited = MatrixError(
                        429, "M_LIMIT_EXCEEDED", "Too many requests", retry_after_ms=wait_ms
                    )
                    retry_s = str(max(1, -(-wait_ms // 1000))).encode()
                    limited.headers.append((b"retry-after", retry_s))
                    raise limited
            return await route.handler(req)
        except MatrixError as err:
            return error_response(err)

    def _limited(self, req: Request) -> bool:
        """Whether the request counts against a rate limit: not for an application
        service whose registration says `rate_limited: false`."""
        who = req.requester
        if who is None or who.app_service is None or self.appservices is None:
            return True
        service = self.appservices.by_id(who.app_service)
        return service is None or service.rate_limited

    async def _authenticate(self, req: Request, allow_guest: bool) -> Requester:
        token = req.access_token()
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        service = self.appservices.by_token(token) if self.appservices else None
        if service is not None and self.appservices is not None:
            user_id = await self.appservices.assert_identity(service, req.query_param("user_id"))
            return Requester(user_id, "", 0, app_service=service.id)
        info = await self.users.lookup_token(token)
        if info.is_guest and not allow_guest:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed")
        await self.users.touch_device(info, req.client_ip, req.headers.get("user-agent"))
        return Requester(info.user_id, info.device_id, info.token_id, info.is_guest)

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _send_stream(send: Send, stream: AsyncIterator[bytes], *, head: bool) -> None:
    """Send a streamed body chunk by chunk (nothing for HEAD), then close the stream."""
    try:
        if not head:
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
