"""Inbound PDUs: the checks on receipt (format, signatures, hashes) and their input into
the roomserver as federated events, fetching what is missing from the sending server.

server-server-api.md, "Checks performed on receipt of a PDU": a PDU of the wrong format
or with a bad signature is dropped; one whose content hash does not match is kept in its
redacted form; then the roomserver checks authorization (against its auth events, the
state before it, and current state). Prev events the roomserver does not know are asked
for with `/get_missing_events`; when that does not close the gap, the state before the
event is asked for with `/state_ids` (that is what a server that was offline does).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from myelin.core.builder import ContentHashError, SignatureError, verify_event
from myelin.core.eventids import EventIdError, event_from_pdu
from myelin.core.events import Event, StateKey
from myelin.core.pdu import InvalidPdu, check_pdu
from myelin.core.redaction import redact
from myelin.core.roomversions import EventFormat, RoomVersion, room_version
from myelin.federation.client import FederationClient, FederationError, path_segment
from myelin.federation.keyring import Keyring
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import (
    InputError,
    InputEvent,
    InputKind,
    InputResult,
    Origin,
    Status,
)

log = logging.getLogger("myelin.federation.inbound")

MISSING_EVENTS_LIMIT = 20
FETCH_CONCURRENCY = 10


class BadPdu(Exception):
    """A PDU that fails the checks on receipt (dropped). `forbidden`: the failure is of
    its signatures or hashes (a request carrying it is refused with 403, not 400)."""

    def __init__(self, reason: str, forbidden: bool = False) -> None:
        super().__init__(reason)
        self.forbidden = forbidden


def _server_of(user_or_event_id: str) -> str:
    return user_or_event_id.partition(":")[2]


async def verify_pdu(pdu: Any, version: RoomVersion, keyring: Keyring) -> Event:
    """The checked event of a received PDU (redacted if its content hash is wrong).
    Raises BadPdu."""
    if not isinstance(pdu, dict):
        raise BadPdu("a PDU must be a JSON object")
    pdu = {k: v for k, v in pdu.items() if k != "unsigned"}
    try:
        check_pdu(pdu, version)
        event = event_from_pdu(pdu, version)
    except InvalidPdu as exc:
        raise BadPdu(str(exc), exc.field in ("hashes", "signatures")) from None
    except EventIdError as exc:
        raise BadPdu(str(exc), True) from None
    servers = {_server_of(event.sender)}
    if version.event_format is EventFormat.V1:
        servers.add(_server_of(event.event_id))
    keys = await keyring.keys_for_events(servers)
    try:
        verify_event(event, keys)
    except ContentHashError:
        return Event(event.event_id, version, redact(pdu, version))
    except (SignatureError, EventIdError) as exc:
        raise BadPdu(f"{event.event_id}: {exc}", True) from None
    return event


async def verify_pdus(pdus: Iterable[Any], version: RoomVersion, keyring: Keyring) -> list[Event]:
    """The PDUs that pass the checks; the others are dropped (and logged)."""
    events: list[Event] = []
    for pdu in pdus:
        try:
            events.append(await verify_pdu(pdu, version, keyring))
        except BadPdu as exc:
            log.info("dropping PDU: %s", exc)
    return events


def _parents_first(
    events: Iterable[Event], parents: Callable[[Event], Iterable[str]]
) -> list[Event]:
    """Events ordered so that every event comes after those of its `parents` that are
    among them (a topological order of that DAG; depth breaks ties)."""
    by_id = {e.event_id: e for e in events}
    out: list[Event] = []
    done: set[str] = set()
    for start in sorted(by_id.values(), key=lambda e: (e.depth, e.event_id)):
        stack: list[tuple[Event, bool]] = [(start, False)]
        while stack:
            event, expanded = stack.pop()
            if event.event_id in done:
                continue
            if expanded:
                done.add(event.event_id)
                out.append(event)
                continue
            stack.append((event, True))
            for p in parents(event):
                if p in by_id and p not in done:
                    stack.append((by_id[p], False))
    return out


def auth_order(events: Iterable[Event]) -> list[Event]:
    """Events ordered so that every event comes after those of its auth events that are
    among them (a topological order of the auth DAG; depth breaks ties)."""
    return _parents_first(events, lambda e: e.auth_event_ids)


def prev_order(events: Iterable[Event]) -> list[Event]:
    """Events ordered so that every event comes after those of its prev events that are
    among them (a topological order of the room DAG; depth breaks ties)."""
    return _parents_first(events, lambda e: e.prev_event_ids)


class Inbound:
    """Checks and inputs federated events into the roomserver."""

    def __init__(
        self, rs: Roomserver, keyring: Keyring, client: FederationClient, server_name: str
    ) -> None:
        self.rs = rs
        self.keyring = keyring
        self.client = client
        self.server_name = server_name
        self._fetching = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def input_outliers(self, events: Sequence[Event]) -> None:
        """Store events known without their place in the DAG (state and auth chains of a
        join), skipping those already stored, in auth order."""
        known = await self.rs.events([e.event_id for e in events])
        todo = [e for e in auth_order(events) if e.event_id not in known]
        if not todo:
            return
        results = await self.rs.input(
            [InputEvent(e, InputKind.OUTLIER, Origin.FEDERATED) for e in todo]
        )
        for event, result in zip(todo, results, strict=True):
            if isinstance(result, InputError):
                log.info("outlier %s not stored: %s", event.event_id, result)

    async def input_new(
        self,
        event: Event,
        origin: str,
        *,
        state: Mapping[StateKey, str] | None = None,
        fetch_missing: bool = True,
        fetch_state: bool = False,
    ) -> InputResult | InputError:
        """Input one new federated event. With `fetch_missing`, auth events and prev
        events the roomserver lacks are asked of `origin` first (`/event_auth`,
        `/get_missing_events`), and the events found are input with `fetch_state`: prev
        events of theirs still missing are bridged by asking for the state at them
        (`/state_ids`). An event pushed to this server whose prev events stay missing is
        refused (it is not bridged: the sender could not say what it follows)."""
        if state is None and fetch_missing:
            await self._fill_gaps(event, origin)
        if state is None and fetch_state:
            prevs = event.prev_event_ids
            known = await self.rs.events(list(prevs)) if prevs else {}
            missing = [p for p in prevs if p not in known]
            if missing:
                state = await self._state_at_prev(event, origin, missing[0])
        [result] = await self.rs.input(
            [InputEvent(event, InputKind.NEW, Origin.FEDERATED, state=state)]
        )
        return result

    async def backfill(
        self, room_id: str, server: str, start: Sequence[str], limit: int
    ) -> int | None:
        """Ask `server` for the room's history before the events `start`
        (`/backfill`, server-server-api "Backfilling and retrieving missing events")
        and input it into the roomserver as history: each PDU goes through the checks
        on receipt (a bad signature or hash, or invalid JSON such as a float in a room
        whose version demands canonical JSON, and it is dropped), an event of another
        room, or whose prev events are in another room, is refused, and the roomserver
        checks each against the state before it. That state comes from the batch itself
        (back to the room's create event, when the batch reaches it) or, for an event
        whose prev events are not here, from `/state_ids` at one of them.

        Returns the log offset of the last event stored, None if none was. Raises
        FederationError when `server` does not answer."""
        version_id = await self.rs.room_version(room_id)
        if version_id is None or not start or limit <= 0:
            return None
        version = room_version(version_id)
        body = await self.client.request(
            "GET",
            server,
            f"/_matrix/federation/v1/backfill/{path_segment(room_id)}",
            query={"v": list(start), "limit": str(limit)},
        )
        pdus = body.get("pdus") if isinstance(body, dict) else None
        if not isinstance(pdus, list):
            return None
        events: dict[str, Event] = {}
        for event in await verify_pdus(pdus[: limit + len(start)], version, self.keyring):
            if event.room_id != room_id:
                log.info("backfill from %s: %s is of another room", server, event.event_id)
                continue
            events.setdefault(event.event_id, event)
        if not events:
            return None
        around = {p for e in events.values() for p in e.prev_event_ids}
        stored = await self.rs.stored([*events, *around])
        todo = [
            e
            for e in prev_order(events.values())
            if e.event_id not in stored or stored[e.event_id][1] is Status.OUTLIER
        ]
        batch = {e.event_id for e in todo}
        for event in todo:
            if any(p in stored and stored[p][0].room_id != room_id for p in event.prev_event_ids):
                log.info("backfill from %s: %s follows another room", server, event.event_id)
                batch.discard(event.event_id)
        await self._fetch_backfill_auth([e for e in todo if e.event_id in batch], server)
        items: list[InputEvent] = []
        last: int | None = None

        async def flush() -> None:
            nonlocal last
            for item, result in zip(items, await self.rs.input(items), strict=True):
                if isinstance(result, InputError):
                    log.info("backfilled %s not stored: %s", item.event.event_id, result)
                    continue
                if not result.duplicate:
                    last = result.log_offset if last is None else max(last, result.log_offset)
            items.clear()

        for event in todo:
            if event.event_id not in batch:
                continue
            missing = [
                p
                for p in event.prev_event_ids
                if p not in batch
                and (p not in stored or stored[p][1] not in (Status.ACCEPTED, Status.SOFT_FAILED))
            ]
            state = None
            if missing:
                # The events before it go in first: one of them may be in the state the
                # origin lists and be rejected as it is placed in the DAG, and the state
                # is read with each event's status as it then is.
                if items:
                    await flush()
                state = await self._state_at_prev(event, server, missing[0])
                if state is None:
                    log.info("backfill: no state before %s; not stored", event.event_id)
                    batch.discard(event.event_id)
                    continue
            items.append(InputEvent(event, InputKind.BACKFILL, Origin.FEDERATED, state=state))
        if items:
            await flush()
        return last

    async def _fetch_backfill_auth(self, events: Sequence[Event], origin: str) -> None:
        """Auth events of backfilled events that are neither here nor among them, asked
        for (`/event_auth`) once per event that lacks some."""
        ids = {e.event_id for e in events}
        wanted = {a for e in events for a in e.auth_event_ids if a not in ids}
        known = await self.rs.events(sorted(wanted))
        for event in events:
            if any(a not in ids and a not in known for a in event.auth_event_ids):
                await self._fetch_auth_events(event, origin)

    async def _fill_gaps(self, event: Event, origin: str) -> None:
        await self._fetch_auth_events(event, origin)
        prevs = event.prev_event_ids
        known = await self.rs.events(list(prevs))
        if all(p in known for p in prevs):
            return
        try:
            latest = await self.rs.latest_events(event.room_id)
        except Exception:
            return
        try:
            body = await self.client.request(
                "POST",
                origin,
                f"/_matrix/federation/v1/get_missing_events/{path_segment(event.room_id)}",
                body={
                    "earliest_events": list(latest.prev_event_ids),
                    "latest_events": [event.event_id],
                    "limit": MISSING_EVENTS_LIMIT,
                    "min_depth": 0,
                },
            )
        except FederationError as exc:
            log.info("get_missing_events for %s from %s: %s", event.event_id, origin, exc)
            return
        pdus = body.get("events") if isinstance(body, dict) else None
        if not isinstance(pdus, list):
            return
        found = await verify_pdus(pdus, event.room_version, self.keyring)
        for missing in sorted(found, key=lambda e: (e.depth, e.event_id)):
            if missing.event_id == event.event_id:
                continue
            result = await self.input_new(missing, origin, fetch_missing=False, fetch_state=True)
            if isinstance(result, InputResult) and result.status is Status.ACCEPTED:
                continue
            if isinstance(result, InputError):
                log.info("missing event %s not stored: %s", missing.event_id, result)

    async def _fetch_auth_events(self, event: Event, origin: str) -> None:
        auth = event.auth_event_ids
        known = await self.rs.events(list(auth))
        if all(a in known for a in auth):
            return
        try:
            body = await self.client.request(
                "GET",
                origin,
                f"/_matrix/federation/v1/event_auth/{path_segment(event.room_id)}"
                f"/{path_segment(event.event_id)}",
            )
        except FederationError as exc:
            log.info("event_auth for %s from %s: %s", event.event_id, origin, exc)
            return
        chain = body.get("auth_chain") if isinstance(body, dict) else None
        if isinstance(chain, list):
            await self.input_outliers(await verify_pdus(chain, event.room_version, self.keyring))

    async def _fetch_events(
        self, event_ids: Sequence[str], origin: str, version: RoomVersion
    ) -> list[Event]:
        """Events by ID from `origin` (`/event/{eventId}`), checked; those it cannot give
        are left out."""
        found: list[Event] = []

        async def one(event_id: str) -> None:
            async with self._fetching:
                try:
                    body = await self.client.request(
                        "GET", origin, f"/_matrix/federation/v1/event/{path_segment(event_id)}"
                    )
                except FederationError as exc:
                    log.info("event %s from %s: %s", event_id, origin, exc)
                    return
            pdus = body.get("pdus") if isinstance(body, dict) else None
            if isinstance(pdus, list) and pdus:
                for checked in await verify_pdus(pdus[:1], version, self.keyring):
                    if checked.event_id == event_id:
                        found.append(checked)

        async with asyncio.TaskGroup() as tg:
            for event_id in event_ids:
                tg.create_task(one(event_id))
        return found

    async def _state_at_prev(
        self, event: Event, origin: str, prev: str
    ) -> dict[StateKey, str] | None:
        """The state before `event`, taken as the state after its missing prev event
        `prev` according to `origin` (`/state_ids` at it, plus itself); the events are
        fetched as needed and stored as outliers. None when it cannot be had.

        The list is the origin's word, not the room's: an event of it that this server
        rejected (or rejects when it is fetched), that is of another room, or that is not
        a state event is left out, so the event is never authorised against it. (A
        rejected event does not change the room's state; which event it displaced is
        not known here, so its key is left to the room's own events.) What is stored
        here already, rejected ones included, is not asked for again."""
        room = path_segment(event.room_id)
        try:
            body = await self.client.request(
                "GET",
                origin,
                f"/_matrix/federation/v1/state_ids/{room}",
                query={"event_id": prev},
            )
        except FederationError as exc:
            log.info("state_ids at %s from %s: %s", prev, origin, exc)
            return None
        if not isinstance(body, dict):
            return None
        state_ids = [e for e in body.get("pdu_ids") or [] if isinstance(e, str)]
        chain_ids = [e for e in body.get("auth_chain_ids") or [] if isinstance(e, str)]
        wanted = list(dict.fromkeys([*chain_ids, *state_ids, prev]))
        stored = await self.rs.stored(wanted)
        fetched = await self._fetch_events(
            [e for e in wanted if e not in stored], origin, event.room_version
        )
        await self.input_outliers([e for e in fetched if e.room_id == event.room_id])
        usable = {
            event_id: found
            for event_id, (found, status) in (await self.rs.stored([*state_ids, prev])).items()
            if status is not Status.REJECTED and found.room_id == event.room_id and found.is_state
        }
        dropped = [e for e in state_ids if e not in usable]
        if dropped:
            log.info(
                "state_ids at %s from %s: %d of %d not used (unknown, rejected, of another"
                " room or not state): %s",
                prev,
                origin,
                len(dropped),
                len(state_ids),
                ", ".join(dropped[:5]),
            )
        state = {usable[e].state_tuple: e for e in state_ids if e in usable}
        after = usable.get(prev)
        if after is not None:
            state[after.state_tuple] = prev
        return state
