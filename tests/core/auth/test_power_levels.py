"""Reading power levels (stringy, floaty, integer-only, infinite creators) and the rule on
changing them."""

from __future__ import annotations

import math
from typing import Any

import pytest

from myelin.core.auth import (
    TOMBSTONE_LEVEL_V12,
    can_redact,
    check_auth,
    get_named_level,
    get_notification_level,
    get_power_level,
    get_required_level,
    initial_power_levels_content,
    parse_level,
)
from myelin.core.events import Event
from myelin.core.roomversions import room_version
from tests.core.auth.roomstate import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    DAVE,
    Room,
    at,
    standard_room,
    versions,
)

STRINGY = versions(lambda v: not v.integer_only_power_levels)
INTEGER_ONLY = versions(lambda v: v.integer_only_power_levels)
FLOATY = versions(lambda v: not v.strict_canonical_json)


def pl_rule(version: str, step: str) -> str:
    """Numbers under the power-levels rule, per version."""
    top = at(version, {1: "10", 6: "9", 12: "10"})
    order = ["users", "no_previous", "levels", "maps_old", "maps_new", "users_old", "users_new"]
    if int(version) >= 10:
        order = ["fields", "maps", *order]
    if int(version) >= 12:
        order.insert(order.index("no_previous"), "creators")
    return f"{top}.{order.index(step) + 1}"


# reading levels


@pytest.mark.parametrize("version", STRINGY)
@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("100", 100),
        ("000100", 100),
        ("+100", 100),
        ("-100", -100),
        (" 100 ", 100),
        (" 00100 ", 100),
        (" +100 ", 100),
        (" -100 ", -100),
        (7, 7),
    ],
)
def test_stringy_levels_until_v9(version: str, value: Any, level: int) -> None:
    assert parse_level(value, room_version(version)) == level


@pytest.mark.parametrize("version", STRINGY)
@pytest.mark.parametrize("value", ["1.5", "1e3", "", "abc", "--1", "1_000", "٣", True, None, []])
def test_strings_that_are_not_integers(version: str, value: Any) -> None:
    assert parse_level(value, room_version(version)) is None


def test_absurdly_long_stringy_level_is_not_a_level() -> None:
    assert parse_level("1" * 10_000, room_version("9")) is None
    assert parse_level("0" * 100 + "7", room_version("9")) == 7


@pytest.mark.parametrize("version", FLOATY)
def test_floats_truncate_until_v5(version: str) -> None:
    v = room_version(version)
    assert parse_level(51146.98, v) == 51146
    assert parse_level(5.114698e4, v) == 51146
    assert parse_level(-0.5, v) == 0
    assert parse_level(math.inf, v) is None
    assert parse_level(math.nan, v) is None


@pytest.mark.parametrize("version", versions(lambda v: v.strict_canonical_json))
def test_no_floats_from_v6(version: str) -> None:
    assert parse_level(50.0, room_version(version)) is None


@pytest.mark.parametrize("version", INTEGER_ONLY)
@pytest.mark.parametrize("value", ["100", 100.0, True])
def test_only_integers_from_v10(version: str, value: Any) -> None:
    assert parse_level(value, room_version(version)) is None
    assert parse_level(100, room_version(version)) == 100


@pytest.mark.parametrize("version", STRINGY)
def test_stringy_levels_apply_to_users_events_and_named(version: str) -> None:
    room = standard_room(version)
    room.power_levels(
        {
            "users": {ALICE: "100", BOB: " 30 "},
            "users_default": "5",
            "events": {"m.x": "31"},
            "state_default": "40",
            "events_default": "3",
            "kick": "60",
            "notifications": {"room": "7"},
        }
    )
    assert get_power_level(BOB, room.state) == 30
    assert get_power_level(CAROL, room.state) == 5
    assert get_required_level("m.x", False, room.state) == 31
    assert get_required_level("m.y", True, room.state) == 40
    assert get_required_level("m.y", False, room.state) == 3
    assert get_named_level("kick", room.state) == 60
    assert get_notification_level("room", room.state) == 7


