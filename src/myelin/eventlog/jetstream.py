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
import uuid
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self

import nats
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

DEFAULT_SERVERS = "nats://127.0.0.1:4222"
_STREAMED_READ = 16  # reads of this many records or more use a consumer
_HEADER_ALLOWANCE = 512  # bytes of a message's limit taken by subject and headers


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
    (streams on one server must not overlap); `replicas` its replication factor.
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
    ) -> None:
        self._servers = servers
        self._stream = stream
        self._prefix = subject_prefix
        self._bucket = f"{stream}_readers"
        self._replicas = replicas
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._committer = GroupCommitter(
            self._write, max_batch_bytes=max_batch_bytes, name=f"the JetStream stream {stream}"
        )
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._head = 0
        self._opened = False
        self._closed = False
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
                await self._nc.close()
            raise
        await self._committer.start()
        return self

    async def _connect(self) -> None:
        async def ignore(_error: Exception) -> None:
            """Connection errors surface as failed calls; nothing to log twice."""

        try:
            # The client's own connect timeout does not always fire when the server
            # refuses the connection, so bound the whole attempt here as well.
            async with asyncio.timeout(self._connect_timeout + 1):
                self._nc = await nats.connect(
                    self._servers,
                    connect_timeout=self._connect_timeout,
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                    error_cb=ignore,
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
        await self._committer.done.wait()
        if self._closed:
            await self._released.wait()
            return
        self._closed = True
        self._closed_event.set()
        try:
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

    async def _write(self, records: list[LogRecord]) -> int:
        """One group commit: publish the whole batch at once, then wait for every ack.

        The publishes are pipelined on one connection, so the server stores them in
        order. They are chained so that a refusal stops the rest of the batch: the first
        message expects the stream to end at the offset before it, and each later one
        expects the previous message's ID to be the last stored. A second writer can
        therefore never interleave with a batch, even halfway through it.
        """
        first = self._head + 1
        loop = asyncio.get_running_loop()
        waiting: list[asyncio.Future[Any]] = []
        for i, record in enumerate(records):
            offset = first + i
            headers = {Header.MSG_ID.value: f"{self._writer_id}:{offset}"}
            if i == 0:
                headers[Header.EXPECTED_LAST_SEQUENCE.value] = str(offset - 1)
            else:
                headers[Header.EXPECTED_LAST_MSG_ID.value] = f"{self._writer_id}:{offset - 1}"
            ack: asyncio.Future[Any] = loop.create_future()
            self._acks[str(offset)] = ack
            waiting.append(ack)
            await self._nc.publish(
                self._subject(record.room_id),
                record.payload,
                reply=f"{self._ack_inbox}.{offset}",
                headers=headers,
            )
        try:
            replies = await asyncio.wait_for(asyncio.gather(*waiting), self._timeout)
        finally:
            for offset in range(first, first + len(records)):
                self._acks.pop(str(offset), None)
        for i, reply in enumerate(replies):
            self._check_ack(reply, first + i)
        self._head = first + len(records) - 1
        self._bytes_written += sum(len(r.payload) for r in records)
        return first

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
        info = await self._js.stream_info(self._stream)
        self._head = max(self._head, info.state.last_seq)
        return self._head

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
            msg = await self._js.get_msg(self._stream, seq=offset, direct=True)
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
        # Longer ranges: a short-lived pull consumer hands them over in one fetch.
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
            await sub.unsubscribe()
            with contextlib.suppress(nats.errors.Error):
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
            await asyncio.wait([pending, closed], return_when=asyncio.FIRST_COMPLETED)
            if self._closed or pending.cancelled():
                return
            sub, pending = pending.result(), None
            while True:
                pending = asyncio.ensure_future(sub.next_msg(timeout=None))
                await asyncio.wait([pending, closed], return_when=asyncio.FIRST_COMPLETED)
                if self._closed or pending.cancelled():
                    return
                msg, pending = pending.result(), None
                offset = msg.metadata.sequence.stream
                # A start beyond the end makes the server start at the end: skip ahead.
                if offset >= from_offset:
                    yield self._entry(offset, msg.subject, msg.data)
        finally:
            for waiter in (closed, pending):
                if waiter is not None and not waiter.done():
                    waiter.cancel()
                    await asyncio.wait([waiter])
            if sub is not None and not self._nc.is_closed:
                await sub.unsubscribe()

    # ------------------------------------------------------------------ reader offsets

    async def get_committed(self, reader: str) -> int:
        self._check_readable()
        check_reader_name(reader)
        try:
            entry = await self._kv.get(reader)
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
        await self._kv.put(reader, str(offset).encode("ascii"))
