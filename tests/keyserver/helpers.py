"""Building signed key payloads the way clients do (device keys, one-time keys,
cross-signing keys), with the project's own Ed25519 signing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from myelin.core.signing import SigningKey, sign_json
from tests.support.client import SpecClient

V3 = "/_matrix/client/v3"


@dataclass
class Device:
    """A registered user's device, with the Ed25519 key it signs its keys with."""

    user_id: str
    device_id: str
    token: str
    key: SigningKey

    def device_keys(self) -> dict[str, Any]:
        obj = {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{self.device_id}": "Y3VydmUyNTUxOSBrZXkgb2YgdGhpcyBkZXZpY2UhISE",
                f"ed25519:{self.device_id}": self.key.verify_key_base64,
            },
        }
        return sign_json(obj, self.user_id, self.key)

    def one_time_keys(self, start: int, count: int) -> dict[str, Any]:
        return {
            f"signed_curve25519:K{i:05d}": sign_json(
                {"key": f"otk{i:05d}of{self.device_id}"}, self.user_id, self.key
            )
            for i in range(start, start + count)
        }

    def fallback_key(self, name: str) -> dict[str, Any]:
        return {
            f"signed_curve25519:{name}": sign_json(
                {"key": f"fallback-{name}", "fallback": True}, self.user_id, self.key
            )
        }


async def register(client: SpecClient, name: str) -> Device:
    body = await client.register(name)
    device_id = body["device_id"]
    return Device(body["user_id"], device_id, body["access_token"], SigningKey.generate(device_id))


async def login(client: SpecClient, user: Device, password: str = "secret-pw") -> Device:
    status, body = await client.call(
        "POST",
        f"{V3}/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.user_id},
            "password": password,
        },
    )
    assert status == 200, body
    device_id = body["device_id"]
    return Device(user.user_id, device_id, body["access_token"], SigningKey.generate(device_id))


def cross_signing_key(
    user_id: str, usage: str, key: SigningKey, signer: SigningKey | None
) -> dict[str, Any]:
    """A cross-signing key object; self-signing and user-signing keys are signed by the
    master key `signer` (key ID `ed25519:<its public key>`)."""
    public = key.verify_key_base64
    obj: dict[str, Any] = {
        "user_id": user_id,
        "usage": [usage],
        "keys": {f"ed25519:{public}": public},
    }
    if signer is not None:
        obj = sign_as(obj, user_id, signer, f"ed25519:{signer.verify_key_base64}")
    return obj


def sign_as(obj: dict[str, Any], user_id: str, key: SigningKey, key_id: str) -> dict[str, Any]:
    """`obj` with a signature by `key` under an arbitrary key ID (e.g. a public key)."""
    from myelin.core.base64 import encode_base64
    from myelin.core.signing import signature_blob

    signed = dict(obj)
    sigs = {u: dict(v) for u, v in obj.get("signatures", {}).items()}
    sigs.setdefault(user_id, {})[key_id] = encode_base64(key.sign(signature_blob(obj)))
    signed["signatures"] = sigs
    return signed
