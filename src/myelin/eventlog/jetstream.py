"""The event log on NATS JetStream, for deployments that scale out.

One stream per deployment holds every room's records; a record's subject is
`<prefix>.<room ID in unpadded base64url>` (room IDs contain `.`, `:` and `!`, which
subjects cannot carry verbatim), so consumers can filter by room. Offsets are the
stream's sequence numbers: dense from 1, because the stream is created with deletes and
purges denied and only this log publishes to it. Reader offsets live in a key-value
bucket next to the stream.

- `append` uses the same group commit as the disk log; a batch's messages are
  published back to back and the call returns when JetStream has acknowledged (stored)
  every one. The messages carry expectations (`Nats-Expected-Last-Sequence`, then
  `Nats-Expected-Last-Msg-Id` chained through the batch), so a second writer can never
  interleave with a batch: its publishes are refused instead, and that log refuses
  further appends (`LogFailedError`).
- `read` fetches messages by sequence with direct gets; `tail` is an ordered push
  consumer starting at the requested sequence, so new records are pushed, not polled.

Connection loss (NATS restarting, a network cut): the client reconnects on its own,
forever, and logs what happened. An append in flight when the link dropped is resolved
after the reconnect by looking at the stream: the records of the batch already stored
(recognised by their `Nats-Msg-Id`, `<writer>:<offset>`) are kept and only the rest is
published again, with the same IDs, so JetStream's de-duplication drops any copy the
client still had buffered. An acknowledged record is therefore stored exactly once at
its offset. Appends and reads wait up to `outage_timeout` seconds for NATS to come back,
then fail with `LogUnavailableError` (appends: `LogFailedError`, reopen the log); tails
wait as long as it takes and resume from the offset after the last record they yielded.
`outage_timeout` must stay below the stream's duplicate window (2 minutes by default).

Limits, by JetStream's design: a batch is not atomic across a crash of this process
(some of its messages may be stored without their call having returned), and the
durability of an acknowledged message is the stream's (replicas, and the server's
`sync_interval`), not an fsync here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import nats
import nats.aio.client
import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    Header,
    StorageType,
    StreamConfig,
)

from myelin.eventlog.api import LogEntry, LogRecord, LogStats, check_reader_name
from myelin.eventlog.errors import (
    CorruptLogError,
    EventLogError,
    InvalidRecordError,
    LogClosedError,
    LogUnavailableError,
    OffsetError,
)
from myelin.eventlog.groupcommit import GroupCommitter

log = logging.getLogger("myelin.eventlog.jetstream")
T = TypeVar("T")

DEFAULT_SERVERS = "nats://127.0.0.1:4222"
_STREAMED_READ = 16  # reads of this many records or more use a consumer
_HEADER_ALLOWANCE = 512  # bytes of a message's limit taken by subject and headers
_RECONNECT_WAIT = 0.5  # seconds between reconnection attempts
_RETRY_PAUSE = 0.2  # seconds before retrying a call refused while JetStream starts up
_STILL_AWAY_EVERY = 30.0  # seconds between "NATS is still unreachable" warnings

# Failures that mean "the link to NATS (or JetStream behind it) is not there right now":
# the call is retried once the connection is back, within `outage_timeout`.
_TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.TimeoutError,
    nats.js.errors.ServiceUnavailableError,
    TimeoutError,
    OSError,
)


class _LinkLost(Exception):
    """A batch's publishes or acknowledgements may have been lost (internal)."""


