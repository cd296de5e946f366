"""`myelin serve` and `myelin user create` as processes: data directory, config, keys,
TLS, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml

from myelin.core.signing import decode_verify_key, verify_json
from myelin.storage import testing
from tests.support.client import SpecClient
from tests.support.server import MYELIN, free_port, start_server

V3 = "/_matrix/client/v3"


async def test_first_start_creates_the_data_dir_and_restart_keeps_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    try:
        async with SpecClient(server.base_url) as c:
            await c.register("persist", "pw")
            _, keys = await c.call("GET", "/_matrix/key/v2/server")
    finally:
        assert server.stop() == 0
    assert (data / "myelin.yaml").read_text().startswith("# Myelin homeserver configuration")
    assert yaml.safe_load((data / "myelin.yaml").read_text())["server_name"] == "localhost"
    assert (data / "signing.key").stat().st_mode & 0o777 == 0o600
    assert (data / "myelin.yaml").stat().st_mode & 0o777 == 0o600
    assert (data / "log" / "myelin.log").is_file()
    # The key document is signed by the key it announces.
    ((key_id, entry),) = keys["verify_keys"].items()
    verify_json(keys, "localhost", key_id, decode_verify_key(entry["key"]))

    server = start_server(data)
    try:
        async with SpecClient(server.base_url) as c:
            _, again = await c.call("GET", "/_matrix/key/v2/server")
            assert set(again["verify_keys"]) == {key_id}
            status, login = await c.call(
                "POST",
                f"{V3}/login",
                {"type": "m.login.password", "user": "persist", "password": "pw"},
            )
            assert (status, login["user_id"]) == (200, "@persist:localhost")
    finally:
        assert server.stop() == 0


async def test_config_file_env_and_options(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "myelin.yaml").write_text(
        "server_name: from-file.test\ndefault_room_version: '10'\nregistration_enabled: true\n"
    )
    server = start_server(data, env={"MYELIN_DEFAULT_ROOM_VERSION": "11"})
    try:
        line = server.startup_line
        assert "serving from-file.test" in line and "registration open" in line
        async with SpecClient(server.base_url) as c:
            reg = await c.register("cfg")
            assert reg["user_id"] == "@cfg:from-file.test"
            _, caps = await c.call("GET", f"{V3}/capabilities", token=reg["access_token"])
            # The environment wins over the file.
            assert caps["capabilities"]["m.room_versions"]["default"] == "11"
    finally:
        server.proc.send_signal(signal.SIGINT)  # Ctrl-C is a graceful stop too
        assert server.proc.wait(15) == 0


def test_user_create_with_registration_closed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYELIN_")}
    result = subprocess.run(
        [
            str(MYELIN),
            "user",
            "create",
            "admin",
            "--admin",
            "--password",
            "pw",
            "--data-dir",
            str(data),
            "--server-name",
            "closed.test",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "created @admin:closed.test (admin)" in result.stdout
    again = subprocess.run(
        [str(MYELIN), "user", "create", "admin", "--password", "pw", "--data-dir", str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1 and "M_USER_IN_USE" in again.stderr

    server = start_server(data)
    try:
        assert "serving closed.test" in server.startup_line
        assert "registration closed" in server.startup_line

        async def login() -> tuple[int, dict[str, str]]:
            async with SpecClient(server.base_url) as c:
                return await c.call(
                    "POST",
                    f"{V3}/login",
                    {"type": "m.login.password", "user": "@admin:closed.test", "password": "pw"},
                )

        status, body = asyncio.run(login())
        assert (status, body["user_id"]) == (200, "@admin:closed.test")
    finally:
        assert server.stop() == 0


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_tls_listener(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    tls_port = free_port()
    server = start_server(tmp_path / "data", tls_port=tls_port, tls_cert=cert, tls_key=key)
    try:
        assert f"https://127.0.0.1:{tls_port}" in server.startup_line
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"https://localhost:{tls_port}/_matrix/client/versions", ssl=ctx
            ) as resp:
                assert resp.status == 200
                assert "v1.1" in (await resp.json())["versions"]
            async with session.get(
                f"https://localhost:{tls_port}/.well-known/matrix/client", ssl=ctx
            ) as resp:
                base = (await resp.json())["m.homeserver"]["base_url"]
                assert base == f"https://localhost:{tls_port}"
            async with session.get(f"{server.base_url}/_matrix/client/versions") as resp:
                assert resp.status == 200  # the plain listener still answers
    finally:
        assert server.stop() == 0


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MYELIN_")}
        result = subprocess.run(
            [str(MYELIN), "serve", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "Error:" in result.stderr and str(port) in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_env_vars() -> None:
    out = subprocess.run([str(MYELIN), "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "MYELIN_<NAME>" in out.stdout and "--tls-port" in out.stdout


async def test_sigterm_finishes_requests_in_flight(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    body = {"type": "m.login.password", "user": "nobody", "password": "x"}
    async with aiohttp.ClientSession() as session:

        async def login() -> int:
            # Each password check costs tens of milliseconds (scrypt), so these are still
            # being worked on when the signal arrives.
            async with session.post(f"{server.base_url}{V3}/login", json=body) as resp:
                await resp.read()
                return resp.status

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(login()) for _ in range(8)]
            await asyncio.sleep(0.03)
            server.proc.send_signal(signal.SIGTERM)
    assert [t.result() for t in tasks] == [403] * 8
    assert server.stop() == 0
    assert any(
        "shutdown requested" in line
        for line in (tmp_path / "data" / "log" / "myelin.log").read_text().splitlines()
    )


def test_user_create_over_http_with_the_shared_secret(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "data", registration_shared_secret="s3cret", registration="closed"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYELIN_")}
    try:

        def create(secret: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    str(MYELIN),
                    "user",
                    "create",
                    "remote",
                    "--password",
                    "pw",
                    "--admin",
                    "--url",
                    server.base_url,
                    "--registration-shared-secret",
                    secret,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )

        wrong = create("wrong")
        assert wrong.returncode == 1 and "HMAC incorrect" in wrong.stderr
        right = create("s3cret")
        assert right.returncode == 0, right.stderr
        assert "created @remote:localhost (admin)" in right.stdout
    finally:
        assert server.stop() == 0


@pytest.mark.postgres
async def test_serve_on_postgresql(tmp_path: Path) -> None:
    try:
        dsn = testing.create_throwaway_database()
    except Exception as exc:  # pragma: no cover - environment problem, reported loudly
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 (user postgres) is needed: {exc}")
    try:
        server = start_server(tmp_path / "data", database=dsn)
        try:
            async with SpecClient(server.base_url) as c:
                reg = await c.register("pguser")
                status, who = await c.call("GET", f"{V3}/account/whoami", token=reg["access_token"])
                assert (status, who["user_id"]) == (200, "@pguser:localhost")
        finally:
            assert server.stop() == 0
        assert not (tmp_path / "data" / "myelin.db").exists()
    finally:
        testing.drop_database(dsn)
