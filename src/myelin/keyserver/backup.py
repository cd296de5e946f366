"""Server-side room-key backups (end_to_end_encryption.md, "Server-side key backups").

Versions are numbered per user from 1; only the newest non-deleted version accepts keys.
Each version keeps an `etag` that changes whenever its keys change, and a key for a
session already stored replaces it only if it is better: verified beats unverified, then
the lower `first_message_index`, then the lower `forwarded_count`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from myelin.core.canonicaljson import encode_canonical_json
from myelin.keyserver.errors import KeyServerError, bad_json, invalid_param, not_found
from myelin.storage import Database, Txn

MAX_ALGORITHM_LENGTH = 255
MAX_ID_LENGTH = 255


@dataclass(frozen=True, slots=True)
class BackupKey:
    """One session's backed-up key: the metadata the server compares and opaque data."""

    first_message_index: int
    forwarded_count: int
    is_verified: bool
    session_data: str

    def better_than(self, other: BackupKey) -> bool:
        """Whether this key should replace `other` (the spec's three rules, in order)."""
        if self.is_verified != other.is_verified:
            return self.is_verified
        if self.first_message_index != other.first_message_index:
            return self.first_message_index < other.first_message_index
        return self.forwarded_count < other.forwarded_count

    def to_json(self) -> dict[str, Any]:
        return {
            "first_message_index": self.first_message_index,
            "forwarded_count": self.forwarded_count,
            "is_verified": self.is_verified,
            "session_data": orjson.loads(self.session_data),
        }


def parse_key(value: Any, where: str) -> BackupKey:
    if not isinstance(value, dict):
        raise bad_json(f"{where} must be an object")
    ints = []
    for name in ("first_message_index", "forwarded_count"):
        n = value.get(name)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise bad_json(f"{where}.{name} must be a non-negative integer")
        ints.append(n)
    verified = value.get("is_verified")
    if not isinstance(verified, bool):
        raise bad_json(f"{where}.is_verified must be a boolean")
    if "session_data" not in value:
        raise bad_json(f"{where}.session_data is required")
    # Opaque to the server like auth_data (the client encrypts it): any JSON value is
    # stored and returned as sent, as Synapse does.
    data = value["session_data"]
    return BackupKey(ints[0], ints[1], verified, encode_canonical_json(data).decode())


def parse_version(text: str | None) -> int:
    """A version from a path or query; absent or malformed versions do not exist."""
    if text is None:
        raise KeyServerError(400, "M_MISSING_PARAM", "Missing 'version'")
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise not_found(f"Unknown backup version {text[:30]!r}")
    return int(text)


def _auth_data(body: dict[str, Any]) -> tuple[str, str]:
    algorithm = body.get("algorithm")
    if not isinstance(algorithm, str) or not algorithm or len(algorithm) > MAX_ALGORITHM_LENGTH:
        raise bad_json("algorithm must be a non-empty string")
    if "auth_data" not in body:
        raise KeyServerError(400, "M_MISSING_PARAM", "Missing 'auth_data'")
    # key_backup.yaml describes auth_data as an object whose shape depends on the
    # algorithm, but the server never interprets it: it is kept and returned exactly as
    # sent. Synapse accepts any JSON value there (and Sytest sends a string), so any value
    # is accepted; the size limit of the request body still applies.
    return algorithm, encode_canonical_json(body["auth_data"]).decode()


#: Keys of one request: room ID -> session ID -> key.
Keys = dict[str, dict[str, BackupKey]]


def parse_rooms(body: dict[str, Any]) -> Keys:
    rooms = body.get("rooms")
    if not isinstance(rooms, dict):
        raise bad_json("rooms must be an object")
    return {room_id: parse_sessions(value, room_id) for room_id, value in rooms.items()}


def parse_sessions(value: Any, room_id: str) -> dict[str, BackupKey]:
    if not isinstance(value, dict) or not isinstance(value.get("sessions"), dict):
        raise bad_json(f"rooms[{room_id}].sessions must be an object")
    if len(room_id) > MAX_ID_LENGTH:
        raise bad_json("room ID too long")
    out: dict[str, BackupKey] = {}
    for session_id, key in value["sessions"].items():
        if len(session_id) > MAX_ID_LENGTH:
            raise bad_json("session ID too long")
        out[session_id] = parse_key(key, f"sessions[{session_id}]")
    return out


