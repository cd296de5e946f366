"""Sending to-device messages (send_to_device.md): queue them per target device.

A `(sender device, txn_id)` pair is recorded in the same transaction as the messages, so a
retransmitted request queues nothing twice. Messages to devices that do not exist are
dropped, as the spec says of invalid targets; `*` means every device of the user.
"""

from __future__ import annotations

from typing import Any

import orjson

from myelin.keyserver.errors import bad_json
from myelin.storage import Database, Txn

#: Targets (user, device) one request may address.
MAX_TARGETS = 10_000


async def send_to_device(
    db: Database,
    server_name: str,
    sender: str,
    sender_device: str,
    event_type: str,
    txn_id: str,
    messages: Any,
) -> set[str]:
    """Queue the messages; returns the local users that received at least one."""
    if not isinstance(messages, dict):
        raise bad_json("messages must be an object")
    targets: list[tuple[str, str, Any]] = []
    for user_id, by_device in messages.items():
        if not isinstance(by_device, dict):
            raise bad_json(f"messages[{user_id}] must be an object")
        for device_id, content in by_device.items():
            if not isinstance(content, dict):
                raise bad_json(f"messages[{user_id}][{device_id}] must be an object")
            targets.append((user_id, device_id, content))
    if len(targets) > MAX_TARGETS:
        raise bad_json(f"At most {MAX_TARGETS} target devices per request")

    async def txn(t: Txn) -> set[str]:
        first = await t.execute(
            "INSERT INTO e2e_to_device_txns (user_id, device_id, txn_id) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            sender,
            sender_device,
            txn_id,
        )
        if not first:
            return set()  # a retransmission: already queued
        rows: list[tuple[str, str, str]] = []
        for user_id, device_id, content in targets:
            if user_id.partition(":")[2] != server_name:
                continue  # no federation yet: remote targets are dropped
            if device_id == "*":
                found = await t.fetchall(
                    "SELECT device_id FROM devices WHERE user_id = ? ORDER BY device_id", user_id
                )
                devices = [str(r[0]) for r in found]
            else:
                exists = await t.fetchval(
                    "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?",
                    user_id,
                    device_id,
                )
                devices = [device_id] if exists else []
            message = orjson.dumps(
                {"sender": sender, "type": event_type, "content": content}
            ).decode()
            rows.extend((user_id, d, message) for d in devices)
        if rows:
            # Positions come from the stream counter, never from the inbox rows (which are
            # deleted on delivery): a position is never handed out twice.
            last = await t.fetchval(
                "UPDATE e2e_to_device_stream SET pos = pos + ? WHERE id = 1 RETURNING pos",
                len(rows),
            )
            first = int(last) - len(rows) + 1
            await t.executemany(
                "INSERT INTO e2e_to_device (pos, user_id, device_id, message_json)"
                " VALUES (?, ?, ?, ?)",
                [(first + i, *row) for i, row in enumerate(rows)],
            )
        return {r[0] for r in rows}

    return await db.run(txn)
