"""Accounts, devices, access and refresh tokens, filters and UIA sessions.

The user API owns these tables (migrations in `myelin.userapi.migrations`); nothing else
writes them. Every public method is one transaction, so a failed request changes nothing.
Tokens are random, handed to the client once, and stored only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.errors import MatrixError
from myelin.storage import Database, IntegrityError, Txn
from myelin.userapi.passwords import check_password, hash_password

#: Localpart characters a new user may have (appendices.md, "User Identifiers").
_LOCALPART = re.compile(r"^[a-z0-9._=\-/+]+\Z")
MAX_USER_ID_LENGTH = 255
MAX_DEVICE_ID_LENGTH = 255


class UserAPIError(MatrixError):
    """A refusal of the account store; the HTTP layer renders it as-is."""


class ServerNameMismatch(Exception):
    """The database belongs to a server with another name; starting would corrupt it."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What an access token stands for."""

    token_id: int
    user_id: str
    device_id: str
    is_guest: bool


@dataclass(frozen=True, slots=True)
class Session:
    """A freshly issued login: the tokens are shown to the client exactly once."""

    user_id: str
    device_id: str
    access_token: str
    refresh_token: str | None = None
    expires_in_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device_id": self.device_id}
        if self.display_name is not None:
            out["display_name"] = self.display_name
        if self.last_seen_ts is not None:
            out["last_seen_ts"] = self.last_seen_ts
        if self.last_seen_ip is not None:
            out["last_seen_ip"] = self.last_seen_ip
        return out


@dataclass(frozen=True, slots=True)
class Connection:
    """The last request of a device: its address, time and `User-Agent` (if it sent one)."""

    ip: str
    last_seen: int
    user_agent: str | None


def now_ms() -> int:
    return int(time.time() * 1000)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(30)}"


def new_device_id() -> str:
    return "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(10))


