"""The retrieval agent, `matrixdir sync` (docs §4, §5, §6, §8).

One round: /sync, append the timeline events (de-duplicated by event_id), fsync, download
attachments, then save the sync token. Back-fill then walks every gap back with /messages,
page by page, each page fsynced before the gap's new position is saved, so a restart at any
point resumes without gaps or duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import nio

from matrixdir.errors import MatrixdirError, PermanentFailure, TemporaryFailure
from matrixdir.fsutil import atomic_write
from matrixdir.layout import attachment_relpath
from matrixdir.media import MediaRef, media_refs
from matrixdir.outbox import Outbox
from matrixdir.state import AgentState, RoomState
from matrixdir.writer import StoreWriter

log = logging.getLogger("matrixdir.sync")

ProgressFn = Callable[[str, int], None]


@dataclass
class SyncStats:
    events: int = 0
    backfilled: int = 0
    media: int = 0
    rooms: set[str] = field(default_factory=set)


def stored_form(event: Any, room_id: str) -> dict[str, Any]:
    """The line to store for a nio event: the raw event, or the decrypted one (§5)."""
    source = dict(event.source)
    if getattr(event, "decrypted", False):
        source.setdefault("room_id", room_id)
        source["matrixdir"] = {
            "encrypted": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "sender_key": getattr(event, "sender_key", None),
                "session_id": getattr(event, "session_id", None),
            }
        }
    return source


class RetrievalAgent:
    def __init__(
        self,
        writer: StoreWriter,
        client: nio.AsyncClient,
        *,
        rooms: Iterable[str] | None = None,
        page_limit: int = 100,
        progress: ProgressFn | None = None,
    ) -> None:
        self.writer = writer
        self.client = client
        self.rooms = set(rooms) if rooms else None
        self.page_limit = page_limit
        self.progress = progress
        self.state: AgentState = writer.load_state()
        self.outbox = Outbox(writer.root)
        self.stats = SyncStats()
        self._new_keys = True  # room keys may have arrived (start, key import, to-device)
        if self.state.user_id and self.state.user_id != client.user_id:
            raise PermanentFailure(
                f"{writer.root} belongs to {self.state.user_id}, not {client.user_id}"
            )
        self.state.user_id = client.user_id
        previous = self.state.selection
        if previous is not None and (self.rooms is None or not self.rooms <= set(previous)):
            # The token only covers the rooms selected before: start over with an initial
            # sync so newly selected rooms arrive (what is stored already is skipped).
            self.state.next_batch = None
        self.state.selection = sorted(self.rooms) if self.rooms is not None else None

    # -- helpers -------------------------------------------------------------------------

    def _wanted(self, room_id: str) -> bool:
        return self.rooms is None or room_id in self.rooms

    def _filter(self) -> dict[str, Any]:
        room: dict[str, Any] = {"timeline": {"limit": 50}, "state": {"lazy_load_members": False}}
        if self.rooms is not None:
            room["rooms"] = sorted(self.rooms)
        return {"room": room}

    def _decrypt(self, event: Any) -> Any:
        if isinstance(event, nio.MegolmEvent) and self.client.olm:
            try:
                decrypted = self.client.decrypt_event(event)
            except (nio.EncryptionError, ValueError) as e:
                log.info("cannot decrypt %s yet: %s", event.event_id, e)
                return event
            if isinstance(decrypted, nio.Event) and not isinstance(decrypted, nio.BadEvent):
                decrypted.decrypted = True
                return decrypted
        return event

    async def _keys(self) -> None:
        """Upload, query and claim keys as end-to-end encryption needs."""
        if not self.client.olm:
            return
        await self.client.send_to_device_messages()
        if self.client.should_upload_keys:
            await self.client.keys_upload()
        if self.client.should_query_keys:
            await self.client.keys_query()
        if self.client.should_claim_keys:
            await self.client.keys_claim(self.client.get_users_for_key_claiming())

    def _forget_sent(self, room_id: str, written: list[dict[str, Any]]) -> None:
        sent = {e.event_id: e for e in self.outbox.sent_entries() if e.room_id == room_id}
        if not sent:
            return
        by_txn = {e.txn_id: e for e in sent.values()}
        for event in written:
            txn = (event.get("unsigned") or {}).get("transaction_id")
            entry = sent.get(event["event_id"]) or by_txn.get(txn or "")
            if entry is not None:
                self.outbox.forget_sent(entry.txn_id)

    # -- media ---------------------------------------------------------------------------

    async def _fetch_media(self, room_id: str, ref: MediaRef) -> bool:
        path = self.writer.room_path(room_id) / attachment_relpath(ref.uri)
        if path.exists():
            return True
        resp = await self.client.download(mxc=ref.uri)
        if isinstance(resp, nio.DownloadError):
            log.warning("download of %s failed: %s", ref.uri, resp.message)
            return False
        body = resp.body
        if not isinstance(body, bytes):
            log.warning("download of %s gave no body", ref.uri)
            return False
        if ref.file is not None:
            from nio.crypto.attachments import decrypt_attachment

            try:
                body = decrypt_attachment(
                    body, ref.file["key"]["k"], ref.file["hashes"]["sha256"], ref.file["iv"]
                )
            except (KeyError, TypeError, ValueError, nio.EncryptionError) as e:
                log.warning("attachment %s does not decrypt: %s", ref.uri, e)
                return False
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, body, tmp_dir=self.writer.tmp_dir)
        self.stats.media += 1
        return True

    async def _media_for(self, room_id: str, events: list[dict[str, Any]]) -> None:
        for event in events:
            for ref in media_refs(event):
                ok = False
                with contextlib.suppress(OSError, TimeoutError, MatrixdirError):
                    ok = await self._fetch_media(room_id, ref)
                if not ok:
                    self.state.pending_media.append(
                        {"room_id": room_id, "uri": ref.uri, "file": ref.file}
                    )

    def find_missing_media(self) -> int:
        """Queue attachments of stored events that are not on disk (e.g. after a crash
        between writing the events and downloading their media); returns how many."""
        from matrixdir.reader import read_room, room_dirs

        queued = {(m.get("room_id"), m.get("uri")) for m in self.state.pending_media}
        added = 0
        for room_id, path in room_dirs(self.writer.root).items():
            if not self._wanted(room_id):
                continue
            for stored in read_room(path):
                for ref in media_refs(stored.event):
                    if (room_id, ref.uri) in queued:
                        continue
                    if not (path / attachment_relpath(ref.uri)).exists():
                        self.state.pending_media.append(
                            {"room_id": room_id, "uri": ref.uri, "file": ref.file}
                        )
                        queued.add((room_id, ref.uri))
                        added += 1
        return added

    async def retry_media(self) -> None:
        pending, self.state.pending_media = self.state.pending_media, []
        for item in pending:
            ref = MediaRef(item["uri"], item.get("file"))
            ok = False
            with contextlib.suppress(OSError, TimeoutError, MatrixdirError):
                ok = await self._fetch_media(item["room_id"], ref)
            if not ok:
                self.state.pending_media.append(item)

    # -- sync ----------------------------------------------------------------------------

    async def sync_once(self, timeout_ms: int = 0) -> None:
        """One /sync round; events are on disk before the token that covers them is saved."""
        await self._keys()
        resp = await self.client.sync(
            timeout=timeout_ms, since=self.state.next_batch, sync_filter=self._filter()
        )
        if isinstance(resp, nio.SyncError):
            from matrixdir.client import raise_for

            raise_for(resp, "sync")
        sections: list[tuple[str, Any]] = [*resp.rooms.join.items(), *resp.rooms.leave.items()]
        for room_id, info in sections:
            if not self._wanted(room_id):
                continue
            await self._store_timeline(room_id, info.timeline)
        if resp.to_device_events:
            self._new_keys = True
        await self.retry_media()
        self.state.next_batch = resp.next_batch
        self.writer.save_state(self.state)

    async def _store_timeline(self, room_id: str, timeline: Any) -> None:
        known = room_id in self.state.rooms
        room: RoomState = self.state.room(room_id)
        newest = self.writer.newest_event_id(room_id)
        events = [stored_form(self._decrypt(e), room_id) for e in timeline.events]
        written = self.writer.append_live(room_id, events)
        self._note_undecrypted(room_id, written)
        self.stats.events += len(written)
        self.stats.rooms.add(room_id)
        prev = timeline.prev_batch
        if prev:
            if not known:
                room.gaps.append({"from": prev})
            elif timeline.limited and newest is not None:
                room.gaps.append({"from": prev, "until": newest})
        await self._media_for(room_id, written)
        self._forget_sent(room_id, written)

    # -- late decryption -----------------------------------------------------------------

    def _note_undecrypted(self, room_id: str, written: list[dict[str, Any]]) -> None:
        ids = [e["event_id"] for e in written if e.get("type") == "m.room.encrypted"]
        if ids:
            self.state.undecrypted.setdefault(room_id, []).extend(ids)

    def retry_decryption(self) -> int:
        """Decrypt events stored encrypted, now that keys may have arrived; their plaintext
        goes to the room's late-decryptions file (docs §5). Returns how many."""
        if not self._new_keys or not self.client.olm or not self.state.undecrypted:
            return 0
        self._new_keys = False
        from matrixdir.reader import read_room

        total = 0
        for room_id, ids in list(self.state.undecrypted.items()):
            wanted = set(ids)
            path = self.writer.room_path(room_id)
            plain: list[dict[str, Any]] = []
            for stored in read_room(path):
                if stored.event_id not in wanted:
                    continue
                encrypted = nio.Event.parse_encrypted_event(stored.event)
                decrypted = self._decrypt(encrypted)
                if getattr(decrypted, "decrypted", False):
                    plain.append(stored_form(decrypted, room_id))
                    wanted.discard(stored.event_id)
            total += self.writer.append_decryptions(room_id, plain)
            remaining = [i for i in ids if i in wanted]
            if remaining:
                self.state.undecrypted[room_id] = remaining
            else:
                del self.state.undecrypted[room_id]
        return total

    # -- back-fill -----------------------------------------------------------------------

    async def backfill(self) -> None:
        """Fill every gap of every room, back to each room's creation."""
        for room_id in list(self.state.rooms):
            if self._wanted(room_id):
                await self.backfill_room(room_id)

    async def backfill_room(self, room_id: str) -> None:
        room = self.state.room(room_id)
        while room.gaps:
            gap = room.gaps[-1]
            done = await self._backfill_page(room_id, gap)
            if done:
                room.gaps.pop()
                if not room.gaps:
                    room.complete = True
            self.writer.save_state(self.state)

    async def _backfill_page(self, room_id: str, gap: dict[str, Any]) -> bool:
        resp = await self.client.room_messages(room_id, start=gap["from"], limit=self.page_limit)
        if isinstance(resp, nio.RoomMessagesError):
            from matrixdir.client import raise_for

            raise_for(resp, "messages")
        until = gap.get("until")
        page: list[dict[str, Any]] = []
        reached = False
        for event in resp.chunk:  # newest first
            if until is not None and event.event_id == until:
                reached = True
                break
            page.append(stored_form(self._decrypt(event), room_id))
            if event.source.get("type") == "m.room.create":
                reached = True
                break
        page.reverse()
        written = self.writer.write_backfill(room_id, page)
        self._note_undecrypted(room_id, written)
        self.stats.backfilled += len(written)
        if self.progress:
            self.progress(room_id, len(resp.chunk))
        await self._media_for(room_id, written)
        if reached or not resp.end or not resp.chunk:
            return True
        gap["from"] = resp.end
        return False

    # -- outbox --------------------------------------------------------------------------

    async def flush_outbox(self) -> None:
        """Send what `matrixdir send` queued (it leaves encrypted rooms to us while we run).

        A retry reuses the entry's transaction ID, so the server never sends twice.
        """
        from matrixdir.submit import send_encrypted, send_plain

        for done in self.outbox.sent_entries():
            # Acknowledged after we had stored the event already: nothing left to show.
            if done.event_id and self.writer.has_event(done.room_id, done.event_id):
                self.outbox.forget_sent(done.txn_id)
        for entry in self.outbox.pending():
            room = self.client.rooms.get(entry.room_id)
            try:
                if room is not None and room.encrypted and self.client.olm:
                    event_id = await send_encrypted(self.client, entry)
                else:
                    event_id = await send_plain(self.client, entry)
            except PermanentFailure as e:
                log.warning("outbox %s refused: %s", entry.txn_id, e)
                self.outbox.mark_failed(entry, str(e))
                continue
            except (MatrixdirError, OSError, TimeoutError) as e:
                log.warning("outbox %s not sent yet: %s", entry.txn_id, e)
                continue
            self.outbox.mark_sent(entry, event_id)

    # -- loop ----------------------------------------------------------------------------

    async def _outbox_changed(self) -> None:
        """Return when something new is dropped into outbox/new (inotify, no polling)."""
        from matrixdir.watch import Watch

        self.outbox.new.mkdir(parents=True, exist_ok=True)
        async with Watch(self.outbox.new, recursive=False) as watch:
            await watch.changed()

    async def _long_poll(self, timeout_ms: int) -> None:
        """A long-polling sync round that gives way when `matrixdir send` queues something.

        Only waiting is cut short: a cancelled round saved nothing, and the next one repeats
        it from the same token (duplicates are dropped by event_id).
        """
        sync_task = asyncio.create_task(self.sync_once(timeout_ms))
        wake_task = asyncio.create_task(self._outbox_changed())
        try:
            done, _ = await asyncio.wait(
                {sync_task, wake_task}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (sync_task, wake_task):
                if not task.done():
                    task.cancel()
            # Children's own cancellations come back as results; ours still propagates.
            await asyncio.gather(sync_task, wake_task, return_exceptions=True)
        if sync_task in done:
            sync_task.result()

    async def run(self, *, once: bool, backfill: bool, timeout_ms: int = 30000) -> SyncStats:
        first = True
        delay = 1.0
        self.find_missing_media()
        while True:
            try:
                if first or once:
                    await self.sync_once(0)
                else:
                    await self._long_poll(timeout_ms)
                if self.retry_decryption():
                    self.writer.save_state(self.state)
                await self.flush_outbox()
                if backfill:
                    await self.backfill()
                delay = 1.0
            except TemporaryFailure as e:
                if once:
                    raise
                log.warning("%s; retrying in %.0f s", e, delay)
                await asyncio.sleep(delay)  # back-off after an error, not polling
                delay = min(delay * 2, 60.0)
            first = False
            if once:
                return self.stats
