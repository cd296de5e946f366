"""A real `myelin serve` process for tests: free loopback port, temporary data directory.

`start_server(tmp_path, **options)` starts the server with `--no-rate-limit` (unless
overridden), waits for the line it prints once every listener is bound (no polling), and
returns a `ServerProcess`; `stop()` sends SIGTERM and checks the server exited cleanly.
Options are `myelin serve` options without dashes, e.g. `registration="closed"`; `env`
adds environment variables (others named MYELIN_* are removed).
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

MYELIN = Path(sys.executable).with_name("myelin")
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    startup_line: str
    stderr_lines: list[str] = field(default_factory=list)
    drainer: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait, and return the exit code (the server must exit by itself)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("myelin serve did not stop within 15 s of SIGTERM") from None
        if self.drainer is not None:
            self.drainer.join(5)
        return self.proc.returncode


def start_server(
    data_dir: Path, *, env: dict[str, str] | None = None, **options: Any
) -> ServerProcess:
    port = int(options.pop("port", 0)) or free_port()
    options.setdefault("rate_limit", False)
    args = [str(MYELIN), "serve", "--data-dir", str(data_dir), "--port", str(port)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + key.replace("_", "-"))
        else:
            args.extend([flag, str(value)])
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MYELIN_")}
    environ.update(env or {})
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    buffer = b""
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                proc.kill()
                proc.wait()
                raise AssertionError(f"myelin serve did not start in {START_TIMEOUT} s: {lines}")
            if not sel.select(remaining):
                continue
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                proc.wait()
                raise AssertionError(
                    f"myelin serve exited with {proc.returncode} before serving:\n"
                    + "\n".join([*lines, buffer.decode(errors="replace")])
                )
            buffer += chunk
            *done, buffer = buffer.split(b"\n")
            lines.extend(line.decode(errors="replace") for line in done)
            for line in lines:
                if ": serving " in line:
                    server = ServerProcess(proc, port, data_dir, line, lines)
                    # Keep draining stderr so a chatty server never blocks on a full pipe.
                    server.drainer = threading.Thread(
                        target=_drain, args=(server, buffer), daemon=True
                    )
                    server.drainer.start()
                    return server
    finally:
        sel.close()


def _drain(server: ServerProcess, pending: bytes) -> None:
    assert server.proc.stderr is not None
    data = pending + server.proc.stderr.read()
    server.stderr_lines.extend(data.decode(errors="replace").splitlines())


@pytest.fixture
def myelin_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server with default options (registration open, rate limit off)."""
    server = start_server(tmp_path / "data")
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"myelin serve exited with {code}: {server.stderr_lines}"


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module, for tests that only add uniquely named users."""
    server = start_server(tmp_path_factory.mktemp("myelin") / "data")
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"myelin serve exited with {code}: {server.stderr_lines}"


def decode(body: bytes) -> Any:
    return orjson.loads(body)
