"""`/sync`, `/messages` and `/context`: answers built from the sync projections.

A response is computed against one snapshot read at the reader's position `N`: the
timeline of a joined room is its served events after `since` (the last `limit` of them,
`limited` with a `prev_batch` when more exist), its `state` the current state not in the
timeline (all of it for new rooms and `full_state`, else what changed after `since`).
Long-polling registers with the notifier before looking, so a commit between the look
and the wait still wakes the request.

Fan-out (one message waking every member's long poll) is kept cheap three ways: a poll
from the token of the device's last answer waits without looking while the user has not
been woken since that answer's look began (`_still_quiet`); looks that start together
share read transactions and their common queries (`myelin.syncapi.batch`); and the other
components' parts skip the streams that did not move.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from myelin.clientapi.http import MatrixError, forbidden
from myelin.storage import Database, Txn
from myelin.syncapi import queries, visibility
from myelin.syncapi.batch import ReadBatcher
from myelin.syncapi.filters import EventFilter, SyncFilter
from myelin.syncapi.format import (
    StoredEvent,
    client_event,
    federation_event,
    now_ms,
    stripped_event,
)
from myelin.syncapi.notifier import Notifier
from myelin.syncapi.reader import HISTORY_FLOOR, HISTORY_TOP
from myelin.syncapi.relations import bundled_aggregations
from myelin.syncapi.tokens import StreamToken
from myelin.userapi import accountdata

INVITE_STATE_TYPES = (
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
)
MAX_TIMEOUT_MS = 5 * 60 * 1000
#: Devices whose last answer is remembered (`_Quiet`); past this, all are forgotten at once.
MAX_QUIET = 100_000
_SCAN_CHUNK = 100


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: str
    device_id: str


@dataclass(frozen=True, slots=True)
class _Quiet:
    """A device's last answer: its `next_batch`, filter, and the notifier's wake-up
    number before the look that built it."""

    token: str
    flt: SyncFilter
    mark: int


async def _filtered(
    t: Txn,
    room_id: str,
    after: int,
    upto: int,
    limit: int,
    flt: EventFilter,
    descending: bool,
    visible: Callable[[StoredEvent], bool] | None = None,
) -> tuple[list[StoredEvent], bool]:
    """Up to `limit` events in `(after, upto]` that pass `flt` (and `visible`, the
    history visibility check), and whether more exist."""
    found: list[StoredEvent] = []
    lo, hi = after, upto
    scanning = flt.filters_events or visible is not None
    while True:
        chunk = await queries.events_between(
            t,
            room_id,
            lo,
            hi,
            max(limit + 1, _SCAN_CHUNK) if scanning else limit + 1,
            descending=descending,
        )
        for event in chunk:
            if flt.allows(event.type, event.sender) and (visible is None or visible(event)):
                if len(found) == limit:
                    return found, True
                found.append(event)
        if not scanning or len(chunk) < _SCAN_CHUNK or not chunk:
            return found, False
        if descending:
            hi = chunk[-1].pos - 1
        else:
            lo = chunk[-1].pos


async def _ever_joined(t: Txn, room_id: str, user_id: str, before: int) -> bool:
    """Whether the user was joined to the room at some point before position `before`."""
    rows = await t.fetchall(
        "SELECT pdu FROM sync_events WHERE room_id = ? AND type = 'm.room.member'"
        " AND state_key = ? AND pos < ?",
        room_id,
        user_id,
        before,
    )
    return any(orjson.loads(r[0]).get("content", {}).get("membership") == "join" for r in rows)


async def _own_memberships(t: Txn, room_id: str, user_id: str, upto: int) -> list[tuple[int, str]]:
    """`(pos, membership)` of the user's membership events in the room up to `upto`,
    in stream order."""
    rows = await t.fetchall(
        "SELECT pos, pdu FROM sync_events WHERE room_id = ? AND type = 'm.room.member'"
        " AND state_key = ? AND pos <= ? ORDER BY pos",
        room_id,
        user_id,
        upto,
    )
    return [(int(r[0]), str(orjson.loads(r[1]).get("content", {}).get("membership"))) for r in rows]


def _membership_at(changes: Sequence[tuple[int, str]], pos: int) -> str | None:
    """The membership in force at position `pos`, from `_own_memberships`."""
    found = None
    for at, membership in changes:
        if at > pos:
            break
        found = membership
    return found


async def _world_readable(t: Txn, room_id: str) -> bool:
    setting = await queries.state_event(t, room_id, "m.room.history_visibility", "")
    content = setting.pdu.get("content", {}) if setting is not None else {}
    return bool(content.get("history_visibility") == "world_readable")


async def _heroes(t: Txn, room_id: str, user_id: str) -> list[str] | None:
    """`m.heroes` of a room summary (sync.yaml): for a room with neither a name nor a
    canonical alias, up to 5 other members, joined or invited, in the order they came;
    left and banned ones when there are none. None for a named room."""
    names = await t.fetchall(
        "SELECT e.pdu FROM sync_current_state s JOIN sync_events e ON e.event_id = s.event_id"
        " WHERE s.room_id = ? AND s.state_key = ''"
        " AND s.type IN ('m.room.name', 'm.room.canonical_alias')",
        room_id,
    )
    for (pdu,) in names:
        content = orjson.loads(pdu).get("content", {})
        if content.get("name") or content.get("alias"):
            return None
    for kinds in ("'join', 'invite'", "'leave', 'ban'"):
        rows = await t.fetchall(
            "SELECT user_id FROM sync_memberships WHERE room_id = ? AND user_id <> ?"
            f" AND membership IN ({kinds}) ORDER BY pos LIMIT 5",
            room_id,
            user_id,
        )
        if rows:
            return [str(r[0]) for r in rows]
    return []


class SyncExtension(Protocol):
    """Another component's part of `/sync` (the key server's to-device messages, key
    counts and device lists), with its own stream positions after the room position."""

    async def before_sync(self, user_id: str, device_id: str, since: StreamToken) -> None: ...

    async def sync_part(
        self, t: Txn, user_id: str, device_id: str, since: StreamToken | None, upto_room: int
    ) -> Any: ...


class SyncContributor(Protocol):
    """A component that adds to a built `/sync` response (account data, ephemeral
    events, presence, unread counts) and carries positions after the extension's."""

    async def sync_part(
        self,
        t: Txn,
        user_id: str,
        since: StreamToken | None,
        upto_room: int,
        flt: SyncFilter,
        response: dict[str, Any],
        *,
        thread_counts: bool = False,
    ) -> tuple[tuple[int, ...], bool]: ...


