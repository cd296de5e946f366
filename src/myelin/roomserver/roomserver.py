"""The roomserver: the single writer of room state, one room at a time.

Input (`submit` for one event, `input` for several) is single-writer per room and
group-committed across rooms, with no background task. Callers queue their events on
their room; whoever holds that room's lock decides everything queued for the room so
far. Rooms are decided concurrently (their auth and state work interleave), the events
of one room strictly in order. For each event:

1. de-duplicate by event ID;
2. check it against its own auth events (rejected if they don't authorise it, or if one
   of them was rejected);
3. compute the state before it (the state after its prev event, or the resolution of the
   states after its prev events) and check it against that (rejected if not authorised);
4. for new events, check it against the room's current state (soft-failed if not);
5. compute the state after it, the new forward extremities and current state.

A room's decided batch then joins the commit queue (FIFO), and whoever holds the commit
lock commits every queued batch, of any number of rooms, at once: their log records
(event, status, state before it as a delta, change of current state) are appended in one
call, which is the commit point, then the projections are written in one transaction
(with those of the followers that are caught up, i.e. the sync reader's) and the callers
answered. So no event ID is returned and no query sees an event before it is durably in
the log. The room's lock is let go once its batch is queued: its next batch is decided
on top of the in-memory model while this one commits (an event that needs an uncommitted
one from the projections waits for that commit), and a local writer may build its next
event on the decided ones (`input(decided=...)`, `local_template`). Concurrent rooms
also share their event look-ups (one read per round); events the server just built
(`fresh`) are looked up in memory only.

If a commit fails, later queued batches of its rooms fail with it (a generation number
refuses anything decided on top of it), those rooms' models are dropped, and no room
decides until the projections have caught up from the log (the path `myelin rebuild`
and start-up take); other rooms' queued batches carry on.

Cancellation: a caller cancelled while its events are still queued on the room withdraws
them. Once decided, they are committed (or fail) before the cancellation completes, so
no room's model ever disagrees with the log, and an acknowledged event is never lost or
stored twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    LatestEvents,
    LogPayload,
    Origin,
    RoomserverError,
    StateChange,
    Status,
    diff_state,
)
from myelin.storage import Database, Txn

log = logging.getLogger("myelin.roomserver")

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


class _Wait(Exception):
    """The decision needs an event of a batch that is not committed yet (its state-after
    is read from the projections, or it is submitted again): commit it first."""

    def __init__(self, event_id: str) -> None:
        super().__init__(event_id)
        self.event_id = event_id


def _stale() -> RoomserverError:
    return RoomserverError("an earlier commit of the room failed")


_Queued = tuple[InputEvent, "asyncio.Future[InputResult]"]


@dataclass
class _Slot:
    """One room's input: what is queued for it, and the lock of its deciding caller."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queue: list[_Queued] = field(default_factory=list)
    users: int = 0


