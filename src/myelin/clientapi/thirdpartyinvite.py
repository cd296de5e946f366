"""Third-party invites: inviting an e-mail address, and turning such an invite into a
Matrix invite once the address is bound.

Spec: client-server-api "Third-party invites" (POST /rooms/{roomId}/invite with
`id_server`, createRoom `invite_3pid`, join with `third_party_signed`), server-server-api
"Third-party invites" (`/3pid/onbind`, `/exchange_third_party_invite`),
identity-service-api "Invitation storage".

1. The inviter's server looks the address up on the identity server. Bound: an ordinary
   invite of that Matrix ID. Unbound: the identity server stores the invite and answers
   with a token, a display name and its public keys, which go into an
   `m.room.third_party_invite` state event (state key: the token).
2. When the address is bound, the identity server posts the signed `{mxid, token}` to the
   invitee's server (`onbind`). The invite event built from it has the original inviter
   as sender, so it is authorised and signed by the inviter's server: this server when
   the inviter is local, else through that server's `exchange_third_party_invite`.
3. Before sending it, the inviter's server checks the signature against the keys in the
   room's `m.room.third_party_invite` and asks the identity server whether the key that
   verified it is still valid (`key_validity_url`), so a revoked key invites nobody.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

from myelin.clientapi.http import MatrixError, bad_json, forbidden, opt_str, req_str
from myelin.clientapi.identity import IdentityClient, check_id_server
from myelin.clientapi.room_events import RoomWriter
from myelin.core.auth import get_named_level, get_power_level, is_valid_user_id
from myelin.core.auth.thirdparty import public_keys, signed_by_any
from myelin.federation.client import FederationError
from myelin.roomserver.roomserver import Roomserver
from myelin.roomserver.types import UnknownRoomError

log = logging.getLogger("myelin.clientapi.thirdpartyinvite")

THIRD_PARTY_INVITE = "m.room.third_party_invite"
#: Invites waiting to be exchanged through other servers; beyond, onbind waits for them.
MAX_QUEUED = 1000
EXCHANGE_PATH = "/_matrix/federation/v1/exchange_third_party_invite/"
#: (state event type, content field, store-invite parameter)
_ROOM_INFO = (
    ("m.room.name", "name", "room_name"),
    ("m.room.join_rules", "join_rule", "room_join_rules"),
    ("m.room.canonical_alias", "alias", "room_alias"),
    ("m.room.avatar", "url", "room_avatar_url"),
)


def _server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def check_invite_3pid(value: Any) -> list[dict[str, str]]:
    """The `invite_3pid` of createRoom, checked before the room exists (M_BAD_JSON)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_json("invite_3pid must be a list")
    out: list[dict[str, str]] = []
    for item in value:
        if not isinstance(item, dict):
            raise bad_json("invite_3pid entries must be objects")
        entry = {k: req_str(item, k) for k in ("id_server", "medium", "address")}
        token = opt_str(item, "id_access_token")
        if token is not None:
            entry["id_access_token"] = token
        check_id_server(entry["id_server"])
        out.append(entry)
    return out


