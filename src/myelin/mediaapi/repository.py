"""The media repository: uploads, reserved IDs, downloads and thumbnails of local media.

Every operation validates first (IDs, names, types, permissions, declared sizes) and only
then reads the body or touches the disk, so a refused request leaves nothing behind.
Refusals are `MatrixError`s with the codes and statuses of the content repository spec.

Remote media (an `mxc://` of another server) is answered with M_NOT_FOUND: fetching it
needs federation, which this server does not do yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from myelin.clientapi.http import MatrixError, invalid_param, not_found
from myelin.mediaapi import thumbnails as thumbs
from myelin.mediaapi.files import FileStore, FileStream, TooLarge, WrittenFile, open_stream
from myelin.mediaapi.headers import BadHeaderValue, check_filename, normalize_content_type
from myelin.mediaapi.ids import (
    InvalidMediaID,
    check_media_id,
    check_server_name,
    mxc_uri,
    new_media_id,
)
from myelin.mediaapi.store import MediaRecord, MediaStore, ThumbnailRecord
from myelin.mediaapi.waiters import KeyedLocks, Waiters
from myelin.storage import Database

log = logging.getLogger("myelin.media")

DAY_MS = 24 * 60 * 60 * 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """The knobs of the repository; the defaults follow the spec's recommendations."""

    max_upload_size: int = 50 * 1024 * 1024
    #: How long an ID from /create waits for its content (the spec recommends 24 h).
    unused_expiry_ms: int = DAY_MS
    #: Unexpired, still empty IDs one user may hold at once (beyond: 429).
    max_pending_per_user: int = 50
    #: The cap on a download's `timeout_ms` (the spec asks for one; its default is 20 s).
    max_wait_ms: int = 60_000
    default_wait_ms: int = 20_000
    thumbnail_sizes: tuple[thumbs.ThumbnailSize, ...] = thumbs.DEFAULT_THUMBNAIL_SIZES
    max_thumbnail_pixels: int = thumbs.DEFAULT_MAX_PIXELS


@dataclass(frozen=True, slots=True)
class Served:
    """Bytes ready to go out: an open stream and what to say about it."""

    stream: FileStream
    content_type: str
    size: int


def too_large(limit: int) -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", f"Cannot upload files larger than {limit} bytes")


def cannot_thumbnail(reason: str) -> MatrixError:
    return MatrixError(400, "M_UNKNOWN", f"Cannot generate thumbnails for this content: {reason}")


