"""The `EventLog` contract, run against every backend (`open_log` fixture)."""

from __future__ import annotations

import asyncio

import pytest

from myelin.eventlog import (
    EventLog,
    InvalidReaderNameError,
    InvalidRecordError,
    LogClosedError,
    LogEntry,
    LogRecord,
    OffsetError,
)
from tests.eventlog.conftest import OpenLog
from tests.eventlog.helpers import ROOM, rec


async def test_offsets_are_dense_from_one_and_read_back_in_order(open_log: OpenLog) -> None:
    async with open_log() as log:
        assert isinstance(log, EventLog)
        assert await log.head() == 0
        assert await log.read(1) == []
        assert await log.append([rec(1), rec(2), rec(3)]) == [1, 2, 3]
        assert await log.append([rec(4)]) == [4]
        assert await log.head() == 4
        entries = await log.read(1)
        assert [e.offset for e in entries] == [1, 2, 3, 4]
        assert [e.record for e in entries] == [rec(i) for i in range(1, 5)]
        offset, record = entries[0]  # unpacks as (offset, record)
        assert (offset, record.room_id) == (1, ROOM)
        assert await log.read(3, limit=1) == [LogEntry(3, rec(3))]
        assert await log.read(5) == []


async def test_rooms_and_binary_payloads_round_trip(open_log: OpenLog) -> None:
    records = [
        LogRecord("!a:example.org", b""),
        LogRecord("!ünïcode:example.org", bytes(range(256)) * 4),
        LogRecord("!" + "x" * 254, b"\x8dMLR inside a payload is fine"),
    ]
    async with open_log() as log:
        await log.append(records)
    async with open_log() as log:
        assert [e.record for e in await log.read(1)] == records


async def test_empty_append_writes_nothing(open_log: OpenLog) -> None:
    async with open_log() as log:
        assert await log.append([]) == []
        assert await log.head() == 0


@pytest.mark.parametrize(
    ("room_id", "payload"),
    [
        ("", b"x"),
        ("!" + "x" * 255, b"x"),
        ("!nul\x00:example.org", b"x"),
        ("!room:example.org", "not bytes"),
        ("!room:example.org", bytearray(b"mutable")),
        (42, b"x"),
    ],
)
def test_bad_records_are_refused_on_construction(room_id: object, payload: object) -> None:
    with pytest.raises(InvalidRecordError):
        LogRecord(room_id, payload)  # type: ignore[arg-type]


async def test_a_bad_record_in_an_append_writes_none_of_it(open_log: OpenLog) -> None:
    async with open_log() as log:
        with pytest.raises(InvalidRecordError):
            await log.append([rec(1), "not a record"])  # type: ignore[list-item]
        assert await log.head() == 0
        assert await log.append([rec(1)]) == [1]


@pytest.mark.parametrize(("from_offset", "limit"), [(0, 10), (-1, 10), (1, 0), (1, -5)])
async def test_bad_read_arguments_raise(open_log: OpenLog, from_offset: int, limit: int) -> None:
    async with open_log() as log:
        with pytest.raises(OffsetError):
            await log.read(from_offset, limit)


async def test_records_survive_reopen_and_offsets_continue(open_log: OpenLog) -> None:
    async with open_log() as log:
        await log.append([rec(i) for i in range(1, 11)])
    async with open_log() as log:
        assert await log.head() == 10
        assert await log.append([rec(11)]) == [11]
        assert [e.record for e in await log.read(1, 100)] == [rec(i) for i in range(1, 12)]


async def test_concurrent_appends_keep_each_call_contiguous(open_log: OpenLog) -> None:
    async with open_log() as log:

        async def appender(n: int) -> list[int]:
            return await log.append([rec(n * 100 + k) for k in range(5)])

        results = await asyncio.gather(*(appender(n) for n in range(40)))
        all_offsets = sorted(o for offsets in results for o in offsets)
        assert all_offsets == list(range(1, 201))
        for n, offsets in enumerate(results):
            assert offsets == list(range(offsets[0], offsets[0] + 5))
            got = await log.read(offsets[0], 5)
            assert [e.record for e in got] == [rec(n * 100 + k) for k in range(5)]


async def test_concurrent_appenders_coalesce_into_few_fsyncs(open_log: OpenLog) -> None:
    async with open_log() as log:
        await asyncio.gather(*(log.append([rec(i)]) for i in range(200)))
        stats = log.stats
        assert stats.appends == 200
        assert stats.records == 200
        assert stats.fsyncs == stats.batches
        # 200 callers that queue together share syncs: far fewer syncs than calls.
        assert 1 <= stats.fsyncs <= 20, stats


async def test_tail_follows_new_commits_without_polling(open_log: OpenLog) -> None:
    async with open_log() as log:
        await log.append([rec(1), rec(2)])
        seen: list[LogEntry] = []
        got_three = asyncio.Event()

        async def follow() -> None:
            async for entry in log.tail(1):
                seen.append(entry)
                if len(seen) == 3:
                    got_three.set()
                if len(seen) == 5:
                    return

        async with asyncio.TaskGroup() as tg:
            tg.create_task(follow())
            await log.append([rec(3)])
            await got_three.wait()
            await log.append([rec(4), rec(5)])
        assert [e.offset for e in seen] == [1, 2, 3, 4, 5]
        assert [e.record for e in seen] == [rec(i) for i in range(1, 6)]


