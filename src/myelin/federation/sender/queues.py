"""Per-destination delivery: one queue and one task per remote server.

A destination's task sends what is queued as transactions (`PUT /send/{txnId}`) of at
most 50 PDUs and 100 EDUs, one at a time, in order. A transaction that fails to arrive
(unreachable, 5xx, 429) is retried, same ID, after an exponential backoff; one the remote
refuses outright (another 4xx) is dropped. A slow or dead server only delays itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import Any

from myelin.federation.client import FederationClient, FederationError, path_segment

log = logging.getLogger("myelin.federation.sender")

MAX_PDUS = 50
MAX_EDUS = 100
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 60.0
QUEUE_LIMIT = 50_000
"""PDUs held for one destination; past it the oldest are dropped (the remote fetches
gaps with /get_missing_events when the next event arrives)."""

_txn_counter = itertools.count()


class DestinationQueue:
    def __init__(self, destination: str, client: FederationClient, origin: str) -> None:
        self.destination = destination
        self.client = client
        self.origin = origin
        self.pdus: deque[dict[str, Any]] = deque()
        self.edus: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self.sent = 0

    def add_pdu(self, pdu: dict[str, Any]) -> None:
        self.pdus.append(pdu)
        if len(self.pdus) > QUEUE_LIMIT:
            self.pdus.popleft()
        self._ready.set()

    def add_edu(self, edu_type: str, content: Any) -> None:
        self.edus.append({"edu_type": edu_type, "content": content})
        if len(self.edus) > QUEUE_LIMIT:
            self.edus.popleft()
        self._ready.set()

    async def run(self) -> None:
        """Deliver for ever (until cancelled)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self.pdus or self.edus:
                pdus = [self.pdus.popleft() for _ in range(min(MAX_PDUS, len(self.pdus)))]
                edus = [self.edus.popleft() for _ in range(min(MAX_EDUS, len(self.edus)))]
                await self._deliver(pdus, edus)

    async def _deliver(self, pdus: list[dict[str, Any]], edus: list[dict[str, Any]]) -> None:
        txn_id = f"{int(time.time() * 1000)}-{next(_txn_counter)}"
        body = {
            "origin": self.origin,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": pdus,
            "edus": edus,
        }
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                await self.client.request(
                    "PUT",
                    self.destination,
                    f"/_matrix/federation/v1/send/{path_segment(txn_id)}",
                    body=body,
                )
                self.sent += 1
                return
            except FederationError as exc:
                if 400 <= exc.status < 500 and exc.status != 429:
                    log.warning("%s refused transaction %s: %s", self.destination, txn_id, exc)
                    return
                log.info("transaction %s to %s failed: %s", txn_id, self.destination, exc)
            await asyncio.sleep(backoff)  # backoff before a retry, not a poll
            backoff = min(backoff * 2, MAX_BACKOFF_S)
