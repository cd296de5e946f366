"""The client-server administration API (admin.yaml): `GET /admin/whois/{userId}`.

The spec lets a server restrict the lookup to the user themself and server admins, which
this one does: anybody else gets 403, whether or not the user exists, so the endpoint
tells strangers nothing. The answer lists each device with one session (a device is one
login here) whose `connections` hold the device's last request, as recorded when its
access token is checked: address, time and User-Agent. A device never used since its
login has no connection yet.
"""

from __future__ import annotations

from typing import Any

from myelin.clientapi.http import Request, Response, forbidden, json_response, not_found
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.userapi.accounts import UserAPI


def install(router: Router, users: UserAPI) -> None:
    async def whois(req: Request) -> Response:
        who = req.user()
        user_id = req.params["user_id"]
        if user_id != who.user_id and not await users.is_admin(who.user_id):
            raise forbidden("Only server admins may look up other users")
        if await users.account(user_id) is None:
            raise not_found(f"Unknown user {user_id[:100]}")
        devices: dict[str, Any] = {}
        for device_id, seen in (await users.connections(user_id)).items():
            connections: list[dict[str, Any]] = []
            if seen is not None:
                connection: dict[str, Any] = {"ip": seen.ip, "last_seen": seen.last_seen}
                if seen.user_agent is not None:
                    connection["user_agent"] = seen.user_agent
                connections.append(connection)
            devices[device_id] = {"sessions": [{"connections": connections}]}
        return json_response({"user_id": user_id, "devices": devices})

    router.add("GET", [p + "/admin/whois/{user_id}" for p in CLIENT_PREFIXES], whois, auth=True)
