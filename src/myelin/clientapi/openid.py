"""OpenID tokens: a user proves their identity to a third party (an integration manager,
a widget) without handing over their access token (client-server openid.yaml,
server-server openid.yaml).

`POST /user/{userId}/openid/request_token` issues a short-lived opaque token; the third
party exchanges it at `GET /_matrix/federation/v1/openid/userinfo` for the user ID. Only
a hash of each token is stored, with its expiry; expired ones are swept on issue.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from myelin.clientapi.http import MatrixError, Request, Response, json_response
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.storage import Database, Migration, Txn

COMPONENT = "openid"
MIGRATIONS = [
    Migration(
        1,
        """
CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ms);
""",
    )
]
#: Lifetime of a token, in seconds (the reference server's choice: one hour).
TOKEN_LIFETIME_S = 3600
USERINFO_PATH = "/_matrix/federation/v1/openid/userinfo"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


class OpenIDTokens:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.migrate(COMPONENT, MIGRATIONS)

    async def issue(self, user_id: str) -> str:
        token = secrets.token_urlsafe(32)
        now = _now_ms()

        async def txn(t: Txn) -> None:
            await t.execute("DELETE FROM openid_tokens WHERE expires_ms <= ?", now)
            await t.execute(
                "INSERT INTO openid_tokens (token_hash, user_id, expires_ms) VALUES (?, ?, ?)",
                _digest(token),
                user_id,
                now + TOKEN_LIFETIME_S * 1000,
            )

        await self.db.run(txn)
        return token

    async def user_of(self, token: str) -> str | None:
        """The user a live token was issued to, or None (unknown or expired)."""
        row = await self.db.read(
            lambda t: t.fetchone(
                "SELECT user_id, expires_ms FROM openid_tokens WHERE token_hash = ?",
                _digest(token),
            )
        )
        if row is None or int(row[1]) <= _now_ms():
            return None
        return str(row[0])


async def install(router: Router, db: Database, server_name: str) -> OpenIDTokens:
    tokens = OpenIDTokens(db)
    await tokens.open()

    async def request_token(req: Request) -> Response:
        who = req.user()
        if req.params["user_id"] != who.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "Cannot request OpenID tokens for other users")
        req.json_or_empty()  # the body is an empty object; anything else is malformed
        token = await tokens.issue(who.user_id)
        return json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "matrix_server_name": server_name,
                "expires_in": TOKEN_LIFETIME_S,
            }
        )

    async def userinfo(req: Request) -> Response:
        token = req.query_param("access_token")
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access_token")
        user_id = await tokens.user_of(token)
        if user_id is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown or expired OpenID token")
        return json_response({"sub": user_id})

    paths = [p + "/user/{user_id}/openid/request_token" for p in CLIENT_PREFIXES]
    router.add("POST", paths, request_token, auth=True)
    router.add("GET", USERINFO_PATH, userinfo)
    return tokens
