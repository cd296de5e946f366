"""`KeyServer`: device keys, one-time and fallback keys, cross-signing keys and signatures.

Every method validates the whole request first and then writes in one transaction, so a
refused request changes nothing. Changes to a user's keys are appended to the device-list
stream (`e2e_device_list_stream`), which `/sync` and `/keys/changes` read; the users who
share a room with the changed user are woken through `wake`.

Devices themselves belong to the user API (`devices` table): keys of a device that no
longer exists are never served, and are dropped on the next upload of that user.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import orjson

from myelin.core.canonicaljson import encode_canonical_json
from myelin.keyserver import validate
from myelin.keyserver.backup import KeyBackup
from myelin.keyserver.errors import KeyServerError, bad_json, invalid_param, invalid_signature
from myelin.keyserver.inbox import send_to_device
from myelin.keyserver.streams import Streams, SyncPart, SyncPositions
from myelin.keyserver.validate import CROSS_SIGNING_USAGES
from myelin.storage import Database, Txn
from myelin.syncapi.queries import sharing_users
from myelin.syncapi.tokens import StreamToken

Wake = Callable[[Iterable[str]], None]

_KIND_BY_USAGE = {v: k for k, v in CROSS_SIGNING_USAGES.items()}


def _loads(text: str) -> Any:
    return orjson.loads(text)


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


async def _ask_remote(
    remote: Any, method: str, by_server: dict[str, dict[str, Any]], failures: dict[str, Any]
) -> list[dict[str, Any]]:
    """The answers of other servers to a keys query or claim (federation); a server
    that cannot answer is reported in `failures`, as the spec asks."""
    answers: list[dict[str, Any]] = []
    for server, wanted in by_server.items():
        if remote is None:
            failures[server] = {"errcode": "M_UNKNOWN", "error": "Federation is not available"}
            continue
        try:
            answer = await getattr(remote, method)(server, wanted)
        except Exception as exc:  # unreachable or refusing: that server's failure only
            failures[server] = {"errcode": "M_UNKNOWN", "error": str(exc)[:200]}
            continue
        if isinstance(answer, dict):
            answers.append(answer)
    return answers


class KeyServer:
    """The keys of this server's users. Open with `await KeyServer.open(db, server_name)`."""

    def __init__(self, db: Database, server_name: str, wake: Wake | None = None) -> None:
        self.db = db
        self.server_name = server_name
        self.wake: Wake = wake or (lambda users: None)
        self.streams = Streams(db)
        self.backup = KeyBackup(db)
        #: Keys of other servers' users (`myelin.federation.keys.RemoteKeys`), set while
        #: federation runs: `await remote.query(server, wanted)` and `.claim(...)` give
        #: the remote server's answer. None: remote users are reported as failures.
        self.remote: Any = None

    @classmethod
    async def open(cls, db: Database, server_name: str, wake: Wake | None = None) -> KeyServer:
        await db.migrate("keyserver", "myelin.keyserver.migrations")
        return cls(db, server_name, wake)

    # ------------------------------------------------------------------ streams

    async def send_to_device(
        self,
        sender: str,
        sender_device: str,
        event_type: str,
        txn_id: str,
        messages: Any,
    ) -> None:
        """PUT /sendToDevice: queue, idempotently per (device, txn_id), and wake targets.
        Messages for users of other servers go to `remote` (federation), if any."""
        users = await send_to_device(
            self.db, self.server_name, sender, sender_device, event_type, txn_id, messages
        )
        self.wake(users)
        if self.remote is not None and isinstance(messages, dict) and users is not None:
            others = {
                u: m
                for u, m in messages.items()
                if _server_of(u) != self.server_name and isinstance(m, dict)
            }
            if others:
                await self.remote.send_to_device(sender, sender_device, event_type, txn_id, others)

    async def sync_part(
        self,
        t: Txn,
        user_id: str,
        device_id: str,
        since: StreamToken | None,
        upto_room: int,
    ) -> SyncPart:
        """The key server's fields of a `/sync` response, read in the sync's snapshot.

        `since` is the request's token (None for an initial sync); the positions of the
        returned part are the extra parts of the response's `next_batch`.
        """
        positions = SyncPositions.from_others(since.others) if since is not None else None
        since_room = min(since.room, upto_room) if since is not None else 0
        return await self.streams.sync_part(t, user_id, device_id, positions, since_room, upto_room)

    async def before_sync(self, user_id: str, device_id: str, since: StreamToken) -> None:
        """A sync with `since` acknowledges the to-device messages up to it."""
        positions = SyncPositions.from_others(since.others)
        await self.streams.acknowledge_to_device(user_id, device_id, positions.to_device)

    async def changes(
        self, user_id: str, since: tuple[int, SyncPositions], upto: tuple[int, SyncPositions]
    ) -> tuple[list[str], list[str]]:
        """GET /keys/changes between two sync tokens: `(changed, left)`."""

        async def q(t: Txn) -> tuple[list[str], list[str]]:
            return await self.streams.device_list_changes(
                t, user_id, since[1].device_list, upto[1].device_list, since[0], upto[0]
            )

        return await self.db.read(q)

    # ------------------------------------------------------------------ devices

    async def device_list_changed(self, user_id: str) -> None:
        """A device of the user was added or renamed (its display name is served in
        `unsigned` by /keys/query): announce it to the users sharing a room with them, and
        to the user's own other devices. Meant as a hook of the account store."""
        await self.db.run(lambda t: self.streams.append_device_change(t, user_id))
        await self._wake_sharers(user_id)

    async def devices_removed(self, user_id: str) -> None:
        """Some of the user's devices were deleted: drop the keys and pending to-device
        messages of every device of theirs that no longer exists, and announce the change
        so that other users stop encrypting for those devices."""
        gone = "device_id NOT IN (SELECT device_id FROM devices WHERE user_id = ?)"

        async def txn(t: Txn) -> None:
            for table in (
                "e2e_device_keys",
                "e2e_one_time_keys",
                "e2e_fallback_keys",
                "e2e_to_device",
            ):
                await t.execute(
                    f"DELETE FROM {table} WHERE user_id = ? AND {gone}", user_id, user_id
                )
            # Announced even when the deleted devices had no keys: the device list changed,
            # and sharers that listed the devices (by /keys/query) should look again.
            await self.streams.append_device_change(t, user_id)

        await self.streams.key_write((user_id,), self.db.run(txn))
        await self._wake_sharers(user_id)

    # ------------------------------------------------------------------ upload

    async def upload(self, user_id: str, device_id: str, body: dict[str, Any]) -> dict[str, int]:
        """POST /keys/upload: returns the unclaimed one-time key counts per algorithm."""
        dev_keys = None
        if body.get("device_keys") is not None:
            dev_keys = validate.device_keys(body["device_keys"], user_id, device_id)
        otks = []
        if body.get("one_time_keys") is not None:
            otks = validate.uploaded_keys(body["one_time_keys"], "one_time_keys")
        fallbacks = []
        if body.get("fallback_keys") is not None:
            fallbacks = validate.uploaded_keys(body["fallback_keys"], "fallback_keys")
            if len({k.algorithm for k in fallbacks}) != len(fallbacks):
                raise invalid_param("fallback_keys holds more than one key per algorithm")

        async def txn(t: Txn) -> tuple[dict[str, int], bool]:
            changed = False
            if dev_keys is not None:
                text = encode_canonical_json(dev_keys).decode()
                old = await t.fetchval(
                    "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
                    user_id,
                    device_id,
                )
                if old != text:
                    await t.execute(
                        "INSERT INTO e2e_device_keys (user_id, device_id, key_json)"
                        " VALUES (?, ?, ?) ON CONFLICT (user_id, device_id)"
                        " DO UPDATE SET key_json = excluded.key_json",
                        user_id,
                        device_id,
                        text,
                    )
                    changed = True
            for key in otks:
                old = await t.fetchval(
                    "SELECT key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?"
                    " AND algorithm = ? AND key_id = ?",
                    user_id,
                    device_id,
                    key.algorithm,
                    key.key_id,
                )
                if old is None:
                    await t.execute(
                        "INSERT INTO e2e_one_time_keys"
                        " (user_id, device_id, algorithm, key_id, key_json) VALUES (?, ?, ?, ?, ?)",
                        user_id,
                        device_id,
                        key.algorithm,
                        key.key_id,
                        key.key_json,
                    )
                elif old != key.key_json:
                    raise invalid_param(
                        f"One-time key {key.algorithm}:{key.key_id} already exists"
                        " with a different value"
                    )
            for key in fallbacks:
                old_row = await t.fetchone(
                    "SELECT key_id, key_json FROM e2e_fallback_keys WHERE user_id = ?"
                    " AND device_id = ? AND algorithm = ?",
                    user_id,
                    device_id,
                    key.algorithm,
                )
                if old_row is not None and tuple(old_row) == (key.key_id, key.key_json):
                    continue  # the same key again keeps its used flag
                await t.execute(
                    "INSERT INTO e2e_fallback_keys"
                    " (user_id, device_id, algorithm, key_id, key_json, used)"
                    " VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (user_id, device_id, algorithm)"
                    " DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,"
                    " used = 0",
                    user_id,
                    device_id,
                    key.algorithm,
                    key.key_id,
                    key.key_json,
                )
            counts = await _otk_counts(t, user_id, device_id)
            if any(n > validate.MAX_ONE_TIME_KEYS for n in counts.values()):
                raise KeyServerError(
                    400,
                    "M_INVALID_PARAM",
                    f"A device may hold at most {validate.MAX_ONE_TIME_KEYS} unclaimed"
                    " one-time keys per algorithm",
                )
            if changed:
                await self.streams.append_device_change(t, user_id)
            return counts, changed

        counts, changed = await self.streams.key_write((user_id,), self.db.run(txn))
        if changed:
            await self._wake_sharers(user_id)
        counts.setdefault("signed_curve25519", 0)
        return counts

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        return await self.db.read(lambda t: _otk_counts(t, user_id, device_id))

    async def _wake_sharers(
        self, user_id: str, *, devices: bool = True, signing: bool = False
    ) -> None:
        """Wake the local users sharing a room with `user_id`; for a local user, tell the
        other servers sharing a room with them too: of their devices' keys
        (`m.device_list_update`) and/or of their master and self-signing keys
        (`m.signing_key_update`)."""
        users = await self.db.read(lambda t: sharing_users(t, user_id))
        self.wake(users | {user_id})
        if self.remote is not None and _server_of(user_id) == self.server_name:
            if devices:
                await self.remote.device_list_changed(user_id, users)
            if signing:
                await self.remote.signing_keys_changed(user_id, users)

    # ------------------------------------------------------------------ query

    async def query(self, requester: str, wanted: dict[str, list[str]]) -> dict[str, Any]:
        """POST /keys/query: the device and cross-signing keys of the wanted users."""
        failures: dict[str, Any] = {}
        local: dict[str, list[str]] = {}
        remote: dict[str, dict[str, list[str]]] = {}
        for user_id, devices in wanted.items():
            if _server_of(user_id) == self.server_name:
                local[user_id] = devices
            else:
                remote.setdefault(_server_of(user_id), {})[user_id] = devices
        answers = await _ask_remote(self.remote, "query", remote, failures)

        async def q(t: Txn) -> dict[str, Any]:
            device_keys: dict[str, Any] = {}
            masters: dict[str, Any] = {}
            self_signing: dict[str, Any] = {}
            user_signing: dict[str, Any] = {}
            for user_id, devices in local.items():
                rows = await t.fetchall(
                    "SELECT k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
                    " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
                    " WHERE k.user_id = ?",
                    user_id,
                )
                found: dict[str, Any] = {}
                for device_id, key_json, display_name in rows:
                    if devices and device_id not in devices:
                        continue
                    keys = _loads(key_json)
                    await _merge_signatures(t, keys, user_id, device_id, requester)
                    # keys.yaml: the uploaded object "with the addition of an `unsigned`
                    # property", so it is there even when the device has no display name.
                    keys["unsigned"] = (
                        {} if display_name is None else {"device_display_name": display_name}
                    )
                    found[device_id] = keys
                device_keys[user_id] = found
                for kind, out in (
                    ("master", masters),
                    ("self_signing", self_signing),
                    ("user_signing", user_signing),
                ):
                    if kind == "user_signing" and user_id != requester:
                        continue  # only its owner sees a user-signing key
                    row = await t.fetchone(
                        "SELECT public_key, key_json FROM e2e_cross_signing_keys"
                        " WHERE user_id = ? AND key_type = ?",
                        user_id,
                        kind,
                    )
                    if row is not None:
                        key = _loads(row[1])
                        await _merge_signatures(t, key, user_id, row[0], requester)
                        out[user_id] = key
            merged: list[tuple[str, dict[str, Any]]] = [
                ("device_keys", device_keys),
                ("master_keys", masters),
                ("self_signing_keys", self_signing),
            ]
            for answer in answers:
                for name, into in merged:
                    got = answer.get(name)
                    if isinstance(got, dict):
                        into.update(got)
            return {
                "failures": failures,
                "device_keys": device_keys,
                "master_keys": masters,
                "self_signing_keys": self_signing,
                "user_signing_keys": user_signing,
            }

        return await self.db.read(q)

    # ------------------------------------------------------------------ claim

    async def claim(self, wanted: dict[str, dict[str, str]]) -> dict[str, Any]:
        """POST /keys/claim: one unclaimed one-time key per device, else its fallback key.

        A one-time key is deleted in the transaction that hands it out, so it is given
        out at most once; a fallback key is only marked used.
        """
        failures: dict[str, Any] = {}
        local: list[tuple[str, str, str]] = []
        remote: dict[str, dict[str, Any]] = {}
        for user_id, devices in wanted.items():
            if _server_of(user_id) != self.server_name:
                remote.setdefault(_server_of(user_id), {})[user_id] = devices
                continue
            for device_id, algorithm in devices.items():
                local.append((user_id, device_id, algorithm))
        answers = await _ask_remote(self.remote, "claim", remote, failures)

        async def txn(t: Txn) -> dict[str, Any]:
            claimed: dict[str, Any] = {}
            for user_id, device_id, algorithm in local:
                if not await t.fetchval(
                    "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?",
                    user_id,
                    device_id,
                ):
                    continue  # a deleted device's keys are never handed out
                key = await _take_one_time_key(t, user_id, device_id, algorithm)
                if key is None:
                    row = await t.fetchone(
                        "SELECT key_id, key_json, used FROM e2e_fallback_keys WHERE user_id = ?"
                        " AND device_id = ? AND algorithm = ?",
                        user_id,
                        device_id,
                        algorithm,
                    )
                    if row is None:
                        continue
                    if not row[2]:
                        await t.execute(
                            "UPDATE e2e_fallback_keys SET used = 1 WHERE user_id = ?"
                            " AND device_id = ? AND algorithm = ?",
                            user_id,
                            device_id,
                            algorithm,
                        )
                    key = (str(row[0]), str(row[1]))
                claimed.setdefault(user_id, {})[device_id] = {
                    f"{algorithm}:{key[0]}": _loads(key[1])
                }
            return claimed

        # The claimed devices see their new key counts on their next sync; a long poll
        # is not woken for that alone.
        claimed = await self.streams.key_write({u for u, _, _ in local}, self.db.run(txn))
        for answer in answers:
            found = answer.get("one_time_keys")
            if isinstance(found, dict):
                claimed.update(found)
        return {"failures": failures, "one_time_keys": claimed}

    # ------------------------------------------------------------------ cross-signing

    async def cross_signing_unchanged(self, user_id: str, body: dict[str, Any]) -> bool:
        """Whether uploading `body` may skip user-interactive auth (cross_signing.yaml):
        there is no master key yet, or the request holds only the keys already stored."""

        async def q(t: Txn) -> bool:
            stored = {
                r[0]: _loads(r[1])
                for r in await t.fetchall(
                    "SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = ?",
                    user_id,
                )
            }
            if "master" not in stored:
                return True
            for kind, usage in CROSS_SIGNING_USAGES.items():
                value = body.get(kind)
                if value is None:
                    continue
                if not isinstance(value, dict) or usage not in stored:
                    return False
                strip = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
                have = {k: v for k, v in stored[usage].items() if k != "signatures"}
                if strip != have:
                    return False
            return True

        return await self.db.read(q)

    async def upload_cross_signing(self, user_id: str, body: dict[str, Any]) -> None:
        """POST /keys/device_signing/upload (after UIA): store the master, self-signing and
        user-signing keys; the latter two must be signed by the (new or stored) master key."""
        new: dict[str, tuple[str, dict[str, Any]]] = {}
        for kind, usage in CROSS_SIGNING_USAGES.items():
            if body.get(kind) is not None:
                new[usage] = validate.cross_signing_key(body[kind], user_id, kind)

        async def txn(t: Txn) -> None:
            master = new.get("master")
            if master is None:
                row = await t.fetchone(
                    "SELECT public_key, key_json FROM e2e_cross_signing_keys"
                    " WHERE user_id = ? AND key_type = 'master'",
                    user_id,
                )
                if row is None and new:
                    raise KeyServerError(400, "M_MISSING_PARAM", "No master key is available")
                master = (str(row[0]), _loads(row[1])) if row is not None else None
            for usage in ("self_signing", "user_signing"):
                if usage in new:
                    assert master is not None
                    public = master[0]
                    try:
                        validate.check_signed_by(
                            new[usage][1], user_id, f"ed25519:{public}", public
                        )
                    except KeyServerError as exc:
                        raise invalid_signature(
                            f"{_KIND_BY_USAGE[usage]} is not signed by the master key: {exc.error}"
                        ) from None
            for usage, (public, _) in new.items():
                clash = await t.fetchval(
                    "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", user_id, public
                )
                if clash is not None:
                    raise KeyServerError(
                        403, "M_FORBIDDEN", f"The {usage} public key is one of your device IDs"
                    )
            for usage, (public, key) in new.items():
                await t.execute(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, key_type) DO UPDATE SET"
                    " public_key = excluded.public_key, key_json = excluded.key_json",
                    user_id,
                    usage,
                    public,
                    encode_canonical_json(key).decode(),
                )
            if new:
                # A user-signing key alone is seen by its owner only (query hides it from
                # others), so only the owner's devices hear of it.
                await self.streams.append_device_change(
                    t, user_id, owner_only=set(new) == {"user_signing"}
                )

        await self.db.run(txn)
        if set(new) == {"user_signing"}:
            self.wake({user_id})
        elif new:
            # Other servers hold the master and self-signing keys, never the
            # user-signing key (only its owner may see it).
            await self._wake_sharers(user_id, devices=False, signing=True)

    async def upload_signatures(
        self, signer: str, body: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        """POST /keys/signatures/upload: check and store each signature by `signer`.

        The signer's own devices and master key may be signed by their self-signing key
        (or, for the master key, by one of their devices); other users' master keys by
        the signer's user-signing key. Each failure is reported per key; the rest stand.
        """

        async def txn(t: Txn) -> tuple[dict[str, dict[str, Any]], dict[str, set[bool]]]:
            failures: dict[str, dict[str, Any]] = {}
            # target user -> kinds of keys signed (True: a device, False: a
            # cross-signing key); other servers hear of them by different EDUs.
            changed: dict[str, set[bool]] = {}
            signer_keys = {
                r[0]: (str(r[1]), _loads(r[2]))
                for r in await t.fetchall(
                    "SELECT key_type, public_key, key_json FROM e2e_cross_signing_keys"
                    " WHERE user_id = ?",
                    signer,
                )
            }
            for target_user, by_key in body.items():
                if not isinstance(by_key, dict):
                    raise bad_json(f"{target_user} must map key IDs to signed objects")
                for key_id, signed in by_key.items():
                    try:
                        stored, is_device = await self._signature_target(
                            t, signer, signer_keys, target_user, key_id, signed
                        )
                    except KeyServerError as exc:
                        failures.setdefault(target_user, {})[key_id] = {
                            "errcode": exc.errcode,
                            "error": exc.error,
                        }
                        continue
                    for signer_key_id, signature in stored:
                        await t.execute(
                            "INSERT INTO e2e_signatures (target_user_id, target_key_id,"
                            " signer_user_id, signer_key_id, signature) VALUES (?, ?, ?, ?, ?)"
                            " ON CONFLICT (target_user_id, target_key_id, signer_user_id,"
                            " signer_key_id) DO UPDATE SET signature = excluded.signature",
                            target_user,
                            key_id,
                            signer,
                            signer_key_id,
                            signature,
                        )
                    changed.setdefault(target_user, set()).add(is_device)
            for user_id in changed:
                await self.streams.append_device_change(t, user_id)
            return failures, changed

        failures, changed = await self.db.run(txn)
        for user_id, kinds in changed.items():
            # A signature of another user's master key is served to the signer alone:
            # other servers have nothing new to hear of it.
            await self._wake_sharers(
                user_id, devices=True in kinds, signing=False in kinds and user_id == signer
            )
        return failures

    async def _signature_target(
        self,
        t: Txn,
        signer: str,
        signer_keys: dict[str, tuple[str, dict[str, Any]]],
        target_user: str,
        key_id: str,
        signed: Any,
    ) -> tuple[list[tuple[str, str]], bool]:
        """The verified (signer key ID, signature) pairs `signed` adds to a stored key,
        and whether that key is a device's (else a cross-signing key)."""
        if not isinstance(signed, dict):
            raise bad_json("A signed key must be an object")
        stored: dict[str, Any] | None = None
        row = await t.fetchone(
            "SELECT key_type, key_json FROM e2e_cross_signing_keys WHERE user_id = ?"
            " AND public_key = ?",
            target_user,
            key_id,
        )
        is_device = row is None
        if row is not None:
            stored = _loads(row[1])
        else:
            text = await t.fetchval(
                "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
                target_user,
                key_id,
            )
            if text is not None:
                stored = _loads(text)
        if stored is None:
            raise KeyServerError(404, "M_NOT_FOUND", f"No key {key_id} of {target_user}")
        strip = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
        have = {k: v for k, v in stored.items() if k not in ("signatures", "unsigned")}
        if strip != have:
            raise invalid_param("The signed object differs from the stored key")
        # Which of the signer's keys may sign this target.
        allowed: dict[str, str] = {}
        if target_user == signer:
            if "self_signing" in signer_keys:
                public = signer_keys["self_signing"][0]
                allowed[f"ed25519:{public}"] = public
            if not is_device:
                for r in await t.fetchall(
                    "SELECT device_id, key_json FROM e2e_device_keys WHERE user_id = ?", signer
                ):
                    ed = _loads(r[1]).get("keys", {}).get(f"ed25519:{r[0]}")
                    if isinstance(ed, str):
                        allowed[f"ed25519:{r[0]}"] = ed
        elif not is_device and "user_signing" in signer_keys:
            public = signer_keys["user_signing"][0]
            allowed[f"ed25519:{public}"] = public
        sigs = signed.get("signatures")
        by_signer = sigs.get(signer) if isinstance(sigs, dict) else None
        if not isinstance(by_signer, dict):
            raise invalid_signature(f"No signature by {signer}")
        out: list[tuple[str, str]] = []
        for signer_key_id, signature in by_signer.items():
            if signer_key_id not in allowed:
                continue
            validate.check_signed_by(signed, signer, signer_key_id, allowed[signer_key_id])
            out.append((signer_key_id, str(signature)))
        if not out:
            raise invalid_signature(f"No signature by a key of {signer} that may sign this key")
        return out, is_device


async def _otk_counts(t: Txn, user_id: str, device_id: str) -> dict[str, int]:
    rows = await t.fetchall(
        "SELECT algorithm, count(*) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?"
        " GROUP BY algorithm",
        user_id,
        device_id,
    )
    return {str(r[0]): int(r[1]) for r in rows}


async def _take_one_time_key(
    t: Txn, user_id: str, device_id: str, algorithm: str
) -> tuple[str, str] | None:
    """Remove and return one unclaimed key; a concurrent claim of the same row is retried."""
    for _ in range(16):
        row = await t.fetchone(
            "SELECT key_id, key_json FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?"
            " AND algorithm = ? ORDER BY key_id LIMIT 1",
            user_id,
            device_id,
            algorithm,
        )
        if row is None:
            return None
        deleted = await t.execute(
            "DELETE FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ? AND algorithm = ?"
            " AND key_id = ?",
            user_id,
            device_id,
            algorithm,
            row[0],
        )
        if deleted:
            return str(row[0]), str(row[1])
    return None


async def _merge_signatures(
    t: Txn, key: dict[str, Any], user_id: str, key_id: str, requester: str
) -> None:
    """Add stored signatures to a served key: the owner's own, and the requester's."""
    rows = await t.fetchall(
        "SELECT signer_user_id, signer_key_id, signature FROM e2e_signatures"
        " WHERE target_user_id = ? AND target_key_id = ? AND signer_user_id = ANY(?)",
        user_id,
        key_id,
        sorted({user_id, requester}),
    )
    if not rows:
        return
    sigs = key.setdefault("signatures", {})
    for signer, signer_key_id, signature in rows:
        sigs.setdefault(signer, {})[signer_key_id] = signature
