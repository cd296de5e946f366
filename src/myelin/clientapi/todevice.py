"""PUT /sendToDevice/{eventType}/{txnId} (to_device.yaml)."""

from __future__ import annotations

from myelin.clientapi.http import Request, Response, bad_json, json_response, missing_param
from myelin.clientapi.keys import paths
from myelin.clientapi.router import Router
from myelin.keyserver import KeyServer

MAX_ID_LENGTH = 255


def install(router: Router, keys: KeyServer) -> None:
    async def send(req: Request) -> Response:
        who = req.user()
        event_type = req.params["event_type"]
        txn_id = req.params["txn_id"]
        if len(event_type) > MAX_ID_LENGTH or len(txn_id) > MAX_ID_LENGTH:
            raise bad_json("Event type or transaction ID too long")
        body = req.json(canonical=True)
        if "messages" not in body:
            raise missing_param("Missing 'messages'")
        await keys.send_to_device(who.user_id, who.device_id, event_type, txn_id, body["messages"])
        return json_response({})

    router.add(
        "PUT",
        paths("/sendToDevice/{event_type}/{txn_id}"),
        send,
        auth=True,
        allow_guest=True,
    )
