"""Third-party identifiers (3PIDs) of accounts, their identity-server bindings, and the
validation sessions of `.../requestToken`.

Spec: client-server-api/_index.md, "Adding Account Administrative Contact Information".
A session proves that whoever holds `client_secret` received the token sent to the
address; only a validated session lets an address be added to an account or used to
register. Tokens are stored as SHA-256 digests, like access tokens. Every method is one
transaction (tables in `myelin.userapi.threepid_migrations`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from myelin.errors import MatrixError
from myelin.storage import Database, IntegrityError, Txn
from myelin.userapi.accounts import now_ms

#: How long a validation session (and its token) may be used.
SESSION_LIFETIME_MS = 24 * 3600 * 1000
MEDIA = ("email", "msisdn")


def canonical_address(medium: str, address: str) -> str:
    """E-mail addresses compare case-insensitively (the reference server lowers them)."""
    address = address.strip()
    return address.lower() if medium == "email" else address


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Threepid:
    medium: str
    address: str
    validated_at: int
    added_at: int

    def to_json(self) -> dict[str, object]:
        return {
            "medium": self.medium,
            "address": self.address,
            "validated_at": self.validated_at,
            "added_at": self.added_at,
        }


@dataclass(frozen=True, slots=True)
class NewSession:
    """A requestToken answer: the session, and the token to send if one must be sent."""

    session_id: str
    token: str | None


@dataclass(frozen=True, slots=True)
class ValidatedSession:
    medium: str
    address: str
    validated_at: int


async def _owner(t: Txn, medium: str, address: str) -> str | None:
    """The account holding a (canonical) address, if any."""
    value = await t.fetchval(
        "SELECT user_id FROM user_threepids WHERE medium = ? AND address = ?", medium, address
    )
    return None if value is None else str(value)


async def _unbind(t: Txn, user_id: str, medium: str, address: str, id_server: str) -> None:
    """Forget that this server bound the address to the user on `id_server`."""
    await t.execute(
        "DELETE FROM user_threepid_id_servers WHERE user_id = ? AND medium = ?"
        " AND address = ? AND id_server = ?",
        user_id,
        medium,
        address,
        id_server,
    )


class ThreepidStore:
    """The 3PID tables of one homeserver."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, db: Database) -> ThreepidStore:
        await db.migrate("threepids", "myelin.userapi.threepid_migrations")
        return cls(db)

    # -- validation sessions -----------------------------------------------------------

    async def request_token(
        self,
        medium: str,
        address: str,
        client_secret: str,
        send_attempt: int,
        next_link: str | None,
    ) -> NewSession:
        """Open (or find) the session of (client_secret, medium, address).

        The same `send_attempt` again is a retry of the same request: the same session and
        no new message (`token` None). A higher one issues a fresh token to send."""
        address = canonical_address(medium, address)
        token = secrets.token_urlsafe(24)

        async def txn(t: Txn) -> NewSession:
            now = now_ms()
            await t.execute(
                "DELETE FROM threepid_sessions WHERE created_at < ?", now - SESSION_LIFETIME_MS
            )
            row = await t.fetchone(
                "SELECT session_id, last_send_attempt FROM threepid_sessions"
                " WHERE client_secret = ? AND medium = ? AND address = ?",
                client_secret,
                medium,
                address,
            )
            if row is not None:
                session_id, last = str(row[0]), int(row[1])
                if send_attempt <= last:
                    return NewSession(session_id, None)
                await t.execute(
                    "UPDATE threepid_sessions SET last_send_attempt = ?, token_digest = ?,"
                    " next_link = ? WHERE session_id = ?",
                    send_attempt,
                    _digest(token),
                    next_link,
                    session_id,
                )
                return NewSession(session_id, token)
            session_id = secrets.token_urlsafe(12)
            await t.execute(
                "INSERT INTO threepid_sessions (session_id, medium, address, client_secret,"
                " last_send_attempt, token_digest, next_link, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                session_id,
                medium,
                address,
                client_secret,
                send_attempt,
                _digest(token),
                next_link,
                now,
            )
            return NewSession(session_id, token)

        return await self.db.run(txn)

    async def submit_token(self, session_id: str, client_secret: str, token: str) -> str | None:
        """Mark the session validated if the token is its current one; its `next_link`.

        M_THREEPID_AUTH_FAILED (400) for an unknown session, wrong secret or token."""

        async def txn(t: Txn) -> str | None:
            row = await t.fetchone(
                "SELECT client_secret, token_digest, next_link, created_at, validated_at"
                " FROM threepid_sessions WHERE session_id = ?",
                session_id,
            )
            if (
                row is None
                or not hmac.compare_digest(str(row[0]), client_secret)
                or not hmac.compare_digest(str(row[1]), _digest(token))
                or int(row[3]) < now_ms() - SESSION_LIFETIME_MS
            ):
                raise MatrixError(400, "M_THREEPID_AUTH_FAILED", "Unknown session or bad token")
            if row[4] is None:
                await t.execute(
                    "UPDATE threepid_sessions SET validated_at = ? WHERE session_id = ?",
                    now_ms(),
                    session_id,
                )
            return None if row[2] is None else str(row[2])

        return await self.db.run(txn)

    async def validated(self, session_id: str, client_secret: str) -> ValidatedSession | None:
        """The address a session proved, None if unknown, expired or not validated yet."""
        row = await self.db.read(
            lambda t: t.fetchone(
                "SELECT medium, address, validated_at, created_at, client_secret"
                " FROM threepid_sessions WHERE session_id = ?",
                session_id,
            )
        )
        if (
            row is None
            or row[2] is None
            or not hmac.compare_digest(str(row[4]), client_secret)
            or int(row[3]) < now_ms() - SESSION_LIFETIME_MS
        ):
            return None
        return ValidatedSession(str(row[0]), str(row[1]), int(row[2]))

    # -- 3PIDs of accounts ---------------------------------------------------------------

    async def add(self, user_id: str, medium: str, address: str, validated_at: int) -> None:
        """Give the account this address; M_THREEPID_IN_USE if another account has it."""
        address = canonical_address(medium, address)

        async def txn(t: Txn) -> None:
            owner = await _owner(t, medium, address)
            if owner == user_id:
                return
            if owner is not None:
                raise MatrixError(400, "M_THREEPID_IN_USE", "Address is already in use")
            await t.execute(
                "INSERT INTO user_threepids (medium, address, user_id, validated_at, added_at)"
                " VALUES (?, ?, ?, ?, ?)",
                medium,
                address,
                user_id,
                validated_at,
                now_ms(),
            )

        try:
            await self.db.run(txn)
        except IntegrityError:
            raise MatrixError(400, "M_THREEPID_IN_USE", "Address is already in use") from None

    async def remove(self, user_id: str, medium: str, address: str) -> bool:
        """Take the address off the account; False if it had no such address."""
        address = canonical_address(medium, address)
        changed = await self.db.run(
            lambda t: t.execute(
                "DELETE FROM user_threepids WHERE user_id = ? AND medium = ? AND address = ?",
                user_id,
                medium,
                address,
            )
        )
        return changed > 0

    async def of_user(self, user_id: str) -> list[Threepid]:
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT medium, address, validated_at, added_at FROM user_threepids"
                " WHERE user_id = ? ORDER BY added_at, medium, address",
                user_id,
            )
        )
        return [Threepid(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    async def owner(self, medium: str, address: str) -> str | None:
        """The account an address belongs to (login with a 3PID identifier)."""
        address = canonical_address(medium, address)
        return await self.db.read(lambda t: _owner(t, medium, address))

    # -- identity-server bindings --------------------------------------------------------

    async def add_binding(self, user_id: str, medium: str, address: str, id_server: str) -> None:
        address = canonical_address(medium, address)

        async def txn(t: Txn) -> None:
            await _unbind(t, user_id, medium, address, id_server)
            await t.execute(
                "INSERT INTO user_threepid_id_servers (user_id, medium, address, id_server)"
                " VALUES (?, ?, ?, ?)",
                user_id,
                medium,
                address,
                id_server,
            )

        await self.db.run(txn)

    async def remove_binding(self, user_id: str, medium: str, address: str, id_server: str) -> None:
        address = canonical_address(medium, address)
        await self.db.run(lambda t: _unbind(t, user_id, medium, address, id_server))

    async def bindings(
        self, user_id: str, medium: str | None = None, address: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(medium, address, id_server) this server bound for the user, optionally of one
        address only."""
        rows = await self.db.read(
            lambda t: t.fetchall(
                "SELECT medium, address, id_server FROM user_threepid_id_servers"
                " WHERE user_id = ? ORDER BY medium, address, id_server",
                user_id,
            )
        )
        out = [(str(r[0]), str(r[1]), str(r[2])) for r in rows]
        if medium is not None and address is not None:
            address = canonical_address(medium, address)
            out = [b for b in out if b[0] == medium and b[1] == address]
        return out

    async def remove_all(self, user_id: str) -> None:
        """Forget every address of a deactivated account."""

        async def txn(t: Txn) -> None:
            await t.execute("DELETE FROM user_threepids WHERE user_id = ?", user_id)
            await t.execute("DELETE FROM user_threepid_id_servers WHERE user_id = ?", user_id)

        await self.db.run(txn)
