"""The timeline model and the Textual viewer (headless, Textual's pilot), on a real store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from matrixdir.outbox import Outbox
from matrixdir.timeline import RoomTimeline
from matrixdir.view import MatrixdirApp
from matrixdir.writer import StoreWriter

ROOM = "!room:example.org"
OTHER = "!other:example.org"
ME = "@me:example.org"
YOU = "@you:example.org"


def e(
    eid: str, ts: int, sender: str = YOU, type_: str = "m.room.message", **kw: Any
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": eid,
        "type": type_,
        "sender": sender,
        "origin_server_ts": ts,
        "content": kw.pop("content", {}),
    }
    ev.update(kw)
    return ev


def text(eid: str, ts: int, body: str, sender: str = YOU, /, **content: Any) -> dict[str, Any]:
    return e(eid, ts, sender, content={"msgtype": "m.text", "body": body, **content})


def history() -> list[dict[str, Any]]:
    return [
        e("$name", 1, ME, "m.room.name", state_key="", content={"name": "Chat"}),
        text("$a", 10, "hello"),
        text(
            "$b",
            11,
            "> <@you> hello\n\nhi back",
            ME,
            **{"m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}},
        ),
        text("$c", 12, "tpyo"),
        text(
            "$c2",
            13,
            "* typo",
            **{
                "m.new_content": {"msgtype": "m.text", "body": "typo"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$c"},
            },
        ),
        text(
            "$evil",
            14,
            "* hacked",
            ME,
            **{
                "m.new_content": {"msgtype": "m.text", "body": "hacked"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$c"},
            },
        ),
        e(
            "$r1",
            15,
            ME,
            "m.reaction",
            content={"m.relates_to": {"rel_type": "m.annotation", "event_id": "$a", "key": "👍"}},
        ),
        e(
            "$r2",
            16,
            YOU,
            "m.reaction",
            content={"m.relates_to": {"rel_type": "m.annotation", "event_id": "$a", "key": "👍"}},
        ),
        e(
            "$r3",
            17,
            YOU,
            "m.reaction",
            content={"m.relates_to": {"rel_type": "m.annotation", "event_id": "$a", "key": "🎉"}},
        ),
        e("$x3", 18, YOU, "m.room.redaction", redacts="$r3", content={}),
        text("$gone", 19, "oops"),
        e("$x", 20, YOU, "m.room.redaction", content={"redacts": "$gone"}),
        text("$root", 21, "thread root"),
        text(
            "$t1",
            22,
            "in thread 1",
            ME,
            **{"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}},
        ),
        text(
            "$t2",
            23,
            "in thread 2",
            **{"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}},
        ),
        e("$img", 24, YOU, content={"msgtype": "m.image", "body": "cat.png", "url": "mxc://s/cat"}),
    ]


def test_timeline_folds_edits_reactions_redactions_threads() -> None:
    tl = RoomTimeline(ROOM, ME)
    for i, ev in enumerate(history()):
        tl.add(ev, (0, 0, i))
    rendered = [tl.render(m) for m in tl.main_timeline()]
    assert rendered == [
        "@you:example.org: hello\n  👍 2",
        "  > @you:example.org: hello\n@me:example.org: hi back",
        "@you:example.org: typo (edited)",
        "@you:example.org: [message deleted]",
        "@you:example.org: thread root\n  ↳ 2 replies, last @you:example.org: in thread 2",
        "@you:example.org: [m.image: cat.png]",
    ]
    assert tl.name == "Chat"
    assert [m.body for m in tl.thread("$root")] == ["thread root", "in thread 1", "in thread 2"]
    assert tl.messages["$img"].attachment == "attachments/s/cat"
    assert tl.unread() == 6  # messages from others, thread replies included
    tl.mark_read()
    assert tl.unread() == 0


def test_backfilled_relations_arriving_before_their_targets() -> None:
    """Back-fill can deliver an edit or reaction before (in arrival) the event it targets."""
    events = history()
    tl = RoomTimeline(ROOM, ME)
    for i, ev in reversed(list(enumerate(events))):
        tl.add(ev, (0, 0, i))
    assert "@you:example.org: typo (edited)" in [tl.render(m) for m in tl.main_timeline()]
    assert tl.messages["$a"].reactions == {"👍": {ME, YOU}}
    assert next(m.event_id for m in tl.main_timeline()) == "$a"
    assert tl.messages["$gone"].redacted


async def wait_until(app: MatrixdirApp, cond: Any, limit: float = 15) -> None:
    async def loop() -> None:
        while not cond():
            app.updated.clear()
            await app.updated.wait()

    await asyncio.wait_for(loop(), limit)


async def test_viewer_shows_rooms_timeline_pending_and_live_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DOWNLOAD_DIR", str(tmp_path / "downloads"))
    store = tmp_path / "chats"
    writer = StoreWriter(store).open()
    try:
        writer.append_live(ROOM, history())
        writer.append_live(OTHER, [text("$o1", 5, "elsewhere"), text("$o2", 6, "again")])
        att = writer.room_path(ROOM) / "attachments" / "s" / "cat"
        att.parent.mkdir(parents=True)
        att.write_bytes(b"PNG")
        queued = Outbox(store).queue(
            ROOM, "m.room.message", {"msgtype": "m.text", "body": "on its way"}
        )
        app = MatrixdirApp(store, user=ME, initial_room=ROOM, send_argv=["false"])
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(app, lambda: len(app.timeline_texts()) >= 7)
            texts = app.timeline_texts()
            assert texts[0] == "@you:example.org: hello\n  👍 2"
            assert texts[-1] == f"{ME}: on its way (sending…)"
            assert app.room_texts() == [f"{OTHER} (2)", "Chat"]

            # A line appended by the writer shows up live; the pending one resolves by txn ID.
            writer.append_live(ROOM, [text("$new", 30, "fresh line")])
            await wait_until(app, lambda: "@you:example.org: fresh line" in app.timeline_texts())
            writer.append_live(
                ROOM,
                [
                    text(
                        "$mine",
                        31,
                        "on its way",
                        ME,
                    )
                    | {"unsigned": {"transaction_id": queued.txn_id}}
                ],
            )
            await wait_until(app, lambda: app.timeline_texts()[-1] == f"{ME}: on its way")
            assert not any("sending" in t for t in app.timeline_texts()), [
                t for t in app.timeline_texts() if "sending" in t
            ]

            # Unread counts update live for rooms not open.
            writer.append_live(OTHER, [text("$o3", 7, "third")])
            await wait_until(app, lambda: f"{OTHER} (3)" in app.room_texts())

            # Open the thread of the root message.
            view = app.query_one("#timeline")
            idx = next(i for i, t in enumerate(app.timeline_texts()) if "thread root" in t)
            view.index = idx  # type: ignore[attr-defined]
            await pilot.press("t")
            await pilot.pause()
            from matrixdir.view import MessageItem, ThreadScreen

            assert isinstance(app.screen, ThreadScreen)
            thread = [c.text for c in app.screen.query(MessageItem)]
            assert [t.splitlines()[0] for t in thread] == [
                "@you:example.org: thread root",
                "@me:example.org: in thread 1",
                "@you:example.org: in thread 2",
            ]
            await pilot.press("escape")
            await pilot.pause()
            # Save the attachment of the image message.
            idx = next(i for i, t in enumerate(app.timeline_texts()) if "cat.png" in t)
            view.index = idx  # type: ignore[attr-defined]
            await pilot.press("s")
            await pilot.pause()
            assert "saved to" in app.status_text
            saved = app.status_text.removeprefix("saved to ")
            assert saved == str(tmp_path / "downloads" / "cat.png")
            with open(saved, "rb") as f:  # noqa: ASYNC230
                assert f.read() == b"PNG"
            # Switch rooms with the room list: unread drops to zero.
            rooms = app.query_one("#rooms")
            rooms.index = 0  # type: ignore[attr-defined]
            rooms.focus()
            await pilot.press("enter")
            await wait_until(app, lambda: app.current == OTHER and app.room_texts()[0] == OTHER)
            assert app.timeline_texts() == [
                "@you:example.org: elsewhere",
                "@you:example.org: again",
                "@you:example.org: third",
            ]
    finally:
        writer.close()
