"""Key management endpoints (keys.yaml, cross_signing.yaml): upload, query, claim,
changes, cross-signing keys and signatures. The logic lives in `myelin.keyserver`."""

from __future__ import annotations

from typing import Any

from myelin.clientapi.context import ClientContext
from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    bad_json,
    json_response,
    missing_param,
)
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.clientapi.uia import PASSWORD, authenticate
from myelin.keyserver import KeyServer
from myelin.keyserver.streams import SyncPositions
from myelin.syncapi.tokens import StreamToken

MAX_QUERY_USERS = 10_000
#: Cross-signing was served under this prefix while MSC1756 was unstable, and clients of that
#: era (and Sytest) still upload there; the request and response are the v3 ones.
UNSTABLE_PREFIX = "/_matrix/client/unstable"


def paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def token_positions(text: str, what: str) -> tuple[int, SyncPositions]:
    token = StreamToken.parse(text, what)
    return token.room, SyncPositions.from_others(token.others)


def _user_map(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        raise missing_param(f"Missing '{key}'")
    if not isinstance(value, dict):
        raise bad_json(f"'{key}' must be an object")
    if len(value) > MAX_QUERY_USERS:
        raise bad_json(f"At most {MAX_QUERY_USERS} users per request")
    for user_id in value:
        if not user_id.startswith("@") or ":" not in user_id or len(user_id) > 255:
            raise MatrixError(400, "M_INVALID_PARAM", f"Not a user ID: {user_id[:60]!r}")
    return value


def install(router: Router, ctx: ClientContext, keys: KeyServer) -> None:
    """Register the routes; upload, query and claim are open to guests (guest_access.md)."""

    async def upload(req: Request) -> Response:
        who = req.user()
        body = req.json(canonical=True)
        counts = await keys.upload(who.user_id, who.device_id, body)
        return json_response({"one_time_key_counts": counts})

    async def query(req: Request) -> Response:
        who = req.user()
        body = req.json()
        wanted = _user_map(body, "device_keys")
        for user_id, devices in wanted.items():
            if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
                raise bad_json(f"device_keys[{user_id}] must be a list of device IDs")
        return json_response(await keys.query(who.user_id, wanted))

    async def claim(req: Request) -> Response:
        body = req.json()
        wanted = _user_map(body, "one_time_keys")
        for user_id, devices in wanted.items():
            if not isinstance(devices, dict) or not all(
                isinstance(a, str) for a in devices.values()
            ):
                raise bad_json(f"one_time_keys[{user_id}] must map device IDs to algorithms")
        if sum(len(devices) for devices in wanted.values()) > MAX_QUERY_USERS:
            raise bad_json(f"At most {MAX_QUERY_USERS} devices per claim")
        return json_response(await keys.claim(wanted))

    async def changes(req: Request) -> Response:
        who = req.user()
        from_text = req.query_param("from")
        to_text = req.query_param("to")
        if from_text is None or to_text is None:
            raise missing_param("'from' and 'to' are required")
        since = token_positions(from_text, "from token")
        upto = token_positions(to_text, "to token")
        changed, left = await keys.changes(who.user_id, since, upto)
        return json_response({"changed": changed, "left": left})

    async def device_signing(req: Request) -> Response:
        who = req.user()
        body = req.json(canonical=True)
        if not await keys.cross_signing_unchanged(who.user_id, body):
            await authenticate(ctx, req, body, [[PASSWORD]], who.user_id)
        await keys.upload_cross_signing(who.user_id, body)
        return json_response({})

    async def signatures(req: Request) -> Response:
        who = req.user()
        body = req.json(canonical=True)
        failures = await keys.upload_signatures(who.user_id, body)
        return json_response({"failures": failures})

    router.add("POST", paths("/keys/upload"), upload, auth=True, allow_guest=True)
    router.add("POST", paths("/keys/query"), query, auth=True, allow_guest=True)
    router.add("POST", paths("/keys/claim"), claim, auth=True, allow_guest=True)
    router.add("GET", paths("/keys/changes"), changes, auth=True)
    router.add(
        "POST",
        [*paths("/keys/device_signing/upload"), UNSTABLE_PREFIX + "/keys/device_signing/upload"],
        device_signing,
        auth=True,
    )
    router.add(
        "POST",
        [*paths("/keys/signatures/upload"), UNSTABLE_PREFIX + "/keys/signatures/upload"],
        signatures,
        auth=True,
    )