class MediaRepository:
    """Local media of one server: metadata in the database, bytes under `media_dir`."""

    def __init__(
        self,
        store: MediaStore,
        files: FileStore,
        server_name: str,
        limits: MediaLimits,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.store = store
        self.files = files
        self.server_name = server_name
        self.limits = limits
        self.clock = clock
        self._uploaded = Waiters()
        self._locks = KeyedLocks()
        self._probed: dict[str, thumbs.ImageInfo | str] = {}

    @classmethod
    async def open(
        cls,
        db: Database,
        media_dir: Path,
        server_name: str,
        limits: MediaLimits | None = None,
        clock: Callable[[], int] = _now_ms,
    ) -> MediaRepository:
        store = await MediaStore.open(db)
        files = FileStore(media_dir)
        await asyncio.to_thread(media_dir.mkdir, parents=True, exist_ok=True)
        swept = await asyncio.to_thread(files.sweep_temporaries)
        if swept:
            log.info("removed %d unfinished media files", swept)
        return cls(store, files, server_name, limits or MediaLimits(), clock)

    # --- uploads ----------------------------------------------------------------------

    async def upload(
        self,
        user_id: str,
        content_type: str | None,
        filename: str | None,
        body: AsyncIterator[bytes],
        declared_length: int | None,
    ) -> str:
        """Store a new upload; returns its `mxc://` URI."""
        ctype, name = _check_upload_headers(content_type, filename)
        self._check_declared(declared_length)
        media_id = new_media_id()
        final = self.files.media_path(media_id)
        written = await self._receive(final, body)
        await self.files.commit(written, final)
        now = self.clock()
        record = MediaRecord(
            media_id, user_id, now, None, ctype, name, written.size, written.sha256, now
        )
        await self.store.insert_uploaded(record)
        log.info("upload %s by %s: %d bytes, %s", media_id, user_id, written.size, ctype)
        return mxc_uri(self.server_name, media_id)

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserve a media ID for a later upload: (`mxc://` URI, `unused_expires_at`)."""
        now = self.clock()
        expires = now + self.limits.unused_expiry_ms
        media_id = new_media_id()
        ok = await self.store.create_pending(
            media_id, user_id, now, expires, self.limits.max_pending_per_user
        )
        if not ok:
            raise MatrixError(
                429,
                "M_LIMIT_EXCEEDED",
                f"Too many pending uploads (at most {self.limits.max_pending_per_user})",
            )
        return mxc_uri(self.server_name, media_id), expires

    async def upload_to(
        self,
        user_id: str,
        server_name: str,
        media_id: str,
        content_type: str | None,
        filename: str | None,
        body: AsyncIterator[bytes],
        declared_length: int | None,
    ) -> None:
        """Fill an ID reserved with `create`: only by its creator, only once."""
        _check_ids(server_name, media_id)
        if server_name != self.server_name:
            raise not_found("Media IDs of other servers cannot be uploaded to here")
        ctype, name = _check_upload_headers(content_type, filename)
        self._check_reserved(await self.store.get(media_id), user_id)
        self._check_declared(declared_length)
        final = self.files.media_path(media_id)
        written = await self._receive(final, body)
        async with self._locks.hold(("upload", media_id)):
            try:
                # Another upload to the same ID may have finished while this one streamed.
                record = await self.store.get(media_id)
                if record is None:
                    raise not_found("Unknown media ID (it expired)")
                if record.uploaded:
                    raise _cannot_overwrite()
            except BaseException:
                await self.files.discard(written)
                raise
            await self.files.commit(written, final)
            done = await self.store.complete_pending(
                media_id, ctype, name, written.size, written.sha256, self.clock()
            )
        if not done:
            raise not_found("Unknown media ID (it expired)")
        self._uploaded.wake(media_id)
        log.info("upload %s by %s: %d bytes, %s", media_id, user_id, written.size, ctype)

    def _check_reserved(self, record: MediaRecord | None, user_id: str) -> None:
        if record is None or record.expired(self.clock()):
            raise not_found("Unknown media ID: it was not created with /create or it expired")
        if record.user_id != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "Only the creator of a media ID can upload to it")
        if record.uploaded:
            raise _cannot_overwrite()

    def _check_declared(self, declared_length: int | None) -> None:
        if declared_length is not None and declared_length > self.limits.max_upload_size:
            raise too_large(self.limits.max_upload_size)

    async def _receive(self, final: Path, body: AsyncIterator[bytes]) -> WrittenFile:
        try:
            return await self.files.receive(final, body, self.limits.max_upload_size)
        except TooLarge:
            raise too_large(self.limits.max_upload_size) from None

    # --- downloads --------------------------------------------------------------------

    async def find(self, server_name: str, media_id: str, timeout_ms: int | None) -> MediaRecord:
        """The record of uploaded media, waiting up to `timeout_ms` for reserved IDs."""
        _check_ids(server_name, media_id)
        if server_name != self.server_name:
            raise not_found("Remote media is not available from this server")
        record = await self.store.get(media_id)
        if record is None or record.expired(self.clock()):
            raise not_found("Media not found")
        if record.uploaded:
            return record
        wait_ms = self.limits.default_wait_ms if timeout_ms is None else timeout_ms
        wait_ms = max(0, min(wait_ms, self.limits.max_wait_ms))
        async with self._uploaded.watch(media_id) as uploaded:
            record = await self.store.get(media_id)  # re-check now that a wake-up can't be lost
            if record is not None and record.uploaded:
                return record
            try:
                async with asyncio.timeout(wait_ms / 1000):
                    await uploaded.wait()
            except TimeoutError:
                raise MatrixError(
                    504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded"
                ) from None
        record = await self.store.get(media_id)
        if record is None or not record.uploaded:
            raise not_found("Media not found")
        return record

    async def open_content(self, record: MediaRecord) -> Served:
        assert record.size is not None and record.content_type is not None
        path = self.files.media_path(record.media_id)
        try:
            stream = await open_stream(path, record.size)
        except FileNotFoundError:
            log.error("media %s has a record but no file at %s", record.media_id, path)
            raise not_found("Media not found") from None
        return Served(stream, record.content_type, record.size)

    # --- thumbnails -------------------------------------------------------------------

    async def thumbnail(
        self,
        record: MediaRecord,
        width: int,
        height: int,
        method: thumbs.Method,
        animated: bool,
    ) -> Served:
        """A thumbnail of at least `width` x `height` where the image allows, rendered
        once per advertised size and then served from its cached file."""
        assert record.size is not None
        source = self.files.media_path(record.media_id)
        info = await self._probe(record.media_id, source)
        if info.width * info.height > self.limits.max_thumbnail_pixels:
            raise MatrixError(413, "M_TOO_LARGE", "Content is too large to thumbnail")
        servable = info.servable_type
        if (
            servable is not None
            and info.width <= width
            and info.height <= height
            and (animated or not info.animated)
        ):
            # Smaller than asked: the original is the best thumbnail (never upscale).
            return Served(await open_stream(source, record.size), servable, record.size)
        size = thumbs.choose_size(self.limits.thumbnail_sizes, width, height, method)
        thumb = await self._thumbnail_record(record.media_id, source, size)
        path = self.files.thumbnail_path(record.media_id, size.width, size.height, size.method)
        return Served(await open_stream(path, thumb.size), thumb.content_type, thumb.size)

    async def _thumbnail_record(
        self, media_id: str, source: Path, size: thumbs.ThumbnailSize
    ) -> ThumbnailRecord:
        key = (media_id, size.width, size.height, size.method)
        thumb = await self.store.get_thumbnail(*key)
        if thumb is not None:
            return thumb
        async with self._locks.hold(("thumbnail", *key)):
            thumb = await self.store.get_thumbnail(*key)  # rendered while we waited?
            if thumb is not None:
                return thumb
            try:
                data, ctype = await asyncio.to_thread(
                    thumbs.render, source, size, self.limits.max_thumbnail_pixels
                )
            except thumbs.NotAnImage as exc:
                raise cannot_thumbnail(str(exc)) from None
            except thumbs.ImageTooLarge:
                raise MatrixError(413, "M_TOO_LARGE", "Content is too large to thumbnail") from None
            path = self.files.thumbnail_path(media_id, size.width, size.height, size.method)
            await self.files.write_bytes(path, data)
            thumb = ThumbnailRecord(
                media_id, size.width, size.height, size.method, ctype, len(data)
            )
            await self.store.insert_thumbnail(thumb, self.clock())
            log.info("thumbnail %s %dx%d %s: %d bytes", media_id, *key[1:], len(data))
            return thumb

    async def _probe(self, media_id: str, source: Path) -> thumbs.ImageInfo:
        """What the image is (cached: media never changes once uploaded)."""
        known = self._probed.get(media_id)
        if known is None:
            try:
                known = await asyncio.to_thread(thumbs.probe, source)
            except thumbs.NotAnImage as exc:
                known = str(exc)
            except thumbs.ImageTooLarge:
                raise MatrixError(413, "M_TOO_LARGE", "Content is too large to thumbnail") from None
            if len(self._probed) >= _PROBE_CACHE:
                self._probed.pop(next(iter(self._probed)))
            self._probed[media_id] = known
        if isinstance(known, str):
            raise cannot_thumbnail(f"not an image ({known})")
        return known


_PROBE_CACHE = 4096


def _cannot_overwrite() -> MatrixError:
    return MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")


def _check_ids(server_name: str, media_id: str) -> None:
    try:
        check_server_name(server_name)
        check_media_id(media_id)
    except InvalidMediaID as exc:
        raise invalid_param(str(exc)) from None


def _check_upload_headers(content_type: str | None, filename: str | None) -> tuple[str, str | None]:
    try:
        return normalize_content_type(content_type), check_filename(filename)
    except BadHeaderValue as exc:
        raise invalid_param(str(exc)) from None
