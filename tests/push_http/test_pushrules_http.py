"""Push-rule REST paths against a real server: malformed paths are 400 (not the router's
404), the trailing slash matters, rule IDs may hold `:` and `#`, historical actions are
given back as written, and `/notifications` entries carry `profile_tag`."""

from __future__ import annotations

import itertools
from urllib.parse import quote

import pytest

from tests.support.client import SpecClient
from tests.support.rooms import create_room, join, send
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"
RULES = f"{V3}/pushrules"
_USERS = itertools.count()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/"),
        ("PUT", "/not_a_scope/room/!r:example.org"),
        ("PUT", "/global"),
        ("PUT", "/global/room"),
        ("PUT", "/global/room/"),
        ("PUT", "/global/override/.m.rule.master/not_an_attr"),
        ("GET", "/global"),
        ("GET", "/global/room"),
        ("GET", "/not_a_scope/"),
        ("GET", "/global/not_a_kind/"),
        ("GET", "/global/override/.m.rule.master/not_an_attr"),
    ],
)
async def test_malformed_paths_are_400(server: ServerProcess, method: str, path: str) -> None:
    async with SpecClient(server.base_url) as c:
        token = (await c.register(f"pr_bad{next(_USERS)}"))["access_token"]
        body = {"enabled": True} if method == "PUT" else None
        status, err = await c.call(method, RULES + path, body, token=token, validate=False)
        assert status == 400, (method, path, err)
        assert isinstance(err["errcode"], str) and err["errcode"].startswith("M_")


async def test_rule_ids_trailing_slashes_and_historical_actions(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        token = (await c.register("pr_user"))["access_token"]
        # Only `/pushrules/` is defined; without the slash it is an unknown path.
        status, _ = await c.call("GET", RULES, token=token, validate=False)
        assert status == 404
        # `/global/{kind}/` lists that kind's rules, as Synapse does and Sytest uses (the
        # spec would read it as the rule with the empty ID, which cannot exist): not
        # schema-checked.
        status, kind_rules = await c.call(
            "GET", f"{RULES}/global/room/", token=token, validate=False
        )
        assert (status, kind_rules) == (200, [])

        # A room rule keyed by an alias (as Synapse accepts), `:` and `#` in the ID.
        rule = f"{RULES}/global/room/{quote('#spam:example.com')}"
        status, _ = await c.call("PUT", rule, {"actions": ["dont_notify"]}, token=token)
        assert status == 200
        status, got = await c.call("GET", rule, token=token)
        assert status == 200
        assert (got["rule_id"], got["actions"]) == ("#spam:example.com", ["dont_notify"])
        status, got = await c.call("GET", f"{rule}/actions", token=token)
        assert (status, got) == (200, {"actions": ["dont_notify"]})
        status, kind_rules = await c.call(
            "GET", f"{RULES}/global/room/", token=token, validate=False
        )
        assert [r["rule_id"] for r in kind_rules] == ["#spam:example.com"]

        # A default rule's actions can be set to the historical ones and read back.
        default = f"{RULES}/global/underride/.m.rule.message/actions"
        status, _ = await c.call("PUT", default, {"actions": ["dont_notify"]}, token=token)
        assert status == 200
        status, got = await c.call("GET", default, token=token)
        assert (status, got) == (200, {"actions": ["dont_notify"]})


async def test_notifications_have_a_profile_tag(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("pr_alice"))["access_token"]
        bob = (await c.register("pr_bob"))["access_token"]
        room = await create_room(c, bob, {"preset": "public_chat"})
        await join(c, alice, room)
        await send(c, bob, room, "m1", {"msgtype": "m.text", "body": "hi"})
        status, body = await c.call("GET", f"{V3}/notifications", token=alice)
        assert status == 200
        (entry,) = body["notifications"]
        assert entry["profile_tag"] == "" and entry["read"] is False
