"""The one error the authorization rules raise."""

from __future__ import annotations


class AuthError(Exception):
    """An event is not authorised.

    `rule` is the number of the failed rule in the room version's own list
    (content/rooms/v*.md, "Authorisation rules"), e.g. `"5.3.3"`; numbering differs between
    versions, so the number is computed for the event's version. `reason` says in words
    what was wrong, for logs and for the `error` of a Matrix error response.
    """

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"auth rule {rule}: {reason}")
        self.rule = rule
        self.reason = reason
