"""A membership change in a 10,000-member room adds a constant number of state rows."""

from __future__ import annotations

import pytest

from myelin.core.events import Event, StateKey
from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputEvent, InputResult, Status
from myelin.storage import Database, Txn

from .rooms import RoomScript, user

MEMBERS = 10_000
BATCH = 500


async def state_storage(db: Database) -> tuple[int, int]:
    """(rows, bytes) of state blocks and snapshots."""

    async def q(t: Txn) -> tuple[int, int]:
        blocks = await t.fetchone("SELECT count(*), sum(length(entries)) FROM rs_state_blocks")
        snaps = await t.fetchone("SELECT count(*), sum(length(blocks)) FROM rs_state_snapshots")
        assert blocks is not None and snaps is not None
        return int(blocks[0] + snaps[0]), int((blocks[1] or 0) + (snaps[1] or 0))

    return await db.read(q)


@pytest.mark.slow
async def test_membership_change_in_a_big_room_adds_constant_rows(
    db: Database, log: DiskEventLog
) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    alice = user("alice")
    create = await room.create(alice)
    await room.join(alice)
    await room.send(
        "m.room.power_levels", alice, {"users": {alice: 100}, "state_default": 50}, state_key=""
    )
    await room.send("m.room.join_rules", alice, {"join_rule": "public"}, state_key="")
    state = await rs.current_state(room.room_id)  # type: ignore[arg-type]
    latest = await rs.latest_events(room.room_id)  # type: ignore[arg-type]
    prev, depth = latest.prev_event_ids[0], latest.depth

    joins: dict[str, str] = {}

    def join(who: str) -> Event:
        nonlocal prev, depth
        event = room.build(
            "m.room.member",
            who,
            {"membership": "join"},
            state_key=who,
            prevs=[prev],
            auth_state=state,
            depth=depth,
        )
        prev, depth = event.event_id, depth + 1
        joins[who] = event.event_id
        return event

    async def submit_all(events: list[Event]) -> None:
        results = await rs.input([InputEvent(e) for e in events])
        assert all(isinstance(r, InputResult) and r.status is Status.ACCEPTED for r in results)

    batches_before = rs.batches
    pending: list[Event] = []
    for n in range(MEMBERS):
        pending.append(join(user(f"m{n:05d}")))
        if len(pending) == BATCH:
            await submit_all(pending)
            pending = []
    await submit_all(pending)
    # Group commit: a batch of input is one log append and one transaction.
    assert rs.batches - batches_before == -(-MEMBERS // BATCH)

    rows_before, bytes_before = await state_storage(db)
    leave = room.build(
        "m.room.member",
        user("m00042"),
        {"membership": "leave"},
        state_key=user("m00042"),
        prevs=[prev],
        auth_state={**state, ("m.room.member", user("m00042")): joins[user("m00042")]},
        depth=depth,
    )
    assert (await rs.submit(leave)).status is Status.ACCEPTED
    rows_after, bytes_after = await state_storage(db)
    added_rows, added_bytes = rows_after - rows_before, bytes_after - bytes_before
    print(
        f"\none membership change in a {MEMBERS}-member room: {added_rows} state rows, "
        f"{added_bytes} bytes; total state {bytes_after / (MEMBERS + 5):.0f} bytes per event"
    )
    assert added_rows == 2  # one new block, one new snapshot
    assert added_bytes < 8_000  # ~MEMBERS/128 entries of 24 bytes plus 128 block refs

    current = await rs.current_state(room.room_id)  # type: ignore[arg-type]
    members: dict[StateKey, str] = {k: v for k, v in current.items() if k[0] == "m.room.member"}
    assert len(members) == MEMBERS + 1
    assert current[("m.room.member", user("m00042"))] == leave.event_id
    assert await rs.membership(room.room_id, user("m00042")) == "leave"  # type: ignore[arg-type]
    before_leave = await rs.state_before(leave.event_id)
    assert before_leave[("m.room.member", user("m00042"))] != leave.event_id
    assert before_leave[("m.room.create", "")] == create.event_id
    assert len(await rs.rooms_of_user(user("m09999"))) == 1
