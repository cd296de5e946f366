"""A small mautrix-python bot, the way a bridge or bot author would write one.

It joins every room it is invited to and, when the user it serves says `TRIGGER`, walks
through the common bot actions: react, reply in a thread, edit a message twice, redact a
message, tag the room, store account data and round-trip a file through the media
repository. Everything it did is recorded in `BotRun` so the test can check the server's
view of the same events from another user's side.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TypeVar

from mautrix.client import Client
from mautrix.types import (
    JSON,
    EventID,
    EventType,
    Membership,
    MemberStateEventContent,
    MessageEvent,
    MessageType,
    RelatesTo,
    RelationType,
    RoomID,
    RoomTagInfo,
    StateEvent,
    TextMessageEventContent,
    UserID,
)

TRIGGER = "hello bot"
TAG = "u.bots"
ACCOUNT_DATA_TYPE = "org.example.bot.settings"
MEDIA = bytes(range(256)) * 40 + b"\x00end"

T = TypeVar("T")


def settle(future: asyncio.Future[T], outcome: T | Exception) -> None:
    """Resolve `future` unless the test already gave up on it (a timed-out wait cancels it)."""
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


@dataclass
class BotRun:
    """What the bot did, as event IDs and values the server gave back."""

    reaction: EventID | None = None
    thread_reply: EventID | None = None
    edited: EventID | None = None
    edits: list[EventID] = field(default_factory=list)
    redacted: EventID | None = None
    redaction: EventID | None = None
    media_uri: str | None = None
    downloaded: bytes | None = None


class Bot:
    """Wraps a logged-in mautrix `Client` and its sync loop."""

    def __init__(self, base_url: str, user_id: str, owner: str) -> None:
        self.client = Client(UserID(user_id), base_url=base_url)
        self.owner = owner
        self.run = BotRun()
        loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[RoomID] = loop.create_future()
        self.done: asyncio.Future[BotRun] = loop.create_future()
        self._sync: asyncio.Future[None] | None = None
        self._joining: set[RoomID] = set()
        self._acting = False
        self.client.add_event_handler(EventType.ROOM_MEMBER, self._on_member)
        self.client.add_event_handler(EventType.ROOM_MESSAGE, self._on_message)

    async def login(self, password: str) -> None:
        await self.client.login(identifier=self.client.mxid, password=password)

    def start(self) -> None:
        self._sync = self.client.start(None)

    async def stop(self) -> None:
        """Cancel the long-poll and wait for the sync task to finish, then close HTTP."""
        task = self._sync
        self.client.stop()
        if task is not None:
            await task
        await self.client.api.session.close()

    async def _on_member(self, evt: StateEvent) -> None:
        content = evt.content
        if evt.state_key != self.client.mxid or not isinstance(content, MemberStateEventContent):
            return
        # One sync can carry the invite more than once (invite_state and a timeline), and
        # mautrix runs handlers concurrently: claim the room before the first await.
        if content.membership != Membership.INVITE or evt.room_id in self._joining:
            return
        self._joining.add(evt.room_id)
        try:
            room_id = await self.client.join_room(evt.room_id)
        except Exception as exc:  # handed to the test instead of mautrix's error log
            settle(self.joined, exc)
        else:
            settle(self.joined, room_id)

    async def _on_message(self, evt: MessageEvent) -> None:
        if self._acting or evt.sender != self.owner:
            return
        if getattr(evt.content, "body", None) != TRIGGER:
            return
        self._acting = True
        try:
            await self._act(evt.room_id, evt.event_id)
        except Exception as exc:
            settle(self.done, exc)
        else:
            settle(self.done, self.run)

    async def _act(self, room_id: RoomID, trigger: EventID) -> None:
        client, run = self.client, self.run
        run.reaction = await client.react(room_id, trigger, "👍")
        run.thread_reply = await client.send_text(
            room_id,
            "a reply in the thread",
            relates_to=RelatesTo(rel_type=RelationType.THREAD, event_id=trigger),
        )

        run.edited = await client.send_text(room_id, "first draft")
        for text in ("second draft", "final text"):
            # mautrix builds `m.new_content` and the "* " fallback body when serialising.
            edit = TextMessageEventContent(msgtype=MessageType.TEXT, body=text)
            edit.set_edit(run.edited)
            run.edits.append(await client.send_message_event(room_id, EventType.ROOM_MESSAGE, edit))

        run.redacted = await client.send_text(room_id, "a secret said by mistake")
        run.redaction = await client.redact(room_id, run.redacted, reason="oops")

        await client.set_room_tag(room_id, TAG, RoomTagInfo(order=0.25))
        settings = {"mode": JSON("helpful"), "level": JSON(3)}
        await client.set_account_data(ACCOUNT_DATA_TYPE, settings)
        pinned = {"pinned": JSON(True)}
        await client.set_account_data(ACCOUNT_DATA_TYPE, pinned, room_id=room_id)

        uri = await client.upload_media(MEDIA, mime_type="application/octet-stream")
        run.media_uri = str(uri)
        run.downloaded = await client.download_media(uri)
