"""How the process mounts the media repository: one call from the server's wiring."""

from __future__ import annotations

from myelin.clientapi.router import Router
from myelin.mediaapi.preview import DEFAULT_IP_RANGE_BLACKLIST, PreviewSettings, UrlPreviewer
from myelin.mediaapi.repository import MediaLimits, MediaRepository
from myelin.mediaapi.routes import install
from myelin.server.config import Config
from myelin.storage import Database


async def open_media(config: Config, db: Database, router: Router) -> MediaRepository:
    """Migrate the media tables, sweep unfinished files, and add the media routes.

    Media bytes live in `<data dir>/media`; nothing runs in the background, so there is
    nothing to close (URL previews open one HTTP session per fetch and close it there)."""
    repo = await MediaRepository.open(
        db,
        config.data_dir / "media",
        config.server_name,
        MediaLimits(max_upload_size=config.max_upload_size),
    )
    blacklist = config.url_preview_ip_range_blacklist
    previews = UrlPreviewer(
        repo,
        db,
        PreviewSettings(
            enabled=config.url_preview_enabled,
            blacklist=DEFAULT_IP_RANGE_BLACKLIST if blacklist is None else blacklist,
            whitelist=config.url_preview_ip_range_whitelist,
        ),
    )
    install(router, repo, previews)
    return repo
