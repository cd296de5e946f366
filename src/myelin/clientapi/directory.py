"""The local room directory: aliases (`/directory/room/{alias}`), room visibility
(`/directory/list/room/{roomId}`) and `/publicRooms` (list_public_rooms.yaml,
directory.yaml).

Aliases and visibility are requests of clients, not room events, so they live in their
own tables (component `directory`); the room summaries of `/publicRooms` come from the
sync projections of current state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from myelin.clientapi.http import MatrixError, forbidden, invalid_param, not_found
from myelin.core.auth import get_power_level, get_required_level
from myelin.core.identifiers import is_valid_room_alias, is_valid_room_id, server_name_of
from myelin.roomserver.queries import RoomQueries
from myelin.roomserver.types import UnknownRoomError
from myelin.storage import Database, Migration, Txn
from myelin.syncapi import queries

COMPONENT = "directory"
MIGRATIONS = [
    Migration(
        1,
        """
CREATE TABLE dir_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX dir_aliases_room ON dir_aliases (room_id);
CREATE TABLE dir_public_rooms (
    room_id TEXT PRIMARY KEY
);
""",
    )
]
MAX_PUBLIC_LIMIT = 500


class Directory:
    def __init__(self, db: Database, server_name: str) -> None:
        self.db = db
        self.server_name = server_name
        #: Asked about an unknown alias (application services may create it); whether
        #: it may exist now.
        self.on_unknown_alias: Callable[[str], Awaitable[bool]] | None = None
        #: Raises when `creator` may not create `alias` (exclusive AS namespaces).
        self.check_new_alias: Callable[[str, str], None] | None = None

    async def open(self) -> None:
        await self.db.migrate(COMPONENT, MIGRATIONS)

    def check_alias(self, alias: str) -> None:
        if not is_valid_room_alias(alias):
            raise invalid_param(f"Invalid room alias {alias[:100]!r}")
        if server_name_of(alias) != self.server_name:
            raise invalid_param("Room aliases must be on this server")

    async def resolve(self, alias: str) -> str | None:
        value = await self.db.read(
            lambda t: t.fetchval("SELECT room_id FROM dir_aliases WHERE alias = ?", alias)
        )
        if value is None and self.on_unknown_alias and await self.on_unknown_alias(alias):
            value = await self.db.read(
                lambda t: t.fetchval("SELECT room_id FROM dir_aliases WHERE alias = ?", alias)
            )
        return None if value is None else str(value)

    async def add(self, alias: str, room_id: str, creator: str) -> None:
        self.check_alias(alias)
        if self.check_new_alias is not None:
            self.check_new_alias(alias, creator)

        async def txn(t: Txn) -> None:
            if await t.fetchval("SELECT 1 FROM dir_aliases WHERE alias = ?", alias):
                raise MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists")
            await t.execute(
                "INSERT INTO dir_aliases (alias, room_id, creator) VALUES (?, ?, ?)",
                alias,
                room_id,
                creator,
            )

        await self.db.run(txn)

    async def remove(self, alias: str, requester: str, is_admin: bool) -> None:
        async def txn(t: Txn) -> None:
            row = await t.fetchone("SELECT creator FROM dir_aliases WHERE alias = ?", alias)
            if row is None:
                raise not_found(f"Room alias {alias} not found")
            if row[0] != requester and not is_admin:
                raise forbidden("You did not create this alias")
            await t.execute("DELETE FROM dir_aliases WHERE alias = ?", alias)

        await self.db.run(txn)

    async def move_aliases(self, old_room_id: str, new_room_id: str) -> None:
        """Point every alias of `old_room_id` at `new_room_id` (a room upgrade)."""
        await self.db.run(
            lambda t: t.execute(
                "UPDATE dir_aliases SET room_id = ? WHERE room_id = ?", new_room_id, old_room_id
            )
        )

    async def aliases_of(self, room_id: str) -> list[str]:
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT alias FROM dir_aliases WHERE room_id = ? ORDER BY alias", room_id
            )
        )
        return [r[0] for r in rows]

    async def set_public(self, room_id: str, public: bool) -> None:
        async def txn(t: Txn) -> None:
            if public:
                await t.execute(
                    "INSERT INTO dir_public_rooms (room_id) VALUES (?) ON CONFLICT DO NOTHING",
                    room_id,
                )
            else:
                await t.execute("DELETE FROM dir_public_rooms WHERE room_id = ?", room_id)

        await self.db.run(txn)

    async def is_public(self, room_id: str) -> bool:
        value = await self.db.read(
            lambda t: t.fetchval("SELECT 1 FROM dir_public_rooms WHERE room_id = ?", room_id)
        )
        return value is not None

    async def public_rooms(
        self,
        limit: int | None,
        since: str | None,
        term: str | None,
        *,
        instance: str | None = None,
        all_networks: bool = False,
    ) -> Any:
        """The public rooms: the main list, or the list one application service keeps for
        a third-party network (`instance`: "<AS id>|<network id>", the AS's table in
        `myelin.appservice`), or both (`all_networks`)."""
        if limit is not None and limit < 0:
            raise invalid_param("'limit' must not be negative")
        offset = 0
        if since is not None:
            if not since.startswith("o") or not since[1:].isdigit():
                raise invalid_param("Malformed 'since' token")
            offset = int(since[1:])

        async def q(t: Txn) -> list[dict[str, Any]]:
            if instance is not None:
                as_id, _, network = instance.partition("|")
                rows = await t.fetchall(
                    "SELECT room_id FROM as_room_lists WHERE as_id = ? AND network_id = ?"
                    " ORDER BY room_id",
                    as_id,
                    network,
                )
            elif all_networks:
                rows = await t.fetchall(
                    "SELECT room_id FROM dir_public_rooms UNION"
                    " SELECT room_id FROM as_room_lists ORDER BY room_id"
                )
            else:
                rows = await t.fetchall("SELECT room_id FROM dir_public_rooms ORDER BY room_id")
            rooms = []
            for (room_id,) in rows:
                summary = await _summary(t, room_id)
                if summary is not None:
                    rooms.append(summary)
            return rooms

        rooms = await self.db.read(q)
        if term:
            needle = term.lower()
            rooms = [
                r
                for r in rooms
                if any(
                    needle in str(r.get(k, "")).lower()
                    for k in ("name", "topic", "canonical_alias")
                )
            ]
        rooms.sort(key=lambda r: (-r["num_joined_members"], r["room_id"]))
        total = len(rooms)
        end = total if limit is None else min(total, offset + min(limit, MAX_PUBLIC_LIMIT))
        body: dict[str, Any] = {"chunk": rooms[offset:end], "total_room_count_estimate": total}
        if end < total:
            body["next_batch"] = f"o{end}"
        if offset > 0:
            body["prev_batch"] = f"o{max(0, offset - (limit or total))}"
        return body


async def _summary(t: Txn, room_id: str) -> dict[str, Any] | None:
    state = await queries.current_state(t, room_id)
    if not state:
        return None
    by_type = {e.type: e.pdu.get("content", {}) for e in state if e.state_key == ""}
    joined = sum(
        1
        for e in state
        if e.type == "m.room.member" and e.pdu.get("content", {}).get("membership") == "join"
    )
    out: dict[str, Any] = {
        "room_id": room_id,
        "num_joined_members": joined,
        "world_readable": by_type.get("m.room.history_visibility", {}).get("history_visibility")
        == "world_readable",
        "guest_can_join": by_type.get("m.room.guest_access", {}).get("guest_access") == "can_join",
        "join_rule": by_type.get("m.room.join_rules", {}).get("join_rule", "invite"),
    }
    for event_type, key, field in (
        ("m.room.name", "name", "name"),
        ("m.room.topic", "topic", "topic"),
        ("m.room.canonical_alias", "alias", "canonical_alias"),
        ("m.room.avatar", "url", "avatar_url"),
    ):
        value = by_type.get(event_type, {}).get(key)
        if isinstance(value, str) and value:
            out[field] = value
    room_type = by_type.get("m.room.create", {}).get("type")
    if isinstance(room_type, str):
        out["room_type"] = room_type
    return out


async def may_manage_aliases(rs: RoomQueries, room_id: str, user_id: str) -> bool:
    """Whether the user may delete others' aliases of the room: joined, with the power to
    set its `m.room.canonical_alias` (as Synapse decides)."""
    try:
        state = await rs.current_state_events(
            room_id,
            [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", user_id)],
        )
    except UnknownRoomError:
        return False
    member = state.get(("m.room.member", user_id))
    if member is None or member.membership != "join":
        return False
    return get_power_level(user_id, state) >= get_required_level(
        "m.room.canonical_alias", True, state
    )


def without_alias(content: dict[str, Any], alias: str) -> dict[str, Any] | None:
    """The canonical alias content with `alias` removed (from `alias` and `alt_aliases`),
    or None when it does not name it."""
    out = dict(content)
    changed = False
    if out.get("alias") == alias:
        del out["alias"]
        changed = True
    alt = out.get("alt_aliases")
    if isinstance(alt, list) and alias in alt:
        out["alt_aliases"] = [a for a in alt if a != alias]
        changed = True
    return out if changed else None


def check_room_id(room_id: str) -> str:
    if not is_valid_room_id(room_id):
        raise invalid_param(f"Invalid room ID {room_id[:100]!r}")
    return room_id
