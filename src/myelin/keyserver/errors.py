"""The one error type of the key server: it maps one-to-one onto a Matrix error response."""

from __future__ import annotations

from myelin.errors import MatrixError


class KeyServerError(MatrixError):
    """A refused request: HTTP status, Matrix `errcode`, message and extra body fields.

    Raised before anything is written, so a refused request leaves the store unchanged.
    """


def bad_json(error: str) -> KeyServerError:
    return KeyServerError(400, "M_BAD_JSON", error)


def invalid_param(error: str) -> KeyServerError:
    return KeyServerError(400, "M_INVALID_PARAM", error)


def invalid_signature(error: str) -> KeyServerError:
    return KeyServerError(400, "M_INVALID_SIGNATURE", error)


def not_found(error: str) -> KeyServerError:
    return KeyServerError(404, "M_NOT_FOUND", error)
