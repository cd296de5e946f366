"""The headers of served media: Content-Type, Content-Disposition and the security set.

Uploaded bytes are hostile until proven otherwise. The server trusts the uploader's
Content-Type only because the disposition is computed from it (content_repo.md,
"Serving inline content"): a type outside the spec's list is served as `attachment`, so a
browser never renders an uploaded HTML page inline. Every media response also carries the
recommended Content-Security-Policy and Cross-Origin-Resource-Policy, plus
`X-Content-Type-Options: nosniff` so browsers do not second-guess the type either.
"""

from __future__ import annotations

import re
from urllib.parse import quote

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CONTENT_TYPE_LENGTH = 255
MAX_FILENAME_BYTES = 255

#: The content types the spec allows for `Content-Disposition: inline`.
INLINE_CONTENT_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

#: The policy the spec recommends for served content.
CONTENT_SECURITY_POLICY = (
    b"sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    b"style-src 'unsafe-inline'; object-src 'self';"
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY),
    (b"cross-origin-resource-policy", b"cross-origin"),
    (b"x-content-type-options", b"nosniff"),
)

# RFC 9110 media type: token "/" token, then optional parameters (printable ASCII only).
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_CONTENT_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(\s*;[\x20-\x7e]*)?")
# RFC 5987 attr-char: what may stay unescaped in `filename*=utf-8''...`.
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"


class BadHeaderValue(ValueError):
    """A client-supplied Content-Type or file name the server will not store."""


def normalize_content_type(value: str | None) -> str:
    """The type to store for an upload; absent or empty means `application/octet-stream`."""
    if value is None or not value.strip():
        return DEFAULT_CONTENT_TYPE
    value = value.strip()
    if len(value) > MAX_CONTENT_TYPE_LENGTH or not _CONTENT_TYPE.fullmatch(value):
        raise BadHeaderValue(f"Content-Type {value[:64]!r} is not a valid media type")
    return value


def essence(content_type: str) -> str:
    """`type/subtype` in lower case, parameters dropped: what the inline list is about."""
    return content_type.split(";", 1)[0].strip().lower()


def check_filename(name: str | None) -> str | None:
    """A file name fit to store and echo back; control characters and path separators
    are refused rather than silently changed, since the spec wants the same name back."""
    if name is None or name == "":
        return None
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILENAME_BYTES:
        raise BadHeaderValue(f"File name longer than {MAX_FILENAME_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadHeaderValue("File name contains control characters")
    if "/" in name or "\\" in name:
        raise BadHeaderValue("File name must not contain '/' or '\\'")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadHeaderValue("File name is not valid Unicode") from None
    return name


def is_inline_safe(content_type: str) -> bool:
    return essence(content_type) in INLINE_CONTENT_TYPES


def content_disposition(content_type: str, filename: str | None, *, inline: bool = False) -> bytes:
    """`inline` for the spec's safe types (or when forced), else `attachment`; then the
    file name, as a quoted string when it is plain ASCII, else RFC 5987 `filename*`."""
    kind = "inline" if inline or is_inline_safe(content_type) else "attachment"
    if not filename:
        return kind.encode("ascii")
    if all(0x20 <= ord(c) < 0x7F for c in filename):
        escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
        return f'{kind}; filename="{escaped}"'.encode("ascii")
    encoded = quote(filename.encode("utf-8"), safe=_ATTR_CHAR_SAFE)
    return f"{kind}; filename*=utf-8''{encoded}".encode("ascii")


def media_headers(
    content_type: str, filename: str | None, size: int, *, inline: bool = False
) -> list[tuple[bytes, bytes]]:
    """Every header of a media response except Content-Type (the HTTP layer sets it)."""
    return [
        (b"content-length", str(size).encode("ascii")),
        (b"content-disposition", content_disposition(content_type, filename, inline=inline)),
        *SECURITY_HEADERS,
    ]
