"""Segment files: naming, recovery of the active segment, validation and reads.

Blocking functions, run in worker threads by the disk backend. A log directory holds
segment files named by the offset of their first record (`00000000000000000001.seg`);
only the newest one is written to. Each segment gets a sparse index (an entry every
`INDEX_INTERVAL` bytes) so that a read starts near its offset instead of at byte 0.

Recovery rules (see `framing` for the frame fields that make them decidable):

- The newest segment may end in a torn write: a crash during the last write, which was
  therefore never acknowledged. Everything from the start of the last incomplete write
  (batch) on is cut away, so every `append` call is all-or-nothing.
- A damaged frame followed by any frame of a *later* write is not a torn tail: that
  later write proves the damaged one had been synced and acknowledged. So is damage in
  an older segment. Both raise `CorruptLogError` and nothing is changed on disk.
"""

from __future__ import annotations

import bisect
import os
import re
from dataclasses import dataclass, field
from typing import BinaryIO

from myelin.eventlog.errors import CorruptLogError
from myelin.eventlog.framing import Frame, FrameStatus, decode_frame, find_next_frame

SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME = re.compile(r"(\d{20})\.seg")
INDEX_INTERVAL = 16 * 1024
_FIRST_CHUNK = 32 * 1024
_MAX_CHUNK = 1024 * 1024


def segment_name(base: int) -> str:
    return f"{base:020d}{SEGMENT_SUFFIX}"


def list_segment_bases(directory: str) -> list[int]:
    """Base offsets of the segment files in `directory`, ascending."""
    bases = []
    for name in os.listdir(directory):
        match = _SEGMENT_NAME.fullmatch(name)
        if match:
            base = int(match.group(1))
            if base < 1:
                raise CorruptLogError(
                    os.path.join(directory, name), 0, "segment named for offset 0"
                )
            bases.append(base)
    bases.sort()
    return bases


@dataclass(slots=True)
class SparseIndex:
    """Offsets and byte positions of some frames of one segment, ascending."""

    offsets: list[int]
    positions: list[int]

    @classmethod
    def empty(cls, base: int) -> SparseIndex:
        return cls([base], [0])

    def note(self, offset: int, position: int) -> None:
        """Remember a frame if it is far enough from the last remembered one."""
        if position - self.positions[-1] >= INDEX_INTERVAL:
            self.offsets.append(offset)
            self.positions.append(position)

    def locate(self, offset: int) -> tuple[int, int]:
        """`(offset, position)` of the indexed frame at or before `offset`."""
        i = bisect.bisect_right(self.offsets, offset) - 1
        return self.offsets[max(i, 0)], self.positions[max(i, 0)]

    def drop_from(self, position: int) -> None:
        """Forget frames at or after `position` (they were truncated away)."""
        while len(self.positions) > 1 and self.positions[-1] >= position:
            self.positions.pop()
            self.offsets.pop()


@dataclass(slots=True)
class SegmentState:
    """What a scan learned about a segment: its valid length, last offset and index."""

    size: int
    last: int
    index: SparseIndex
    truncated_bytes: int = 0
    dropped_records: int = field(default=0)


def _open_segment(path: str) -> BinaryIO:
    try:
        return open(path, "rb")  # the callers close it
    except FileNotFoundError:
        raise CorruptLogError(path, 0, "the segment file is missing") from None


def _read_all(path: str) -> bytes:
    with _open_segment(path) as f:
        return f.read()