def encode_room(room_id: str) -> str:
    """A subject token for `room_id`: unpadded base64url of its UTF-8 bytes."""
    return base64.urlsafe_b64encode(room_id.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_room(token: str) -> str:
    """The room ID a subject token encodes (inverse of `encode_room`)."""
    padded = token + "=" * (-len(token) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")


class JetStreamEventLog:
    """The event log in a JetStream stream. Use as `async with JetStreamEventLog(...)`.

    `stream` names the deployment's stream; `subject_prefix` the subjects it owns
    (streams on one server must not overlap); `replicas` its replication factor;
    `outage_timeout` how long appends and reads wait for a lost NATS to come back.
    """

    def __init__(
        self,
        *,
        servers: str | list[str] = DEFAULT_SERVERS,
        stream: str = "MYELIN_EVENTS",
        subject_prefix: str = "room",
        replicas: int = 1,
        max_batch_bytes: int = 4 * 1024 * 1024,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        outage_timeout: float = 60.0,
    ) -> None:
        self._servers = servers
        self._stream = stream
        self._prefix = subject_prefix
        self._bucket = f"{stream}_readers"
        self._replicas = replicas
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._outage_timeout = outage_timeout
        # Pulsed (set, then replaced) whenever the connection drops or comes back.
        self._link_changed = asyncio.Event()
        self._down_since: float | None = None
        self._last_warning = 0.0
        self._committer = GroupCommitter(
            self._write, max_batch_bytes=max_batch_bytes, name=f"the JetStream stream {stream}"
        )
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._head = 0
        self._opened = False
        self._closed = False
        self._closing = False  # close() was called: an outage is not waited out any more
        self._closed_event = asyncio.Event()
        self._released = asyncio.Event()
        self._max_payload = 0
        self._writer_id = uuid.uuid4().hex
        self._ack_inbox = ""
        self._acks: dict[str, asyncio.Future[Any]] = {}
        self._bytes_written = 0
        self._reads = 0

    # ------------------------------------------------------------------ opening, closing

    async def __aenter__(self) -> Self:
        if self._opened:
            raise RuntimeError("an event log object can be opened only once")
        self._opened = True
        try:
            await self._connect()
        except BaseException:
            self._committer.close()
            self._closed = True
            self._released.set()
            if self._nc is not None:
                with contextlib.suppress(OSError, nats.errors.Error):
                    await self._nc.close()
            raise
        await self._committer.start()
        return self

    async def _connect(self) -> None:
        self._nc = nats.aio.client.Client()
        try:
            # The client keeps retrying a refused first connection when reconnecting is
            # allowed, so the first attempt is bounded here.
            async with asyncio.timeout(self._connect_timeout + 1):
                await self._nc.connect(
                    self._servers,
                    connect_timeout=self._connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,  # forever: NATS may be restarted any time
                    reconnect_time_wait=_RECONNECT_WAIT,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise LogUnavailableError(
                f"cannot reach NATS at {self._servers} ({exc!r}); the JetStream event log "
                "needs nats-server running with JetStream enabled (-js)"
            ) from exc
        self._js = self._nc.jetstream(timeout=self._timeout)
        self._ack_inbox = self._nc.new_inbox()
        await self._nc.subscribe(f"{self._ack_inbox}.*", cb=self._on_ack)
        self._max_payload = self._nc.max_payload - _HEADER_ALLOWANCE
        try:
            try:
                info = await self._js.stream_info(self._stream)
            except nats.js.errors.NotFoundError:
                info = await self._js.add_stream(
                    StreamConfig(
                        name=self._stream,
                        subjects=[f"{self._prefix}.>"],
                        storage=StorageType.FILE,
                        num_replicas=self._replicas,
                        allow_direct=True,
                        deny_delete=True,
                        deny_purge=True,
                    )
                )
            try:
                self._kv = await self._js.key_value(self._bucket)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self._js.create_key_value(
                    bucket=self._bucket,
                    history=1,
                    storage=StorageType.FILE,
                    replicas=self._replicas,
                )
        except nats.errors.Error as exc:
            raise LogUnavailableError(
                f"JetStream at {self._servers} refused to set up stream {self._stream!r}: "
                f"{exc!r} (is JetStream enabled?)"
            ) from exc
        if info.state.messages and info.state.first_seq != 1:
            raise CorruptLogError(
                f"nats stream {self._stream}",
                0,
                f"the stream starts at sequence {info.state.first_seq}, not 1: records "
                "were removed behind the log's back",
            )
        self._head = info.state.last_seq

    # ------------------------------------------------------------------ the link to NATS

    def _pulse(self) -> None:
        changed, self._link_changed = self._link_changed, asyncio.Event()
        changed.set()

    async def _on_disconnected(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._down_since is None:
            self._down_since = self._last_warning = loop.time()
            log.warning(
                "lost the connection to NATS at %s; reconnecting every %.1f s. Appends and "
                "reads wait up to %.0f s for it, then fail; tails resume when it is back",
                self._servers,
                _RECONNECT_WAIT,
                self._outage_timeout,
            )
        self._pulse()

    async def _on_reconnected(self) -> None:
        since, self._down_since = self._down_since, None
        away = asyncio.get_running_loop().time() - since if since is not None else 0.0
        log.warning("reconnected to NATS at %s after %.1f s", self._servers, away)
        self._pulse()

    async def _on_closed(self) -> None:
        self._pulse()

    async def _on_error(self, error: Exception) -> None:
        """Failed reconnection attempts land here: warn now and then while NATS is away."""
        if self._down_since is None or self._closed:
            return
        now = asyncio.get_running_loop().time()
        if now - self._last_warning >= _STILL_AWAY_EVERY:
            self._last_warning = now
            log.error(
                "NATS at %s has been unreachable for %.0f s (%r); appends are failing. "
                "Start nats-server with JetStream (-js) and its old store directory at that "
                "address; once appends have failed, restart Myelin",
                self._servers,
                now - self._down_since,
                error,
            )

    async def _wait_connected(self, deadline: float | None) -> bool:
        """Wait until the client is connected again; False if the log closes meanwhile.

        Raises LogUnavailableError when `deadline` (loop time) passes first."""
        loop = asyncio.get_running_loop()
        while not self._nc.is_connected:
            if self._closed or self._closing or self._nc.is_closed:
                return False
            changed = self._link_changed
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise LogUnavailableError(
                    f"NATS at {self._servers} has been unreachable for more than "
                    f"{self._outage_timeout:.0f} s; start nats-server with JetStream (-js)"
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await changed.wait()
        return True

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried while the link to NATS is down, for up to outage_timeout."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            try:
                return await call()
            except _TRANSIENT as exc:
                if self._closed:
                    raise LogClosedError(f"the JetStream stream {self._stream} was closed") from exc
                now = loop.time()
                if deadline is None:
                    deadline = now + self._outage_timeout
                if now >= deadline:
                    raise LogUnavailableError(
                        f"{what} failed: NATS at {self._servers} did not answer for "
                        f"{self._outage_timeout:.0f} s ({exc!r})"
                    ) from exc
                log.debug("%s failed (%r); retrying once NATS is back", what, exc)
                if self._nc.is_connected:
                    await asyncio.sleep(_RETRY_PAUSE)  # JetStream still starting up
                elif not await self._wait_connected(deadline):
                    raise LogClosedError(f"the JetStream stream {self._stream} was closed") from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.close()
        finally:
            await self._committer.stop()

    async def close(self) -> None:
        if not self._opened or self._released.is_set():
            return
        self._committer.close()
        self._closing = True
        if self._nc is not None and not self._nc.is_connected:
            self._pulse()  # an append waiting for NATS to come back gives up now
        await self._committer.done.wait()
        if self._closed:
            await self._released.wait()
            return
        self._closed = True
        self._closed_event.set()
        try:
            # Closing while NATS is away fails on the dead socket; there is nothing to flush.
            with contextlib.suppress(OSError, nats.errors.Error):
                await self._nc.close()
        finally:
            self._released.set()

    # ------------------------------------------------------------------ appending

    def _subject(self, room_id: str) -> str:
        return f"{self._prefix}.{encode_room(room_id)}"

    async def append(self, records: Sequence[LogRecord]) -> list[int]:
        if not self._opened:
            raise LogClosedError(f"the JetStream stream {self._stream} is not open")
        for record in records:
            if isinstance(record, LogRecord) and len(record.payload) > self._max_payload:
                raise InvalidRecordError(
                    f"payload is {len(record.payload)} bytes; this NATS server takes at "
                    f"most {self._max_payload}"
                )
        return await self._committer.submit(records)

    def _msg_id(self, offset: int) -> str:
        return f"{self._writer_id}:{offset}"

    async def _write(self, records: list[LogRecord]) -> int:
        """One group commit: publish the whole batch at once, then wait for every ack.

        The publishes are pipelined on one connection, so the server stores them in
        order. They are chained so that a refusal stops the rest of the batch: the first
        message expects the stream to end at the offset before it, and each later one
        expects the previous message's ID to be the last stored. A second writer can
        therefore never interleave with a batch, even halfway through it.

        If the link drops (or the acks do not come), the batch is resolved against the
        stream once NATS is back and its unstored rest is published again.
        """
        first = self._head + 1
        deadline = asyncio.get_running_loop().time() + self._outage_timeout
        stored = 0
        attempt = 0
        while stored < len(records):
            attempt += 1
            try:
                await self._publish(records, first, stored, attempt)
                break
            except _LinkLost as exc:
                loop = asyncio.get_running_loop()
                if loop.time() >= deadline:
                    raise LogUnavailableError(
                        f"NATS at {self._servers} did not take records {first}-"
                        f"{first + len(records) - 1} for {self._outage_timeout:.0f} s ({exc})"
                    ) from exc
                if self._nc.is_connected:
                    await asyncio.sleep(_RETRY_PAUSE)  # JetStream still starting up
                log.warning(
                    "append of records %d-%d interrupted (%s); resolving it against the stream",
                    first,
                    first + len(records) - 1,
                    exc,
                )
                stored = await self._retrying(
                    "resolving an interrupted append",
                    lambda: self._count_stored(records, first, deadline),
                )
        self._head = first + len(records) - 1
        self._bytes_written += sum(len(r.payload) for r in records)
        return first

    async def _publish(
        self, records: list[LogRecord], first: int, start: int, attempt: int
    ) -> None:
        """Publish records[start:] (at offsets first+start...) and check every ack."""
        changed = self._link_changed
        if not self._nc.is_connected:
            raise _LinkLost("not connected")
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[Any]] = []
        tokens: list[str] = []
        try:
            for i in range(start, len(records)):
                record, offset = records[i], first + i
                headers = {Header.MSG_ID.value: self._msg_id(offset)}
                if i == start:
                    headers[Header.EXPECTED_LAST_SEQUENCE.value] = str(offset - 1)
                else:
                    headers[Header.EXPECTED_LAST_MSG_ID.value] = self._msg_id(offset - 1)
                token = f"{attempt}-{offset}"
                ack: asyncio.Future[Any] = loop.create_future()
                self._acks[token] = ack
                tokens.append(token)
                waiting.append(ack)
                await self._nc.publish(
                    self._subject(record.room_id),
                    record.payload,
                    reply=f"{self._ack_inbox}.{token}",
                    headers=headers,
                )
            acks: asyncio.Future[Any] = asyncio.gather(*waiting)
            lost: asyncio.Future[Any] = asyncio.ensure_future(changed.wait())
            try:
                done, _ = await asyncio.wait(
                    {acks, lost}, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                lost.cancel()
            if acks not in done:
                acks.cancel()
                # Its outcome is the cancellation just asked for: nothing to report.
                acks.add_done_callback(lambda f: f.cancelled() or f.exception())
                raise _LinkLost(
                    "the connection dropped" if changed.is_set() else "no acknowledgement in time"
                )
            replies = acks.result()
        except _TRANSIENT as exc:
            raise _LinkLost(repr(exc)) from exc
        finally:
            for token in tokens:
                self._acks.pop(token, None)
        if any(not r.data and (r.headers or {}).get("Status") == "503" for r in replies):
            # No responders: JetStream was stopping or not started yet, nothing stored.
            raise _LinkLost("JetStream did not answer (status 503)")
        for i, reply in enumerate(replies):
            self._check_ack(reply, first + start + i)

    async def _count_stored(self, records: list[LogRecord], first: int, deadline: float) -> int:
        """How many of the batch the stream holds (a prefix, by the chained headers)."""
        if not await self._wait_connected(deadline):
            raise LogClosedError(f"the JetStream stream {self._stream} was closed")
        info = await self._js.stream_info(self._stream)
        last = info.state.last_seq
        if last < first - 1:
            raise EventLogError(
                f"after reconnecting, the stream {self._stream} ends at {last}, before record "
                f"{first - 1} that it had acknowledged: NATS lost stored records (was its "
                "store directory replaced, or the server killed before it synced?)"
            )
        stored = 0
        for offset in range(first, min(last, first + len(records) - 1) + 1):
            msg = await self._js.get_msg(self._stream, seq=offset, direct=True)
            if (msg.headers or {}).get(Header.MSG_ID.value) != self._msg_id(offset):
                raise EventLogError(
                    f"record {offset} of the stream {self._stream} was not written by this "
                    "log; is another writer using the stream?"
                )
            stored += 1
        log.info("%d of %d records of the interrupted append were stored", stored, len(records))
        return stored

    async def _on_ack(self, msg: Any) -> None:
        """Hand a publish acknowledgement (or refusal) to the batch waiting for it."""
        ack = self._acks.pop(msg.subject.rpartition(".")[2], None)
        if ack is not None and not ack.done():
            ack.set_result(msg)

    def _check_ack(self, msg: Any, offset: int) -> None:
        if not msg.data:
            status = (msg.headers or {}).get("Status", "?")
            raise EventLogError(f"no JetStream stream took record {offset} (status {status})")
        reply = json.loads(msg.data)
        error = reply.get("error")
        if error is not None:
            raise EventLogError(
                f"JetStream refused record {offset}: {error.get('description')} "
                f"(code {error.get('err_code')}); is another writer using the stream?"
            )
        if reply.get("seq") != offset or reply.get("stream") != self._stream:
            raise EventLogError(
                f"JetStream stored record {offset} as {reply.get('stream')}#{reply.get('seq')}"
            )

    # ------------------------------------------------------------------ reading

    def _check_readable(self) -> None:
        if self._closed or not self._opened:
            raise LogClosedError(f"the JetStream stream {self._stream} is not open")

    async def head(self) -> int:
        """The last committed offset, as the server knows it (another process may
        have appended since this one last wrote)."""
        self._check_readable()
        info = await self._retrying("reading the stream's end", self._stream_info)
        self._head = max(self._head, info.state.last_seq)
        return self._head

    async def _stream_info(self) -> Any:
        return await self._js.stream_info(self._stream)

    @property
    def stats(self) -> LogStats:
        c = self._committer
        return LogStats(
            appends=c.appends,
            records=c.records,
            batches=c.batches,
            fsyncs=c.batches,
            bytes_written=self._bytes_written,
            disk_reads=self._reads,
        )

    def _entry(self, offset: int, subject: str, data: bytes | None) -> LogEntry:
        token = subject[len(self._prefix) + 1 :]
        try:
            room_id = decode_room(token)
        except (ValueError, binascii.Error) as exc:
            raise CorruptLogError(
                f"nats stream {self._stream}", offset, f"subject {subject!r} names no room"
            ) from exc
        return LogEntry(offset, LogRecord.from_storage(room_id, data or b""))

    async def _get(self, offset: int) -> LogEntry:
        try:
            msg = await self._retrying(
                f"reading record {offset}",
                lambda: self._js.get_msg(self._stream, seq=offset, direct=True),
            )
        except nats.js.errors.NotFoundError as exc:
            raise CorruptLogError(
                f"nats stream {self._stream}", offset, f"record {offset} is missing"
            ) from exc
        return self._entry(offset, msg.subject, msg.data)

    async def read(self, from_offset: int, limit: int = 1000) -> list[LogEntry]:
        self._check_readable()
        if not isinstance(from_offset, int) or from_offset < 1:
            raise OffsetError(f"offsets start at 1; cannot read from {from_offset!r}")
        if not isinstance(limit, int) or limit < 1:
            raise OffsetError(f"limit must be a positive integer, not {limit!r}")
        head = self._head if from_offset <= self._head else await self.head()
        upto = min(head, from_offset + limit - 1)
        count = upto - from_offset + 1
        if count <= 0:
            return []
        self._reads += 1
        if count < _STREAMED_READ:
            return list(await asyncio.gather(*map(self._get, range(from_offset, upto + 1))))
        return await self._retrying(
            f"reading records {from_offset}-{upto}", lambda: self._fetch(from_offset, count)
        )

    async def _fetch(self, from_offset: int, count: int) -> list[LogEntry]:
        """Longer ranges: a short-lived pull consumer hands them over in one fetch."""
        name = f"read_{uuid.uuid4().hex}"  # removed below, or by the server when idle
        sub = await self._js.pull_subscribe(
            f"{self._prefix}.>",
            durable=name,
            stream=self._stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=from_offset,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=60.0,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        entries: list[LogEntry] = []
        try:
            while len(entries) < count:
                for msg in await sub.fetch(count - len(entries), timeout=self._timeout):
                    offset = msg.metadata.sequence.stream
                    if offset != from_offset + len(entries):
                        raise CorruptLogError(
                            f"nats stream {self._stream}",
                            offset,
                            f"expected record {from_offset + len(entries)}, got {offset}",
                        )
                    entries.append(self._entry(offset, msg.subject, msg.data))
        finally:
            # During an outage these fail too; the server drops the idle consumer itself.
            with contextlib.suppress(*_TRANSIENT, nats.errors.Error):
                await sub.unsubscribe()
                await self._js.delete_consumer(self._stream, name)
        return entries

    async def tail(self, from_offset: int) -> AsyncIterator[LogEntry]:
        if not isinstance(from_offset, int) or from_offset < 1:
            raise OffsetError(f"offsets start at 1; cannot tail from {from_offset!r}")
        if not self._opened:
            raise LogClosedError(f"the JetStream stream {self._stream} is not open")
        if self._closed:
            return
        closed = asyncio.ensure_future(self._closed_event.wait())
        next_offset = from_offset
        try:
            while not self._closed:
                # Each round is one ordered consumer; a dropped link ends the round and the
                # next one starts at the record after the last one yielded.
                async for entry in self._tail_round(next_offset, closed):
                    next_offset = entry.offset + 1
                    yield entry
                if self._closed or not await self._wait_connected(None):
                    return
        finally:
            if not closed.done():
                closed.cancel()
                await asyncio.wait([closed])

    async def _tail_round(
        self, from_offset: int, closed: asyncio.Future[Any]
    ) -> AsyncIterator[LogEntry]:
        """Records from `from_offset` on, until the link to NATS drops or the log closes."""
        changed = self._link_changed
        lost = asyncio.ensure_future(changed.wait())
        pending: asyncio.Future[Any] | None = None
        sub: Any = None
        try:
            pending = asyncio.ensure_future(
                self._js.subscribe(
                    f"{self._prefix}.>",
                    stream=self._stream,
                    ordered_consumer=True,
                    config=ConsumerConfig(
                        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_offset
                    ),
                )
            )
            await asyncio.wait([pending, closed, lost], return_when=asyncio.FIRST_COMPLETED)
            if self._closed or not pending.done() or pending.cancelled():
                return
            try:
                sub, pending = pending.result(), None
            except _TRANSIENT as exc:
                log.debug("tail from %d could not subscribe (%r); retrying", from_offset, exc)
                if self._nc.is_connected:
                    await asyncio.sleep(_RETRY_PAUSE)  # JetStream still starting up
                return
            expected = from_offset
            while True:
                pending = asyncio.ensure_future(sub.next_msg(timeout=None))
                await asyncio.wait([pending, closed, lost], return_when=asyncio.FIRST_COMPLETED)
                if self._closed or not pending.done() or pending.cancelled():
                    return
                try:
                    msg, pending = pending.result(), None
                except _TRANSIENT:
                    return
                offset = msg.metadata.sequence.stream
                # A start beyond the end makes the server start at the end: skip ahead.
                if offset < expected:
                    continue
                if offset > expected:  # missed records: start a new consumer at the gap
                    return
                expected = offset + 1
                yield self._entry(offset, msg.subject, msg.data)
        finally:
            for waiter in (lost, pending):
                if waiter is not None and not waiter.done():
                    waiter.cancel()
                    await asyncio.wait([waiter])
            if sub is not None and not self._nc.is_closed:
                with contextlib.suppress(*_TRANSIENT, nats.errors.Error):
                    await sub.unsubscribe()

    # ------------------------------------------------------------------ reader offsets

    async def get_committed(self, reader: str) -> int:
        self._check_readable()
        check_reader_name(reader)
        try:
            entry = await self._retrying(
                f"reading reader {reader}'s offset", lambda: self._kv.get(reader)
            )
        except nats.js.errors.KeyNotFoundError:
            return 0
        text = (entry.value or b"").decode("ascii", "replace")
        if not text.isdigit():
            raise CorruptLogError(
                f"nats key-value {self._bucket}/{reader}", 0, f"holds {text[:40]!r}, not a number"
            )
        return int(text)

    async def commit(self, reader: str, offset: int) -> None:
        self._check_readable()
        check_reader_name(reader)
        head = self._head
        if isinstance(offset, int) and offset > head:
            head = await self.head()
        if not isinstance(offset, int) or not 0 <= offset <= head:
            raise OffsetError(
                f"reader {reader!r} cannot commit offset {offset!r}: the log holds 1 to {head}"
            )
        value = str(offset).encode("ascii")
        await self._retrying(
            f"storing reader {reader}'s offset", lambda: self._kv.put(reader, value)
        )
