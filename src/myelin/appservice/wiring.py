"""Wiring of application services into the process: routes, hooks into the directory and
invites, the AS sender users, and one transaction reader per AS for the server's life."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from myelin.appservice import routes
from myelin.appservice.registration import load_registrations
from myelin.appservice.sender import running_senders
from myelin.appservice.service import AppServices
from myelin.clientapi.router import Router
from myelin.ephemeral.typing import Typing
from myelin.eventlog.api import EventLog
from myelin.storage import Database
from myelin.syncapi.notifier import Notifier
from myelin.userapi.accounts import UserAPI


def load_appservices(paths: tuple[Path, ...], server_name: str) -> AppServices:
    """The registrations of the config (RegistrationError when one is bad)."""
    return AppServices(load_registrations(paths, server_name))


@asynccontextmanager
async def running_appservices(
    appservices: AppServices,
    *,
    db: Database,
    log: EventLog,
    notifier: Notifier,
    users: UserAPI,
    router: Router,
    typing: Typing | None = None,
) -> AsyncIterator[AppServices]:
    """Install the AS routes and readers; the caller hooks `appservices` into the app,
    the directory and the room writer (see `myelin.server.main`)."""

    async def user_exists(user_id: str) -> bool:
        return not await users.is_available(user_id)

    appservices.user_exists = user_exists
    routes.install(router, appservices, db)
    for service in appservices.services:
        # The AS's own user exists from the start, so it can act without registering.
        if await users.is_available(service.sender):
            await users.create_account(service.sender, None)
    try:
        async with running_senders(
            appservices.services, db, log, notifier, appservices.client, typing
        ):
            yield appservices
    finally:
        await appservices.close()
