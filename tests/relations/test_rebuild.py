"""The relation, search and timestamp projections are rebuilt from the log: after the sync
projections are dropped and replayed, `/relations`, `/threads`, `/search`, served
aggregations and `/timestamp_to_event` answer exactly as before (invariant 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from myelin.eventlog.disk import DiskEventLog
from myelin.storage import open_database, testing
from myelin.syncapi.rebuild import rebuild
from tests.support.client import SpecClient
from tests.support.rooms import create_room
from tests.support.server import start_server

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


def without_age(value: Any) -> Any:
    """The answer without `unsigned.age`, which grows between two identical reads, and
    `transaction_id`, which only the sending device sees (the second read logs in anew)."""
    if isinstance(value, dict):
        return {k: without_age(v) for k, v in value.items() if k not in ("age", "transaction_id")}
    if isinstance(value, list | tuple):
        return [without_age(v) for v in value]
    return value


async def populate(c: SpecClient) -> tuple[str, list[tuple[str, str, Any]]]:
    alice = (await c.register("rb_alice"))["access_token"]
    room = await create_room(c, alice, {"preset": "public_chat"})
    ids: list[str] = []
    contents: list[dict[str, Any]] = [
        {"msgtype": "m.text", "body": "root of a thread about cheese"},
        {"msgtype": "m.text", "body": "cheese reply", "m.relates_to": {"rel_type": "m.thread"}},
        {
            "msgtype": "m.text",
            "body": "* edited cheese",
            "m.relates_to": {"rel_type": "m.replace"},
        },
        {
            "msgtype": "m.text",
            "body": "doomed cheese reply",
            "m.relates_to": {"rel_type": "m.thread"},
        },
    ]
    for i, content in enumerate(contents):
        if "m.relates_to" in content:
            content["m.relates_to"]["event_id"] = ids[0]
        if content["body"].startswith("*"):
            content["m.new_content"] = {"msgtype": "m.text", "body": "edited cheese"}
        status, body = await c.call(
            "PUT", f"{V3}/rooms/{room}/send/m.room.message/r{i}", content, token=alice
        )
        assert status == 200, body
        ids.append(body["event_id"])
    status, _ = await c.call("PUT", f"{V3}/rooms/{room}/redact/{ids[3]}/x", {}, token=alice)
    assert status == 200
    status, ev = await c.call("GET", f"{V3}/rooms/{room}/event/{ids[1]}", token=alice)
    ts = ev["origin_server_ts"]
    search = {"search_categories": {"room_events": {"search_term": "cheese"}}}
    reads: list[tuple[str, str, Any]] = [
        ("GET", f"{V1}/rooms/{room}/relations/{ids[0]}", None),
        ("GET", f"{V1}/rooms/{room}/threads", None),
        ("GET", f"{V3}/rooms/{room}/messages?dir=b&limit=20", None),
        ("GET", f"{V1}/rooms/{room}/timestamp_to_event?ts={ts}&dir=b", None),
        ("POST", f"{V3}/search", search),
        ("GET", f"{V1}/rooms/{quote(room)}/hierarchy", None),
    ]
    return alice, reads


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_rebuild_answers_identically(tmp_path: Path, backend: str) -> None:
    dsn = testing.create_throwaway_database() if backend == "postgres" else None
    data = tmp_path / "data"
    url = dsn or str(data / "myelin.db")
    try:
        server = start_server(data, database=dsn) if dsn else start_server(data)
        try:
            async with SpecClient(server.base_url) as c:
                token, reads = await populate(c)
                before = [await c.call(m, p, b, token=token) for m, p, b in reads]
        finally:
            assert server.stop() == 0
        assert all(status == 200 for status, _ in before), before
        assert len(before[0][1]["chunk"]) == 2  # the reply and the edit; the redacted one went

        db = await open_database(url)
        try:
            async with DiskEventLog(data / "eventlog") as log:
                assert await rebuild(db, log) > 0
            dropped = await db.read(lambda t: t.fetchval("SELECT count(*) FROM sync_relations"))
            assert dropped == 2
        finally:
            await db.close()

        server = start_server(data, database=dsn) if dsn else start_server(data)
        try:
            async with SpecClient(server.base_url) as c:
                status, login = await c.call(
                    "POST",
                    f"{V3}/login",
                    {
                        "type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": "rb_alice"},
                        "password": "secret-pw",
                    },
                )
                assert status == 200, login
                after = [await c.call(m, p, b, token=login["access_token"]) for m, p, b in reads]
        finally:
            assert server.stop() == 0
        assert without_age(after) == without_age(before)
    finally:
        if dsn:
            testing.drop_database(dsn)