@dataclass
class _Batch:
    """Decided events of one room, waiting for (or in) a group commit."""

    room_id: str
    generation: int
    """The room's generation when deciding began: a failed commit of the room bumps it,
    and a batch decided on top of the failed one is refused."""
    committed: asyncio.Future[None]
    """The outcome of the commit that takes the batch."""
    payloads: list[LogPayload] = field(default_factory=list)
    staged: list[_Known] = field(default_factory=list)
    """What the decision side knows of each payload's event."""
    answers: list[tuple[asyncio.Future[InputResult], int | None, _Known]] = field(
        default_factory=list
    )


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail a future unless it has an outcome (marked retrieved: the caller re-raises)."""
    if not future.done():
        future.set_exception(exc if isinstance(exc, Exception) else RoomserverError("cancelled"))
        future.exception()


def _membership_from_outside(item: InputEvent, room: _Room | None) -> bool:
    """A federated membership outlier of a room whose DAG this server does not have."""
    return (
        item.kind is InputKind.OUTLIER
        and item.origin is Origin.FEDERATED
        and item.event.type == "m.room.member"
        and (room is None or not (room.extremities or room.current))
    )


def _promotable(item: InputEvent, existing: _Known) -> bool:
    """A backfilled event this server holds as an outlier (the state or auth chain of a
    join): decided again, it gets its place in the DAG (state before and after it)."""
    return (
        item.kind is InputKind.BACKFILL
        and existing.status is Status.OUTLIER
        and existing.event.room_id == item.event.room_id
    )


def _unusable(known: _Known, room_id: str, key: StateKey) -> str | None:
    """Why an event may not stand in a room's state at `key` (None if it may): it was
    rejected, it is of another room, it is not a state event, or it is not of that key.
    State given from outside (another server's word) may name any of those, and an
    outlier named in a stored state may be rejected later, when backfill places it."""
    if known.status is Status.REJECTED:
        return "rejected"
    event = known.event
    if event.room_id != room_id:
        return "of another room"
    if not event.is_state:
        return "not a state event"
    if event.state_tuple != key:
        return f"listed under {key}"
    return None


def _room_key(event: Event) -> str:
    """The room an input event is serialised in ("" if it has no usable room ID:
    those are refused by the decision anyway)."""
    try:
        return event.room_id
    except (KeyError, TypeError, ValueError, AttributeError):
        return ""


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


class Follower(Protocol):
    """A reader of the log whose projection may be written in the roomserver's commit
    transaction while it is caught up (the sync reader): one writer round trip per
    commit. Whoever applies records (the follower itself, or the roomserver for it)
    holds `lock` and applies them in order from `position + 1`."""

    lock: asyncio.Lock
    position: int

    async def apply_inline(
        self, t: Txn, items: Sequence[tuple[LogPayload, int]], since: int
    ) -> Any: ...

    def applied(self, result: Any, last: int) -> None: ...


class Roomserver(RoomQueries):
    """Open with `await Roomserver.open(db, log)`; see the module docstring."""

    def __init__(self, db: Database, log: EventLog) -> None:
        super().__init__(db)
        self.log = log
        self._writer = store.ProjectionWriter()
        self._rooms: dict[str, _Room] = {}
        self._known: dict[str, _Known] = {}
        self._absent: set[str] = set()
        self._lookups: set[str] = set()
        self._lookup_round: asyncio.Future[None] | None = None
        self._forgotten = 0
        self._after: dict[str, dict[StateKey, str]] = {}
        self._broken: RoomserverError | None = None
        self._slots: dict[str, _Slot] = {}
        self._commit_queue: list[_Batch] = []
        self._commit_lock = asyncio.Lock()
        self._inflight: list[_Batch] = []
        self._pending: dict[str, _Batch] = {}
        """Staged events not committed yet, and their batch."""
        self._generations: dict[str, int] = {}
        self._recovered = asyncio.Event()
        self._recovered.set()
        self.batches = 0
        """How many batches were committed (for tests and benchmarks)."""
        self.followers: list[Follower] = []
        """Readers applied inline in each commit's projection transaction."""

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

    async def input(
        self,
        items: Sequence[InputEvent],
        *,
        decided: Callable[[], None] | None = None,
    ) -> list[InputResult | InputError]:
        """Process events, each room's in order, in as few commits as possible; one
        result (or the InputError that refused it) per event.

        `decided` is called (perhaps more than once) as soon as the events are decided
        and queued for commit, before the commit: from then on `local_template` builds
        on them, so a local writer may build its room's next event while this one is
        being written."""
        if self._broken is not None:
            raise self._broken
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[InputResult]] = []
        by_room: dict[str, list[asyncio.Future[InputResult]]] = {}
        keys = [_room_key(item.event) for item in items]
        for item, key in zip(items, keys, strict=True):
            future: asyncio.Future[InputResult] = loop.create_future()
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            if key not in by_room:
                slot.users += 1
                by_room[key] = []
            slot.queue.append((item, future))
            by_room[key].append(future)
            futures.append(future)
        try:
            if len(by_room) == 1:
                [(key, mine)] = by_room.items()
                await self._drive(key, mine, decided)
            else:
                async with asyncio.TaskGroup() as tg:
                    for key, mine in by_room.items():
                        tg.create_task(self._drive(key, mine, decided))
        finally:
            for key in by_room:
                slot = self._slots[key]
                # Withdraw what nobody took (only when this caller was cancelled).
                slot.queue = [q for q in slot.queue if q[1] not in futures]
                slot.users -= 1
                if slot.users == 0 and not slot.queue:
                    del self._slots[key]
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

    async def _drive(
        self,
        room_id: str,
        futures: list[asyncio.Future[InputResult]],
        decided: Callable[[], None] | None = None,
    ) -> None:
        """Until these futures are answered: take the room's lock, decide everything
        queued for the room, queue it for commit, let go of the room, see it committed.
        Failures end up in the futures."""
        slot = self._slots[room_id]
        while True:
            undone = {f for f in futures if not f.done()}
            if not undone:
                return
            if not any(f in undone for _, f in slot.queue):
                # Another caller took them: it answers them once they are settled.
                await asyncio.wait(undone)
                continue
            batches: list[_Batch] = []
            async with slot.lock:
                await self._recovered.wait()  # before taking anything: it may be cancelled
                if not any(f in undone for _, f in slot.queue):
                    continue
                queued, slot.queue = slot.queue, []
                if self._broken is not None:
                    for _, future in queued:
                        _fail(future, self._broken)
                    continue
                try:
                    await self._decide_all(room_id, queued, batches)
                except BaseException as exc:
                    # The room's model may be ahead of what will be committed: let its
                    # queued batches settle, then reload it from the projections.
                    cancelled = await self._settle(
                        [b for b in self._open_batches() if b.room_id == room_id]
                    )
                    self._forget_room(room_id)
                    self._answer(batches)
                    for _, future in queued:
                        _fail(future, exc)
                    if cancelled:
                        raise asyncio.CancelledError from exc
                    if not isinstance(exc, Exception):
                        raise
                    continue
            # Outside the room's lock: the room's next batch is decided on top of this one
            # while this one commits, and joins the same or the next commit.
            if decided is not None and all(
                f.done() or self._is_staged(f, batches) for f in futures
            ):
                decided()
            if await self._settle(batches):
                self._answer(batches)
                raise asyncio.CancelledError
            self._answer(batches)

    async def _decide_all(self, room_id: str, queued: list[_Queued], out: list[_Batch]) -> None:
        """Decide one room's queued events in order (holding its lock); every batch of
        staged events is queued for commit and appended to `out`."""
        self._trim()
        batch = self._new_batch(room_id)
        await self._prefetch(
            [i.event.event_id for i, _ in queued if not i.fresh]
            + [p for i, _ in queued for p in i.event.prev_event_ids]
            + [a for i, _ in queued for a in i.event.auth_event_ids]
        )
        try:
            for item, future in queued:
                while True:
                    try:
                        outcome = await self._decide(item, batch)
                    except _Wait as wait:
                        owner = self._pending.get(wait.event_id)
                        if owner is None:
                            raise RoomserverError(
                                f"{wait.event_id} is pending in no batch"
                            ) from wait
                        if owner is batch:
                            staged, batch = batch, self._new_batch(room_id)
                            if not self._enqueue(staged, out):
                                raise _stale() from None
                        await self._settle_or_raise(owner)
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
        except BaseException:
            # What was staged is queued even on failure: the caller lets it settle.
            self._enqueue(batch, out)
            raise
        if not self._enqueue(batch, out):
            raise _stale()

    @staticmethod
    def _is_staged(future: asyncio.Future[InputResult], batches: Sequence[_Batch]) -> bool:
        return any(a[0] is future for b in batches for a in b.answers)

    def _new_batch(self, room_id: str) -> _Batch:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        return _Batch(room_id, self._generations.get(room_id, 0), future)

    def _enqueue(self, batch: _Batch, out: list[_Batch]) -> bool:
        """Queue a decided batch for commit; False (and the batch failed) if it was
        decided on top of a batch whose commit failed."""
        out.append(batch)
        if not batch.payloads:
            batch.committed.set_result(None)
            return True
        if batch.generation != self._generations.get(batch.room_id, 0):
            _fail(batch.committed, _stale())
            self._unpend(batch)
            return False
        self._commit_queue.append(batch)
        out.append(batch)
        return True

    def _unpend(self, batch: _Batch) -> None:
        for payload in batch.payloads:
            if self._pending.get(payload.event.event_id) is batch:
                del self._pending[payload.event.event_id]

    def _open_batches(self) -> list[_Batch]:
        return [*self._inflight, *self._commit_queue]

    async def _settle_or_raise(self, batch: _Batch) -> None:
        await self._commit(batch)
        failure = batch.committed.exception()
        if failure is not None:
            raise failure

    async def _settle(self, batches: Sequence[_Batch]) -> bool:
        """See these batches committed (or failed) even if cancelled meanwhile, so that
        no room is left with a model that disagrees with the log; True if cancelled."""
        cancelled = False
        for batch in batches:
            while not batch.committed.done():
                try:
                    await self._commit(batch)
                except asyncio.CancelledError:
                    cancelled = True
        return cancelled

    async def _commit(self, batch: _Batch) -> None:
        """Return once `batch` is committed or failed: whoever gets the commit lock
        commits everything queued, of every room."""
        while not batch.committed.done():
            async with self._commit_lock:
                if batch.committed.done():
                    break
                group, self._commit_queue = self._commit_queue, []
                if group:
                    await self._commit_group(group)

    def _answer(self, batches: Sequence[_Batch]) -> None:
        for batch in batches:
            failure = batch.committed.exception() if batch.committed.done() else None
            for future, _, known in batch.answers:
                if future.done():
                    continue
                if failure is not None:
                    _fail(future, failure)
                elif batch.committed.done():
                    future.set_result(self._result(known))

    async def _commit_group(self, group: list[_Batch]) -> None:
        """The commit point of several rooms' batches: one log append, then one
        projection transaction. Holds the commit lock; settles every batch of `group`."""
        self._inflight = group
        payloads = [p for b in group for p in b.payloads]
        try:
            records = [LogRecord(p.event.room_id, p.encode()) for p in payloads]
            # Followers are joined before the append (which wakes them) so that they
            # leave these records to this transaction instead of reading them back.
            followers = await self._join_followers(await self.log.head())
            try:
                offsets = await self.log.append(records)  # the commit point
                pairs = list(zip(payloads, offsets, strict=True))
                for follower in [f for f in followers if f.position != offsets[0] - 1]:
                    followers.remove(follower)  # another appender came first
                    follower.lock.release()

                async def apply(t: Txn) -> list[Any]:
                    await self._writer.apply_batch(t, pairs)
                    return [await f.apply_inline(t, pairs, offsets[0] - 1) for f in followers]

                # Not durable on its own: the log already is, and start-up replays what
                # a power failure may have lost here.
                woken = await self.db.run(apply, durable=False)
                for follower, users in zip(followers, woken, strict=True):
                    follower.applied(users, offsets[-1])
            finally:
                for follower in followers:
                    follower.lock.release()
        except BaseException as exc:
            self._inflight = []
            await self._fail_group(group, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._inflight = []
        self.batches += 1
        staged = [k for b in group for k in b.staged]
        for known, offset in zip(staged, offsets, strict=True):
            known.log_offset = offset
            known.pending = False
        for b in group:
            self._unpend(b)
            b.committed.set_result(None)

    async def _join_followers(self, head: int) -> list[Follower]:
        """The followers caught up to `head`, their locks taken. A busy follower is left
        alone: it catches up from the log itself."""
        joined: list[Follower] = []
        for follower in self.followers:
            if follower.lock.locked() or follower.position != head:
                continue
            await follower.lock.acquire()
            if follower.position != head:
                follower.lock.release()
                continue
            joined.append(follower)
        return joined

    async def _fail_group(self, group: list[_Batch], exc: BaseException) -> None:
        """After a failed commit: its rooms' later batches fail with it, their models are
        dropped, and no room decides until the projections have caught up with the log
        (some of the group may be in it)."""
        failure = exc if isinstance(exc, Exception) else RoomserverError("cancelled")
        rooms = {b.room_id for b in group}
        later = [b for b in self._commit_queue if b.room_id in rooms]
        self._commit_queue = [b for b in self._commit_queue if b.room_id not in rooms]
        for room_id in rooms:
            self._generations[room_id] = self._generations.get(room_id, 0) + 1
            self._forget_room(room_id)
        self._recovered.clear()
        try:
            self._writer.reset()
            await self._catch_up()
        except Exception as recovery:
            self._broken = RoomserverError(f"the roomserver could not recover: {recovery!r}")
        except BaseException:
            self._broken = RoomserverError("the roomserver could not recover: cancelled")
            raise
        finally:
            self._recovered.set()
            for b in [*group, *later]:
                self._unpend(b)
                _fail(b.committed, failure)
            for room_id in rooms:
                self._forget_room(room_id)

    def _forget_room(self, room_id: str) -> None:
        """Drop a room's in-memory model and its uncommitted events: it reloads from the
        projections."""
        self._rooms.pop(room_id, None)
        stale = [k for k, v in self._known.items() if v.pending and v.event.room_id == room_id]
        for event_id in stale:
            del self._known[event_id]
            self._after.pop(event_id, None)
        self._absent.clear()
        self._forgotten += 1

    def _trim(self) -> None:
        """Bound the caches; what is pending, or a room being decided, stays."""
        if len(self._known) > _EVENT_CACHE_LIMIT:
            self._known = {k: v for k, v in self._known.items() if v.pending}
            self._absent.clear()
        if len(self._absent) > _EVENT_CACHE_LIMIT:
            self._absent.clear()
        if len(self._rooms) > _ROOM_CACHE_LIMIT:
            self._rooms = {k: v for k, v in self._rooms.items() if k in self._slots}

    @staticmethod
    def _result(known: _Known, duplicate: bool = False) -> InputResult:
        assert known.log_offset is not None
        return InputResult(
            known.event.event_id, known.status, known.reason, known.log_offset, duplicate
        )

    # ------------------------------------------------------------------ lookups

    def _remember(self, known: _Known) -> None:
        # `_trim` evicts what is not pending, even while other rooms decide: whoever
        # needs a set of events at once (state resolution) keeps its own references.
        self._known[known.event.event_id] = known

    async def _prefetch(self, event_ids: Iterable[str]) -> None:
        """Load what is stored of these events; remember which are not stored (only this
        writer adds events, and what it adds is remembered first). Rooms deciding at
        the same time share their reads: whoever finds no read under way reads what
        every room wants so far, the others wait for that round and look again."""
        wanted = [e for e in event_ids if e not in self._known and e not in self._absent]
        while wanted:
            self._lookups.update(wanted)
            if self._lookup_round is not None:
                await asyncio.shield(self._lookup_round)
            else:
                round_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._lookup_round = round_done
                batch, self._lookups = list(self._lookups), set()
                epoch = self._forgotten
                try:
                    rows = await store.fetch_events(self.db, batch)
                    for event, status, extra in rows:
                        if event.event_id not in self._known:  # ours may be newer
                            self._remember(_Known(event, status, extra[2], extra[1]))
                    if epoch == self._forgotten:  # else the read may predate a recovery
                        self._absent.update(e for e in batch if e not in self._known)
                finally:
                    self._lookup_round = None
                    round_done.set_result(None)
            wanted = [e for e in wanted if e not in self._known and e not in self._absent]

    # ------------------------------------------------------------------ queries

    def _settled_room(self, room_id: str) -> _Room | None:
        """The decision side's model of a room when it shows exactly what is committed
        (loaded, not being decided, nothing of it queued or committing), else None.

        The send path asks for the latest events and the auth state of a room before
        every local event; answering those from memory saves database round trips,
        while the projections stay the answer whenever the model may be ahead of them."""
        if self._broken is not None or not self._recovered.is_set():
            return None
        room = self._rooms.get(room_id)
        if room is None:
            return None
        slot = self._slots.get(room_id)
        if slot is not None and (slot.lock.locked() or slot.queue):
            return None
        if any(b.room_id == room_id for b in self._open_batches()):
            return None
        return room

    def local_template(
        self, room_id: str, keys: Iterable[StateKey]
    ) -> tuple[LatestEvents, list[Event], dict[StateKey, Event]] | None:
        """What a new local event of the room builds on, from the decision side's model,
        events decided but not yet committed included: its latest events, the prev
        events themselves, and the current state at `keys`. None when the model cannot
        answer (not loaded, being decided, or something needed is not in memory): then
        ask `latest_events` and `current_state_events`.

        Building on decided events is safe: an event decided on top of a batch whose
        commit fails is refused with it (the room's generation), never committed."""
        if self._broken is not None or not self._recovered.is_set():
            return None
        room = self._rooms.get(room_id)
        if room is None or not room.extremities:
            return None
        slot = self._slots.get(room_id)
        if slot is not None and (slot.lock.locked() or slot.queue):
            return None
        prevs: list[Event] = []
        for event_id in room.extremities:
            known = self._known.get(event_id)
            if known is None:
                return None
            prevs.append(known.event)
        state: dict[StateKey, Event] = {}
        for key in keys:
            state_id = room.current.get(key)
            if state_id is None:
                continue
            known = self._known.get(state_id)
            if known is None:
                return None
            if known.status is not Status.REJECTED:
                state[key] = known.event
        depth = max(e.depth for e in prevs) + 1
        latest = LatestEvents(room_id, room.version.identifier, tuple(room.extremities), depth)
        return latest, prevs, state

    async def latest_events(self, room_id: str) -> LatestEvents:
        room = self._settled_room(room_id)
        if room is None or room.tip is None:
            return await super().latest_events(room_id)
        tip = self._known.get(room.tip)
        if tip is None:
            return await super().latest_events(room_id)
        return LatestEvents(room_id, room.version.identifier, (room.tip,), tip.event.depth + 1)

    async def current_state_events(
        self, room_id: str, keys: Iterable[StateKey] | None = None
    ) -> dict[StateKey, Event]:
        room = self._settled_room(room_id)
        if room is None:
            return await super().current_state_events(room_id, keys)
        current = room.current
        wanted = dict(current) if keys is None else {k: current[k] for k in keys if k in current}
        found: dict[StateKey, Event] = {}
        missing: dict[StateKey, str] = {}
        for key, event_id in wanted.items():
            known = self._known.get(event_id)
            if known is None or known.pending:
                missing[key] = event_id
            elif known.status is not Status.REJECTED:
                found[key] = known.event
        if missing:
            events = await self.events(list(missing.values()))
            found.update({k: events[e] for k, e in missing.items() if e in events})
        return {k: found[k] for k in wanted if k in found}

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
            raise _Wait(event_id)

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
        self, event: Event, state: dict[StateKey, str], keys: Iterable[StateKey]
    ) -> dict[StateKey, Event]:
        """The events of `state` at `keys` that `event` is checked against. One that may
        not stand in the room's state (see `_unusable`) is left out: the state an event
        is authorised against never holds it, whatever state it came from."""
        wanted = {k: state[k] for k in keys if k in state}
        await self._prefetch(wanted.values())
        result: dict[StateKey, Event] = {}
        for key, event_id in wanted.items():
            known = self._known.get(event_id)
            if known is None:
                continue
            why = _unusable(known, event.room_id, key)
            if why is not None:
                log.info("auth of %s: state event %s left out (%s)", event.event_id, event_id, why)
                continue
            result[key] = known.event
        return result

    def _usable_given(self, event: Event, given: Mapping[StateKey, str]) -> dict[StateKey, str]:
        """The state given with `event` (another server's word) without the entries that
        may not stand in its room's state (see `_unusable`), which are logged: neither
        its authorisation nor the snapshot stored for it hold them. A dropped key is left
        out (what a rejected event displaced is not known). Every event is loaded."""
        kept: dict[StateKey, str] = {}
        dropped: list[str] = []
        for key, event_id in given.items():
            why = _unusable(self._known[event_id], event.room_id, key)
            if why is None:
                kept[key] = event_id
            else:
                dropped.append(f"{event_id} ({why})")
        if dropped:
            log.info(
                "state given with %s: %d of %d entries dropped: %s",
                event.event_id,
                len(dropped),
                len(given),
                ", ".join(dropped[:10]),
            )
        return kept

    async def _auth_against(self, event: Event, state: dict[StateKey, str]) -> str | None:
        """None if `state` authorises `event`, else the reason."""
        keys = auth_types_for_event(
            event.room_version,
            event_type=event.type,
            sender=event.sender,
            state_key=event.state_key,
            content=event.content,
        )
        auth_state = await self._events_for(event, state, [CREATE, *keys])
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
        the events of the state sets and their auth chains.

        Identical state sets (a fork of messages, the usual case with concurrent senders)
        have no conflicted entries and equal auth chains, so no auth difference either:
        every resolution algorithm returns that state, without loading any chain."""
        first = states[0]
        if all(s is first or s == first for s in states[1:]):
            return dict(first)  # fresh: the caller may make it a room's `current`
        frontier = {e for s in states for e in s.values()}
        seen: set[str] = set()
        if extra is not None:
            frontier.discard(extra.event_id)
            frontier.update(extra.auth_event_ids)
            seen.add(extra.event_id)
        # Kept here, not only in the shared cache: another room may trim that meanwhile.
        loaded: dict[str, _Known] = {}
        while frontier:
            await self._prefetch(frontier)
            seen |= frontier
            nxt: set[str] = set()
            for event_id in frontier:
                known = self._known.get(event_id)
                if known is not None:
                    loaded[event_id] = known
                    nxt.update(a for a in known.event.auth_event_ids if a not in seen)
            frontier = nxt

        def fetch(event_id: str) -> Event | None:
            if extra is not None and event_id == extra.event_id:
                return extra
            known = loaded.get(event_id)
            if known is None or known.status is Status.REJECTED:
                return None
            return known.event

        return resolve_state(version, states, fetch)

    # ------------------------------------------------------------------ deciding

    async def _decide(self, item: InputEvent, batch: _Batch) -> InputResult | _Known:
        event = item.event
        # A fresh event's ID was just made by hashing it over the room's current
        # extremities: only this writer can have stored it (an identical retry), and what
        # it stored recently is in memory. Anything else is looked up in the database.
        existing = (
            self._known.get(event.event_id) if item.fresh else await self._get(event.event_id)
        )
        if existing is not None:
            if existing.pending and existing.event.room_id != event.room_id:
                raise InputError(f"event ID {event.event_id} is being used in another room")
            if existing.pending:
                raise _Wait(event.event_id)
            if not _promotable(item, existing):
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
            if not has_dag and not is_create and item.state is None:
                raise InputError(f"unknown room {event.room_id}")
            if is_create and has_dag and item.kind is not InputKind.BACKFILL:
                raise InputError(f"room {event.room_id} already exists")

        # The event's own auth events.
        auth_ids = list(event.auth_event_ids)
        await self._prefetch(auth_ids)
        auth_known = [self._known.get(a) for a in auth_ids]
        missing = [a for a, k in zip(auth_ids, auth_known, strict=True) if k is None]
        if _membership_from_outside(item, room):
            # An invite (or the leave rejecting it) of a room this server is not in: the
            # state to check it against is not to be had, so it is kept as an outlier.
            return self._stage(
                batch, item, Status.OUTLIER, "auth events unknown", None, [], has_state=False
            )
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
        elif item.state is not None:
            # State given by another server (federation): the prev events may be unknown.
            if room is None or not (room.extremities or room.current):
                room = _Room(event.room_id, event.room_version, [], 0, {}, None)
            before = dict(item.state)
            await self._prefetch([*before.values(), *prevs])
            foreign = [p for p in prevs if p in self._known]
            if any(self._known[p].event.room_id != event.room_id for p in foreign):
                raise InputError("a prev event is in another room")
            unknown = [e for e in before.values() if e not in self._known]
            if unknown:
                raise InputError(f"unknown state events: {', '.join(unknown[:5])}")
            before = self._usable_given(event, before)
            # Prev events this server has (with state) count too: resolved together.
            with_state = [
                p
                for p in prevs
                if p in self._known
                and self._known[p].status in (Status.ACCEPTED, Status.SOFT_FAILED)
                and self._known[p].event.room_id == event.room_id
            ]
            if with_state:
                states = [before] + [await self._state_after(room, p) for p in with_state]
                before = await self._resolve(room.version, states)
            base, delta = None, diff_state({}, before)
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
        if reason is None and event.type == "m.room.redaction":
            reason = await self._foreign_redaction(event)
        if reason is not None:
            return self._stage(batch, item, Status.REJECTED, reason, base, delta)

        status = Status.ACCEPTED
        # A join with the state a resident server gave (this server joining, or coming
        # back to, a room over federation) starts the room afresh here: what this server
        # had of it is stale, so it is neither checked against nor merged with.
        rejoin = item.state is not None and event.membership == "join"
        if item.kind is InputKind.NEW and not is_create and room.current and not rejoin:
            soft = await self._auth_against(event, room.current)
            if soft is not None:
                status, reason = Status.SOFT_FAILED, soft
        if item.kind is not InputKind.NEW or status is not Status.ACCEPTED:
            return self._stage(batch, item, status, reason, base, delta)

        # A new accepted event: extremities and current state move.
        kept = [] if rejoin else [x for x in room.extremities if x not in prevs]
        new_ext = [*kept, event.event_id]
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

    async def _foreign_redaction(self, redaction: Event) -> str | None:
        """Why a redaction is rejected for redacting an event of another room (none of the
        room's members may redact there, and a client must never be shown it), else None.
        A target not known yet is left to the readers, which apply a redaction only
        within its room."""
        target = redaction.redacts
        known = await self._get(target) if target else None
        if known is not None and known.event.room_id != redaction.room_id:
            return f"the redacted event {target} is in another room"
        return None

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
            txn=item.txn,
        )
        batch.payloads.append(payload)
        known = _Known(item.event, status, reason, None, pending=True)
        batch.staged.append(known)
        self._remember(known)
        self._pending[item.event.event_id] = batch
        return known
