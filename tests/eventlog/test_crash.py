"""kill -9 at random moments loses no acknowledged record and serves nothing torn.

A child process appends from several concurrent tasks and prints every acknowledged
offset with its payload digest; the parent kills it with SIGKILL at a random moment
(during start-up and recovery, or mid-stream), reopens the log, and checks that every
promise printed so far, in this run and all earlier ones, is kept exactly once. Half of
the runs also simulate a power loss by tearing the unacknowledged tail, which SIGKILL
alone never does. The seed of the random choices is printed (shown on failure) and can
be fixed with MYELIN_CRASH_SEED (kill timing still varies with the machine).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from myelin.eventlog import DiskEventLog
from myelin.eventlog.framing import Frame, decode_frame

CHILD = Path(__file__).with_name("crash_child.py")
RUNS = 20


def _run_child_and_kill(directory: Path, seed: int, rng: random.Random) -> list[str]:
    """Start the child, SIGKILL it at a random moment, return every line it printed."""
    errors = directory.parent / "child-stderr.txt"
    with open(errors, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(directory), str(seed)],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    printed = []
    try:
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0.0, 0.15))  # may land in start-up or recovery
        else:
            wanted = rng.randrange(1, 200)
            while wanted > 0:
                line = proc.stdout.readline()
                if not line:
                    break
                printed.append(line)
                wanted -= line.startswith(b"A ")
    finally:
        proc.send_signal(signal.SIGKILL)
        printed.append(proc.stdout.read())
        proc.stdout.close()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, errors.read_text()
    text = b"".join(printed).decode()
    # A line cut by the kill has no newline: it promises nothing, so drop it.
    return text.split("\n")[:-1]


def _tear_unacknowledged_tail(directory: Path, last_acked: int, rng: random.Random) -> None:
    """Simulate a power loss: cut or garble bytes after the last acknowledged write.

    SIGKILL alone never tears a write (the kernel finishes it into the page cache), so
    this is what exercises recovery here. Only bytes after the end of the write holding
    the last acknowledged record may go: everything up to there was synced.
    """
    last = max(p for p in directory.iterdir() if p.suffix == ".seg")
    data = last.read_bytes()
    safe = 0
    pos = 0
    in_acked_write = False
    while isinstance(frame := decode_frame(data, pos), Frame):
        pos = frame.end
        in_acked_write = in_acked_write or frame.offset == last_acked
        if in_acked_write and frame.batch_end:
            safe = pos
            in_acked_write = False
        elif frame.offset <= last_acked and frame.batch_end:
            safe = pos
    if len(data) > safe and rng.random() < 0.7:
        os.truncate(last, rng.randrange(safe, len(data)))
    else:
        with open(last, "ab") as f:
            f.write(rng.choice([b"\x00", b"\x8dMLR", rng.randbytes(1)]) * rng.randrange(1, 3000))


async def _check(directory: Path, acked: dict[int, str], committed: int) -> tuple[int, int]:
    async with DiskEventLog(directory) as log:
        head = await log.head()
        stored: dict[int, str] = {}
        digests: dict[str, int] = {}
        offset = 1
        while offset <= head:
            batch = await log.read(offset, 2000)
            assert batch, f"read({offset}) returned nothing below head {head}"
            for entry in batch:
                assert entry.offset == offset
                payload = entry.record.payload
                body, check = payload[:-8], payload[-8:]
                assert hashlib.sha256(body).digest()[:8] == check, f"torn record {offset}"
                digest = hashlib.sha256(payload).hexdigest()
                stored[offset] = digest
                digests[digest] = digests.get(digest, 0) + 1
                offset += 1
        for o, digest in acked.items():
            assert stored.get(o) == digest, f"acknowledged record {o} lost or changed"
            assert digests[digest] == 1, f"acknowledged record {o} stored twice"
        assert committed <= await log.get_committed("crash-reader") <= head
        return head, log.recovered[0]


def test_sigkill_loses_no_acknowledged_record(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    seed = int(os.environ.get("MYELIN_CRASH_SEED") or int.from_bytes(os.urandom(4), "big"))
    print(f"crash test seed: MYELIN_CRASH_SEED={seed}")
    rng = random.Random(seed)
    acked: dict[int, str] = {}
    committed = 0
    heads = []
    cut_bytes = 0
    for run in range(RUNS):
        lines = _run_child_and_kill(directory, run, rng)
        for line in lines:
            parts = line.split(" ")
            if parts[0] == "A" and len(parts) == 3 and len(parts[2]) == 64:
                offset = int(parts[1])
                assert acked.setdefault(offset, parts[2]) == parts[2], "offset reused"
            elif parts[0] == "C" and len(parts) == 2:
                committed = max(committed, int(parts[1]))
        if acked and rng.random() < 0.5:
            _tear_unacknowledged_tail(directory, max(acked), rng)
        head, cut = asyncio.run(_check(directory, acked, committed))
        heads.append(head)
        cut_bytes += cut
    assert len(acked) > 100, f"the child acknowledged too little to test anything: {heads}"
    assert cut_bytes > 0, "no run left a torn tail to recover from"
