"""History visibility per event (client-server-api, "Room History Visibility").

Whether a user may see an event depends on the room's state *at that event*: the
`m.room.history_visibility` setting in force when it was sent and the user's membership
then, plus whether the user joined at some point after it (for `shared`). The rule itself
is the pure function `may_see`; `RoomHistory` holds, for one user and one room, the
changes of the setting and of the user's membership in stream order, so that the state
before any event is a binary search away and a whole page of events is checked without a
query per event.

The state at an event is taken from the sync stream's order (the order in which the
roomserver accepted events), which is the room's topological order for every room this
server writes; positions, not DAG state snapshots, keep a page of `/messages` to two
small queries.

Two other per-reader rules of what is served live here too: the non-state events of
users the reader ignores are never served, and the events of users who erased their
account are served redacted to readers who were not joined when they were sent.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import orjson

from myelin.core.redaction import redact
from myelin.core.roomversions import room_version
from myelin.storage import Txn
from myelin.syncapi.format import StoredEvent

HISTORY_TYPE = "m.room.history_visibility"
MEMBER_TYPE = "m.room.member"
SETTINGS = frozenset({"world_readable", "shared", "invited", "joined"})
#: Without a setting, or with one the server does not understand, history is `shared`.
DEFAULT_SETTING = "shared"
#: A position after every event, for "no upper bound".
END = 2**62


def normalise(value: object) -> str:
    return value if isinstance(value, str) and value in SETTINGS else DEFAULT_SETTING


def may_see(setting: str, membership: str | None, joined_later: bool) -> bool:
    """The spec's rule for one event: `setting` and `membership` are those at the event,
    `joined_later` whether the user joined the room at any point after it."""
    if setting == "world_readable":
        return True
    if membership == "join":
        return True
    if setting == "shared" and joined_later:
        return True
    return setting == "invited" and membership == "invite"


def _at(changes: Sequence[tuple[int, str]], positions: Sequence[int], pos: int) -> str | None:
    """The value of the last change strictly before `pos`."""
    i = bisect.bisect_left(positions, pos)
    return changes[i - 1][1] if i > 0 else None


@dataclass(frozen=True, slots=True)
class RoomHistory:
    """One user's view of one room's history: the setting's and the user's membership's
    changes, each `(pos, value)` in ascending position."""

    user_id: str
    settings: tuple[tuple[int, str], ...]
    memberships: tuple[tuple[int, str], ...]

    @property
    def _setting_pos(self) -> list[int]:
        return [p for p, _ in self.settings]

    @property
    def _member_pos(self) -> list[int]:
        return [p for p, _ in self.memberships]

    def last_join(self) -> int:
        """The position of the user's last join, 0 if they never joined."""
        return max((p for p, m in self.memberships if m == "join"), default=0)

    def checker(self, ignored: frozenset[str] = frozenset()) -> VisibilityCheck:
        return VisibilityCheck(self, self._setting_pos, self._member_pos, self.last_join(), ignored)

    def ever_member(self) -> bool:
        return bool(self.memberships)


@dataclass(frozen=True, slots=True)
class VisibilityCheck:
    """`RoomHistory` with its positions indexed, to check many events."""

    history: RoomHistory
    setting_pos: list[int]
    member_pos: list[int]
    last_join: int
    #: Senders the user ignores (`m.ignored_user_list`): their non-state events are
    #: never served to the user (client-server-api "Ignoring Users").
    ignored: frozenset[str] = frozenset()

    def setting_before(self, pos: int) -> str:
        return normalise(_at(self.history.settings, self.setting_pos, pos))

    def membership_before(self, pos: int) -> str | None:
        return _at(self.history.memberships, self.member_pos, pos)

    def allows_at(self, pos: int) -> bool:
        """Whether an ordinary event (not a setting change, not the user's own
        membership) at `pos` is visible."""
        return may_see(self.setting_before(pos), self.membership_before(pos), self.last_join > pos)

    def allows(self, event: StoredEvent) -> bool:
        if event.state_key is None and event.sender in self.ignored:
            return False
        pos = event.pos
        setting = self.setting_before(pos)
        membership = self.membership_before(pos)
        later = self.last_join > pos
        if may_see(setting, membership, later):
            return True
        # A setting change is visible if the setting before *or* after it allows it;
        # likewise the user's own membership changes (the spec's two exceptions).
        if event.type == HISTORY_TYPE and event.state_key == "":
            after = normalise(event.pdu.get("content", {}).get("history_visibility"))
            return may_see(after, membership, later)
        # The user's own membership events are always theirs to see (the spec's "before
        # or after" covers joins and leaving a join; a rejected invite's leave, which
        # neither covers, must still reach them, or the room never leaves their list).
        return event.type == MEMBER_TYPE and event.state_key == self.history.user_id

    def erase(self, events: Sequence[StoredEvent], erased: Collection[str]) -> list[StoredEvent]:
        """`events`, with those of erased senders redacted unless the user was joined
        when they were sent (account deactivation with `erase`: only the members of the
        time keep what they saw)."""
        if not erased:
            return list(events)
        out = []
        for event in events:
            if (
                event.sender in erased
                and event.redacted_by is None
                and self.membership_before(event.pos) != "join"
            ):
                pdu = redact(event.pdu, room_version(event.room_version))
                event = replace(event, pdu_json=orjson.dumps(pdu).decode())
            out.append(event)
        return out

    def span(self, upto: int) -> tuple[int, int] | None:
        """`(after, last)`: every visible event of `(0, upto]` lies in `(after, last]`;
        None when none can be. Visibility is constant between two changes, so only the
        intervals between change positions are checked."""
        points = sorted({0, *self.setting_pos, *self.member_pos})
        lo: int | None = None
        hi = 0
        for i, start in enumerate(points):
            if start >= upto:
                break
            end = points[i + 1] if i + 1 < len(points) else upto
            end = min(end, upto)
            # Events in (start, end) see the state after `start`; the change at `end`
            # (itself in the interval's "before" state) may be visible by its "after".
            inside = self.allows_at(start + 1)
            edge = inside or self._change_visible(end)
            if inside or edge:
                if lo is None:
                    lo = start
                hi = end
        return None if lo is None else (lo, hi)

    def _change_visible(self, pos: int) -> bool:
        """Whether a change at `pos` (a setting or own membership) is visible by the
        value it sets."""
        setting = self.setting_before(pos)
        membership = self.membership_before(pos)
        later = self.last_join > pos
        i = bisect.bisect_left(self.setting_pos, pos)
        if i < len(self.setting_pos) and self.setting_pos[i] == pos:
            after = normalise(self.history.settings[i][1])
            if may_see(after, membership, later):
                return True
        j = bisect.bisect_left(self.member_pos, pos)
        if j < len(self.member_pos) and self.member_pos[j] == pos:
            return may_see(setting, self.history.memberships[j][1], later)
        return False


