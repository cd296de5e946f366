"""The media repository on a real database (SQLite and PostgreSQL) and a real directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from myelin.clientapi.http import MatrixError
from myelin.mediaapi.repository import MediaLimits, MediaRepository
from myelin.storage import Database
from tests.mediaapi.conftest import image_of, make_image

ALICE = "@alice:test"
BOB = "@bob:test"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


async def chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def open_repo(db: Database, tmp_path: Path, clock: Clock, **limits: int) -> MediaRepository:
    return await MediaRepository.open(
        db,
        tmp_path / "media",
        "test",
        MediaLimits(**limits),
        clock=clock,  # type: ignore[arg-type]
    )


def media_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "media").rglob("*") if p.is_file())


async def read_all(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def expect(code: str, status: int, awaitable: object) -> MatrixError:
    with pytest.raises(MatrixError) as info:
        await awaitable  # type: ignore[misc]
    assert (info.value.errcode, info.value.status) == (code, status), info.value
    return info.value


async def test_upload_then_download(db: Database, tmp_path: Path) -> None:
    repo = await open_repo(db, tmp_path, Clock())
    data = bytes(range(256)) * 1000
    uri = await repo.upload(ALICE, "application/x-test", "data.bin", chunks(data), len(data))
    server, media_id = uri.removeprefix("mxc://").split("/")
    assert server == "test"
    record = await repo.find("test", media_id, None)
    assert (record.size, record.content_type, record.upload_name) == (
        len(data),
        "application/x-test",
        "data.bin",
    )
    served = await repo.open_content(record)
    assert await read_all(served.stream) == data
    assert media_files(tmp_path) == [tmp_path / "media" / media_id[:2] / media_id]


async def test_refusals_leave_nothing(db: Database, tmp_path: Path) -> None:
    repo = await open_repo(db, tmp_path, Clock(), max_upload_size=1000)
    await expect("M_TOO_LARGE", 413, repo.upload(ALICE, None, None, chunks(b"x" * 1001), None))
    await expect("M_TOO_LARGE", 413, repo.upload(ALICE, None, None, chunks(b""), 5000))
    await expect("M_INVALID_PARAM", 400, repo.upload(ALICE, "not a type", None, chunks(b"x"), None))
    await expect("M_INVALID_PARAM", 400, repo.upload(ALICE, None, "a\nb", chunks(b"x"), None))
    assert media_files(tmp_path) == []
    await expect("M_INVALID_PARAM", 400, repo.find("test", "../../x", None))
    await expect("M_INVALID_PARAM", 400, repo.find("bad/server", "abc", None))
    await expect("M_NOT_FOUND", 404, repo.find("other.example", "abc", None))
    await expect("M_NOT_FOUND", 404, repo.find("test", "abc", None))


async def test_create_then_upload_once_by_the_creator(db: Database, tmp_path: Path) -> None:
    clock = Clock()
    repo = await open_repo(db, tmp_path, clock, max_upload_size=1000)
    uri, expires = await repo.create(ALICE)
    assert expires == clock.now + 24 * 3600 * 1000
    media_id = uri.rsplit("/", 1)[1]
    await expect("M_NOT_YET_UPLOADED", 504, repo.find("test", media_id, 0))
    await expect(
        "M_FORBIDDEN", 403, repo.upload_to(BOB, "test", media_id, None, None, chunks(b"b"), 1)
    )
    await expect(
        "M_TOO_LARGE",
        413,
        repo.upload_to(ALICE, "test", media_id, None, None, chunks(b"x" * 2000), None),
    )
    assert media_files(tmp_path) == []
    await repo.upload_to(ALICE, "test", media_id, "text/plain", "a.txt", chunks(b"hi"), 2)
    await expect(
        "M_CANNOT_OVERWRITE_MEDIA",
        409,
        repo.upload_to(ALICE, "test", media_id, None, None, chunks(b"again"), 5),
    )
    record = await repo.find("test", media_id, 0)
    assert await read_all((await repo.open_content(record)).stream) == b"hi"
    await expect(
        "M_NOT_FOUND", 404, repo.upload_to(ALICE, "test", "unknownid", None, None, chunks(b""), 0)
    )


async def test_concurrent_uploads_to_one_id_one_wins(db: Database, tmp_path: Path) -> None:
    repo = await open_repo(db, tmp_path, Clock())
    uri, _ = await repo.create(ALICE)
    media_id = uri.rsplit("/", 1)[1]
    results = await asyncio.gather(
        *(
            repo.upload_to(ALICE, "test", media_id, None, None, chunks(bytes([i]) * 300_000), None)
            for i in range(4)
        ),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, MatrixError)]
    assert len(failures) == 3 and {f.errcode for f in failures} == {"M_CANNOT_OVERWRITE_MEDIA"}
    winner = results.index(None)
    record = await repo.find("test", media_id, 0)
    assert await read_all((await repo.open_content(record)).stream) == bytes([winner]) * 300_000
    assert len(media_files(tmp_path)) == 1


async def test_unused_ids_expire_and_pending_ids_are_limited(db: Database, tmp_path: Path) -> None:
    clock = Clock()
    repo = await open_repo(db, tmp_path, clock, max_pending_per_user=2, unused_expiry_ms=1000)
    first = (await repo.create(ALICE))[0].rsplit("/", 1)[1]
    await repo.create(ALICE)
    await expect("M_LIMIT_EXCEEDED", 429, repo.create(ALICE))
    await repo.create(BOB)  # the limit is per user
    clock.now += 1001
    await expect("M_NOT_FOUND", 404, repo.find("test", first, 0))
    await expect(
        "M_NOT_FOUND", 404, repo.upload_to(ALICE, "test", first, None, None, chunks(b"x"), 1)
    )
    await repo.create(ALICE)  # the expired ones no longer count
    assert await repo.store.get(first) is None  # and were dropped


async def test_download_waits_for_the_upload(db: Database, tmp_path: Path) -> None:
    repo = await open_repo(db, tmp_path, Clock())
    media_id = (await repo.create(ALICE))[0].rsplit("/", 1)[1]
    waiting = asyncio.create_task(repo.find("test", media_id, 10_000))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await repo.upload_to(ALICE, "test", media_id, None, None, chunks(b"late"), 4)
    record = await asyncio.wait_for(waiting, 5)
    assert record.size == 4
    assert len(repo._uploaded) == 0  # no waiter state left behind


async def test_thumbnails_are_rendered_once_and_cached(db: Database, tmp_path: Path) -> None:
    repo = await open_repo(db, tmp_path, Clock())
    png = make_image(1000, 700)
    media_id = (await repo.upload(ALICE, "image/png", None, chunks(png), None)).rsplit("/", 1)[1]
    record = await repo.find("test", media_id, 0)
    results = await asyncio.gather(
        *(repo.thumbnail(record, 96, 96, "crop", False) for _ in range(5))
    )
    bodies = {await read_all(r.stream) for r in results}
    assert len(bodies) == 1 and image_of(bodies.pop()).size == (96, 96)
    assert await repo.store.count_thumbnails(media_id) == 1
    scaled = await repo.thumbnail(record, 300, 200, "scale", False)
    assert image_of(await read_all(scaled.stream)).size == (320, 224)
    assert await repo.store.count_thumbnails(media_id) == 2
    original = await repo.thumbnail(record, 2000, 2000, "scale", False)
    assert (await read_all(original.stream), original.content_type) == (png, "image/png")
    assert len(media_files(tmp_path)) == 3


async def test_thumbnail_of_non_image_fails_cleanly(db: Database, tmp_path: Path) -> None:
    repo = await open_repo(db, tmp_path, Clock())
    for body in (b"just text", make_image(300, 300)[:500]):
        media_id = (await repo.upload(ALICE, "image/png", None, chunks(body), None)).rsplit("/", 1)[
            1
        ]
        record = await repo.find("test", media_id, 0)
        await expect("M_UNKNOWN", 400, repo.thumbnail(record, 32, 32, "crop", False))
        assert await repo.store.count_thumbnails(media_id) == 0
    assert not (tmp_path / "media" / "thumbnails").exists() or not [
        p for p in (tmp_path / "media" / "thumbnails").rglob("*") if p.is_file()
    ]


async def test_too_many_pixels_is_too_large(db: Database, tmp_path: Path) -> None:
    repo = await open_repo(db, tmp_path, Clock(), max_thumbnail_pixels=10_000)
    media_id = (
        await repo.upload(ALICE, "image/png", None, chunks(make_image(200, 200)), None)
    ).rsplit("/", 1)[1]
    record = await repo.find("test", media_id, 0)
    await expect("M_TOO_LARGE", 413, repo.thumbnail(record, 32, 32, "crop", False))
