"""Third-party invites: is the `signed` block really from the identity server?

When an invite is made to an e-mail address or phone number, the inviter puts an
`m.room.third_party_invite` event in the room carrying the identity server's public keys.
When the address is later bound to a Matrix ID, the identity server signs
`{mxid, token}`; the member event that converts the invite carries that `signed` object,
and the rules accept it if any of its signatures verifies under any of those public keys
(server-server-api.md, "Verifying the invite").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from myelin.core.base64 import Base64Error, decode_base64, decode_urlsafe_base64
from myelin.core.signing import SignatureError, signature_blob, verify_signature

_ED25519_KEY_BYTES = 32


def public_keys(invite_content: Mapping[str, Any]) -> list[bytes]:
    """The Ed25519 keys of an `m.room.third_party_invite`: `public_key` and each
    `public_keys[].public_key`. Keys that are not Base64 of 32 bytes are skipped (they
    cannot verify anything); identity servers use either Base64 alphabet."""
    texts: list[Any] = [invite_content.get("public_key")]
    listed = invite_content.get("public_keys")
    if isinstance(listed, list):
        texts += [k.get("public_key") for k in listed if isinstance(k, dict)]
    keys: list[bytes] = []
    for text in texts:
        key = _decode_key(text)
        if key is not None and key not in keys:
            keys.append(key)
    return keys


def _decode_key(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    for decode in (decode_base64, decode_urlsafe_base64):
        try:
            raw = decode(text)
        except Base64Error:
            continue
        if len(raw) == _ED25519_KEY_BYTES:
            return raw
    return None


def _signatures(signed: Mapping[str, Any]) -> Iterator[Any]:
    by_server = signed.get("signatures")
    if not isinstance(by_server, dict):
        return
    for by_key in by_server.values():
        if not isinstance(by_key, dict):
            continue
        for key_id, signature in by_key.items():
            if isinstance(key_id, str) and key_id.startswith("ed25519:"):
                yield signature


def signed_by_any(signed: Mapping[str, Any], keys: list[bytes]) -> bool:
    """True if some Ed25519 signature in `signed.signatures` verifies under some key."""
    if not keys:
        return False
    try:
        blob = signature_blob(signed)
    except (TypeError, ValueError):  # not encodable as canonical JSON
        return False
    for signature in _signatures(signed):
        for key in keys:
            try:
                verify_signature(blob, signature, key)
            except SignatureError:
                continue
            return True
    return False
