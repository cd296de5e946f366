"""Unpadded Base64, standard and URL-safe (appendices.md, "Unpadded Base64").

Matrix encodes every binary value (keys, signatures, hashes, event IDs) as Base64 without
`=` padding. Encoding never pads; decoding accepts input with or without padding, as the
specification asks, but rejects anything else that is not Base64 (characters outside the
alphabet, impossible lengths), so a malformed key or signature is a clear error rather than
silently decoded garbage.
"""

from __future__ import annotations

import binascii

__all__ = [
    "Base64Error",
    "decode_base64",
    "decode_urlsafe_base64",
    "encode_base64",
    "encode_urlsafe_base64",
]

_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


class Base64Error(ValueError):
    """A string that is not valid (unpadded or padded) Base64 of the expected alphabet."""


def encode_base64(data: bytes) -> str:
    """Standard alphabet (`+`, `/`), no padding."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").decode("ascii")


def encode_urlsafe_base64(data: bytes) -> str:
    """URL-safe alphabet (`-`, `_`), no padding: used by event IDs from room version 4."""
    return (
        binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_TO_URLSAFE).decode("ascii")
    )


def _to_padded_bytes(text: str | bytes, forbidden: bytes) -> bytes:
    if isinstance(text, str):
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise Base64Error("Base64 must be ASCII") from None
    elif isinstance(text, bytes):
        raw = text
    else:
        raise Base64Error(f"Base64 must be a string, not {type(text).__name__}")
    for byte in forbidden:
        if byte in raw:
            raise Base64Error(f"character {chr(byte)!r} is not in this Base64 alphabet")
    body = raw.rstrip(b"=")
    padding = len(raw) - len(body)
    remainder = len(body) % 4
    if remainder == 1:
        raise Base64Error(f"impossible Base64 length {len(body)}")
    expected = (4 - remainder) % 4
    if padding not in (0, expected):
        raise Base64Error("wrong Base64 padding")
    return body + b"=" * expected


def _decode(padded: bytes) -> bytes:
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error as e:
        raise Base64Error(f"invalid Base64: {e}") from None


def decode_base64(text: str | bytes) -> bytes:
    """Decode standard Base64, padded or not. Raises Base64Error."""
    return _decode(_to_padded_bytes(text, b"-_"))


def decode_urlsafe_base64(text: str | bytes) -> bytes:
    """Decode URL-safe Base64, padded or not. Raises Base64Error."""
    return _decode(_to_padded_bytes(text, b"+/").translate(_FROM_URLSAFE))
