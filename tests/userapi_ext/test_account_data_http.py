"""Account data, room tags and push rules over HTTP against a real server: every answer
checked against the OpenAPI description, and the changes delivered by `/sync`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from tests.support.client import SpecClient
from tests.support.rooms import create_room
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_global_and_room_account_data_and_sync(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("ad_alice"))["access_token"]
        bob = (await c.register("ad_bob"))["access_token"]
        me = quote("@ad_alice:localhost")
        room = await create_room(c, alice, {"room_version": "10"})

        status, body = await c.call(
            "GET", f"{V3}/user/{me}/account_data/org.example.x", token=alice
        )
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")

        status, s = await c.call("GET", f"{V3}/sync", token=alice)
        assert status == 200
        # The initial sync carries the (default) push rules as account data.
        assert "m.push_rules" in _types(s["account_data"]["events"])
        since = s["next_batch"]

        status, _ = await c.call(
            "PUT", f"{V3}/user/{me}/account_data/org.example.x", {"a": 1}, token=alice
        )
        assert status == 200
        status, _ = await c.call(
            "PUT",
            f"{V3}/user/{me}/rooms/{room}/account_data/org.example.r",
            {"r": True},
            token=alice,
        )
        assert status == 200
        status, body = await c.call(
            "GET", f"{V3}/user/{me}/account_data/org.example.x", token=alice
        )
        assert (status, body) == (200, {"a": 1})
        status, body = await c.call(
            "GET", f"{V3}/user/{me}/rooms/{room}/account_data/org.example.r", token=alice
        )
        assert (status, body) == (200, {"r": True})

        # The incremental sync has exactly the new entries, global and in the room.
        status, s = await c.call("GET", f"{V3}/sync?since={since}&timeout=5000", token=alice)
        assert status == 200
        assert s["account_data"]["events"] == [{"type": "org.example.x", "content": {"a": 1}}]
        joined = s["rooms"]["join"][room]
        assert joined["account_data"]["events"] == [
            {"type": "org.example.r", "content": {"r": True}}
        ]
        since = s["next_batch"]
        # Nothing new: a short long-poll comes back empty.
        status, s = await c.call("GET", f"{V3}/sync?since={since}&timeout=100", token=alice)
        assert status == 200
        assert s["account_data"]["events"] == []

        # Another user's data is out of reach; server-controlled types are refused.
        status, body = await c.call(
            "PUT", f"{V3}/user/{me}/account_data/org.example.x", {"a": 2}, token=bob
        )
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await c.call("GET", f"{V3}/user/{me}/account_data/org.example.x", token=bob)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
        status, body = await c.call(
            "PUT", f"{V3}/user/{me}/account_data/m.push_rules", {"global": {}}, token=alice
        )
        assert (status, body["errcode"]) == (405, "M_BAD_JSON")
        status, body = await c.call(
            "PUT",
            f"{V3}/user/{me}/rooms/{room}/account_data/m.fully_read",
            {"event_id": "$x"},
            token=alice,
        )
        assert (status, body["errcode"]) == (405, "M_BAD_JSON")
        status, body = await c.call(
            "PUT", f"{V3}/user/{me}/account_data/org.example.x", body=b"[1]", token=alice
        )
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")
        status, body = await c.call(
            "PUT", f"{V3}/user/{me}/account_data/org.example.x", body=b"{nope", token=alice
        )
        assert (status, body["errcode"]) == (400, "M_NOT_JSON")
        status, body = await c.call(
            "PUT", f"{V3}/user/{me}/rooms/not-a-room/account_data/x.y", {"a": 1}, token=alice
        )
        assert status == 400
        # The failed writes changed nothing.
        status, body = await c.call(
            "GET", f"{V3}/user/{me}/account_data/org.example.x", token=alice
        )
        assert (status, body) == (200, {"a": 1})


async def test_tags(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("tag_alice"))["access_token"]
        me = quote("@tag_alice:localhost")
        room = await create_room(c, alice, {"room_version": "10"})
        status, s = await c.call("GET", f"{V3}/sync", token=alice)
        since = s["next_batch"]
        base = f"{V3}/user/{me}/rooms/{room}/tags"
        status, body = await c.call("GET", base, token=alice)
        assert (status, body) == (200, {"tags": {}})
        status, _ = await c.call("PUT", f"{base}/m.favourite", {"order": 0.25}, token=alice)
        assert status == 200
        status, _ = await c.call("PUT", f"{base}/u.work", {}, token=alice)
        assert status == 200
        status, body = await c.call("GET", base, token=alice)
        assert body == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}
        status, body = await c.call("PUT", f"{base}/u.bad", {"order": "high"}, token=alice)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")
        status, _ = await c.call("DELETE", f"{base}/u.work", token=alice)
        assert status == 200
        status, _ = await c.call("DELETE", f"{base}/u.never", token=alice)
        assert status == 200
        status, body = await c.call("GET", base, token=alice)
        assert body == {"tags": {"m.favourite": {"order": 0.25}}}

        # Tags reach /sync as the room's m.tag account data, with the latest content.
        status, s = await c.call("GET", f"{V3}/sync?since={since}", token=alice)
        events = s["rooms"]["join"][room]["account_data"]["events"]
        assert events == [{"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.25}}}}]


async def test_push_rule_endpoints(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("pr_alice"))["access_token"]
        status, body = await c.call("GET", f"{V3}/pushrules/", token=alice)
        assert status == 200
        override_ids = [r["rule_id"] for r in body["global"]["override"]]
        assert override_ids[0] == ".m.rule.master"
        status, body = await c.call("GET", f"{V3}/pushrules/global/", token=alice)
        assert status == 200 and "underride" in body
        status, s = await c.call("GET", f"{V3}/sync", token=alice)
        since = s["next_batch"]

        rule = f"{V3}/pushrules/global/content/cats"
        status, _ = await c.call(
            "PUT", rule, {"pattern": "cat*", "actions": ["notify"]}, token=alice
        )
        assert status == 200
        status, _ = await c.call(
            "PUT",
            f"{V3}/pushrules/global/content/dogs?before=cats",
            {"pattern": "dog*", "actions": ["notify"]},
            token=alice,
        )
        assert status == 200
        status, body = await c.call("GET", rule, token=alice)
        assert status == 200
        assert body["pattern"] == "cat*" and body["enabled"] is True and body["default"] is False
        status, body = await c.call("GET", f"{V3}/pushrules/global/", token=alice)
        user_content = [r["rule_id"] for r in body["content"] if not r["default"]]
        assert user_content == ["dogs", "cats"]

        status, _ = await c.call("PUT", f"{rule}/enabled", {"enabled": False}, token=alice)
        assert status == 200
        status, body = await c.call("GET", f"{rule}/enabled", token=alice)
        assert (status, body) == (200, {"enabled": False})
        actions = ["notify", {"set_tweak": "sound", "value": "meow"}]
        status, _ = await c.call("PUT", f"{rule}/actions", {"actions": actions}, token=alice)
        assert status == 200
        status, body = await c.call("GET", f"{rule}/actions", token=alice)
        assert (status, body) == (200, {"actions": actions})
        # Server-default rules: enabled and actions change, deletion does not.
        default = f"{V3}/pushrules/global/override/.m.rule.suppress_notices"
        status, _ = await c.call("PUT", f"{default}/enabled", {"enabled": False}, token=alice)
        assert status == 200
        status, body = await c.call("GET", f"{default}/enabled", token=alice)
        assert body == {"enabled": False}
        status, body = await c.call("DELETE", default, token=alice)
        assert status == 400

        # Errors: unknown kind, unknown rule, bad anchor, bad body; none changes anything.
        status, body = await c.call("GET", f"{V3}/pushrules/global/nope/x", token=alice)
        assert status == 400
        status, body = await c.call("GET", f"{V3}/pushrules/global/content/nope", token=alice)
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
        status, body = await c.call(
            "PUT",
            f"{V3}/pushrules/global/content/x?after=nope",
            {"pattern": "x", "actions": []},
            token=alice,
        )
        assert status == 400
        status, body = await c.call(
            "PUT", f"{V3}/pushrules/global/content/y", {"actions": []}, token=alice
        )
        assert status == 400
        status, body = await c.call("PUT", f"{rule}/enabled", {"enabled": "no"}, token=alice)
        assert status == 400

        status, _ = await c.call("DELETE", f"{V3}/pushrules/global/content/dogs", token=alice)
        assert status == 200
        status, body = await c.call("GET", f"{V3}/pushrules/global/content/dogs", token=alice)
        assert status == 404

        # The change is in /sync as the m.push_rules account data.
        status, s = await c.call("GET", f"{V3}/sync?since={since}", token=alice)
        pushed = [e for e in s["account_data"]["events"] if e["type"] == "m.push_rules"]
        assert len(pushed) == 1
        content_rules = {r["rule_id"]: r for r in pushed[0]["content"]["global"]["content"]}
        assert "dogs" not in content_rules and content_rules["cats"]["enabled"] is False
        status, body = await c.call(
            "GET",
            f"{V3}/user/{quote('@pr_alice:localhost')}/account_data/m.push_rules",
            token=alice,
        )
        assert status == 200 and body == pushed[0]["content"]


async def test_pushers(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = (await c.register("pu_alice"))["access_token"]
        pusher = {
            "pushkey": "key-1",
            "kind": "http",
            "app_id": "org.example.app",
            "app_display_name": "App",
            "device_display_name": "Phone",
            "lang": "en",
            "data": {"url": "https://push.example.org/_matrix/push/v1/notify"},
        }
        status, body = await c.call("GET", f"{V3}/pushers", token=alice)
        assert (status, body) == (200, {"pushers": []})
        status, _ = await c.call("POST", f"{V3}/pushers/set", pusher, token=alice)
        assert status == 200
        status, body = await c.call("GET", f"{V3}/pushers", token=alice)
        assert [p["pushkey"] for p in body["pushers"]] == ["key-1"]
        status, body = await c.call(
            "POST", f"{V3}/pushers/set", {**pusher, "data": {}}, token=alice
        )
        assert status == 400
        wrong_path = {"url": "https://push.example.org/notify"}
        status, body = await c.call(
            "POST", f"{V3}/pushers/set", {**pusher, "data": wrong_path}, token=alice
        )
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
        status, body = await c.call(
            "POST",
            f"{V3}/pushers/set",
            {k: v for k, v in pusher.items() if k != "lang"},
            token=alice,
        )
        assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
        status, _ = await c.call(
            "POST",
            f"{V3}/pushers/set",
            {"pushkey": "key-1", "app_id": "org.example.app", "kind": None},
            token=alice,
        )
        assert status == 200
        status, body = await c.call("GET", f"{V3}/pushers", token=alice)
        assert body == {"pushers": []}