async def visible_after(t: Txn, room_id: str, user_id: str) -> int:
    """The position after which the user may read the room's history, from the room's
    current `m.room.history_visibility` (history-visibility module): everything for
    `shared` and `world_readable`; for `invited` and `joined`, only what came after the
    start of the user's current invite-or-join (join) membership.

    Simplification: the current setting is applied to all history, not the setting in
    force at each event."""
    setting = await queries.state_event(t, room_id, "m.room.history_visibility", "")
    value = setting.pdu.get("content", {}).get("history_visibility") if setting else None
    if value not in ("invited", "joined"):
        return 0
    wanted = ("invite", "join") if value == "invited" else ("join",)
    rows = await t.fetchall(
        "SELECT pos, pdu FROM sync_events WHERE room_id = ? AND type = 'm.room.member'"
        " AND state_key = ? ORDER BY pos DESC",
        room_id,
        user_id,
    )
    start: int | None = None
    for pos, pdu in rows:  # newest first: skip a final leave or ban, then take the streak
        if orjson.loads(pdu).get("content", {}).get("membership") in wanted:
            start = int(pos)
        elif start is not None:
            break
    return start - 1 if start is not None else 2**62


class SyncAPI:
    def __init__(self, db: Database, notifier: Notifier) -> None:
        self.db = db
        self.notifier = notifier
        self.extension: SyncExtension | None = None
        self.contributor: SyncContributor | None = None
        #: Called with (user_id, presence) for each `/sync` (its `set_presence`).
        self.presence_hook: Callable[[str, str], Awaitable[None]] | None = None
        #: Whether users' `m.ignored_user_list` is read (set where the user API's account
        #: data shares the database).
        self.reads_ignored = False
        #: Looks that start together share read transactions and their queries.
        self._looks: ReadBatcher[tuple[dict[str, Any], bool]] = ReadBatcher(db)
        #: (user, device) -> its last answer's token, to skip the next look when quiet.
        self._quiet: dict[tuple[str, str], _Quiet] = {}
        #: (room, user) -> (the position it was read at, the user's history in the room),
        #: reused while no setting or membership of the user arrived since (`_history`).
        self._histories: dict[tuple[str, str], tuple[int, visibility.RoomHistory]] = {}
        #: user -> (the account-data stream position it was read at, their ignored users).
        self._ignoring: dict[str, tuple[int, frozenset[str]]] = {}
        #: (user, device) -> room -> member -> the membership event ID the device was
        #: last sent, for lazy-loading's redundant members (`_lazy_state`).
        self._sent_members: dict[tuple[str, str], dict[str, dict[str, str]]] = {}

    # ------------------------------------------------------------------ /sync

    async def sync(
        self,
        who: Requester,
        since: StreamToken | None,
        flt: SyncFilter,
        *,
        timeout_ms: int = 0,
        full_state: bool = False,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        if since is not None and self.extension is not None:
            await self.extension.before_sync(who.user_id, who.device_id, since)
        device = (who.user_id, who.device_id)
        quiet = since is not None and not full_state and self._still_quiet(device, since, flt)
        while True:
            with self.notifier.listen(who.user_id) as woken:
                if quiet and not self.notifier.closed:
                    # Nothing for this user since the answer that gave this token: looking
                    # now would find nothing, so wait first, then look.
                    quiet = False
                    with contextlib.suppress(TimeoutError):
                        remaining = max(deadline - time.monotonic(), 0)
                        await asyncio.wait_for(asyncio.shield(woken), remaining)
                    continue
                mark = self.notifier.wakes
                response, changed = await self._snapshot(who, since, flt, full_state)
                # To-device messages come in batches: more may wait behind a full one.
                if not full_state and not response.get("to_device", {}).get("events"):
                    self._note_quiet(device, response["next_batch"], flt, mark)
                remaining = deadline - time.monotonic()
                if changed or since is None or full_state or remaining <= 0 or self.notifier.closed:
                    return response
                try:
                    await asyncio.wait_for(asyncio.shield(woken), remaining)
                except TimeoutError:
                    return response

    def _note_quiet(self, device: tuple[str, str], token: str, flt: SyncFilter, mark: int) -> None:
        """Remember that `token` came from a look begun after wake-up `mark`: a look from
        it finds nothing new until the user is woken again."""
        if len(self._quiet) >= MAX_QUIET:
            self._quiet.clear()
        self._quiet[device] = _Quiet(token, flt, mark)

    def _still_quiet(self, device: tuple[str, str], since: StreamToken, flt: SyncFilter) -> bool:
        """Whether a look from `since` is known to find nothing: `since` is the token of the
        device's last answer, with the same filter, and the user was not woken since the
        look behind it began (every write a `/sync` shows wakes the users it concerns)."""
        noted = self._quiet.get(device)
        return (
            noted is not None
            and noted.token == since.encode()
            and noted.flt == flt
            and not self.notifier.woken_since(device[0], noted.mark)
        )

    async def _snapshot(
        self, who: Requester, since: StreamToken | None, flt: SyncFilter, full_state: bool
    ) -> tuple[dict[str, Any], bool]:
        upto = self.notifier.position

        async def q(t: Txn) -> tuple[dict[str, Any], bool]:
            return await self._build(t, who, since, upto, flt, full_state)

        return await self._looks.read(q)

    async def _build(
        self,
        t: Txn,
        who: Requester,
        since: StreamToken | None,
        upto: int,
        flt: SyncFilter,
        full_state: bool,
    ) -> tuple[dict[str, Any], bool]:
        # Not below 0: what lies there (state of joined rooms, backfilled history) is
        # never a new timeline event.
        after = max(since.room, 0) if since is not None else 0
        after = min(after, upto)
        join: dict[str, Any] = {}
        invite: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        now = now_ms()
        for room_id, membership, pos in await queries.memberships(t, who.user_id):
            if not flt.allows_room(room_id) or pos > upto:
                # A membership newer than the position shows up on the next sync.
                continue
            if membership == "join":
                fresh = since is not None and pos > after
                newly = since is None or fresh or full_state
                room = await self._room(t, who, room_id, after, upto, flt, newly, now, fresh)
                if room is not None:
                    join[room_id] = room
            elif membership == "invite":
                if (since is None or pos > after) and not await self._invited_by_ignored(
                    t, who.user_id, room_id
                ):
                    invite[room_id] = {"invite_state": {"events": await self._invite(t, room_id)}}
            elif membership == "knock":
                if since is None or pos > after:
                    knock[room_id] = {"knock_state": {"events": await self._invite(t, room_id)}}
            elif membership in ("leave", "ban") and (
                (since is not None and pos > after) or (since is None and flt.include_leave)
            ):
                changes = await _own_memberships(t, room_id, who.user_id, pos)
                if any(m == "join" for _, m in changes):
                    # Joined as of `since`: what came since, up to the leave (the client
                    # holds the rest); joined since then: the history up to the leave.
                    held = since is not None and _membership_at(changes, after) == "join"
                    room = await self._room(
                        t, who, room_id, after, min(pos, upto), flt, not held, now, not held
                    )
                else:  # never joined: only their own membership change
                    room = await self._room(t, who, room_id, pos - 1, pos, flt, False, now)
                if room is not None:
                    room.pop("ephemeral", None)
                    room.pop("unread_notifications", None)
                    room.pop("summary", None)
                    leave[room_id] = room
        others: tuple[int, ...] = ()
        extra: dict[str, Any] = {}
        news = False
        if self.extension is not None:
            part = await self.extension.sync_part(t, who.user_id, who.device_id, since, upto)
            others, extra, news = part.positions.as_others(), part.fields, part.news
        response: dict[str, Any] = {
            "next_batch": StreamToken(upto, others).encode(),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": {"events": []},
            "presence": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            **extra,
        }
        if self.contributor is not None:
            mine, more = await self.contributor.sync_part(
                t,
                who.user_id,
                since,
                upto,
                flt,
                response,
                thread_counts=flt.timeline.unread_thread_notifications,
            )
            padded = (*others, 0, 0)[:2]
            response["next_batch"] = StreamToken(upto, (*padded, *mine)).encode()
            news = news or more
        return response, bool(join or invite or leave or knock or news)

    async def _room(
        self,
        t: Txn,
        who: Requester,
        room_id: str,
        after: int,
        upto: int,
        flt: SyncFilter,
        newly: bool,
        now: int,
        fresh: bool = False,
    ) -> dict[str, Any] | None:
        """One room of a response: `newly` (a room new to this sync, or `full_state`)
        shows the latest history and the whole state; otherwise what came after `after`.
        `fresh`: the room is new to an incremental sync (joined since `since`)."""
        limit = flt.timeline_limit
        history = await self._history(t, room_id, who.user_id, upto)
        vis = history.checker(await self._ignored(t, who.user_id))
        span = vis.span(upto)
        start = 0 if newly else after
        start = max(start, span[0]) if span else start
        state_after = 0 if newly else after
        state_rows = await queries.current_state(t, room_id, changed_after=state_after, upto=upto)
        # The room's current state is the user's to see (it is in `state` anyway), so its
        # events stay in the timeline even when sent while history was hidden from them:
        # a client building its member list from the timeline still sees who is in the
        # room (Synapse does the same; the spec's rules reveal nothing more by it).
        current = {e.event_id for e in state_rows}

        def visible(event: StoredEvent) -> bool:
            return event.event_id in current or vis.allows(event)

        timeline, limited = await _filtered(
            t, room_id, start, upto, limit, flt.timeline, True, visible
        )
        timeline.reverse()
        timeline = await visibility.erase_for(t, vis, timeline)
        if fresh and not (timeline and timeline[0].type == "m.room.create"):
            # New to an incremental sync: the client holds none of the history before
            # this timeline, so it is told there is a gap to page back through, as
            # Synapse does (a timeline from the room's creation has none).
            limited = True
        in_timeline = {e.event_id for e in timeline}
        state = [
            e
            for e in state_rows
            if e.event_id not in in_timeline and flt.state.allows(e.type, e.sender)
        ]
        if flt.state.lazy_load_members:
            state = await self._lazy_state(t, who, room_id, upto, newly, timeline, state, flt)
        if not newly and not timeline and not state:
            return None
        first = timeline[0].pos if timeline else upto + 1
        events = [*timeline, *state]
        redactions = await queries.redaction_events(t, events)
        replaced = await queries.replaced_events(t, events)
        own = [e.event_id for e in timeline if e.sender == who.user_id]
        txns = await queries.txn_ids(t, who.user_id, who.device_id, own)
        summary = await self._summary(t, room_id, who.user_id)
        plain = functools.partial(client_event, redactions=redactions, now=now)
        bundles = await bundled_aggregations(t, timeline, who.user_id, plain)
        fmt = functools.partial(
            client_event,
            redactions=redactions,
            replaced=replaced,
            relations=bundles,
            with_room_id=False,
            now=now,
        )
        served = [fmt(e, txn_ids=txns) for e in timeline]
        served_state = [fmt(e) for e in state]
        if flt.event_format == "federation":
            served = [federation_event(e, c) for e, c in zip(timeline, served, strict=True)]
            served_state = [
                federation_event(e, c) for e, c in zip(state, served_state, strict=True)
            ]
        return {
            "timeline": {
                "events": served,
                "limited": limited,
                # A whole history (a room new to this sync, not limited) pages back from
                # the sync's position, as on Synapse: sytest expects the timeline's
                # events again there. Otherwise from just before the timeline.
                "prev_batch": StreamToken(upto if newly and not limited else first - 1).encode(),
            },
            "state": {"events": served_state},
            "ephemeral": {"events": []},
            "account_data": {"events": []},
            "unread_notifications": {"highlight_count": 0, "notification_count": 0},
            "summary": summary,
        }

    async def _lazy_state(
        self,
        t: Txn,
        who: Requester,
        room_id: str,
        upto: int,
        newly: bool,
        timeline: Sequence[StoredEvent],
        state: list[StoredEvent],
        flt: SyncFilter,
    ) -> list[StoredEvent]:
        """`state` with lazy-loaded members (client-server-api "Lazy-loading room
        members"). A room new to the sync gets the memberships of the timeline's senders
        and the user's own, of all the members. An incremental sync keeps the state
        changes since `since` (members who joined or left in a gap included: clients
        keep their member lists from them) and adds the memberships of the timeline's
        senders, except those this device was already sent (redundant ones, unless the
        filter's `include_redundant_members` asks for them). What each device was sent is
        remembered in memory: forgetting it only makes the server send members again,
        which the spec allows."""
        senders = {e.sender for e in timeline}
        redundant_too = flt.state.include_redundant_members
        device = (who.user_id, who.device_id)
        if newly:
            senders.add(who.user_id)
            state = [e for e in state if e.type != "m.room.member" or e.state_key in senders]
            sent: dict[str, str] = {}
        else:
            sent = self._sent_members.get(device, {}).get(room_id, {})
            known = {e.state_key for e in [*timeline, *state] if e.type == "m.room.member"}
            # A sender whose membership this device was sent and which has not changed
            # since (a change would be in `state`) needs no read: the common case of a
            # woken long-poll in a busy room.
            wanted = sorted(
                s for s in senders if s not in known and (redundant_too or s not in sent)
            )
            for e in await queries.member_events(t, room_id, wanted):
                if (
                    e.pos <= upto
                    and flt.state.allows(e.type, e.sender)
                    and (redundant_too or sent.get(e.state_key or "") != e.event_id)
                ):
                    state.append(e)
        if not redundant_too:
            updates = {
                e.state_key: e.event_id
                for e in (*state, *timeline)
                if e.type == "m.room.member" and e.state_key is not None
            }
            if newly or updates:
                rooms = self._sent_members.get(device)
                if rooms is None:
                    if len(self._sent_members) >= MAX_QUIET:
                        self._sent_members.clear()
                    rooms = self._sent_members[device] = {}
                if newly:
                    rooms[room_id] = updates
                else:
                    rooms.setdefault(room_id, {}).update(updates)
        return state

    async def _summary(self, t: Txn, room_id: str, user_id: str) -> dict[str, Any]:
        rows = await t.fetchall(
            "SELECT membership, count(*) FROM sync_memberships WHERE room_id = ?"
            " AND membership IN ('join', 'invite') GROUP BY membership",
            room_id,
        )
        counts = {r[0]: int(r[1]) for r in rows}
        summary: dict[str, Any] = {
            "m.joined_member_count": counts.get("join", 0),
            "m.invited_member_count": counts.get("invite", 0),
        }
        heroes = await _heroes(t, room_id, user_id)
        if heroes is not None:
            summary["m.heroes"] = heroes
        return summary

    async def _invite(self, t: Txn, room_id: str) -> list[dict[str, Any]]:
        state = await queries.current_state(t, room_id)
        for e in state:
            unsigned = e.pdu.get("unsigned")
            given = unsigned.get("invite_room_state") if isinstance(unsigned, dict) else None
            if e.type == "m.room.member" and isinstance(given, list):
                # An invite over federation to a room this server is not in: the
                # inviting server's stripped state is all there is.
                return [g for g in given if isinstance(g, dict)] + [stripped_event(e)]
        wanted = [e for e in state if e.type in INVITE_STATE_TYPES and e.state_key == ""]
        pending = [
            e
            for e in state
            if e.type == "m.room.member"
            and e.pdu.get("content", {}).get("membership") in ("invite", "knock")
        ]
        # The inviters' own member events too, as an invite over federation carries them
        # (clients show who invited; Sytest's third-party invite tests look for it).
        inviters = {e.sender for e in pending} - {e.state_key for e in pending}
        wanted += [e for e in state if e.type == "m.room.member" and e.state_key in inviters]
        return [stripped_event(e) for e in wanted + pending]

    # ------------------------------------------------------------------ history access

    async def visible_upto(self, t: Txn, user_id: str, room_id: str) -> int:
        """The last position of `room_id` the user may read: all of it while joined, up to
        their leave after leaving; M_FORBIDDEN if they were never in the room."""
        found = await queries.membership(t, user_id, room_id)
        if found is not None and found[0] == "join":
            return self.notifier.position
        if await _world_readable(t, room_id):  # room previews: anyone may read it all
            return self.notifier.position
        if found is None or found[0] not in ("leave", "ban"):
            raise forbidden(f"User {user_id} is not in room {room_id}")
        pos = found[1]
        if not await _ever_joined(t, room_id, user_id, pos):
            # Left or banned without ever joining (e.g. a rejected invite): no history.
            raise forbidden(f"User {user_id} is not in room {room_id}")
        return pos

    async def reads_current_state(self, user_id: str, room_id: str) -> bool:
        """Whether the user may read the room as it is now: joined, or the room's history
        is `world_readable` (room previews)."""

        async def q(t: Txn) -> bool:
            found = await queries.membership(t, user_id, room_id)
            return (found is not None and found[0] == "join") or await _world_readable(t, room_id)

        return await self.db.read(q)

    async def _invited_by_ignored(self, t: Txn, user_id: str, room_id: str) -> bool:
        """Whether the user's invite to the room comes from someone they ignore (such
        invites are not shown: client-server-api "Ignoring Users")."""
        ignored = await self._ignored(t, user_id)
        if not ignored:
            return False
        invite = await queries.state_event(t, room_id, "m.room.member", user_id)
        return invite is not None and invite.sender in ignored

    async def _ignored(self, t: Txn, user_id: str) -> frozenset[str]:
        """The user's ignored users; kept per user with the account-data stream position
        it was read at (every account-data write moves it), so a snapshot at the same
        position reuses it without a query (the position is one shared read)."""
        if not self.reads_ignored:
            return frozenset()
        at = await accountdata.latest_position(t)
        kept = self._ignoring.get(user_id)
        if kept is not None and kept[0] == at:
            return kept[1]
        found = await visibility.ignored_users(t, user_id)
        if len(self._ignoring) >= MAX_QUIET:
            self._ignoring.clear()
        self._ignoring[user_id] = (at, found)
        return found

    async def _history(
        self, t: Txn, room_id: str, user_id: str, upto: int
    ) -> visibility.RoomHistory:
        """The user's history in the room (`visibility.load_history`) in a snapshot that
        holds every event up to `upto`. Kept with the position it was read at and reused
        while the room's state events since then (one shared read for all the members
        woken together) include no history-visibility setting and no membership of the
        user."""
        key = (room_id, user_id)
        kept = self._histories.get(key)
        if kept is not None and kept[0] <= upto:
            since = await queries.state_keys_between(t, room_id, kept[0], upto)
            if since is not None and not (
                (visibility.HISTORY_TYPE, "") in since or (visibility.MEMBER_TYPE, user_id) in since
            ):
                return kept[1]
        history = await visibility.load_history(t, room_id, user_id)
        if kept is None or kept[0] <= upto:
            if len(self._histories) >= MAX_QUIET:
                self._histories.clear()
            self._histories[key] = (upto, history)
        return history

    async def history_span(
        self, t: Txn, user_id: str, room_id: str
    ) -> tuple[int, int, visibility.VisibilityCheck]:
        """`(after, last, check)`: the user may read events of `(after, last]` that pass
        `check.allows` (history visibility at each event); M_FORBIDDEN when no event of
        the room can be visible to them."""
        vis = await visibility.load(t, room_id, user_id, await self._ignored(t, user_id))
        span = vis.span(self.notifier.position)
        if span is None:
            raise forbidden(f"User {user_id} may not read the history of room {room_id}")
        return span[0], span[1], vis

    #: Fetches a room's earlier history from other servers (federation sets it):
    #: `room_id` -> whether some was stored, and is served now.
    backfill: Callable[[str], Awaitable[bool]] | None = None

    async def messages(
        self,
        who: Requester,
        room_id: str,
        *,
        from_token: StreamToken | None,
        to_token: StreamToken | None,
        backwards: bool,
        limit: int,
        flt: EventFilter,
    ) -> dict[str, Any]:
        """A page of the room's history (`/messages`). Backwards, a page that reaches the
        start of what this server has asks other servers for what came before
        (`backfill`), and is read again once that is stored.

        Positions in two ranges are read: the timeline (above 0, in log order) and,
        below it, history backfilled from other servers (`reader.HISTORY_FLOOR`, in
        topological order), which comes before every timeline event. Between the two
        lies state of rooms joined over federation, never served here. History is read
        only by users who may read the room from its start, while its history is
        `shared` or `world_readable`: the setting at a backfilled event is known once
        the setting's event is backfilled too, and until then the current one stands
        for it (under `invited` or `joined`, no user of this server was there before
        this server joined, so none may read what came before)."""

        async def q(t: Txn) -> tuple[dict[str, Any], bool]:
            floor, upto, vis = await self.history_span(t, who.user_id, room_id)
            setting = await queries.state_event(t, room_id, visibility.HISTORY_TYPE, "")
            current = visibility.normalise(
                setting.pdu.get("content", {}).get("history_visibility") if setting else None
            )
            history = floor <= 0 and current in ("shared", "world_readable")
            bottom = HISTORY_FLOOR - 1 if history else max(floor, 0)
            if backwards:
                hi = min(from_token.room if from_token is not None else upto, upto)
                lo = max(to_token.room if to_token is not None else bottom, bottom)
                spans = [(max(lo, 0), hi), (lo, min(hi, HISTORY_TOP - 1))]
                start = from_token or StreamToken(hi)
            else:
                lo = max(from_token.room if from_token is not None else bottom, bottom)
                hi = min(to_token.room, upto) if to_token is not None else upto
                spans = [(lo, min(hi, HISTORY_TOP - 1)), (max(lo, 0), hi)]
                start = from_token or StreamToken(lo)
            chunk: list[StoredEvent] = []
            for after, last in spans:
                if after >= last or len(chunk) >= limit:
                    continue
                part, _ = await _filtered(
                    t, room_id, after, last, limit - len(chunk), flt, backwards, vis.allows
                )
                chunk.extend(part)
            # Also when the room's create event is here: history may have gaps after it (an
            # event whose prev events never arrived), which other servers may fill.
            at_start = backwards and history and lo == bottom and len(chunk) < limit
            chunk = await visibility.erase_for(t, vis, chunk)
            body: dict[str, Any] = {
                "start": start.encode(),
                "chunk": await self._format(t, who, chunk),
            }
            # `end` whenever the chunk has events, as Synapse does: a client learns it
            # reached the end from the next, empty, page (which has no `end`).
            if chunk:
                end = chunk[-1].pos - 1 if backwards else chunk[-1].pos
                body["end"] = StreamToken(end).encode()
            if flt.lazy_load_members and chunk:
                senders = sorted({e.sender for e in chunk})
                members = await queries.member_events(t, room_id, senders)
                body["state"] = await self._format(t, who, members)
            return body, at_start

        body, at_start = await self.db.read(q)
        if at_start and self.backfill is not None and await self.backfill(room_id):
            body, _ = await self.db.read(q)
        return body

    async def _format(
        self, t: Txn, who: Requester, events: Sequence[StoredEvent]
    ) -> list[dict[str, Any]]:
        redactions = await queries.redaction_events(t, events)
        replaced = await queries.replaced_events(t, events)
        own = [e.event_id for e in events if e.sender == who.user_id]
        txns = await queries.txn_ids(t, who.user_id, who.device_id, own)
        now = now_ms()
        plain = functools.partial(client_event, redactions=redactions, now=now)
        bundles = await bundled_aggregations(t, events, who.user_id, plain)
        return [
            client_event(
                e,
                redactions=redactions,
                txn_ids=txns,
                replaced=replaced,
                relations=bundles,
                now=now,
            )
            for e in events
        ]

    async def context(
        self, who: Requester, room_id: str, event_id: str, limit: int, flt: EventFilter
    ) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            floor, upto, vis = await self.history_span(t, who.user_id, room_id)
            event = await queries.event_pos(t, event_id)
            if event is None or event.room_id != room_id or not vis.allows(event):
                raise MatrixError(404, "M_NOT_FOUND", "Event not found")
            half = limit // 2
            before, _ = await _filtered(
                t, room_id, floor, event.pos - 1, half, flt, True, vis.allows
            )
            after, _ = await _filtered(
                t, room_id, event.pos, upto, limit - half, flt, False, vis.allows
            )
            state = await queries.current_state(t, room_id, upto=upto)
            if flt.lazy_load_members:
                senders = {e.sender for e in [*before, event, *after]}
                state = [e for e in state if e.type != "m.room.member" or e.state_key in senders]
            start = (before[-1].pos - 1) if before else event.pos - 1
            end = after[-1].pos if after else event.pos
            erased = visibility.erase_for
            return {
                "event": (await self._format(t, who, await erased(t, vis, [event])))[0],
                "events_before": await self._format(t, who, await erased(t, vis, before)),
                "events_after": await self._format(t, who, await erased(t, vis, after)),
                "state": await self._format(t, who, state),
                "start": StreamToken(start).encode(),
                "end": StreamToken(end).encode(),
            }

        return await self.db.read(q)

    # ------------------------------------------------------------------ room reads

    async def event(self, who: Requester, room_id: str, event_id: str) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            # Not 403 even for a stranger: whether the event exists is not theirs to know.
            ignored = await self._ignored(t, who.user_id)
            vis = await visibility.load(t, room_id, who.user_id, ignored)
            event = await queries.event_pos(t, event_id)
            if event is None or event.room_id != room_id or not vis.allows(event):
                raise MatrixError(404, "M_NOT_FOUND", "Event not found")
            return (await self._format(t, who, await visibility.erase_for(t, vis, [event])))[0]

        return await self.db.read(q)

    async def _state_upto(self, t: Txn, user_id: str, room_id: str) -> int:
        """`visible_upto` for reads of room state: a banned user reads none (as on
        Synapse, which Sytest's ban tests follow), one who left the state as they left."""
        found = await queries.membership(t, user_id, room_id)
        if found is not None and found[0] == "ban" and not await _world_readable(t, room_id):
            raise forbidden(f"User {user_id} is banned from room {room_id}")
        return await self.visible_upto(t, user_id, room_id)

    async def state(self, who: Requester, room_id: str) -> list[dict[str, Any]]:
        async def q(t: Txn) -> list[dict[str, Any]]:
            upto = await self._state_upto(t, who.user_id, room_id)
            if upto < self.notifier.position:  # departed: the state as they left it
                return await self._format(t, who, await queries.state_at(t, room_id, upto))
            return await self._format(t, who, await queries.current_state(t, room_id, upto=upto))

        return await self.db.read(q)

    async def state_content(
        self, who: Requester, room_id: str, event_type: str, state_key: str
    ) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            upto = await self._state_upto(t, who.user_id, room_id)
            found = await queries.state_event(t, room_id, event_type, state_key)
            if found is not None and found.pos > upto:  # departed: the state as they left it
                at = await queries.state_at(t, room_id, upto)
                key = (event_type, state_key)
                found = next((e for e in at if (e.type, e.state_key) == key), None)
            if found is None or found.pos > upto:
                raise MatrixError(404, "M_NOT_FOUND", "Event not found")
            return (await self._format(t, who, [found]))[0]

        return await self.db.read(q)

    async def members(
        self,
        who: Requester,
        room_id: str,
        membership: str | None,
        not_membership: str | None,
    ) -> list[dict[str, Any]]:
        async def q(t: Txn) -> list[dict[str, Any]]:
            upto = await self.visible_upto(t, who.user_id, room_id)
            state = await queries.current_state(t, room_id, upto=upto)
            members = []
            for e in state:
                if e.type != "m.room.member":
                    continue
                m = e.pdu.get("content", {}).get("membership")
                if membership is not None and m != membership:
                    continue
                if not_membership is not None and m == not_membership:
                    continue
                members.append(e)
            return await self._format(t, who, members)

        return await self.db.read(q)

    async def joined_members(self, who: Requester, room_id: str) -> dict[str, Any]:
        async def q(t: Txn) -> dict[str, Any]:
            found = await queries.membership(t, who.user_id, room_id)
            if found is None or found[0] != "join":
                raise forbidden(f"User {who.user_id} is not joined to room {room_id}")
            rows = await t.fetchall(
                "SELECT m.user_id, e.pdu FROM sync_memberships m"
                " JOIN sync_events e ON e.event_id = m.event_id"
                " WHERE m.room_id = ? AND m.membership = 'join'",
                room_id,
            )
            joined: dict[str, Any] = {}
            for user_id, pdu in rows:
                content = orjson.loads(pdu).get("content", {})
                entry: dict[str, Any] = {}
                for key in ("displayname", "avatar_url"):
                    if isinstance(content.get(key), str):
                        entry["display_name" if key == "displayname" else key] = content[key]
                joined[user_id] = entry
            return {"joined": joined}

        return await self.db.read(q)

    async def joined_rooms(self, user_id: str) -> list[str]:
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT room_id FROM sync_memberships WHERE user_id = ? AND membership = 'join'"
                " ORDER BY room_id",
                user_id,
            )
        )
        return [r[0] for r in rows]

    async def membership(self, user_id: str, room_id: str) -> tuple[str, int] | None:
        return await self.db.read(lambda t: queries.membership(t, user_id, room_id))

    # ------------------------------------------------------------------ transactions

    async def lookup_txn(self, who: Requester, scope: str, txn_id: str) -> str | None:
        value = await self.db.read(
            lambda t: t.fetchval(
                "SELECT event_id FROM sync_txns WHERE user_id = ? AND device_id = ?"
                " AND scope = ? AND txn_id = ?",
                who.user_id,
                who.device_id,
                scope,
                txn_id,
            )
        )
        return None if value is None else str(value)

    async def record_txn(self, who: Requester, scope: str, txn_id: str, event_id: str) -> None:
        await self.db.run(
            lambda t: t.execute(
                "INSERT INTO sync_txns (user_id, device_id, scope, txn_id, event_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                who.user_id,
                who.device_id,
                scope,
                txn_id,
                event_id,
            )
        )

    async def delete_txn(self, who: Requester, scope: str, txn_id: str) -> None:
        await self.db.run(
            lambda t: t.execute(
                "DELETE FROM sync_txns WHERE user_id = ? AND device_id = ? AND scope = ?"
                " AND txn_id = ?",
                who.user_id,
                who.device_id,
                scope,
                txn_id,
            )
        )

    async def forget(self, user_id: str, room_id: str) -> None:
        async def txn(t: Txn) -> None:
            found = await queries.membership(t, user_id, room_id)
            if found is None:
                raise MatrixError(404, "M_NOT_FOUND", "You were never in this room")
            if found[0] == "join":
                raise MatrixError(400, "M_UNKNOWN", "You must leave the room before forgetting it")
            await t.execute(
                "INSERT INTO sync_forgotten (user_id, room_id, pos) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                user_id,
                room_id,
                found[1],
            )

        await self.db.run(txn)
