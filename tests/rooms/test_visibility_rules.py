"""The history visibility rule as a pure function (syncapi/visibility.py): the spec's
five steps, and the span of positions a user's history can reach."""

from __future__ import annotations

import pytest

from myelin.syncapi.format import StoredEvent
from myelin.syncapi.visibility import RoomHistory, may_see


@pytest.mark.parametrize(
    ("setting", "membership", "joined_later", "expected"),
    [
        ("world_readable", None, False, True),
        ("joined", "join", False, True),
        ("shared", None, True, True),
        ("shared", "leave", False, False),
        ("invited", "invite", False, True),
        ("joined", "invite", True, False),
        ("invited", None, True, False),
    ],
)
def test_may_see(setting: str, membership: str | None, joined_later: bool, expected: bool) -> None:
    assert may_see(setting, membership, joined_later) is expected


def _event(pos: int, event_type: str, state_key: str | None, content: str) -> StoredEvent:
    pdu = f'{{"type": "{event_type}", "content": {content}}}'
    return StoredEvent(pos, "!r:x", f"$e{pos}", "@a:x", event_type, state_key, "10", pdu, None)


def test_changes_visible_by_either_side() -> None:
    # `joined` from position 5; Bob invited at 10, joined at 20, left at 30.
    history = RoomHistory(
        "@bob:x",
        settings=((5, "joined"),),
        memberships=((10, "invite"), (20, "join"), (30, "leave")),
    )
    check = history.checker()
    message = '{"body": "hi"}'
    assert check.allows(_event(3, "m.room.message", None, message))  # shared, joined later
    assert check.allows(
        _event(5, "m.room.history_visibility", "", '{"history_visibility": "joined"}')
    )
    assert not check.allows(_event(15, "m.room.message", None, message))  # only invited
    assert check.allows(_event(20, "m.room.member", "@bob:x", '{"membership": "join"}'))
    assert check.allows(_event(25, "m.room.message", None, message))
    assert check.allows(_event(30, "m.room.member", "@bob:x", '{"membership": "leave"}'))
    assert not check.allows(_event(35, "m.room.message", None, message))
    assert check.span(100) == (0, 30)


def test_nothing_visible_to_a_stranger() -> None:
    check = RoomHistory("@eve:x", settings=((2, "shared"),), memberships=()).checker()
    assert check.span(100) is None
    readable = RoomHistory("@eve:x", settings=((2, "world_readable"),), memberships=()).checker()
    assert readable.span(100) == (0, 100)
