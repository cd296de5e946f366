"""The Matrix error every component raises to refuse a request.

It carries exactly what a standard error response needs (HTTP status, `errcode`, `error`,
extra body fields and headers) and nothing of HTTP itself, so components below the HTTP
layer (accounts, keys, push rules) raise it, or a subclass naming the component, and the
one ASGI application renders all of them the same way.
"""

from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """A failure that becomes a standard error response: `{"errcode", "error", ...}`.

    Raising it is how code refuses a request; nothing done before the raise may have been
    committed (validate first, then write).
    """

    def __init__(self, status: int, errcode: str, error: str, **extra: Any) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra
        self.headers: list[tuple[bytes, bytes]] = []

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"errcode": self.errcode, "error": self.error}
        out.update(self.extra)
        return out
