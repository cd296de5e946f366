"""The rules outside the member and power-levels branches, in every version."""

from __future__ import annotations

from typing import Any

import pytest

from myelin.core.auth import AuthError, check_auth
from tests.core.auth.roomstate import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    DAVE,
    Room,
    at,
    standard_room,
    versions,
)

NOT_V12 = versions(lambda v: not v.room_id_from_create_event)


def test_error_names_rule_and_reason() -> None:
    room = standard_room("10")
    error = room.denies(room.event("m.room.message", BOB, {"body": "hi"}))
    assert error.rule == "5"
    assert "auth rule 5:" in str(error) and BOB in error.reason


def test_v12_room_id_must_be_derived_from_the_create_event() -> None:
    room = standard_room("12")
    room.allows(room.event("m.room.message", ALICE, {}))
    room.denies(room.event("m.room.message", ALICE, {}, room_id="!other"), "2")
    state = {k: v for k, v in room.state.items() if k[0] != "m.room.create"}
    with pytest.raises(AuthError) as caught:
        check_auth(room.event("m.room.message", ALICE, {}), state)
    assert caught.value.rule == "2"


@pytest.mark.parametrize("version", NOT_V12)
def test_state_without_create_event_is_rejected(version: str) -> None:
    room = standard_room(version)
    del room.state[("m.room.create", "")]
    room.denies(room.event("m.room.message", ALICE, {}), "2.4")


@pytest.mark.parametrize("version", NOT_V12)
def test_create_event_of_another_room_is_rejected(version: str) -> None:
    room = standard_room(version)
    room.denies(room.event("m.room.message", ALICE, {}, room_id="!other:a.example"), "2.5")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unfederated_room_rejects_other_servers(version: str) -> None:
    room = Room(version, create_content={"m.federate": False})
    room.member(ALICE, "join")
    room.creator_levels()
    room.join_rules("public")
    room.denies(room.member_event(BOB, "join"), at(version, {1: "3", 12: "4"}))
    room.allows(room.member_event(DAVE, "join"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_federate_true_allows_other_servers(version: str) -> None:
    room = Room(version, create_content={"m.federate": True})
    room.member(ALICE, "join")
    room.join_rules("public")
    room.allows(room.member_event(BOB, "join"))


@pytest.mark.parametrize("version", versions(lambda v: v.special_case_aliases_auth))
def test_aliases_need_only_the_senders_server_as_state_key_up_to_v5(version: str) -> None:
    room = standard_room(version)
    room.allows(room.event("m.room.aliases", BOB, {"aliases": []}, "b.example"))
    room.denies(room.event("m.room.aliases", BOB, {"aliases": []}, "a.example"), "4.2")
    room.denies(room.event("m.room.aliases", BOB, {"aliases": []}), "4.1")


@pytest.mark.parametrize("version", versions(lambda v: not v.special_case_aliases_auth))
def test_aliases_are_ordinary_state_from_v6(version: str) -> None:
    room = standard_room(version)
    aliases = room.event("m.room.aliases", BOB, {"aliases": []}, "b.example")
    room.denies(aliases, at(version, {6: "5", 12: "6"}))
    room.member(BOB, "join")
    room.denies(aliases, at(version, {6: "7", 12: "8"}))
    room.allows(room.event("m.room.aliases", ALICE, {"aliases": []}, "a.example"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("membership", ["leave", "invite", "ban", "knock"])
def test_sender_must_be_joined(version: str, membership: str) -> None:
    room = standard_room(version)
    room.member(BOB, membership, sender=ALICE)
    room.denies(room.event("m.room.message", BOB, {}), at(version, {1: "6", 6: "5", 12: "6"}))
    room.member(BOB, "join")
    room.allows(room.event("m.room.message", BOB, {}))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_third_party_invite_event_needs_the_invite_level(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "join")
    room.creator_levels({BOB: 10}, invite=20)
    tpi = room.event("m.room.third_party_invite", BOB, {"display_name": "x"}, "tok")
    room.denies(tpi, at(version, {1: "7.1", 6: "6.1", 12: "7.1"}))
    room.creator_levels({BOB: 20}, invite=20)
    room.allows(tpi)


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("state_key", [None, ""])
def test_required_power_level(version: str, state_key: str | None) -> None:
    room = standard_room(version)
    room.member(BOB, "join")
    room.creator_levels({BOB: 10}, events={"m.custom": 11})
    number = at(version, {1: "8", 6: "7", 12: "8"})
    room.denies(room.event("m.custom", BOB, {}, state_key), number)
    room.creator_levels({BOB: 11}, events={"m.custom": 11})
    room.allows(room.event("m.custom", BOB, {}, state_key))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_defaults_state_50_messages_0(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "join")
    room.creator_levels({BOB: 49})
    room.allows(room.event("m.anything", BOB, {}))
    room.denies(room.event("m.anything", BOB, {}, ""), at(version, {1: "8", 6: "7", 12: "8"}))
    room.creator_levels({BOB: 50})
    room.allows(room.event("m.anything", BOB, {}, ""))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_without_power_levels_only_the_creator_sends_state(version: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    room.member(BOB, "join")
    room.allows(room.event("m.room.name", ALICE, {"name": "x"}, ""))
    room.denies(room.event("m.room.name", BOB, {"name": "x"}, ""))
    room.allows(room.event("m.room.message", BOB, {}))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_state_key_starting_with_at_must_be_the_sender(version: str) -> None:
    room = standard_room(version)
    number = at(version, {1: "9", 6: "8", 12: "9"})
    room.denies(room.event("m.custom", ALICE, {}, BOB), number)
    room.allows(room.event("m.custom", ALICE, {}, ALICE))
    room.allows(room.event("m.custom", ALICE, {}, "not@user"))


@pytest.mark.parametrize("version", versions(lambda v: v.identifier in ("1", "2")))
def test_v1_redactions_need_redact_level_or_same_event_id_server(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "join")
    room.denies(room.event("m.room.redaction", BOB, {}, redacts="$x:a.example"), "11.3")
    room.allows(room.event("m.room.redaction", BOB, {}, redacts="$x:b.example"))
    room.allows(room.event("m.room.redaction", ALICE, {}, redacts="$x:b.example"))
    room.creator_levels({BOB: 5}, redact=5)
    room.allows(room.event("m.room.redaction", BOB, {}, redacts="$x:a.example"))


@pytest.mark.parametrize("version", versions(lambda v: v.identifier not in ("1", "2")))
def test_redactions_are_ordinary_events_from_v3(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "join")
    redacts = {"redacts": "$x"} if room.version.redacts_in_content else {}
    kwargs: dict[str, Any] = {} if room.version.redacts_in_content else {"redacts": "$x"}
    room.allows(room.event("m.room.redaction", BOB, redacts, **kwargs))
    room.creator_levels(events={"m.room.redaction": 1})
    room.denies(room.event("m.room.redaction", BOB, redacts, **kwargs))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_ordinary_message_by_member_is_allowed(version: str) -> None:
    room = standard_room(version)
    room.allows(room.event("m.room.message", ALICE, {"body": "hi"}))
