"""`matrixdir view`: the user agent, a Textual app over the store (DESIGN §4).

It only reads the store (event files and outbox) and follows it through inotify; composing
runs `matrixdir send`, so the retrieval agent stays the only writer of event files.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, ListItem, ListView, Static

from matrixdir.layout import room_dir_name
from matrixdir.outbox import Outbox
from matrixdir.reader import StoredEvent, StoreReader, follow, read_decryptions
from matrixdir.state import AgentState
from matrixdir.timeline import Message, RoomTimeline, pending_message


class MessageItem(ListItem):
    """One rendered message; keeps the message for actions (thread, attachment)."""

    def __init__(self, text: str, message: Message) -> None:
        super().__init__(Static(text, markup=False))
        self.text = text
        self.message = message


class RoomItem(ListItem):
    def __init__(self, room_id: str, text: str) -> None:
        super().__init__(Label(text, markup=False))
        self.room_id = room_id
        self.text = text


class ThreadScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, app_: MatrixdirApp, room_id: str, root: str) -> None:
        super().__init__()
        self.mapp = app_
        self.room_id = room_id
        self.root = root

    def compose(self) -> ComposeResult:
        yield Label(f"Thread in {self.room_id}", id="thread-title")
        yield ListView(id="thread")
        yield Input(placeholder="Reply in thread…", id="thread-compose")
        yield Footer()

    async def on_mount(self) -> None:
        await self.refresh_thread()

    async def refresh_thread(self) -> None:
        tl = self.mapp.timelines.get(self.room_id)
        view = self.query_one("#thread", ListView)
        await view.clear()
        if tl is None:
            return
        await view.extend(MessageItem(tl.render(m), m) for m in tl.thread(self.root))

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.value = ""
        if text:
            content = {
                "msgtype": "m.text",
                "body": text,
                "m.relates_to": {"rel_type": "m.thread", "event_id": self.root},
            }
            await self.mapp.submit(self.room_id, {"type": "m.room.message", "content": content})


class MatrixdirApp(App[None]):
    """Room list with unread counts, a live timeline, threads, attachments, composing."""

    TITLE = "matrixdir"
    CSS = """
    #rooms { width: 32; border-right: solid $accent; }
    #timeline { height: 1fr; }
    MessageItem { height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("t", "open_thread", "Thread"),
        Binding("o", "open_attachment", "Open file"),
        Binding("s", "save_attachment", "Save file"),
    ]

    def __init__(
        self,
        store: Path,
        *,
        user: str | None = None,
        initial_room: str | None = None,
        send_argv: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.store = Path(store)
        self.user_id = user or _store_user(self.store)
        self.current: str | None = initial_room
        self.timelines: dict[str, RoomTimeline] = {}
        self.outbox = Outbox(self.store)
        self.reader = StoreReader(self.store, strict=False)
        self.send_argv = send_argv or [sys.executable, "-m", "matrixdir"]
        self.status_text = ""
        self._stop = threading.Event()
        self._decryption_offsets: dict[str, int] = {}
        self.updates = 0  # bumped after every refresh (tests wait on it)
        self.updated = asyncio.Event()

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield ListView(id="rooms")
            with Vertical():
                yield Label("", id="title")
                yield ListView(id="timeline")
                yield Static("", id="status")
                yield Input(placeholder="Message…", id="compose")
        yield Footer()

    def on_mount(self) -> None:
        self.run_worker(self._watch(), exclusive=True, group="watch")

    async def on_unmount(self) -> None:
        self._stop.set()

    async def _watch(self) -> None:
        # The store may not exist yet (the retrieval agent is just starting): watch it anyway.
        self.store.mkdir(parents=True, exist_ok=True)
        async for batch in follow(self.reader, self._stop, yield_empty=True):
            self.ingest(batch)
            await self.refresh_all()

    # -- model ---------------------------------------------------------------------------

    def timeline(self, room_id: str) -> RoomTimeline:
        tl = self.timelines.get(room_id)
        if tl is None:
            tl = self.timelines[room_id] = RoomTimeline(room_id, self.user_id)
        return tl

    def ingest(self, batch: list[StoredEvent]) -> None:
        for stored in sorted(batch, key=lambda s: (s.room_id, s.order)):
            self.timeline(stored.room_id).add(stored.event, stored.order)
        for room_id, reader in self.reader.rooms.items():
            tl = self.timeline(room_id)
            start = self._decryption_offsets.get(room_id, 0)
            lines, end = read_decryptions(reader.room_dir, start)
            self._decryption_offsets[room_id] = end
            for line in lines:
                tl.add_decryption(line)

    def pending(self, room_id: str) -> list[Message]:
        tl = self.timeline(room_id)
        out = []
        for entry in [*self.outbox.pending(), *self.outbox.sent_entries()]:
            if entry.room_id != room_id:
                continue
            if entry.event_id in tl.messages or entry.txn_id in tl.transaction_ids:
                continue
            out.append(
                pending_message(
                    entry.txn_id,
                    self.user_id or "me",
                    entry.created_ts,
                    entry.type,
                    entry.content,
                )
            )
        for entry in self.outbox.failed_entries():
            if entry.room_id == room_id:
                msg = pending_message(
                    entry.txn_id, self.user_id or "me", entry.created_ts, entry.type, entry.content
                )
                msg.failed = "refused by the server"
                out.append(msg)
        return out

    # -- view ----------------------------------------------------------------------------

    def room_label(self, room_id: str) -> str:
        tl = self.timeline(room_id)
        unread = tl.unread()
        name = tl.name or room_id
        return f"{name} ({unread})" if unread else name

    async def refresh_all(self) -> None:
        if self.current is None and self.timelines:
            self.current = sorted(self.timelines)[0]
        if self.current is not None:
            self.timeline(self.current).mark_read()
        rooms = self.query_one("#rooms", ListView)
        wanted = sorted(self.timelines)
        items = [c for c in rooms.children if isinstance(c, RoomItem)]
        if [i.room_id for i in items] != wanted:
            keep_room = rooms.index
            await rooms.clear()
            await rooms.extend(RoomItem(r, self.room_label(r)) for r in wanted)
            rooms.index = keep_room
        else:
            for item in items:
                text = self.room_label(item.room_id)
                if text != item.text:
                    item.text = text
                    item.query_one(Label).update(text)
        await self.refresh_timeline()
        if isinstance(self.screen, ThreadScreen):
            await self.screen.refresh_thread()
        self.updates += 1
        self.updated.set()

    async def refresh_timeline(self) -> None:
        view = self.query_one("#timeline", ListView)
        title = self.query_one("#title", Label)
        if self.current is None:
            title.update("no rooms yet")
            return
        tl = self.timeline(self.current)
        title.update(tl.name or self.current)
        msgs = tl.main_timeline() + self.pending(self.current)
        texts = [(tl.render(m), m) for m in msgs]
        old = [c for c in view.children if isinstance(c, MessageItem)]
        if [o.text for o in old] == [t for t, _ in texts]:
            return
        keep = view.index
        await view.clear()
        await view.extend(MessageItem(text, msg) for text, msg in texts)
        if keep is not None and keep < len(texts):
            view.index = keep
        else:
            view.index = len(texts) - 1 if texts else None
            view.scroll_end(animate=False)

    def timeline_texts(self) -> list[str]:
        return [
            c.text
            for c in self.query_one("#timeline", ListView).children
            if isinstance(c, MessageItem)
        ]

    def room_texts(self) -> list[str]:
        return [
            c.text for c in self.query_one("#rooms", ListView).children if isinstance(c, RoomItem)
        ]

    def set_status(self, text: str) -> None:
        self.status_text = text
        self.query_one("#status", Static).update(text)

    # -- events --------------------------------------------------------------------------

    async def on_list_view_selected(self, event: ListView.Selected) -> None:
        if isinstance(event.item, RoomItem):
            self.current = event.item.room_id
            await self.refresh_all()

    def _selected(self) -> Message | None:
        view = (
            self.screen.query_one("#thread", ListView)
            if isinstance(self.screen, ThreadScreen)
            else self.query_one("#timeline", ListView)
        )
        item = view.highlighted_child
        return item.message if isinstance(item, MessageItem) else None

    def action_open_thread(self) -> None:
        msg = self._selected()
        if msg is None or self.current is None:
            return
        root = msg.thread_root or msg.event_id
        self.push_screen(ThreadScreen(self, self.current, root))

    def _attachment_path(self) -> Path | None:
        msg = self._selected()
        if msg is None or self.current is None or not msg.attachment:
            self.set_status("no attachment here")
            return None
        path = self.store / room_dir_name(self.current) / msg.attachment
        if not path.exists():
            self.set_status("attachment not downloaded yet")
            return None
        return path

    async def action_open_attachment(self) -> None:
        path = self._attachment_path()
        if path is None:
            return
        opener = shutil.which("xdg-open") or shutil.which("open")
        if opener is None:
            self.set_status(f"file: {path}")
            return
        proc = await asyncio.create_subprocess_exec(
            opener,
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await proc.wait()
        self.set_status(f"opened {path}")

    def action_save_attachment(self) -> None:
        path = self._attachment_path()
        msg = self._selected()
        if path is None or msg is None:
            return
        import platformdirs

        target_dir = platformdirs.user_downloads_path()
        target_dir.mkdir(parents=True, exist_ok=True)
        name = Path(str(msg.content.get("body") or path.name)).name or path.name
        target = target_dir / name
        shutil.copyfile(path, target)
        self.set_status(f"saved to {target}")

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "compose":
            return
        text = event.value.strip()
        event.input.value = ""
        if text and self.current:
            content: dict[str, Any] = {"msgtype": "m.text", "body": text}
            await self.submit(self.current, {"type": "m.room.message", "content": content})

    async def submit(self, room_id: str, event: dict[str, Any]) -> int:
        """Hand the event to `matrixdir send`; it shows as pending from the outbox."""
        import orjson

        proc = await asyncio.create_subprocess_exec(
            *self.send_argv,
            "send",
            "--store",
            str(self.store),
            "--room",
            room_id,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(orjson.dumps(event))
        code = proc.returncode or 0
        if code == 0:
            self.set_status(f"sent {out.decode().strip()}")
        elif code == 75:
            self.set_status("queued; will retry (matrixdir send --flush)")
        else:
            self.set_status(f"send failed: {err.decode().strip()[-200:]}")
        return code


def _store_user(store: Path) -> str | None:
    with contextlib.suppress(Exception):
        return AgentState.load(store / ".matrixdir" / "state.json").user_id
    return None
