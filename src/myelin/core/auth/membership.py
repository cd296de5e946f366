"""The rule for `m.room.member` events: joins, invites, leaves and kicks, bans, knocks.

Each membership has its own branch; every branch ends in allow or reject, so an event
that reaches here is never judged by the later, generic rules.
"""

from __future__ import annotations

from typing import Any

from myelin.core.auth import numbering
from myelin.core.auth.errors import AuthError
from myelin.core.auth.powerlevels import (
    CREATE,
    JOIN_RULES,
    AuthState,
    get_named_level,
    get_power_level,
)
from myelin.core.auth.thirdparty import public_keys, signed_by_any
from myelin.core.auth.userids import server_of
from myelin.core.events import Event


def membership_of(user_id: str, auth_state: AuthState) -> str:
    """A user's current membership; `leave` when the state has no member event for them."""
    event = auth_state.get(("m.room.member", user_id))
    membership = event.membership if event is not None else None
    return membership or "leave"


def join_rule(auth_state: AuthState) -> str:
    """The current join rule.

    A room without `m.room.join_rules` (or whose event has no `join_rule`) behaves as
    `invite`: nobody joins uninvited, invited users can. A value that is not a string
    matches no rule, so only the rules' "otherwise, reject" applies to it.
    """
    event = auth_state.get(JOIN_RULES)
    value = event.content.get("join_rule", "invite") if event is not None else "invite"
    return value if isinstance(value, str) else ""


def authoriser_of(event: Event) -> Any:
    """`content.join_authorised_via_users_server`, or None when absent."""
    return event.content.get("join_authorised_via_users_server")


def check_member_event(event: Event, auth_state: AuthState) -> None:
    """Apply the `m.room.member` rule; raises AuthError, returns if allowed."""
    version = event.room_version
    target = event.state_key
    membership = event.membership
    if target is None or "membership" not in event.content:
        raise AuthError(
            numbering.member(version, "shape"), "member event without state_key or membership"
        )
    if version.restricted_join_rule and "join_authorised_via_users_server" in event.content:
        _check_authoriser_signed(event)
    if membership == "join":
        _check_join(event, target, auth_state)
    elif membership == "invite":
        _check_invite(event, target, auth_state)
    elif membership == "leave":
        _check_leave(event, target, auth_state)
    elif membership == "ban":
        _check_ban(event, target, auth_state)
    elif membership == "knock" and version.knock_join_rule:
        _check_knock(event, target, auth_state)
    else:
        raise AuthError(numbering.member(version, "unknown"), f"unknown membership {membership!r}")


def _check_authoriser_signed(event: Event) -> None:
    """v8+: a join vouched for by a user of another server needs that server's signature.

    The rules are pure and hold no keys, so this checks that the event carries a signature
    from that server; whoever verifies the event's signatures must then include it among
    the servers to check (`required_signature_servers`), and a bad one fails there.
    """
    rule = numbering.member(event.room_version, "authoriser_signature")
    authoriser = authoriser_of(event)
    if not isinstance(authoriser, str) or not server_of(authoriser):
        raise AuthError(rule, "join_authorised_via_users_server is not a user ID")
    signatures = event.pdu.get("signatures")
    by_key = signatures.get(server_of(authoriser)) if isinstance(signatures, dict) else None
    if not isinstance(by_key, dict) or not by_key:
        raise AuthError(
            rule,
            f"event is not signed by {server_of(authoriser)}, the server of "
            "join_authorised_via_users_server",
        )


def _check_join(event: Event, target: str, auth_state: AuthState) -> None:
    version = event.room_version
    create = auth_state.get(CREATE)
    if (
        create is not None
        and event.prev_event_ids == (create.event_id,)
        and target == _first_member(create)
    ):
        return
    if event.sender != target:
        raise AuthError(numbering.join(version, "sender"), "a user can only join themselves")
    current = membership_of(target, auth_state)
    if current == "ban":
        raise AuthError(numbering.join(version, "banned"), f"{target} is banned")
    rule = join_rule(auth_state)
    invite_rules = ("invite", "knock") if version.knock_join_rule else ("invite",)
    if rule in invite_rules:
        if current in ("invite", "join"):
            return
        raise AuthError(
            numbering.join(version, "invite"), f"join rule is {rule} and {target} is not invited"
        )
    restricted_rules = ["restricted"] if version.restricted_join_rule else []
    if version.knock_restricted_join_rule:
        restricted_rules.append("knock_restricted")
    if rule in restricted_rules:
        if current in ("invite", "join"):
            return
        authoriser = authoriser_of(event)
        if (
            not isinstance(authoriser, str)
            or membership_of(authoriser, auth_state) != "join"
            or get_power_level(authoriser, auth_state) < get_named_level("invite", auth_state)
        ):
            raise AuthError(
                numbering.join(version, "restricted"),
                "join_authorised_via_users_server is not a joined member able to invite",
            )
        return
    if rule == "public":
        return
    raise AuthError(numbering.join(version, "otherwise"), f"join rule {rule!r} forbids joining")


