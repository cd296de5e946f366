"""Shape and signature checks of uploaded keys, done before anything is stored.

Pure functions: plain JSON in, a checked value (or a `KeyServerError`) out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from myelin.core.canonicaljson import encode_canonical_json
from myelin.core.signing import (
    ED25519,
    KeyFormatError,
    SignatureError,
    decode_verify_key,
    signature_blob,
    verify_signature,
)
from myelin.keyserver.errors import KeyServerError, bad_json, invalid_param, invalid_signature

#: A single key object (device keys, one-time key, cross-signing key) may not exceed this.
MAX_KEY_JSON_BYTES = 8192
#: Unclaimed one-time keys a device may hold per algorithm; more is refused, not dropped.
MAX_ONE_TIME_KEYS = 1000
MAX_ID_LENGTH = 255

CROSS_SIGNING_USAGES = {
    "master_key": "master",
    "self_signing_key": "self_signing",
    "user_signing_key": "user_signing",
}


def _str_map(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise bad_json(f"{where} must be an object of strings")
    return value


def _check_size(value: Any, where: str) -> None:
    if len(encode_canonical_json(value)) > MAX_KEY_JSON_BYTES:
        raise KeyServerError(413, "M_TOO_LARGE", f"{where} exceeds {MAX_KEY_JSON_BYTES} bytes")


def _signatures(obj: Mapping[str, Any], where: str) -> dict[str, dict[str, str]]:
    sigs = obj.get("signatures")
    if not isinstance(sigs, dict):
        raise bad_json(f"{where}.signatures must be an object")
    for user, by_key in sigs.items():
        _str_map(by_key, f"{where}.signatures[{user}]")
    return sigs


def check_signed_by(obj: Mapping[str, Any], user_id: str, key_id: str, public: str) -> None:
    """`obj` must carry a valid signature by `user_id` with the Ed25519 key `key_id`."""
    by_user = _signatures(obj, "key").get(user_id, {})
    if key_id not in by_user:
        raise invalid_signature(f"Missing signature by {user_id} with {key_id}")
    try:
        verify_signature(signature_blob(obj), by_user[key_id], decode_verify_key(public))
    except (SignatureError, KeyFormatError) as exc:
        raise invalid_signature(f"Invalid signature by {key_id}: {exc}") from None


#: The messaging algorithms the spec defines (end_to_end_encryption.md, "Messaging
#: algorithms"). A device listing one of them follows the spec's device-key scheme: its
#: `ed25519:<device_id>` key is its fingerprint and signs the device's other keys.
SPEC_MESSAGING_ALGORITHMS = frozenset({"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"})


def device_keys(value: Any, user_id: str, device_id: str) -> dict[str, Any]:
    """The `device_keys` of an upload: the caller's own device, in the DeviceKeys shape.

    Checked: the shape (definitions/device_keys.yaml: all five fields required, `keys` a
    map of strings, `signatures` a map of maps of strings, else M_BAD_JSON), `user_id`
    and `device_id` equal to the requester's (M_INVALID_PARAM), and the self-signature.
    """
    if not isinstance(value, dict):
        raise bad_json("device_keys must be an object")
    _check_size(value, "device_keys")
    for field in ("user_id", "device_id", "algorithms", "keys", "signatures"):
        if field not in value:
            raise bad_json(f"device_keys.{field} is required")
    if value.get("user_id") != user_id:
        raise invalid_param("device_keys.user_id does not match the requester")
    if value.get("device_id") != device_id:
        raise invalid_param("device_keys.device_id does not match the requester's device")
    algorithms = value.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise bad_json("device_keys.algorithms must be a list of strings")
    keys = _str_map(value.get("keys"), "device_keys.keys")
    signatures = _signatures(value, "device_keys")
    check_self_signature(value, algorithms, keys, signatures, user_id, device_id)
    return {k: v for k, v in value.items() if k != "unsigned"}


def check_self_signature(
    value: Mapping[str, Any],
    algorithms: list[str],
    keys: Mapping[str, str],
    signatures: Mapping[str, Mapping[str, str]],
    user_id: str,
    device_id: str,
) -> None:
    """Refuse device keys whose self-signature does not verify (M_INVALID_SIGNATURE, 400).

    The spec gives /keys/upload only a 200 answer, but a device key that carries a false
    signature by its own fingerprint key is a forgery or a broken client, and storing it
    would hand every querying client a device it must reject. M_INVALID_SIGNATURE is the
    code the spec uses for the same fault in cross-signing uploads (cross_signing.yaml).

    The signature is checked when it can be, that is when all of these hold:

    - `algorithms` names a messaging algorithm the spec defines: for others, "details vary
      depending on the messaging algorithm" (Device keys), so the server cannot know how
      the device's keys relate to each other (Sytest's cross-signing file uploads a real
      Ed25519 key under made-up algorithm names with a fixed signature that cannot match
      its random device ID, and Synapse, which checks nothing here, stores it);
    - `keys["ed25519:<device_id>"]` is an Ed25519 public key: unpadded standard Base64 of
      32 bytes. Anything else (test placeholders such as Sytest's `ed25519+key`) cannot
      verify a signature for anyone, client or server, and is stored as opaque data;
    - the upload carries a signature `signatures[user_id]["ed25519:<device_id>"]`. Keys
      without one are stored: they claim nothing, and clients do not trust an unsigned
      device, so refusing them would protect no one.

    Then the signature must verify over the object without `signatures` and `unsigned`
    (appendices.md, "Signing JSON"); other signatures (e.g. by a self-signing key, which
    /keys/signatures/upload checks) are not looked at.
    """
    if not SPEC_MESSAGING_ALGORITHMS.intersection(algorithms):
        return
    key_id = f"{ED25519}:{device_id}"
    public = keys.get(key_id)
    signature = signatures.get(user_id, {}).get(key_id)
    if public is None or signature is None:
        return
    try:
        verify_key = decode_verify_key(public)
    except KeyFormatError:
        return  # not an Ed25519 key: nothing can be verified with it
    try:
        verify_signature(signature_blob(value), signature, verify_key)
    except SignatureError as exc:
        raise invalid_signature(
            f"device_keys self-signature by {key_id} does not verify: {exc}"
        ) from None


@dataclass(frozen=True, slots=True)
class UploadedKey:
    """One one-time or fallback key: `algorithm:key_id` and its (string or object) value."""

    algorithm: str
    key_id: str
    key_json: str


def _split_key_id(full: str, where: str) -> tuple[str, str]:
    algorithm, sep, key_id = full.partition(":")
    if not sep or not algorithm or not key_id or len(full) > MAX_ID_LENGTH:
        raise bad_json(f"{where} key {full[:60]!r} is not '<algorithm>:<key_id>'")
    return algorithm, key_id


def uploaded_keys(value: Any, where: str) -> list[UploadedKey]:
    """The `one_time_keys` or `fallback_keys` map of an upload."""
    if not isinstance(value, dict):
        raise bad_json(f"{where} must be an object")
    out: list[UploadedKey] = []
    for full, key in value.items():
        algorithm, key_id = _split_key_id(full, where)
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str):
                raise bad_json(f"{where}[{full}].key must be a string")
            if "signatures" in key:
                _signatures(key, f"{where}[{full}]")
        elif not isinstance(key, str):
            raise bad_json(f"{where}[{full}] must be a string or an object")
        _check_size(key, f"{where}[{full}]")
        out.append(UploadedKey(algorithm, key_id, encode_canonical_json(key).decode()))
    return out


def cross_signing_key(value: Any, user_id: str, kind: str) -> tuple[str, dict[str, Any]]:
    """A cross-signing key of `kind` (`master_key` ...): its public key and the object."""
    if not isinstance(value, dict):
        raise bad_json(f"{kind} must be an object")
    _check_size(value, kind)
    if value.get("user_id") != user_id:
        raise invalid_param(f"{kind}.user_id does not match the requester")
    usage = value.get("usage")
    if not isinstance(usage, list) or CROSS_SIGNING_USAGES[kind] not in usage:
        raise invalid_param(f"{kind}.usage must contain {CROSS_SIGNING_USAGES[kind]!r}")
    keys = _str_map(value.get("keys"), f"{kind}.keys")
    if len(keys) != 1:
        raise invalid_param(f"{kind}.keys must hold exactly one key")
    ((key_id, public),) = keys.items()
    if key_id != f"ed25519:{public}":
        raise invalid_param(f"{kind}.keys must map 'ed25519:<public key>' to the public key")
    try:
        decode_verify_key(public)
    except KeyFormatError as exc:
        raise invalid_param(f"{kind} public key: {exc}") from None
    if "signatures" in value:
        _signatures(value, kind)
    return public, {k: v for k, v in value.items() if k != "unsigned"}
