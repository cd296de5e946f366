"""Server-side key backup endpoints (key_backup.yaml): versions and keys.

The logic, including which key wins when a session is uploaded twice, lives in
`myelin.keyserver.backup`.
"""

from __future__ import annotations

from myelin.clientapi.http import Request, Response, json_response
from myelin.clientapi.keys import paths
from myelin.clientapi.router import Router
from myelin.keyserver import KeyServer
from myelin.keyserver.backup import parse_key, parse_rooms, parse_sessions


def install(router: Router, keys: KeyServer) -> None:
    backup = keys.backup

    async def create_version(req: Request) -> Response:
        version = await backup.create_version(req.user().user_id, req.json(canonical=True))
        return json_response({"version": version})

    async def current_version(req: Request) -> Response:
        return json_response(await backup.get_version(req.user().user_id, None))

    async def get_version(req: Request) -> Response:
        return json_response(await backup.get_version(req.user().user_id, req.params["version"]))

    async def update_version(req: Request) -> Response:
        body = req.json(canonical=True)
        await backup.update_version(req.user().user_id, req.params["version"], body)
        return json_response({})

    async def delete_version(req: Request) -> Response:
        await backup.delete_version(req.user().user_id, req.params["version"])
        return json_response({})

    def scope(req: Request) -> tuple[str | None, str | None]:
        return req.params.get("room_id"), req.params.get("session_id")

    async def put_keys(req: Request) -> Response:
        body = req.json(canonical=True)
        room_id, session_id = scope(req)
        if room_id is None:
            keys_in = parse_rooms(body)
        elif session_id is None:
            keys_in = {room_id: parse_sessions(body, room_id)}
        else:
            keys_in = {room_id: {session_id: parse_key(body, "body")}}
        result = await backup.put_keys(req.user().user_id, req.query_param("version"), keys_in)
        return json_response(result)

    async def get_keys(req: Request) -> Response:
        room_id, session_id = scope(req)
        found = await backup.get_keys(
            req.user().user_id, req.query_param("version"), room_id, session_id
        )
        return json_response(found)

    async def delete_keys(req: Request) -> Response:
        room_id, session_id = scope(req)
        result = await backup.delete_keys(
            req.user().user_id, req.query_param("version"), room_id, session_id
        )
        return json_response(result)

    router.add("POST", paths("/room_keys/version"), create_version, auth=True)
    router.add("GET", paths("/room_keys/version"), current_version, auth=True)
    version = paths("/room_keys/version/{version}")
    router.add("GET", version, get_version, auth=True)
    router.add("PUT", version, update_version, auth=True)
    router.add("DELETE", version, delete_version, auth=True)
    for suffix in ("", "/{room_id}", "/{room_id}/{session_id}"):
        where = paths("/room_keys/keys" + suffix)
        router.add("PUT", where, put_keys, auth=True)
        router.add("GET", where, get_keys, auth=True)
        router.add("DELETE", where, delete_keys, auth=True)
