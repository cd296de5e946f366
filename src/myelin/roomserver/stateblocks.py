"""State snapshots as hash-deduplicated blocks of (type NID, state key NID, event NID).

A room state is split into `BUCKETS` buckets by a hash of its `(type NID, state key NID)`
key; each non-empty bucket is one block, and a snapshot is the list of its blocks. A new
snapshot derived from an old one by a few changes rewrites only the touched buckets and
shares every other block with the old snapshot. So a membership change in a
10,000-member room writes one block of about 10,000 / BUCKETS entries and one snapshot
row: a constant number of rows, and bytes that grow with the bucket size, not with the
room.

Blocks and snapshots are identified by the hash of their packed bytes, so equal ones are
stored once. Pure functions only; the database side is in `myelin.roomserver.store`.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Iterable, Mapping

BUCKETS = 128
"""Buckets per snapshot. Bytes per state change grow like rows/BUCKETS + BUCKETS."""

StateNids = dict[tuple[int, int], int]
"""`(type NID, state key NID) -> event NID`."""

Entry = tuple[int, int, int]

_BIG_ENDIAN = sys.byteorder == "big"


def bucket_of(type_nid: int, state_key_nid: int) -> int:
    """A stable spread of keys over buckets (a multiplicative hash)."""
    mixed = (type_nid * 0x9E3779B1 + state_key_nid * 0x85EBCA77) & 0xFFFFFFFF
    return (mixed ^ (mixed >> 15)) % BUCKETS


def _to_bytes(values: array[int]) -> bytes:
    if _BIG_ENDIAN:
        values.byteswap()
    return values.tobytes()


def pack(values: Iterable[int]) -> bytes:
    """Little-endian int64s."""
    return _to_bytes(array("q", values))


def unpack(data: bytes) -> array[int]:
    values = array("q")
    values.frombytes(data)
    if _BIG_ENDIAN:
        values.byteswap()
    return values


def pack_block(entries: Mapping[tuple[int, int], int]) -> bytes:
    """Sorted triples, so that equal blocks have equal bytes."""
    values = array("q")
    for key in sorted(entries):
        values.extend((key[0], key[1], entries[key]))
    return _to_bytes(values)


def unpack_block(data: bytes) -> list[Entry]:
    flat = unpack(data)
    return list(zip(flat[0::3], flat[1::3], flat[2::3], strict=True))


def pack_snapshot(buckets: Mapping[int, int]) -> bytes:
    values = array("q")
    for bucket in sorted(buckets):
        values.extend((bucket, buckets[bucket]))
    return _to_bytes(values)


def unpack_snapshot(data: bytes) -> dict[int, int]:
    flat = unpack(data)
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def group_changes(
    changes: Mapping[tuple[int, int], int | None],
) -> dict[int, dict[tuple[int, int], int | None]]:
    """Changes split by bucket."""
    grouped: dict[int, dict[tuple[int, int], int | None]] = {}
    for key, value in changes.items():
        grouped.setdefault(bucket_of(*key), {})[key] = value
    return grouped
