"""Each step of state resolution v2/v2.1 on small hand-made auth graphs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from myelin.core.events import Event
from myelin.core.roomversions import room_version
from myelin.core.stateres._dag import AuthDag
from myelin.core.stateres.v2 import (
    auth_difference,
    conflicted_subgraph,
    is_power_event,
    mainline_order,
    power_closure,
    reverse_topological_power_order,
    separate,
)

V10 = room_version("10")
V12 = room_version("12")
ROOM = "!room:example.com"


def ev(
    event_id: str,
    type_: str,
    sender: str = "@a:x",
    *,
    state_key: str | None = "",
    auth: Sequence[str] = (),
    ts: int = 0,
    content: Mapping[str, Any] | None = None,
    version: Any = V10,
) -> Event:
    pdu: dict[str, Any] = {
        "type": type_,
        "sender": sender,
        "room_id": ROOM,
        "content": dict(content or {}),
        "auth_events": list(auth),
        "prev_events": [],
        "origin_server_ts": ts,
        "depth": 1,
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    return Event(event_id=event_id, room_version=version, pdu=pdu)


def dag_of(*events: Event) -> AuthDag:
    by_id = {e.event_id: e for e in events}
    return AuthDag(by_id.get)


def test_separate_treats_a_missing_key_as_a_conflict() -> None:
    a = {("t", ""): "$1", ("u", ""): "$2", ("only", "a"): "$3"}
    b = {("t", ""): "$1", ("u", ""): "$9"}
    unconflicted, conflicted = separate([a, b])
    assert unconflicted == {("t", ""): "$1"}
    assert conflicted == {("u", ""): {"$2", "$9"}, ("only", "a"): {"$3"}}


def test_power_events() -> None:
    assert is_power_event(ev("$p", "m.room.power_levels"))
    assert is_power_event(ev("$j", "m.room.join_rules"))
    kick = ev("$k", "m.room.member", "@a:x", state_key="@b:x", content={"membership": "leave"})
    assert is_power_event(kick)
    own_leave = ev("$l", "m.room.member", "@b:x", state_key="@b:x", content={"membership": "leave"})
    assert not is_power_event(own_leave)
    assert not is_power_event(ev("$t", "m.room.topic"))
    assert not is_power_event(ev("$m", "m.room.power_levels", state_key=None))


def test_auth_difference_counts_events_reached_by_some_sets_only() -> None:
    c = ev("$c", "m.room.create")
    p1 = ev("$p1", "m.room.power_levels", auth=["$c"])
    p2 = ev("$p2", "m.room.power_levels", auth=["$c", "$p1"])
    m = ev("$m", "m.room.member", state_key="@a:x", auth=["$c", "$p1"])
    dag = dag_of(c, p1, p2, m)
    pl = ("m.room.power_levels", "")
    one = {("m.room.create", ""): "$c", pl: "$p2", ("m.room.member", "@a:x"): "$m"}
    two = {("m.room.create", ""): "$c", pl: "$p1", ("m.room.member", "@a:x"): "$m"}
    unconflicted, _ = separate([one, two])
    # $p1 is reached from the unconflicted member event in both sets: not different.
    assert auth_difference([one, two], unconflicted, dag) == {"$p2"}
    chains = {"$c": set(), "$p1": {"$c"}, "$p2": {"$c", "$p1"}, "$m": {"$c", "$p1"}}
    assert auth_difference([one, two], unconflicted, dag, chains.__getitem__) == {"$p2"}
    # The index is believed over the events: a chain it reports is what counts.
    chains["$p2"] = {"$c", "$p1", "$indexed"}
    assert auth_difference([one, two], unconflicted, dag, chains.__getitem__) == {"$p2", "$indexed"}


def test_conflicted_subgraph_keeps_only_paths_between_conflicted_events() -> None:
    # a -> b -> c -> d, and a -> side; conflicted: a and c.
    d = ev("$d", "m.room.create")
    c = ev("$c", "m.room.power_levels", auth=["$d"])
    b = ev("$b", "m.room.member", state_key="@a:x", auth=["$c", "$d"])
    side = ev("$side", "m.room.join_rules", auth=["$d"])
    a = ev("$a", "m.room.power_levels", auth=["$b", "$side"])
    dag = dag_of(a, b, c, d, side)
    assert conflicted_subgraph(["$a", "$c"], dag) == {"$a", "$b", "$c"}
    assert conflicted_subgraph(["$a"], dag) == {"$a"}
    assert conflicted_subgraph(["$a", "$missing"], dag) == {"$a"}


def test_reverse_topological_order_puts_auth_events_first_then_power_then_time() -> None:
    create = ev("$create", "m.room.create", "@admin:x", content={"creator": "@admin:x"})
    levels = {"users": {"@admin:x": 100, "@mod:x": 50}}
    pl = ev("$pl", "m.room.power_levels", "@admin:x", auth=["$create"], ts=1, content=levels)
    # Same power: earlier timestamp first; equal timestamps: smaller event ID first.
    j1 = ev("$j1", "m.room.join_rules", "@mod:x", auth=["$create", "$pl"], ts=5)
    j2 = ev("$j0", "m.room.join_rules", "@mod:x", auth=["$create", "$pl"], ts=5)
    j3 = ev("$j3", "m.room.join_rules", "@mod:x", auth=["$create", "$pl"], ts=2)
    # More power sorts first whatever the timestamp.
    admin = ev("$zz", "m.room.join_rules", "@admin:x", auth=["$create", "$pl"], ts=99)
    dag = dag_of(create, pl, j1, j2, j3, admin)
    full = {"$pl", "$j1", "$j0", "$j3", "$zz"}
    nodes = power_closure(["$j1", "$j0", "$j3", "$zz"], full, dag)
    assert nodes == full  # $pl is pulled in through the auth chains
    assert reverse_topological_power_order(nodes, dag) == ["$pl", "$zz", "$j3", "$j0", "$j1"]


def test_reverse_topological_order_ignores_an_auth_cycle() -> None:
    a = ev("$a", "m.room.power_levels", auth=["$b"])
    b = ev("$b", "m.room.power_levels", auth=["$a"])
    c = ev("$c", "m.room.join_rules")
    dag = dag_of(a, b, c)
    assert reverse_topological_power_order({"$a", "$b", "$c"}, dag) == ["$c"]


def test_v12_creators_sort_first() -> None:
    create = ev("$create", "m.room.create", "@founder:x", content={}, version=V12)
    create_pdu = dict(create.pdu)
    del create_pdu["room_id"]
    create = Event("$create", V12, create_pdu)
    room = "!create"
    levels = {"users": {"@mod:x": 100}}

    def v12(event_id: str, sender: str, ts: int, auth: Sequence[str]) -> Event:
        base = ev(event_id, "m.room.join_rules", sender, auth=auth, ts=ts, version=V12)
        return Event(event_id, V12, {**base.pdu, "room_id": room})

    pl = Event(
        "$pl",
        V12,
        {**v12("$pl", "@founder:x", 1, []).pdu, "type": "m.room.power_levels", "content": levels},
    )
    mod = v12("$mod", "@mod:x", 2, ["$pl"])
    founder = v12("$founder", "@founder:x", 3, ["$pl"])
    dag = dag_of(create, pl, mod, founder)
    assert dag.auth_ids("$mod") == ("$pl", "$create")  # the implied create event
    assert reverse_topological_power_order({"$pl", "$mod", "$founder"}, dag) == [
        "$pl",
        "$founder",
        "$mod",
    ]


def test_mainline_order() -> None:
    create = ev("$create", "m.room.create")
    p0 = ev("$p0", "m.room.power_levels", auth=["$create"])
    p1 = ev("$p1", "m.room.power_levels", auth=["$create", "$p0"])
    p2 = ev("$p2", "m.room.power_levels", auth=["$create", "$p1"])
    side = ev("$side", "m.room.power_levels", auth=["$create", "$p1"])  # off the mainline
    on_p2 = ev("$t2", "m.room.topic", auth=["$create", "$p2"], ts=1)
    on_p1 = ev("$t1", "m.room.topic", auth=["$create", "$p1"], ts=9)
    on_side = ev("$ts", "m.room.topic", auth=["$create", "$side"], ts=3)
    no_pl = ev("$tn", "m.room.topic", auth=["$create"], ts=50)
    on_p0_late = ev("$t0b", "m.room.topic", auth=["$create", "$p0"], ts=8)
    on_p0_early = ev("$t0a", "m.room.topic", auth=["$create", "$p0"], ts=7)
    dag = dag_of(create, p0, p1, p2, side, on_p2, on_p1, on_side, no_pl, on_p0_late, on_p0_early)
    ids = ["$t2", "$t1", "$ts", "$tn", "$t0b", "$t0a"]
    # Positions: $tn ∞; $t0a/$t0b 2 ($p0); $t1 and $ts 1 ($p1, $ts through $side); $t2 0.
    assert mainline_order(ids, "$p2", dag) == ["$tn", "$t0a", "$t0b", "$ts", "$t1", "$t2"]
    # Without resolved power levels every position is ∞: time order.
    assert mainline_order(ids, None, dag) == ["$t2", "$ts", "$t0a", "$t0b", "$t1", "$tn"]


def test_mainline_position_is_infinite_for_unknown_power_levels() -> None:
    topic = ev("$t", "m.room.topic", auth=["$gone"], ts=1)
    other = ev("$u", "m.room.topic", auth=[], ts=0)
    dag = dag_of(topic, other)
    assert dag.power_levels_ref("$t") is None
    assert mainline_order(["$t", "$u", "$unknown"], "$gone", dag) == ["$u", "$t"]
