"""Media IDs and `mxc://` URIs: generation and the sanitising the spec requires.

A media ID names a file in the data directory, so it is the one piece of client input that
reaches a filesystem path. The spec (content_repo.md, "Security considerations") asks for
a whitelist, not a blacklist: only `A-Za-z0-9`, `_` and `-`, and the server name must be a
valid server name. Everything else (`..`, `/`, NUL, percent- or UTF-8-encoded traversal
tricks) is refused before any path is built.
"""

from __future__ import annotations

import re
import secrets

from myelin.core.identifiers import is_valid_server_name

_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]+")
MAX_MEDIA_ID_LENGTH = 255
#: 18 random bytes: 24 URL-safe base64 characters, 144 bits, unguessable.
_RANDOM_BYTES = 18


class InvalidMediaID(ValueError):
    """A media ID or server name that must not be used (and never reaches the disk)."""


def new_media_id() -> str:
    """A fresh random media ID; URL-safe base64 is exactly the whitelisted alphabet."""
    return secrets.token_urlsafe(_RANDOM_BYTES)


def is_valid_media_id(media_id: str) -> bool:
    return len(media_id) <= MAX_MEDIA_ID_LENGTH and _MEDIA_ID.fullmatch(media_id) is not None


def check_media_id(media_id: str) -> str:
    """`media_id` itself when it is safe, else `InvalidMediaID` saying why."""
    if not is_valid_media_id(media_id):
        raise InvalidMediaID(
            f"Invalid media ID {media_id[:64]!r}: it must be 1-{MAX_MEDIA_ID_LENGTH} "
            "characters of A-Z, a-z, 0-9, '_' and '-'"
        )
    return media_id


def check_server_name(server_name: str) -> str:
    if not is_valid_server_name(server_name):
        raise InvalidMediaID(f"Invalid server name {server_name[:64]!r} in media URI")
    return server_name


def mxc_uri(server_name: str, media_id: str) -> str:
    return f"mxc://{server_name}/{media_id}"
