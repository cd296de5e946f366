"""Behaviour specific to the JetStream backend (needs NATS with JetStream on 127.0.0.1:4222;
the interface tests in `test_interface.py` also run against it)."""

from __future__ import annotations

import pytest

from myelin.eventlog import InvalidRecordError, LogFailedError, LogRecord, LogUnavailableError
from myelin.eventlog.jetstream import JetStreamEventLog, decode_room, encode_room
from tests.eventlog.conftest import OpenLog
from tests.eventlog.helpers import rec


@pytest.mark.parametrize(
    "room_id", ["!abc:example.org", "!ünï.cödé:ex.org", "!" + "x" * 254, "!a*b>c d:e"]
)
def test_room_ids_map_to_single_subject_tokens_and_back(room_id: str) -> None:
    token = encode_room(room_id)
    assert token and not set(token) & set(".*> \t\r\n")
    assert decode_room(token) == room_id


async def test_an_unreachable_server_is_a_clear_error() -> None:
    log = JetStreamEventLog(servers="nats://127.0.0.1:1", stream="UNREACHABLE", connect_timeout=1)
    with pytest.raises(LogUnavailableError, match=r"cannot reach NATS at nats://127\.0\.0\.1:1"):
        async with log:
            pass


@pytest.mark.nats
async def test_a_second_writer_cannot_interleave(open_jetstream: OpenLog) -> None:
    async with open_jetstream() as first, open_jetstream() as second:
        assert await first.append([rec(1)]) == [1]
        # `second` still believes the stream ends at 0: its publish is refused whole.
        with pytest.raises(LogFailedError):
            await second.append([rec(2), rec(3)])
        assert await first.append([rec(4)]) == [2]
        assert [e.record for e in await first.read(1)] == [rec(1), rec(4)]


@pytest.mark.nats
async def test_records_over_the_server_limit_are_refused_up_front(open_jetstream: OpenLog) -> None:
    async with open_jetstream() as log:
        with pytest.raises(InvalidRecordError, match="NATS server takes at most"):
            await log.append([LogRecord("!r:x", b"x" * (8 * 1024 * 1024))])
        assert await log.append([rec(1)]) == [1]
