"""The on-disk frame of one log record: pure encoding and decoding, no I/O.

Layout (all integers big-endian)::

    magic    4 bytes  b"\\x8dMLR"
    crc      u32      zlib.crc32 of every byte after this field (length included)
    length   u32      number of bytes after this field
    offset   u64      the record's offset (dense, from 1)
    batch    u64      offset of the first record of the write (group commit) it came in
    flags    u8       FLAG_BATCH_END on the last record of that write
    room_len u16      length of the room ID in bytes
    room_id  room_len bytes, UTF-8
    payload  the rest

Why each field exists: the magic lets recovery find later frames after a damaged one,
the CRC catches torn or flipped bytes, the stored offset catches lost or duplicated
frames, and the batch fields let recovery tell a torn final write (drop it: it was never
acknowledged) from damage to an acknowledged write (stop loudly), and keep every
`append` call all-or-nothing across a crash.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

MAGIC = b"\x8dMLR"
FLAG_BATCH_END = 0x01
_KNOWN_FLAGS = FLAG_BATCH_END

_PREFIX = struct.Struct(">4sII")  # magic, crc, length
_BODY = struct.Struct(">QQBH")  # offset, batch, flags, room_len
_HEADER = struct.Struct(">4sIIQQBH")  # both at once, for the common case
PREFIX_SIZE = _PREFIX.size
HEADER_SIZE = _HEADER.size

MAX_ROOM_ID_BYTES = 255
"""The spec's limit on room IDs (appendices, identifier grammar)."""
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
MAX_FRAME_BYTES = HEADER_SIZE + MAX_ROOM_ID_BYTES + MAX_PAYLOAD_BYTES


class Frame(NamedTuple):
    """One decoded frame and where it ends in its buffer (a tuple: cheap to build)."""

    offset: int
    batch_first: int
    batch_end: bool
    room_id: str
    payload: bytes
    end: int


def encode_frame(
    offset: int, batch_first: int, batch_end: bool, room_id: bytes, payload: bytes
) -> bytes:
    """The bytes of one frame; `room_id` is already UTF-8 and checked by the caller."""
    body = _BODY.pack(offset, batch_first, FLAG_BATCH_END if batch_end else 0, len(room_id))
    length = len(body) + len(room_id) + len(payload)
    length_bytes = length.to_bytes(4, "big")
    crc = zlib.crc32(payload, zlib.crc32(room_id, zlib.crc32(body, zlib.crc32(length_bytes))))
    return b"".join((MAGIC, crc.to_bytes(4, "big"), length_bytes, body, room_id, payload))


class FrameStatus:
    """Why `decode_frame` returned no frame (plain string constants)."""

    INCOMPLETE = "incomplete"
    """The buffer ends inside the frame: more bytes are needed (or the tail is torn)."""
    BAD_MAGIC = "bad magic"
    BAD_LENGTH = "impossible length"
    BAD_CRC = "checksum mismatch"
    BAD_FIELDS = "invalid header fields"


def decode_frame(buf: bytes | memoryview, pos: int) -> Frame | str:
    """Decode the frame starting at `pos` in `buf`, or say why there is none.

    Returns a `Frame` or one of the `FrameStatus` strings. Never raises on bad bytes.
    """
    if len(buf) - pos < HEADER_SIZE:
        if len(buf) - pos >= 4 and bytes(buf[pos : pos + 4]) != MAGIC:
            return FrameStatus.BAD_MAGIC
        return FrameStatus.INCOMPLETE
    magic, crc, length, offset, batch_first, flags, room_len = _HEADER.unpack_from(buf, pos)
    if magic != MAGIC:
        return FrameStatus.BAD_MAGIC
    if length < _BODY.size or length > MAX_FRAME_BYTES - PREFIX_SIZE:
        return FrameStatus.BAD_LENGTH
    end = pos + PREFIX_SIZE + length
    if end > len(buf):
        return FrameStatus.INCOMPLETE
    if zlib.crc32(memoryview(buf)[pos + 8 : end]) != crc:  # length field onwards
        return FrameStatus.BAD_CRC
    if (
        flags & ~_KNOWN_FLAGS
        or offset < 1
        or not 1 <= batch_first <= offset
        or room_len > length - _BODY.size
    ):
        return FrameStatus.BAD_FIELDS
    room_start = pos + HEADER_SIZE
    try:
        room_id = str(buf[room_start : room_start + room_len], "utf-8")
    except UnicodeDecodeError:
        return FrameStatus.BAD_FIELDS
    payload = bytes(buf[room_start + room_len : end])
    return Frame(offset, batch_first, bool(flags & FLAG_BATCH_END), room_id, payload, end)


def find_next_frame(buf: bytes | memoryview, start: int) -> tuple[int, Frame] | None:
    """The first position at or after `start` where a valid frame begins, with the frame.

    Used only on the error path of recovery, to look past a damaged frame.
    """
    data = bytes(buf) if isinstance(buf, memoryview) else buf
    pos = data.find(MAGIC, start)
    while pos != -1:
        frame = decode_frame(data, pos)
        if isinstance(frame, Frame):
            return pos, frame
        pos = data.find(MAGIC, pos + 1)
    return None
