"""Rule 1: the create event."""

from __future__ import annotations

import pytest

from myelin.core.auth import check_auth, room_creators
from tests.core.auth.roomstate import ALICE, ALL_VERSIONS, BOB, Room, versions


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_a_well_formed_create_event_is_allowed(version: str) -> None:
    room = Room(version)
    check_auth(room.create, {})


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_create_with_prev_events_is_rejected(version: str) -> None:
    room = Room(version)
    create = room.event("m.room.create", ALICE, dict(room.create.content), "", prev=["$x"])
    room.denies(create, "1.1")


@pytest.mark.parametrize("version", versions(lambda v: not v.room_id_from_create_event))
def test_create_room_id_on_another_server_is_rejected(version: str) -> None:
    room = Room(version)
    create = room.event("m.room.create", BOB, {"creator": BOB}, "", prev=[])
    assert create.room_id.endswith(":a.example")
    room.denies(create, "1.2")


def test_v12_create_with_a_room_id_is_rejected() -> None:
    room = Room("12")
    create = room.event("m.room.create", ALICE, {}, "", prev=[], room_id="!x:a.example")
    room.denies(create, "1.2")


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("declared", ["13", "foo", 10, None])
def test_unknown_declared_room_version_is_rejected(version: str, declared: object) -> None:
    room = Room(version, create_content={"room_version": declared})
    room.denies(room.create, "1.3")


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_missing_declared_room_version_means_v1_and_is_allowed(version: str) -> None:
    room = Room(version)
    content = {k: v for k, v in room.create.content.items() if k != "room_version"}
    room.allows(room.event("m.room.create", ALICE, content, "", prev=[]))


@pytest.mark.parametrize("version", versions(lambda v: not v.implicit_room_creator))
def test_create_without_creator_is_rejected_before_v11(version: str) -> None:
    room = Room(version)
    room.denies(room.event("m.room.create", ALICE, {}, "", prev=[]), "1.4")


@pytest.mark.parametrize("version", ["11", "12"])
def test_create_without_creator_is_allowed_from_v11(version: str) -> None:
    room = Room(version)
    assert "creator" not in room.create.content
    room.allows(room.create)


@pytest.mark.parametrize("extra", [[BOB], [], ["@carol:c.example", "@weird\u00e9:b.example"]])
def test_v12_valid_additional_creators_are_allowed(extra: list[str]) -> None:
    room = Room("12", create_content={"additional_creators": extra})
    room.allows(room.create)
    assert room_creators(room.state) == frozenset([ALICE, *extra])


@pytest.mark.parametrize(
    "extra", ["@bob:b.example", [1], ["bob"], ["@bob"], ["@bob:bad host"], [None]]
)
def test_v12_invalid_additional_creators_are_rejected(extra: object) -> None:
    room = Room("12", create_content={"additional_creators": extra})
    room.denies(room.create, "1.4")


def test_additional_creators_mean_nothing_before_v12() -> None:
    room = Room("11", create_content={"additional_creators": ["bob"]})
    room.allows(room.create)
    assert room_creators(room.state) == frozenset([ALICE])


@pytest.mark.parametrize(("version", "creator"), [("1", BOB), ("10", BOB), ("11", ALICE)])
def test_creator_comes_from_content_until_v10_and_sender_from_v11(
    version: str, creator: str
) -> None:
    room = Room(version, create_content={"creator": BOB})
    assert room_creators(room.state) == frozenset([creator])
