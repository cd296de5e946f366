"""The redaction algorithm per room version and event type (rooms/fragments/*-redactions.md).

The expectations are written out from the specification's lists for each version, so that
every (room version, event type) pair is checked against the text, not against the code.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from myelin.core.redaction import RedactionError, redact
from myelin.core.roomversions import KNOWN_ROOM_VERSIONS, room_version
from tests.support.spec_vectors import spec_message_event

# Every top-level key any version keeps, plus keys no version keeps.
FULL_TOP_LEVEL: dict[str, Any] = {
    "event_id": "$e:example.org",
    "type": "OVERRIDDEN",
    "room_id": "!r:example.org",
    "sender": "@u:example.org",
    "state_key": "",
    "content": {},
    "hashes": {"sha256": "abc"},
    "signatures": {"example.org": {"ed25519:1": "sig"}},
    "depth": 7,
    "prev_events": ["$p"],
    "prev_state": [],
    "auth_events": ["$a"],
    "origin": "example.org",
    "origin_server_ts": 1234,
    "membership": "join",
    "unsigned": {"age": 1},
    "redacts": "$target",
    "extra_key": True,
    "age_ts": 5,
}

KEPT_V1_TO_V10 = {
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "prev_state",
    "auth_events",
    "origin",
    "origin_server_ts",
    "membership",
}
KEPT_V11 = {
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
}

# A content object per event type holding every key any version protects, plus junk.
FULL_CONTENT: dict[str, dict[str, Any]] = {
    "m.room.member": {
        "membership": "join",
        "join_authorised_via_users_server": "@admin:example.org",
        "third_party_invite": {"signed": {"mxid": "@u:example.org", "token": "t"}, "x": 1},
        "displayname": "Alice",
        "avatar_url": "mxc://example.org/a",
    },
    "m.room.create": {
        "creator": "@u:example.org",
        "room_version": "9",
        "m.federate": False,
        "predecessor": {"room_id": "!old:example.org"},
        "additional_creators": ["@v:example.org"],
    },
    "m.room.join_rules": {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]},
    "m.room.power_levels": {
        "ban": 50,
        "events": {"m.room.name": 100},
        "events_default": 0,
        "invite": 0,
        "kick": 50,
        "redact": 50,
        "state_default": 50,
        "users": {"@u:example.org": 100},
        "users_default": 0,
        "notifications": {"room": 50},
    },
    "m.room.aliases": {"aliases": ["#a:example.org"], "other": 1},
    "m.room.history_visibility": {"history_visibility": "shared", "other": 1},
    "m.room.redaction": {"redacts": "$target", "reason": "spam"},
    "m.room.message": {"msgtype": "m.text", "body": "hello", "membership": "join"},
    "m.room.topic": {"topic": "secret"},
    "m.room.third_party_invite": {"display_name": "x", "public_key": "k", "key_validity_url": "u"},
    "m.room.name": {"name": "n"},
    "org.example.custom": {"join_rule": "public", "creator": "@u:example.org"},
}

PL_V1 = {
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
}

V1: dict[str, set[str]] = {
    "m.room.member": {"membership"},
    "m.room.create": {"creator"},
    "m.room.join_rules": {"join_rule"},
    "m.room.power_levels": PL_V1,
    "m.room.aliases": {"aliases"},
    "m.room.history_visibility": {"history_visibility"},
}
V6 = {k: v for k, v in V1.items() if k != "m.room.aliases"}
V8 = {**V6, "m.room.join_rules": {"join_rule", "allow"}}
V9 = {**V8, "m.room.member": {"membership", "join_authorised_via_users_server"}}
V11 = {
    **V9,
    "m.room.member": {"membership", "join_authorised_via_users_server", "third_party_invite"},
    "m.room.create": set(FULL_CONTENT["m.room.create"]),
    "m.room.power_levels": PL_V1 | {"invite"},
    "m.room.redaction": {"redacts"},
}
EXPECTED_CONTENT_KEYS = {
    "1": V1,
    "2": V1,
    "3": V1,
    "4": V1,
    "5": V1,
    "6": V6,
    "7": V6,
    "8": V8,
    "9": V9,
    "10": V9,
    "11": V11,
    "12": V11,
}


def full_event(event_type: str) -> dict[str, Any]:
    return {**FULL_TOP_LEVEL, "type": event_type, "content": FULL_CONTENT[event_type]}


def test_expectations_cover_every_known_version() -> None:
    assert set(EXPECTED_CONTENT_KEYS) == set(KNOWN_ROOM_VERSIONS)


@pytest.mark.parametrize("version", [str(n) for n in range(1, 13)])
@pytest.mark.parametrize("event_type", sorted(FULL_CONTENT))
def test_redaction_per_version_and_type(version: str, event_type: str) -> None:
    event = full_event(event_type)
    before = copy.deepcopy(event)
    redacted = redact(event, room_version(version))
    assert event == before, "redact must not modify its input"

    kept_top = KEPT_V11 if int(version) >= 11 else KEPT_V1_TO_V10
    assert set(redacted) == kept_top
    for key in kept_top - {"content"}:
        assert redacted[key] == event[key]

    allowed = EXPECTED_CONTENT_KEYS[version].get(event_type, set())
    content = redacted["content"]
    assert set(content) == allowed
    for key in allowed:
        if key == "third_party_invite":
            # v11: only `signed` of the third-party invite survives.
            assert content[key] == {"signed": FULL_CONTENT[event_type][key]["signed"]}
        else:
            assert content[key] == FULL_CONTENT[event_type][key]


def test_v11_member_third_party_invite_without_signed_is_dropped() -> None:
    event: dict[str, Any] = {
        "type": "m.room.member",
        "content": {"membership": "invite", "third_party_invite": {"display_name": "x"}},
    }
    assert redact(event, room_version("11"))["content"] == {"membership": "invite"}
    event["content"]["third_party_invite"] = "not an object"
    assert redact(event, room_version("11"))["content"] == {"membership": "invite"}


def test_v10_member_keeps_no_third_party_invite() -> None:
    event = full_event("m.room.member")
    assert "third_party_invite" not in redact(event, room_version("10"))["content"]


def test_redaction_event_redacts_key_by_version() -> None:
    event = full_event("m.room.redaction")
    # Before v11 `redacts` is a top-level key that is not protected.
    assert "redacts" not in redact(event, room_version("10"))
    assert redact(event, room_version("10"))["content"] == {}
    assert "redacts" not in redact(event, room_version("11"))
    assert redact(event, room_version("11"))["content"] == {"redacts": "$target"}


def test_redaction_is_idempotent() -> None:
    for version in KNOWN_ROOM_VERSIONS.values():
        for event_type in FULL_CONTENT:
            once = redact(full_event(event_type), version)
            assert redact(once, version) == once


def test_missing_and_malformed_content() -> None:
    v = room_version("10")
    assert redact({"type": "m.room.member"}, v) == {"type": "m.room.member"}
    assert redact({"type": "m.room.member", "content": "x"}, v)["content"] == {}
    assert redact({"type": 5, "content": {"membership": "join"}}, v)["content"] == {}
    assert redact({}, v) == {}


def test_non_objects_are_rejected() -> None:
    with pytest.raises(RedactionError):
        redact([], room_version("10"))  # type: ignore[arg-type]
    with pytest.raises(RedactionError):
        redact("event", room_version("1"))  # type: ignore[arg-type]


def test_spec_example_event_keeps_its_body_out() -> None:
    # appendices.md, second event-signing example: message content does not survive.
    event = spec_message_event()
    assert redact(event, room_version("1")) == {
        "content": {},
        "event_id": "$0:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {},
    }


KEYS = st.sampled_from([*FULL_TOP_LEVEL, "x", "ban", "membership", "redacts", "allow"])
VALUES = st.none() | st.integers(-5, 5) | st.text(max_size=4) | st.lists(st.integers(), max_size=2)
EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(FULL_CONTENT))},
    optional={
        "content": st.dictionaries(KEYS, VALUES | st.dictionaries(KEYS, VALUES), max_size=6),
    },
).flatmap(lambda base: st.dictionaries(KEYS, VALUES, max_size=8).map(lambda d: {**d, **base}))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS, st.sampled_from([str(n) for n in range(1, 13)]))
def test_redaction_properties(event: dict[str, Any], version_id: str) -> None:
    version = room_version(version_id)
    redacted = redact(event, version)
    assert redact(redacted, version) == redacted
    assert set(redacted) <= set(event)
    assert "unsigned" not in redacted
    if isinstance(event.get("content"), dict):
        assert set(redacted["content"]) <= set(event["content"])
