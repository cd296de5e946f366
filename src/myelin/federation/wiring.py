"""Wiring of federation into the process: client, keyring, receiver routes, remote room
operations for the client API, and the sender, for as long as the block lasts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from myelin.clientapi import guests
from myelin.clientapi.router import Router
from myelin.core.events import Event
from myelin.core.signing import SigningKey
from myelin.ephemeral.service import Ephemeral
from myelin.federation.client import FederationClient
from myelin.federation.edus import EduIn, EduOut
from myelin.federation.inbound import Inbound
from myelin.federation.keyring import Keyring
from myelin.federation.keys import KeyEdus, KeyQueries, RemoteKeys
from myelin.federation.receiver.routes import Receiver, ReceiverHooks
from myelin.federation.remote import RemoteRooms
from myelin.federation.sender.reader import FederationSender, running_federation_sender
from myelin.keyserver import KeyServer
from myelin.server.rooms import RoomComponents
from myelin.storage import Database
from myelin.syncapi import visibility
from myelin.tasks import running
from myelin.userapi.accounts import UserAPI


@dataclass
class Federation:
    client: FederationClient
    keyring: Keyring
    receiver: Receiver
    remote: RemoteRooms
    sender: FederationSender
    hooks: ReceiverHooks


@asynccontextmanager
async def running_federation(
    server_name: str,
    key: SigningKey,
    db: Database,
    rooms: RoomComponents,
    users: UserAPI,
    router: Router,
    keys: KeyServer | None = None,
    eph: Ephemeral | None = None,
) -> AsyncIterator[Federation]:
    client = FederationClient(server_name, key)
    keyring = Keyring(server_name, key, client.get_server_keys)
    inbound = Inbound(rooms.roomserver, keyring, client, server_name)

    async def profile(user_id: str) -> dict[str, str] | None:
        if await users.account(user_id) is None:
            return None
        return await rooms.writer.profile_of(user_id)

    async def erased_senders(user_ids: set[str]) -> frozenset[str]:
        return await users.db.read(lambda t: visibility.erased_senders(t, user_ids))

    async def on_accepted(event: Event) -> None:
        if guests.revokes_guest_access(event):
            await guests.evict_guests(rooms.sync, users, rooms.writer, event.room_id, server_name)

    hooks = ReceiverHooks(
        resolve_alias=rooms.directory.resolve,
        profile=profile,
        public_rooms=rooms.directory.public_rooms,
        on_accepted=on_accepted,
        erased_senders=erased_senders,
    )
    receiver = Receiver(server_name, key, rooms.roomserver, keyring, inbound, hooks)
    receiver.install(router)
    remote = RemoteRooms(
        server_name, key, rooms.roomserver, client, inbound, rooms.notifier.wait_for_position
    )
    rooms.writer.remote = remote
    rooms.sync.backfill = remote.backfill
    hooks.on_invite = remote.receive_invite
    if rooms.third_party is not None:
        hooks.third_party_onbind = rooms.third_party.on_bind
        hooks.exchange_third_party_invite = rooms.third_party.exchange
    if keys is not None:
        queries = KeyQueries(keys, server_name)
        hooks.user_keys_query = queries.query
        hooks.user_keys_claim = queries.claim
        hooks.user_devices = queries.devices
        hooks.edus.update(KeyEdus(keys).handlers())
    if eph is not None:
        hooks.edus.update(EduIn(eph).handlers())
    try:
        async with running_federation_sender(
            db, rooms.log, rooms.notifier, rooms.roomserver, client, server_name
        ) as sender:
            jobs: list[tuple[Coroutine[Any, Any, None], str]] = []
            if keys is not None:
                keys.remote = remote_keys = RemoteKeys(client, sender, keys)
                sender.on_join.append(remote_keys.on_join)
                sender.on_leave.append(remote_keys.on_leave)
                jobs.append((remote_keys.run(), "federation-device-lists"))
            if eph is not None:
                eph.outbound = EduOut(sender, server_name, eph)
                sender.on_join.append(eph.outbound.on_join)
            async with running(jobs):
                yield Federation(client, keyring, receiver, remote, sender, hooks)
    finally:
        rooms.writer.remote = None
        rooms.sync.backfill = None
        if keys is not None:
            keys.remote = None
        if eph is not None:
            eph.outbound = None
        await client.close()