class ThirdPartyInvites:
    """Third-party invites of one server (client API side and federation side)."""

    def __init__(
        self, server_name: str, rs: Roomserver, writer: RoomWriter, identity: IdentityClient
    ) -> None:
        self.server_name = server_name
        self.rs = rs
        self.writer = writer
        self.identity = identity
        #: Invites to exchange through other servers, sent by `run` (see `on_bind`).
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(MAX_QUEUED)

    async def run(self) -> None:
        """Exchange queued invites through their inviters' servers, one at a time, for
        as long as the server runs (a task of `myelin.tasks.running`)."""
        while True:
            room_id, event = await self._outbox.get()
            try:
                await self._exchange_remotely(room_id, event)
            except (MatrixError, FederationError) as exc:
                log.info("third-party invite to %s not exchanged: %s", room_id, exc)

    # -- the inviter's side --------------------------------------------------------------

    async def invite(self, room_id: str, sender: str, body: dict[str, Any]) -> str | None:
        """Invite a 3PID: the Matrix ID bound to it (the caller invites that user), or
        None once the `m.room.third_party_invite` is in the room."""
        id_server = check_id_server(req_str(body, "id_server"))
        medium = req_str(body, "medium")
        address = req_str(body, "address")
        token = opt_str(body, "id_access_token")
        if token is None:  # the v1 identity API (no token) is gone from the spec
            raise MatrixError(400, "M_MISSING_PARAM", "Missing 'id_access_token'")
        mxid = await self.identity.lookup(id_server, token, medium, address)
        if mxid is not None:
            if not is_valid_user_id(mxid):
                raise MatrixError(502, "M_UNKNOWN", "The identity server returned a bad user ID")
            return mxid
        await self._require_member(room_id, sender)
        params: dict[str, Any] = {
            "medium": medium,
            "address": address,
            "room_id": room_id,
            "sender": sender,
        }
        params.update(await self._room_info(room_id, sender))
        stored = await self.identity.store_invite(id_server, token, params)
        await self.writer.send(
            room_id,
            sender,
            THIRD_PARTY_INVITE,
            self._invite_content(stored, id_server, address),
            state_key=self._token(stored),
        )
        return None

    async def _require_member(self, room_id: str, sender: str) -> None:
        """403 before anything is stored at the identity server for a sender the auth
        rules would refuse: not joined, or below the invite level."""
        key = ("m.room.member", sender)
        keys = [key, ("m.room.create", ""), ("m.room.power_levels", "")]
        try:
            state = await self.rs.current_state_events(room_id, keys)
        except UnknownRoomError:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id[:100]}") from None
        member = state.get(key)
        if member is None or member.content.get("membership") != "join":
            raise forbidden(f"User {sender} is not joined to room {room_id}")
        if get_power_level(sender, state) < get_named_level("invite", state):
            raise forbidden(f"User {sender} may not invite to room {room_id}")

    async def _room_info(self, room_id: str, sender: str) -> dict[str, str]:
        """What identity-service-api's store-invite may show the invitee."""
        keys = [(t, "") for t, _, _ in _ROOM_INFO]
        state = await self.rs.current_state_events(room_id, keys)
        out: dict[str, str] = {}
        for event_type, field, name in _ROOM_INFO:
            event = state.get((event_type, ""))
            value = event.content.get(field) if event is not None else None
            if isinstance(value, str):
                out[name] = value
        profile = await self.writer.profile_of(sender)
        if "displayname" in profile:
            out["sender_display_name"] = profile["displayname"]
        if "avatar_url" in profile:
            out["sender_avatar_url"] = profile["avatar_url"]
        return out

    @staticmethod
    def _token(stored: Any) -> str:
        token = stored.get("token") if isinstance(stored, dict) else None
        if not isinstance(token, str) or not token:
            raise MatrixError(502, "M_UNKNOWN", "The identity server returned no invite token")
        return token

    @staticmethod
    def _invite_content(stored: Any, id_server: str, address: str) -> dict[str, Any]:
        """The `m.room.third_party_invite` content from a store-invite answer."""
        keys: list[dict[str, str]] = []
        for entry in stored.get("public_keys") or []:
            if isinstance(entry, dict) and isinstance(entry.get("public_key"), str):
                item = {"public_key": entry["public_key"]}
                if isinstance(entry.get("key_validity_url"), str):
                    item["key_validity_url"] = entry["key_validity_url"]
                keys.append(item)
        single = stored.get("public_key")
        if not keys and isinstance(single, str):
            keys.append({"public_key": single})
        if not keys:
            raise MatrixError(502, "M_UNKNOWN", "The identity server returned no public key")
        default_url = f"https://{id_server}/_matrix/identity/v2/pubkey/isvalid"
        name = stored.get("display_name")
        if not isinstance(name, str) or not name:
            name = address.split("@", 1)[0] + "@..." if "@" in address else "..."
        return {
            "display_name": name,
            "public_key": single if isinstance(single, str) else keys[0]["public_key"],
            "key_validity_url": keys[0].get("key_validity_url", default_url),
            "public_keys": keys,
        }

    # -- turning a third-party invite into an invite -------------------------------------

    async def exchange(self, room_id: str, event: Any, origin: str | None = None) -> None:
        """Authorise and send the invite a `signed` block stands for: the partial event of
        `exchange_third_party_invite` (or one built here from onbind or a join). The
        sender must be a local user, who sent the room's third-party invite."""
        if not isinstance(event, dict):
            raise bad_json("Expected an event object")
        if event.get("type") != "m.room.member" or event.get("room_id", room_id) != room_id:
            raise bad_json("Expected an m.room.member event of this room")
        sender, target = event.get("sender"), event.get("state_key")
        if not isinstance(sender, str) or not isinstance(target, str):
            raise bad_json("sender and state_key must be user IDs")
        if not is_valid_user_id(target) or _server_of(sender) != self.server_name:
            raise forbidden("The inviter is not a user of this server")
        content = event.get("content")
        if not isinstance(content, dict):
            raise bad_json("content must be an object")
        third = content.get("third_party_invite")
        signed = third.get("signed") if isinstance(third, dict) else None
        if not isinstance(signed, dict) or content.get("membership") != "invite":
            raise bad_json("content needs membership invite and third_party_invite.signed")
        if signed.get("mxid") != target or not isinstance(signed.get("token"), str):
            raise forbidden("signed does not name the invited user and a token")
        key = (THIRD_PARTY_INVITE, signed["token"])
        try:
            state = await self.rs.current_state_events(room_id, [key])
        except UnknownRoomError:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id[:100]}") from None
        invite = state.get(key)
        if invite is None or invite.sender != sender:
            raise forbidden("No such third-party invite from this sender in the room")
        await self._check_signed(invite.content, signed)
        display_name = invite.content.get("display_name")
        new_content = {
            "membership": "invite",
            "third_party_invite": {
                "display_name": display_name if isinstance(display_name, str) else "",
                "signed": signed,
            },
        }
        remote = self.writer.remote
        countersign = None
        if remote is not None:
            countersign = await remote.invite_signer(room_id, target)
        await self.writer.send(
            room_id,
            sender,
            "m.room.member",
            new_content,
            state_key=target,
            require_joined=False,
            countersign=countersign,
        )

    async def _check_signed(self, invite_content: Any, signed: dict[str, Any]) -> None:
        """403 unless a signature in `signed` verifies under one of the invite's keys and
        that key is still valid at its identity server."""
        entries: list[tuple[Any, Any]] = []
        listed = invite_content.get("public_keys")
        if isinstance(listed, list):
            entries += [
                (k.get("public_key"), k.get("key_validity_url"))
                for k in listed
                if isinstance(k, dict)
            ]
        entries.append((invite_content.get("public_key"), invite_content.get("key_validity_url")))
        for text, url in entries:
            keys = public_keys({"public_key": text})
            if not keys or not signed_by_any(signed, keys):
                continue
            if not isinstance(url, str) or await self.identity.key_is_valid(url, str(text)):
                return
        raise forbidden("The third-party invite's signature is not valid (or was revoked)")

    async def on_bind(self, body: Any) -> None:
        """`/3pid/onbind` from an identity server: each pending invite of the bound local
        user becomes an invite, through the inviter's server. One bad invite does not
        stop the others; the first failure is the answer (as the reference server does),
        so the identity server learns that an invite was refused."""
        invites = body.get("invites") if isinstance(body, dict) else None
        if not isinstance(invites, list):
            raise bad_json("invites must be a list")
        failure: MatrixError | None = None
        for invite in invites:
            try:
                await self._deliver(invite)
            except MatrixError as exc:
                log.info("third-party invite not delivered: %s", exc)
                failure = failure or exc
            except FederationError as exc:
                log.info("third-party invite not exchanged: %s", exc)
                status = exc.status if 400 <= exc.status < 500 else 502
                failure = failure or MatrixError(
                    status, exc.errcode or "M_UNKNOWN", f"The inviter's server refused: {exc}"
                )
        if failure is not None:
            raise failure

    async def _deliver(self, invite: Any) -> None:
        if not isinstance(invite, dict):
            return
        mxid, room_id, sender = invite.get("mxid"), invite.get("room_id"), invite.get("sender")
        signed = invite.get("signed")
        if not (isinstance(mxid, str) and isinstance(room_id, str) and isinstance(sender, str)):
            return
        if _server_of(mxid) != self.server_name or not isinstance(signed, dict):
            return
        name = invite.get("display_name")
        event = {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": sender,
            "state_key": mxid,
            "content": {
                "membership": "invite",
                "third_party_invite": {
                    "display_name": name if isinstance(name, str) else "",
                    "signed": signed,
                },
            },
        }
        if _server_of(sender) == self.server_name:
            await self.exchange(room_id, event)
            return
        remote = self.writer.remote
        if remote is not None and not await remote.needs_remote_join(room_id):
            # This server is in the room, so the invite reaches it (and its users) through
            # the room's federation like any event: sent from the queue, the identity
            # server is not kept waiting on two more servers, as with a server that
            # sends such an invite itself.
            try:
                self._outbox.put_nowait((room_id, event))
                return
            except asyncio.QueueFull:
                pass
        # Not in the room: the inviter's server's answer is the only news of the invite.
        await self._exchange_remotely(room_id, event)

    async def _exchange_remotely(self, room_id: str, event: dict[str, Any]) -> None:
        remote = self.writer.remote
        if remote is None:
            raise MatrixError(502, "M_UNKNOWN", "Federation is not running")
        await remote.client.request(
            "PUT",
            _server_of(str(event["sender"])),
            EXCHANGE_PATH + quote(room_id, safe=""),
            body=event,
        )

    async def join_signed(self, room_id: str, user_id: str, signed: Any) -> None:
        """A join with `third_party_signed`: first the invite it proves (sent by the
        third-party invite's sender, a user of this server), then the caller joins."""
        if not isinstance(signed, dict):
            raise bad_json("third_party_signed must be an object")
        sender = signed.get("sender")
        if signed.get("mxid") != user_id or not isinstance(sender, str):
            raise forbidden("third_party_signed is not for this user")
        await self.exchange(
            room_id,
            {
                "type": "m.room.member",
                "room_id": room_id,
                "sender": sender,
                "state_key": user_id,
                "content": {
                    "membership": "invite",
                    "third_party_invite": {"display_name": "", "signed": signed},
                },
            },
        )
