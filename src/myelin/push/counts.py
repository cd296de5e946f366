"""Unread notification and highlight counts, per room and per thread, and the
`/notifications` list, computed from the served timeline and the user's push rules.

The counts are evaluated when read, inside the `/sync` snapshot: the events of the room
after the user's read point (their latest read receipt, or their own latest event, which
implies they read what came before) are run through the user's effective push rules.
A read receipt therefore resets the count at once, and a change of push rules applies
to what is still unread. `CountCache` keeps each (user, room) result with the read
points it was computed for, so while those stay the same a later `/sync` evaluates only
the new events. One pass looks at most at `MAX_SCAN` events (a long-unread room is
counted over several syncs, each continuing where the last stopped).

Known simplification: a redaction does not lower a count already cached; the next read
receipt recomputes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from myelin.ephemeral.receipts import latest_position as latest_receipt_position
from myelin.ephemeral.receipts import read_positions
from myelin.push.evaluator import (
    CompiledRuleSet,
    PushActions,
    PushContext,
    evaluate,
    notification_power_levels,
)
from myelin.storage import Row, Txn

MAX_SCAN = 1000


@dataclass
class Counts:
    notification_count: int = 0
    highlight_count: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "highlight_count": self.highlight_count,
            "notification_count": self.notification_count,
        }


@dataclass
class RoomCounts:
    main: Counts = field(default_factory=Counts)
    threads: dict[str, Counts] = field(default_factory=dict)


def thread_of(pdu: dict[str, Any]) -> str:
    """The thread root an event belongs to, "" for the main timeline."""
    relates = pdu.get("content", {}).get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        if isinstance(root, str):
            return root
    return ""


async def _state_content(t: Txn, room_id: str, event_type: str, state_key: str) -> dict[str, Any]:
    raw = await t.fetchval(
        "SELECT e.pdu FROM sync_current_state s JOIN sync_events e ON e.event_id = s.event_id"
        " WHERE s.room_id = ? AND s.type = ? AND s.state_key = ?",
        room_id,
        event_type,
        state_key,
    )
    if raw is None:
        return {}
    found = orjson.loads(raw).get("content")
    return found if isinstance(found, dict) else {}


async def room_context(t: Txn, room_id: str, user_id: str) -> tuple[PushContext, dict[str, Any]]:
    """The evaluator context of the user in the room (sender level left at 0) and the
    room's power levels content, to fill the sender level per event."""
    joined = int(
        await t.fetchval(
            "SELECT count(*) FROM sync_memberships WHERE room_id = ? AND membership = 'join'",
            room_id,
        )
    )
    member = await _state_content(t, room_id, "m.room.member", user_id)
    name = member.get("displayname")
    levels = await _state_content(t, room_id, "m.room.power_levels", "")
    context = PushContext(
        user_id=user_id,
        member_count=joined,
        display_name=name if isinstance(name, str) else None,
        notification_power_levels=notification_power_levels(levels),
    )
    return context, levels


def _sender_level(levels: dict[str, Any], sender: str, creator: bool) -> int:
    users = levels.get("users")
    if isinstance(users, dict) and type(users.get(sender)) is int:
        return int(users[sender])
    if not levels:
        return 100 if creator else 0
    default = levels.get("users_default", 0)
    return default if type(default) is int else 0


def evaluate_event(
    rules: CompiledRuleSet, context: PushContext, levels: dict[str, Any], pdu: dict[str, Any]
) -> PushActions | None:
    sender = pdu.get("sender", "")
    ctx = PushContext(
        user_id=context.user_id,
        member_count=context.member_count,
        display_name=context.display_name,
        sender_power_level=_sender_level(levels, sender, False),
        notification_power_levels=context.notification_power_levels,
    )
    return evaluate(rules, pdu, ctx)


@dataclass(frozen=True)
class _Cached:
    """What a previous count of one user's room saw, to continue from it."""

    reads: tuple[tuple[str, int], ...]
    rules: CompiledRuleSet
    scanned: int
    main: tuple[int, int]
    threads: tuple[tuple[str, int, int], ...]
    #: The receipt stream's position when `reads` were read.
    receipts_at: int = -1


