"""Password hashing: scrypt from the standard library, in a worker thread.

Stored form: `scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`, so the cost can be raised later
without invalidating old hashes. Hashing costs tens of milliseconds on purpose; it runs off
the event loop so that it never stalls other requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os

_LOG_N = 14
_R = 8
_P = 1


def _hash(password: str, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=1 << log_n, r=r, p=p, maxmem=256 * 1024 * 1024
    )


def hash_password_sync(password: str) -> str:
    salt = os.urandom(16)
    digest = _hash(password, salt, _LOG_N, _R, _P)
    b64 = base64.b64encode
    return f"scrypt${_LOG_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password_sync(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, log_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = _hash(password, base64.b64decode(salt), int(log_n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, base64.b64decode(digest))


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(hash_password_sync, password)


async def check_password(password: str, stored: str | None) -> bool:
    return await asyncio.to_thread(check_password_sync, password, stored)
