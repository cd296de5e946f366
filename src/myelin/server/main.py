"""Process wiring of `myelin serve`: data directory, database, components, listeners.

One process, one event loop: the HTTP listeners run as granian servers embedded in our own
loop, so startup (migrations, keys) happens before the first request and shutdown
(SIGTERM/SIGINT) stops the listeners, lets requests in flight finish, then closes the
database. The whole lifetime is one TaskGroup; nothing runs unowned.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from granian.server.embed import Server as _EmbeddedServer

from myelin import __version__
from myelin.appservice.registration import RegistrationError
from myelin.appservice.wiring import load_appservices, running_appservices
from myelin.clientapi import (
    account,
    devices,
    discovery,
    keybackup,
    legacy_events,
    openid,
    sso,
    threepid,
    todevice,
)
from myelin.clientapi import keys as key_routes
from myelin.clientapi.context import ClientContext
from myelin.clientapi.identity import IdentityClient
from myelin.clientapi.ratelimit import RateLimiter
from myelin.clientapi.router import Router
from myelin.ephemeral.wiring import install_user_data
from myelin.federation.wiring import running_federation
from myelin.keyserver import KeyServer
from myelin.mediaapi.wiring import open_media
from myelin.push import defaults as push_defaults
from myelin.push.sender import running_sender
from myelin.server.asgi import App
from myelin.server.config import CONFIG_FILE_NAME, Config, default_config_text
from myelin.server.logs import setup_logging
from myelin.server.rooms import RoomComponents, open_rooms
from myelin.server.signingkey import ServerKey, load_or_create
from myelin.storage import Database, open_database
from myelin.syncapi.legacy import LegacyStreams
from myelin.userapi.accounts import UserAPI

log = logging.getLogger("myelin.server")


class StartupError(Exception):
    """The server cannot start (port taken, unreadable key ...); the message says why."""


def prepare_data_dir(config: Config) -> ServerKey:
    """Create the data directory on first start: config file, signing key, log dir."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    config_file = config.data_dir / CONFIG_FILE_NAME
    if not config_file.exists():
        # 0600: the file may hold the registration shared secret.
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(default_config_text(config))
    return load_or_create(config.signing_key_path)


def database_url(config: Config) -> str:
    return str(config.database_path) if config.database == "sqlite" else config.database


@dataclass
class Homeserver:
    """The running components of one server (everything but the listeners)."""

    config: Config
    db: Database
    users: UserAPI
    key: ServerKey
    app: App
    rooms: RoomComponents | None = None


@asynccontextmanager
async def open_homeserver(config: Config) -> AsyncIterator[Homeserver]:
    key = prepare_data_dir(config)
    push_defaults.configure(legacy_mention_rules=config.push_legacy_mention_rules)
    db = await open_database(database_url(config))
    closing: list[Callable[[], Awaitable[None]]] = []
    try:
        users = await UserAPI.open(db, config.server_name, config.refreshable_token_lifetime_ms)
        try:
            appservices = load_appservices(config.app_service_config_files, config.server_name)
        except RegistrationError as exc:
            raise StartupError(str(exc)) from None
        identity = IdentityClient(
            config.server_name, key.key, verify_tls=config.identity_server_tls_verify
        )
        closing.append(identity.close)
        threepids = await threepid.ThreepidService.open(config, db, identity)
        ctx = ClientContext(
            config=config, users=users, key=key, appservices=appservices, threepids=threepids
        )
        router = Router()
        discovery.install(router, ctx)
        account.install(router, ctx)
        sso.install(router, ctx)
        threepid.install(router, ctx, threepids)
        devices.install(router, ctx)
        await open_media(config, db, router)
        limiter = (
            RateLimiter(config.rate_limit_per_second, config.rate_limit_burst)
            if config.rate_limit
            else None
        )
        async with open_rooms(ctx, db, router) as rooms:
            keys = await KeyServer.open(db, config.server_name, rooms.notifier.wake)
            rooms.sync.extension = keys
            users.on_devices_removed.append(keys.devices_removed)
            users.on_device_changed.append(keys.device_list_changed)
            key_routes.install(router, ctx, keys)
            todevice.install(router, keys)
            keybackup.install(router, keys)
            eph = await install_user_data(router, db, rooms, users)
            legacy_events.install(
                router,
                LegacyStreams(rooms.sync, eph.typing, rooms.directory),
                rooms.sync.presence_hook,
            )
            app = App(router, users, max_body=config.max_request_body, limiter=limiter)
            await openid.install(router, db, config.server_name)
            if appservices:
                app.appservices = appservices
                rooms.directory.on_unknown_alias = appservices.query_alias
                rooms.directory.check_new_alias = appservices.check_alias
                rooms.writer.on_invite = appservices.ensure_user
            async with (
                running_federation(
                    config.server_name, key.key, db, rooms, users, router, keys, eph
                ),
                running_sender(db, rooms.log, rooms.notifier),
                running_appservices(
                    appservices,
                    db=db,
                    log=rooms.log,
                    notifier=rooms.notifier,
                    users=users,
                    router=router,
                    typing=eph.typing,
                ),
            ):
                yield Homeserver(config, db, users, key, app, rooms)
    finally:
        for close in closing:
            await close()
        await db.close()


