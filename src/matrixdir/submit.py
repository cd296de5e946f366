"""The submission agent, `matrixdir send` (docs §7).

Every message goes through the outbox first, so a failure leaves it queued and a retry uses
the same transaction ID: the homeserver turns a repeated (device, txnId) into the same event.
Encrypted rooms need the device's keys; while a retrieval agent runs it owns them (the crypto
lock), so encrypted messages are then left to it and we wait for its acknowledgement.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nio

from matrixdir.client import make_client, raise_for, room_is_encrypted
from matrixdir.config import Credentials, crypto_dir
from matrixdir.errors import MatrixdirError, PermanentFailure, TemporaryFailure
from matrixdir.outbox import Outbox, OutboxEntry


@contextmanager
def crypto_lock(user_id: str, *, blocking: bool = False) -> Iterator[bool]:
    """Hold the lock on the user's end-to-end keys; yields False if someone else has it."""
    d = crypto_dir(user_id)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SendResult:
    entry: OutboxEntry
    event_id: str | None
    error: MatrixdirError | None = None


async def send_plain(client: nio.AsyncClient, entry: OutboxEntry) -> str:
    try:
        resp = await client.room_send(entry.room_id, entry.type, entry.content, tx_id=entry.txn_id)
    except (OSError, TimeoutError, nio.LocalProtocolError) as e:
        raise TemporaryFailure(f"send to {entry.room_id} failed: {e}") from e
    raise_for(resp, "send")
    return str(resp.event_id)


async def prepare_encrypted_room(client: nio.AsyncClient, room_id: str) -> None:
    """Learn the room's state and members, and the devices to share the room key with."""
    flt = {
        "room": {"rooms": [room_id], "timeline": {"limit": 1}},
        "presence": {"types": []},
        "account_data": {"types": []},
    }
    resp = await client.sync(timeout=0, sync_filter=flt, full_state=True)
    raise_for(resp, "sync")
    if client.should_upload_keys:
        raise_for(await client.keys_upload(), "keys upload")
    if client.should_query_keys:
        raise_for(await client.keys_query(), "keys query")


async def send_encrypted(client: nio.AsyncClient, entry: OutboxEntry) -> str:
    """Encrypt and send with a client that owns the keys (crypto lock held)."""
    if entry.room_id not in client.rooms:
        await prepare_encrypted_room(client, entry.room_id)
    try:
        resp = await client.room_send(
            entry.room_id,
            entry.type,
            entry.content,
            tx_id=entry.txn_id,
            ignore_unverified_devices=True,
        )
    except (OSError, TimeoutError, nio.LocalProtocolError) as e:
        raise TemporaryFailure(f"send to {entry.room_id} failed: {e}") from e
    raise_for(resp, "send")
    return str(resp.event_id)


def _stored_by_txn(root: Path, room_id: str, txn_id: str) -> str | None:
    """The event_id of the stored event sent with `txn_id`, if the agent stored it already."""
    from matrixdir.layout import room_dir_name
    from matrixdir.reader import RoomReader

    reader = RoomReader(room_id, Path(root) / room_dir_name(room_id), strict=False)
    for stored in reader.read_new():
        unsigned = stored.event.get("unsigned")
        if isinstance(unsigned, dict) and unsigned.get("transaction_id") == txn_id:
            return stored.event_id
    return None


async def wait_for_sent(
    root: Path, outbox: Outbox, entry: OutboxEntry, wait_s: float
) -> str | None:
    """Wait (inotify, no polling) until the retrieval agent has sent `entry`.

    The agent moves it to outbox/sent, and forgets it there once the event is stored, so
    both places are looked at.
    """
    from matrixdir.watch import Watch

    outbox.sent.mkdir(parents=True, exist_ok=True)
    outbox.new.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    async with Watch(outbox.sent, outbox.new, recursive=False) as watch:
        while True:
            for done in outbox.sent_entries():
                if done.txn_id == entry.txn_id and done.event_id:
                    return done.event_id
            if not (outbox.new / f"{entry.txn_id}.json").exists():
                found = _stored_by_txn(root, entry.room_id, entry.txn_id)
                if found:
                    return found
            left = deadline - loop.time()
            if left <= 0:
                return None
            await watch.changed(limit_s=left)


async def send_entries(
    root: Path, creds: Credentials, entries: list[OutboxEntry], *, wait: float = 30.0
) -> list[SendResult]:
    """Send queued entries; each one sent is moved to outbox/sent with its event_id."""
    outbox = Outbox(root)
    results: list[SendResult] = []
    # No retry loop here: a failure leaves the message queued for `send --flush` (exit 75).
    plain = make_client(creds, encryption=False, retries=0)
    e2e: nio.AsyncClient | None = None
    try:
        with crypto_lock(creds.user_id) as own_keys:
            for entry in entries:
                try:
                    if await room_is_encrypted(plain, entry.room_id):
                        if own_keys:
                            if e2e is None:
                                e2e = make_client(creds, encryption=True, retries=0)
                            event_id: str | None = await send_encrypted(e2e, entry)
                        else:
                            event_id = await wait_for_sent(root, outbox, entry, wait)
                            if event_id is None:
                                raise TemporaryFailure(
                                    "the running retrieval agent has not sent it yet"
                                )
                            results.append(SendResult(entry, event_id))
                            continue
                    else:
                        event_id = await send_plain(plain, entry)
                except (OSError, TimeoutError) as e:
                    results.append(SendResult(entry, None, TemporaryFailure(str(e))))
                    continue
                except PermanentFailure as e:
                    outbox.mark_failed(entry, str(e))
                    results.append(SendResult(entry, None, e))
                    continue
                except MatrixdirError as e:
                    results.append(SendResult(entry, None, e))
                    continue
                assert event_id is not None
                outbox.mark_sent(entry, event_id)
                results.append(SendResult(entry, event_id))
    finally:
        await plain.close()
        if e2e is not None:
            await e2e.close()
    return results


def parse_input(data: bytes, *, text: bool) -> tuple[str, dict[str, Any]]:
    """Standard input as (type, content): plain text with --text, else {"type", "content"}."""
    import orjson

    from matrixdir.errors import InvalidEventError

    if text:
        try:
            body = data.decode("utf-8").rstrip("\n")
        except UnicodeDecodeError:
            raise InvalidEventError("standard input is not UTF-8 text") from None
        if not body:
            raise InvalidEventError("empty message")
        return "m.room.message", {"msgtype": "m.text", "body": body}
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidEventError(f"standard input is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise InvalidEventError("the event must be a JSON object with type and content")
    type_, content = value.get("type"), value.get("content")
    if not isinstance(type_, str) or not isinstance(content, dict):
        raise InvalidEventError('the event needs a string "type" and an object "content"')
    return type_, content
