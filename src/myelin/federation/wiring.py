"""Wiring of federation into the process: client, keyring, receiver routes, remote room
operations for the client API, and the sender, for as long as the block lasts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from myelin.clientapi.router import Router
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

    hooks = ReceiverHooks(
        resolve_alias=rooms.directory.resolve,
        profile=profile,
        public_rooms=rooms.directory.public_rooms,
    )
    receiver = Receiver(server_name, key, rooms.roomserver, keyring, inbound, hooks)
    receiver.install(router)
    remote = RemoteRooms(
        server_name, key, rooms.roomserver, client, inbound, rooms.notifier.wait_for_position
    )
    rooms.writer.remote = remote
    hooks.on_invite = remote.receive_invite
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
            if keys is not None:
                keys.remote = RemoteKeys(client, sender, keys)
                sender.on_join.append(keys.remote.on_join)
            if eph is not None:
                eph.outbound = EduOut(sender, server_name, eph)
                sender.on_join.append(eph.outbound.on_join)
            yield Federation(client, keyring, receiver, remote, sender, hooks)
    finally:
        rooms.writer.remote = None
        if keys is not None:
            keys.remote = None
        if eph is not None:
            eph.outbound = None
        await client.close()
