"""The server's Ed25519 signing key: created on first start, kept in the data directory.

File format (`myelin.core.signing`): one line `ed25519 <key version> <unpadded base64 seed>`,
the format other homeservers use, so a key can be moved between implementations. The file
is written to a temporary name, fsynced and renamed, so a crash never leaves half a key.
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from myelin.core.signing import KeyFormatError, SigningKey, decode_signing_key, sign_json


class SigningKeyError(Exception):
    """The key file exists but cannot be read or parsed."""


@dataclass(frozen=True)
class ServerKey:
    """The server's signing key (`key_id` is `ed25519:<version>`)."""

    key: SigningKey

    @property
    def key_id(self) -> str:
        return self.key.key_id

    @property
    def public_key_b64(self) -> str:
        return self.key.verify_key_base64

    def sign_json(self, server_name: str, value: dict[str, Any]) -> dict[str, Any]:
        """A copy of `value` with this key's signature added (appendices.md, "Signing JSON")."""
        return sign_json(value, server_name, self.key)


def load_or_create(path: Path) -> ServerKey:
    """The key in `path`, generating and writing a new one (mode 0600) if there is none."""
    if path.exists():
        try:
            lines = [line for line in path.read_text(encoding="ascii").splitlines() if line]
            if not lines:
                raise KeyFormatError("the file is empty")
            return ServerKey(decode_signing_key(lines[0]))
        except (OSError, UnicodeDecodeError, KeyFormatError) as exc:
            raise SigningKeyError(f"cannot read signing key {path}: {exc}") from None
    version = "a_" + "".join(secrets.choice(string.ascii_letters) for _ in range(4))
    key = SigningKey.generate(version)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.encode() + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return ServerKey(key)
