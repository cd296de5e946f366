"""Outliers and backfilled events: stored with the right status, without moving the room."""

from __future__ import annotations

import pytest

from myelin.eventlog.disk import DiskEventLog
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import InputKind, Origin, Status, UnknownEventError
from myelin.storage import Database

from .rooms import RoomScript, user

ALICE, BOB = user("alice"), user("bob")


async def test_outlier_is_stored_without_state(db: Database, log: DiskEventLog) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    await room.create(ALICE)
    join = await room.join(ALICE)
    state = await rs.current_state(room.room_id)  # type: ignore[arg-type]
    # An event whose prev event we have never seen, known only with its auth events.
    outlier = room.build(
        "m.room.message",
        ALICE,
        {"body": "from elsewhere"},
        state_key=None,
        prevs=["$unknown:elsewhere.example"],
        auth_state=state,
        depth=9,
    )
    result = await rs.submit(outlier, InputKind.OUTLIER, Origin.FEDERATED)
    assert result.status is Status.OUTLIER
    assert (await rs.event(outlier.event_id)) == outlier
    with pytest.raises(UnknownEventError):
        await rs.state_before(outlier.event_id)
    latest = await rs.latest_events(room.room_id)  # type: ignore[arg-type]
    assert latest.prev_event_ids == (join.event_id,)

    # An outlier its auth events don't authorise is rejected.
    forged = room.build(
        "m.room.power_levels",
        BOB,
        {"users": {BOB: 100}},
        state_key="",
        prevs=["$unknown:elsewhere.example"],
        auth_state=state,
        depth=9,
    )
    assert (await rs.submit(forged, InputKind.OUTLIER)).status is Status.REJECTED


async def test_backfilled_event_gets_state_but_moves_nothing(
    db: Database, log: DiskEventLog
) -> None:
    rs = await Roomserver.open(db, log)
    room = RoomScript(rs, "10")
    create = await room.create(ALICE)
    join = await room.join(ALICE)
    msg, _ = await room.send("m.room.message", ALICE, {"body": "now"})
    old = await room.make(
        "m.room.topic", ALICE, {"topic": "old"}, state_key="", prevs=[join.event_id]
    )
    result = await rs.submit(old, InputKind.BACKFILL, Origin.FEDERATED)
    assert result.status is Status.ACCEPTED
    assert await rs.state_before(old.event_id) == {
        ("m.room.create", ""): create.event_id,
        ("m.room.member", ALICE): join.event_id,
    }
    assert (await rs.state_after(old.event_id))[("m.room.topic", "")] == old.event_id
    assert ("m.room.topic", "") not in await rs.current_state(room.room_id)  # type: ignore[arg-type]
    latest = await rs.latest_events(room.room_id)  # type: ignore[arg-type]
    assert latest.prev_event_ids == (msg.event_id,)
