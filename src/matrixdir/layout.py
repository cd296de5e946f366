"""Names in a matrixdir store: room directories, event files, attachments (docs §3, §4, §6).

Pure functions only: they turn identifiers into filesystem-safe names and back, so that every
program reading a store agrees on what a name means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from matrixdir.errors import InvalidNameError

FORMAT_VERSION = 1
MARKER_FILE = "matrixdir.json"
LOCK_FILE = "lock.pid"
STATE_DIR = ".matrixdir"
OUTBOX_DIR = "outbox"
ATTACHMENTS_DIR = "attachments"
DECRYPTIONS_FILE = "late-decryptions.jsonl"
ROOM_PREFIX = "%21"
NAME_MAX = 255

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")
_FILE_RE = re.compile(r"^(0|[1-9][0-9]{0,15})(?:\.([1-9][0-9]{0,8}))?-events\.jsonl$")


def encode_name(value: str) -> str:
    """Encode an identifier as one filesystem-safe path segment (reversible)."""
    if not value:
        raise InvalidNameError("cannot encode an empty identifier")
    out = []
    for i, byte in enumerate(value.encode("utf-8")):
        if byte in _SAFE and not (i == 0 and byte == ord(".")):
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    name = "".join(out)
    if len(name.encode()) > NAME_MAX:
        raise InvalidNameError(f"{value!r} encodes to a name longer than {NAME_MAX} bytes")
    return name


def decode_name(name: str) -> str:
    """Decode a path segment made by `encode_name`; reject any other spelling."""
    raw = bytearray()
    i = 0
    while i < len(name):
        ch = name[i]
        if ch == "%":
            m = _ESCAPE.match(name, i)
            if not m:
                raise InvalidNameError(f"bad escape in {name!r}")
            raw.append(int(m.group(1), 16))
            i += 3
        else:
            raw.append(ord(ch))
            i += 1
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidNameError(f"{name!r} does not decode to UTF-8") from e
    if not value or encode_name(value) != name:
        raise InvalidNameError(f"{name!r} is not a canonical encoded name")
    return value


def room_dir_name(room_id: str) -> str:
    """The directory name of a room."""
    if not room_id.startswith("!"):
        raise InvalidNameError(f"not a room ID: {room_id!r}")
    return encode_name(room_id)


def room_id_from_dir(name: str) -> str:
    """The room ID of a room directory name; raises InvalidNameError for other names."""
    if not name.startswith(ROOM_PREFIX):
        raise InvalidNameError(f"{name!r} is not a room directory")
    return decode_name(name)


@total_ordering
@dataclass(frozen=True)
class EventFileName:
    """`<ts>[.<n>]-events.jsonl`: the timestamp of the first event and a tie-breaker."""

    ts: int
    n: int = 0

    @property
    def name(self) -> str:
        suffix = f".{self.n}" if self.n else ""
        return f"{self.ts}{suffix}-events.jsonl"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, EventFileName):
            return NotImplemented
        return (self.ts, self.n) < (other.ts, other.n)

    @classmethod
    def parse(cls, name: str) -> EventFileName:
        m = _FILE_RE.match(name)
        if not m:
            raise InvalidNameError(f"{name!r} is not an event file name")
        return cls(int(m.group(1)), int(m.group(2) or 0))

    @classmethod
    def try_parse(cls, name: str) -> EventFileName | None:
        try:
            return cls.parse(name)
        except InvalidNameError:
            return None


def parse_mxc(uri: str) -> tuple[str, str]:
    """Split `mxc://<server-name>/<media-id>`; raises InvalidNameError if malformed."""
    if not isinstance(uri, str) or not uri.startswith("mxc://"):
        raise InvalidNameError(f"not an mxc URI: {uri!r}")
    rest = uri[len("mxc://") :]
    server, sep, media_id = rest.partition("/")
    if not sep or not server or not media_id or "/" in media_id:
        raise InvalidNameError(f"malformed mxc URI: {uri!r}")
    return server, media_id


def attachment_relpath(uri: str) -> str:
    """Path of an attachment relative to its room directory."""
    server, media_id = parse_mxc(uri)
    return f"{ATTACHMENTS_DIR}/{encode_name(server)}/{encode_name(media_id)}"