def test_defaults_without_power_levels() -> None:
    room = Room("10")
    assert get_power_level(ALICE, room.state) == 100
    assert get_power_level(BOB, room.state) == 0
    assert get_required_level("m.x", True, room.state) == 50
    assert get_required_level("m.x", False, room.state) == 0
    assert [get_named_level(n, room.state) for n in ("invite", "kick", "ban", "redact")] == [
        0,
        50,
        50,
        50,
    ]
    assert get_notification_level("room", room.state) == 50
    assert get_power_level(ALICE, {}) == 0
    with pytest.raises(ValueError, match="not a power levels property"):
        get_named_level("bogus", room.state)


def test_defaults_with_empty_power_levels() -> None:
    room = standard_room("9")
    room.power_levels({})
    assert get_power_level(ALICE, room.state) == 0
    assert get_required_level("m.x", True, room.state) == 50
    assert get_named_level("ban", room.state) == 50


def test_v12_creators_are_infinite_with_or_without_power_levels() -> None:
    room = Room("12", create_content={"additional_creators": [BOB]})
    assert get_power_level(ALICE, room.state) == math.inf
    assert get_power_level(BOB, room.state) == math.inf
    assert get_power_level(CAROL, room.state) == 0
    room.power_levels({"users": {CAROL: 100}, "users_default": 10})
    assert get_power_level(ALICE, room.state) == math.inf
    assert get_power_level(CAROL, room.state) == 100
    assert get_power_level(DAVE, room.state) == 10


def test_unreadable_values_in_old_versions_fall_back_to_defaults() -> None:
    room = standard_room("5")
    room.power_levels(
        {"users": {BOB: "high"}, "users_default": "x", "kick": [], "events": {"m.x": None}}
    )
    assert get_power_level(BOB, room.state) == 0
    assert get_named_level("kick", room.state) == 50
    assert get_required_level("m.x", False, room.state) == 0


# the rule on m.room.power_levels events