class CountCache:
    """Counts already computed, per (user, room): a later count with the same read
    points and rules only evaluates the events after the last one seen, so a busy room
    the user is not reading costs each `/sync` only its new events. Entries are
    replaced whole (safe to use from the database's reader threads)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: dict[tuple[str, str], _Cached] = {}
        self._max = max_entries

    def get(self, user_id: str, room_id: str) -> _Cached | None:
        return self._entries.get((user_id, room_id))

    def put(self, user_id: str, room_id: str, entry: _Cached) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[(user_id, room_id)] = entry


async def _events_after(t: Txn, room_id: str, floor: int, upto: int) -> list[Row]:
    """`(pos, pdu, sender, redacted_by)` of the room's events in `(floor, upto]`, at most
    `MAX_SCAN` (the same query for every member: one read when `/sync`s share one)."""
    return await t.fetchall(
        "SELECT pos, pdu, sender, redacted_by FROM sync_events WHERE room_id = ? AND pos > ?"
        " AND pos <= ? ORDER BY pos LIMIT ?",
        room_id,
        floor,
        upto,
        MAX_SCAN,
    )


async def room_counts(
    t: Txn,
    room_id: str,
    user_id: str,
    upto: int,
    rules: CompiledRuleSet,
    cache: CountCache | None = None,
) -> RoomCounts:
    """The unread counts of the user in the room, main timeline and per thread.

    Read points: an unthreaded receipt (or the user's own latest event) covers the
    whole room; a `main` receipt the main timeline; a threaded receipt its thread.

    A cached count whose read points were read when the receipt stream stood where it
    stands now has them still, unless the user wrote in the room since: then only the
    new events are read (no per-user query at all)."""
    receipts_at = await latest_receipt_position(t) if cache is not None else -1
    cached = cache.get(user_id, room_id) if cache is not None else None
    rows: list[Row] | None = None
    if (
        cached is not None
        and cached.receipts_at == receipts_at
        and cached.rules is rules
        and cached.scanned <= upto
    ):
        rows = await _events_after(t, room_id, cached.scanned, upto)
        if any(row[2] == user_id for row in rows):
            rows = None  # the user's own event moved their read point: count afresh
    if rows is not None and cached is not None:
        reads = dict(cached.reads)
        key = cached.reads
        floor = cached.scanned
    else:
        reads = await read_positions(t, room_id, user_id)
        own = await t.fetchval(
            "SELECT max(pos) FROM sync_events WHERE room_id = ? AND sender = ? AND pos <= ?",
            room_id,
            user_id,
            upto,
        )
        reads[""] = max(reads.get("", 0), int(own or 0))
        key = tuple(sorted(reads.items()))
        floor = reads[""]
    everything = reads[""]
    main_read = max(everything, reads.get("main", 0))
    result = RoomCounts()
    if (
        cached is not None
        and cached.reads == key
        and cached.rules is rules
        and cached.scanned <= upto
    ):
        floor = cached.scanned
        result.main = Counts(*cached.main)
        result.threads = {k: Counts(n, h) for k, n, h in cached.threads}
    if rows is None:
        rows = await _events_after(t, room_id, floor, upto)
    scanned = int(rows[-1][0]) if rows else floor
    live = [(pos, raw) for pos, raw, _, redacted_by in rows if redacted_by is None]
    if live:
        context, levels = await room_context(t, room_id, user_id)
        for pos, raw in live:
            pdu = orjson.loads(raw)
            thread = thread_of(pdu)
            read = max(reads.get(thread, 0), everything) if thread else main_read
            if int(pos) <= read:
                continue
            actions = evaluate_event(rules, context, levels, pdu)
            if actions is None or not actions.is_notify:
                continue
            counts = result.threads.setdefault(thread, Counts()) if thread else result.main
            counts.notification_count += 1
            if actions.is_highlight:
                counts.highlight_count += 1
    if cache is not None and (
        cached is None
        or scanned != cached.scanned
        or cached.reads != key
        or cached.receipts_at != receipts_at
    ):
        cache.put(
            user_id,
            room_id,
            _Cached(
                key,
                rules,
                scanned,
                (result.main.notification_count, result.main.highlight_count),
                tuple(
                    (k, v.notification_count, v.highlight_count) for k, v in result.threads.items()
                ),
                receipts_at,
            ),
        )
    return result


async def notifications(
    t: Txn,
    user_id: str,
    room_ids: list[str],
    upto: int,
    rules: CompiledRuleSet,
    *,
    before: int | None,
    limit: int,
    only_highlight: bool,
) -> tuple[list[dict[str, Any]], int | None]:
    """The user's notifications (newest first) in the rooms, before position `before`,
    and the position to continue from (None at the end). Each scan looks at most
    `MAX_SCAN` events."""
    if not room_ids:
        return [], None
    hi = upto if before is None else min(before - 1, upto)
    rows = await t.fetchall(
        "SELECT pos, room_id, event_id, pdu FROM sync_events WHERE room_id = ANY(?) AND pos <= ?"
        " AND sender <> ? AND state_key IS NULL AND redacted_by IS NULL"
        " ORDER BY pos DESC LIMIT ?",
        room_ids,
        hi,
        user_id,
        MAX_SCAN,
    )
    contexts: dict[str, tuple[PushContext, dict[str, Any], dict[str, int]]] = {}
    found: list[dict[str, Any]] = []
    last_pos: int | None = None
    for pos, room_id, event_id, raw in rows:
        last_pos = int(pos)
        if room_id not in contexts:
            context, levels = await room_context(t, room_id, user_id)
            contexts[room_id] = (context, levels, await read_positions(t, room_id, user_id))
        context, levels, reads = contexts[room_id]
        pdu = orjson.loads(raw)
        actions = evaluate_event(rules, context, levels, pdu)
        if actions is None or not actions.is_notify:
            continue
        if only_highlight and not actions.is_highlight:
            continue
        thread = thread_of(pdu)
        everything = reads.get("", 0)
        read_upto = max(reads.get(thread or "main", 0), everything)
        event = {k: pdu[k] for k in ("type", "sender", "content", "origin_server_ts") if k in pdu}
        event["event_id"] = event_id
        event["room_id"] = room_id
        found.append(
            {
                "actions": [_action_json(a) for a in actions.actions],
                "event": event,
                "read": int(pos) <= read_upto,
                "room_id": room_id,
                "ts": int(pdu.get("origin_server_ts", 0)),
            }
        )
        if len(found) == limit:
            return found, int(pos)
    more = len(rows) == MAX_SCAN and last_pos is not None
    return found, last_pos if more else None


def _action_json(action: Any) -> Any:
    return action if isinstance(action, str) else dict(action)
