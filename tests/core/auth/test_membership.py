"""The `m.room.member` rule: join, invite, leave (and kick, unban), ban, knock."""

from __future__ import annotations

import pytest

from myelin.core.events import Event
from tests.core.auth.roomstate import (
    ALICE,
    ALL_VERSIONS,
    BOB,
    CAROL,
    Room,
    at,
    standard_room,
    versions,
)

KNOCK = versions(lambda v: v.knock_join_rule)
NO_KNOCK = versions(lambda v: not v.knock_join_rule)
RESTRICTED = versions(lambda v: v.restricted_join_rule)
NO_RESTRICTED = versions(lambda v: not v.restricted_join_rule)


def member(version: str, branch: str, step: int | None = None) -> str:
    """The number of a member-rule branch as each version's document prints it."""
    top = at(version, {1: "5", 6: "4", 12: "5"})
    old = {"shape": 1, "join": 2, "invite": 3, "leave": 4, "ban": 5, "knock": 6}
    new = {"shape": 1, "signature": 2, "join": 3, "invite": 4, "leave": 5, "ban": 6, "knock": 7}
    table = new if int(version) >= 8 else old
    if branch == "unknown":
        sub = 8 if int(version) >= 8 else (7 if int(version) == 7 else 6)
    else:
        sub = table[branch]
    return f"{top}.{sub}" + ("" if step is None else f".{step}")


