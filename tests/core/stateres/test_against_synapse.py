"""Differential test: our state resolution against the reference Synapse's.

Random room DAGs in room versions 1, 2, 10, 11 and 12 (the same actions as the property
tests, with state sets sometimes made stale the way a partial sync makes them, which is
what v2.1 fixes) are resolved by both implementations; every answer must be identical.
Synapse runs in its own virtual environment, the one ../shared/peer/synapse.sh installs;
the test fails, loudly, without it.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from myelin.core.events import StateKey
from myelin.core.roomversions import room_version
from myelin.core.stateres import resolve_state
from tests.support.peer import synapse_python

from .graph import ALICE, BOB, CHARLIE, EVELYN, Room, initial_events
from .test_properties import USERS, spec_for

ORACLE = Path(__file__).with_name("synapse_oracle.py")
CASES = 200


def random_action(r: random.Random) -> tuple[Any, ...]:
    kind = r.choice(["topic", "power", "ban", "kick", "join_rules", "join", "leave"])
    if kind == "topic":
        return ("topic", r.choice(USERS))
    if kind == "power":
        return ("power", r.choice([ALICE, BOB, CHARLIE]), r.choice([0, 50, 100]), r.choice([0, 50]))
    if kind in ("ban", "kick"):
        return (kind, r.choice([ALICE, BOB]), r.choice(USERS))
    if kind == "join_rules":
        return (kind, r.choice([ALICE, BOB]), r.choice(["public", "invite"]))
    if kind == "join":
        return (kind, r.choice([EVELYN, BOB, CHARLIE]))
    return ("leave", r.choice(USERS))


def make_case(r: random.Random) -> tuple[dict[str, Any], dict[StateKey, str]]:
    """A random room DAG (events on one or two recent prev events), two to four of its
    events' states to resolve, and sometimes one key of one state made stale."""
    version = r.choice(["1", "2", "10", "11", "12"])
    room = Room(room_version(version))
    ts = 100
    prev: list[str] = []
    for spec in initial_events()[:-1]:
        room.add(spec, prev, ts)
        ts += 1
        prev = [spec.name]
    names = ["START"]
    for i in range(r.randint(3, 14)):
        recent = names[-6:]
        prevs = r.sample(recent, min(r.randint(1, 2), len(recent)))
        room.add(spec_for(f"E{i}", random_action(r)), prevs, ts)
        ts += 1
        names.append(f"E{i}")
    tips = r.sample(names, r.randint(2, min(4, len(names))))
    sets = [dict(room.state_after["$" + t]) for t in tips]
    if r.random() < 0.8:
        history: dict[StateKey, list[str]] = {}
        for event_id, event in room.events.items():
            if event.is_state:
                history.setdefault(event.state_tuple, []).append(event_id)
        stale = r.choice(sets)
        keys = [k for k in stale if len(history.get(k, [])) > 1]
        if keys:
            key = r.choice(keys)
            stale[key] = r.choice(history[key])
    ours = resolve_state(version, sets, room.fetch)
    case = {
        "version": version,
        "events": {i: dict(e.pdu) for i, e in room.events.items()},
        "sets": [[[t, k, v] for (t, k), v in s.items()] for s in sets],
    }
    return case, ours


@pytest.mark.synapse
def test_same_answers_as_the_reference_synapse() -> None:
    python = synapse_python()
    r = random.Random(20261121)
    cases = [make_case(r) for _ in range(CASES)]
    stdin = "".join(json.dumps(case) + "\n" for case, _ in cases)
    proc = subprocess.run(
        [str(python), str(ORACLE)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = proc.stdout.splitlines()
    assert len(answers) == CASES
    mismatches = []
    for (case, ours), line in zip(cases, answers, strict=True):
        theirs = {(t, k): e for t, k, e in json.loads(line)}
        if theirs != ours:
            diff = {
                key: (ours.get(key), theirs.get(key))
                for key in ours.keys() | theirs.keys()
                if ours.get(key) != theirs.get(key)
            }
            mismatches.append((case["version"], diff))
    assert not mismatches, mismatches[:5]
