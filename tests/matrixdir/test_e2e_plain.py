"""matrixdir against each homeserver (Synapse and Myelin): sync, back-fill, attachments, send
(plain rooms)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from matrixdir.layout import EventFileName, attachment_relpath, room_dir_name
from matrixdir.reader import StoreReader, read_room

from .conftest import Cli, register


def stored(store: Path, room_id: str) -> list[dict[str, Any]]:
    return [s.event for s in read_room(store / room_dir_name(room_id))]


def assert_jq_parses(store: Path) -> int:
    files = sorted(store.glob("*/*.jsonl"))
    assert files
    if shutil.which("jq"):
        proc = subprocess.run(["jq", "-c", ".", *map(str, files)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return len(proc.stdout.splitlines())
    n = 0
    for f in files:
        for line in f.read_text().splitlines():
            json.loads(line)
            n += 1
    return n


def assert_exactly_once(store: Path, room_id: str, server_events: list[dict[str, Any]]) -> None:
    mine = stored(store, room_id)
    ids = [e["event_id"] for e in mine]
    assert len(ids) == len(set(ids)), "duplicate events in the store"
    assert set(ids) == {e["event_id"] for e in server_events}
    # Reading order is the server's order (one server, one clock).
    assert ids == [e["event_id"] for e in server_events]


@pytest.mark.slow
def test_sync_backfill_attachments_and_send(homeserver: str, cli: Cli) -> None:
    alice, bob = register(homeserver), register(homeserver)
    room = bob.create_room(preset="private_chat", name="plain")
    bob.invite(room, alice.user_id)
    alice.join(room)
    for i in range(80):
        bob.text(room, f"before {i}")
    blob = os.urandom(3000)
    mxc = bob.upload(blob)
    bob.send(room, {"msgtype": "m.file", "body": "f.bin", "url": mxc})

    cli.login(alice)
    creds = list((cli.home / "config" / "matrixdir" / "credentials").iterdir())
    assert len(creds) == 1 and creds[0].stat().st_mode & 0o777 == 0o600

    out = cli.run("sync", "--once", "--page-size", "7", "--no-progress")
    assert "back-filled" in out.stderr
    assert_exactly_once(cli.store, room, alice.messages(room))
    events = stored(cli.store, room)
    assert events[0]["type"] == "m.room.create"
    att = cli.store / room_dir_name(room) / attachment_relpath(mxc)
    assert att.read_bytes() == blob
    # Back-fill pages went to their own files, named by their first event, or a millisecond
    # before the oldest file when they share its first millisecond (docs §4.2): never after.
    files = sorted((cli.store / room_dir_name(room)).glob("*-events.jsonl"))
    assert len(files) > 2
    for f in files:
        first = orjson.loads(f.read_bytes().split(b"\n", 1)[0])
        assert EventFileName.parse(f.name).ts <= first["origin_server_ts"]

    # Incremental: new events go to the head file, once.
    for i in range(5):
        bob.text(room, f"after {i}")
    att.unlink()  # as if the agent died between writing the event and fetching its media
    cli.run("sync", "--once", "--no-progress")
    cli.run("sync", "--once", "--no-progress")
    assert_exactly_once(cli.store, room, alice.messages(room))
    assert att.read_bytes() == blob  # found missing on start, fetched again

    # send: queued in the outbox, sent, printed; appears once after the next sync.
    sent = cli.run("send", "--room", room, "--text", input="hello from matrixdir\n")
    event_id = sent.stdout.strip()
    assert event_id.startswith("$")
    assert not list((cli.store / "outbox" / "new").iterdir())
    assert len(list((cli.store / "outbox" / "sent").iterdir())) == 1
    js = cli.run(
        "send",
        "--room",
        room,
        input=json.dumps(
            {"type": "m.room.message", "content": {"msgtype": "m.notice", "body": "json"}}
        ),
    )
    cli.run("sync", "--once", "--no-progress")
    assert_exactly_once(cli.store, room, alice.messages(room))
    by_id = {e["event_id"]: e for e in stored(cli.store, room)}
    assert by_id[event_id]["content"]["body"] == "hello from matrixdir"
    assert by_id[js.stdout.strip()]["content"]["msgtype"] == "m.notice"
    assert not list((cli.store / "outbox" / "sent").iterdir())  # matched, forgotten

    assert assert_jq_parses(cli.store) == len(alice.messages(room))
    chk = cli.run("check")
    assert "0 errors" in chk.stderr


def test_send_failure_queues_and_flush_never_duplicates(homeserver: str, cli: Cli) -> None:
    alice = register(homeserver)
    room = alice.create_room(preset="private_chat")
    cli.login(alice)
    cred = next((cli.home / "config" / "matrixdir" / "credentials").iterdir())
    good = cred.read_text()
    cred.write_text(good.replace(homeserver, "http://127.0.0.1:9"))  # nothing listens there
    failed = cli.run("send", "--room", room, "--text", input="queued\n", check=False)
    assert failed.returncode == 75, failed.stderr
    assert failed.stdout == ""
    queued = list((cli.store / "outbox" / "new").iterdir())
    assert len(queued) == 1
    cred.write_text(good)
    first = cli.run("send", "--flush").stdout.strip()
    assert first.startswith("$")
    # A crash after the server answered but before the outbox moved the entry: retry.
    sent = cli.store / "outbox" / "sent" / queued[0].name
    entry = json.loads(sent.read_text())
    del entry["event_id"]
    queued[0].write_text(json.dumps(entry))
    sent.unlink()
    again = cli.run("send", "--flush").stdout.strip()
    assert again == first
    bodies = [e for e in alice.messages(room) if e["content"].get("body") == "queued"]
    assert len(bodies) == 1
    # Refused for good (not a member): moved to outbox/failed, exit 69, never retried.
    stranger_room = register(homeserver).create_room(preset="private_chat")
    refused = cli.run("send", "--room", stranger_room, "--text", input="no\n", check=False)
    assert refused.returncode == 69, refused.stderr
    assert "not sent" in refused.stderr
    assert len(list((cli.store / "outbox" / "failed").iterdir())) == 1
    assert cli.run("send", "--flush").stdout == ""
    # Bad input: a clear error, nothing queued.
    bad = cli.run("send", "--room", room, input="{not json", check=False)
    assert bad.returncode == 65 and "not JSON" in bad.stderr
    assert not list((cli.store / "outbox" / "new").iterdir())


# The crash test is about matrixdir's files (append-only writes, resume after SIGKILL, a live
# reader never seeing a torn line); the server only pages /messages, which the first test
# covers on both servers. So it runs once, against Myelin.
@pytest.mark.slow
@pytest.mark.myelin
def test_kill9_mid_backfill_resumes_without_gaps_or_duplicates(myelin_hs: str, cli: Cli) -> None:
    alice = register(myelin_hs)
    room = alice.create_room(preset="private_chat")
    for i in range(250):
        alice.text(room, f"history {i} " + "x" * 200)
    cli.login(alice)
    # A live reader follows the files the whole time, while the agent writes and dies.
    live = StoreReader(cli.store, strict=True)
    seen: list[str] = []
    room_dir = cli.store / room_dir_name(room)
    for attempt in range(3):
        proc = cli.popen("sync", "--once", "--page-size", "10", "--no-progress")
        try:
            seen += _wait_for_files(room_dir, 5 + 5 * attempt, proc, live)
        finally:
            proc.send_signal(signal.SIGKILL)  # while it keeps writing
            proc.wait()
        seen += [s.event_id for s in live.read_new()]
    cli.run("sync", "--once", "--page-size", "50", "--no-progress")
    seen += [s.event_id for s in live.read_new()]
    server = alice.messages(room)
    assert_exactly_once(cli.store, room, server)
    # The live reader saw every event exactly once and never a torn line (strict mode
    # raises on a corrupt line; an unterminated one is never yielded).
    assert sorted(seen) == sorted(e["event_id"] for e in server)
    assert "0 errors" in cli.run("check").stderr


def _wait_for_files(
    room_dir: Path, n: int, proc: subprocess.Popen[bytes], live: StoreReader
) -> list[str]:
    """Block (inotify) until the room directory has at least n event files, reading the
    new lines at every change; returns the event IDs read."""
    import watchfiles

    seen: list[str] = []
    room_dir.parent.mkdir(parents=True, exist_ok=True)
    for _ in watchfiles.watch(
        room_dir.parent,
        recursive=True,
        debounce=1,
        step=1,
        rust_timeout=120_000,
        yield_on_timeout=True,
    ):
        seen += [s.event_id for s in live.read_new()]
        if len(list(room_dir.glob("*-events.jsonl"))) >= n:
            return seen
        if proc.poll() is not None:
            raise AssertionError(f"sync ended before it was killed: {proc.stderr!r}")
    raise AssertionError("no progress")


# Room selection and the progress bar are matrixdir's own; the server calls they make (sync,
# /messages pages) are those of the first test. Once, against Myelin.
@pytest.mark.myelin
def test_rooms_selection_and_progress_bar(myelin_hs: str, cli: Cli) -> None:
    alice = register(myelin_hs)
    wanted = alice.create_room(preset="private_chat", name="wanted")
    other = alice.create_room(preset="private_chat", name="other")
    for i in range(60):
        alice.text(wanted, f"w{i}")
    alice.text(other, "not stored")
    cli.login(alice)
    out = cli.run("sync", "--once", "--rooms", wanted, "--progress", "--page-size", "20")
    assert "back-fill" in out.stderr  # the progress bar was drawn
    assert (cli.store / room_dir_name(wanted)).is_dir()
    assert not (cli.store / room_dir_name(other)).exists()
    assert_exactly_once(cli.store, wanted, alice.messages(wanted))
    # Without --rooms, the other room joins the store on the next run, with its history.
    cli.run("sync", "--once", "--no-progress")
    assert_exactly_once(cli.store, other, alice.messages(other))
    assert_exactly_once(cli.store, wanted, alice.messages(wanted))
