"""Benchmark of the HTTP foundation: requests/s and latency of cheap client API calls.

    .venv/bin/python bench/clientapi.py [--seconds 5] [--clients 32]

Starts a fresh `myelin serve` (temporary data directory, rate limit off), registers a user,
then lets N concurrent keep-alive clients call, for the given time each:
`GET /_matrix/client/versions` (routing + JSON, no auth) and
`GET /_matrix/client/v3/account/whoami` (plus access-token check). The load generator
runs on the same machine and competes for its cores, so the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

MYELIN = Path(sys.executable).with_name("myelin")


async def load(
    url: str, token: str | None, clients: int, seconds: float
) -> tuple[int, list[float]]:
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.TaskGroup() as tg:
        for _ in range(clients):
            tg.create_task(worker(session))
    return len(latencies), latencies


async def register(base: str) -> str:
    async with aiohttp.ClientSession() as s:
        body = {"username": "bench", "password": "pw", "auth": {"type": "m.login.dummy"}}
        async with s.post(f"{base}/_matrix/client/v3/register", json=body) as resp:
            token: str = (await resp.json())["access_token"]
            return token


def start(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(MYELIN), "serve", "--data-dir", str(data), "--port", str(port), "--no-rate-limit",
         "--log-level", "warning"],
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("MYELIN_")},
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    if ": serving " not in line:
        raise SystemExit(f"server did not start: {line}")
    return proc, f"http://127.0.0.1:{port}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start(Path(tmp) / "data")
        try:
            token = await register(base)
            for name, path, tok in (
                ("versions", "/_matrix/client/versions", None),
                ("whoami", "/_matrix/client/v3/account/whoami", token),
            ):
                count, lat = await load(base + path, tok, args.clients, args.seconds)
                lat.sort()
                print(
                    f"{name:9s} {count / args.seconds:8.0f} req/s  "
                    f"p50 {statistics.median(lat) * 1000:6.2f} ms  "
                    f"p99 {lat[int(len(lat) * 0.99)] * 1000:6.2f} ms  "
                    f"({args.clients} clients, {args.seconds:g} s)"
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)


if __name__ == "__main__":
    asyncio.run(main())
