"""Units of the federation package that need no server: key responses, auth order of
fetched events, server name splitting, the sender's membership tracking."""

from __future__ import annotations

import time

import pytest

from myelin.core.builder import build_event
from myelin.core.roomversions import room_version
from myelin.core.signing import SigningKey, sign_json
from myelin.federation.client import split_host_port
from myelin.federation.inbound import auth_order
from myelin.federation.keyring import KeyFetchError, Keyring, parse_server_keys
from myelin.federation.sender.reader import _Joined

KEY = SigningKey.from_seed(bytes(range(32)), "k1")
OTHER = SigningKey.from_seed(bytes(range(1, 33)), "k2")


def key_response(
    server: str, key: SigningKey, signer: SigningKey | None = None, valid_for_ms: int = 3_600_000
) -> dict:
    doc = {
        "server_name": server,
        "valid_until_ts": int(time.time() * 1000) + valid_for_ms,
        "verify_keys": {key.key_id: {"key": key.verify_key_base64}},
        "old_verify_keys": {},
    }
    return sign_json(doc, server, signer or key)


def test_self_signed_key_response_is_accepted() -> None:
    keys = parse_server_keys("a.example", key_response("a.example", KEY), 0)
    assert keys.verify_keys == {"ed25519:k1": KEY.verify_key}


@pytest.mark.parametrize(
    "body",
    [
        key_response("b.example", KEY),  # names another server
        key_response("a.example", KEY, signer=OTHER),  # not signed by the key it lists
        {"server_name": "a.example"},
        [],
    ],
)
def test_bad_key_responses_are_refused(body: object) -> None:
    with pytest.raises(KeyFetchError):
        parse_server_keys("a.example", body, 0)


async def test_keyring_fetches_once_and_serves_own_keys_without_fetching() -> None:
    calls: list[str] = []

    async def fetch(server: str) -> object:
        calls.append(server)
        return key_response(server, OTHER)

    ring = Keyring("me.example", KEY, fetch)
    assert await ring.verify_key("a.example", "ed25519:k2") == OTHER.verify_key
    assert await ring.verify_key("a.example", "ed25519:k2") == OTHER.verify_key
    assert calls == ["a.example"]
    # An unknown key ID shortly after a fetch does not fetch again (no request storms).
    assert await ring.verify_key("a.example", "ed25519:nope") is None
    assert calls == ["a.example"]
    own = await ring.server_keys("me.example")
    assert own.verify_keys == {"ed25519:k1": KEY.verify_key}
    assert calls == ["a.example"]
    [notary] = await ring.notary_responses("a.example")
    assert set(notary["signatures"]) == {"a.example", "me.example"}
    assert calls == ["a.example"]  # cached and valid: no fetch


async def test_keyring_failure_is_a_key_fetch_error() -> None:
    async def fetch(server: str) -> object:
        raise OSError("unreachable")

    ring = Keyring("me.example", KEY, fetch)
    assert await ring.verify_key("down.example", "ed25519:k") is None
    assert await ring.notary_responses("down.example") == []


async def test_notary_keeps_a_key_the_origin_stopped_publishing() -> None:
    """Sytest's "Key notary server must not overwrite a valid key with a spurious result
    from the origin server": an expired key, then a later answer without it."""
    answers = [
        key_response("a.example", KEY, valid_for_ms=-86_400_000),
        key_response("a.example", OTHER, valid_for_ms=-86_399_000),
    ]
    calls: list[str] = []

    async def fetch(server: str) -> object:
        calls.append(server)
        return answers[len(calls) - 1]

    ring = Keyring("me.example", SigningKey.from_seed(bytes(range(2, 34)), "me"), fetch)
    [first] = await ring.notary_responses("a.example", ["ed25519:k1"])
    assert set(first["verify_keys"]) == {"ed25519:k1"}
    # Wanted valid until now: fetched again; the origin no longer lists k1.
    [second] = await ring.notary_responses("a.example", ["ed25519:k1"], int(time.time() * 1000))
    assert len(calls) == 2
    assert set(second["verify_keys"]) == {"ed25519:k1"}
    # Wanted valid until its own expiry: served from the cache, as first published.
    expiry = first["valid_until_ts"]
    [third] = await ring.notary_responses("a.example", ["ed25519:k1"], expiry)
    assert len(calls) == 2
    assert set(third["verify_keys"]) == {"ed25519:k1"}
    assert third["valid_until_ts"] == expiry
    [k2] = await ring.notary_responses("a.example", ["ed25519:k2"], 0)
    assert set(k2["verify_keys"]) == {"ed25519:k2"}


def test_auth_order_puts_auth_events_first() -> None:
    version = room_version("10")
    common = {
        "room_id": "!r:a.example",
        "sender": "@u:a.example",
        "origin_server_ts": 1,
        "server_name": "a.example",
        "signing_key": KEY,
    }
    create = build_event(
        version,
        type="m.room.create",
        content={"room_version": "10"},
        state_key="",
        prev_events=[],
        auth_events=[],
        depth=1,
        **common,
    )
    member = build_event(
        version,
        type="m.room.member",
        content={"membership": "join"},
        state_key="@u:a.example",
        prev_events=[create],
        auth_events=[create],
        depth=2,
        **common,
    )
    power = build_event(
        version,
        type="m.room.power_levels",
        content={},
        state_key="",
        prev_events=[member],
        auth_events=[create, member],
        depth=1,
        **common,
    )
    ordered = [e.event_id for e in auth_order([power, member, create])]
    assert ordered.index(create.event_id) < ordered.index(member.event_id)
    assert ordered.index(member.event_id) < ordered.index(power.event_id)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("example.org", ("example.org", None)),
        ("example.org:8448", ("example.org", 8448)),
        ("1.2.3.4:80", ("1.2.3.4", 80)),
        ("[::1]:8448", ("::1", 8448)),
        ("[::1]", ("::1", None)),
    ],
)
def test_split_host_port(name: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(name) == expected


def test_joined_members_count_servers() -> None:
    joined = _Joined()
    for user in ("@a:x", "@b:x", "@c:y"):
        joined.add(user)
    joined.add("@a:x")  # twice: counted once
    assert joined.servers == {"x": 2, "y": 1}
    joined.discard("@a:x")
    joined.discard("@c:y")
    joined.discard("@nobody:z")
    assert joined.servers == {"x": 1}