class KeyBackup:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ versions

    async def create_version(self, user_id: str, body: dict[str, Any]) -> str:
        algorithm, auth = _auth_data(body)

        async def txn(t: Txn) -> int:
            last = await t.fetchval(
                "SELECT max(version) FROM e2e_backup_versions WHERE user_id = ?", user_id
            )
            version = int(last or 0) + 1
            await t.execute(
                "INSERT INTO e2e_backup_versions (user_id, version, algorithm, auth_data)"
                " VALUES (?, ?, ?, ?)",
                user_id,
                version,
                algorithm,
                auth,
            )
            return version

        return str(await self.db.run(txn))

    async def get_version(self, user_id: str, version: str | None) -> dict[str, Any]:
        """The given version, or the current one when `version` is None."""

        async def q(t: Txn) -> dict[str, Any]:
            if version is None:
                number = await _current(t, user_id)
                if number is None:
                    raise not_found("No current backup version")
            else:
                number = parse_version(version)
            row = await t.fetchone(
                "SELECT algorithm, auth_data, etag FROM e2e_backup_versions"
                " WHERE user_id = ? AND version = ? AND deleted = 0",
                user_id,
                number,
            )
            if row is None:
                raise not_found("Unknown backup version")
            count = await _count(t, user_id, number)
            return {
                "algorithm": row[0],
                "auth_data": orjson.loads(row[1]),
                "count": count,
                "etag": str(row[2]),
                "version": str(number),
            }

        return await self.db.read(q)

    async def update_version(self, user_id: str, version: str, body: dict[str, Any]) -> None:
        number = parse_version(version)
        algorithm, auth = _auth_data(body)
        given = body.get("version")
        if given is not None and given != version:
            raise invalid_param("version in the body does not match the path")

        async def txn(t: Txn) -> None:
            stored = await t.fetchval(
                "SELECT algorithm FROM e2e_backup_versions WHERE user_id = ? AND version = ?"
                " AND deleted = 0",
                user_id,
                number,
            )
            if stored is None:
                raise not_found("Unknown backup version")
            if stored != algorithm:
                raise invalid_param("Algorithm does not match")
            await t.execute(
                "UPDATE e2e_backup_versions SET auth_data = ? WHERE user_id = ? AND version = ?",
                auth,
                user_id,
                number,
            )

        await self.db.run(txn)

    async def delete_version(self, user_id: str, version: str) -> None:
        number = parse_version(version)

        async def txn(t: Txn) -> None:
            changed = await t.execute(
                "UPDATE e2e_backup_versions SET deleted = 1 WHERE user_id = ? AND version = ?"
                " AND deleted = 0",
                user_id,
                number,
            )
            if not changed:
                raise not_found("Unknown backup version")
            await t.execute(
                "DELETE FROM e2e_backup_keys WHERE user_id = ? AND version = ?", user_id, number
            )

        await self.db.run(txn)

    # ------------------------------------------------------------------ keys

    async def put_keys(self, user_id: str, version: str | None, keys: Keys) -> dict[str, Any]:
        """Store keys into the current version (the only writable one)."""
        number = parse_version(version)

        async def txn(t: Txn) -> dict[str, Any]:
            current = await _current(t, user_id)
            if current is None or not await _exists(t, user_id, number):
                raise not_found("Unknown backup version")
            if current != number:
                raise KeyServerError(
                    403,
                    "M_WRONG_ROOM_KEYS_VERSION",
                    "Wrong backup version",
                    current_version=str(current),
                )
            changed = False
            for room_id, sessions in keys.items():
                for session_id, key in sessions.items():
                    row = await t.fetchone(
                        "SELECT first_message_index, forwarded_count, is_verified, session_data"
                        " FROM e2e_backup_keys WHERE user_id = ? AND version = ?"
                        " AND room_id = ? AND session_id = ?",
                        user_id,
                        number,
                        room_id,
                        session_id,
                    )
                    if row is not None:
                        old = BackupKey(int(row[0]), int(row[1]), bool(row[2]), str(row[3]))
                        if not key.better_than(old):
                            continue
                    await t.execute(
                        "INSERT INTO e2e_backup_keys (user_id, version, room_id, session_id,"
                        " first_message_index, forwarded_count, is_verified, session_data)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT"
                        " (user_id, version, room_id, session_id) DO UPDATE SET"
                        " first_message_index = excluded.first_message_index,"
                        " forwarded_count = excluded.forwarded_count,"
                        " is_verified = excluded.is_verified,"
                        " session_data = excluded.session_data",
                        user_id,
                        number,
                        room_id,
                        session_id,
                        key.first_message_index,
                        key.forwarded_count,
                        int(key.is_verified),
                        key.session_data,
                    )
                    changed = True
            if changed:
                await _bump_etag(t, user_id, number)
            return await _etag_count(t, user_id, number)

        return await self.db.run(txn)

    async def get_keys(
        self, user_id: str, version: str | None, room_id: str | None, session_id: str | None
    ) -> dict[str, Any]:
        number = parse_version(version)

        async def q(t: Txn) -> dict[str, Any]:
            if not await _exists(t, user_id, number):
                raise not_found("Unknown backup version")
            sql = (
                "SELECT room_id, session_id, first_message_index, forwarded_count,"
                " is_verified, session_data FROM e2e_backup_keys"
                " WHERE user_id = ? AND version = ?"
            )
            args: list[Any] = [user_id, number]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            rows = await t.fetchall(sql + " ORDER BY room_id, session_id", *args)
            keys: dict[str, dict[str, Any]] = {}
            for r_room, r_session, fmi, fwd, verified, data in rows:
                key = BackupKey(int(fmi), int(fwd), bool(verified), str(data))
                keys.setdefault(r_room, {})[r_session] = key.to_json()
            if session_id is not None:
                found: dict[str, Any] | None = keys.get(str(room_id), {}).get(session_id)
                if found is None:
                    raise not_found("No key for this session")
                return found
            if room_id is not None:
                return {"sessions": keys.get(room_id, {})}
            return {"rooms": {r: {"sessions": s} for r, s in keys.items()}}

        return await self.db.read(q)

    async def delete_keys(
        self, user_id: str, version: str | None, room_id: str | None, session_id: str | None
    ) -> dict[str, Any]:
        number = parse_version(version)

        async def txn(t: Txn) -> dict[str, Any]:
            if not await _exists(t, user_id, number):
                raise not_found("Unknown backup version")
            sql = "DELETE FROM e2e_backup_keys WHERE user_id = ? AND version = ?"
            args: list[Any] = [user_id, number]
            if room_id is not None:
                sql += " AND room_id = ?"
                args.append(room_id)
            if session_id is not None:
                sql += " AND session_id = ?"
                args.append(session_id)
            if await t.execute(sql, *args):
                await _bump_etag(t, user_id, number)
            return await _etag_count(t, user_id, number)

        return await self.db.run(txn)


