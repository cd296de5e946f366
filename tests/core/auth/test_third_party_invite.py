"""Third-party invites: the `signed` block must verify under the invite's public keys.

Signatures here are made with PyNaCl and the standard library directly, independently of
the code under test.
"""

from __future__ import annotations

import base64
from typing import Any

import nacl.signing
import pytest

from myelin.core.canonicaljson import encode_canonical_json
from myelin.core.events import Event
from tests.core.auth.roomstate import ALICE, ALL_VERSIONS, BOB, CAROL, Room, at, standard_room

IDENTITY_KEY = nacl.signing.SigningKey(b"\x01" * 32)
OTHER_KEY = nacl.signing.SigningKey(b"\x02" * 32)


def b64(data: bytes, urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(data).decode().rstrip("=")


def sign(obj: dict[str, Any], key: nacl.signing.SigningKey) -> dict[str, Any]:
    blob = encode_canonical_json(
        {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    )
    signature = key.sign(blob).signature
    return {**obj, "signatures": {"id.example": {"ed25519:0": b64(signature)}}}


def public(key: nacl.signing.SigningKey, urlsafe: bool = False) -> str:
    return b64(bytes(key.verify_key), urlsafe)


def rule(version: str, step: int) -> str:
    prefix = at(version, {1: "5.3", 6: "4.3", 8: "4.4", 12: "5.4"})
    return f"{prefix}.1.{step}"


def room_with_invite(
    version: str, invite_content: dict[str, Any] | None = None, sender: str = ALICE
) -> Room:
    room = standard_room(version)
    content = invite_content or {
        "display_name": "b...@example.org",
        "key_validity_url": "https://id.example/_matrix/identity/v2/pubkey/isvalid",
        "public_key": public(IDENTITY_KEY),
    }
    room.add("m.room.third_party_invite", sender, content, "tok")
    return room


def invite(room: Room, signed: Any, sender: str = ALICE, target: str = BOB) -> Event:
    content = {"third_party_invite": {"display_name": "b...", "signed": signed}}
    return room.member_event(target, "invite", sender=sender, content=content)


def good_signed(key: nacl.signing.SigningKey = IDENTITY_KEY, mxid: str = BOB) -> dict[str, Any]:
    return sign({"mxid": mxid, "token": "tok"}, key)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_signed_by_the_public_key_is_allowed(version: str) -> None:
    room = room_with_invite(version)
    room.allows(invite(room, good_signed()))


@pytest.mark.parametrize("version", ["1", "12"])
def test_inviter_need_not_be_joined_on_the_third_party_path(version: str) -> None:
    room = room_with_invite(version)
    room.member(ALICE, "leave")
    room.allows(invite(room, good_signed()))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_public_keys_list_and_urlsafe_encoding(version: str) -> None:
    room = room_with_invite(
        version,
        {
            "display_name": "x",
            "public_key": public(OTHER_KEY),
            "public_keys": [
                {"public_key": "not base64!"},
                {"public_key": public(IDENTITY_KEY, urlsafe=True), "key_validity_url": "u"},
            ],
        },
    )
    room.allows(invite(room, good_signed()))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_banned_target_is_rejected(version: str) -> None:
    room = room_with_invite(version)
    room.member(BOB, "ban", sender=ALICE)
    room.denies(invite(room, good_signed()), rule(version, 1))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("third_party", [{}, {"signed": "x"}, "x"])
def test_missing_signed_is_rejected(version: str, third_party: Any) -> None:
    room = room_with_invite(version)
    event = room.member_event(
        BOB, "invite", sender=ALICE, content={"third_party_invite": third_party}
    )
    room.denies(event, rule(version, 2))


@pytest.mark.parametrize("version", ALL_VERSIONS)
@pytest.mark.parametrize("signed", [{"mxid": BOB}, {"token": "tok"}, {"mxid": BOB, "token": 1}])
def test_signed_needs_mxid_and_token(version: str, signed: dict[str, Any]) -> None:
    room = room_with_invite(version)
    room.denies(invite(room, sign(signed, IDENTITY_KEY)), rule(version, 3))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_mxid_must_be_the_target(version: str) -> None:
    room = room_with_invite(version)
    room.denies(invite(room, good_signed(mxid=CAROL)), rule(version, 4))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_token_must_name_a_third_party_invite_in_state(version: str) -> None:
    room = room_with_invite(version)
    signed = sign({"mxid": BOB, "token": "other"}, IDENTITY_KEY)
    room.denies(invite(room, signed), rule(version, 5))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_sender_must_have_sent_the_third_party_invite(version: str) -> None:
    room = room_with_invite(version, sender=CAROL)
    room.denies(invite(room, good_signed()), rule(version, 6))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_signature_by_another_key_is_rejected(version: str) -> None:
    room = room_with_invite(version)
    room.denies(invite(room, good_signed(OTHER_KEY)), rule(version, 8))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_tampered_signed_is_rejected(version: str) -> None:
    room = room_with_invite(version)
    signed = good_signed()
    signed["extra"] = "added after signing"
    room.denies(invite(room, signed), rule(version, 8))


@pytest.mark.parametrize(
    "signatures",
    [
        None,
        "x",
        {"id.example": "x"},
        {"id.example": {"ed25519:0": 5}},
        {"id.example": {"ed25519:0": "!!"}},
        {"id.example": {"curve:0": "AAAA"}},
    ],
)
def test_malformed_signatures_are_rejected_cleanly(signatures: Any) -> None:
    room = room_with_invite("10")
    room.denies(
        invite(room, {"mxid": BOB, "token": "tok", "signatures": signatures}), rule("10", 8)
    )


def test_invite_without_public_keys_is_rejected() -> None:
    room = room_with_invite("10", {"display_name": "x"})
    room.denies(invite(room, good_signed()), rule("10", 8))
