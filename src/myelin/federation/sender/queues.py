"""Per-destination delivery: one queue and one task per remote server.

A destination's task sends what is queued as transactions (`PUT /send/{txnId}`) of at
most 50 PDUs and 100 EDUs, one at a time, in order. A transaction that fails to arrive
(unreachable, 5xx, 429) is retried, same ID, after an exponential backoff; one the remote
refuses outright (another 4xx) is dropped. A slow or dead server only delays itself.

EDUs are numbered in the order they are queued, so that a component can wait until the
destination has answered the transaction that carried one (`edus_done`).
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
        self._edus_added = 0
        """EDUs ever queued (the number of the last one)."""
        self._edus_done = 0
        """EDUs, in queue order, that went out in an answered transaction or were dropped."""
        self._progress = asyncio.Condition()
        self.failing = False
        """Whether the last attempt to deliver failed (a retry is waiting)."""

    def add_pdu(self, pdu: dict[str, Any]) -> None:
        self.pdus.append(pdu)
        if len(self.pdus) > QUEUE_LIMIT:
            self.pdus.popleft()
        self._ready.set()

    def add_edu(self, edu_type: str, content: Any) -> int:
        """Queue an EDU; its number, for `edus_done`."""
        self.edus.append({"edu_type": edu_type, "content": content})
        self._edus_added += 1
        if len(self.edus) > QUEUE_LIMIT:
            self.edus.popleft()
            self._edus_done += 1  # given up (counted, not tracked: waits are best effort)
        self._ready.set()
        return self._edus_added

    async def edus_done(self, number: int) -> None:
        """Wait until the EDU of that number (and all before it) went out in a
        transaction the destination answered, or was given up."""
        async with self._progress:
            await self._progress.wait_for(lambda: self._edus_done >= number)

    async def run(self) -> None:
        """Deliver for ever (until cancelled)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self.pdus or self.edus:
                pdus = [self.pdus.popleft() for _ in range(min(MAX_PDUS, len(self.pdus)))]
                edus = [self.edus.popleft() for _ in range(min(MAX_EDUS, len(self.edus)))]
                await self._deliver(pdus, edus)
                if edus:
                    self._edus_done += len(edus)
                    async with self._progress:
                        self._progress.notify_all()

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
                self.failing = False
                return
            except FederationError as exc:
                if 400 <= exc.status < 500 and exc.status != 429:
                    log.warning("%s refused transaction %s: %s", self.destination, txn_id, exc)
                    self.failing = False
                    return
                log.info("transaction %s to %s failed: %s", txn_id, self.destination, exc)
                self.failing = True
            await asyncio.sleep(backoff)  # backoff before a retry, not a poll
            backoff = min(backoff * 2, MAX_BACKOFF_S)
