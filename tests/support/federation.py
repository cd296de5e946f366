"""Two real Myelin servers that federate over TLS on loopback, and waiting for what one
of them hears from the other.

Each server is named `localhost:<tls port>` (as under Sytest) and serves its TLS port with
one self-signed certificate made here with `openssl`; both trust it through
`SSL_CERT_FILE`, which Python's default TLS context reads. A test module (or conftest)
makes the fixture it needs with `peers_fixture`, bound to the name its tests ask for:

    peers = peers_fixture()                        # one pair per module
    peers = peers_fixture(allow_guests=True)       # with `myelin serve` options
    pair = peers_fixture("function")               # a fresh pair per test

Both servers must stop cleanly (exit code 0) or the test that used them fails; a test
may stop one itself first (e.g. to rebuild its tables).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.support.client import SpecClient
from tests.support.server import ServerProcess, free_port, start_server

V3 = "/_matrix/client/v3"
#: Long-polls per wait: each ends as soon as the event arrives, so this only bounds a hang.
MAX_POLLS = 20


@dataclass
class Peer:
    server: ServerProcess
    name: str

    @property
    def base_url(self) -> str:
        return self.server.base_url


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (and its key) for `localhost` and 127.0.0.1, that is
    its own CA, so that trusting it is enough to verify either server."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def start_peer(data_dir: Path, cert: Path, key: Path, **options: Any) -> Peer:
    """A server with open registration on a TLS port of its own; `options` are further
    `myelin serve` options (as for `start_server`)."""
    tls_port = free_port()
    name = f"localhost:{tls_port}"
    server = start_server(
        data_dir,
        server_name=name,
        tls_port=tls_port,
        tls_cert=cert,
        tls_key=key,
        registration="open",
        env={"SSL_CERT_FILE": str(cert)},
        **options,
    )
    return Peer(server, name)


@contextlib.contextmanager
def two_peers(base: Path, **options: Any) -> Iterator[tuple[Peer, Peer]]:
    """Two servers under `base` that trust one certificate; stopped afterwards, and both
    must have exited cleanly."""
    cert, key = make_cert(base)
    a = start_peer(base / "a", cert, key, **options)
    try:
        b = start_peer(base / "b", cert, key, **options)
    except BaseException:
        a.server.stop()
        raise
    try:
        yield a, b
    finally:
        codes = (a.server.stop(), b.server.stop())
        assert codes == (0, 0), (a.server.stderr_lines, b.server.stderr_lines)


def peers_fixture(
    scope: Literal["function", "module"] = "module", **options: Any
) -> Callable[..., Any]:
    """A fixture yielding `two_peers(**options)`: shared by a module (tests that only add
    uniquely named users and rooms), or fresh per test."""
    if scope == "module":

        @pytest.fixture(scope="module")
        def module_peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, Peer]]:
            with two_peers(tmp_path_factory.mktemp("federation"), **options) as pair:
                yield pair

        return module_peers

    @pytest.fixture
    def test_peers(tmp_path: Path) -> Iterator[tuple[Peer, Peer]]:
        with two_peers(tmp_path, **options) as pair:
            yield pair

    return test_peers


async def wait_for_event(
    c: SpecClient, token: str, room_id: str, match: Any, since: str | None = None
) -> dict[str, Any]:
    """Long-poll /sync until an event of `room_id` matching `match(event)` arrives."""
    for _ in range(MAX_POLLS):
        query = "timeout=10000" + (f"&since={since}" if since else "")
        status, body = await c.call("GET", f"{V3}/sync?{query}", token=token)
        assert status == 200, body
        since = body["next_batch"]
        room = body.get("rooms", {}).get("join", {}).get(room_id)
        if room is not None:
            for event in [*room["state"]["events"], *room["timeline"]["events"]]:
                if match(event):
                    return event
    raise AssertionError(f"no matching event in {room_id} after {MAX_POLLS} polls")


async def wait_joined(c: SpecClient, token: str, room_id: str, user_id: str) -> None:
    """Wait until the server of `c` has `user_id`'s join to the room (e.g. a user of the
    other server joined it)."""
    await wait_for_event(
        c,
        token,
        room_id,
        lambda e: (
            e["type"] == "m.room.member"
            and e["state_key"] == user_id
            and e["content"].get("membership") == "join"
        ),
    )