async def test_tail_from_the_future_waits_for_that_offset(open_log: OpenLog) -> None:
    async with open_log() as log:
        await log.append([rec(1)])

        async def first_from_3() -> LogEntry:
            async for entry in log.tail(3):
                return entry
            raise AssertionError("tail ended")

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(first_from_3())
            await log.append([rec(2)])
            await log.append([rec(3)])
        assert task.result() == LogEntry(3, rec(3))


async def test_tail_ends_when_the_log_closes(open_log: OpenLog) -> None:
    log = open_log()
    seen: list[int] = []
    async with log:
        await log.append([rec(1)])

        first_seen = asyncio.Event()

        async def follow() -> None:
            async for entry in log.tail(1):
                seen.append(entry.offset)
                first_seen.set()

        follower = asyncio.ensure_future(follow())
        await first_seen.wait()
        await log.close()  # the follower now waits for offset 2, which never comes
        await asyncio.wait_for(follower, 5)
    assert seen == [1]


async def test_tail_ends_when_the_log_closes_before_it_started(open_log: OpenLog) -> None:
    log = open_log()
    async with log:
        await log.append([rec(1)])
        follower = log.tail(2)
        await log.close()
        assert [entry async for entry in follower] == []


async def test_closed_log_refuses_appends(open_log: OpenLog) -> None:
    log = open_log()
    async with log:
        await log.append([rec(1)])
    with pytest.raises(LogClosedError):
        await log.append([rec(2)])
    with pytest.raises(LogClosedError):
        await log.read(1)
    await log.close()  # idempotent


async def test_reader_offsets_are_stored_durably(open_log: OpenLog) -> None:
    async with open_log() as log:
        await log.append([rec(i) for i in range(1, 6)])
        assert await log.get_committed("sync") == 0
        await log.commit("sync", 3)
        await log.commit("federation-sender", 5)
        await log.commit("x.y_Z-9", 1)
        assert await log.get_committed("sync") == 3
        await log.commit("sync", 4)
        assert await log.get_committed("sync") == 4
    async with open_log() as log:
        assert await log.get_committed("sync") == 4
        assert await log.get_committed("federation-sender") == 5
        assert await log.get_committed("push") == 0
        await log.commit("sync", 0)  # a rebuild starts over
        assert await log.get_committed("sync") == 0


async def test_reader_offsets_beyond_the_head_are_refused(open_log: OpenLog) -> None:
    async with open_log() as log:
        await log.append([rec(1)])
        for bad in (2, -1):
            with pytest.raises(OffsetError):
                await log.commit("sync", bad)
        assert await log.get_committed("sync") == 0


@pytest.mark.parametrize(
    "name", ["", ".hidden", "dot.", "a/b", "../x", "with space", "x" * 101, "é", "a*b", "a>b"]
)
async def test_bad_reader_names_are_refused(open_log: OpenLog, name: str) -> None:
    async with open_log() as log:
        with pytest.raises(InvalidReaderNameError):
            await log.get_committed(name)
        with pytest.raises(InvalidReaderNameError):
            await log.commit(name, 0)


async def test_concurrent_commits_of_one_reader_leave_one_of_the_values(
    open_log: OpenLog,
) -> None:
    async with open_log() as log:
        await log.append([rec(i) for i in range(1, 21)])
        await asyncio.gather(*(log.commit("sync", i) for i in range(1, 21)))
        assert 1 <= await log.get_committed("sync") <= 20


async def test_cancelled_appender_does_not_break_others(open_log: OpenLog) -> None:
    async with open_log() as log:
        doomed = asyncio.ensure_future(log.append([rec(0)]))
        doomed.cancel()
        offsets = await log.append([rec(1)])
        with pytest.raises(asyncio.CancelledError):
            await doomed
        entries = await log.read(1)
        # The cancelled record is either absent or whole; the other one is there.
        assert rec(1) in [e.record for e in entries]
        assert entries[-1].offset == offsets[0]
        assert [e.offset for e in entries] == list(range(1, len(entries) + 1))


async def test_concurrent_closes_all_wait_for_the_end(open_log: OpenLog) -> None:
    log = open_log()
    async with log:
        pending = asyncio.ensure_future(log.append([rec(1)]))
        await asyncio.gather(log.close(), log.close(), log.close())
        assert pending.done() and pending.result() == [1]
    async with open_log() as log:  # the files were released
        assert await log.head() == 1


async def test_long_and_short_reads_return_exact_ranges(open_log: OpenLog) -> None:
    async with open_log() as log:
        for start in range(1, 301, 50):
            await log.append([rec(i) for i in range(start, start + 50)])
    async with open_log() as log:  # reopened: nothing is served from memory
        everything = await log.read(1, 1000)
        assert [e.record for e in everything] == [rec(i) for i in range(1, 301)]
        for start, limit in [(1, 100), (77, 16), (150, 15), (290, 100), (300, 1), (301, 5)]:
            got = await log.read(start, limit)
            expected = list(range(start, min(start + limit, 301)))
            assert [e.offset for e in got] == expected
            assert [e.record for e in got] == [rec(i) for i in expected]
