"""The account-data, receipt and presence stores on both backends: stream positions,
rewrites, rollback of a refused change, and the typing set's expiry."""

from __future__ import annotations

import pytest

from myelin.ephemeral import presence, receipts
from myelin.ephemeral.typing import Typing
from myelin.push.errors import PushRuleError
from myelin.push.rules import RuleKind
from myelin.push.ruleset import delete_rule, put_rule
from myelin.storage import Database, Txn
from myelin.userapi import accountdata
from myelin.userapi.accountdata import AccountData
from myelin.userapi.accounts import UserAPI

ALICE = "@alice:hs"


async def test_account_data_stream(db: Database) -> None:
    await UserAPI.open(db, "hs", 0)
    woken: list[str] = []
    store = AccountData(db, woken.extend)
    p1 = await store.put(ALICE, "", "a.b", {"x": 1})
    p2 = await store.put(ALICE, "!r:hs", "a.b", {"y": 2})
    p3 = await store.put(ALICE, "", "a.b", {"x": 3})
    assert p1 < p2 < p3 and woken == [ALICE] * 3

    async def read(after: int) -> list[tuple[str, str, object]]:
        async def q(t: Txn) -> list[tuple[str, str, object]]:
            upto = await accountdata.latest_position(t)
            return [
                (e.room_id, e.type, e.content)
                for e in await accountdata.changes(t, ALICE, after, upto)
            ]

        return await db.read(q)

    # The rewritten entry appears once, with its latest content, at its latest position.
    assert await read(0) == [("!r:hs", "a.b", {"y": 2}), ("", "a.b", {"x": 3})]
    assert await read(p2) == [("", "a.b", {"x": 3})]
    assert await read(p3) == []

    await store.set_tag(ALICE, "!r:hs", "u.x", {"order": 0.5})
    await store.set_tag(ALICE, "!r:hs", "u.y", {})
    await store.set_tag(ALICE, "!r:hs", "u.x", None)
    assert await store.tags(ALICE, "!r:hs") == {"u.y": {}}


async def test_push_rule_changes_are_atomic(db: Database) -> None:
    await UserAPI.open(db, "hs", 0)
    store = AccountData(db, lambda users: None)
    await store.update_push_rules(
        ALICE, lambda s: put_rule(s, RuleKind.ROOM, "!r:hs", {"actions": []})
    )
    before = await db.read(accountdata.latest_position)
    with pytest.raises(PushRuleError):
        await store.update_push_rules(ALICE, lambda s: delete_rule(s, RuleKind.ROOM, "!other:hs"))
    assert await db.read(accountdata.latest_position) == before
    stored = await store.push_rules(ALICE)
    assert [r.rule_id for r in stored.user_rules(RuleKind.ROOM)] == ["!r:hs"]
    content = await store.get(ALICE, "", "m.push_rules")
    assert content is not None
    assert [r["rule_id"] for r in content["global"]["room"]] == ["!r:hs"]


async def test_receipts_and_presence_positions(db: Database) -> None:
    await db.migrate("syncapi", "myelin.syncapi.migrations")
    await db.migrate("ephemeral", "myelin.ephemeral.migrations")

    async def put_receipts(t: Txn) -> tuple[int, int]:
        for pos, event_id in ((1, "$1"), (2, "$0")):
            await t.execute(
                "INSERT INTO sync_events (pos, room_id, event_id, sender, type, room_version,"
                " pdu) VALUES (?, '!r:hs', ?, '@x:hs', 'm.room.message', '10', '{}')",
                pos,
                event_id,
            )
        a = await receipts.put(t, "!r:hs", "m.read", ALICE, "", "$1", 10)
        b = await receipts.put(t, "!r:hs", "m.read.private", "@bob:hs", "", "$1", 11)
        assert a is not None and b is not None
        return a, b

    a, b = await db.run(put_receipts)
    assert a < b
    # "$0" is the later event (pos 2); moving the receipt to it works, back to "$1" not.
    assert (
        await db.run(lambda t: receipts.put(t, "!r:hs", "m.read", ALICE, "", "$0", 12)) is not None
    )
    assert await db.run(lambda t: receipts.put(t, "!r:hs", "m.read", ALICE, "", "$1", 13)) is None
    assert await db.read(lambda t: receipts.read_positions(t, "!r:hs", ALICE)) == {"": 2}
    seen = await db.read(lambda t: receipts.receipt_events(t, ALICE, ["!r:hs"], 0, b))
    assert seen == {}  # Alice's receipt moved on past b, and Bob's is private
    seen = await db.read(lambda t: receipts.receipt_events(t, ALICE, ["!r:hs"], 0, b + 1))
    assert seen["!r:hs"]["content"] == {"$0": {"m.read": {ALICE: {"ts": 12}}}}
    seen = await db.read(lambda t: receipts.receipt_events(t, "@bob:hs", ["!r:hs"], a, b))
    assert seen["!r:hs"]["content"] == {"$1": {"m.read.private": {"@bob:hs": {"ts": 11}}}}

    assert await db.run(lambda t: presence.put(t, ALICE, "online", "hi", 1000, False))
    first = await db.read(presence.latest_position)
    # The same state again only refreshes the last-active time: no new position.
    assert not await db.run(lambda t: presence.put(t, ALICE, "online", None, 2000, True))
    assert await db.read(presence.latest_position) == first
    found = await db.read(lambda t: presence.get(t, ALICE, 2500))
    assert found == {
        "presence": "online",
        "last_active_ago": 500,
        "currently_active": True,
        "status_msg": "hi",
    }


def test_typing_expiry_and_positions() -> None:
    now = [100.0]
    typing = Typing(clock=lambda: now[0])
    start = typing.position
    assert typing.set("!r", "@a", True, 5000)
    assert not typing.set("!r", "@a", True, 5000)  # a refresh is no change
    assert typing.users("!r") == ["@a"] and typing.changed_after("!r", start)
    mark = typing.position
    now[0] += 6
    assert typing.expire() == ["!r"]
    assert typing.users("!r") == [] and typing.changed_after("!r", mark)
    assert not typing.set("!r", "@a", False)


def test_typing_view_is_a_snapshot() -> None:
    now = [0.0]
    typing = Typing(clock=lambda: now[0])
    typing.set("!r", "@a", True, 1000)
    view = typing.view
    typing.set("!r", "@b", True, 1000)
    # The earlier view is unchanged; the new one has both, and ignores lapsed entries.
    assert view.users("!r", 0.0) == ["@a"]
    assert typing.view.users("!r", 0.0) == ["@a", "@b"]
    assert typing.view.users("!r", 2.0) == []
    assert typing.view.changed_after("!r", view.position)
    assert not typing.view.changed_after("!other", 0)
