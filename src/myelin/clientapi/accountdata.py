"""Account data and room tags (client-server API: account-data.yaml, tags.yaml).

A user may read and write only their own account data. Server-controlled types
(`m.push_rules`, `m.fully_read`) are refused with 405 M_BAD_JSON: they change through the
push-rule and read-marker endpoints.
"""

from __future__ import annotations

from typing import Any

from myelin.clientapi.directory import check_room_id
from myelin.clientapi.http import MatrixError, Request, Response, bad_json, json_response
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.userapi.accountdata import SERVER_CONTROLLED, AccountData

MAX_TYPE = 255
MAX_TAG = 255


def paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def own_user(req: Request) -> str:
    """The `{userId}` path parameter, which must be the requester."""
    user_id = req.params["user_id"]
    if user_id != req.user().user_id:
        raise MatrixError(403, "M_FORBIDDEN", "Cannot access another user's account data")
    return user_id


def _type_param(req: Request) -> str:
    data_type = req.params["type"]
    if not data_type or len(data_type) > MAX_TYPE:
        raise MatrixError(400, "M_INVALID_PARAM", "Invalid account data type")
    return data_type


def install(router: Router, store: AccountData) -> None:
    async def put_global(req: Request) -> Response:
        user_id = own_user(req)
        data_type = _type_param(req)
        body = req.json()
        if data_type in SERVER_CONTROLLED:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API.")
        await store.put(user_id, "", data_type, body)
        return json_response({})

    async def get_global(req: Request) -> Response:
        user_id = own_user(req)
        found = await store.get(user_id, "", _type_param(req))
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "Account data not found")
        return json_response(found)

    async def put_room(req: Request) -> Response:
        user_id = own_user(req)
        room_id = check_room_id(req.params["room_id"])
        data_type = _type_param(req)
        body = req.json()
        if data_type in SERVER_CONTROLLED:
            raise MatrixError(405, "M_BAD_JSON", f"Cannot set {data_type} through this API.")
        await store.put(user_id, room_id, data_type, body)
        return json_response({})

    async def get_room(req: Request) -> Response:
        user_id = own_user(req)
        room_id = check_room_id(req.params["room_id"])
        found = await store.get(user_id, room_id, _type_param(req))
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", "Account data not found")
        return json_response(found)

    async def get_tags(req: Request) -> Response:
        user_id = own_user(req)
        room_id = check_room_id(req.params["room_id"])
        return json_response({"tags": await store.tags(user_id, room_id)})

    def _tag(req: Request) -> str:
        tag = req.params["tag"]
        if not tag or len(tag) > MAX_TAG:
            raise MatrixError(400, "M_INVALID_PARAM", "Invalid tag name")
        return tag

    async def put_tag(req: Request) -> Response:
        user_id = own_user(req)
        room_id = check_room_id(req.params["room_id"])
        tag = _tag(req)
        body: dict[str, Any] = req.json()
        order = body.get("order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, int | float)):
            raise bad_json("'order' must be a number")
        await store.set_tag(user_id, room_id, tag, body)
        return json_response({})

    async def delete_tag(req: Request) -> Response:
        user_id = own_user(req)
        room_id = check_room_id(req.params["room_id"])
        await store.set_tag(user_id, room_id, _tag(req), None)
        return json_response({})

    user = "/user/{user_id}"
    room = user + "/rooms/{room_id}"
    router.add("PUT", paths(user + "/account_data/{type}"), put_global, auth=True)
    router.add("GET", paths(user + "/account_data/{type}"), get_global, auth=True)
    router.add("PUT", paths(room + "/account_data/{type}"), put_room, auth=True)
    router.add("GET", paths(room + "/account_data/{type}"), get_room, auth=True)
    router.add("GET", paths(room + "/tags"), get_tags, auth=True)
    router.add("PUT", paths(room + "/tags/{tag}"), put_tag, auth=True)
    router.add("DELETE", paths(room + "/tags/{tag}"), delete_tag, auth=True)