#: glibc's `mallopt` parameter number of M_MMAP_THRESHOLD (malloc.h).
_M_MMAP_THRESHOLD = -3
#: Blocks at least this large are mapped on their own and unmapped when freed.
MMAP_THRESHOLD = 1024 * 1024


def return_large_blocks_to_the_system() -> None:
    """Fix glibc's mmap threshold so large blocks go back to the system when freed.

    glibc raises the threshold to the size of each large block freed (up to 32 MiB), so
    after one 16 MiB scrypt hash every later one is carved from the thread's arena, which
    keeps it: RSS grew by 16 MiB per thread that ever hashed a password. Setting the
    threshold explicitly turns that adjustment off. No-op where glibc is not the allocator.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; large blocks stay in malloc arenas")


async def serve(config: Config) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    setup_logging(config.log_dir, config.log_level)
    return_large_blocks_to_the_system()
    data_dir = config.data_dir.resolve()
    async with open_homeserver(config) as hs:
        listeners = [_listener(hs.app, config.bind_address, config.port, None, None)]
        if config.tls_port is not None:
            listeners.append(
                _listener(
                    hs.app, config.bind_address, config.tls_port, config.tls_cert, config.tls_key
                )
            )
        loop = asyncio.get_running_loop()

        def stop() -> None:
            log.info("shutdown requested")
            if hs.rooms is not None:
                hs.rooms.stop_waiters()
            for listener in listeners:
                listener.stop()  # type: ignore[no-untyped-call]

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        where = f"http://{config.bind_address}:{config.port}"
        if config.tls_port is not None:
            where += f" and https://{config.bind_address}:{config.tls_port}"
        try:
            await _serve_listeners(listeners, config, where, data_dir)
        except ExceptionGroup as group:
            failed = group.subgroup(StartupError)
            if failed is None:
                raise
            raise failed.exceptions[0] from None
        # The signal handlers stay until the loop closes: a second SIGTERM during the
        # shutdown (closing the database) must not kill the process halfway.
        log.info("stopped")


async def _serve_listeners(
    listeners: list[_Listener], config: Config, where: str, data_dir: Path
) -> None:
    async with asyncio.TaskGroup() as tg:
        for listener in listeners:
            tg.create_task(listener.serve())
        # Announce only once every socket is bound: tests and scripts wait for it.
        for listener in listeners:
            await listener.ready.wait()
        log.info("serving server_name=%s listen=%s", config.server_name, where)
        print(
            f"myelin {__version__}: serving {config.server_name} on {where} "
            f"(data in {data_dir}, registration "
            f"{'open' if config.registration_open else 'closed'})",
            file=sys.stderr,
            flush=True,
        )


def _listener(app: App, address: str, port: int, cert: Path | None, key: Path | None) -> _Listener:
    from granian.constants import Interfaces

    return _Listener(
        app,
        address=address,
        port=port,
        interface=Interfaces.ASGINL,
        log_enabled=False,
        websockets=False,
        # Every client of a busy server holds a long-polling /sync open. Granian's
        # defaults (128 pending connections, and as many requests in flight) stop
        # accepting connections once 128 long-polls wait, so the message that would
        # answer them can no longer get in.
        backlog=LISTEN_BACKLOG,
        backpressure=MAX_REQUESTS_IN_FLIGHT,
        ssl_cert=cert,
        ssl_key=key,
    )


#: Pending connections the listening socket queues (the kernel caps it at somaxconn).
LISTEN_BACKLOG = 4096
#: Requests served at once; most of them are long-polls that cost nothing while waiting.
MAX_REQUESTS_IN_FLIGHT = 16384


class _Listener(_EmbeddedServer):
    """A granian server embedded in our loop that says when its socket is bound."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ready = asyncio.Event()

    def startup(self, spawn_target: Any, target_loader: Any) -> None:
        try:
            super().startup(spawn_target, target_loader)  # type: ignore[no-untyped-call]
        except (RuntimeError, OSError) as exc:
            where = f"{self.bind_addr}:{self.bind_port}"
            raise StartupError(f"cannot listen on {where}: {exc}") from None
        self.ready.set()
