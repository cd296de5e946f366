"""The sync reader against a real roomserver and log: what it serves, and rebuilds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import Status
from myelin.storage import Database
from myelin.syncapi.filters import EventFilter, SyncFilter
from myelin.syncapi.notifier import Notifier
from myelin.syncapi.reader import SyncReader
from myelin.syncapi.rebuild import rebuild
from myelin.syncapi.sync import Requester, SyncAPI
from myelin.syncapi.tokens import StreamToken
from tests.roomserver.rooms import RoomScript, user

ALICE, BOB, EVE = user("alice"), user("bob"), user("eve")


def without_age(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_age(v) for k, v in value.items() if k != "age"}
    if isinstance(value, list):
        return [without_age(v) for v in value]
    return value


@contextlib.asynccontextmanager
async def serving(
    db: Database, log: DiskEventLog
) -> AsyncIterator[tuple[Roomserver, Notifier, SyncAPI, asyncio.TaskGroup]]:
    """A roomserver whose log a running sync reader follows (in the task group it
    yields, so a test can add its own tasks); the reader is stopped on exit."""
    rs = await Roomserver.open(db, log)
    notifier = Notifier()
    reader = SyncReader(db, log, notifier)
    await reader.open()
    sync = SyncAPI(db, notifier)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(reader.run())
        try:
            yield rs, notifier, sync, tg
        finally:
            task.cancel()


async def test_soft_failed_and_rejected_events_are_never_served(
    db: Database, log: DiskEventLog
) -> None:
    async with serving(db, log) as (rs, notifier, sync, _):
        script = RoomScript(rs, "10")
        await script.create(ALICE)
        await script.join(ALICE)
        _, r = await script.send("m.room.join_rules", ALICE, {"join_rule": "public"}, state_key="")
        await script.join(BOB)
        hello, r = await script.send("m.room.message", BOB, {"body": "hello"})
        ban, r = await script.send("m.room.member", ALICE, {"membership": "ban"}, state_key=BOB)
        # Bob's message built on the state before the ban: allowed there, not now.
        late, r = await script.send("m.room.message", BOB, {"body": "late"}, prevs=[hello.event_id])
        assert r.status is Status.SOFT_FAILED, r
        rogue, r = await script.send("m.room.message", EVE, {"body": "rogue"})
        assert r.status is Status.REJECTED, r
        after, r = await script.send("m.room.message", ALICE, {"body": "after"})
        assert r.status is Status.ACCEPTED
        await asyncio.wait_for(notifier.wait_for_position(r.log_offset), 10)

        assert script.room_id is not None
        alice = Requester(ALICE, "DEV")
        first = await sync.sync(alice, None, SyncFilter(timeline=EventFilter(limit=50)))
        room = first["rooms"]["join"][script.room_id]
        served = [e["event_id"] for e in room["timeline"]["events"]]
        assert hello.event_id in served and ban.event_id in served
        assert after.event_id == served[-1]
        assert late.event_id not in served and rogue.event_id not in served
        page = await sync.messages(
            alice,
            script.room_id,
            from_token=None,
            to_token=None,
            backwards=True,
            limit=50,
            flt=EventFilter(),
        )
        assert [e["event_id"] for e in page["chunk"]] == served[::-1]

        # Bob was banned: his sync has the room under `leave`, ending with the ban.
        bob = Requester(BOB, "DEV")
        since = StreamToken(1)
        mine = await sync.sync(bob, since, SyncFilter())
        left = mine["rooms"]["leave"][script.room_id]
        assert left["timeline"]["events"][-1]["event_id"] == ban.event_id
        assert script.room_id not in mine["rooms"]["join"]

    # Rebuilding the projections from the log gives the same answers.
    before = without_age(await sync.sync(alice, None, SyncFilter()))
    position = await rebuild(db, log)
    assert position == await log.head()
    after_rebuild = without_age(await sync.sync(alice, None, SyncFilter()))
    assert after_rebuild == before


async def test_long_poll_wakes_on_commit_only_for_users_concerned(
    db: Database, log: DiskEventLog
) -> None:
    async with serving(db, log) as (rs, notifier, sync, tg):
        script = RoomScript(rs, "10")
        await script.create(ALICE)
        join = await script.join(ALICE)
        await notifier.wait_for_position(await log.head())
        token = StreamToken(notifier.position)
        alice_poll = tg.create_task(
            sync.sync(Requester(ALICE, "D"), token, SyncFilter(), timeout_ms=20_000)
        )
        eve_poll = tg.create_task(
            sync.sync(Requester(EVE, "D"), token, SyncFilter(), timeout_ms=300)
        )
        await asyncio.sleep(0.1)
        assert not alice_poll.done()
        sent, _ = await script.send("m.room.message", ALICE, {"body": "ping"})
        woken = await asyncio.wait_for(alice_poll, 5)
        events = woken["rooms"]["join"][script.room_id]["timeline"]["events"]
        assert [e["event_id"] for e in events] == [sent.event_id]
        assert join.event_id not in [e["event_id"] for e in events]
        quiet = await eve_poll
        assert quiet["rooms"]["join"] == {} and quiet["next_batch"]