async def load(
    t: Txn, room_id: str, user_id: str, ignored: frozenset[str] = frozenset()
) -> VisibilityCheck:
    """The room's setting changes and the user's membership changes, from the stream
    (two lookups of the `(room_id, type, state_key, pos)` index)."""
    return (await load_history(t, room_id, user_id)).checker(ignored)


async def load_history(t: Txn, room_id: str, user_id: str) -> RoomHistory:
    """What `load` checks with: the setting changes and the user's membership changes."""
    settings: list[tuple[int, str]] = []
    memberships: list[tuple[int, str]] = []
    for event_type, state_key, out in (
        (HISTORY_TYPE, "", settings),
        (MEMBER_TYPE, user_id, memberships),
    ):
        rows = await t.fetchall(
            "SELECT pos, pdu FROM sync_events WHERE room_id = ? AND type = ?"
            " AND state_key = ? ORDER BY pos",
            room_id,
            event_type,
            state_key,
        )
        for pos, pdu in rows:
            content = orjson.loads(pdu).get("content", {})
            if event_type == HISTORY_TYPE:
                out.append((int(pos), normalise(content.get("history_visibility"))))
            else:
                value = content.get("membership")
                out.append((int(pos), value if isinstance(value, str) else "leave"))
    return RoomHistory(user_id, tuple(settings), tuple(memberships))


async def erased_senders(t: Txn, senders: Iterable[str]) -> frozenset[str]:
    """Which of `senders` erased their account."""
    wanted = sorted(set(senders))
    if not wanted:
        return frozenset()
    rows = await t.fetchall("SELECT user_id FROM sync_erased WHERE user_id = ANY(?)", wanted)
    return frozenset(r[0] for r in rows)


async def erase_for(
    t: Txn, check: VisibilityCheck, events: Sequence[StoredEvent]
) -> list[StoredEvent]:
    """`check.erase` with the erased senders among `events` looked up."""
    return check.erase(events, await erased_senders(t, (e.sender for e in events)))


async def mark_erased(t: Txn, user_id: str) -> None:
    await t.execute("INSERT INTO sync_erased (user_id) VALUES (?) ON CONFLICT DO NOTHING", user_id)


async def ignored_users(t: Txn, user_id: str) -> frozenset[str]:
    """The users in `user_id`'s `m.ignored_user_list` account data (the user API's table,
    in the same database)."""
    value = await t.fetchval(
        "SELECT content FROM account_data WHERE user_id = ? AND room_id = ''"
        " AND type = 'm.ignored_user_list'",
        user_id,
    )
    if value is None:
        return frozenset()
    users = orjson.loads(value).get("ignored_users")
    return (
        frozenset(u for u in users if isinstance(u, str))
        if isinstance(users, dict)
        else frozenset()
    )


def server_may_see(
    setting: str,
    memberships: Mapping[str, str | None],
    joined_later: Collection[str],
    *,
    setting_after: str | None = None,
    own_change: tuple[str, str | None] | None = None,
) -> bool:
    """Whether another server may be given an event: whether any of its users may see it
    (`may_see` per user; a server sees what its users see, and no more).

    `setting` is the history visibility before the event; `memberships` the membership
    then of each of the server's users who has one; `joined_later` those of them who
    joined after the event. The spec's two exceptions apply per user as for clients: a
    setting change (`setting_after`) is visible if the setting before or after allows it,
    and a user's own membership change (`own_change`: user, new membership) if the
    membership before or after does."""
    users = set(memberships) | set(joined_later)
    if own_change is not None:
        users.add(own_change[0])
    for user in users:
        membership = memberships.get(user)
        later = user in joined_later
        if may_see(setting, membership, later):
            return True
        if setting_after is not None and may_see(setting_after, membership, later):
            return True
        if (
            own_change is not None
            and own_change[0] == user
            and may_see(setting, own_change[1], later)
        ):
            return True
    return may_see(setting, None, False) or (
        setting_after is not None and may_see(setting_after, None, False)
    )
