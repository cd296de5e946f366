"""Benchmark: push-rule evaluations (events x room members) per second.

Not a test. Builds `--users` members, each with their own effective rule set (the server
defaults, naming the user, plus `--keywords` content rules each), compiles them once, and
evaluates a mix of `--events` events (plain messages, mentions, edits, reactions, notices,
membership, encrypted) for every member, the way the push component does when an event is
appended. Prints evaluations per second for the best of `--repeat` runs, with one
`PreparedEvent` per event shared by all members (how the push component should call it)
and with a raw mapping per call.

    .venv/bin/python bench/push.py [--users 1000] [--events 200] [--keywords 2] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from myelin.push.evaluator import PreparedEvent, PushContext, compile_ruleset, evaluate
from myelin.push.rules import RuleKind
from myelin.push.ruleset import EMPTY, effective_ruleset, put_rule

ROOM = "!bench:example.org"


def events(count: int, users: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(count):
        sender = users[i % len(users)]
        shape = i % 10
        content: dict[str, Any] = {"msgtype": "m.text", "body": f"message number {i} about tea"}
        type_ = "m.room.message"
        extra: dict[str, Any] = {}
        if shape == 1:
            content["m.mentions"] = {"user_ids": [users[(i * 7) % len(users)]]}
        elif shape == 2:
            content["m.relates_to"] = {"rel_type": "m.replace", "event_id": "$x"}
        elif shape == 3:
            type_ = "m.reaction"
            content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "+"}}
        elif shape == 4:
            content["msgtype"] = "m.notice"
        elif shape == 5:
            type_ = "m.room.member"
            extra["state_key"] = sender
            content = {"membership": "join"}
        elif shape == 6:
            type_ = "m.room.encrypted"
            content = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "xyz"}
        out.append({"type": type_, "sender": sender, "room_id": ROOM, "event_id": f"${i}",
                    "content": content, **extra})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--keywords", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    users = [f"@user{n}:example.org" for n in range(args.users)]
    start = time.perf_counter()
    members = []
    for n, user in enumerate(users):
        stored = EMPTY
        for k in range(args.keywords):
            stored = put_rule(stored, RuleKind.CONTENT, f"kw{k}",
                              {"pattern": f"word{(n + k) % 50}", "actions": ["notify"]})
        ruleset = compile_ruleset(effective_ruleset(stored, user))
        context = PushContext(user, args.users, display_name=f"User {n}")
        members.append((ruleset, context))
    setup = time.perf_counter() - start
    print(f"{args.users} users: rule sets built and compiled in {setup * 1000:.0f} ms")

    evs = events(args.events, users)
    total = len(evs) * len(members)
    for label, prepare in (("shared PreparedEvent", True), ("raw mapping per call", False)):
        best = float("inf")
        notified = 0
        for _ in range(args.repeat):
            notified = 0
            t0 = time.process_time()
            for ev in evs:
                target: Any = PreparedEvent(ev) if prepare else ev
                for ruleset, context in members:
                    result = evaluate(ruleset, target, context)
                    if result is not None and result.is_notify:
                        notified += 1
            best = min(best, time.process_time() - t0)
        print(f"{label}: {total} evaluations in {best * 1000:.0f} ms = "
              f"{total / best:,.0f} evaluations/s ({notified} notifications)")


if __name__ == "__main__":
    main()
