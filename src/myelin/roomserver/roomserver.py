"""The roomserver: the single writer of room state.

Input (`submit` for one event, `input` for several) is batched: callers queue their
events and whoever holds the input lock processes everything queued so far as one batch
(group commit, no background task). For each event, in order:

1. de-duplicate by event ID;
2. check it against its own auth events (rejected if they don't authorise it, or if one
   of them was rejected);
3. compute the state before it (the state after its prev event, or the resolution of the
   states after its prev events) and check it against that (rejected if not authorised);
4. for new events, check it against the room's current state (soft-failed if not);
5. compute the state after it, the new forward extremities and current state.

The batch's log records (event, status, state before it as a delta, change of current
state) are appended to the room event log in one call: that append is the commit point.
Only then are the projections written (one transaction) and the callers answered, so no
event ID is returned and no query sees an event before it is durably in the log. If
anything fails after the append, the in-memory model is dropped and the projections are
caught up from the log, the same path `myelin rebuild` and start-up take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from myelin.core.auth import AuthError, auth_types_for_event, check_auth, check_auth_event_list
from myelin.core.events import Event, StateKey
from myelin.core.roomversions import RoomVersion, room_version
from myelin.core.stateres import resolve_state
from myelin.eventlog.api import EventLog, LogRecord
from myelin.roomserver import store
from myelin.roomserver.queries import RoomQueries
from myelin.roomserver.types import (
    InputError,
    InputEvent,
    InputKind,
    InputResult,
    LogPayload,
    Origin,
    RoomserverError,
    StateChange,
    Status,
    diff_state,
)
from myelin.storage import Database, Txn

CREATE: StateKey = ("m.room.create", "")
_EVENT_CACHE_LIMIT = 20_000
_REPLAY_CHUNK = 1000
_AFTER_CACHE_LIMIT = 256
_ROOM_CACHE_LIMIT = 10_000


@dataclass
class _Known:
    """What the decision side knows of an event (committed or in the current batch)."""

    event: Event
    status: Status
    reason: str | None = None
    log_offset: int | None = None
    pending: bool = False


@dataclass
class _Room:
    """The decision side's model of one room. `current` is the current state; when the
    room has one forward extremity, `tip` names it and `current` is its state-after."""

    room_id: str
    version: RoomVersion
    extremities: list[str]
    depth: int
    current: dict[StateKey, str]
    tip: str | None


class _NeedFlush(Exception):
    """The next event needs the state after an event of the batch that is not the tip."""


@dataclass
class _Batch:
    payloads: list[LogPayload] = field(default_factory=list)
    answers: list[tuple[asyncio.Future[InputResult], int | None, _Known]] = field(
        default_factory=list
    )


async def replay(
    db: Database,
    log: EventLog,
    writer: store.ProjectionWriter,
    from_offset: int,
    progress: Any = None,
) -> int:
    """Apply every log record from `from_offset` on; returns the last offset applied."""
    last = from_offset - 1
    head = await log.head()
    while True:
        entries = await log.read(last + 1, _REPLAY_CHUNK)
        if not entries:
            return last
        payloads = [(LogPayload.decode(e.record.payload), e.offset) for e in entries]

        async def apply(t: Txn, payloads: list[tuple[LogPayload, int]] = payloads) -> None:
            await writer.apply_batch(t, payloads)

        try:
            await db.run(apply, durable=False)
        except BaseException:
            writer.reset()
            raise
        last = entries[-1].offset
        if progress is not None:
            progress(last, max(head, last))


class Roomserver(RoomQueries):
    """Open with `await Roomserver.open(db, log)`; see the module docstring."""

    def __init__(self, db: Database, log: EventLog) -> None:
        super().__init__(db)
        self.log = log
        self._writer = store.ProjectionWriter()
        self._rooms: dict[str, _Room] = {}
        self._known: dict[str, _Known] = {}
        self._absent: set[str] = set()
        self._after: dict[str, dict[StateKey, str]] = {}
        self._broken: RoomserverError | None = None
        self._queue: list[tuple[InputEvent, asyncio.Future[InputResult]]] = []
        self._lock = asyncio.Lock()
        self.batches = 0
        """How many batches were committed (for tests and benchmarks)."""

    @classmethod
    async def open(cls, db: Database, log: EventLog) -> Roomserver:
        """Migrate the schema and catch the projections up with the log."""
        await db.migrate(store.COMPONENT, store.MIGRATIONS)
        server = cls(db, log)
        await server._catch_up()
        return server

    async def _catch_up(self) -> None:
        start = await self.db.read(store.position)
        await replay(self.db, self.log, self._writer, start + 1)

    # ------------------------------------------------------------------ input

    async def submit(
        self, event: Event, kind: InputKind = InputKind.NEW, origin: Origin = Origin.LOCAL
    ) -> InputResult:
        """Process one event (batched with whatever else is queued); returns once it is
        durably in the log. Raises InputError if it can't be processed at all."""
        [result] = await self.input([InputEvent(event, kind, origin)])
        if isinstance(result, BaseException):
            raise result
        return result

    async def input(self, items: Sequence[InputEvent]) -> list[InputResult | InputError]:
        """Process events in order, in as few batches as possible; one result (or the
        InputError that refused it) per event."""
        if self._broken is not None:
            raise self._broken
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[InputResult]] = []
        for item in items:
            future: asyncio.Future[InputResult] = loop.create_future()
            self._queue.append((item, future))
            futures.append(future)
        while not all(f.done() for f in futures):
            async with self._lock:
                if all(f.done() for f in futures):
                    break
                queued, self._queue = self._queue, []
                if self._broken is not None:
                    for _, future in queued:
                        if not future.done():
                            future.set_exception(self._broken)
                    continue
                await self._process(queued)
        results: list[InputResult | InputError] = []
        for f in futures:
            exc = f.exception()
            if exc is None:
                results.append(f.result())
            elif isinstance(exc, InputError):
                results.append(exc)
            else:
                raise exc
        return results

    async def _process(self, queued: list[tuple[InputEvent, asyncio.Future[InputResult]]]) -> None:
        batch = _Batch()
        self._absent.clear()
        if len(self._known) > _EVENT_CACHE_LIMIT:
            self._known.clear()  # nothing is pending between batches
        try:
            await self._prefetch(
                [i.event.event_id for i, _ in queued]
                + [p for i, _ in queued for p in i.event.prev_event_ids]
                + [a for i, _ in queued for a in i.event.auth_event_ids]
            )
            for item, future in queued:
                while True:
                    try:
                        outcome = await self._decide(item, batch)
                    except _NeedFlush:
                        await self._commit(batch)
                        batch = _Batch()
                        continue
                    except InputError as exc:
                        future.set_exception(exc)
                        break
                    except (KeyError, TypeError, ValueError, AttributeError) as exc:
                        # A malformed event the checks before us let through: refuse it
                        # alone (nothing of it was staged), not the whole batch.
                        future.set_exception(InputError(f"malformed event: {exc!r}"))
                        break
                    if isinstance(outcome, InputResult):
                        future.set_result(outcome)
                    else:
                        batch.answers.append((future, len(batch.payloads) - 1, outcome))
                    break
            await self._commit(batch)
            if len(self._rooms) > _ROOM_CACHE_LIMIT:
                self._rooms.clear()  # nothing is pending now: they reload from the database
        except BaseException as exc:
            # Nothing after the failure point was answered; whatever reached the log is
            # replayed into the projections by the recovery.
            for _, future in queued:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else RoomserverError("cancelled")
                    )
                    future.exception()  # retrieved: the leader re-raises it below
            try:
                await self._recover()
            except Exception as recovery:
                self._broken = RoomserverError(f"the roomserver could not recover: {recovery!r}")
            raise

    async def _commit(self, batch: _Batch) -> None:
        if not batch.payloads:
            for future, _, known in batch.answers:
                future.set_result(self._result(known))
            return
        records = [LogRecord(p.event.room_id, p.encode()) for p in batch.payloads]
        offsets = await self.log.append(records)  # the commit point
        pairs = list(zip(batch.payloads, offsets, strict=True))

        async def apply(t: Txn) -> None:
            await self._writer.apply_batch(t, pairs)

        # Not durable on its own: the log already is, and start-up replays what a power
        # failure may have lost here.
        await self.db.run(apply, durable=False)
        self.batches += 1
        for payload, offset in pairs:
            known = self._known[payload.event.event_id]
            known.log_offset = offset
            known.pending = False
        for future, _, known in batch.answers:
            if not future.done():
                future.set_result(self._result(known))

    async def _recover(self) -> None:
        """After a failure: forget everything in memory and catch up from the log."""
        self._writer.reset()
        self._rooms.clear()
        self._known.clear()
        self._absent.clear()
        self._after.clear()
        await self._catch_up()

    @staticmethod
    def _result(known: _Known, duplicate: bool = False) -> InputResult:
        assert known.log_offset is not None
        return InputResult(
            known.event.event_id, known.status, known.reason, known.log_offset, duplicate
        )

    # ------------------------------------------------------------------ lookups

    def _remember(self, known: _Known) -> None:
        # Never evicted during a batch (state resolution relies on what it loaded);
        # `_process` trims between batches.
        self._known[known.event.event_id] = known

    async def _prefetch(self, event_ids: Iterable[str]) -> None:
        """Load what is stored of these events; remember which are not stored (valid
        while this single writer holds the input lock: nobody else adds events)."""
        missing = list(
            dict.fromkeys(e for e in event_ids if e not in self._known and e not in self._absent)
        )
        if not missing:
            return
        rows = await store.fetch_events(self.db, missing)
        for event, status, extra in rows:
            self._remember(_Known(event, status, extra[2], extra[1]))
        self._absent.update(e for e in missing if e not in self._known)

    async def _get(self, event_id: str) -> _Known | None:
        await self._prefetch([event_id])
        return self._known.get(event_id)

    async def _room(self, room_id: str) -> _Room | None:
        room = self._rooms.get(room_id)
        if room is not None:
            return room

        async def load(t: Txn) -> _Room | None:
            version = await t.fetchval(
                "SELECT room_version FROM rs_rooms WHERE room_id = ?", room_id
            )
            if version is None:
                return None
            ext = await store.extremities(t, room_id)
            current = await store.current_state(t, room_id) or {}
            ids = [e for e, _ in ext]
            return _Room(
                room_id,
                room_version(version),
                ids,
                max((d for _, d in ext), default=0),
                current,
                ids[0] if len(ids) == 1 else None,
            )

        room = await self.db.read(load)
        if room is not None:
            self._rooms[room_id] = room
        return room

    async def _state_after(self, room: _Room, event_id: str) -> dict[StateKey, str]:
        """The state after an event; the room's `current` itself for the tip (don't
        mutate it), a fresh dict otherwise."""
        if event_id == room.tip:
            return room.current
        cached = self._after.get(event_id)
        if cached is not None:
            return cached
        known = await self._get(event_id)
        if known is None:
            raise InputError(f"unknown event {event_id}")
        if known.pending:
            raise _NeedFlush

        async def load(t: Txn) -> dict[StateKey, str] | None:
            snapshot = await t.fetchval(
                "SELECT after_snapshot_nid FROM rs_events WHERE event_id = ?", event_id
            )
            return None if snapshot is None else await store.snapshot_state(t, snapshot)

        state = await self.db.read(load)
        if state is None:
            raise InputError(f"event {event_id} has no known state (an outlier)")
        self._cache_after(event_id, state)
        return state

    def _cache_after(self, event_id: str, state: dict[StateKey, str]) -> None:
        """Keep a state-after for forks and merges. Invariant: a cached dict is never any
        room's `current` (which the linear path mutates in place), so it never changes."""
        self._after[event_id] = state
        if len(self._after) > _AFTER_CACHE_LIMIT:
            del self._after[next(iter(self._after))]

    async def _events_for(
        self, state: dict[StateKey, str], keys: Iterable[StateKey]
    ) -> dict[StateKey, Event]:
        wanted = {k: state[k] for k in keys if k in state}
        await self._prefetch(wanted.values())
        result: dict[StateKey, Event] = {}
        for key, event_id in wanted.items():
            known = self._known.get(event_id)
            if known is not None:
                result[key] = known.event
        return result

    async def _auth_against(self, event: Event, state: dict[StateKey, str]) -> str | None:
        """None if `state` authorises `event`, else the reason."""
        keys = auth_types_for_event(
            event.room_version,
            event_type=event.type,
            sender=event.sender,
            state_key=event.state_key,
            content=event.content,
        )
        auth_state = await self._events_for(state, [CREATE, *keys])
        try:
            check_auth(event, auth_state)
        except AuthError as exc:
            return str(exc)
        return None

    async def _resolve(
        self,
        version: RoomVersion,
        states: list[dict[StateKey, str]],
        extra: Event | None = None,
    ) -> dict[StateKey, str]:
        """State resolution with every event it may need loaded first (the core does no I/O):
        the events of the state sets and their auth chains."""
        frontier = {e for s in states for e in s.values()}
        seen: set[str] = set()
        if extra is not None:
            frontier.discard(extra.event_id)
            frontier.update(extra.auth_event_ids)
            seen.add(extra.event_id)
        while frontier:
            await self._prefetch(frontier)
            seen |= frontier
            nxt: set[str] = set()
            for event_id in frontier:
                known = self._known.get(event_id)
                if known is not None:
                    nxt.update(a for a in known.event.auth_event_ids if a not in seen)
            frontier = nxt

        def fetch(event_id: str) -> Event | None:
            if extra is not None and event_id == extra.event_id:
                return extra
            known = self._known.get(event_id)
            if known is None or known.status is Status.REJECTED:
                return None
            return known.event

        return resolve_state(version, states, fetch)

    # ------------------------------------------------------------------ deciding

    async def _decide(self, item: InputEvent, batch: _Batch) -> InputResult | _Known:
        event = item.event
        existing = await self._get(event.event_id)
        if existing is not None:
            if existing.pending:
                raise _NeedFlush
            return self._result(existing, duplicate=True)
        if not event.room_id or len(event.room_id.encode()) > 255:
            raise InputError("the event has no valid room ID")
        is_create = event.type == "m.room.create" and event.state_key == ""
        room = await self._room(event.room_id)
        if room is not None and room.version != event.room_version:
            raise InputError(
                f"room {event.room_id} is version {room.version.identifier}, "
                f"not {event.room_version.identifier}"
            )
        if item.kind is not InputKind.OUTLIER:
            has_dag = room is not None and bool(room.extremities or room.current)
            if not has_dag and not is_create:
                raise InputError(f"unknown room {event.room_id}")
            if is_create and has_dag:
                raise InputError(f"room {event.room_id} already exists")

        # The event's own auth events.
        auth_ids = list(event.auth_event_ids)
        await self._prefetch(auth_ids)
        auth_known = [self._known.get(a) for a in auth_ids]
        missing = [a for a, k in zip(auth_ids, auth_known, strict=True) if k is None]
        if missing:
            raise InputError(f"missing auth events: {', '.join(missing)}")
        reason = self._check_auth_events(event, [k for k in auth_known if k is not None])
        if reason is None and event.room_version.room_id_from_create_event and not is_create:
            create_id = "$" + event.room_id[1:]
            create = await self._get(create_id)
            if create is None or create.status is Status.REJECTED:
                reason = "the room's create event is unknown or rejected"
            else:
                reason = self._check_with(
                    event, {CREATE: create.event, **self._auth_map(auth_known)}
                )
        elif reason is None:
            reason = self._check_with(event, self._auth_map(auth_known))

        if item.kind is InputKind.OUTLIER:
            status = Status.REJECTED if reason else Status.OUTLIER
            return self._stage(batch, item, status, reason, None, [], has_state=False)

        # The state before the event.
        prevs = list(event.prev_event_ids)
        if is_create:
            if prevs:
                raise InputError("a create event has no prev events")
            before: dict[StateKey, str] = {}
            base: str | None = None
            delta: list[StateChange] = []
            room = _Room(event.room_id, event.room_version, [], 0, {}, None)
        else:
            assert room is not None
            if not prevs:
                raise InputError("the event has no prev events")
            await self._prefetch(prevs)
            unknown = [p for p in prevs if p not in self._known]
            if unknown:
                raise InputError(f"missing prev events: {', '.join(unknown)}")
            if any(self._known[p].event.room_id != event.room_id for p in prevs):
                raise InputError("a prev event is in another room")
            outliers = [p for p in prevs if self._known[p].status is Status.OUTLIER]
            if outliers:
                raise InputError(f"prev events without state (outliers): {', '.join(outliers)}")
            base = prevs[0]
            if len(prevs) == 1:
                before = await self._state_after(room, base)
                delta = []
            else:
                states = [await self._state_after(room, p) for p in prevs]
                before = await self._resolve(room.version, states)
                delta = diff_state(states[0], before)

        if reason is None:
            reason = await self._auth_against(event, before)
        if reason is not None:
            return self._stage(batch, item, Status.REJECTED, reason, base, delta)

        status = Status.ACCEPTED
        if item.kind is InputKind.NEW and not is_create:
            soft = await self._auth_against(event, room.current)
            if soft is not None:
                status, reason = Status.SOFT_FAILED, soft
        if item.kind is not InputKind.NEW or status is not Status.ACCEPTED:
            return self._stage(batch, item, status, reason, base, delta)

        # A new accepted event: extremities and current state move.
        new_ext = [x for x in room.extremities if x not in prevs] + [event.event_id]
        own: list[StateChange] = []
        if event.is_state:
            own = [(event.type, event.state_key or "", event.event_id)]
        if is_create or (room.tip is not None and prevs == [room.tip]):
            # Linear: the state after the event is the current state plus its own entry.
            state_delta = [c for c in own if room.current.get((c[0], c[1])) != c[2]]
            for t, k, e in state_delta:
                assert e is not None
                room.current[(t, k)] = e
        else:
            after = dict(before)
            for t, k, e in own:
                assert e is not None
                after[(t, k)] = e
            if len(new_ext) == 1:
                new_current = after
            else:
                states = [after] + [await self._state_after(room, x) for x in new_ext[:-1]]
                new_current = await self._resolve(room.version, states, event)
                self._cache_after(event.event_id, after)
            state_delta = diff_state(room.current, new_current)
            if room.tip is not None:
                # The old tip's state stops being `current` here: keep it, unchanged.
                self._cache_after(room.tip, room.current)
            room.current = new_current
        room.extremities = new_ext
        room.tip = event.event_id if len(new_ext) == 1 else None
        room.depth = max(room.depth, event.depth) if len(new_ext) > 1 else event.depth
        self._rooms[event.room_id] = room
        return self._stage(
            batch, item, status, None, base, delta, extremities=new_ext, state_delta=state_delta
        )

    @staticmethod
    def _auth_map(known: Sequence[_Known | None]) -> dict[StateKey, Event]:
        return {k.event.state_tuple: k.event for k in known if k is not None}

    @staticmethod
    def _check_auth_events(event: Event, auth_known: Sequence[_Known]) -> str | None:
        rejected = [k.event.event_id for k in auth_known if k.status is Status.REJECTED]
        if rejected:
            return f"auth events were rejected: {', '.join(rejected)}"
        try:
            check_auth_event_list(event, [k.event for k in auth_known])
        except AuthError as exc:
            return str(exc)
        return None

    @staticmethod
    def _check_with(event: Event, auth_state: dict[StateKey, Event]) -> str | None:
        try:
            check_auth(event, auth_state)
        except AuthError as exc:
            return str(exc)
        return None

    def _stage(
        self,
        batch: _Batch,
        item: InputEvent,
        status: Status,
        reason: str | None,
        base: str | None,
        delta: Sequence[StateChange],
        *,
        has_state: bool = True,
        extremities: Sequence[str] | None = None,
        state_delta: Sequence[StateChange] = (),
    ) -> _Known:
        payload = LogPayload(
            event=item.event,
            status=status,
            kind=item.kind,
            origin=item.origin,
            reason=reason,
            before_base=base,
            before_delta=delta,
            has_state=has_state,
            extremities=extremities,
            state_delta=state_delta,
        )
        batch.payloads.append(payload)
        known = _Known(item.event, status, reason, None, pending=True)
        self._remember(known)
        return known
