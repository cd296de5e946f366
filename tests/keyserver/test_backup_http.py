"""Server-side key backup over HTTP: versions, etag and count, the replacement rules."""

from __future__ import annotations

from typing import Any

import pytest

from tests.keyserver.helpers import V3, Device, register
from tests.support.client import SpecClient
from tests.support.server import ServerProcess

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:localhost"


@pytest.fixture
async def client(shared_server: ServerProcess) -> Any:
    async with SpecClient(shared_server.base_url) as c:
        yield c


def key(fmi: int, fwd: int, verified: bool, tag: str) -> dict[str, Any]:
    return {
        "first_message_index": fmi,
        "forwarded_count": fwd,
        "is_verified": verified,
        "session_data": {"ephemeral": tag, "ciphertext": tag, "mac": tag},
    }


async def new_version(client: SpecClient, dev: Device) -> str:
    status, body = await client.call(
        "POST",
        f"{V3}/room_keys/version",
        {"algorithm": ALGORITHM, "auth_data": {"public_key": "abc"}},
        token=dev.token,
    )
    assert status == 200, body
    return str(body["version"])


async def put_session(
    client: SpecClient, dev: Device, version: str, session: str, value: dict[str, Any]
) -> tuple[int, Any]:
    return await client.call(
        "PUT",
        f"{V3}/room_keys/keys/{ROOM}/{session}?version={version}",
        value,
        token=dev.token,
    )


async def stored(client: SpecClient, dev: Device, version: str, session: str) -> Any:
    status, body = await client.call(
        "GET", f"{V3}/room_keys/keys/{ROOM}/{session}?version={version}", token=dev.token
    )
    assert status == 200, body
    return body


async def test_versions(client: SpecClient) -> None:
    alice = await register(client, "bv_alice")
    status, body = await client.call("GET", f"{V3}/room_keys/version", token=alice.token)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    v1 = await new_version(client, alice)
    v2 = await new_version(client, alice)
    assert int(v2) > int(v1)
    status, body = await client.call("GET", f"{V3}/room_keys/version", token=alice.token)
    assert status == 200
    assert (body["version"], body["count"], body["algorithm"]) == (v2, 0, ALGORITHM)
    status, body = await client.call(
        "PUT",
        f"{V3}/room_keys/version/{v2}",
        {"algorithm": ALGORITHM, "auth_data": {"public_key": "new"}, "version": v2},
        token=alice.token,
    )
    assert (status, body) == (200, {})
    status, body = await client.call("GET", f"{V3}/room_keys/version/{v2}", token=alice.token)
    assert body["auth_data"] == {"public_key": "new"}
    for bad, code in (
        ({"algorithm": "other", "auth_data": {}}, "M_INVALID_PARAM"),
        ({"algorithm": ALGORITHM, "auth_data": {}, "version": v1}, "M_INVALID_PARAM"),
    ):
        status, body = await client.call(
            "PUT", f"{V3}/room_keys/version/{v2}", bad, token=alice.token
        )
        assert (status, body["errcode"]) == (400, code)
    status, body = await client.call("GET", f"{V3}/room_keys/version/999", token=alice.token)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # Keys go only to the current version.
    status, body = await put_session(client, alice, v1, "S", key(0, 0, False, "x"))
    assert (status, body["errcode"], body["current_version"]) == (
        403,
        "M_WRONG_ROOM_KEYS_VERSION",
        v2,
    )
    status, body = await client.call("DELETE", f"{V3}/room_keys/version/{v2}", token=alice.token)
    assert (status, body) == (200, {})
    status, body = await client.call("GET", f"{V3}/room_keys/version", token=alice.token)
    assert (status, body["version"]) == (200, v1)
    status, body = await client.call("DELETE", f"{V3}/room_keys/version/{v2}", token=alice.token)
    assert status == 404
    # Another user sees none of it.
    bob = await register(client, "bv_bob")
    status, body = await client.call("GET", f"{V3}/room_keys/version/{v1}", token=bob.token)
    assert status == 404


