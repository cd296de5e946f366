"""The key server's two streams and their part of `/sync`.

- The **to-device stream**: each queued message has a position; a device receives its
  messages in order, at most `TO_DEVICE_LIMIT` per sync, and they are deleted only once
  the device syncs again with a token at or past them (send_to_device.md, "Server
  behaviour"): a lost response loses nothing.
- The **device-list stream**: each change of a user's device keys, cross-signing keys or
  signatures has a position. `device_lists.changed` holds the users sharing a room with
  the syncing user whose keys changed, plus users who newly share a room or an encrypted
  room; `left` holds users who stopped sharing a room and share no encrypted room any
  more (`Streams.device_list_changes` says how this follows the spec).

Sync tokens carry both positions after the room-stream position (see
`myelin.syncapi.tokens`): `SyncPositions` is that pair.

A device's one-time key counts and unused fallback key types, asked by every `/sync`, are
kept in memory (`Streams._keys`). Every write of those keys goes through `key_write`, which
notes the users' change on the event loop once the write has finished; an entry is used
only when filled by a shared read transaction (`myelin.syncapi.batch.SharedReads`) that
began after the last change of its user, so it holds what a fresh read would find.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from myelin.storage import Database, Txn
from myelin.syncapi.queries import sharing_users

TO_DEVICE_LIMIT = 100
#: How many devices' acknowledged positions are remembered.
_ACKED_LIMIT = 100_000
#: How many devices' key counts, and users' key changes, are remembered.
_KEYS_LIMIT = 100_000

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Keys:
    """A device's one-time key counts and unused fallback key types, read by a shared
    transaction that began at `born` (monotonic ns)."""

    counts: tuple[tuple[str, int], ...]
    fallback: tuple[str, ...]
    born: int


@dataclass(frozen=True, slots=True)
class SyncPositions:
    """Positions in the to-device and device-list streams."""

    to_device: int = 0
    device_list: int = 0

    @staticmethod
    def from_others(others: tuple[int, ...]) -> SyncPositions:
        """Read from the extra parts of a sync token (missing parts read as 0)."""
        return SyncPositions(
            others[0] if len(others) > 0 else 0, others[1] if len(others) > 1 else 0
        )

    def as_others(self) -> tuple[int, int]:
        return (self.to_device, self.device_list)


@dataclass(frozen=True, slots=True)
class SyncPart:
    """The key server's fields of one `/sync` response and the positions it reached."""

    fields: dict[str, Any]
    positions: SyncPositions
    #: Whether there is news (a long poll should answer now).
    news: bool


