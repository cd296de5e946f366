"""Device management and filters (device_management.yaml, filter.yaml)."""

from __future__ import annotations

from typing import Any

from myelin.clientapi.context import ClientContext
from myelin.clientapi.http import (
    Request,
    Response,
    bad_json,
    forbidden,
    json_response,
    missing_param,
    not_found,
    opt_str,
    opt_str_list,
)
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.clientapi.uia import PASSWORD, authenticate
from myelin.core.auth import is_valid_user_id
from myelin.core.identifiers import is_valid_room_id

MAX_FILTER_BYTES = 65536


def _paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def install(router: Router, ctx: ClientContext) -> None:
    users = ctx.users

    async def list_devices(req: Request) -> Response:
        devices = await users.devices(req.user().user_id)
        return json_response({"devices": [d.to_json() for d in devices]})

    async def get_device(req: Request) -> Response:
        device = await users.device(req.user().user_id, req.params["device_id"])
        if device is None:
            raise not_found("No such device")
        return json_response(device.to_json())

    async def update_device(req: Request) -> Response:
        body = req.json()
        name = opt_str(body, "display_name")
        if name is not None and len(name) > 255:
            raise bad_json("display_name is too long")
        if not await users.set_device_name(req.user().user_id, req.params["device_id"], name):
            raise not_found("No such device")
        return json_response({})

    async def delete_device(req: Request) -> Response:
        who = req.user()
        body = req.json_or_empty()
        device_id = req.params["device_id"]
        if await users.device(who.user_id, device_id) is None:
            raise not_found("No such device")
        await authenticate(ctx, req, body, [[PASSWORD]], who.user_id)
        await users.delete_devices(who.user_id, [device_id])
        return json_response({})

    async def delete_devices(req: Request) -> Response:
        who = req.user()
        body = req.json()
        device_ids = opt_str_list(body, "devices")
        if device_ids is None:
            raise missing_param("Missing 'devices'")
        await authenticate(ctx, req, body, [[PASSWORD]], who.user_id)
        await users.delete_devices(who.user_id, device_ids)
        return json_response({})

    async def create_filter(req: Request) -> Response:
        who = req.user()
        if req.params["user_id"] != who.user_id:
            raise forbidden("Cannot create filters for other users")
        if len(req.body) > MAX_FILTER_BYTES:
            raise bad_json("Filter is too large")
        body = req.json()
        check_filter(body)
        filter_id = await users.add_filter(who.user_id, body)
        return json_response({"filter_id": filter_id})

    async def get_filter(req: Request) -> Response:
        who = req.user()
        if req.params["user_id"] != who.user_id:
            raise forbidden("Cannot read filters of other users")
        found = await users.get_filter(who.user_id, req.params["filter_id"])
        if found is None:
            raise not_found("No such filter")
        return json_response(found)

    router.add("GET", _paths("/devices"), list_devices, auth=True, allow_guest=True)
    router.add("GET", _paths("/devices/{device_id}"), get_device, auth=True, allow_guest=True)
    router.add("PUT", _paths("/devices/{device_id}"), update_device, auth=True, allow_guest=True)
    router.add("DELETE", _paths("/devices/{device_id}"), delete_device, auth=True)
    router.add("POST", _paths("/delete_devices"), delete_devices, auth=True)
    router.add("POST", _paths("/user/{user_id}/filter"), create_filter, auth=True, allow_guest=True)
    router.add(
        "GET", _paths("/user/{user_id}/filter/{filter_id}"), get_filter, auth=True, allow_guest=True
    )


_EVENT_FILTER_LISTS = ("types", "not_types", "senders", "not_senders")
_ROOM_EVENT_LISTS = (*_EVENT_FILTER_LISTS, "rooms", "not_rooms")


def check_filter(body: dict[str, Any]) -> None:
    """Refuse filters whose known fields have the wrong types (filter.yaml, definitions)."""
    _check_lists(body, ("event_fields",), "")
    fmt = body.get("event_format")
    if fmt is not None and fmt not in ("client", "federation"):
        raise bad_json("event_format must be 'client' or 'federation'")
    for key in ("presence", "account_data"):
        _check_event_filter(body.get(key), key, _EVENT_FILTER_LISTS)
    room = body.get("room")
    if room is None:
        return
    if not isinstance(room, dict):
        raise bad_json("room must be an object")
    _check_lists(room, ("rooms", "not_rooms"), "room.")
    for flag in ("include_leave",):
        if flag in room and not isinstance(room[flag], bool):
            raise bad_json(f"room.{flag} must be a boolean")
    for key in ("timeline", "state", "ephemeral", "account_data"):
        _check_event_filter(room.get(key), f"room.{key}", _ROOM_EVENT_LISTS)


def _check_event_filter(value: Any, where: str, lists: tuple[str, ...]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise bad_json(f"{where} must be an object")
    _check_lists(value, lists, f"{where}.")
    limit = value.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise bad_json(f"{where}.limit must be an integer")
    for flag in (
        "contains_url",
        "lazy_load_members",
        "include_redundant_members",
        "unread_thread_notifications",
    ):
        if flag in value and not isinstance(value[flag], bool):
            raise bad_json(f"{where}.{flag} must be a boolean")


def _check_lists(value: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        items = value.get(key)
        if items is not None and (
            not isinstance(items, list) or not all(isinstance(i, str) for i in items)
        ):
            raise bad_json(f"{where}{key} must be a list of strings")
        # Room and sender lists hold IDs: a value that is none can never match (Synapse
        # and Sytest refuse it).
        if key in ("rooms", "not_rooms") and items and not all(map(is_valid_room_id, items)):
            raise bad_json(f"{where}{key} must hold valid room IDs")
        if key in ("senders", "not_senders") and items and not all(map(is_valid_user_id, items)):
            raise bad_json(f"{where}{key} must hold valid user IDs")
