"""The parts of a filter (filter.yaml) that `/sync`, `/messages` and `/context` apply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from myelin.clientapi.http import MatrixError

DEFAULT_TIMELINE_LIMIT = 10
MAX_LIMIT = 1000


def _list(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_INVALID_PARAM", "Filter lists must be lists of strings")
    return tuple(value)


def _matches(patterns: tuple[str, ...], value: str) -> bool:
    for pattern in patterns:
        if pattern.endswith("*"):
            if value.startswith(pattern[:-1]):
                return True
        elif pattern == value:
            return True
    return False


@dataclass(frozen=True, slots=True)
class EventFilter:
    limit: int | None = None
    types: tuple[str, ...] | None = None
    not_types: tuple[str, ...] = ()
    senders: tuple[str, ...] | None = None
    not_senders: tuple[str, ...] = ()
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False

    @staticmethod
    def parse(value: Any) -> EventFilter:
        if value is None:
            return EventFilter()
        if not isinstance(value, Mapping):
            raise MatrixError(400, "M_INVALID_PARAM", "A filter must be an object")
        limit = value.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise MatrixError(400, "M_INVALID_PARAM", "Filter limit must be an integer")
        return EventFilter(
            limit=None if limit is None else max(0, min(limit, MAX_LIMIT)),
            types=_list(value.get("types")),
            not_types=_list(value.get("not_types")) or (),
            senders=_list(value.get("senders")),
            not_senders=_list(value.get("not_senders")) or (),
            rooms=_list(value.get("rooms")),
            not_rooms=_list(value.get("not_rooms")) or (),
            lazy_load_members=value.get("lazy_load_members") is True,
            include_redundant_members=value.get("include_redundant_members") is True,
            unread_thread_notifications=value.get("unread_thread_notifications") is True,
        )

    @property
    def filters_events(self) -> bool:
        return bool(
            self.types is not None or self.not_types or self.senders is not None or self.not_senders
        )

    def allows(self, event_type: str, sender: str) -> bool:
        if _matches(self.not_types, event_type) or sender in self.not_senders:
            return False
        if self.types is not None and not _matches(self.types, event_type):
            return False
        return self.senders is None or sender in self.senders

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@dataclass(frozen=True, slots=True)
class SyncFilter:
    rooms: tuple[str, ...] | None = None
    not_rooms: tuple[str, ...] = ()
    include_leave: bool = False
    timeline: EventFilter = EventFilter()
    state: EventFilter = EventFilter()
    ephemeral: EventFilter = EventFilter()
    room_account_data: EventFilter = EventFilter()
    account_data: EventFilter = EventFilter()
    presence: EventFilter = EventFilter()
    #: `federation`: room events served as the PDUs the servers exchange (sync_filter.yaml).
    event_format: str = "client"

    @staticmethod
    def parse(value: Any) -> SyncFilter:
        if not isinstance(value, Mapping):
            raise MatrixError(400, "M_INVALID_PARAM", "A filter must be an object")
        room = value.get("room") or {}
        if not isinstance(room, Mapping):
            raise MatrixError(400, "M_INVALID_PARAM", "Filter 'room' must be an object")
        event_format = value.get("event_format", "client")
        if event_format not in ("client", "federation"):
            raise MatrixError(
                400, "M_INVALID_PARAM", "Filter event_format must be 'client' or 'federation'"
            )
        return SyncFilter(
            event_format=event_format,
            rooms=_list(room.get("rooms")),
            not_rooms=_list(room.get("not_rooms")) or (),
            include_leave=room.get("include_leave") is True,
            timeline=EventFilter.parse(room.get("timeline")),
            state=EventFilter.parse(room.get("state")),
            ephemeral=EventFilter.parse(room.get("ephemeral")),
            room_account_data=EventFilter.parse(room.get("account_data")),
            account_data=EventFilter.parse(value.get("account_data")),
            presence=EventFilter.parse(value.get("presence")),
        )

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @property
    def timeline_limit(self) -> int:
        limit = self.timeline.limit
        return DEFAULT_TIMELINE_LIMIT if limit is None else limit


def parse_json_filter(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise MatrixError(400, "M_NOT_JSON", "The filter is not valid JSON") from None