async def test_keys_etag_count_and_replacement(client: SpecClient) -> None:
    alice = await register(client, "bk_alice")
    version = await new_version(client, alice)
    status, body = await put_session(client, alice, version, "S1", key(5, 2, False, "first"))
    assert status == 200
    etag1 = body["etag"]
    assert body["count"] == 1

    # Worse keys do not replace: unverified with a higher index, or more forwards.
    for worse in (key(6, 0, False, "later"), key(5, 3, False, "forwarded")):
        status, body = await put_session(client, alice, version, "S1", worse)
        assert (status, body["etag"], body["count"]) == (200, etag1, 1)
    assert (await stored(client, alice, version, "S1"))["session_data"]["ciphertext"] == "first"

    # Better: fewer forwards at the same index.
    status, body = await put_session(client, alice, version, "S1", key(5, 1, False, "fewer"))
    assert body["etag"] != etag1
    etag2 = body["etag"]
    assert (await stored(client, alice, version, "S1"))["session_data"]["ciphertext"] == "fewer"
    # Better: a lower index.
    await put_session(client, alice, version, "S1", key(2, 9, False, "earlier"))
    assert (await stored(client, alice, version, "S1"))["first_message_index"] == 2
    # Verified beats unverified whatever the index; unverified never replaces verified.
    await put_session(client, alice, version, "S1", key(50, 9, True, "verified"))
    await put_session(client, alice, version, "S1", key(0, 0, False, "unverified"))
    got = await stored(client, alice, version, "S1")
    assert (got["is_verified"], got["session_data"]["ciphertext"]) == (True, "verified")

    # Bulk upload of several rooms and sessions; count and etag follow.
    status, body = await client.call(
        "PUT",
        f"{V3}/room_keys/keys?version={version}",
        {
            "rooms": {
                ROOM: {"sessions": {"S2": key(0, 0, False, "two")}},
                "!other:localhost": {"sessions": {"S3": key(0, 0, False, "three")}},
            }
        },
        token=alice.token,
    )
    assert status == 200 and body["count"] == 3 and body["etag"] != etag2
    status, body = await client.call(
        "GET", f"{V3}/room_keys/keys?version={version}", token=alice.token
    )
    assert status == 200
    assert set(body["rooms"]) == {ROOM, "!other:localhost"}
    assert set(body["rooms"][ROOM]["sessions"]) == {"S1", "S2"}
    status, body = await client.call(
        "GET", f"{V3}/room_keys/keys/{ROOM}?version={version}", token=alice.token
    )
    assert set(body["sessions"]) == {"S1", "S2"}
    status, info = await client.call("GET", f"{V3}/room_keys/version", token=alice.token)
    assert info["count"] == 3

    # Delete one session, then a room.
    status, body = await client.call(
        "DELETE", f"{V3}/room_keys/keys/{ROOM}/S2?version={version}", token=alice.token
    )
    assert (status, body["count"]) == (200, 2)
    status, body = await client.call(
        "DELETE", f"{V3}/room_keys/keys/{ROOM}?version={version}", token=alice.token
    )
    assert (status, body["count"]) == (200, 1)
    status, body = await client.call(
        "GET", f"{V3}/room_keys/keys/{ROOM}/S1?version={version}", token=alice.token
    )
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


async def test_bad_backup_input_changes_nothing(client: SpecClient) -> None:
    alice = await register(client, "bb_alice")
    version = await new_version(client, alice)
    await put_session(client, alice, version, "S1", key(1, 0, False, "keep"))
    bad_keys: list[dict[str, Any]] = [
        {"first_message_index": -1, "forwarded_count": 0, "is_verified": False, "session_data": {}},
        {"first_message_index": 0, "forwarded_count": 0, "is_verified": "yes", "session_data": {}},
        {"first_message_index": 0, "forwarded_count": 0, "is_verified": False},
        {"forwarded_count": 0, "is_verified": False, "session_data": {}},
    ]
    for bad in bad_keys:
        status, body = await put_session(client, alice, version, "S1", bad)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), bad
    # A bulk upload with one bad key stores none of it.
    status, body = await client.call(
        "PUT",
        f"{V3}/room_keys/keys?version={version}",
        {"rooms": {ROOM: {"sessions": {"S2": key(0, 0, False, "ok"), "S3": bad_keys[0]}}}},
        token=alice.token,
    )
    assert status == 400
    status, info = await client.call("GET", f"{V3}/room_keys/version", token=alice.token)
    assert info["count"] == 1
    assert (await stored(client, alice, version, "S1"))["session_data"]["ciphertext"] == "keep"
    # Missing or malformed version.
    status, body = await client.call("GET", f"{V3}/room_keys/keys", token=alice.token)
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await client.call("GET", f"{V3}/room_keys/keys?version=abc", token=alice.token)
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = await client.call(
        "POST", f"{V3}/room_keys/version", {"algorithm": ALGORITHM}, token=alice.token
    )
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")


async def test_opaque_auth_and_session_data_of_any_json_type(client: SpecClient) -> None:
    """auth_data and session_data are never read by the server: any JSON value (Sytest
    sends strings, as Synapse accepts) is stored and returned exactly as sent."""
    alice = await register(client, "bo_alice")
    status, body = await client.call(
        "POST",
        f"{V3}/room_keys/version",
        {"algorithm": ALGORITHM, "auth_data": "an opaque string"},
        token=alice.token,
        validate=False,
    )
    assert status == 200, body
    version = str(body["version"])
    status, info = await client.call(
        "GET", f"{V3}/room_keys/version/{version}", token=alice.token, validate=False
    )
    assert (status, info["auth_data"]) == (200, "an opaque string")
    status, body = await client.call(
        "PUT",
        f"{V3}/room_keys/version/{version}",
        {"algorithm": ALGORITHM, "auth_data": ["a", 1]},
        token=alice.token,
        validate=False,
    )
    assert status == 200, body
    status, info = await client.call(
        "GET", f"{V3}/room_keys/version", token=alice.token, validate=False
    )
    assert info["auth_data"] == ["a", 1]
    value = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False}
    status, body = await put_session(
        client, alice, version, "S1", {**value, "session_data": "ciphertext"}
    )
    assert status == 200, body
    status, body = await client.call(
        "GET",
        f"{V3}/room_keys/keys/{ROOM}/S1?version={version}",
        token=alice.token,
        validate=False,
    )
    assert (status, body["session_data"]) == (200, "ciphertext")
