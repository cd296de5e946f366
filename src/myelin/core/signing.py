"""Ed25519 signing keys and signed JSON (appendices.md, "Signing JSON").

A server signs the canonical JSON of an object without its `signatures` and `unsigned`
members and files the signature under `signatures[server][key_id]`; that way any server can
add its own signature, and anyone can add `unsigned` data in transit, without invalidating
the others. Keys are named `ed25519:<version>`; on disk a private key is the single line
`ed25519 <version> <unpadded base64 seed>`, and public keys travel as unpadded Base64.

Key generation draws from the operating system's randomness (through PyNaCl); everything
else is a pure function of its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from myelin.core.base64 import Base64Error, decode_base64, encode_base64
from myelin.core.canonicaljson import encode_canonical_json

__all__ = [
    "ED25519",
    "KeyFormatError",
    "SignatureError",
    "SigningKey",
    "decode_signing_key",
    "decode_signing_keys",
    "decode_verify_key",
    "encode_verify_key",
    "sign_json",
    "signature_blob",
    "verify_json",
    "verify_signature",
    "verify_signed_by",
]

ED25519 = "ed25519"
"""The only signing algorithm Matrix servers use."""

_VERSION = re.compile(r"[a-zA-Z0-9_]+")
"""Key versions (server-server keys.yaml): characters matching `[a-zA-Z0-9_]`."""

_SEED_BYTES = 32
_VERIFY_KEY_BYTES = 32
_SIGNATURE_BYTES = 64


class KeyFormatError(ValueError):
    """A key, key ID or key file that is not in the expected form."""


class SignatureError(ValueError):
    """A signature that is missing, malformed or does not verify."""


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise KeyFormatError(f"key version must match [a-zA-Z0-9_]+, got {version!r}")
    return version


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A server's Ed25519 private key with its version (the key ID is `ed25519:<version>`)."""

    version: str
    key: nacl.signing.SigningKey

    def __post_init__(self) -> None:
        _check_version(self.version)

    @classmethod
    def generate(cls, version: str) -> SigningKey:
        """A fresh random key (OS randomness)."""
        return cls(_check_version(version), nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes, version: str) -> SigningKey:
        """The key with the given 32-byte seed: the same seed always gives the same key."""
        if not isinstance(seed, bytes) or len(seed) != _SEED_BYTES:
            raise KeyFormatError("an Ed25519 seed is exactly 32 bytes")
        return cls(_check_version(version), nacl.signing.SigningKey(seed))

    @property
    def key_id(self) -> str:
        return f"{ED25519}:{self.version}"

    @property
    def seed(self) -> bytes:
        return bytes(self.key)

    @property
    def verify_key(self) -> bytes:
        """The raw 32-byte public key."""
        return bytes(self.key.verify_key)

    @property
    def verify_key_base64(self) -> str:
        """The public key as published in `/_matrix/key/v2/server`."""
        return encode_base64(self.verify_key)

    def sign(self, message: bytes) -> bytes:
        """The detached 64-byte signature of `message`."""
        return self.key.sign(message).signature

    def encode(self) -> str:
        """The key-file line `ed25519 <version> <base64 seed>` (no trailing newline)."""
        return f"{ED25519} {self.version} {encode_base64(self.seed)}"

    def __repr__(self) -> str:
        # Never show the seed.
        return f"<SigningKey {self.key_id} {self.verify_key_base64}>"


def decode_signing_key(line: str) -> SigningKey:
    """Parse one `ed25519 <version> <base64 seed>` line. Raises KeyFormatError."""
    if not isinstance(line, str):
        raise KeyFormatError("a signing key line must be a string")
    parts = line.split()
    if len(parts) != 3:
        raise KeyFormatError("a signing key line is `ed25519 <version> <base64 seed>`")
    algorithm, version, seed_b64 = parts
    if algorithm != ED25519:
        raise KeyFormatError(f"unsupported signing algorithm {algorithm!r}")
    try:
        seed = decode_base64(seed_b64)
    except Base64Error as e:
        raise KeyFormatError(f"signing key seed: {e}") from None
    return SigningKey.from_seed(seed, version)


def decode_signing_keys(text: str) -> list[SigningKey]:
    """Parse a key file: one key per non-blank line."""
    return [decode_signing_key(line) for line in text.splitlines() if line.strip()]


def encode_verify_key(key: bytes) -> str:
    return encode_base64(key)


