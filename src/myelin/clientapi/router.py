"""A small path router: literal segments and `{name}` parameters, matched segment by segment.

Paths are split on the raw (still percent-encoded) path, then each segment is decoded, so a
user ID such as `%40alice%3Aexample.org` is one parameter even if it contains an encoded `/`.
An unknown path is 404 M_UNRECOGNIZED; a known path with a method it lacks is 405
M_UNRECOGNIZED, as the spec asks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from myelin.clientapi.http import MatrixError, Request, Response

Handler = Callable[[Request], Awaitable[Response]]

#: The client API prefixes the current spec uses, and the old `r0` that clients still call.
CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
#: Endpoints the spec defines under v1 (relations, threads, room summaries ...).
CLIENT_V1_PREFIX = "/_matrix/client/v1"


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: its handler and whether it needs an access token."""

    handler: Handler
    auth: bool = False
    #: Rate-limited endpoints (login, register ...) count against the caller's bucket.
    ratelimit: bool = False
    #: Whether guest accounts may call it (most authenticated endpoints refuse guests).
    allow_guest: bool = False
    #: The handler reads the body itself from `Request.receive` (media uploads), so it is
    #: neither buffered nor held to the JSON body limit.
    stream: bool = False


@dataclass(slots=True)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    param: tuple[str, _Node] | None = None
    methods: dict[str, Route] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    params: dict[str, str]


class Router:
    """Maps (method, path) to a route, filling in path parameters."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(
        self,
        methods: str | Iterable[str],
        paths: str | Iterable[str],
        handler: Handler,
        *,
        auth: bool = False,
        ratelimit: bool = False,
        allow_guest: bool = False,
        stream: bool = False,
    ) -> None:
        route = Route(
            handler, auth=auth, ratelimit=ratelimit, allow_guest=allow_guest, stream=stream
        )
        for path in [paths] if isinstance(paths, str) else paths:
            node = self._root
            for segment in _segments(path):
                if segment.startswith("{") and segment.endswith("}"):
                    name = segment[1:-1]
                    if node.param is None:
                        node.param = (name, _Node())
                    elif node.param[0] != name:
                        raise ValueError(f"conflicting parameter names at {path}")
                    node = node.param[1]
                else:
                    node = node.literals.setdefault(segment, _Node())
            for method in [methods] if isinstance(methods, str) else methods:
                if method in node.methods:
                    raise ValueError(f"duplicate route {method} {path}")
                node.methods[method] = route

    def resolve(self, method: str, raw_path: str) -> Match:
        """The route for this request, or a MatrixError saying why there is none."""
        params: dict[str, str] = {}
        node = self._root
        for raw in _segments(raw_path):
            try:
                segment = unquote(raw, errors="strict") if "%" in raw else raw
            except UnicodeDecodeError:
                raise MatrixError(404, "M_UNRECOGNIZED", "Malformed path") from None
            nxt = node.literals.get(segment)
            if nxt is None and node.param is not None and segment:
                params[node.param[0]] = segment
                nxt = node.param[1]
            if nxt is None:
                raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
            node = nxt
        route = node.methods.get(method)
        if route is None:
            if node.methods:
                raise MatrixError(405, "M_UNRECOGNIZED", f"Method {method} not allowed here")
            raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
        return Match(route, params)

    def routes(self) -> list[tuple[str, str]]:
        """Every (method, path template) served, for introspection and tests."""
        out: list[tuple[str, str]] = []
        stack: list[tuple[str, _Node]] = [("", self._root)]
        while stack:
            prefix, node = stack.pop()
            out.extend((method, prefix or "/") for method in node.methods)
            for segment, child in node.literals.items():
                stack.append((f"{prefix}/{segment}", child))
            if node.param is not None:
                stack.append((f"{prefix}/{{{node.param[0]}}}", node.param[1]))
        return sorted(out)

    def known_path(self, raw_path: str) -> bool:
        """Whether any method serves this path (answers OPTIONS without running logic)."""
        try:
            self.resolve("\0", raw_path)
        except MatrixError as err:
            return err.status == 405
        return True


def _segments(path: str) -> list[str]:
    parts = path.split("/")
    # "/a/b" -> ["a", "b"]; a trailing slash is kept as an empty final segment only if the
    # route itself has one, so "/a/b/" does not silently match "/a/b".
    return parts[1:] if parts and parts[0] == "" else parts
