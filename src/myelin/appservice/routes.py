"""Client API endpoints served by asking application services: third-party lookups
(third_party_lookup.yaml, `/thirdparty/*`) and the AS ping (appservice_ping.yaml).

Protocol metadata is merged over every AS that declares the protocol (their
`instances` concatenated) and cached for `PROTOCOL_CACHE_SECONDS`: it changes rarely and
clients ask for it often. User and location lookups ask every AS of the protocol and
concatenate the answers; an AS that fails or answers nonsense contributes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from myelin.appservice.client import QUERY_TIMEOUT, V1, quoted
from myelin.appservice.registration import AppService
from myelin.appservice.service import AppServices
from myelin.clientapi.directory import check_room_id
from myelin.clientapi.http import (
    MatrixError,
    Request,
    Response,
    json_response,
    opt_str,
    req_str,
)
from myelin.clientapi.router import CLIENT_PREFIXES, CLIENT_V1_PREFIX, Router
from myelin.storage import Database, Txn

PROTOCOL_CACHE_SECONDS = 300.0


def _paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def _query(req: Request) -> dict[str, str]:
    """The request's query fields to pass on (the access token is ours, not theirs)."""
    return {k: v[-1] for k, v in req.query.items() if k not in ("access_token", "user_id")}


class ThirdParty:
    def __init__(self, appservices: AppServices) -> None:
        self.appservices = appservices
        self._protocols: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    def services_for(self, protocol: str) -> list[AppService]:
        return [s for s in self.appservices.services if protocol in s.protocols and s.url]

    async def _metadata_of(self, service: AppService, protocol: str) -> dict[str, Any] | None:
        key = (service.id, protocol)
        cached = self._protocols.get(key)
        if cached is not None and time.monotonic() - cached[0] < PROTOCOL_CACHE_SECONDS:
            return cached[1]
        status, value = await self.appservices.client.request(
            service, "GET", f"{V1}/thirdparty/protocol/{quoted(protocol)}", time_limit=QUERY_TIMEOUT
        )
        if status != 200 or not isinstance(value, dict):
            return cached[1] if cached is not None else None
        instances = value.get("instances")
        if isinstance(instances, list):
            for instance in instances:
                if isinstance(instance, dict) and isinstance(instance.get("network_id"), str):
                    instance["instance_id"] = f"{service.id}|{instance['network_id']}"
        self._protocols[key] = (time.monotonic(), value)
        return value

    async def protocol(self, protocol: str) -> dict[str, Any] | None:
        """The merged metadata of `protocol` over its services (None: nobody knows it)."""
        services = self.services_for(protocol)
        found = await asyncio.gather(*(self._metadata_of(s, protocol) for s in services))
        merged: dict[str, Any] | None = None
        for value in found:
            if value is None:
                continue
            if merged is None:
                merged = {**value, "instances": list(value.get("instances") or [])}
            else:
                merged["instances"].extend(value.get("instances") or [])
        return merged

    async def lookup(
        self, services: Sequence[AppService], path: str, query: dict[str, str]
    ) -> list[Any]:
        answers = await asyncio.gather(
            *(
                self.appservices.client.request(
                    s, "GET", path, query=query, time_limit=QUERY_TIMEOUT
                )
                for s in services
            )
        )
        out: list[Any] = []
        for status, value in answers:
            if status == 200 and isinstance(value, list):
                out.extend(v for v in value if isinstance(v, dict))
        return out


