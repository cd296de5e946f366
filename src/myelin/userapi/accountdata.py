"""Per-user data that is not room history: account data (global and per room, room tags
among it), push rules, pushers and profiles.

Account data is a stream: each write takes the next position of `account_data_stream`
and the row remembers it, so `/sync` sends exactly the entries written after the
`since` token (a rewrite of an entry sends it once, with its latest content). The
user's push rules are stored as `StoredRules` (the push engine's own format) and each
change also rewrites the server-controlled `m.push_rules` account data, so clients see
rule changes in `/sync` as the spec asks.

`wake(user_ids)` is called after each committed write so a long-polling `/sync` of the
user answers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.push.ruleset import StoredRules, effective_ruleset, pushrules_content
from myelin.storage import Database, Txn

Wake = Callable[[Iterable[str]], None]
#: Told the user ID after a pusher of that user was created or replaced.
PusherAdded = Callable[[str], None]

#: Watchers of new pushers per database (by `id`): the push sender keeps the set of users
#: with pushers in memory so that events of rooms without them cost no query, and every
#: `AccountData` of the process (the client API has its own) must reach it.
_pusher_watchers: dict[int, list[PusherAdded]] = {}


def watch_pushers(db: Database, callback: PusherAdded) -> Callable[[], None]:
    """Call `callback(user_id)` after each pusher `set_pusher` commits on `db`; returns
    the function that stops watching. (Removals are not reported: a watcher that keeps a
    user without pushers only does a query too many.)"""
    watchers = _pusher_watchers.setdefault(id(db), [])
    watchers.append(callback)

    def stop() -> None:
        watchers.remove(callback)
        if not watchers:
            _pusher_watchers.pop(id(db), None)

    return stop


#: Account data types the server controls; PUT through the account-data API is 405.
SERVER_CONTROLLED = frozenset({"m.push_rules", "m.fully_read"})
PUSH_RULES_TYPE = "m.push_rules"
TAG_TYPE = "m.tag"
#: The key, inside a stored pusher, of the device whose access token created it.
PUSHER_DEVICE = "myelin.device_id"


@dataclass(frozen=True, slots=True)
class AccountDataEntry:
    room_id: str  # "" for global account data
    type: str
    content: dict[str, Any]
    pos: int


async def _put(t: Txn, user_id: str, room_id: str, data_type: str, content: Any) -> int:
    pos = int(
        await t.fetchval(
            "INSERT INTO account_data_stream (user_id) VALUES (?) RETURNING pos", user_id
        )
    )
    await t.execute(
        "INSERT INTO account_data (user_id, room_id, type, content, pos) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content,"
        " pos = excluded.pos",
        user_id,
        room_id,
        data_type,
        orjson.dumps(content).decode(),
        pos,
    )
    return pos


async def _get(t: Txn, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
    raw = await t.fetchval(
        "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
        user_id,
        room_id,
        data_type,
    )
    if raw is None:
        return None
    value: dict[str, Any] = orjson.loads(raw)
    return value


async def delete_other_devices_pushers(t: Txn, user_id: str, device_id: str) -> None:
    """Drop the user's pushers created by other devices' access tokens (a password
    change that logs the other devices out takes their pushers too, as on Synapse)."""
    rows = await t.fetchall(
        "SELECT app_id, pushkey, pusher FROM pushers WHERE user_id = ?", user_id
    )
    for app_id, pushkey, raw in rows:
        if orjson.loads(raw).get(PUSHER_DEVICE) != device_id:
            await t.execute(
                "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                user_id,
                app_id,
                pushkey,
            )


async def latest_position(t: Txn) -> int:
    """The account-data stream's position (the highest written), inside a snapshot."""
    return int(await t.fetchval("SELECT max(pos) FROM account_data_stream") or 0)


async def changes(t: Txn, user_id: str, after: int, upto: int) -> list[AccountDataEntry]:
    """The user's entries last written in `(after, upto]`, oldest first."""
    rows = await t.fetchall(
        "SELECT room_id, type, content, pos FROM account_data WHERE user_id = ? AND pos > ?"
        " AND pos <= ? ORDER BY pos",
        user_id,
        after,
        upto,
    )
    return [AccountDataEntry(r[0], r[1], orjson.loads(r[2]), int(r[3])) for r in rows]


async def stored_push_rules(t: Txn, user_id: str) -> StoredRules:
    raw = await t.fetchval("SELECT stored FROM push_rules WHERE user_id = ?", user_id)
    return StoredRules() if raw is None else StoredRules.from_json(orjson.loads(raw))


