"""A mautrix-python bot against a real `myelin serve` over HTTP.

Alice (raw HTTP through `SpecClient`, every answer checked against the spec's OpenAPI
schema) invites the bot; the bot's sync loop sees the invite and joins. Alice says
`TRIGGER`; the bot reacts, replies in a thread, edits a message twice, redacts another,
tags the room, stores account data and round-trips a file through the media repository.
Alice then checks each result through the Client-Server API, and the bot's sync loop is
stopped with no task left behind.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest

from tests.mautrix.bot import ACCOUNT_DATA_TYPE, MEDIA, TAG, TRIGGER, Bot
from tests.support.client import SpecClient
from tests.support.server import ServerProcess

BOT_PASSWORD = "bot-password"


def q(value: str) -> str:
    return quote(value, safe="")


async def send_text(api: SpecClient, token: str, room_id: str, body: str, txn: str) -> str:
    status, resp = await api.call(
        "PUT",
        f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{txn}",
        {"msgtype": "m.text", "body": body},
        token=token,
    )
    assert status == 200, resp
    event_id: str = resp["event_id"]
    return event_id


async def get_event(api: SpecClient, token: str, room_id: str, event_id: str) -> Any:
    status, event = await api.call(
        "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(event_id)}", token=token
    )
    assert status == 200, event
    return event


async def test_bot_scenario(myelin_server: ServerProcess, caplog: pytest.LogCaptureFixture) -> None:
    url = myelin_server.base_url
    async with SpecClient(url) as api:
        alice = await api.register("alice")
        token, alice_id = alice["access_token"], alice["user_id"]
        registered = await api.register("helperbot", BOT_PASSWORD)
        bot_id = registered["user_id"]

        bot = Bot(url, bot_id, owner=alice_id)
        await bot.login(BOT_PASSWORD)
        assert bot.client.api.token and bot.client.mxid == bot_id
        bot.start()
        try:
            status, created = await api.call(
                "POST",
                "/_matrix/client/v3/createRoom",
                {"preset": "private_chat", "name": "Bot room"},
                token=token,
            )
            assert status == 200, created
            room_id = created["room_id"]
            status, resp = await api.call(
                "POST",
                f"/_matrix/client/v3/rooms/{q(room_id)}/invite",
                {"user_id": bot_id},
                token=token,
            )
            assert status == 200, resp

            # Join on invite, driven by the bot's own sync loop.
            assert await asyncio.wait_for(bot.joined, 20) == room_id
            status, member = await api.call(
                "GET",
                f"/_matrix/client/v3/rooms/{q(room_id)}/state/m.room.member/{q(bot_id)}",
                token=token,
            )
            assert status == 200, member
            assert member["membership"] == "join"

            trigger = await send_text(api, token, room_id, TRIGGER, "t1")
            run = await asyncio.wait_for(bot.done, 30)
        finally:
            await bot.stop()

        # The sync loop is gone and nothing it started is still pending.
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert leftovers == []
        assert bot.client.api.session.closed
        # mautrix logs (and swallows) handler and sync errors: none may have happened.
        mau_errors = [r for r in caplog.records if r.name.startswith("mau") and r.levelno >= 30]
        assert mau_errors == [], [r.getMessage() for r in mau_errors]

        base = f"/_matrix/client/v1/rooms/{q(room_id)}"

        # The reaction is listed by /relations as an m.annotation of the trigger.
        status, rel = await api.call(
            "GET", f"{base}/relations/{q(trigger)}/m.annotation/m.reaction", token=token
        )
        assert status == 200, rel
        [reaction] = rel["chunk"]
        assert reaction["event_id"] == run.reaction
        assert reaction["sender"] == bot_id
        assert reaction["content"]["m.relates_to"] == {
            "rel_type": "m.annotation",
            "event_id": trigger,
            "key": "👍",
        }

        # The thread reply makes the trigger a thread root listed by /threads.
        status, threads = await api.call("GET", f"{base}/threads", token=token)
        assert status == 200, threads
        assert [root["event_id"] for root in threads["chunk"]] == [trigger]
        summary = threads["chunk"][0]["unsigned"]["m.relations"]["m.thread"]
        assert summary["count"] == 1
        assert summary["latest_event"]["event_id"] == run.thread_reply
        assert summary["latest_event"]["content"]["body"] == "a reply in the thread"
        status, in_thread = await api.call(
            "GET", f"{base}/relations/{q(trigger)}/m.thread", token=token
        )
        assert status == 200, in_thread
        assert [e["event_id"] for e in in_thread["chunk"]] == [run.thread_reply]

        # The edited message bundles its latest m.replace; the original content stays.
        assert run.edited is not None and len(run.edits) == 2
        original = await get_event(api, token, room_id, run.edited)
        assert original["content"]["body"] == "first draft"
        latest = original["unsigned"]["m.relations"]["m.replace"]
        assert latest["event_id"] == run.edits[-1]
        assert latest["content"]["m.new_content"] == {"msgtype": "m.text", "body": "final text"}
        assert latest["content"]["body"] == "* final text"
        status, replaced = await api.call(
            "GET", f"{base}/relations/{q(run.edited)}/m.replace", token=token
        )
        assert status == 200, replaced
        assert {e["event_id"] for e in replaced["chunk"]} == set(run.edits)

        # The redacted event has lost its content and points at its redaction.
        assert run.redacted is not None
        redacted = await get_event(api, token, room_id, run.redacted)
        assert redacted["content"] == {}
        assert redacted["unsigned"]["redacted_because"]["event_id"] == run.redaction
        redaction = await get_event(api, token, room_id, run.redaction or "")
        assert redaction["type"] == "m.room.redaction"
        assert redaction["content"].get("redacts", redaction.get("redacts")) == run.redacted
        assert redaction["content"]["reason"] == "oops"

        # Tags and account data read back, with the bot's token (they are private to it).
        bot_token = await login(api, "helperbot")
        user = f"/_matrix/client/v3/user/{q(bot_id)}"
        status, tags = await api.call("GET", f"{user}/rooms/{q(room_id)}/tags", token=bot_token)
        assert status == 200, tags
        assert tags == {"tags": {TAG: {"order": 0.25}}}
        status, data = await api.call(
            "GET", f"{user}/account_data/{ACCOUNT_DATA_TYPE}", token=bot_token
        )
        assert status == 200, data
        assert data == {"mode": "helpful", "level": 3}
        status, room_data = await api.call(
            "GET",
            f"{user}/rooms/{q(room_id)}/account_data/{ACCOUNT_DATA_TYPE}",
            token=bot_token,
        )
        assert status == 200, room_data
        assert room_data == {"pinned": True}
        # Alice may not read the bot's account data.
        status, denied = await api.call(
            "GET", f"{user}/account_data/{ACCOUNT_DATA_TYPE}", token=token
        )
        assert status == 403, denied

        # The media round trip: the bot's download and Alice's download equal the upload.
        assert run.downloaded == MEDIA
        assert run.media_uri is not None and run.media_uri.startswith("mxc://")
        server_name, media_id = run.media_uri.removeprefix("mxc://").split("/", 1)
        status, raw, _ = await api.raw(
            "GET",
            f"/_matrix/client/v1/media/download/{server_name}/{media_id}",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert status == 200
        assert raw == MEDIA


async def login(api: SpecClient, user: str) -> str:
    status, resp = await api.call(
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": BOT_PASSWORD,
        },
    )
    assert status == 200, resp
    access_token: str = resp["access_token"]
    return access_token
