"""One outgoing aiohttp session per client of other services, made when first needed.

Clients of application services and identity servers each keep a connection pool for the
process, opened on their first request and closed at shutdown. aiohttp (about 11 MB
resident) is imported only then: a server that never talks to another one does not pay
for it.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp


class LazySession:
    """An aiohttp session with a total timeout per request, made on first `get()` (again
    after `close()`)."""

    def __init__(self, timeout: float, *, tls: ssl.SSLContext | bool = True) -> None:
        self.timeout = timeout
        #: The connections' TLS: a context to verify with, True for the default
        #: verification, False for none.
        self.tls = tls
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=self.tls),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
