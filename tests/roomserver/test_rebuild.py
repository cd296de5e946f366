"""Rebuilding the projections from the log (and catching up on start) changes no answer."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.rebuild import rebuild
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import RoomserverError, Status
from myelin.storage import Database, testing

from .rooms import RoomScript, user

USERS = [user(n) for n in ("alice", "bob", "carol", "dan", "eve", "fay")]


async def random_workload(rs: Roomserver, seed: int, steps: int) -> tuple[list[str], list[str]]:
    """Rooms with joins, leaves, messages, power changes, unauthorised events and forks;
    returns the room IDs and every event ID submitted."""
    rng = random.Random(seed)
    rooms: list[RoomScript] = []
    event_ids: list[str] = []
    for version in ("10", "12"):
        room = RoomScript(rs, version)
        event_ids.append((await room.create(USERS[0])).event_id)
        event_ids.append((await room.join(USERS[0])).event_id)
        pl = {"users": {USERS[0]: 100}, "state_default": 50, "events_default": 0}
        event_ids.append(
            (await room.send("m.room.power_levels", USERS[0], pl, state_key=""))[0].event_id
        )
        event_ids.append(
            (await room.send("m.room.join_rules", USERS[0], {"join_rule": "public"}, state_key=""))[
                0
            ].event_id
        )
        rooms.append(room)
    for step in range(steps):
        room = rng.choice(rooms)
        who = rng.choice(USERS)
        op = rng.random()
        prevs = None
        if op < 0.1 and step > 5:
            # A fork: an event after an older event of the room.
            latest = await rs.latest_events(room.room_id)  # type: ignore[arg-type]
            older = await rs.state_before(latest.prev_event_ids[0])
            candidates = [e for (t, _), e in older.items() if t == "m.room.member"]
            prevs = [rng.choice(candidates)] if candidates else None
        try:
            if op < 0.3:
                event, _ = await room.send(
                    "m.room.member", who, {"membership": "join"}, state_key=who, prevs=prevs
                )
            elif op < 0.4:
                event, _ = await room.send(
                    "m.room.member", who, {"membership": "leave"}, state_key=who, prevs=prevs
                )
            elif op < 0.5:
                event, _ = await room.send(
                    "m.room.topic", who, {"topic": f"t{step}"}, state_key="", prevs=prevs
                )
            elif op < 0.55:
                users = {USERS[0]: 100, who: rng.choice([0, 50])}
                event, _ = await room.send(
                    "m.room.power_levels",
                    USERS[0],
                    {"users": users, "state_default": 50},
                    state_key="",
                    prevs=prevs,
                )
            else:
                event, _ = await room.send(
                    "m.room.message", who, {"msgtype": "m.text", "body": str(step)}, prevs=prevs
                )
        except RoomserverError:
            continue
        event_ids.append(event.event_id)

    # Concurrent senders: one batch with several events per room built on the same
    # extremities (forks inside a batch).
    batch = []
    for room in rooms:
        for n in range(3):
            batch.append(
                await room.make("m.room.message", USERS[0], {"msgtype": "m.text", "body": n})
            )
    async with asyncio.TaskGroup() as tg:
        for event in batch:
            tg.create_task(rs.submit(event))
    event_ids += [e.event_id for e in batch]
    return [r.room_id for r in rooms if r.room_id], event_ids


async def answers(rs: Roomserver, room_ids: list[str], event_ids: list[str]) -> dict[str, Any]:
    """Every query's answer, as plain data."""

    async def attempt(coro: Any) -> Any:
        try:
            return await coro
        except RoomserverError as exc:
            return type(exc).__name__

    out: dict[str, Any] = {}
    for room_id in room_ids:
        out[f"current {room_id}"] = await rs.current_state(room_id)
        latest = await rs.latest_events(room_id)
        out[f"latest {room_id}"] = (sorted(latest.prev_event_ids), latest.depth)
        out[f"version {room_id}"] = await rs.room_version(room_id)
        for u in USERS:
            out[f"membership {room_id} {u}"] = await rs.membership(room_id, u)
    for u in USERS:
        for m in ("join", "leave", "ban", "invite"):
            out[f"rooms {u} {m}"] = await rs.rooms_of_user(u, m)
    for event_id in event_ids:
        event = await rs.event(event_id)
        out[f"event {event_id}"] = None if event is None else dict(event.pdu)
        out[f"status {event_id}"] = await rs.event_status(event_id)
        out[f"before {event_id}"] = await attempt(rs.state_before(event_id))
        out[f"after {event_id}"] = await attempt(rs.state_after(event_id))
        out[f"chain {event_id}"] = await attempt(rs.auth_chain([event_id]))
        if isinstance(out[f"chain {event_id}"], list):
            out[f"chain {event_id}"] = [e.event_id for e in out[f"chain {event_id}"]]
    return out


async def test_rebuild_answers_identically(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    room_ids, event_ids = await random_workload(rs, seed=7, steps=80)
    before = await answers(rs, room_ids, event_ids)
    statuses = {s[0] for k, s in before.items() if k.startswith("status") and s}
    assert {Status.ACCEPTED, Status.REJECTED} <= statuses  # the workload covers both
    assert any(len(v[0]) > 1 for k, v in before.items() if k.startswith("latest")) or any(
        len(v) > 1 for k, v in before.items() if k.startswith("before")
    )

    progress: list[tuple[int, int]] = []
    count = await rebuild(db, log, lambda done, head: progress.append((done, head)))
    assert count == await log.head() and progress[-1] == (count, count)
    rebuilt = await Roomserver.open(db, log)
    after = await answers(rebuilt, room_ids, event_ids)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], key


async def test_a_new_database_catches_up_from_the_log(
    db: Database, log: DiskEventLog, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """What a crash between the log append and the projection write leaves behind is
    repaired the same way: projections behind the log are caught up on start."""
    rs = await Roomserver.open(db, log)
    room_ids, event_ids = await random_workload(rs, seed=3, steps=40)
    expected = await answers(rs, room_ids, event_ids)
    backend = db.backend.value
    (tmp_path / "fresh").mkdir()
    async with testing.open_test_database(backend, tmp_path / "fresh", request) as fresh:
        caught_up = await Roomserver.open(fresh, log)
        assert await answers(caught_up, room_ids, event_ids) == expected


async def test_numeric_ids_start_at_one_and_are_never_zero(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    await random_workload(rs, seed=5, steps=10)
    for table, column in (
        ("rs_rooms", "room_nid"),
        ("rs_events", "event_nid"),
        ("rs_event_types", "type_nid"),
        ("rs_state_keys", "state_key_nid"),
        ("rs_state_blocks", "block_nid"),
        ("rs_state_snapshots", "snapshot_nid"),
    ):
        sql = f"SELECT min({column}), count(*), count(DISTINCT {column}) FROM {table}"
        low, count, distinct = await db.read(lambda t, sql=sql: t.fetchone(sql))  # type: ignore[misc]
        assert low == 1 and count == distinct > 0, table
