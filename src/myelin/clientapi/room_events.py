"""Making local events: the one path by which a client's action becomes a room event.

For an action in an existing room: take the forward extremities and depth from the
roomserver, the auth events from its current state (`auth_types_for_event`), build and
sign the event with the server's key, submit it, and answer only once the roomserver's
input returned (the log append is the commit point). A rejected or soft-failed event is
M_FORBIDDEN with the roomserver's reason. The writer also waits until the sync reader
has applied the event, so a client reads its own writes in `/sync`, `/messages` and the
room queries straight away.

Events of one room are built one at a time (a lock per room), so that concurrent
requests chain their events instead of forking the room's DAG. The lock is held only
until the roomserver has decided the event, not until it is committed: the next event
is built on the decided one (`Roomserver.local_template`) while that one is written,
so the sends to one room pipeline and share group commits. The events are marked fresh
(their IDs are new hashes), which spares the roomserver's duplicate check a database
read, and a send's client transaction travels in the event's log record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from myelin.clientapi.http import MatrixError, forbidden
from myelin.core.auth import auth_types_for_event
from myelin.core.builder import EventBuildError, EventRef, EventSizeError, build_event
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import EventFormat, room_version
from myelin.core.signing import SigningKey
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import (
    ClientTxn,
    InputError,
    InputEvent,
    LatestEvents,
    Status,
    UnknownRoomError,
)
from myelin.syncapi.notifier import Notifier

MAX_PREV_EVENTS = 20


def now_ms() -> int:
    return int(time.time() * 1000)


def build_error(exc: Exception) -> MatrixError:
    if isinstance(exc, EventSizeError):
        return MatrixError(413, "M_TOO_LARGE", str(exc))
    return MatrixError(400, "M_BAD_JSON", str(exc))


class RoomWriter:
    def __init__(
        self, rs: Roomserver, notifier: Notifier, server_name: str, key: SigningKey
    ) -> None:
        self.rs = rs
        self.notifier = notifier
        self.server_name = server_name
        self.key = key
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        #: The current `displayname`/`avatar_url` of a local user, copied into the content
        #: of their joins. Set by whoever stores profiles; without it joins carry none.
        self.member_profile: Callable[[str], Awaitable[dict[str, str]]] | None = None
        #: Called with the target of an invite before it is sent (application services
        #: are asked about unknown users of their namespaces).
        self.on_invite: Callable[[str], Awaitable[None]] | None = None
        #: Called as `(room_id, user_id, through_federation)` after a local user joined
        #: a room of their own accord (a room upgrade's settings follow them there).
        self.on_joined: Callable[[str, str, bool], Awaitable[None]] | None = None
        #: Room operations through other servers (`myelin.federation.remote.RemoteRooms`),
        #: set while federation runs; None: this server works alone.
        self.remote: Any = None

    async def profile_of(self, user_id: str) -> dict[str, str]:
        """The profile fields a join of `user_id` should carry (empty when unknown)."""
        if self.member_profile is None:
            return {}
        return await self.member_profile(user_id)

    async def _lock(self, room_id: str) -> asyncio.Lock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = asyncio.Lock()
        return lock

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        redacts: str | None = None,
        require_joined: bool = True,
        txn: ClientTxn | None = None,
        on_built: Callable[[str], None] | None = None,
        countersign: Callable[[Event], Awaitable[Event]] | None = None,
    ) -> str:
        """Build, sign and commit one event; returns its ID once it is served by sync.

        `txn` is the client transaction the event answers: it is committed with the event
        (in its log record). `on_built` is called with the event ID after the event is
        built and before it is submitted (the client API remembers the transaction's
        event there, so that a retransmission can look the event up whatever happens)."""
        lock = await self._lock(room_id)
        await lock.acquire()
        held = True

        def release() -> None:
            # Once the roomserver has decided the event (before its commit), the room's
            # next event can be built on top of it: sends to one room pipeline.
            nonlocal held
            if held:
                held = False
                lock.release()

        try:
            latest, prevs, auth = await self._template(
                room_id, event_type, sender, state_key, content
            )
            version = room_version(latest.room_version)
            if require_joined:
                member = auth.get(("m.room.member", sender))
                if member is None or member.membership != "join":
                    raise forbidden(f"User {sender} is not joined to room {room_id}")
            auth_refs: list[EventRef] = (
                list(auth.values())
                if version.event_format is EventFormat.V1
                else [e.event_id for e in auth.values()]
            )
            try:
                event = build_event(
                    version,
                    room_id=room_id,
                    sender=sender,
                    type=event_type,
                    content=content,
                    state_key=state_key,
                    prev_events=prevs,
                    auth_events=auth_refs,
                    depth=latest.depth,
                    origin_server_ts=now_ms(),
                    server_name=self.server_name,
                    signing_key=self.key,
                    redacts=redacts,
                )
            except (EventBuildError, EventSizeError) as exc:
                raise build_error(exc) from None
            if countersign is not None:  # e.g. the invitee's server signs a remote invite
                event = await countersign(event)
            if on_built is not None:
                on_built(event.event_id)
            offset = await self.submit([event], txn=txn, decided=release)
        finally:
            release()
        await self.notifier.wait_for_position(offset)
        return event.event_id

    async def _template(
        self,
        room_id: str,
        event_type: str,
        sender: str,
        state_key: str | None,
        content: Mapping[str, Any],
    ) -> tuple[LatestEvents, list[EventRef], dict[StateKey, Event]]:
        """The latest events (room version, depth), prev event references and auth
        state a new event of the room builds on: from the roomserver's model when it
        can answer (events decided but still being committed included), else from its
        queries."""
        known = self.rs.local_template(room_id, [])
        version_id = known[0].room_version if known else None
        if version_id is None:
            try:
                version_id = (await self.rs.latest_events(room_id)).room_version
            except UnknownRoomError:
                raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}") from None
        keys = auth_types_for_event(
            room_version(version_id),
            event_type=event_type,
            sender=sender,
            state_key=state_key,
            content=content,
        )
        template = self.rs.local_template(room_id, keys)
        if template is not None:
            latest, prev_events, auth = template
            prevs: list[EventRef] = list(prev_events[:MAX_PREV_EVENTS])
            if room_version(version_id).event_format is not EventFormat.V1:
                prevs = [e.event_id for e in prev_events[:MAX_PREV_EVENTS]]
            return latest, prevs, auth
        try:
            latest = await self.rs.latest_events(room_id)
        except UnknownRoomError:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id}") from None
        auth = await self.rs.current_state_events(room_id, keys)
        prevs = list(latest.prev_event_ids[:MAX_PREV_EVENTS])
        if room_version(latest.room_version).event_format is EventFormat.V1:
            found = await self.rs.events([str(p) for p in prevs])
            prevs = [found[str(p)] for p in prevs if str(p) in found]
        return latest, prevs, auth

    async def submit(
        self,
        events: list[Event],
        *,
        txn: ClientTxn | None = None,
        decided: Callable[[], None] | None = None,
    ) -> int:
        """Submit events this server just built, in order; M_FORBIDDEN if any is not
        accepted. Returns the log offset of the last one. `txn` goes with the last event;
        `decided` is the roomserver's signal that they are decided (see `input`)."""
        last = len(events) - 1
        results = await self.rs.input(
            [
                InputEvent(e, txn=txn if i == last else None, fresh=True)
                for i, e in enumerate(events)
            ],
            decided=decided,
        )
        offset = 0
        for result in results:
            if isinstance(result, InputError):
                raise MatrixError(400, "M_UNKNOWN", str(result))
            if result.status is not Status.ACCEPTED:
                raise forbidden(result.reason or "Event not allowed")
            offset = max(offset, result.log_offset)
        return offset
