"""Auth events selection and the rule on an event's own `auth_events` list."""

from __future__ import annotations

from typing import Any

import pytest

from myelin.core.auth import (
    AuthError,
    auth_types_for_event,
    check_auth,
    check_auth_event_list,
    required_signature_servers,
    state_from_auth_events,
)
from myelin.core.events import Event
from myelin.core.roomversions import room_version
from tests.core.auth.roomstate import ALICE, ALL_VERSIONS, BOB, CAROL, Room, standard_room, versions

CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")


def types(
    version: str, event_type: str, sender: str, state_key: str | None = None, **content: Any
) -> list[tuple[str, str]]:
    return auth_types_for_event(
        room_version(version),
        event_type=event_type,
        sender=sender,
        state_key=state_key,
        content=content,
    )


def with_create(version: str, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return keys if room_version(version).room_id_from_create_event else [CREATE, *keys]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_selection_for_a_message(version: str) -> None:
    assert types(version, "m.room.message", ALICE) == with_create(
        version, [PL, ("m.room.member", ALICE)]
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_selection_for_create_is_empty(version: str) -> None:
    assert types(version, "m.room.create", ALICE, "") == []


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize(
    ("membership", "join_rules"),
    [("join", True), ("invite", True), ("knock", True), ("leave", False), ("ban", False)],
)
def test_selection_for_membership(version: str, membership: str, join_rules: bool) -> None:
    expected = [PL, ("m.room.member", ALICE), ("m.room.member", BOB)]
    if join_rules:
        expected.append(JR)
    assert types(version, "m.room.member", ALICE, BOB, membership=membership) == with_create(
        version, expected
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_own_membership_is_listed_once(version: str) -> None:
    assert types(version, "m.room.member", BOB, BOB, membership="join") == with_create(
        version, [PL, ("m.room.member", BOB), JR]
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_selection_for_third_party_invite(version: str) -> None:
    content = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
    got = types(version, "m.room.member", ALICE, BOB, **content)
    assert got[-1] == ("m.room.third_party_invite", "tok")
    bad = {"membership": "invite", "third_party_invite": {"signed": {"token": 5}}}
    assert ("m.room.third_party_invite", "5") not in types(
        version, "m.room.member", ALICE, BOB, **bad
    )


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_selection_for_restricted_join(version: str) -> None:
    got = types(
        version,
        "m.room.member",
        BOB,
        BOB,
        membership="join",
        join_authorised_via_users_server=CAROL,
    )
    assert (("m.room.member", CAROL) in got) == room_version(version).restricted_join_rule


def listed(room: Room, event: Event) -> list[Event]:
    keys = auth_types_for_event(
        room.version,
        event_type=event.type,
        sender=event.sender,
        state_key=event.state_key,
        content=event.content,
    )
    return [room.state[k] for k in keys if k in room.state]


def rejected(event: Event, auth_events: list[Event]) -> AuthError:
    with pytest.raises(AuthError) as caught:
        check_auth_event_list(event, auth_events)
    return caught.value


def number(version: str, step: int) -> str:
    return f"{3 if room_version(version).room_id_from_create_event else 2}.{step}"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_selected_auth_events_pass(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "invite", sender=ALICE)
    join = room.member_event(BOB, "join")
    check_auth_event_list(join, listed(room, join))
    message = room.event("m.room.message", ALICE, {})
    check_auth_event_list(message, listed(room, message))
    # Slots are cited only "if any": citing fewer is allowed.
    check_auth_event_list(message, [e for e in listed(room, message) if e.type != "m.room.member"])


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_duplicate_slots_are_rejected(version: str) -> None:
    room = standard_room(version)
    message = room.event("m.room.message", ALICE, {})
    other_pl = room.event("m.room.power_levels", ALICE, {}, "")
    error = rejected(message, [*listed(room, message), other_pl])
    assert error.rule == number(version, 1)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unneeded_slots_are_rejected(version: str) -> None:
    room = standard_room(version)
    message = room.event("m.room.message", ALICE, {})
    join_rules = room.state[JR]
    assert rejected(message, [*listed(room, message), join_rules]).rule == number(version, 2)
    other_member = room.member(CAROL, "join")
    assert rejected(message, [*listed(room, message), other_member]).rule == number(version, 2)
    not_state = room.event("m.room.message", ALICE, {})
    assert rejected(message, [*listed(room, message), not_state]).rule == number(version, 2)


@pytest.mark.parametrize("version", versions(lambda v: not v.room_id_from_create_event))
def test_create_event_is_required_until_v11(version: str) -> None:
    room = standard_room(version)
    message = room.event("m.room.message", ALICE, {})
    without = [e for e in listed(room, message) if e.type != "m.room.create"]
    assert rejected(message, without).rule == "2.4"


def test_create_event_must_not_be_listed_in_v12() -> None:
    room = standard_room("12")
    message = room.event("m.room.message", ALICE, {})
    error = rejected(message, [room.create, *listed(room, message)])
    assert error.rule == "3.2" and "create" in error.reason


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_auth_events_from_another_room_are_rejected(version: str) -> None:
    room = standard_room(version)
    other = standard_room(version)
    message = room.event("m.room.message", ALICE, {})
    mixed = [
        e if e.type != "m.room.power_levels" else other.state[PL] for e in listed(room, message)
    ]
    assert rejected(message, mixed).rule == number(version, 5)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_event_list_is_left_to_the_create_rule(version: str) -> None:
    room = Room(version)
    check_auth_event_list(room.create, [])


def test_required_signature_servers() -> None:
    v1 = Room("1")
    event = v1.event("m.room.message", BOB, {}, event_id="$x:c.example")
    assert required_signature_servers(event) == {"b.example", "c.example"}
    v10 = standard_room("10", "restricted")
    join = v10.member_event(BOB, "join", content={"join_authorised_via_users_server": ALICE})
    assert required_signature_servers(join) == {"b.example", "a.example"}
    v7 = standard_room("7")
    join = v7.member_event(BOB, "join", content={"join_authorised_via_users_server": ALICE})
    assert required_signature_servers(join) == {"b.example"}


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_checking_an_event_against_its_own_auth_events(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "invite", sender=ALICE)
    join = room.member_event(BOB, "join")
    auth_events = listed(room, join)
    check_auth_event_list(join, auth_events)
    create = room.create if room.version.room_id_from_create_event else None
    check_auth(join, state_from_auth_events(auth_events, create))
    without_invite = [e for e in auth_events if e.state_key != BOB]
    with pytest.raises(AuthError):
        check_auth(join, state_from_auth_events(without_invite, create))
