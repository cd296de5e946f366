"""Child process of the crash test: appends forever and reports what was acknowledged.

Usage: python crash_child.py DIRECTORY SEED

After each `append` returns it prints one line per record, `A <offset> <sha256 of the
payload>`, and after each reader commit returns `C <offset>`, flushing at once. The
parent kills it with SIGKILL at a random moment; every line it managed to print is a
promise the reopened log must keep.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys

from myelin.eventlog import DiskEventLog, LogRecord

APPENDERS = 4


def make_payload(rng: random.Random, tag: str) -> bytes:
    """A payload that carries its own checksum, so a torn one could be recognised."""
    body = tag.encode() + b":" + rng.randbytes(rng.randrange(0, 2000))
    return body + hashlib.sha256(body).digest()[:8]


async def main(directory: str, seed: int) -> None:
    rng = random.Random(seed)
    out = sys.stdout
    async with DiskEventLog(directory, segment_bytes=256 * 1024) as log:
        out.write("R\n")
        out.flush()

        async def appender(task: int) -> None:
            n = 0
            while True:
                n += 1
                records = [
                    LogRecord(
                        f"!room{rng.randrange(5)}:example.org",
                        make_payload(rng, f"{os.getpid()}.{task}.{n}.{k}"),
                    )
                    for k in range(rng.randrange(1, 5))
                ]
                offsets = await log.append(records)
                lines = "".join(
                    f"A {o} {hashlib.sha256(r.payload).hexdigest()}\n"
                    for o, r in zip(offsets, records, strict=True)
                )
                out.write(lines)
                out.flush()
                if task == 0 and n % 10 == 0:
                    await log.commit("crash-reader", offsets[-1])
                    out.write(f"C {offsets[-1]}\n")
                    out.flush()

        async with asyncio.TaskGroup() as tg:
            for task in range(APPENDERS):
                tg.create_task(appender(task))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
