"""matrix-js-sdk, the SDK behind Element Web, against a real `myelin serve`.

Two users are registered over HTTP here; `scenario.mjs` then logs them in with the SDK,
starts both clients and walks a chat: live timeline events, unread notification counts,
typing, read receipts and pagination back (and forward) through the history. It prints one
JSON line per step and this module asserts on every one of them, so a failure names the
step and carries the SDK's view of the error (endpoint status and Matrix error code).

The Node packages are installed by `tools/node.sh` (a no-op when the lock file is
unchanged); without Node.js the test fails with that script's message.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.client import SpecClient
from tests.support.server import ServerProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCENARIO = HERE / "scenario.mjs"
RUN_TIMEOUT = 150.0

STEPS = [
    "login_alice",
    "login_bob",
    "create_room_and_join",
    "send_history",
    "start_clients",
    "live_timeline_event",
    "unread_notification_counts",
    "typing",
    "read_receipt",
    "receipt_clears_counts",
    "scrollback_history",
    "paginate_event_timeline",
    "stop_clients",
    "done",
]


@pytest.fixture(scope="module")
def node_packages() -> None:
    """Install (or confirm) tests/jsclient/node_modules; fail clearly without Node."""
    done = subprocess.run(
        [str(ROOT / "tools" / "node.sh")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"tools/node.sh failed ({done.returncode}):\n{done.stderr}"
    assert (HERE / "node_modules" / "matrix-js-sdk" / "package.json").is_file()


async def run_scenario(base_url: str, *users: str) -> tuple[list[dict[str, Any]], str, int]:
    """Run the Node scenario; returns its result lines, its stderr and its exit code."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCENARIO),
        base_url,
        *users,
        cwd=HERE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        raise AssertionError(f"node {SCENARIO.name} ran over {RUN_TIMEOUT} s; killed") from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    results = [_parse(line) for line in out.decode().splitlines()]
    return results, err.decode(errors="replace"), proc.returncode


def _parse(line: str) -> dict[str, Any]:
    """One result line; anything else on stdout is reported as a failed pseudo-step."""
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if isinstance(value, dict) and "step" in value:
        return value
    return {"step": "unparsable stdout", "ok": False, "line": line}


async def test_matrix_js_sdk_scenario(node_packages: None, shared_server: ServerProcess) -> None:
    users = {"jsalice": "alice-pw-1", "jsbob": "bob-pw-2"}
    async with SpecClient(shared_server.base_url) as http:
        for name, password in users.items():
            await http.register(name, password)
    args = [part for pair in users.items() for part in pair]
    results, stderr, code = await run_scenario(shared_server.base_url, *args)
    tail = "\n".join(stderr.splitlines()[-40:])
    assert code == 0, f"scenario exited with {code}; results {results}\nstderr:\n{tail}"
    by_step = {r["step"]: r for r in results}
    assert [r["step"] for r in results] == STEPS, f"steps {results}\nstderr:\n{tail}"
    failures = [r for r in results if not r["ok"]]
    assert not failures, "failed steps:\n" + "\n".join(json.dumps(f) for f in failures)

    assert by_step["login_alice"]["user_id"] == "@jsalice:localhost"
    assert by_step["login_bob"]["user_id"] == "@jsbob:localhost"
    assert by_step["start_clients"]["initial_messages"] == 5
    assert by_step["unread_notification_counts"]["total"] == 26
    assert by_step["unread_notification_counts"]["highlight"] == 1
    assert by_step["receipt_clears_counts"]["total"] == 0
    assert by_step["read_receipt"]["event_id"] == by_step["live_timeline_event"]["event_id"]
    assert by_step["scrollback_history"]["rounds"] >= 2
    paged = by_step["paginate_event_timeline"]
    assert paged["forward_pages"] >= 2
    assert paged["events"] == by_step["scrollback_history"]["events"]
