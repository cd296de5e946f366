"""Media metadata in the database (the `mediaapi` component's tables).

The row, not the file, says whether media exists and is complete: files are moved into
place before their row is written, so a crash in between leaves an unreferenced file
(harmless, overwritten by a retried upload) and never a row without its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from myelin.storage import Database, Row, Txn

MIGRATIONS = "myelin.mediaapi.migrations"

_MEDIA_COLUMNS = (
    "media_id, user_id, created_ts, unused_expires_at, content_type, upload_name, size,"
    " sha256, uploaded_ts"
)


@dataclass(frozen=True, slots=True)
class MediaRecord:
    media_id: str
    user_id: str
    created_ts: int
    unused_expires_at: int | None
    content_type: str | None
    upload_name: str | None
    size: int | None
    sha256: str | None
    uploaded_ts: int | None

    @property
    def uploaded(self) -> bool:
        return self.size is not None

    def expired(self, now_ms: int) -> bool:
        """A created ID whose content never came in time."""
        return (
            not self.uploaded
            and self.unused_expires_at is not None
            and self.unused_expires_at < now_ms
        )

    @staticmethod
    def from_row(row: Row) -> MediaRecord:
        return MediaRecord(*row)


@dataclass(frozen=True, slots=True)
class ThumbnailRecord:
    media_id: str
    width: int
    height: int
    method: str
    content_type: str
    size: int


class MediaStore:
    """Typed queries over the media tables; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, db: Database) -> MediaStore:
        await db.migrate("mediaapi", MIGRATIONS)
        return cls(db)

    async def get(self, media_id: str) -> MediaRecord | None:
        async def txn(t: Txn) -> MediaRecord | None:
            row = await t.fetchone(
                f"SELECT {_MEDIA_COLUMNS} FROM media WHERE media_id = ?", media_id
            )
            return MediaRecord.from_row(row) if row is not None else None

        return await self.db.read(txn)

    async def insert_uploaded(self, record: MediaRecord) -> None:
        async def txn(t: Txn) -> None:
            await t.execute(
                f"INSERT INTO media ({_MEDIA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                record.media_id,
                record.user_id,
                record.created_ts,
                record.unused_expires_at,
                record.content_type,
                record.upload_name,
                record.size,
                record.sha256,
                record.uploaded_ts,
            )

        await self.db.run(txn)

    async def create_pending(
        self, media_id: str, user_id: str, now_ms: int, expires_at: int, max_pending: int
    ) -> bool:
        """Reserve `media_id` for `user_id` until `expires_at`, unless the user already has
        `max_pending` unexpired reservations (then False, nothing written). Expired
        reservations of everyone are dropped on the way: they can never be used again."""

        async def txn(t: Txn) -> bool:
            await t.execute(
                "DELETE FROM media WHERE size IS NULL AND unused_expires_at < ?", now_ms
            )
            pending = await t.fetchval(
                "SELECT count(*) FROM media WHERE user_id = ? AND size IS NULL"
                " AND unused_expires_at >= ?",
                user_id,
                now_ms,
            )
            if int(pending) >= max_pending:
                return False
            await t.execute(
                "INSERT INTO media (media_id, user_id, created_ts, unused_expires_at)"
                " VALUES (?, ?, ?, ?)",
                media_id,
                user_id,
                now_ms,
                expires_at,
            )
            return True

        return await self.db.run(txn)

    async def complete_pending(
        self,
        media_id: str,
        content_type: str,
        upload_name: str | None,
        size: int,
        sha256: str,
        now_ms: int,
    ) -> bool:
        """Record the content of a reserved ID; False if it was filled (or dropped) meanwhile."""

        async def txn(t: Txn) -> bool:
            changed = await t.execute(
                "UPDATE media SET content_type = ?, upload_name = ?, size = ?, sha256 = ?,"
                " uploaded_ts = ? WHERE media_id = ? AND size IS NULL",
                content_type,
                upload_name,
                size,
                sha256,
                now_ms,
                media_id,
            )
            return changed == 1

        return await self.db.run(txn)

    async def get_thumbnail(
        self, media_id: str, width: int, height: int, method: str
    ) -> ThumbnailRecord | None:
        async def txn(t: Txn) -> ThumbnailRecord | None:
            row = await t.fetchone(
                "SELECT content_type, size FROM media_thumbnails"
                " WHERE media_id = ? AND width = ? AND height = ? AND method = ?",
                media_id,
                width,
                height,
                method,
            )
            if row is None:
                return None
            return ThumbnailRecord(media_id, width, height, method, row[0], int(row[1]))

        return await self.db.read(txn)

    async def insert_thumbnail(self, thumb: ThumbnailRecord, now_ms: int) -> None:
        async def txn(t: Txn) -> None:
            await t.execute(
                "INSERT INTO media_thumbnails"
                " (media_id, width, height, method, content_type, size, created_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                thumb.media_id,
                thumb.width,
                thumb.height,
                thumb.method,
                thumb.content_type,
                thumb.size,
                now_ms,
            )

        await self.db.run(txn)

    async def count_thumbnails(self, media_id: str) -> int:
        async def txn(t: Txn) -> int:
            return int(
                await t.fetchval(
                    "SELECT count(*) FROM media_thumbnails WHERE media_id = ?", media_id
                )
            )

        return await self.db.read(txn)
