"""Invariant 2 of the design, over HTTP: after `myelin rebuild` every API answer is identical.

A workload goes through a real server (rooms, joins, messages, state changes, a redaction);
the answers of the read endpoints are recorded; the server stops; `myelin rebuild` drops
every projection and replays the room event log; a new server on the same data directory
must give byte-for-byte the same answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from myelin.storage import testing
from tests.support.client import SpecClient
from tests.support.server import MYELIN, start_server

V3 = "/_matrix/client/v3"
NATS_URL = "nats://127.0.0.1:4222"


async def _workload(c: SpecClient) -> tuple[dict[str, str], list[str]]:
    alice = await c.register("alice")
    bob = await c.register("bob")
    tokens = {"alice": alice["access_token"], "bob": bob["access_token"]}
    rooms = []
    for n in range(3):
        status, room = await c.call(
            "POST",
            f"{V3}/createRoom",
            {"preset": "public_chat", "name": f"room {n}"},
            token=tokens["alice"],
        )
        assert status == 200, room
        room_id = room["room_id"]
        rooms.append(room_id)
        status, _ = await c.call("POST", f"{V3}/join/{room_id}", {}, token=tokens["bob"])
        assert status == 200
        sent = []
        for i in range(15):
            who = "alice" if i % 2 else "bob"
            status, body = await c.call(
                "PUT",
                f"{V3}/rooms/{room_id}/send/m.room.message/t{n}-{i}",
                {"msgtype": "m.text", "body": f"message {i} in room {n}"},
                token=tokens[who],
            )
            assert status == 200, body
            sent.append(body["event_id"])
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room_id}/state/m.room.topic",
            {"topic": f"topic {n}"},
            token=tokens["alice"],
        )
        assert status == 200
        status, _ = await c.call(
            "PUT",
            f"{V3}/rooms/{room_id}/redact/{sent[2]}/r{n}",  # one of Bob's own
            {"reason": "oops"},
            token=tokens["bob"],
        )
        assert status == 200
    status, _ = await c.call("POST", f"{V3}/rooms/{rooms[2]}/leave", {}, token=tokens["bob"])
    assert status == 200
    return tokens, rooms


async def _answers(c: SpecClient, tokens: dict[str, str], rooms: list[str]) -> dict[str, Any]:
    """Every read answer of the workload's rooms, for each user; volatile fields removed."""
    answers: dict[str, Any] = {}
    for user, token in tokens.items():
        status, joined = await c.call("GET", f"{V3}/joined_rooms", token=token)
        answers[f"{user} joined_rooms"] = (status, sorted(joined["joined_rooms"]))
        status, sync = await c.call("GET", f"{V3}/sync", token=token)
        answers[f"{user} sync rooms"] = (status, _stable(sync.get("rooms", {})))
        for room_id in rooms:
            for path in (
                f"/rooms/{room_id}/messages?dir=b&limit=100",
                f"/rooms/{room_id}/state",
                f"/rooms/{room_id}/members",
                f"/rooms/{room_id}/joined_members",
            ):
                status, body = await c.call("GET", V3 + path, token=token, validate=False)
                answers[f"{user} {path}"] = (status, _stable(body))
    return answers


def _stable(value: Any) -> Any:
    """Drop what depends on the time of the request (`age`), keep everything else."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k != "age"}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


async def _check_rebuild(data_dir: Path, **deployment: str) -> None:
    """The workload, `myelin rebuild`, and the same answers, on one deployment (the
    storage options given to both `myelin serve` and `myelin rebuild`)."""
    server = start_server(data_dir, **deployment)
    try:
        async with SpecClient(server.base_url) as c:
            tokens, rooms = await _workload(c)
            before = await _answers(c, tokens, rooms)
    finally:
        server.stop()

    options = [f"--{key.replace('_', '-')}={value}" for key, value in deployment.items()]
    result = await asyncio.to_thread(
        subprocess.run,
        [str(MYELIN), "rebuild", "--data-dir", str(data_dir), *options],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "rebuilt from" in result.stdout

    server = start_server(data_dir, **deployment)
    try:
        async with SpecClient(server.base_url) as c:
            after = await _answers(c, tokens, rooms)
    finally:
        server.stop()

    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], key
    # The workload is really in there: 15 messages + state in every room's history.
    history = before[f"alice /rooms/{rooms[0]}/messages?dir=b&limit=100"][1]["chunk"]
    assert sum(e["type"] == "m.room.message" for e in history) == 15


async def test_answers_identical_after_rebuild(tmp_path: Path) -> None:
    """The embedded default: SQLite and the log on disk."""
    await _check_rebuild(tmp_path / "data")


@pytest.mark.postgres
@pytest.mark.nats
async def test_answers_identical_after_rebuild_scaled_out(tmp_path: Path) -> None:
    """The scale-out deployment: PostgreSQL, and the log in a JetStream stream of its own.
    Nothing of the room history is on the local disk, so the answers after the rebuild
    come from the stream."""
    stream = f"MYELIN_TEST_{uuid.uuid4().hex[:12]}"
    dsn = testing.create_throwaway_database()
    try:
        await _check_rebuild(tmp_path / "data", database=dsn, event_log=f"{NATS_URL}/{stream}")
        assert not (tmp_path / "data" / "eventlog").exists()
    finally:
        testing.drop_database(dsn)
        await _delete_stream(stream)


async def _delete_stream(stream: str) -> None:
    import nats
    import nats.js.errors

    try:
        nc = await nats.connect(NATS_URL, connect_timeout=2, allow_reconnect=False)
    except Exception as exc:  # any connection failure means: no NATS
        pytest.fail(f"this test needs NATS with JetStream on {NATS_URL}: {exc}")
    try:
        js = nc.jetstream()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(stream)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_key_value(f"{stream}_readers")
    finally:
        await nc.close()
