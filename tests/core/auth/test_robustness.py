"""Bad input: malformed events and state give AuthError or pass, never another exception;
and user ID validation as the rules use it."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myelin.core.auth import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_event_list,
    is_valid_user_id,
)
from myelin.core.events import Event
from tests.core.auth.roomstate import ALICE, ALL_VERSIONS, BOB, Room, standard_room

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
interesting_keys = st.sampled_from(
    [
        "membership",
        "users",
        "events",
        "notifications",
        "ban",
        "kick",
        "users_default",
        "third_party_invite",
        "join_authorised_via_users_server",
        "join_rule",
        "creator",
        "room_version",
        "additional_creators",
        "m.federate",
        "redacts",
        "signed",
    ]
)
contents = st.dictionaries(interesting_keys | st.text(max_size=4), json_values, max_size=5)
event_types = st.sampled_from(
    [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.third_party_invite",
        "m.room.redaction",
        "m.room.aliases",
        "m.room.message",
    ]
)
state_keys = st.none() | st.sampled_from(["", ALICE, BOB, "tok", "a.example"]) | st.text(max_size=4)


def _check(version: str, event_type: str, state_key: Any, content: Any, state_content: Any) -> None:
    room = standard_room(version, "public")
    room.add("m.room.power_levels", ALICE, state_content, "")
    room.add("m.room.third_party_invite", ALICE, state_content, "tok")
    event = room.event(event_type, BOB, content, state_key)
    for state in (room.state, {}):
        with contextlib.suppress(AuthError):
            check_auth(event, state)
    with contextlib.suppress(AuthError):
        check_auth_event_list(event, list(room.state.values()))
    auth_types_for_event(
        room.version,
        event_type=event_type,
        sender=BOB,
        state_key=state_key if isinstance(state_key, str) else None,
        content=event.content,
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    version=st.sampled_from(ALL_VERSIONS),
    event_type=event_types,
    state_key=state_keys,
    content=contents | json_values,
    state_content=contents,
)
def test_arbitrary_content_gives_auth_error_or_passes(
    version: str, event_type: str, state_key: Any, content: Any, state_content: Any
) -> None:
    _check(version, event_type, state_key, content, state_content)


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize(
    "pdu_override",
    [
        {"sender": 5},
        {"type": None},
        {"content": []},
        {"state_key": 1},
        {"prev_events": "x"},
        {"room_id": None},
        {"signatures": "x"},
    ],
)
def test_malformed_top_level_fields(version: str, pdu_override: dict[str, Any]) -> None:
    room = standard_room(version, "public")
    base = room.member_event(BOB, "join")
    event = Event(base.event_id, base.room_version, {**base.pdu, **pdu_override})
    with contextlib.suppress(AuthError):
        check_auth(event, room.state)


def test_a_failure_changes_nothing() -> None:
    room = standard_room("12")
    before = dict(room.state)
    contents_before = {k: dict(v.pdu) for k, v in room.state.items()}
    with pytest.raises(AuthError):
        check_auth(room.event("m.room.power_levels", BOB, {"users": {BOB: 100}}, ""), room.state)
    assert room.state == before
    assert {k: dict(v.pdu) for k, v in room.state.items()} == contents_before


@pytest.mark.parametrize(
    "user_id",
    [
        "@alice:example.org",
        "@a:1.2.3.4",
        "@a:[::1]:8448",
        "@a:host:80",
        "@:example.org",
        "@Ünïcode:example.org",
        "@a/b=c+d:ex-ample.org",
    ],
)
def test_valid_user_ids(user_id: str) -> None:
    assert is_valid_user_id(user_id)


@pytest.mark.parametrize(
    "user_id",
    [
        None,
        5,
        "",
        "alice:example.org",
        "@alice",
        "@alice:",
        "@a:bad host",
        "@a:ex_ample.org",
        "@a:host:port",
        "@a:host:123456",
        "@a\x00b:example.org",
        "@" + "a" * 250 + ":example.org",
        "#room:example.org",
        "@a:[zz]",
        "@\ud800:example.org",
    ],
)
def test_invalid_user_ids(user_id: Any) -> None:
    assert not is_valid_user_id(user_id)


def test_power_levels_with_an_invalid_user_id_are_rejected() -> None:
    room = Room("1")
    room.member(ALICE, "join")
    bad = room.event("m.room.power_levels", ALICE, {"users": {"@a\x00b:example.org": 1}}, "")
    room.denies(bad, "10.1")
