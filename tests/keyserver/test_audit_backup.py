"""The two key-backup operations no other test checked against the spec's OpenAPI
definitions: `PUT /room_keys/keys/{roomId}` (several sessions of one room) and
`DELETE /room_keys/keys` (the whole backup version's keys), with the `count` and `etag`
each answer must carry (key_backup.yaml) and the wrong-version refusal."""

from __future__ import annotations

from typing import Any

import pytest

from tests.keyserver.helpers import V3, register
from tests.keyserver.test_backup_http import key, new_version
from tests.support.client import SpecClient
from tests.support.server import ServerProcess

ROOM_A = "!audit-a:localhost"
ROOM_B = "!audit-b:localhost"


@pytest.fixture
async def client(shared_server: ServerProcess) -> Any:
    async with SpecClient(shared_server.base_url) as c:
        yield c


async def test_room_level_put_and_delete_all(client: SpecClient) -> None:
    dev = await register(client, "ab_alice")
    version = await new_version(client, dev)

    sessions = {"sess1": key(0, 0, True, "a1"), "sess2": key(3, 1, False, "a2")}
    status, body = await client.call(
        "PUT",
        f"{V3}/room_keys/keys/{ROOM_A}?version={version}",
        {"sessions": sessions},
        token=dev.token,
    )
    assert status == 200, body
    assert body["count"] == 2
    first_etag = body["etag"]
    status, body = await client.call(
        "PUT",
        f"{V3}/room_keys/keys/{ROOM_B}?version={version}",
        {"sessions": {"sess3": key(0, 0, False, "b1")}},
        token=dev.token,
    )
    assert (status, body["count"]) == (200, 3), body
    assert body["etag"] != first_etag

    status, body = await client.call(
        "GET", f"{V3}/room_keys/keys/{ROOM_A}?version={version}", token=dev.token
    )
    assert (status, body) == (200, {"sessions": sessions})

    # An older version is refused with the current one named.
    older = version
    version = await new_version(client, dev)
    status, body = await client.call(
        "PUT",
        f"{V3}/room_keys/keys/{ROOM_A}?version={older}",
        {"sessions": sessions},
        token=dev.token,
    )
    assert (status, body["errcode"], body["current_version"]) == (
        403,
        "M_WRONG_ROOM_KEYS_VERSION",
        version,
    )

    # Deleting every key of the (old) version: count 0; the keys are gone.
    status, body = await client.call(
        "DELETE", f"{V3}/room_keys/keys?version={older}", token=dev.token
    )
    assert (status, body["count"]) == (200, 0), body
    status, body = await client.call("GET", f"{V3}/room_keys/keys?version={older}", token=dev.token)
    assert (status, body) == (200, {"rooms": {}})
    status, body = await client.call(
        "DELETE", f"{V3}/room_keys/keys?version=999999", token=dev.token
    )
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