async def _current(t: Txn, user_id: str) -> int | None:
    value = await t.fetchval(
        "SELECT max(version) FROM e2e_backup_versions WHERE user_id = ? AND deleted = 0", user_id
    )
    return int(value) if value is not None else None


async def _exists(t: Txn, user_id: str, version: int) -> bool:
    value = await t.fetchval(
        "SELECT 1 FROM e2e_backup_versions WHERE user_id = ? AND version = ? AND deleted = 0",
        user_id,
        version,
    )
    return value is not None


async def _count(t: Txn, user_id: str, version: int) -> int:
    value = await t.fetchval(
        "SELECT count(*) FROM e2e_backup_keys WHERE user_id = ? AND version = ?", user_id, version
    )
    return int(value or 0)


async def _bump_etag(t: Txn, user_id: str, version: int) -> None:
    await t.execute(
        "UPDATE e2e_backup_versions SET etag = etag + 1 WHERE user_id = ? AND version = ?",
        user_id,
        version,
    )


async def _etag_count(t: Txn, user_id: str, version: int) -> dict[str, Any]:
    etag = await t.fetchval(
        "SELECT etag FROM e2e_backup_versions WHERE user_id = ? AND version = ?", user_id, version
    )
    return {"etag": str(etag), "count": await _count(t, user_id, version)}