class UserAPI:
    """The accounts database of one homeserver."""

    def __init__(self, db: Database, server_name: str, refreshable_lifetime_ms: int) -> None:
        self.db = db
        self.server_name = server_name
        self.refreshable_lifetime_ms = refreshable_lifetime_ms
        #: Called with a user ID after some of their devices were deleted (the key server
        #: drops those devices' keys and announces the device-list change).
        self.on_devices_removed: list[Callable[[str], Awaitable[None]]] = []
        #: Called with a user ID after a device of theirs was added or renamed (other
        #: users' clients learn of it through the device-list stream).
        self.on_device_changed: list[Callable[[str], Awaitable[None]]] = []
        # Every authenticated request looks its token up; the answers are cached here.
        # This object is the only writer of the token tables, so it knows when an entry
        # goes stale: every revocation forgets the user's cached tokens, and bumps the
        # user's generation so that a lookup racing with the revocation is not cached.
        self._tokens: dict[str, tuple[TokenInfo, int | None]] = {}
        self._tokens_of: dict[str, set[str]] = {}
        self._generation: dict[str, int] = {}
        self._last_seen: dict[tuple[str, str], tuple[int, str, str | None]] = {}

    @classmethod
    async def open(
        cls, db: Database, server_name: str, refreshable_lifetime_ms: int = 300_000
    ) -> UserAPI:
        await db.migrate("userapi", "myelin.userapi.migrations")
        existing = await db.read(lambda t: t.fetchval("SELECT user_id FROM users LIMIT 1"))
        if existing is not None and not existing.endswith(f":{server_name}"):
            raise ServerNameMismatch(
                f"this database holds users of another server ({existing}); the server "
                f"name cannot change from {existing.split(':', 1)[1]} to {server_name}"
            )
        return cls(db, server_name, refreshable_lifetime_ms)

    # -- identifiers ---------------------------------------------------------------------

    def user_id_for(self, name: str) -> str:
        """`alice` or `@alice:<server>` as a full user ID of this server (case-folded)."""
        if name.startswith("@"):
            localpart, sep, server = name[1:].partition(":")
            if not sep or server != self.server_name:
                raise UserAPIError(400, "M_INVALID_USERNAME", "Not a user of this server")
        else:
            localpart = name
        return f"@{localpart.lower()}:{self.server_name}"

    def check_new_localpart(self, localpart: str) -> str:
        """The user ID for a new account named `localpart`, or M_INVALID_USERNAME."""
        if not localpart or not _LOCALPART.match(localpart):
            raise UserAPIError(
                400,
                "M_INVALID_USERNAME",
                "User ID may only contain lowercase a-z, 0-9 and the characters ._=-/+",
            )
        user_id = f"@{localpart}:{self.server_name}"
        if len(user_id.encode("utf-8")) > MAX_USER_ID_LENGTH:
            raise UserAPIError(400, "M_INVALID_USERNAME", "User ID is too long")
        return user_id

    # -- accounts ------------------------------------------------------------------------

    async def is_available(self, user_id: str) -> bool:
        row = await self.db.read(
            lambda t: t.fetchone("SELECT 1 FROM users WHERE user_id = ?", user_id)
        )
        return row is None

    async def create_account(
        self,
        user_id: str,
        password: str | None,
        *,
        is_guest: bool = False,
        is_admin: bool = False,
    ) -> None:
        """Create an account, or M_USER_IN_USE if the ID is taken."""
        hashed = await hash_password(password) if password is not None else None

        async def txn(t: Txn) -> None:
            await t.execute(
                "INSERT INTO users (user_id, password_hash, created_ts, is_guest, is_admin)"
                " VALUES (?, ?, ?, ?, ?)",
                user_id,
                hashed,
                now_ms(),
                int(is_guest),
                int(is_admin),
            )
            # Every account starts with its localpart as display name, as on the other
            # servers: clients and bridges show a name (and members carry one) before
            # the user sets their own.
            await t.execute(
                "INSERT INTO profiles (user_id, displayname) VALUES (?, ?)",
                user_id,
                user_id[1:].split(":", 1)[0],
            )

        try:
            await self.db.run(txn)
        except IntegrityError:
            raise UserAPIError(400, "M_USER_IN_USE", "User ID already taken") from None

    async def upgrade_guest(self, user_id: str, password: str | None) -> None:
        """Make a guest account a full one, keeping its user ID (guest_access.md: register
        with the guest's access token). Its cached tokens are dropped so that the next
        request sees a full account; M_FORBIDDEN if it is not a guest (any more)."""
        hashed = await hash_password(password) if password is not None else None

        async def txn(t: Txn) -> bool:
            found = await t.fetchval(
                "SELECT is_guest FROM users WHERE user_id = ? AND deactivated = 0", user_id
            )
            if not found:
                return False
            await t.execute(
                "UPDATE users SET is_guest = 0, password_hash = ? WHERE user_id = ?",
                hashed,
                user_id,
            )
            return True

        try:
            if not await self.db.run(txn):
                raise UserAPIError(403, "M_FORBIDDEN", "Only a guest account can be upgraded")
        finally:
            self._forget_tokens(user_id)

    async def account(self, user_id: str) -> tuple[str | None, bool, bool] | None:
        """(password hash, deactivated, is_guest) of an account, or None."""
        row = await self.db.read(
            lambda t: t.fetchone(
                "SELECT password_hash, deactivated, is_guest FROM users WHERE user_id = ?",
                user_id,
            )
        )
        if row is None:
            return None
        return row[0], bool(row[1]), bool(row[2])

    async def is_admin(self, user_id: str) -> bool:
        value = await self.db.read(
            lambda t: t.fetchval("SELECT is_admin FROM users WHERE user_id = ?", user_id)
        )
        return bool(value)

    async def verify_password(self, user_id: str, password: str) -> bool:
        """Whether `password` is right for an active account (constant work when absent)."""
        info = await self.account(user_id)
        if info is None or info[1]:
            await check_password(password, None)
            return False
        return await check_password(password, info[0])

    async def set_password(
        self, user_id: str, password: str, *, keep_device: str | None, logout_devices: bool
    ) -> None:
        """Change the password; with `logout_devices`, every device but `keep_device` goes."""
        hashed = await hash_password(password)

        async def txn(t: Txn) -> None:
            await t.execute("UPDATE users SET password_hash = ? WHERE user_id = ?", hashed, user_id)
            if logout_devices:
                await t.execute(
                    "DELETE FROM devices WHERE user_id = ? AND device_id <> ?",
                    user_id,
                    keep_device or "",
                )

        try:
            await self.db.run(txn)
        finally:
            self._forget_tokens(user_id)

    async def deactivate(self, user_id: str) -> None:
        """Deactivate for good: no password, no devices, no tokens; the ID stays taken."""

        async def txn(t: Txn) -> None:
            await t.execute(
                "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?",
                user_id,
            )
            await t.execute("DELETE FROM devices WHERE user_id = ?", user_id)
            await t.execute("DELETE FROM user_filters WHERE user_id = ?", user_id)

        try:
            await self.db.run(txn)
        finally:
            self._forget_tokens(user_id)

    # -- sessions and tokens -------------------------------------------------------------

    async def login(
        self,
        user_id: str,
        *,
        device_id: str | None,
        display_name: str | None,
        ip: str | None,
        refreshable: bool = False,
    ) -> Session:
        """Issue tokens for a (new or existing) device of `user_id`.

        An existing device keeps its ID and display name, but every token it had before is
        revoked, as the spec requires for a login naming a known device.
        """
        if device_id is not None and (
            not device_id or len(device_id.encode("utf-8")) > MAX_DEVICE_ID_LENGTH
        ):
            raise UserAPIError(400, "M_INVALID_PARAM", "device_id is empty or too long")
        device = device_id or new_device_id()
        access = _new_token("myl")
        refresh = _new_token("mylr") if refreshable else None
        ts = now_ms()
        valid_until = ts + self.refreshable_lifetime_ms if refreshable else None

        async def txn(t: Txn) -> bool:
            exists = await t.fetchone(
                "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", user_id, device
            )
            if exists is None:
                await t.execute(
                    "INSERT INTO devices (user_id, device_id, display_name, created_ts,"
                    " last_seen_ts, last_seen_ip) VALUES (?, ?, ?, ?, ?, ?)",
                    user_id,
                    device,
                    display_name,
                    ts,
                    ts,
                    ip,
                )
            else:
                await t.execute(
                    "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?",
                    user_id,
                    device,
                )
                await t.execute(
                    "DELETE FROM refresh_tokens WHERE user_id = ? AND device_id = ?",
                    user_id,
                    device,
                )
            await self._insert_tokens(t, user_id, device, access, refresh, ts, valid_until)
            return exists is None

        try:
            created = await self.db.run(txn)
        finally:
            self._forget_tokens(user_id)
        if created:
            for hook in self.on_device_changed:
                await hook(user_id)
        return Session(
            user_id,
            device,
            access,
            refresh,
            self.refreshable_lifetime_ms if refreshable else None,
        )

    async def _insert_tokens(
        self,
        t: Txn,
        user_id: str,
        device: str,
        access: str,
        refresh: str | None,
        ts: int,
        valid_until: int | None,
    ) -> int | None:
        """Store an access token (and its refresh token); returns the refresh token's id."""
        refresh_id = None
        if refresh is not None:
            refresh_id = await t.fetchval(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)"
                " VALUES (?, ?, ?, ?) RETURNING id",
                _digest(refresh),
                user_id,
                device,
                ts,
            )
        await t.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts,"
            " valid_until_ms, refresh_token_id) VALUES (?, ?, ?, ?, ?, ?)",
            _digest(access),
            user_id,
            device,
            ts,
            valid_until,
            refresh_id,
        )
        return int(refresh_id) if refresh_id is not None else None

    async def refresh(self, refresh_token: str) -> Session:
        """Trade a refresh token for a new access and refresh token.

        The old refresh token (and its access token) stay valid until the new pair is
        first used, so a client that lost the answer can refresh again; refreshing again
        replaces the unused pair it was given before."""
        access = _new_token("myl")
        refresh = _new_token("mylr")
        ts = now_ms()

        async def txn(t: Txn) -> tuple[str, str]:
            row = await t.fetchone(
                "SELECT id, user_id, device_id, parent_id FROM refresh_tokens WHERE token_hash = ?",
                _digest(refresh_token),
            )
            if row is None:
                raise UserAPIError(401, "M_UNKNOWN_TOKEN", "Unknown refresh token")
            token_id, user_id, device, parent = row
            if parent is not None:  # using this token makes its predecessor spent
                await t.execute("DELETE FROM refresh_tokens WHERE id = ?", parent)
            # An earlier, never used answer to refreshing this same token is replaced.
            await t.execute("DELETE FROM refresh_tokens WHERE parent_id = ?", token_id)
            new_id = await self._insert_tokens(
                t, user_id, device, access, refresh, ts, ts + self.refreshable_lifetime_ms
            )
            await t.execute(
                "UPDATE refresh_tokens SET parent_id = ? WHERE id = ?", token_id, new_id
            )
            return user_id, device

        user_id, device = await self.db.run(txn)
        self._forget_tokens(user_id)
        return Session(user_id, device, access, refresh, self.refreshable_lifetime_ms)

    async def _retire_refreshed(self, user_id: str, access_token_id: int) -> None:
        """First use of an access token from a refresh: the refresh token it replaced, and
        that token's access token, are revoked now."""

        async def txn(t: Txn) -> int:
            parent = await t.fetchval(
                "SELECT r.parent_id FROM access_tokens a"
                " JOIN refresh_tokens r ON r.id = a.refresh_token_id WHERE a.id = ?",
                access_token_id,
            )
            if parent is None:
                return 0
            await t.execute("DELETE FROM refresh_tokens WHERE id = ?", parent)
            await t.execute(
                "UPDATE refresh_tokens SET parent_id = NULL WHERE parent_id = ?", parent
            )
            return 1

        if await self.db.run(txn):
            self._forget_tokens(user_id)

    async def lookup_token(self, token: str) -> TokenInfo:
        """The owner of an access token; M_UNKNOWN_TOKEN (soft logout if only expired)."""
        digest = _digest(token)
        cached = self._tokens.get(digest)
        if cached is None:
            generations = dict(self._generation)
            row = await self.db.read(
                lambda t: t.fetchone(
                    "SELECT a.id, a.user_id, a.device_id, a.valid_until_ms, u.is_guest,"
                    " u.deactivated, r.parent_id FROM access_tokens a"
                    " JOIN users u ON u.user_id = a.user_id"
                    " LEFT JOIN refresh_tokens r ON r.id = a.refresh_token_id"
                    " WHERE a.token_hash = ?",
                    digest,
                )
            )
            if row is None or row[5]:
                raise UserAPIError(
                    401, "M_UNKNOWN_TOKEN", "Unrecognised access token", soft_logout=False
                )
            cached = (TokenInfo(int(row[0]), row[1], row[2], bool(row[4])), row[3])
            user_id = row[1]
            if row[6] is not None:
                await self._retire_refreshed(user_id, int(row[0]))
            if generations.get(user_id, 0) == self._generation.get(user_id, 0):
                if len(self._tokens) >= TOKEN_CACHE_SIZE:
                    self._tokens.clear()
                    self._tokens_of.clear()
                self._tokens[digest] = cached
                self._tokens_of.setdefault(user_id, set()).add(digest)
        info, valid_until = cached
        if valid_until is not None and valid_until <= now_ms():
            raise UserAPIError(401, "M_UNKNOWN_TOKEN", "Access token has expired", soft_logout=True)
        return info

    async def touch_device(self, info: TokenInfo, ip: str, user_agent: str | None = None) -> None:
        """Record when, from where and with which client a device was last seen: at most
        one write per device every LAST_SEEN_INTERVAL_MS (or on a new address or User-Agent),
        not one per request."""
        key = (info.user_id, info.device_id)
        now = now_ms()
        seen = self._last_seen.get(key)
        if (
            seen is not None
            and seen[1:] == (ip, user_agent)
            and now - seen[0] < LAST_SEEN_INTERVAL_MS
        ):
            return
        if len(self._last_seen) >= TOKEN_CACHE_SIZE:
            self._last_seen.clear()
        self._last_seen[key] = (now, ip, user_agent)
        await self.db.run(
            lambda t: t.execute(
                "UPDATE devices SET last_seen_ts = ?, last_seen_ip = ?, last_seen_user_agent = ?"
                " WHERE user_id = ? AND device_id = ?",
                now,
                ip,
                user_agent,
                info.user_id,
                info.device_id,
            )
        )

    async def connections(self, user_id: str) -> dict[str, Connection | None]:
        """Each device of the user with its last connection (None: never seen)."""
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT device_id, last_seen_ts, last_seen_ip, last_seen_user_agent"
                " FROM devices WHERE user_id = ? ORDER BY device_id",
                user_id,
            )
        )
        return {
            str(device): None if ts is None else Connection(str(ip or ""), int(ts), agent)
            for device, ts, ip, agent in rows
        }

    async def issue_login_token(self, user_id: str, lifetime_ms: int) -> str:
        """A single-use token that logs another client in as `user_id` (m.login.token).

        Stored (as a digest, with its expiry) in the database, so a restart between
        issuing and using it does not break the login; expired tokens are swept here."""
        token = _new_token("mylt")
        digest = _digest(token)

        async def txn(t: Txn) -> bool:
            now = now_ms()
            await t.execute("DELETE FROM login_tokens WHERE expires_at <= ?", now)
            outstanding = await t.fetchval(
                "SELECT count(*) FROM login_tokens WHERE user_id = ?", user_id
            )
            if int(outstanding or 0) >= MAX_LOGIN_TOKENS_PER_USER:
                return False
            await t.execute(
                "INSERT INTO login_tokens (token_digest, user_id, expires_at) VALUES (?, ?, ?)",
                digest,
                user_id,
                now + lifetime_ms,
            )
            return True

        if not await self.db.run(txn):
            raise UserAPIError(429, "M_LIMIT_EXCEEDED", "Too many outstanding login tokens")
        return token

    async def consume_login_token(self, token: str) -> str:
        """The user a login token stands for; the token is spent by this call, valid or not.

        Unknown, already used and expired tokens are all 403 M_FORBIDDEN, as the spec asks.
        """
        digest = _digest(token)
        row = await self.db.run(
            lambda t: t.fetchone(
                "DELETE FROM login_tokens WHERE token_digest = ? RETURNING user_id, expires_at",
                digest,
            )
        )
        if row is None:
            raise UserAPIError(403, "M_FORBIDDEN", "Invalid or already used login token")
        if int(row[1]) <= now_ms():
            raise UserAPIError(403, "M_FORBIDDEN", "Login token has expired")
        return str(row[0])

    def _forget_tokens(self, user_id: str) -> None:
        """Called after every change that may revoke a token of `user_id`."""
        self._generation[user_id] = self._generation.get(user_id, 0) + 1
        for digest in self._tokens_of.pop(user_id, ()):
            self._tokens.pop(digest, None)

    async def logout(self, user_id: str, device_id: str) -> None:
        """End a session: the device and all its tokens go."""
        await self.delete_devices(user_id, [device_id])

    async def logout_all(self, user_id: str) -> None:
        try:
            await self.db.run(lambda t: t.execute("DELETE FROM devices WHERE user_id = ?", user_id))
        finally:
            self._forget_tokens(user_id)
        for hook in self.on_devices_removed:
            await hook(user_id)

    # -- devices -------------------------------------------------------------------------

    async def devices(self, user_id: str) -> list[Device]:
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
                " WHERE user_id = ? ORDER BY device_id",
                user_id,
            )
        )
        return [Device(*row) for row in rows]

    async def device(self, user_id: str, device_id: str) -> Device | None:
        row = await self.db.read(
            lambda t: t.fetchone(
                "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
                " WHERE user_id = ? AND device_id = ?",
                user_id,
                device_id,
            )
        )
        return Device(*row) if row is not None else None

    async def set_device_name(self, user_id: str, device_id: str, name: str | None) -> bool:
        """Rename a device; False when the user has no such device."""
        changed = await self.db.run(
            lambda t: t.execute(
                "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
                name,
                user_id,
                device_id,
            )
        )
        if changed:
            for hook in self.on_device_changed:
                await hook(user_id)
        return changed > 0

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices (unknown ones are ignored) with their tokens."""
        if not device_ids:
            return
        try:
            await self.db.run(
                lambda t: t.execute(
                    "DELETE FROM devices WHERE user_id = ? AND device_id = ANY(?)",
                    user_id,
                    list(device_ids),
                )
            )
        finally:
            self._forget_tokens(user_id)
        for hook in self.on_devices_removed:
            await hook(user_id)

    # -- filters -------------------------------------------------------------------------

    async def add_filter(self, user_id: str, filter_json: dict[str, Any]) -> str:
        text = orjson.dumps(filter_json).decode()

        async def txn(t: Txn) -> int:
            last = await t.fetchval(
                "SELECT max(filter_id) FROM user_filters WHERE user_id = ?", user_id
            )
            filter_id = 0 if last is None else int(last) + 1
            await t.execute(
                "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)",
                user_id,
                filter_id,
                text,
            )
            return filter_id

        return str(await self.db.run(txn))

    async def get_filter(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        if not filter_id.isdigit() or len(filter_id) > 18:
            return None
        text = await self.db.read(
            lambda t: t.fetchval(
                "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
                user_id,
                int(filter_id),
            )
        )
        if text is None:
            return None
        value: dict[str, Any] = orjson.loads(text)
        return value

    # -- user-interactive auth sessions --------------------------------------------------

    async def uia_start(self, method: str, uri: str, user_id: str | None) -> str:
        session = secrets.token_urlsafe(18)
        await self.db.run(
            lambda t: t.execute(
                "INSERT INTO uia_sessions (session_id, created_ts, method, uri, user_id,"
                " completed) VALUES (?, ?, ?, ?, ?, ?)",
                session,
                now_ms(),
                method,
                uri,
                user_id,
                "[]",
            )
        )
        return session

    async def uia_get(self, session: str) -> tuple[str, str, str | None, list[str]] | None:
        """(method, uri, user_id, completed stages) of a live session."""
        row = await self.db.read(
            lambda t: t.fetchone(
                "SELECT method, uri, user_id, completed, created_ts FROM uia_sessions"
                " WHERE session_id = ?",
                session,
            )
        )
        if row is None or row[4] < now_ms() - UIA_SESSION_LIFETIME_MS:
            return None
        return row[0], row[1], row[2], list(orjson.loads(row[3]))

    async def uia_complete_stage(self, session: str, stage: str) -> list[str]:
        async def txn(t: Txn) -> list[str]:
            text = await t.fetchval(
                "SELECT completed FROM uia_sessions WHERE session_id = ?", session
            )
            done: list[str] = list(orjson.loads(text)) if text is not None else []
            if stage not in done:
                done.append(stage)
            await t.execute(
                "UPDATE uia_sessions SET completed = ? WHERE session_id = ?",
                orjson.dumps(done).decode(),
                session,
            )
            return done

        return await self.db.run(txn)

    async def uia_finish(self, session: str) -> None:
        """A session authorises one request only; expired sessions are swept too."""
        cutoff = now_ms() - UIA_SESSION_LIFETIME_MS

        async def txn(t: Txn) -> None:
            await t.execute("DELETE FROM uia_sessions WHERE session_id = ?", session)
            await t.execute("DELETE FROM uia_sessions WHERE created_ts < ?", cutoff)

        await self.db.run(txn)


UIA_SESSION_LIFETIME_MS = 30 * 60 * 1000
TOKEN_CACHE_SIZE = 100_000
#: Unused, unexpired m.login.token tokens one user may hold at once.
MAX_LOGIN_TOKENS_PER_USER = 100
LAST_SEEN_INTERVAL_MS = 5 * 60 * 1000