def pl_event(room: Room, content: dict[str, Any], sender: str = ALICE) -> Event:
    return room.event("m.room.power_levels", sender, content, "")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_first_power_levels_are_allowed(version: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    users = {} if int(version) >= 12 else {ALICE: 100}
    room.allows(pl_event(room, {"users": {**users, BOB: 1000}, "ban": 1000}))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("users", ["x", [], {"bob": 1}, {"@bob": 1}, {BOB: "x"}, {BOB: None}])
def test_users_must_map_user_ids_to_levels(version: str, users: Any) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    room.denies(pl_event(room, {"users": users}), pl_rule(version, "users"))


@pytest.mark.parametrize("version", STRINGY)
def test_string_levels_in_users_allowed_until_v9(version: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    room.allows(pl_event(room, {"users": {ALICE: "100", BOB: " 5"}}))


@pytest.mark.parametrize("version", INTEGER_ONLY)
@pytest.mark.parametrize(
    ("content", "step"),
    [
        ({"ban": "50"}, "fields"),
        ({"users_default": True}, "fields"),
        ({"invite": None}, "fields"),
        ({"events": {"m.x": "5"}}, "maps"),
        ({"events": []}, "maps"),
        ({"notifications": {"room": 5.0}}, "maps"),
        ({"users": {BOB: "5"}}, "users"),
    ],
)
def test_integer_only_from_v10(version: str, content: dict[str, Any], step: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    room.denies(pl_event(room, content), pl_rule(version, step))


@pytest.mark.parametrize("version", STRINGY)
def test_other_fields_unchecked_until_v9_when_first(version: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    room.allows(pl_event(room, {"ban": "50", "events": {"m.x": "5"}}))


@pytest.mark.parametrize("version", ["12"])
def test_v12_creators_may_not_be_listed(version: str) -> None:
    room = Room(version, create_content={"additional_creators": [BOB]})
    room.member(ALICE, "join")
    room.denies(pl_event(room, {"users": {ALICE: 100}}), pl_rule(version, "creators"))
    room.denies(pl_event(room, {"users": {BOB: 100}}), pl_rule(version, "creators"))
    room.allows(pl_event(room, {"users": {CAROL: 100}}))


def test_creators_may_be_listed_before_v12() -> None:
    room = Room("11")
    room.member(ALICE, "join")
    room.allows(pl_event(room, {"users": {ALICE: 100}}))


def moderated(version: str) -> Room:
    """Alice (creator), Bob at 50 (a moderator), Carol at 20; named levels at 40."""
    room = standard_room(version)
    room.member(BOB, "join")
    room.creator_levels(
        {BOB: 50, CAROL: 20},
        kick=40,
        ban=40,
        redact=40,
        invite=40,
        state_default=40,
        events_default=0,
        users_default=0,
        events={"m.room.power_levels": 50, "m.low": 10, "m.high": 60},
        notifications={"room": 40, "high": 60},
    )
    return room


def changed(room: Room, **changes: Any) -> dict[str, Any]:
    content = {
        k: (dict(v) if isinstance(v, dict) else v)
        for k, v in room.state[("m.room.power_levels", "")].content.items()
    }
    for key, value in changes.items():
        if value is None:
            content.pop(key, None)
        elif isinstance(value, dict):
            merged = {**content.get(key, {}), **value}
            content[key] = {k: v for k, v in merged.items() if v is not None}
        else:
            content[key] = value
    return content


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_sender_needs_the_level_of_power_levels_events(version: str) -> None:
    room = moderated(version)
    room.member(CAROL, "join")
    room.denies(pl_event(room, changed(room), CAROL), at(version, {1: "8", 6: "7", 12: "8"}))
    room.allows(pl_event(room, changed(room), BOB))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize(
    "key", ["users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"]
)
def test_named_levels_up_to_own_level(version: str, key: str) -> None:
    room = moderated(version)
    number = pl_rule(version, "levels")
    room.allows(pl_event(room, changed(room, **{key: 50}), BOB))
    room.allows(pl_event(room, changed(room, **{key: None}), BOB))
    room.denies(pl_event(room, changed(room, **{key: 51}), BOB), number)
    room.power_levels(changed(room, **{key: 51}))
    room.denies(pl_event(room, changed(room, **{key: 10}), BOB), number)
    room.denies(pl_event(room, changed(room, **{key: None}), BOB), number)
    room.allows(pl_event(room, changed(room), BOB))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_events_map_entries_up_to_own_level(version: str) -> None:
    room = moderated(version)
    room.allows(pl_event(room, changed(room, events={"m.low": 50, "m.new": 50}), BOB))
    room.allows(pl_event(room, changed(room, events={"m.low": None}), BOB))
    room.denies(
        pl_event(room, changed(room, events={"m.new": 51}), BOB), pl_rule(version, "maps_new")
    )
    room.denies(
        pl_event(room, changed(room, events={"m.high": 10}), BOB), pl_rule(version, "maps_old")
    )
    room.denies(
        pl_event(room, changed(room, events={"m.high": None}), BOB), pl_rule(version, "maps_old")
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_notifications_limited_from_v6(version: str) -> None:
    room = moderated(version)
    raise_it = pl_event(room, changed(room, notifications={"room": 90}), BOB)
    lower_high = pl_event(room, changed(room, notifications={"high": 0}), BOB)
    if room.version.limit_notifications_power_levels:
        room.denies(raise_it, pl_rule(version, "maps_new"))
        room.denies(lower_high, pl_rule(version, "maps_old"))
    else:
        room.allows(raise_it)
        room.allows(lower_high)
    room.allows(pl_event(room, changed(room, notifications={"room": 50}), BOB))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_users_changes(version: str) -> None:
    room = moderated(version)
    room.allows(pl_event(room, changed(room, users={CAROL: 49}), BOB))
    room.allows(pl_event(room, changed(room, users={CAROL: None}), BOB))
    room.allows(pl_event(room, changed(room, users={DAVE: 50}), BOB))
    room.denies(pl_event(room, changed(room, users={DAVE: 51}), BOB), pl_rule(version, "users_new"))
    room.power_levels(changed(room, users={DAVE: 50}))
    room.denies(pl_event(room, changed(room, users={DAVE: 0}), BOB), pl_rule(version, "users_old"))
    room.denies(
        pl_event(room, changed(room, users={DAVE: None}), BOB), pl_rule(version, "users_old")
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_users_may_demote_themselves_but_not_promote(version: str) -> None:
    room = moderated(version)
    room.allows(pl_event(room, changed(room, users={BOB: 10}), BOB))
    room.allows(pl_event(room, changed(room, users={BOB: None}), BOB))
    room.denies(pl_event(room, changed(room, users={BOB: 51}), BOB), pl_rule(version, "users_new"))


@pytest.mark.parametrize("version", STRINGY)
def test_string_to_integer_rewrite_counts_as_a_change(version: str) -> None:
    room = moderated(version)
    room.power_levels(changed(room, kick="60"))
    room.denies(pl_event(room, changed(room, kick=60), BOB), pl_rule(version, "levels"))
    room.allows(pl_event(room, changed(room, kick="60"), BOB))


@pytest.mark.parametrize("version", STRINGY)
def test_unreadable_new_values_are_rejected_when_changed(version: str) -> None:
    room = moderated(version)
    room.denies(pl_event(room, changed(room, kick="high"), BOB), pl_rule(version, "levels"))
    room.denies(
        pl_event(room, changed(room, events={"m.x": "high"}), BOB), pl_rule(version, "maps_new")
    )


def test_v12_creator_may_set_anything_except_creators() -> None:
    room = moderated("12")
    room.allows(pl_event(room, changed(room, users={BOB: 10**9}, ban=10**9)))
    room.denies(pl_event(room, changed(room, users={ALICE: 1})), pl_rule("12", "creators"))


def test_v12_creator_cannot_be_kicked_or_banned_by_admins() -> None:
    room = moderated("12")
    room.power_levels(changed(room, users={BOB: 10**9}))
    room.denies(room.member_event(ALICE, "ban", sender=BOB))
    room.denies(room.member_event(ALICE, "leave", sender=BOB))
    room.allows(room.member_event(BOB, "ban", sender=ALICE))


def test_v12_additional_creators_cannot_kick_each_other() -> None:
    room = Room("12", create_content={"additional_creators": [BOB]})
    room.member(ALICE, "join")
    room.member(BOB, "join")
    room.denies(room.member_event(BOB, "leave", sender=ALICE))
    room.allows(room.member_event(BOB, "leave"))


def test_v11_creator_without_power_levels_can_be_kicked_by_nobody_else() -> None:
    room = Room("11")
    room.member(ALICE, "join")
    room.member(BOB, "join")
    room.denies(room.member_event(ALICE, "leave", sender=BOB))
    room.allows(room.member_event(BOB, "leave", sender=ALICE))


# helpers for others


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_can_redact(version: str) -> None:
    room = moderated(version)
    assert can_redact(BOB, CAROL, room.state)
    assert not can_redact(CAROL, BOB, room.state)
    assert can_redact(ALICE, BOB, room.state)
    assert can_redact(DAVE, ALICE, room.state)  # both on a.example
    assert not can_redact("@x:", "@y:", room.state)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_initial_power_levels_pass_the_rules(version: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    content = initial_power_levels_content(room.version, ALICE)
    room.allows(pl_event(room, content))
    tombstone = content["events"]["m.room.tombstone"]
    if room.version.privileged_creators:
        assert ALICE not in content["users"]
        assert tombstone == TOMBSTONE_LEVEL_V12 > content["state_default"]
    else:
        assert content["users"] == {ALICE: 100}
    room.power_levels(content)
    check_auth(room.event("m.room.tombstone", ALICE, {"body": "x"}, ""), room.state)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_float_levels_in_users_only_until_v5(version: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    event = pl_event(room, {"users": {BOB: 50.57}})
    if room.version.strict_canonical_json:
        room.denies(event, pl_rule(version, "users"))
    else:
        room.allows(event)
        room.power_levels({"users": {ALICE: 100, BOB: 50.57}})
        assert get_power_level(BOB, room.state) == 50
