"""Matrix identifiers: server names, user IDs, room IDs, room aliases and event IDs.

The rules follow appendices.md ("Identifier Grammar") and the per-version event ID and
room ID formats of content/rooms/. Parsing is strict about what the grammar says MUST
hold and lenient where the specification asks servers to be (historical user IDs), so
that rooms with old history stay readable while new identifiers can be checked against
the current grammar with `historical=False`.

Every failure raises `InvalidIdentifier`, a `ValueError` that names the kind of
identifier and the rule that was broken, so callers can map it to `M_INVALID_PARAM` /
`M_BAD_JSON` or drop a PDU without guessing.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from myelin.core.roomversions import EventFormat, RoomVersion

MAX_ID_BYTES = 255
"""User IDs, room IDs, room aliases and event IDs: at most 255 bytes of UTF-8, sigil and
domain included."""

IdentifierKind = Literal["server_name", "user_id", "room_id", "room_alias", "event_id"]


class InvalidIdentifier(ValueError):
    """An identifier that does not follow the grammar of its kind."""

    def __init__(self, kind: IdentifierKind, value: str, reason: str) -> None:
        super().__init__(f"invalid {kind.replace('_', ' ')} {value!r}: {reason}")
        self.kind: IdentifierKind = kind
        self.value = value
        self.reason = reason


# --- server names -------------------------------------------------------------------------

_PORT = re.compile(r"[0-9]{1,5}")
_IPV4 = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_DNS_NAME = re.compile(r"[0-9A-Za-z.-]{1,255}")


def _server_name_error(value: str, reason: str) -> InvalidIdentifier:
    return InvalidIdentifier("server_name", value, reason)


def parse_server_name(server_name: str) -> tuple[str, int | None]:
    """Split a server name into `(host, port)`; the port is None when absent.

    An IPv6 host keeps its brackets (`"[::1]"`), so `host` can be put back in front of a
    port unchanged. A host that looks like a dotted quad must be a valid IPv4 literal
    (each part 0-255): such a string is not a usable DNS name either.
    """
    if not isinstance(server_name, str):
        raise _server_name_error(repr(server_name), "not a string")
    if server_name.startswith("["):
        end = server_name.find("]")
        if end < 0:
            raise _server_name_error(server_name, "unterminated IPv6 literal")
        host = server_name[: end + 1]
        rest = server_name[end + 1 :]
        address = host[1:-1]
        if _IPV6_CHARS.fullmatch(address) is None:
            raise _server_name_error(server_name, "IPv6 literal has invalid characters")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise _server_name_error(server_name, "not an RFC 3513 IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise _server_name_error(server_name, "junk after the IPv6 literal")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_part = server_name.partition(":")
        port_text = port_part if sep else None
        if _IPV4.fullmatch(host) is not None:
            if any(int(part) > 255 for part in host.split(".")):
                raise _server_name_error(server_name, "IPv4 literal part out of range")
        elif _DNS_NAME.fullmatch(host) is None:
            raise _server_name_error(
                server_name, "hostname must be 1-255 of letters, digits, '-' and '.'"
            )
    if port_text is None:
        return host, None
    if _PORT.fullmatch(port_text) is None:
        raise _server_name_error(server_name, "port must be 1-5 decimal digits")
    return host, int(port_text)


def is_valid_server_name(server_name: str) -> bool:
    try:
        parse_server_name(server_name)
    except InvalidIdentifier:
        return False
    return True


# --- localparts ---------------------------------------------------------------------------

_USER_LOCALPART = re.compile(r"[a-z0-9._=\-/+]+")
_SURROGATE_OR_NUL = re.compile("[\x00\ud800-\udfff]")
_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]+")
_STANDARD_B64 = re.compile(r"[A-Za-z0-9+/]+")
_ANY_B64 = re.compile(r"[A-Za-z0-9+/_-]+")
_HASH_EVENT_ID = {
    EventFormat.V2: re.compile(r"\$[A-Za-z0-9+/]{1,254}"),
    EventFormat.V3: re.compile(r"\$[A-Za-z0-9_-]{1,254}"),
    EventFormat.V4: re.compile(r"\$[A-Za-z0-9_-]{1,254}"),
}
"""Whole hash-format event IDs in one match (ASCII, so 255 characters are 255 bytes): the
fast path for the many IDs in `prev_events`/`auth_events`."""
_SHA256_B64_LEN = 43
"""A SHA-256 digest is 32 bytes: 43 characters of unpadded base64."""
_B64_LAST_OF_32_BYTES = frozenset("AEIMQUYcgkosw048")
"""The last character of unpadded base64 of 32 bytes carries 4 bits and 2 zero bits."""


def is_valid_localpart(localpart: str, *, historical: bool = False) -> bool:
    """Is this a user ID localpart?

    Current grammar (`historical=False`): non-empty, only `a-z 0-9 . _ = - / +`.
    Historical grammar: any non-surrogate code points except `:` and NUL, empty allowed;
    servers MUST accept these in events (appendices.md, "Historical User IDs").
    """
    if not isinstance(localpart, str):
        return False
    if not historical:
        return _USER_LOCALPART.fullmatch(localpart) is not None
    return ":" not in localpart and _SURROGATE_OR_NUL.search(localpart) is None


_LOCALPART_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._-/+")


def localpart_from_external(name: str) -> str:
    """A user ID localpart for a name from another system (an SSO account, a bridge).

    The appendix's suggested mapping ("Mapping from other character sets"): UTF-8,
    A-Z lowered, every other byte outside the grammar (and `=` itself) as `=xx`. So
    `cas_user!` becomes `cas_user=21` and `José` becomes `jos=c3=a9`; the mapping is the
    same every time, which is all the spec requires of it.
    """
    out: list[str] = []
    for byte in name.encode("utf-8"):
        if 0x41 <= byte <= 0x5A:  # A-Z
            byte += 0x20
        out.append(chr(byte) if byte in _LOCALPART_SAFE else f"={byte:02x}")
    return "".join(out)


def _is_opaque_localpart(localpart: str) -> bool:
    """Room ID / alias / v1 event ID localparts: non-empty, no `:`, NUL or surrogates."""
    return bool(localpart) and ":" not in localpart and _SURROGATE_OR_NUL.search(localpart) is None


def _byte_length(value: str) -> int:
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return len(value.encode("utf-8", "surrogatepass"))


def _split_sigil(
    kind: IdentifierKind, value: object, sigil: str, *, need_domain: bool
) -> tuple[str, str]:
    """Check type, sigil and length, and split into `(localpart, server_name)`.

    The localpart never contains `:`, so the domain starts after the first colon (the
    domain itself may contain more: a port, an IPv6 literal).
    """
    if not isinstance(value, str):
        raise InvalidIdentifier(kind, repr(value), "not a string")
    if not value.startswith(sigil):
        raise InvalidIdentifier(kind, value, f"must start with {sigil!r}")
    if _byte_length(value) > MAX_ID_BYTES:
        raise InvalidIdentifier(kind, value, f"longer than {MAX_ID_BYTES} bytes")
    localpart, sep, server_name = value[1:].partition(":")
    if need_domain and not sep:
        raise InvalidIdentifier(kind, value, "missing ':domain'")
    if sep and not is_valid_server_name(server_name):
        raise InvalidIdentifier(kind, value, f"invalid server name {server_name!r}")
    return localpart, server_name


# --- user IDs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserID:
    """`@localpart:server_name`."""

    localpart: str
    server_name: str

    @classmethod
    def parse(cls, value: str, *, historical: bool = True) -> UserID:
        """Parse a user ID; `historical=False` applies the current localpart grammar."""
        localpart, server_name = _split_sigil("user_id", value, "@", need_domain=True)
        if not is_valid_localpart(localpart, historical=historical):
            raise InvalidIdentifier(
                "user_id",
                value,
                "localpart must be non-empty and only a-z 0-9 . _ = - / +"
                if not historical
                else "localpart must not contain NUL or surrogates",
            )
        return cls(localpart, server_name)

    @property
    def is_compliant(self) -> bool:
        """Does the localpart follow the current grammar (not only the historical one)?"""
        return is_valid_localpart(self.localpart, historical=False)

    def __str__(self) -> str:
        return f"@{self.localpart}:{self.server_name}"


def is_valid_user_id(value: str, *, historical: bool = True) -> bool:
    try:
        UserID.parse(value, historical=historical)
    except InvalidIdentifier:
        return False
    return True


# --- room IDs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomID:
    """`!opaque:server_name` (rooms v1-v11) or `!hash` (v12+, `server_name` is None)."""

    opaque_id: str
    server_name: str | None

    @classmethod
    def parse(cls, value: str, room_version: RoomVersion | None = None) -> RoomID:
        """Parse a room ID, in the form the room version requires when one is given.

        Without a room version both forms are accepted: `!x:domain` when a colon is
        present, otherwise the domain-less form, whose opaque part must be URL-safe
        base64 (it is the create event's ID). With a v12+ version the ID must be exactly
        `!` + the 43 characters of a URL-safe base64 SHA-256.
        """
        opaque, server_name = _split_sigil("room_id", value, "!", need_domain=False)
        has_domain = ":" in value
        if room_version is not None and has_domain == room_version.room_id_from_create_event:
            raise InvalidIdentifier(
                "room_id",
                value,
                f"room version {room_version.identifier} requires "
                + ("a domain-less room ID" if has_domain else "a room ID with a domain"),
            )
        if has_domain:
            if not _is_opaque_localpart(opaque):
                raise InvalidIdentifier(
                    "room_id", value, "opaque part must be non-empty, without NUL or surrogates"
                )
            return cls(opaque, server_name)
        if _URLSAFE_B64.fullmatch(opaque) is None:
            raise InvalidIdentifier(
                "room_id", value, "domain-less room ID must be URL-safe unpadded base64"
            )
        if room_version is not None and not _is_sha256_b64(opaque):
            raise InvalidIdentifier(
                "room_id", value, "must be the 43-character base64 of a SHA-256 reference hash"
            )
        return cls(opaque, None)

    def __str__(self) -> str:
        if self.server_name is None:
            return f"!{self.opaque_id}"
        return f"!{self.opaque_id}:{self.server_name}"


def _is_sha256_b64(text: str) -> bool:
    return len(text) == _SHA256_B64_LEN and text[-1] in _B64_LAST_OF_32_BYTES


def is_valid_room_id(value: str, room_version: RoomVersion | None = None) -> bool:
    try:
        RoomID.parse(value, room_version)
    except InvalidIdentifier:
        return False
    return True


# --- room aliases -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoomAlias:
    """`#localpart:server_name`."""

    localpart: str
    server_name: str

    @classmethod
    def parse(cls, value: str) -> RoomAlias:
        localpart, server_name = _split_sigil("room_alias", value, "#", need_domain=True)
        if not _is_opaque_localpart(localpart):
            raise InvalidIdentifier(
                "room_alias", value, "localpart must be non-empty, without NUL or surrogates"
            )
        return cls(localpart, server_name)

    def __str__(self) -> str:
        return f"#{self.localpart}:{self.server_name}"


def is_valid_room_alias(value: str) -> bool:
    try:
        RoomAlias.parse(value)
    except InvalidIdentifier:
        return False
    return True


# --- event IDs ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventID:
    """`$opaque:server_name` (event format V1) or `$hash` (V2+, `server_name` is None)."""

    opaque_id: str
    server_name: str | None

    @classmethod
    def parse(cls, value: str, event_format: EventFormat | None = None) -> EventID:
        """Parse an event ID, in the form the event format requires when one is given.

        V1: `$opaque:domain`. V2 (room v3): standard base64 alphabet. V3/V4 (rooms v4+):
        URL-safe base64 alphabet. The hash length is not enforced here: an ID of the
        right alphabet but unknown length simply names no event (the specification's
        own examples use such IDs). Without a format, either shape is accepted.
        """
        pattern = _HASH_EVENT_ID.get(event_format) if event_format is not None else None
        if pattern is not None and isinstance(value, str) and pattern.fullmatch(value):
            return cls(value[1:], None)
        has_domain = isinstance(value, str) and ":" in value
        if has_domain and event_format not in (None, EventFormat.V1):
            raise InvalidIdentifier(
                "event_id", value, "event IDs of this room version have no domain"
            )
        opaque, server_name = _split_sigil("event_id", value, "$", need_domain=False)
        if event_format is EventFormat.V1 or (event_format is None and has_domain):
            if not has_domain:
                raise InvalidIdentifier("event_id", value, "missing ':domain'")
            if not _is_opaque_localpart(opaque):
                raise InvalidIdentifier(
                    "event_id", value, "opaque part must be non-empty, without NUL or surrogates"
                )
            return cls(opaque, server_name)
        if event_format is EventFormat.V2:
            alphabet, name = _STANDARD_B64, "standard"
        elif event_format is None:
            alphabet, name = _ANY_B64, "unpadded"
        else:
            alphabet, name = _URLSAFE_B64, "URL-safe"
        if alphabet.fullmatch(opaque) is None:
            raise InvalidIdentifier("event_id", value, f"must be {name} base64 after '$'")
        return cls(opaque, None)

    def __str__(self) -> str:
        if self.server_name is None:
            return f"${self.opaque_id}"
        return f"${self.opaque_id}:{self.server_name}"


def is_valid_event_id(value: str, event_format: EventFormat | None = None) -> bool:
    pattern = _HASH_EVENT_ID.get(event_format) if event_format is not None else None
    if pattern is not None and isinstance(value, str) and pattern.fullmatch(value):
        return True
    try:
        EventID.parse(value, event_format)
    except InvalidIdentifier:
        return False
    return True


# --- helpers ------------------------------------------------------------------------------


def server_name_of(identifier: str) -> str:
    """The server name of a user ID, room alias, or room/event ID with a domain.

    Raises InvalidIdentifier for malformed IDs and for domain-less room and event IDs,
    which name no server.
    """
    if not isinstance(identifier, str) or not identifier:
        raise InvalidIdentifier("user_id", repr(identifier), "empty or not a string")
    sigil = identifier[0]
    if sigil == "@":
        return UserID.parse(identifier).server_name
    if sigil == "#":
        return RoomAlias.parse(identifier).server_name
    parsed: RoomID | EventID
    if sigil == "!":
        parsed = RoomID.parse(identifier)
        kind: IdentifierKind = "room_id"
    elif sigil == "$":
        parsed = EventID.parse(identifier)
        kind = "event_id"
    else:
        raise InvalidIdentifier("user_id", identifier, "unknown sigil")
    if parsed.server_name is None:
        raise InvalidIdentifier(kind, identifier, "has no server name")
    return parsed.server_name


# --- grammars for non-user-visible identifiers --------------------------------------------

_NAMESPACED = re.compile(r"[a-z][a-z0-9._-]{0,254}")
_OPAQUE = re.compile(r"[0-9A-Za-z._~-]+")


def is_valid_namespaced_identifier(value: str) -> bool:
    """The Common Namespaced Identifier Grammar: 1-255 of `a-z 0-9 - _ .`, starting with
    `a-z` (identifiers starting `m.` are the specification's own; that is not checked)."""
    return isinstance(value, str) and _NAMESPACED.fullmatch(value) is not None


def is_valid_opaque_identifier(value: str, *, max_length: int = 255) -> bool:
    """The Opaque Identifier Grammar: 1 to `max_length` (255 unless an API says otherwise)
    of `0-9 A-Z a-z - . _ ~`, the unreserved characters of RFC 3986."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_length
        and _OPAQUE.fullmatch(value) is not None
    )