def decode_verify_key(text: str) -> bytes:
    """Decode a published Ed25519 public key. Raises KeyFormatError."""
    try:
        raw = decode_base64(text)
    except Base64Error as e:
        raise KeyFormatError(f"verify key: {e}") from None
    if len(raw) != _VERIFY_KEY_BYTES:
        raise KeyFormatError(f"an Ed25519 verify key is 32 bytes, got {len(raw)}")
    return raw


def signature_blob(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: canonical JSON without `signatures` and `unsigned`."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"only JSON objects are signed, not {type(obj).__name__}")
    if "signatures" in obj or "unsigned" in obj:
        obj = {k: v for k, v in obj.items() if k != "signatures" and k != "unsigned"}
    return encode_canonical_json(obj)


def _copy_signatures(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A two-level copy of `signatures`, so adding one never mutates the caller's object."""
    existing = obj.get("signatures", {})
    if not isinstance(existing, Mapping):
        raise SignatureError("`signatures` must be an object")
    copied: dict[str, dict[str, Any]] = {}
    for server, by_key in existing.items():
        if not isinstance(by_key, Mapping):
            raise SignatureError(f"`signatures[{server!r}]` must be an object")
        copied[server] = dict(by_key)
    return copied


def sign_json(obj: Mapping[str, Any], server_name: str, key: SigningKey) -> dict[str, Any]:
    """A new dict: `obj` with `key`'s signature added under `signatures[server_name]`.

    Signatures already present (of other servers or other keys) are kept; one by the same
    key is replaced. `unsigned` is carried over but not covered.
    """
    signatures = _copy_signatures(obj)
    signature = encode_base64(key.sign(signature_blob(obj)))
    signatures.setdefault(server_name, {})[key.key_id] = signature
    signed = dict(obj)
    signed["signatures"] = signatures
    return signed


def verify_signature(blob: bytes, signature_b64: Any, verify_key: bytes) -> None:
    """Check one Base64 signature over `blob`. Raises SignatureError."""
    if not isinstance(signature_b64, str):
        raise SignatureError("a signature must be a Base64 string")
    try:
        signature = decode_base64(signature_b64)
    except Base64Error as e:
        raise SignatureError(f"signature is not Base64: {e}") from None
    if len(signature) != _SIGNATURE_BYTES:
        raise SignatureError(f"an Ed25519 signature is 64 bytes, got {len(signature)}")
    if not isinstance(verify_key, bytes) or len(verify_key) != _VERIFY_KEY_BYTES:
        raise SignatureError("an Ed25519 verify key is 32 bytes")
    try:
        nacl.signing.VerifyKey(verify_key).verify(blob, signature)
    except nacl.exceptions.BadSignatureError:
        raise SignatureError("signature does not verify") from None


def _signatures_of(obj: Mapping[str, Any], server_name: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise SignatureError("only JSON objects carry signatures")
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        raise SignatureError("object has no `signatures`")
    by_key = signatures.get(server_name)
    if not isinstance(by_key, Mapping):
        raise SignatureError(f"not signed by {server_name}")
    return by_key


def verify_json(obj: Mapping[str, Any], server_name: str, key_id: str, verify_key: bytes) -> None:
    """Check that `obj` carries a valid signature by `server_name` with `key_id`.

    Other signatures on the object (other servers, other keys) are ignored. Raises
    SignatureError naming what is wrong.
    """
    by_key = _signatures_of(obj, server_name)
    if key_id not in by_key:
        raise SignatureError(f"no signature by {server_name} with key {key_id}")
    verify_signature(signature_blob(obj), by_key[key_id], verify_key)


def verify_signed_by(
    obj: Mapping[str, Any],
    server_name: str,
    verify_keys: Mapping[str, bytes],
    *,
    blob: bytes | None = None,
) -> None:
    """Check `server_name`'s signatures as in appendices.md, "Checking for a Signature".

    `verify_keys` maps the key IDs whose keys are known (and valid) to raw public keys.
    Signatures with other algorithms or unknown keys are skipped; at least one known
    key must have signed, and every known key that signed must verify. `blob` may pass the
    precomputed `signature_blob(obj)` to avoid encoding twice. Raises SignatureError.
    """
    by_key = _signatures_of(obj, server_name)
    checked = 0
    for key_id, signature in by_key.items():
        if not isinstance(key_id, str) or not key_id.startswith(ED25519 + ":"):
            continue
        if key_id not in verify_keys:
            continue
        if blob is None:
            blob = signature_blob(obj)
        try:
            verify_signature(blob, signature, verify_keys[key_id])
        except SignatureError as e:
            raise SignatureError(f"{server_name} {key_id}: {e}") from None
        checked += 1
    if checked == 0:
        raise SignatureError(f"no signature by {server_name} with a known key")
