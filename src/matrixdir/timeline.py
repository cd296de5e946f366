"""What a viewer shows of a room, computed from its stored events (pure, no I/O).

The store is append-only, so edits, reactions, redactions and thread replies are separate
events that refer to others; this module folds them into one display model: the latest
version of each message, aggregated reactions, deleted messages, reply quotes and thread
summaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matrixdir.layout import attachment_relpath
from matrixdir.media import media_refs

MESSAGE_TYPES = {"m.room.message", "m.sticker", "m.room.encrypted"}


def _relates(event: dict[str, Any]) -> dict[str, Any]:
    content = event.get("content")
    rel = content.get("m.relates_to") if isinstance(content, dict) else None
    return rel if isinstance(rel, dict) else {}


def _redacts(event: dict[str, Any]) -> str | None:
    target = event.get("redacts")
    if not isinstance(target, str):
        content = event.get("content")
        target = content.get("redacts") if isinstance(content, dict) else None
    return target if isinstance(target, str) else None


@dataclass
class Message:
    event_id: str
    sender: str
    ts: int
    content: dict[str, Any]
    type: str
    edited: bool = False
    redacted: bool = False
    reply_to: str | None = None
    thread_root: str | None = None
    reactions: dict[str, set[str]] = field(default_factory=dict)  # key -> senders
    reaction_ids: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (key, who)
    thread_replies: list[str] = field(default_factory=list)
    pending: bool = False
    failed: str | None = None
    pos: tuple[int, int, int] = (0, 0, 0)

    @property
    def body(self) -> str:
        if self.redacted:
            return "[message deleted]"
        if self.type == "m.room.encrypted":
            return "[encrypted message; no key yet]"
        body = self.content.get("body")
        return body if isinstance(body, str) else ""

    @property
    def attachment(self) -> str | None:
        """Path of the message's attachment relative to the room directory, if any."""
        if self.redacted:
            return None
        for ref in media_refs({"content": self.content}):
            return attachment_relpath(ref.uri)
        return None


