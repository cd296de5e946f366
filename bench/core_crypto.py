"""Benchmark: how many typical message events the core builds and verifies per second.

Run: .venv/bin/python bench/core_crypto.py [--seconds 2] [--room-version 12]

"built" is `build_event` (content hash, redaction, Ed25519 signature, event ID);
"verified" is `event_from_pdu` + `verify_event` on the received PDU (event ID recomputed,
signature and content hash checked); "parsed+verified" adds decoding the JSON bytes as
they would arrive over federation. One core, best of three runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from myelin.core.builder import build_event, verify_event
from myelin.core.eventids import event_from_pdu
from myelin.core.events import Event
from myelin.core.roomversions import room_version
from myelin.core.signing import SigningKey


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn`, best of three runs of about `seconds` / 3 each."""
    best = 0.0
    for _ in range(3):
        n = 0
        deadline = time.perf_counter() + seconds / 3
        start = time.perf_counter()
        while True:
            for _ in range(100):
                fn()
            n += 100
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument(
        "--room-version",
        default="12",
        choices=[str(n) for n in range(3, 13)],
        help="v1/v2 are not measured: their references need the referenced events",
    )
    args = parser.parse_args()

    version = room_version(args.room_version)
    key = SigningKey.generate("bench")
    ts = 1_700_000_000_000

    def build() -> Event:
        return build_event(
            version,
            room_id="!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ",
            sender="@alice:example.org",
            type="m.room.message",
            content={
                "msgtype": "m.text",
                "body": "Hello, this is a typical chat message of moderate length.",
                "m.mentions": {},
            },
            prev_events=["$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"],
            auth_events=[
                "$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "$bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                "$ccccccccccccccccccccccccccccccccccccccccccc",
            ],
            depth=1234,
            origin_server_ts=ts,
            server_name="example.org",
            signing_key=key,
            unsigned={"transaction_id": "m1700000000000.0"},
        )

    event = build()
    keys = {("example.org", key.key_id): key.verify_key}
    wire = orjson.dumps(dict(event.pdu))

    def verify() -> None:
        verify_event(event_from_pdu(event.pdu, version), keys)

    def parse_and_verify() -> None:
        verify_event(event_from_pdu(orjson.loads(wire), version), keys)

    print(f"room version {version.identifier}, PDU of {len(wire)} bytes")
    print(f"built (hashed+signed):  {rate(build, args.seconds):8.0f} events/s")
    print(f"verified:               {rate(verify, args.seconds):8.0f} events/s")
    print(f"parsed+verified:        {rate(parse_and_verify, args.seconds):8.0f} events/s")


if __name__ == "__main__":
    main()
