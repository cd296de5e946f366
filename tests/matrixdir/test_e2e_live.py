"""The agents together against each homeserver (Synapse and Myelin): a continuous
`matrixdir sync`, the viewer following the files live, composing from the viewer, and encrypted
sending while the agent owns the keys.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from matrixdir.layout import room_dir_name
from matrixdir.reader import read_room
from matrixdir.view import MatrixdirApp

from .conftest import Cli, api, q, register


async def wait_until(app: MatrixdirApp, cond: Any, limit: float = 60) -> None:
    async def loop() -> None:
        while not cond():
            app.updated.clear()
            await app.updated.wait()

    await asyncio.wait_for(loop(), limit)


@pytest.mark.slow
async def test_live_sync_viewer_compose_and_encrypted_send(
    homeserver: str, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = register(homeserver), register(homeserver)
    room = alice.create_room(preset="private_chat", name="live")
    alice.invite(room, bob.user_id)
    bob.join(room)
    secret_room = alice.create_room(
        preset="private_chat",
        initial_state=[
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            }
        ],
    )
    cli.login(alice)
    for key, value in cli.environ().items():
        monkeypatch.setenv(key, value)
    agent = cli.popen("sync", "--timeout", "20", "--no-progress")
    try:
        app = MatrixdirApp(cli.store, user=alice.user_id, initial_room=room)
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(app, lambda: app.current == room and app.room_texts())
            bob.text(room, "live from bob")
            await wait_until(app, lambda: f"{bob.user_id}: live from bob" in app.timeline_texts())

            # Compose: goes through `matrixdir send`, then arrives through the agent's sync.
            await pilot.click("#compose")
            await pilot.press(*"typed here", "enter")
            mine = f"{alice.user_id}: typed here"
            await wait_until(app, lambda: mine in app.timeline_texts())
            assert not any("sending" in t for t in app.timeline_texts())

        # Encrypted room while the agent runs: it holds the keys, so it sends for us.
        proc = await asyncio.create_subprocess_exec(
            *cli.argv("send", "--room", secret_room, "--text", "--wait", "60"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(b"hush\n"), 120)
        assert proc.returncode == 0, (err, _kill_and_read(agent))
        event_id = out.decode().strip()
        raw = api(
            homeserver,
            "GET",
            f"/_matrix/client/v3/rooms/{q(secret_room)}/event/{q(event_id)}",
            token=alice.token,
        )
        assert raw["type"] == "m.room.encrypted"
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=60)
    assert code == 0, agent.stderr.read() if agent.stderr else ""

    cli.run("sync", "--once", "--no-progress")
    events = [s.event for s in read_room(cli.store / room_dir_name(secret_room))]
    hush = [e for e in events if e["event_id"] == event_id]
    assert len(hush) == 1 and hush[0]["content"]["body"] == "hush"
    assert "0 errors" in cli.run("check").stderr
    with open(cli.store / "lock.pid") as f:  # noqa: ASYNC230
        assert f.read() == ""  # released on SIGTERM


def _kill_and_read(proc: Any) -> str:
    """Stop the agent and return the end of what it logged, to explain a failure."""
    proc.kill()
    return str(proc.stderr.read().decode()[-2000:])
