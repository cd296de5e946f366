"""User ID validation as the authorization rules need it.

The rules check user IDs in the `users` of power levels and in v12's
`additional_creators` "with the same validation applied to `sender`". Senders may use the
historical grammar (appendices.md, "Historical User IDs": any localpart without `:` or NUL,
even empty), so that is what is accepted here; the server name must follow the
server-name grammar and the whole ID must fit in 255 bytes.
"""

from __future__ import annotations

import re

_SERVER_NAME = re.compile(
    r"(?:[0-9A-Za-z.-]{1,255}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?", re.ASCII
)
"""appendices.md, "Server Name": a DNS name or IPv4 address, or a bracketed IPv6 literal,
with an optional port."""

MAX_USER_ID_BYTES = 255


def is_valid_user_id(value: object) -> bool:
    """`@localpart:server_name`, historical localparts allowed, at most 255 bytes."""
    if not isinstance(value, str) or not value.startswith("@"):
        return False
    try:
        if len(value.encode("utf-8")) > MAX_USER_ID_BYTES:
            return False
    except UnicodeEncodeError:  # lone surrogates
        return False
    localpart, colon, server_name = value[1:].partition(":")
    if not colon or "\x00" in localpart:
        return False
    return _SERVER_NAME.fullmatch(server_name) is not None


def server_of(identifier: str) -> str:
    """The server name of a user, room (v1-v11) or v1-v2 event ID: after the first `:`."""
    return identifier.partition(":")[2]
