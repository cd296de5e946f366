"""Benchmark of the media repository over HTTP: streaming uploads and downloads, thumbnails.

    .venv/bin/python bench/media.py [--mb N] [--image WxH]

Starts `myelin serve` (embedded default) in a temporary data directory on a free loopback
port, then measures:

- one upload of N MiB (default 64) streamed without Content-Length, and its download:
  MiB/s, and the server's resident memory before and at its peak during each transfer
  (sampled every 20 ms), which shows that bodies are streamed, not held whole;
- the first request of a 96x96 crop thumbnail of a WxH PNG (rendering) and the median of
  50 repeated requests (served from the cached file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.server import start_server

CHUNK = 1024 * 1024


async def sample_rss(proc: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


async def measured(proc: psutil.Process, work: AsyncIterator[None]) -> tuple[float, int, int]:
    """Seconds, RSS before and peak RSS while `work` runs."""
    before = proc.memory_info().rss
    peak = [before]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(sample_rss(proc, peak, stop))
        start = time.perf_counter()
        async for _ in work:
            pass
        elapsed = time.perf_counter() - start
        stop.set()
    return elapsed, before, peak[0]


def png(width: int, height: int) -> bytes:
    image = Image.radial_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def run(mb: int, image_size: tuple[int, int]) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="myelin-media-bench-")) / "data"
    server = start_server(data_dir, max_upload_size=(mb + 1) * CHUNK)
    proc = psutil.Process(server.proc.pid)
    base = server.base_url
    try:
        async with aiohttp.ClientSession() as s:
            body: dict[str, object] = {"username": "bench", "password": "bench-pw"}
            async with s.post(f"{base}/_matrix/client/v3/register", json=body) as r:
                first = await r.json()
            body["auth"] = {"type": "m.login.dummy", "session": first["session"]}
            async with s.post(f"{base}/_matrix/client/v3/register", json=body) as r:
                token = (await r.json())["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            block = bytes(range(256)) * (CHUNK // 256)
            uri: list[str] = []

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(mb):
                    yield block

            async def do_upload() -> AsyncIterator[None]:
                async with s.post(
                    f"{base}/_matrix/media/v3/upload", data=chunks(), headers=auth
                ) as r:
                    uri.append((await r.json())["content_uri"])
                yield None

            secs, before, peak = await measured(proc, do_upload())
            print(
                f"upload   {mb} MiB: {mb / secs:8.1f} MiB/s   server RSS {before / 2**20:.0f} MiB"
                f" -> peak {peak / 2**20:.0f} MiB"
            )
            media = uri[0].removeprefix("mxc://")

            async def do_download() -> AsyncIterator[None]:
                async with s.get(
                    f"{base}/_matrix/client/v1/media/download/{media}", headers=auth
                ) as r:
                    size = 0
                    async for part in r.content.iter_chunked(CHUNK):
                        size += len(part)
                    assert size == mb * CHUNK, size
                yield None

            secs, before, peak = await measured(proc, do_download())
            print(
                f"download {mb} MiB: {mb / secs:8.1f} MiB/s   server RSS {before / 2**20:.0f} MiB"
                f" -> peak {peak / 2**20:.0f} MiB"
            )

            w, h = image_size
            async with s.post(
                f"{base}/_matrix/media/v3/upload",
                data=png(w, h),
                headers={**auth, "Content-Type": "image/png"},
            ) as r:
                image = (await r.json())["content_uri"].removeprefix("mxc://")
            url = f"{base}/_matrix/client/v1/media/thumbnail/{image}?width=96&height=96&method=crop"
            timings = []
            for _ in range(51):
                start = time.perf_counter()
                async with s.get(url, headers=auth) as r:
                    await r.read()
                    assert r.status == 200
                timings.append((time.perf_counter() - start) * 1000)
            print(
                f"thumbnail {w}x{h} -> 96x96 crop: first {timings[0]:.1f} ms,"
                f" cached p50 {statistics.median(timings[1:]):.2f} ms"
            )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=64, help="upload size in MiB [64]")
    parser.add_argument("--image", default="2000x1500", help="test image size [2000x1500]")
    args = parser.parse_args()
    w, h = (int(v) for v in args.image.split("x"))
    asyncio.run(run(args.mb, (w, h)))


if __name__ == "__main__":
    main()
