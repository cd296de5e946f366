"""The reference Synapse beside the repository (`../shared/peer/synapse.sh`).

Tests that compare against Synapse or run clients against it find it here. The script
installs Synapse from PyPI into a cached virtual environment the first time it starts one,
so `synapse_python()` starts (and stops) a throwaway server when that environment is missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PEER_DIR = Path(__file__).resolve().parents[3] / "shared" / "peer"
SYNAPSE_SH = PEER_DIR / "synapse.sh"
INSTALL_TIMEOUT = 900


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_synapse(directory: Path, port: int, database: str = "sqlite") -> None:
    """Start a Synapse on loopback (installing it on first use); fail the test if it can't."""
    if not SYNAPSE_SH.exists():
        pytest.fail(f"the reference Synapse script is missing: {SYNAPSE_SH}")
    proc = subprocess.run(
        ["bash", str(SYNAPSE_SH), "start", str(directory), str(port), database],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"Synapse did not start: {proc.stderr[-2000:]}")


def stop_synapse(directory: Path) -> None:
    subprocess.run(["bash", str(SYNAPSE_SH), "stop", str(directory)], check=False)


def synapse_python() -> Path:
    """The Python of the peer Synapse's virtual environment, installed if missing."""
    cache = Path(os.environ.get("PEER_CACHE", Path.home() / ".cache" / "matrix-peer"))
    python = cache / "synapse-venv" / "bin" / "python"
    if not python.exists():
        with tempfile.TemporaryDirectory(prefix="peer-synapse-") as d:
            start_synapse(Path(d), free_port())
            stop_synapse(Path(d))
    if not python.exists():
        pytest.fail(f"the reference Synapse is not installed ({python} is missing)")
    return python
