"""matrix-js-sdk's Rust crypto (wasm) and matrix-nio (vodozemac) in one encrypted room on
a real `myelin serve`.

`crypto.mjs` logs a js user in, initialises the Rust crypto with an in-memory store, joins
the room a nio user created and invited it to, and reports "ready" once /keys/query on
the server returns its device. The nio client then finds that device with /keys/query,
claims one of its one-time keys (/keys/claim), sends the Megolm room key to it over Olm
(/sendToDevice) and sends an encrypted message; the js client receives the key in the
`to_device` section of /sync and decrypts the message. It answers with an encrypted reply
that the nio client decrypts in turn. Nobody verifies anybody: both sides share keys with
unverified devices (nio: `ignore_unverified_devices=True`; Rust crypto: its default).

The script prints one JSON line per step; they are read as they come, because the nio
side acts between steps.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import nio
import pytest

from tests.keyserver.test_nio_e2ee import ENCRYPTION, decrypted, make_client, settle
from tests.support.client import SpecClient
from tests.support.server import ServerProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPT = HERE / "crypto.mjs"
STEP_WAIT = 40.0
MESSAGE = "a secret from matrix-nio"
REPLY = "hello back from matrix-js-sdk"


@pytest.fixture(scope="module")
def node_packages() -> None:
    """Install (or confirm) tests/jsclient/node_modules; fail clearly without Node."""
    done = subprocess.run(
        [str(ROOT / "tools" / "node.sh")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"tools/node.sh failed ({done.returncode}):\n{done.stderr}"
    wasm = HERE / "node_modules" / "@matrix-org" / "matrix-sdk-crypto-wasm" / "package.json"
    assert wasm.is_file(), "matrix-js-sdk's Rust crypto package is not installed"


class Steps:
    """The script's result lines, read one at a time; failures carry its stderr."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: IO[bytes], path: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.path = path
        self.seen: list[dict[str, Any]] = []

    def tail(self) -> str:
        self.stderr.flush()
        return "\n".join(self.path.read_text(errors="replace").splitlines()[-40:])

    async def expect(self, name: str) -> dict[str, Any]:
        """Read up to the line of step `name`; it and every line before must be ok."""
        assert self.proc.stdout is not None
        while True:
            try:
                async with asyncio.timeout(STEP_WAIT):
                    raw = await self.proc.stdout.readline()
            except TimeoutError:
                raise AssertionError(
                    f"no line of step {name} within {STEP_WAIT} s; seen {self.seen}\n{self.tail()}"
                ) from None
            if not raw:
                raise AssertionError(
                    f"crypto.mjs ended before step {name}; seen {self.seen}\n{self.tail()}"
                )
            result = _parse(raw.decode())
            self.seen.append(result)
            assert result.get("ok"), f"step failed: {json.dumps(result)}\n{self.tail()}"
            if result["step"] == name:
                return result


def _parse(line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if isinstance(value, dict) and "step" in value:
        return value
    return {"step": "unparsable stdout", "ok": False, "line": line}


def devices_of(client: nio.AsyncClient, user_id: str) -> dict[str, nio.crypto.OlmDevice]:
    return {d.id: d for d in client.device_store.active_user_devices(user_id)}


@asynccontextmanager
async def crypto_script(tmp_path: Path, *args: str) -> AsyncIterator[Steps]:
    log = tmp_path / "crypto-mjs.stderr"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            "node", str(SCRIPT), *args, cwd=HERE, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
        try:
            yield Steps(proc, stderr, log)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_js_rust_crypto_decrypts_nio_megolm(
    node_packages: None, shared_server: ServerProcess, tmp_path: Path
) -> None:
    url = shared_server.base_url
    async with SpecClient(url) as http:
        js_user = (await http.register("jscrypto", "js-crypto-pw"))["user_id"]
    sender = await make_client(url, "niocrypto", tmp_path / "nio")
    try:
        created = await sender.room_create(invite=[js_user], initial_state=[ENCRYPTION])
        assert isinstance(created, nio.RoomCreateResponse), created
        room_id = created.room_id
        await settle(sender)

        async with crypto_script(
            tmp_path, url, "jscrypto", "js-crypto-pw", room_id, sender.user_id
        ) as steps:
            login = await steps.expect("login")
            assert login["user_id"] == js_user
            js_device = login["device_id"]
            own_keys = await steps.expect("init_rust_crypto")
            joined = await steps.expect("start_and_join")
            assert joined["room_id"] == room_id and joined["encrypted"] is True
            ready = await steps.expect("ready")
            assert ready["device_id"] == js_device
            assert ready["ed25519"] == own_keys["ed25519"]

            # nio sees the js user join and queries its device keys (/keys/query).
            for _ in range(3):
                await settle(sender)
                if js_device in devices_of(sender, js_user):
                    break
            devices = devices_of(sender, js_user)
            assert js_device in devices, f"nio never saw {js_device}: {devices}"
            device = devices[js_device]
            assert device.ed25519 == own_keys["ed25519"]
            assert device.curve25519 == own_keys["curve25519"]

            # Claim a one-time key, share the Megolm session over Olm, send ciphertext.
            sent = await sender.room_send(
                room_id,
                "m.room.message",
                {"msgtype": "m.text", "body": MESSAGE},
                ignore_unverified_devices=True,
            )
            assert isinstance(sent, nio.RoomSendResponse), sent
            assert sender.olm is not None
            assert sender.olm.session_store.get(device.curve25519) is not None

            got = await steps.expect("decrypt_peer_message")
            assert got["event_id"] == sent.event_id
            assert got["sender"] == sender.user_id
            assert got["wire_type"] == "m.room.encrypted"
            assert got["type"] == "m.room.message"
            assert got["body"] == MESSAGE
            assert got["sender_curve25519"] == sender.olm.account.identity_keys["curve25519"]
            # The Megolm key came as an Olm-encrypted to-device message, seen decrypted.
            assert "m.room_key" in got["to_device_types"], got

            reply = await steps.expect("send_encrypted_reply")
            assert reply["body"] == REPLY
            texts: list[str] = []
            for _ in range(3):
                texts += decrypted(await settle(sender), room_id)
                if REPLY in texts:
                    break
            assert REPLY in texts, texts
            await steps.expect("done")
            assert [s["step"] for s in steps.seen] == [
                "login",
                "init_rust_crypto",
                "start_and_join",
                "ready",
                "decrypt_peer_message",
                "send_encrypted_reply",
                "stop",
                "done",
            ]
    finally:
        await sender.close()
