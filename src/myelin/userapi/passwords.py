"""Password hashing: scrypt from the standard library, in a worker thread.

Stored form: `scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`, so the cost can be raised later
without invalidating old hashes. Hashing costs tens of milliseconds on purpose; it runs off
the event loop so that it never stalls other requests.

Each hash needs 128 * r * n bytes (16 MiB at n = 2^14, r = 8, the OWASP minimum for scrypt).
Hashes run on their own small pool, not the loop's default executor: with one hash per
default-executor thread, every thread's malloc arena kept its 16 MiB after the hash (about
100 MB for a burst of registrations). The pool bounds how many hashes hold memory at once;
`myelin.server.main` also makes glibc return such large blocks to the system when freed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor

_LOG_N = 14
_R = 8
_P = 1
#: Concurrent hashes: two use both cores of a small machine and hold at most 32 MiB.
HASH_WORKERS = 2
_pool = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="password-hash")


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
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, hash_password_sync, password)


async def check_password(password: str, stored: str | None) -> bool:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, check_password_sync, password, stored)
