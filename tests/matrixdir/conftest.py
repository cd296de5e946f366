"""Fixtures for matrixdir: the homeservers it is tested against (a reference Synapse and
Myelin itself, both on loopback), users, and the CLI as a process.

End-to-end tests take the `homeserver` fixture, parametrised over both servers and marked
`synapse` or `myelin` so either can be selected (`-m myelin`). Tests whose subject is
matrixdir rather than the server take `synapse` or `myelin_hs` directly and run once.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.peer import free_port, start_synapse, stop_synapse
from tests.support.server import start_server


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Synapse homeserver for the whole session; fails loudly if it cannot start."""
    d = tmp_path_factory.mktemp("synapse")
    port = free_port()
    start_synapse(d, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_synapse(d)


@pytest.fixture(scope="session")
def myelin_hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `myelin serve` process for the whole session; it must stop cleanly at the end."""
    server = start_server(tmp_path_factory.mktemp("myelin") / "data")
    try:
        yield server.base_url
    finally:
        code = server.stop()
        assert code == 0, f"myelin serve exited with {code}: {server.stderr_lines[-50:]}"


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("synapse", marks=pytest.mark.synapse),
        pytest.param("myelin", marks=pytest.mark.myelin),
    ],
)
def homeserver(request: pytest.FixtureRequest) -> str:
    """The base URL of each homeserver in turn (each started once per session)."""
    return str(request.getfixturevalue("synapse" if request.param == "synapse" else "myelin_hs"))


@pytest.fixture
def server_kind(request: pytest.FixtureRequest) -> str:
    """ "synapse" or "myelin": which homeserver a `homeserver`-parametrised test runs against."""
    return str(request.node.callspec.params["homeserver"])


def api(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Any:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


@dataclass
class User:
    base: str
    user_id: str
    password: str
    token: str
    txn: int = 0

    def create_room(self, **extra: Any) -> str:
        return str(
            api(self.base, "POST", "/_matrix/client/v3/createRoom", extra, self.token)["room_id"]
        )

    def invite(self, room_id: str, user_id: str) -> None:
        api(
            self.base,
            "POST",
            f"/_matrix/client/v3/rooms/{q(room_id)}/invite",
            {"user_id": user_id},
            self.token,
        )

    def join(self, room_id: str) -> None:
        api(self.base, "POST", f"/_matrix/client/v3/join/{q(room_id)}", {}, self.token)

    def send(self, room_id: str, content: dict[str, Any], type_: str = "m.room.message") -> str:
        self.txn += 1
        path = (
            f"/_matrix/client/v3/rooms/{q(room_id)}/send/{type_}/t{self.txn}{secrets.token_hex(3)}"
        )
        return str(api(self.base, "PUT", path, content, self.token)["event_id"])

    def text(self, room_id: str, body: str) -> str:
        return self.send(room_id, {"msgtype": "m.text", "body": body})

    def upload(self, data: bytes, content_type: str = "application/octet-stream") -> str:
        return str(
            api(
                self.base,
                "POST",
                "/_matrix/media/v3/upload?filename=f",
                raw=data,
                token=self.token,
                content_type=content_type,
            )["content_uri"]
        )

    def messages(self, room_id: str) -> list[dict[str, Any]]:
        """Every event of the room, oldest first, as the server tells it."""
        out: list[dict[str, Any]] = []
        frm = ""
        while True:
            path = f"/_matrix/client/v3/rooms/{q(room_id)}/messages?dir=b&limit=500" + (
                f"&from={q(frm)}" if frm else ""
            )
            resp = api(self.base, "GET", path, token=self.token)
            out.extend(resp["chunk"])
            if not resp.get("end") or not resp["chunk"]:
                break
            frm = resp["end"]
        out.reverse()
        return out


def register(base: str, name: str | None = None) -> User:
    name = name or f"u{secrets.token_hex(5)}"
    password = secrets.token_hex(8)
    resp = api(
        base,
        "POST",
        "/_matrix/client/v3/register",
        {
            "username": name,
            "password": password,
            "auth": {"type": "m.login.dummy"},
            "inhibit_login": False,
        },
    )
    return User(base, resp["user_id"], password, resp["access_token"])


@dataclass
class Cli:
    """Runs `matrixdir` as a separate process with its own XDG directories."""

    home: Path
    store: Path
    env: dict[str, str] = field(default_factory=dict)

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "XDG_CONFIG_HOME": str(self.home / "config"),
                "XDG_DATA_HOME": str(self.home / "data"),
                "XDG_CACHE_HOME": str(self.home / "cache"),
                "MATRIXDIR_STORE": str(self.store),
            }
        )
        env.pop("MATRIXDIR_CONFIG", None)
        env.update(self.env)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "matrixdir", *args]

    def run(
        self, *args: str, input: str | bytes | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            self.argv(*args), input=data, capture_output=True, env=self.environ(), timeout=timeout
        )
        result = subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"matrixdir {' '.join(args)} exited {proc.returncode}: {result.stderr[-3000:]}"
            )
        return result

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv(*args), env=self.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    def login(self, user: User) -> None:
        self.run(
            "login",
            "--homeserver",
            user.base,
            "--user",
            user.user_id,
            "--password-stdin",
            input=user.password + "\n",
        )


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "home", tmp_path / "chats")