def _first_member(create: Event) -> str:
    """Who may join straight after the create event: `content.creator` up to v10, the
    create event's sender from v11."""
    if create.room_version.implicit_room_creator:
        return create.sender
    creator = create.content.get("creator")
    return creator if isinstance(creator, str) else ""


def _check_invite(event: Event, target: str, auth_state: AuthState) -> None:
    version = event.room_version
    if "third_party_invite" in event.content:
        _check_third_party_invite(event, target, auth_state)
        return
    if membership_of(event.sender, auth_state) != "join":
        raise AuthError(numbering.member(version, "invite", 2), "the inviter is not joined")
    if membership_of(target, auth_state) in ("join", "ban"):
        raise AuthError(
            numbering.member(version, "invite", 3), f"{target} is already joined or banned"
        )
    if get_power_level(event.sender, auth_state) >= get_named_level("invite", auth_state):
        return
    raise AuthError(numbering.member(version, "invite", 5), "the inviter is below the invite level")


def _check_third_party_invite(event: Event, target: str, auth_state: AuthState) -> None:
    version = event.room_version

    def fail(step: int, reason: str) -> AuthError:
        return AuthError(numbering.member(version, "invite", 1, step), reason)

    if membership_of(target, auth_state) == "ban":
        raise fail(1, f"{target} is banned")
    third_party = event.content.get("third_party_invite")
    signed = third_party.get("signed") if isinstance(third_party, dict) else None
    if not isinstance(signed, dict):
        raise fail(2, "third_party_invite has no signed object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise fail(3, "signed needs string mxid and token")
    if mxid != target:
        raise fail(4, "signed.mxid is not the invited user")
    invite = auth_state.get(("m.room.third_party_invite", token))
    if invite is None:
        raise fail(5, "no m.room.third_party_invite with this token")
    if invite.sender != event.sender:
        raise fail(6, "the sender did not send the m.room.third_party_invite")
    if signed_by_any(signed, public_keys(invite.content)):
        return
    raise fail(8, "no signature in signed verifies with the invite's public keys")


def _check_leave(event: Event, target: str, auth_state: AuthState) -> None:
    version = event.room_version
    sender = event.sender
    if sender == target:
        allowed = ("invite", "join", "knock") if version.knock_join_rule else ("invite", "join")
        if membership_of(target, auth_state) in allowed:
            return
        raise AuthError(
            numbering.member(version, "leave", 1),
            f"{target} cannot leave from membership {membership_of(target, auth_state)!r}",
        )
    if membership_of(sender, auth_state) != "join":
        raise AuthError(numbering.member(version, "leave", 2), "the kicker is not joined")
    sender_level = get_power_level(sender, auth_state)
    if membership_of(target, auth_state) == "ban" and sender_level < get_named_level(
        "ban", auth_state
    ):
        raise AuthError(numbering.member(version, "leave", 3), "unbanning needs the ban level")
    if (
        sender_level >= get_named_level("kick", auth_state)
        and get_power_level(target, auth_state) < sender_level
    ):
        return
    raise AuthError(
        numbering.member(version, "leave", 5),
        "kicking needs the kick level and a level above the target's",
    )


def _check_ban(event: Event, target: str, auth_state: AuthState) -> None:
    version = event.room_version
    if membership_of(event.sender, auth_state) != "join":
        raise AuthError(numbering.member(version, "ban", 1), "the banner is not joined")
    sender_level = get_power_level(event.sender, auth_state)
    if (
        sender_level >= get_named_level("ban", auth_state)
        and get_power_level(target, auth_state) < sender_level
    ):
        return
    raise AuthError(
        numbering.member(version, "ban", 3),
        "banning needs the ban level and a level above the target's",
    )


def _check_knock(event: Event, target: str, auth_state: AuthState) -> None:
    version = event.room_version
    rule = join_rule(auth_state)
    knock_rules = (
        ("knock", "knock_restricted") if version.knock_restricted_join_rule else ("knock",)
    )
    if rule not in knock_rules:
        raise AuthError(
            numbering.member(version, "knock", 1), f"join rule {rule!r} forbids knocking"
        )
    if event.sender != target:
        raise AuthError(
            numbering.member(version, "knock", 2), "a user can only knock for themselves"
        )
    if membership_of(event.sender, auth_state) not in ("ban", "invite", "join"):
        return
    raise AuthError(
        numbering.member(version, "knock", 4), "banned, invited or joined users cannot knock"
    )