class AccountData:
    def __init__(self, db: Database, wake: Wake) -> None:
        self.db = db
        self.wake = wake

    # ------------------------------------------------------------------ account data

    async def put(self, user_id: str, room_id: str, data_type: str, content: Any) -> int:
        """Set one entry (room_id "" for global); returns its stream position."""
        pos = await self.db.run(lambda t: _put(t, user_id, room_id, data_type, content))
        self.wake([user_id])
        return pos

    async def get(self, user_id: str, room_id: str, data_type: str) -> dict[str, Any] | None:
        if room_id == "" and data_type == PUSH_RULES_TYPE:
            return pushrules_content(effective_ruleset(await self.push_rules(user_id), user_id))
        return await self.db.read(lambda t: _get(t, user_id, room_id, data_type))

    # ------------------------------------------------------------------ tags

    async def tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = await self.db.read(lambda t: _get(t, user_id, room_id, TAG_TYPE))
        tags = (content or {}).get("tags")
        return tags if isinstance(tags, dict) else {}

    async def set_tag(self, user_id: str, room_id: str, tag: str, value: Any | None) -> None:
        """Add or replace `tag` (value None removes it), read-modify-write in one txn."""

        async def txn(t: Txn) -> None:
            content = await _get(t, user_id, room_id, TAG_TYPE) or {}
            tags = content.get("tags")
            tags = dict(tags) if isinstance(tags, dict) else {}
            if value is None:
                if tag not in tags:
                    return
                del tags[tag]
            else:
                tags[tag] = value
            await _put(t, user_id, room_id, TAG_TYPE, {"tags": tags})

        await self.db.run(txn)
        self.wake([user_id])

    # ------------------------------------------------------------------ push rules

    async def push_rules(self, user_id: str) -> StoredRules:
        return await self.db.read(lambda t: stored_push_rules(t, user_id))

    async def update_push_rules(
        self, user_id: str, change: Callable[[StoredRules], StoredRules]
    ) -> None:
        """Apply a pure rule-set operation (it may raise; then nothing is written) and
        publish the new effective rules as `m.push_rules` account data."""

        async def txn(t: Txn) -> None:
            updated = change(await stored_push_rules(t, user_id))
            await t.execute(
                "INSERT INTO push_rules (user_id, stored) VALUES (?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET stored = excluded.stored",
                user_id,
                orjson.dumps(updated.to_json()).decode(),
            )
            content = pushrules_content(effective_ruleset(updated, user_id))
            await _put(t, user_id, "", PUSH_RULES_TYPE, content)

        await self.db.run(txn)
        self.wake([user_id])

    # ------------------------------------------------------------------ pushers

    async def pushers(self, user_id: str) -> list[dict[str, Any]]:
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT pusher FROM pushers WHERE user_id = ? ORDER BY app_id, pushkey", user_id
            )
        )
        return [orjson.loads(r[0]) for r in rows]

    async def set_pusher(self, user_id: str, pusher: dict[str, Any], append: bool) -> None:
        """Create or replace the pusher (app_id, pushkey). Without `append`, other users'
        pushers with the same app_id and pushkey are removed, as the spec says."""
        app_id, pushkey = pusher["app_id"], pusher["pushkey"]

        async def txn(t: Txn) -> None:
            if not append:
                await t.execute(
                    "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id <> ?",
                    app_id,
                    pushkey,
                    user_id,
                )
            await t.execute(
                "INSERT INTO pushers (user_id, app_id, pushkey, pusher) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET pusher = excluded.pusher",
                user_id,
                app_id,
                pushkey,
                orjson.dumps(pusher).decode(),
            )

        await self.db.run(txn)
        for watcher in list(_pusher_watchers.get(id(self.db), ())):
            watcher(user_id)

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> None:
        await self.db.run(
            lambda t: t.execute(
                "DELETE FROM pushers WHERE user_id = ? AND app_id = ? AND pushkey = ?",
                user_id,
                app_id,
                pushkey,
            )
        )

    # ------------------------------------------------------------------ profiles

    async def profile(self, user_id: str) -> dict[str, str] | None:
        """The stored profile fields, or None when the user has no profile row."""
        row = await self.db.read(
            lambda t: t.fetchone(
                "SELECT displayname, avatar_url FROM profiles WHERE user_id = ?", user_id
            )
        )
        if row is None:
            return None
        out: dict[str, str] = {}
        if row[0] is not None:
            out["displayname"] = row[0]
        if row[1] is not None:
            out["avatar_url"] = row[1]
        return out

    async def set_profile_field(self, user_id: str, field: str, value: str | None) -> None:
        if field not in ("displayname", "avatar_url"):
            raise ValueError(field)
        await self.db.run(
            lambda t: t.execute(
                f"INSERT INTO profiles (user_id, {field}) VALUES (?, ?)"
                f" ON CONFLICT (user_id) DO UPDATE SET {field} = excluded.{field}",
                user_id,
                value,
            )
        )

    async def search_profiles(self, user_ids: Iterable[str]) -> dict[str, dict[str, str]]:
        ids = list(user_ids)
        if not ids:
            return {}
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT user_id, displayname, avatar_url FROM profiles WHERE user_id = ANY(?)",
                ids,
            )
        )
        out: dict[str, dict[str, str]] = {}
        for user_id, name, avatar in rows:
            entry: dict[str, str] = {}
            if name is not None:
                entry["displayname"] = name
            if avatar is not None:
                entry["avatar_url"] = avatar
            out[user_id] = entry
        return out