@dataclass
class RoomTimeline:
    """Folds a room's events, fed in reading order, into messages to display."""

    room_id: str
    user_id: str | None = None
    name: str | None = None
    messages: dict[str, Message] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    transaction_ids: set[str] = field(default_factory=set)
    _edits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _orphans: list[dict[str, Any]] = field(default_factory=list)
    _redacted: set[str] = field(default_factory=set)
    _decryptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen_pos: tuple[int, int, int] | None = None

    def add(self, event: dict[str, Any], pos: tuple[int, int, int] = (0, 0, 0)) -> None:
        """Fold in one event; `pos` is its place in reading order (file ts, n, offset)."""
        if not isinstance(event.get("event_id"), str):
            return
        if event.get("type") == "m.room.encrypted" and event["event_id"] in self._decryptions:
            event = self._decryptions[event["event_id"]]
        txn = (event.get("unsigned") or {}).get("transaction_id")
        if isinstance(txn, str):
            self.transaction_ids.add(txn)
        etype = event.get("type")
        if etype == "m.room.name" and event.get("state_key") == "":
            name = (event.get("content") or {}).get("name")
            self.name = name if isinstance(name, str) and name else None
            return
        if etype == "m.room.redaction":
            self._redact(event)
            return
        rel = _relates(event)
        if etype == "m.reaction":
            if not self._react(event, rel):
                self._orphans.append(event)
            return
        if etype not in MESSAGE_TYPES:
            return
        if rel.get("rel_type") == "m.replace" and isinstance(rel.get("event_id"), str):
            if not self._edit(event, rel["event_id"]):
                self._edits.setdefault(rel["event_id"], []).append(event)
            return
        self._add_message(event, rel, pos)

    def add_decryption(self, event: dict[str, Any]) -> None:
        """Plaintext of an event stored encrypted, from the late-decryptions file."""
        eid = event.get("event_id")
        if not isinstance(eid, str):
            return
        self._decryptions[eid] = event
        msg = self.messages.get(eid)
        if msg is not None and msg.type == "m.room.encrypted":
            del self.messages[eid]
            self.order.remove(eid)
            self.add(event, msg.pos)

    def _add_message(
        self, event: dict[str, Any], rel: dict[str, Any], pos: tuple[int, int, int]
    ) -> None:
        eid = event["event_id"]
        if eid in self.messages:
            return
        content = event.get("content") if isinstance(event.get("content"), dict) else {}
        reply = rel.get("m.in_reply_to")
        msg = Message(
            eid,
            str(event.get("sender", "")),
            int(event.get("origin_server_ts", 0)),
            dict(content or {}),
            str(event.get("type")),
            reply_to=reply.get("event_id") if isinstance(reply, dict) else None,
            pos=pos,
        )
        if rel.get("rel_type") == "m.thread" and isinstance(rel.get("event_id"), str):
            msg.thread_root = rel["event_id"]
            root = self.messages.get(msg.thread_root)
            if root is not None:
                root.thread_replies.append(eid)
        else:
            # Replies that arrived before their root (back-fill order) attach now.
            for other in self.messages.values():
                if other.thread_root == eid:
                    msg.thread_replies.append(other.event_id)
        if eid in self._redacted:
            msg.redacted = True
            msg.content = {}
        self.messages[eid] = msg
        self.order.append(eid)
        for edit in self._edits.pop(eid, []):
            self._edit(edit, eid)
        orphans, self._orphans = self._orphans, []
        for orphan in orphans:
            if not self._react(orphan, _relates(orphan)):
                self._orphans.append(orphan)

    def _edit(self, event: dict[str, Any], target: str) -> bool:
        msg = self.messages.get(target)
        if msg is None:
            return False
        if event.get("sender") != msg.sender or msg.redacted:
            return True  # only the author may edit; ignore others
        new = (event.get("content") or {}).get("m.new_content")
        if isinstance(new, dict):
            msg.content = dict(new)
            msg.edited = True
        return True

    def _react(self, event: dict[str, Any], rel: dict[str, Any]) -> bool:
        target, key = rel.get("event_id"), rel.get("key")
        if rel.get("rel_type") != "m.annotation" or not isinstance(key, str):
            return True
        msg = self.messages.get(target) if isinstance(target, str) else None
        if event["event_id"] in self._redacted:
            return True
        if msg is None:
            return False
        sender = str(event.get("sender", ""))
        msg.reactions.setdefault(key, set()).add(sender)
        msg.reaction_ids[event["event_id"]] = (key, sender)
        return True

    def _redact(self, event: dict[str, Any]) -> None:
        target = _redacts(event)
        if target is None:
            return
        self._redacted.add(target)  # it may arrive later (back-fill)
        msg = self.messages.get(target)
        if msg is not None:
            msg.redacted = True
            msg.content = {}
            msg.reactions.clear()
            return
        for other in self.messages.values():
            if target in other.reaction_ids:
                key, who = other.reaction_ids.pop(target)
                senders = other.reactions.get(key, set())
                senders.discard(who)
                if not senders:
                    other.reactions.pop(key, None)
                return

    # -- views ---------------------------------------------------------------------------

    def _sorted(self) -> list[Message]:
        return sorted(self.messages.values(), key=lambda m: m.pos)

    def main_timeline(self) -> list[Message]:
        """Messages outside threads, in reading order."""
        return [m for m in self._sorted() if m.thread_root is None]

    def thread(self, root: str) -> list[Message]:
        msgs = [self.messages[root]] if root in self.messages else []
        return msgs + [m for m in self._sorted() if m.thread_root == root]

    def unread(self) -> int:
        """Messages from others after the last position the user has seen."""
        seen = self.seen_pos
        return sum(
            1
            for m in self.messages.values()
            if m.sender != self.user_id and (seen is None or m.pos > seen)
        )

    def mark_read(self) -> None:
        if self.messages:
            self.seen_pos = max(m.pos for m in self.messages.values())

    def render(self, msg: Message) -> str:
        """One message as text: reply quote, body, markers, reactions, thread summary."""
        lines = []
        if msg.reply_to:
            parent = self.messages.get(msg.reply_to)
            quoted = parent.body.split("\n", 1)[0] if parent else "…"
            who = parent.sender if parent else "?"
            lines.append(f"  > {who}: {quoted}")
        body = _strip_reply_fallback(msg.body) if msg.reply_to else msg.body
        marker = " (edited)" if msg.edited else ""
        if msg.failed:
            marker += f" (not sent: {msg.failed})"
        elif msg.pending:
            marker += " (sending…)"
        att = msg.attachment
        if att:
            body = f"[{msg.content.get('msgtype', 'file')}: {body}]"
        lines.append(f"{msg.sender}: {body}{marker}")
        if msg.reactions:
            lines.append(
                "  " + "  ".join(f"{k} {len(v)}" for k, v in sorted(msg.reactions.items()))
            )
        if msg.thread_replies:
            last = self.messages[msg.thread_replies[-1]]
            n = len(msg.thread_replies)
            lines.append(f"  ↳ {n} repl{'y' if n == 1 else 'ies'}, last {last.sender}: {last.body}")
        return "\n".join(lines)


def _strip_reply_fallback(body: str) -> str:
    """Drop the `> <@user> quoted` fallback lines a reply body starts with."""
    lines = body.split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    if i and i < len(lines) and lines[i] == "":
        i += 1
    return "\n".join(lines[i:]) if i else body


def pending_message(
    entry_txn: str, sender: str, ts: int, type_: str, content: dict[str, Any]
) -> Message:
    return Message(f"~{entry_txn}", sender, ts, dict(content), type_, pending=True)
