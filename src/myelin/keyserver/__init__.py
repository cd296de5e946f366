"""The key server: end-to-end encryption keys, signatures, to-device messages, key backup.

The homeserver never sees plaintext: it stores the public keys devices publish, hands out
one-time keys (each exactly once) and fallback keys, keeps cross-signing keys and the
signatures users make with them, queues encrypted to-device messages until the device
acknowledges them, and keeps the encrypted room-key backups. `KeyServer` is the one entry
point; `myelin.clientapi.keys` serves it over HTTP.
"""

from myelin.keyserver.errors import KeyServerError
from myelin.keyserver.store import KeyServer

__all__ = ["KeyServer", "KeyServerError"]
