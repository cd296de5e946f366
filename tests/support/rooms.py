"""Room helpers for HTTP tests that talk to a real server through a `SpecClient`.

Each helper checks that the server accepted the request (the status, with the body in
the failure message), so a test that only sets a room up reads as the set-up it is and
fails at the step that went wrong.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.support.client import SpecClient

V3 = "/_matrix/client/v3"

#: The room a test creates unless it needs another: public, so others can join.
PUBLIC_V10 = {"preset": "public_chat", "room_version": "10"}


async def register(c: SpecClient, name: str) -> str:
    """Registers `name` and returns its access token."""
    return str((await c.register(name))["access_token"])


async def create_room(c: SpecClient, token: str, content: dict[str, Any] | None = None) -> str:
    """Creates a room (public, version 10 unless `content` says otherwise); its ID."""
    status, body = await c.call(
        "POST", f"{V3}/createRoom", PUBLIC_V10 if content is None else content, token=token
    )
    assert status == 200, body
    return str(body["room_id"])


async def join(c: SpecClient, token: str, room: str) -> None:
    status, body = await c.call("POST", f"{V3}/join/{quote(room)}", {}, token=token)
    assert status == 200, body


async def send(
    c: SpecClient,
    token: str,
    room: str,
    txn: str,
    content: dict[str, Any],
    event_type: str = "m.room.message",
) -> str:
    """Sends an event with transaction ID `txn`; its event ID."""
    status, body = await c.call(
        "PUT", f"{V3}/rooms/{room}/send/{event_type}/{txn}", content, token=token
    )
    assert status == 200, body
    return str(body["event_id"])


async def two_in_room(c: SpecClient, prefix: str) -> tuple[str, str, str, str, str]:
    """`{prefix}_alice` creates a public room that `{prefix}_bob` joins: their tokens,
    the room, and their user IDs."""
    alice = await register(c, f"{prefix}_alice")
    bob = await register(c, f"{prefix}_bob")
    room = await create_room(c, alice)
    await join(c, bob, room)
    return alice, bob, room, f"@{prefix}_alice:localhost", f"@{prefix}_bob:localhost"