def recover_active(path: str, base: int) -> SegmentState:
    """Scan the newest segment, cut a torn final write away (durably), return its state."""
    data = _read_all(path)
    index = SparseIndex.empty(base)
    pos = 0
    expected = base
    batch_end_pos = 0  # where the last complete write ends
    last_complete = base - 1  # offset of its last record
    while pos < len(data):
        frame = decode_frame(data, pos)
        if not isinstance(frame, Frame):
            break
        if frame.offset != expected or frame.batch_first != last_complete + 1:
            raise CorruptLogError(
                path,
                pos,
                f"frame holds offset {frame.offset} (write from {frame.batch_first}); "
                f"expected offset {expected} (write from {last_complete + 1})",
            )
        index.note(frame.offset, pos)
        pos = frame.end
        expected += 1
        if frame.batch_end:
            batch_end_pos = pos
            last_complete = frame.offset
    if pos == len(data) and batch_end_pos == pos:
        return SegmentState(size=pos, last=last_complete, index=index)
    # The final write is incomplete or damaged at `pos`. It is a torn tail only if
    # nothing of a later write follows.
    torn_batch = last_complete + 1
    probe = pos + 1 if pos < len(data) else pos
    while (found := find_next_frame(data, probe)) is not None:
        at, later = found
        if later.batch_first != torn_batch:
            status = decode_frame(data, pos)
            raise CorruptLogError(
                path,
                pos,
                f"damaged frame ({status}) followed by a later write (offset "
                f"{later.offset} at byte {at}), so it is not a torn tail",
            )
        probe = later.end
    with open(path, "r+b") as f:
        f.truncate(batch_end_pos)
        f.flush()
        os.fsync(f.fileno())
    index.drop_from(batch_end_pos)
    return SegmentState(
        size=batch_end_pos,
        last=last_complete,
        index=index,
        truncated_bytes=len(data) - batch_end_pos,
        dropped_records=expected - 1 - last_complete,
    )


def scan_sealed(path: str, base: int, last: int) -> SegmentState:
    """Validate a full (no longer written) segment holding offsets `base..last`."""
    data = _read_all(path)
    index = SparseIndex.empty(base)
    pos = 0
    expected = base
    batch_first = base
    batch_end = True
    while pos < len(data):
        frame = decode_frame(data, pos)
        if not isinstance(frame, Frame):
            raise CorruptLogError(path, pos, f"damaged frame ({frame}) in a full segment")
        if frame.offset != expected or frame.batch_first != batch_first:
            raise CorruptLogError(
                path,
                pos,
                f"frame holds offset {frame.offset} (write from {frame.batch_first}); "
                f"expected offset {expected} (write from {batch_first})",
            )
        index.note(frame.offset, pos)
        pos = frame.end
        expected += 1
        batch_end = frame.batch_end
        if batch_end:
            batch_first = expected
    if expected - 1 != last or not batch_end:
        raise CorruptLogError(
            path,
            pos,
            f"full segment ends after offset {expected - 1}"
            f"{'' if batch_end else ' inside a write'}; the next segment starts at {last + 1}",
        )
    return SegmentState(size=pos, last=last, index=index)


def read_frames(
    path: str, position: int, first: int, from_offset: int, upto: int, end: int
) -> tuple[list[Frame], int]:
    """Frames with offsets `from_offset..upto` of a segment, reading from `position`
    (where the frame with offset `first` starts) and never past byte `end`; and the
    number of bytes read."""
    frames: list[Frame] = []
    expected = first
    read = 0
    with _open_segment(path) as f:
        fd = f.fileno()
        buf = b""
        buf_start = position  # file position of buf[0]
        pos = 0  # position in buf
        chunk_size = _FIRST_CHUNK  # small first: a read often wants one record near `position`
        while expected <= upto and buf_start + pos < end:
            frame = decode_frame(buf, pos)
            if isinstance(frame, Frame):
                if frame.offset != expected:
                    raise CorruptLogError(
                        path,
                        buf_start + pos,
                        f"frame holds offset {frame.offset}, expected {expected}",
                    )
                if expected >= from_offset:
                    frames.append(frame)
                expected += 1
                pos = frame.end
                continue
            if frame != FrameStatus.INCOMPLETE:
                raise CorruptLogError(path, buf_start + pos, f"damaged frame ({frame})")
            # Need more bytes: keep the partial frame, read the next chunk after it.
            file_pos = buf_start + len(buf)
            want = min(max(chunk_size, 2 * (len(buf) - pos)), end - file_pos)
            chunk_size = min(2 * chunk_size, _MAX_CHUNK)
            if want <= 0:
                raise CorruptLogError(path, buf_start + pos, "frame runs past the end")
            chunk = os.pread(fd, want, file_pos)
            read += len(chunk)
            if not chunk:
                raise CorruptLogError(path, buf_start + pos, "file shorter than expected")
            buf = buf[pos:] + chunk
            buf_start += pos
            pos = 0
    return frames, read
