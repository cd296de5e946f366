"""Roomserver throughput: accepted events/s with batching, and rebuild events/s.

    .venv/bin/python bench/roomserver.py [--backend sqlite|postgres|both] [--events N]
        [--batch B ...] [--members M]

Events are built and signed before the clock starts; each run submits them to a fresh
roomserver (new database, new log on local disk) in batches of B through `input`, the
same path as concurrent senders take. The room first gets M members (joins), then N
messages and member/topic state changes. Then S parallel senders in R rooms each send
messages one after another as the client API would (latest events, build, sign, submit),
so group commit comes from concurrency alone. PostgreSQL runs use a throwaway database on
127.0.0.1:5432 (user postgres), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from myelin.core.auth import auth_types_for_event
from myelin.core.builder import build_event
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import room_version
from myelin.core.signing import SigningKey
from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.rebuild import rebuild
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputEvent, InputResult, Status
from myelin.storage import Database
from myelin.storage.postgres import PostgresDatabase
from myelin.storage.sqlite import SqliteDatabase

SERVER = "bench.example"
PG = "postgresql://postgres@127.0.0.1:5432"
VERSION = room_version("10")
KEY = SigningKey.from_seed(b"\x02" * 32, "b1")


def build_room(members: int, events: int, room_id: str = f"!bench:{SERVER}") -> list[Event]:
    """A linear room: create, creator join, power levels, public join rule, `members`
    joins, then `events` events (mostly messages, every 10th a topic change)."""
    clock = itertools.count(1_700_000_000_000)
    creator = f"@creator:{SERVER}"
    state: dict[StateKey, str] = {}
    out: list[Event] = []

    def add(event_type: str, sender: str, content: dict[str, Any], key: str | None) -> None:
        wanted = auth_types_for_event(
            VERSION, event_type=event_type, sender=sender, state_key=key, content=content
        )
        event = build_event(
            VERSION,
            room_id=room_id,
            sender=sender,
            type=event_type,
            content=content,
            state_key=key,
            prev_events=[out[-1].event_id] if out else [],
            auth_events=[state[k] for k in wanted if k in state],
            depth=len(out) + 1,
            origin_server_ts=next(clock),
            server_name=SERVER,
            signing_key=KEY,
        )
        out.append(event)
        if key is not None:
            state[(event_type, key)] = event.event_id

    add("m.room.create", creator, {"creator": creator, "room_version": "10"}, "")
    add("m.room.member", creator, {"membership": "join"}, creator)
    add("m.room.power_levels", creator, {"users": {creator: 100}}, "")
    add("m.room.join_rules", creator, {"join_rule": "public"}, "")
    for n in range(members):
        user = f"@u{n}:{SERVER}"
        add("m.room.member", user, {"membership": "join"}, user)
    for n in range(events):
        if n % 10 == 9:
            add("m.room.topic", creator, {"topic": f"topic {n}"}, "")
        else:
            add("m.room.message", creator, {"msgtype": "m.text", "body": f"message {n}"}, None)
    return out


async def open_db(backend: str, directory: Path) -> tuple[Database, str | None]:
    if backend == "sqlite":
        return await SqliteDatabase.open(directory / "bench.db"), None
    name = f"myelin_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG + "/postgres")
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return await PostgresDatabase.open(f"{PG}/{name}"), name


async def drop_pg(name: str) -> None:
    conn = await asyncpg.connect(PG + "/postgres")
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def run(backend: str, setup: list[Event], timed: list[Event], batch: int) -> None:
    with tempfile.TemporaryDirectory(prefix="myelin-bench-") as tmp:
        directory = Path(tmp)
        db, pg_name = await open_db(backend, directory)
        try:
            async with DiskEventLog(directory / "log") as log:
                rs = await Roomserver.open(db, log)
                for start in range(0, len(setup), 500):
                    await rs.input([InputEvent(e) for e in setup[start : start + 500]])
                batches = rs.batches
                fsyncs = log.stats.fsyncs
                t0 = time.perf_counter()
                for start in range(0, len(timed), batch):
                    results = await rs.input([InputEvent(e) for e in timed[start : start + batch]])
                    for r in results:
                        if not isinstance(r, InputResult) or r.status is not Status.ACCEPTED:
                            raise SystemExit(f"bench event not accepted: {r}")
                elapsed = time.perf_counter() - t0
                print(
                    f"{backend:8} batch {batch:4}: {len(timed) / elapsed:8.0f} accepted events/s "
                    f"({len(timed)} events, {rs.batches - batches} commits, "
                    f"{log.stats.fsyncs - fsyncs} log fsyncs)"
                )
                total = len(setup) + len(timed)
                t0 = time.perf_counter()
                count = await rebuild(db, log)
                elapsed = time.perf_counter() - t0
                assert count == total
                print(f"{backend:8} rebuild   : {total / elapsed:8.0f} events/s ({total} events)")
        finally:
            await db.close()
            if pg_name:
                await drop_pg(pg_name)


async def parallel(backend: str, senders: int, rooms: int, messages: int) -> None:
    """`senders` tasks, spread over `rooms` rooms, each sending messages one after another
    the way the client API does: latest events, build, sign, submit."""
    with tempfile.TemporaryDirectory(prefix="myelin-bench-") as tmp:
        directory = Path(tmp)
        db, pg_name = await open_db(backend, directory)
        try:
            async with DiskEventLog(directory / "log") as log:
                rs = await Roomserver.open(db, log)
                room_ids = []
                for n in range(rooms):
                    setup = build_room(0, 0, f"!bench{n}:{SERVER}")
                    await rs.input([InputEvent(e) for e in setup])
                    room_ids.append(setup[0].room_id)
                clock = itertools.count(1_800_000_000_000)
                auth = {r: await rs.current_state(r) for r in room_ids}
                sender = f"@creator:{SERVER}"
                keys = auth_types_for_event(
                    VERSION,
                    event_type="m.room.message",
                    sender=sender,
                    state_key=None,
                    content={},
                )

                async def send_loop(task: int) -> None:
                    room_id = room_ids[task % rooms]
                    for n in range(messages):
                        latest = await rs.latest_events(room_id)
                        event = build_event(
                            VERSION,
                            room_id=room_id,
                            sender=sender,
                            type="m.room.message",
                            content={"msgtype": "m.text", "body": f"{task}/{n}"},
                            prev_events=list(latest.prev_event_ids),
                            auth_events=[auth[room_id][k] for k in keys if k in auth[room_id]],
                            depth=latest.depth,
                            origin_server_ts=next(clock),
                            server_name=SERVER,
                            signing_key=KEY,
                        )
                        result = await rs.submit(event)
                        if result.status is not Status.ACCEPTED:
                            raise SystemExit(f"not accepted: {result}")

                commits, fsyncs = rs.batches, log.stats.fsyncs
                t0 = time.perf_counter()
                async with asyncio.TaskGroup() as tg:
                    for task in range(senders):
                        tg.create_task(send_loop(task))
                elapsed = time.perf_counter() - t0
                total = senders * messages
                print(
                    f"{backend:8} {senders} senders/{rooms} rooms: {total / elapsed:6.0f} msg/s "
                    f"end to end ({total} messages, {rs.batches - commits} commits, "
                    f"{log.stats.fsyncs - fsyncs} log fsyncs)"
                )
        finally:
            await db.close()
            if pg_name:
                await drop_pg(pg_name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--senders", type=int, default=32, help="parallel senders (0: skip)")
    parser.add_argument("--rooms", type=int, default=8, help="rooms of the parallel senders")
    parser.add_argument("--messages", type=int, default=50, help="messages per sender")
    args = parser.parse_args()
    t0 = time.perf_counter()
    events = build_room(args.members, args.events)
    print(f"built {len(events)} signed events in {time.perf_counter() - t0:.1f}s", flush=True)
    setup, timed = events[: 4 + args.members], events[4 + args.members :]
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        for batch in args.batch:
            await run(backend, setup, timed, batch)
            sys.stdout.flush()
        if args.senders:
            await parallel(backend, args.senders, args.rooms, args.messages)
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