def join_step(version: str, step: str) -> str:
    steps = ["creator", "sender", "banned", "invite"]
    if int(version) >= 8:
        steps.append("restricted")
    steps += ["public", "otherwise"]
    return member(version, "join", steps.index(step) + 1)


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("content", [{}, {"displayname": "Bob"}])
def test_member_event_needs_membership(version: str, content: dict[str, object]) -> None:
    room = standard_room(version, "public")
    room.denies(room.event("m.room.member", BOB, content, BOB), member(version, "shape"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_member_event_needs_state_key(version: str) -> None:
    room = standard_room(version, "public")
    room.denies(room.event("m.room.member", BOB, {"membership": "join"}), member(version, "shape"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("membership", ["foo", "JOIN", None, 1])
def test_unknown_membership_is_rejected(version: str, membership: object) -> None:
    room = standard_room(version, "public")
    event = room.event("m.room.member", BOB, {"membership": membership}, BOB)
    room.denies(event, member(version, "unknown"))


# join


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_creator_joins_right_after_create(version: str) -> None:
    room = Room(version)
    room.allows(room.member_event(ALICE, "join", prev=[room.create.event_id]))
    # Not right after the create event: the join rule (none: invite) applies.
    room.denies(room.member_event(ALICE, "join", prev=["$other"]), join_step(version, "invite"))
    room.denies(room.member_event(BOB, "join", prev=[room.create.event_id]))


@pytest.mark.parametrize(("version", "allowed"), [("10", False), ("11", True), ("12", True)])
def test_first_join_is_for_content_creator_until_v10_and_sender_from_v11(
    version: str, allowed: bool
) -> None:
    room = Room(version, create_content={"creator": BOB})
    join = room.member_event(ALICE, "join", prev=[room.create.event_id])
    if allowed:
        room.allows(join)
    else:
        room.denies(join)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_join_must_be_by_the_user_themselves(version: str) -> None:
    room = standard_room(version, "public")
    room.denies(room.member_event(BOB, "join", sender=ALICE), join_step(version, "sender"))
    room.allows(room.member_event(BOB, "join"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_banned_user_cannot_join(version: str) -> None:
    room = standard_room(version, "public")
    room.member(BOB, "ban", sender=ALICE)
    room.denies(room.member_event(BOB, "join"), join_step(version, "banned"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("current", ["invite", "join"])
def test_invite_rule_admits_invited_and_joined(version: str, current: str) -> None:
    room = standard_room(version, "invite")
    room.member(BOB, current, sender=ALICE)
    room.allows(room.member_event(BOB, "join"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("current", [None, "leave", "knock"])
def test_invite_rule_refuses_the_uninvited(version: str, current: str | None) -> None:
    room = standard_room(version, "invite")
    if current:
        room.member(BOB, current)
    room.denies(room.member_event(BOB, "join"), join_step(version, "invite"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_missing_join_rules_behave_as_invite(version: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    room.denies(room.member_event(BOB, "join"), join_step(version, "invite"))
    room.member(BOB, "invite", sender=ALICE)
    room.allows(room.member_event(BOB, "join"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_join_rules_without_join_rule_behave_as_invite(version: str) -> None:
    room = standard_room(version)
    room.add("m.room.join_rules", ALICE, {})
    room.denies(room.member_event(BOB, "join"), join_step(version, "invite"))
    room.member(BOB, "invite", sender=ALICE)
    room.allows(room.member_event(BOB, "join"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("value", [None, 5, ["public"]])
def test_join_rule_that_is_not_a_string_admits_nobody(version: str, value: object) -> None:
    room = standard_room(version)
    room.add("m.room.join_rules", ALICE, {"join_rule": value})
    room.member(BOB, "invite", sender=ALICE)
    room.denies(room.member_event(BOB, "join"), join_step(version, "otherwise"))


@pytest.mark.parametrize("version", KNOCK)
def test_knock_rule_admits_invited_from_v7(version: str) -> None:
    room = standard_room(version, "knock")
    room.denies(room.member_event(BOB, "join"), join_step(version, "invite"))
    room.member(BOB, "invite", sender=ALICE)
    room.allows(room.member_event(BOB, "join"))


@pytest.mark.parametrize("version", NO_KNOCK)
def test_knock_rule_means_nothing_before_v7(version: str) -> None:
    room = standard_room(version, "knock")
    room.member(BOB, "invite", sender=ALICE)
    room.denies(room.member_event(BOB, "join"), join_step(version, "otherwise"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_public_rule_admits_anyone(version: str) -> None:
    room = standard_room(version, "public")
    room.allows(room.member_event(BOB, "join"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("rule", ["private", "bogus"])
def test_other_rules_admit_nobody_uninvited(version: str, rule: str) -> None:
    room = standard_room(version, rule)
    room.denies(room.member_event(BOB, "join"), join_step(version, "otherwise"))


def restricted_join(
    room: Room, authoriser: str | None, signed_by: list[str] | None = None
) -> Event:
    content = {} if authoriser is None else {"join_authorised_via_users_server": authoriser}
    servers = signed_by if signed_by is not None else ["b.example", "a.example"]
    signatures = {s: {"ed25519:a": "sig"} for s in servers}
    return room.member_event(BOB, "join", content=content, signatures=signatures)


def restricted_versions() -> list[tuple[str, str]]:
    cases = [(v, "restricted") for v in RESTRICTED]
    cases += [(v, "knock_restricted") for v in versions(lambda v: v.knock_restricted_join_rule)]
    return cases


@pytest.mark.parametrize(("version", "rule"), restricted_versions())
def test_restricted_join_vouched_by_joined_inviter(version: str, rule: str) -> None:
    room = standard_room(version, rule)
    room.allows(restricted_join(room, ALICE))


@pytest.mark.parametrize(("version", "rule"), restricted_versions())
@pytest.mark.parametrize("current", ["invite", "join"])
def test_restricted_admits_invited_without_authoriser(
    version: str, rule: str, current: str
) -> None:
    room = standard_room(version, rule)
    room.member(BOB, current, sender=ALICE)
    room.allows(restricted_join(room, None))


@pytest.mark.parametrize(("version", "rule"), restricted_versions())
def test_restricted_refuses_without_authoriser(version: str, rule: str) -> None:
    room = standard_room(version, rule)
    room.denies(restricted_join(room, None), join_step(version, "restricted"))


@pytest.mark.parametrize(("version", "rule"), restricted_versions())
def test_restricted_authoriser_must_be_joined(version: str, rule: str) -> None:
    room = standard_room(version, rule)
    room.member(CAROL, "invite", sender=ALICE)
    room.creator_levels({CAROL: 100})
    join = restricted_join(room, CAROL, ["b.example", "c.example"])
    room.denies(join, join_step(version, "restricted"))
    room.member(CAROL, "join")
    room.allows(join)


@pytest.mark.parametrize(("version", "rule"), restricted_versions())
def test_restricted_authoriser_needs_invite_level(version: str, rule: str) -> None:
    room = standard_room(version, rule)
    room.member(CAROL, "join")
    room.creator_levels({CAROL: 10}, invite=11)
    join = restricted_join(room, CAROL, ["b.example", "c.example"])
    room.denies(join, join_step(version, "restricted"))
    room.creator_levels({CAROL: 11}, invite=11)
    room.allows(join)


@pytest.mark.parametrize("version", RESTRICTED)
@pytest.mark.parametrize("membership", ["join", "leave"])
def test_authorising_server_must_have_signed(version: str, membership: str) -> None:
    room = standard_room(version, "restricted")
    room.member(BOB, "join")
    event = room.member_event(
        BOB,
        membership,
        content={"join_authorised_via_users_server": ALICE},
        signatures={"b.example": {"ed25519:a": "sig"}},
    )
    room.denies(event, member(version, "signature"))
    bad = room.member_event(BOB, membership, content={"join_authorised_via_users_server": 5})
    room.denies(bad, member(version, "signature"))


@pytest.mark.parametrize("version", NO_RESTRICTED)
def test_restricted_means_nothing_before_v8(version: str) -> None:
    room = standard_room(version, "restricted")
    event = restricted_join(room, ALICE)
    room.denies(event, join_step(version, "otherwise"))
    room.member(BOB, "invite", sender=ALICE)
    room.denies(event, join_step(version, "otherwise"))


@pytest.mark.parametrize(
    "version", versions(lambda v: v.restricted_join_rule and not v.knock_restricted_join_rule)
)
def test_knock_restricted_means_nothing_before_v10(version: str) -> None:
    room = standard_room(version, "knock_restricted")
    room.denies(restricted_join(room, ALICE), join_step(version, "otherwise"))


# invite


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_joined_member_at_invite_level_invites(version: str) -> None:
    room = standard_room(version)
    room.allows(room.member_event(BOB, "invite", sender=ALICE))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("inviter_state", [None, "invite", "leave"])
def test_inviter_must_be_joined(version: str, inviter_state: str | None) -> None:
    room = standard_room(version)
    if inviter_state:
        room.member(CAROL, inviter_state, sender=ALICE)
    room.denies(room.member_event(BOB, "invite", sender=CAROL), member(version, "invite", 2))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("target_state", ["join", "ban"])
def test_cannot_invite_joined_or_banned(version: str, target_state: str) -> None:
    room = standard_room(version)
    room.member(BOB, target_state, sender=ALICE if target_state == "ban" else BOB)
    room.denies(room.member_event(BOB, "invite", sender=ALICE), member(version, "invite", 3))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("target_state", ["leave", "invite", "knock"])
def test_can_invite_left_invited_or_knocking(version: str, target_state: str) -> None:
    room = standard_room(version)
    room.member(BOB, target_state)
    room.allows(room.member_event(BOB, "invite", sender=ALICE))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_inviter_needs_invite_level(version: str) -> None:
    room = standard_room(version)
    room.member(CAROL, "join")
    room.creator_levels({CAROL: 4}, invite=5)
    room.denies(room.member_event(BOB, "invite", sender=CAROL), member(version, "invite", 5))
    room.creator_levels({CAROL: 5}, invite=5)
    room.allows(room.member_event(BOB, "invite", sender=CAROL))


# leave, kick, unban


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("current", ["join", "invite"])
def test_leaving_from_join_or_invite(version: str, current: str) -> None:
    room = standard_room(version)
    room.member(BOB, current, sender=ALICE)
    room.allows(room.member_event(BOB, "leave"))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("current", [None, "leave", "ban"])
def test_cannot_leave_from_leave_or_ban(version: str, current: str | None) -> None:
    room = standard_room(version)
    if current:
        room.member(BOB, current, sender=ALICE)
    room.denies(room.member_event(BOB, "leave"), member(version, "leave", 1))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_rescinding_a_knock_from_v7(version: str) -> None:
    room = standard_room(version, "knock")
    room.member(BOB, "knock")
    event = room.member_event(BOB, "leave")
    if room.version.knock_join_rule:
        room.allows(event)
    else:
        room.denies(event, member(version, "leave", 1))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_kicker_must_be_joined(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "join")
    room.member(CAROL, "leave")
    room.creator_levels({CAROL: 100})
    room.denies(room.member_event(BOB, "leave", sender=CAROL), member(version, "leave", 2))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_kick_needs_kick_level_and_higher_level(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "join")
    room.member(CAROL, "join")
    kick = room.member_event(BOB, "leave", sender=CAROL)
    room.creator_levels({CAROL: 49, BOB: 0})
    room.denies(kick, member(version, "leave", 5))
    room.creator_levels({CAROL: 50, BOB: 50})
    room.denies(kick, member(version, "leave", 5))
    room.creator_levels({CAROL: 50, BOB: 49})
    room.allows(kick)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_unban_needs_ban_level(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "ban", sender=ALICE)
    room.member(CAROL, "join")
    unban = room.member_event(BOB, "leave", sender=CAROL)
    room.creator_levels({CAROL: 60}, kick=10, ban=70)
    room.denies(unban, member(version, "leave", 3))
    room.creator_levels({CAROL: 60}, kick=70, ban=10)
    room.denies(unban, member(version, "leave", 5))
    room.creator_levels({CAROL: 70}, kick=70, ban=70)
    room.allows(unban)


# ban


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_ban_needs_joined_banner_with_ban_level_above_target(version: str) -> None:
    room = standard_room(version)
    room.member(CAROL, "invite", sender=ALICE)
    room.creator_levels({CAROL: 100})
    ban = room.member_event(BOB, "ban", sender=CAROL)
    room.denies(ban, member(version, "ban", 1))
    room.member(CAROL, "join")
    room.allows(ban)
    room.creator_levels({CAROL: 100, BOB: 100})
    room.denies(ban, member(version, "ban", 3))
    room.creator_levels({CAROL: 49})
    room.denies(ban, member(version, "ban", 3))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_ban_of_a_non_member_is_allowed(version: str) -> None:
    room = standard_room(version)
    room.allows(room.member_event("@nobody:x.example", "ban", sender=ALICE))


# knock


def knock_rules(version: str) -> list[str]:
    v = int(version)
    return ["knock", "knock_restricted"] if v >= 10 else ["knock"]


@pytest.mark.parametrize(("version", "rule"), [(v, r) for v in KNOCK for r in knock_rules(v)])
@pytest.mark.parametrize("current", [None, "leave"])
def test_knocking(version: str, rule: str, current: str | None) -> None:
    room = standard_room(version, rule)
    if current:
        room.member(BOB, current)
    room.allows(room.member_event(BOB, "knock"))


@pytest.mark.parametrize(
    ("version", "rule"),
    [
        (v, r)
        for v in KNOCK
        for r in ["invite", "public", "restricted", "knock_restricted"]
        if r not in knock_rules(v)
    ],
)
def test_knock_needs_knock_rule(version: str, rule: str) -> None:
    room = standard_room(version, rule)
    room.denies(room.member_event(BOB, "knock"), member(version, "knock", 1))


@pytest.mark.parametrize("version", KNOCK)
def test_knock_only_for_oneself(version: str) -> None:
    room = standard_room(version, "knock")
    room.denies(room.member_event(BOB, "knock", sender=ALICE), member(version, "knock", 2))


@pytest.mark.parametrize("version", KNOCK)
@pytest.mark.parametrize("current", ["ban", "invite", "join"])
def test_knock_refused_to_banned_invited_joined(version: str, current: str) -> None:
    room = standard_room(version, "knock")
    room.member(BOB, current, sender=ALICE)
    room.denies(room.member_event(BOB, "knock"), member(version, "knock", 4))


@pytest.mark.parametrize("version", NO_KNOCK)
def test_knock_membership_unknown_before_v7(version: str) -> None:
    room = standard_room(version, "knock")
    room.denies(room.member_event(BOB, "knock"), member(version, "unknown"))
