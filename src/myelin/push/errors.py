"""The one error type of the push-rule engine, carrying the Matrix error it stands for.

The engine is pure code below the HTTP layer; it cannot raise the client API's error type
without depending on it, so it raises `PushRuleError` with the status and `errcode` the
push-rules endpoints document (pushrules.yaml), and the HTTP layer turns it into a response.
"""

from __future__ import annotations

from myelin.errors import MatrixError


class PushRuleError(MatrixError, ValueError):
    """A refused push-rule request: `status`, Matrix `errcode` and a human-readable `error`."""


def not_found(error: str = "The push rule was not found.") -> PushRuleError:
    return PushRuleError(404, "M_NOT_FOUND", error)


def invalid_param(error: str) -> PushRuleError:
    return PushRuleError(400, "M_INVALID_PARAM", error)


def missing_param(error: str) -> PushRuleError:
    return PushRuleError(400, "M_MISSING_PARAM", error)
