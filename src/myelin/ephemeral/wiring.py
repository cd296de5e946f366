"""Wiring of account data, push rules, profiles, the user directory and the ephemeral
streams into the process: open the stores, plug their part into `/sync`, add routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from myelin.clientapi import accountdata as account_data_routes
from myelin.clientapi import admin as admin_routes
from myelin.clientapi import ephemeral as ephemeral_routes
from myelin.clientapi import profile as profile_routes
from myelin.clientapi import pushrules as pushrule_routes
from myelin.clientapi import upgrade as upgrade_routes
from myelin.clientapi import userdirectory as directory_routes
from myelin.clientapi.router import Router
from myelin.ephemeral.service import Ephemeral
from myelin.storage import Database
from myelin.userapi.accountdata import AccountData
from myelin.userapi.accounts import UserAPI

if TYPE_CHECKING:
    from myelin.server.rooms import RoomComponents


async def install_user_data(
    router: Router, db: Database, rooms: RoomComponents, users: UserAPI
) -> Ephemeral:
    store = AccountData(db, rooms.notifier.wake)
    eph = await Ephemeral.open(db, rooms.notifier.wake, store)
    rooms.sync.contributor = eph
    rooms.sync.reads_ignored = True

    async def on_sync(user_id: str, state: str) -> None:
        # `set_presence=offline` means "do not mark me online", not "mark me offline".
        if state != "offline":
            await eph.set_presence(user_id, state, None, keep_msg=True)

    rooms.sync.presence_hook = on_sync
    account_data_routes.install(router, store)
    pushrule_routes.install(router, store, db, rooms.notifier)
    ephemeral_routes.install(router, eph)
    profile_routes.install(router, store, rooms, users)
    directory_routes.install(router, db)
    upgrader = upgrade_routes.install(
        router, rooms.roomserver, rooms.writer, rooms.directory, store
    )
    rooms.writer.on_joined = upgrader.on_joined
    admin_routes.install(router, users)
    return eph