class Streams:
    def __init__(self, db: Database) -> None:
        self.db = db
        #: (user, device) -> a position up to which the device is known to have nothing
        #: pending. New messages always take higher positions than any a sync token
        #: carries, so an acknowledgement up to no more than this needs no database read.
        self._acked: dict[tuple[str, str], int] = {}
        #: (user, device) -> its key counts as last read (see module doc).
        self._keys: dict[tuple[str, str], _Keys] = {}
        #: user -> monotonic ns of the last finished write of their one-time/fallback keys.
        self._key_writes: dict[str, int] = {}
        #: Entries read before this instant are not trusted (the maps were cleared then).
        self._keys_floor = time.monotonic_ns()

    async def key_write(self, user_ids: Iterable[str], write: Awaitable[_T]) -> _T:
        """Run `write`, a database write of these users' one-time or fallback keys, and
        note the change once it has finished (committed or not). Shielded: a cancelled
        caller leaves the write running, and the change is still noted after it."""
        users = tuple(user_ids)
        task = asyncio.ensure_future(write)
        task.add_done_callback(lambda _: self.keys_changed(users))
        return await asyncio.shield(task)

    def keys_changed(self, user_ids: Iterable[str]) -> None:
        """The users' one-time or fallback keys changed: forget what was read before."""
        now = time.monotonic_ns()
        if len(self._key_writes) >= _KEYS_LIMIT:
            self._key_writes.clear()
            self._keys.clear()
            self._keys_floor = now
        for user_id in user_ids:
            self._key_writes[user_id] = now

    def _fresh_keys(self, user_id: str, device_id: str) -> _Keys | None:
        found = self._keys.get((user_id, device_id))
        if found is None:
            return None
        if found.born <= max(self._keys_floor, self._key_writes.get(user_id, 0)):
            return None
        return found

    async def _device_keys(self, t: Txn, user_id: str, device_id: str) -> _Keys:
        """The device's key counts: from memory when still fresh, else read (and kept
        when `t` is a shared read transaction, whose start time is known)."""
        found = self._fresh_keys(user_id, device_id)
        if found is not None:
            return found
        counts = await t.fetchall(
            "SELECT algorithm, count(*) FROM e2e_one_time_keys WHERE user_id = ?"
            " AND device_id = ? GROUP BY algorithm",
            user_id,
            device_id,
        )
        unused = await t.fetchall(
            "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ? AND device_id = ?"
            " AND used = 0 ORDER BY algorithm",
            user_id,
            device_id,
        )
        born = getattr(t, "born", None)
        keys = _Keys(
            tuple((str(r[0]), int(r[1])) for r in counts),
            tuple(str(r[0]) for r in unused),
            born if isinstance(born, int) else -1,
        )
        if isinstance(born, int) and born > max(self._keys_floor, self._key_writes.get(user_id, 0)):
            if len(self._keys) >= _KEYS_LIMIT:
                self._keys.clear()
            self._keys[(user_id, device_id)] = keys
        return keys

    # ------------------------------------------------------------------ writes

    async def append_device_change(self, t: Txn, user_id: str, *, owner_only: bool = False) -> None:
        """Announce that `user_id`'s keys changed: to everyone sharing a room with them, or,
        with `owner_only`, to their own devices alone (a change nobody else can see)."""
        await t.execute(
            "INSERT INTO e2e_device_list_stream (user_id, owner_only) VALUES (?, ?)",
            user_id,
            int(owner_only),
        )

    async def acknowledge_to_device(self, user_id: str, device_id: str, upto: int) -> None:
        """The device has seen every message up to `upto`: delete them (if any)."""
        key = (user_id, device_id)
        if self._acked.get(key, -1) >= upto:
            return
        pending = await self.db.read(
            lambda t: t.fetchval(
                "SELECT 1 FROM e2e_to_device WHERE user_id = ? AND device_id = ? AND pos <= ?"
                " LIMIT 1",
                user_id,
                device_id,
                upto,
            )
        )
        if pending is not None:
            await self.db.run(
                lambda t: t.execute(
                    "DELETE FROM e2e_to_device WHERE user_id = ? AND device_id = ? AND pos <= ?",
                    user_id,
                    device_id,
                    upto,
                )
            )
        if len(self._acked) >= _ACKED_LIMIT:
            self._acked.clear()
        self._acked[key] = max(upto, self._acked.get(key, -1))

    # ------------------------------------------------------------------ reads

    async def sharing_encrypted_users(self, t: Txn, user_id: str) -> set[str]:
        """Users joined to an encrypted room (one with an `m.room.encryption` state event)
        the user is joined to (the user included)."""
        rows = await t.fetchall(
            "SELECT DISTINCT o.user_id FROM sync_memberships m"
            " JOIN sync_current_state s ON s.room_id = m.room_id"
            " AND s.type = 'm.room.encryption' AND s.state_key = ''"
            " JOIN sync_memberships o ON o.room_id = m.room_id AND o.membership = 'join'"
            " WHERE m.user_id = ? AND m.membership = 'join'",
            user_id,
        )
        return {str(r[0]) for r in rows} | {user_id}

    async def positions(self, t: Txn) -> SyncPositions:
        td = await t.fetchval("SELECT pos FROM e2e_to_device_stream WHERE id = 1")
        dl = await t.fetchval("SELECT max(pos) FROM e2e_device_list_stream")
        return SyncPositions(int(td or 0), int(dl or 0))

    async def sync_part(
        self,
        t: Txn,
        user_id: str,
        device_id: str,
        since: SyncPositions | None,
        since_room: int,
        upto_room: int,
    ) -> SyncPart:
        """The to-device messages, key counts and device-list changes of one sync,
        read inside the sync's snapshot. `since` is None for an initial sync."""
        now = await self.positions(t)
        after_td = since.to_device if since is not None else 0
        # No message was queued after `after_td` when the stream has not moved past it
        # (the common long-poll wake-up): no per-device query.
        rows = (
            await t.fetchall(
                "SELECT pos, message_json FROM e2e_to_device WHERE user_id = ? AND device_id = ?"
                " AND pos > ? ORDER BY pos LIMIT ?",
                user_id,
                device_id,
                after_td,
                TO_DEVICE_LIMIT,
            )
            if now.to_device > after_td
            else []
        )
        events = [orjson.loads(r[1]) for r in rows]
        # The token moves only past what this device was given: a message queued by a
        # transaction that commits late (PostgreSQL) can never be skipped.
        td_pos = int(rows[-1][0]) if rows else after_td
        keys = await self._device_keys(t, user_id, device_id)
        otk_counts = dict(keys.counts)
        otk_counts.setdefault("signed_curve25519", 0)
        changed: list[str] = []
        left: list[str] = []
        if since is not None:
            changed, left = await self.device_list_changes(
                t, user_id, since.device_list, now.device_list, since_room, upto_room
            )
        fields = {
            "to_device": {"events": events},
            "device_lists": {"changed": changed, "left": left},
            "device_one_time_keys_count": otk_counts,
            "device_unused_fallback_key_types": list(keys.fallback),
        }
        return SyncPart(
            fields,
            SyncPositions(td_pos, now.device_list),
            bool(events or changed or left),
        )

    async def device_list_changes(
        self,
        t: Txn,
        user_id: str,
        after_dl: int,
        upto_dl: int,
        after_room: int,
        upto_room: int,
    ) -> tuple[list[str], list[str]]:
        """`(changed, left)` between two points of the device-list and room streams.

        The spec (end_to_end_encryption.md, DeviceLists) defines `changed` as users "who
        have updated their device identity or cross-signing keys, or who now share an
        encrypted room with the client", and `left` as users "with whom we do not share
        any encrypted rooms anymore". Here:

        - `changed` holds users sharing any room with the client whose keys changed (the
          first clause is not limited to encrypted rooms; the tracking section speaks of
          sharing "a room"), users who newly share a room with the client (the note
          below the table allows a server to add users on every newly shared room, and a
          newly shared encrypted room is one of them), and the members of the client's
          rooms that became encrypted, who now share an encrypted room without any
          membership change; users newly invited to the client's rooms count as newly
          sharing one (clients encrypt for invitees, and track them from the invite);
        - `left` holds users who stopped sharing a room with the client (they or the
          client left or were banned/kicked) and now share no encrypted room with it. A
          user still sharing only unencrypted rooms is in `left`: the client has no
          reason to track their devices any longer.

        Costs nothing when neither stream moved (the common long-poll wake-up).
        """
        if upto_dl <= after_dl and upto_room <= after_room:
            return [], []
        changed: set[str] = set()
        if upto_dl > after_dl:
            sharing = await sharing_users(t, user_id)
            rows = await t.fetchall(
                "SELECT DISTINCT user_id FROM e2e_device_list_stream WHERE pos > ? AND pos <= ?"
                " AND (owner_only = 0 OR user_id = ?)",
                after_dl,
                upto_dl,
                user_id,
            )
            changed |= {str(r[0]) for r in rows} & sharing
        left: set[str] = set()
        if upto_room > after_room and await _memberships_moved(t, after_room, upto_room):
            # Rooms the user joined or left since `after_room`: all their members are new
            # to the user, or may no longer share a room with them.
            mine = await t.fetchall(
                "SELECT room_id, membership FROM sync_memberships WHERE user_id = ?"
                " AND pos > ? AND pos <= ?",
                user_id,
                after_room,
                upto_room,
            )
            for room_id, membership in mine:
                rows = await t.fetchall(
                    "SELECT user_id FROM sync_memberships WHERE room_id = ?"
                    " AND membership = 'join'",
                    room_id,
                )
                members = {str(r[0]) for r in rows}
                if membership == "join":
                    changed |= members
                elif membership in ("leave", "ban"):
                    left |= members
            # Other users joining, invited to or leaving the rooms the user is in. An
            # invitee counts as new: clients start tracking their devices at the invite,
            # so that a message sent before they join can already be encrypted for them.
            rows = await t.fetchall(
                "SELECT o.user_id, o.membership FROM sync_memberships o"
                " JOIN sync_memberships m ON m.room_id = o.room_id"
                " WHERE m.user_id = ? AND m.membership = 'join' AND o.pos > ? AND o.pos <= ?",
                user_id,
                after_room,
                upto_room,
            )
            for other, membership in rows:
                if membership in ("join", "invite"):
                    changed.add(str(other))
                elif membership in ("leave", "ban"):
                    left.add(str(other))
            # The user's rooms that became encrypted: their members now share an
            # encrypted room with the user.
            rows = await t.fetchall(
                "SELECT o.user_id FROM sync_current_state s"
                " JOIN sync_memberships m ON m.room_id = s.room_id"
                " JOIN sync_memberships o ON o.room_id = s.room_id AND o.membership = 'join'"
                " WHERE m.user_id = ? AND m.membership = 'join'"
                " AND s.type = 'm.room.encryption' AND s.state_key = '' AND s.pos > ?"
                " AND s.pos <= ?",
                user_id,
                after_room,
                upto_room,
            )
            changed |= {str(r[0]) for r in rows}
        if left:
            left -= await self.sharing_encrypted_users(t, user_id)
        return sorted(changed - left), sorted(left)

    async def latest_positions(self) -> SyncPositions:
        return await self.db.read(self.positions)


async def _memberships_moved(t: Txn, after_room: int, upto_room: int) -> bool:
    """Whether any membership began, or any room became encrypted, in `(after_room,
    upto_room]`: without either, the room part of the device-list changes is empty for
    every user. The same query for all `/sync`s woken by one message, so read once when
    they share a transaction (`myelin.syncapi.batch`), instead of three joins per user."""
    found = await t.fetchval(
        "SELECT 1 FROM sync_memberships WHERE pos > ? AND pos <= ?"
        " UNION ALL SELECT 1 FROM sync_current_state WHERE type = 'm.room.encryption'"
        " AND state_key = '' AND pos > ? AND pos <= ? LIMIT 1",
        after_room,
        upto_room,
        after_room,
        upto_room,
    )
    return found is not None