def install(router: Router, appservices: AppServices, db: Database) -> None:
    third = ThirdParty(appservices)

    async def protocols(req: Request) -> Response:
        names = sorted({p for s in appservices.services for p in s.protocols})
        out: dict[str, Any] = {}
        for name in names:
            merged = await third.protocol(name)
            if merged is not None:
                out[name] = merged
        return json_response(out)

    async def protocol(req: Request) -> Response:
        merged = await third.protocol(req.params["protocol"])
        if merged is None:
            raise MatrixError(404, "M_NOT_FOUND", "Unknown protocol")
        return json_response(merged)

    def by_protocol(kind: str) -> Any:
        async def handler(req: Request) -> Response:
            name = req.params["protocol"]
            services = third.services_for(name)
            if not services:
                raise MatrixError(404, "M_NOT_FOUND", "Unknown protocol")
            path = f"{V1}/thirdparty/{kind}/{quoted(name)}"
            return json_response(await third.lookup(services, path, _query(req)))

        return handler

    def reverse(kind: str, param: str) -> Any:
        async def handler(req: Request) -> Response:
            value = req.query_param(param)
            if not value:
                raise MatrixError(400, "M_MISSING_PARAM", f"Missing '{param}'")
            services = [s for s in appservices.services if s.url]
            path = f"{V1}/thirdparty/{kind}"
            return json_response(await third.lookup(services, path, {param: value}))

        return handler

    async def ping(req: Request) -> Response:
        who = req.user()
        service = appservices.by_id(req.params["appservice_id"])
        if who.app_service is None or service is None or service.id != who.app_service:
            raise MatrixError(
                403, "M_FORBIDDEN", "Provided access token is not the appservice's as_token"
            )
        if service.url is None:
            raise MatrixError(400, "M_URL_NOT_SET", "The application service has no URL")
        body = req.json_or_empty()
        txn = opt_str(body, "transaction_id")
        started = time.monotonic()
        status, value = await appservices.client.request(
            service,
            "POST",
            f"{V1}/ping",
            body={"transaction_id": txn} if txn else {},
            time_limit=QUERY_TIMEOUT,
        )
        if status == 0:
            raise MatrixError(502, "M_CONNECTION_FAILED", "The application service is unreachable")
        if status != 200:
            detail: dict[str, Any] = {"status": status, "body": str(value)[:1000]}
            raise MatrixError(502, "M_BAD_STATUS", "The application service failed", **detail)
        return json_response({"duration_ms": int((time.monotonic() - started) * 1000)})

    async def room_list(req: Request) -> Response:
        """PUT/DELETE /directory/list/appservice/{networkId}/{roomId}: the AS's own list."""
        who = req.user()
        if who.app_service is None:
            raise MatrixError(403, "M_FORBIDDEN", "Only application services keep these lists")
        room_id = check_room_id(req.params["room_id"])
        network = req.params["network_id"]
        public = False
        if req.method == "PUT":
            visibility = req_str(req.json(), "visibility")
            if visibility not in ("public", "private"):
                raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
            public = visibility == "public"
        as_id = who.app_service

        async def txn(t: Txn) -> None:
            if public:
                await t.execute(
                    "INSERT INTO as_room_lists (as_id, network_id, room_id) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    as_id,
                    network,
                    room_id,
                )
            else:
                await t.execute(
                    "DELETE FROM as_room_lists WHERE as_id = ? AND network_id = ? AND room_id = ?",
                    as_id,
                    network,
                    room_id,
                )

        await db.run(txn)
        return json_response({})

    auth = {"auth": True}
    list_path = _paths("/directory/list/appservice/{network_id}/{room_id}")
    router.add(("PUT", "DELETE"), list_path, room_list, **auth)
    router.add("GET", _paths("/thirdparty/protocols"), protocols, **auth)
    router.add("GET", _paths("/thirdparty/protocol/{protocol}"), protocol, **auth)
    router.add("GET", _paths("/thirdparty/user/{protocol}"), by_protocol("user"), **auth)
    router.add("GET", _paths("/thirdparty/location/{protocol}"), by_protocol("location"), **auth)
    router.add("GET", _paths("/thirdparty/user"), reverse("user", "userid"), **auth)
    router.add("GET", _paths("/thirdparty/location"), reverse("location", "alias"), **auth)
    router.add("POST", CLIENT_V1_PREFIX + "/appservice/{appservice_id}/ping", ping, **auth)
