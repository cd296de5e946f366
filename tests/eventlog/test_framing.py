"""Frame encoding: round trips, and no damaged frame ever decodes as valid."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from myelin.eventlog.framing import Frame, decode_frame, encode_frame

rooms = st.text(min_size=1, max_size=40).map(lambda s: s.encode("utf-8")[:255])
payloads = st.binary(max_size=3000)


@settings(max_examples=100, deadline=None)
@given(
    offset=st.integers(1, 2**63),
    back=st.integers(0, 1000),
    end=st.booleans(),
    room=rooms,
    payload=payloads,
)
def test_frames_round_trip(offset: int, back: int, end: bool, room: bytes, payload: bytes) -> None:
    batch = max(1, offset - back)
    data = encode_frame(offset, batch, end, room, payload)
    prefix = b"\x00" * 7
    frame = decode_frame(prefix + data + b"trailing", len(prefix))
    assert frame == Frame(offset, batch, end, room.decode(), payload, len(prefix) + len(data))


@settings(max_examples=150, deadline=None)
@given(room=rooms, payload=payloads, data=st.data())
def test_any_damaged_byte_is_detected(room: bytes, payload: bytes, data: st.DataObject) -> None:
    frame = encode_frame(5, 3, True, room, payload)
    at = data.draw(st.integers(0, len(frame) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = bytearray(frame)
    damaged[at] ^= flip
    assert not isinstance(decode_frame(bytes(damaged), 0), Frame)


@settings(max_examples=100, deadline=None)
@given(room=rooms, payload=payloads, data=st.data())
def test_every_truncation_is_incomplete_or_invalid(
    room: bytes, payload: bytes, data: st.DataObject
) -> None:
    frame = encode_frame(9, 9, True, room, payload)
    cut = data.draw(st.integers(0, len(frame) - 1))
    assert not isinstance(decode_frame(frame[:cut], 0), Frame)
