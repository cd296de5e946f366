"""Push rules, pushers and `/notifications` (pushrules.yaml, pusher.yaml,
notifications.yaml).

The rule operations are the push engine's pure functions (`myelin.push.ruleset`); this
module only maps HTTP onto them and stores the result, which also republishes the
`m.push_rules` account data so `/sync` tells every client of the change. Pushers are
stored and listed here; `myelin.push.sender` delivers to their push gateways.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from myelin.clientapi.http import (
    Request,
    Response,
    bad_json,
    invalid_param,
    json_response,
    missing_param,
)
from myelin.clientapi.router import CLIENT_PREFIXES, Router
from myelin.push.counts import notifications
from myelin.push.evaluator import compile_ruleset
from myelin.push.gateway import now_seconds
from myelin.push.rules import RuleKind, parse_kind
from myelin.push.ruleset import (
    delete_rule,
    effective_ruleset,
    get_rule,
    put_rule,
    set_actions,
    set_enabled,
)
from myelin.storage import Database, Txn
from myelin.syncapi.notifier import Notifier
from myelin.userapi.accountdata import PUSHER_DEVICE, AccountData

MAX_NOTIFICATIONS = 100


def paths(suffix: str) -> list[str]:
    return [p + suffix for p in CLIENT_PREFIXES]


def _scope(req: Request) -> None:
    """Only the `global` scope exists (pushrules.yaml)."""
    if req.params["scope"] != "global":
        raise invalid_param(f"Unknown push rule scope: {req.params['scope']!r}")


def _kind(req: Request) -> RuleKind:
    _scope(req)
    return parse_kind(req.params["kind"])


def _attr(req: Request) -> str:
    name = req.params["attr"]
    if name not in ("enabled", "actions"):
        raise invalid_param(f"Unknown push rule attribute: {name!r}")
    return name


async def malformed(req: Request) -> Response:
    """A push-rule path without a scope, kind or rule ID: 400, as Synapse answers."""
    raise invalid_param("The push rule path needs a scope, a kind and a rule ID")


def _check_pusher(body: dict[str, Any]) -> dict[str, Any]:
    """The pusher to store, validated as pusher.yaml describes."""
    pusher: dict[str, Any] = {}
    for key, limit in (("pushkey", 512), ("app_id", 64)):
        value = body.get(key)
        if value is None:
            raise missing_param(f"Missing '{key}'")
        if not isinstance(value, str) or not value:
            raise bad_json(f"'{key}' must be a non-empty string")
        if len(value.encode()) > limit:
            raise invalid_param(f"'{key}' is longer than {limit}")
        pusher[key] = value
    kind = body.get("kind")
    if not isinstance(kind, str):
        raise bad_json("'kind' must be a string or null")
    pusher["kind"] = kind
    for key in ("app_display_name", "device_display_name", "lang"):
        value = body.get(key)
        if value is None:
            raise missing_param(f"Missing '{key}'")
        if not isinstance(value, str):
            raise bad_json(f"'{key}' must be a string")
        pusher[key] = value
    profile_tag = body.get("profile_tag")
    if profile_tag is not None:
        if not isinstance(profile_tag, str):
            raise bad_json("'profile_tag' must be a string")
        pusher["profile_tag"] = profile_tag
    data = body.get("data")
    if data is None:
        raise missing_param("Missing 'data'")
    if not isinstance(data, dict):
        raise bad_json("'data' must be an object")
    if kind == "http":
        url = data.get("url")
        if (
            not isinstance(url, str)
            or not url.startswith(("https://", "http://"))
            or urlsplit(url).path != "/_matrix/push/v1/notify"
        ):
            raise invalid_param(
                "'data.url' must be an http(s) URL with the path /_matrix/push/v1/notify"
            )
    pusher["data"] = data
    return pusher


def install(router: Router, store: AccountData, db: Database, notifier: Notifier) -> None:
    async def get_all(req: Request) -> Response:
        user_id = req.user().user_id
        ruleset = effective_ruleset(await store.push_rules(user_id), user_id)
        return json_response({"global": ruleset.to_json()})

    async def get_global(req: Request) -> Response:
        _scope(req)
        user_id = req.user().user_id
        ruleset = effective_ruleset(await store.push_rules(user_id), user_id)
        return json_response(ruleset.to_json())

    async def get_kind(req: Request) -> Response:
        user_id = req.user().user_id
        kind = _kind(req)
        ruleset = effective_ruleset(await store.push_rules(user_id), user_id)
        return json_response([rule.to_json() for rule in ruleset.of_kind(kind)])

    async def get_one(req: Request) -> Response:
        user_id = req.user().user_id
        kind = _kind(req)
        rule = get_rule(await store.push_rules(user_id), user_id, kind, req.params["rule_id"])
        return json_response(rule.to_json())

    async def put_one(req: Request) -> Response:
        user_id = req.user().user_id
        kind = _kind(req)
        rule_id = req.params["rule_id"]
        body = req.json()
        before, after = req.query_param("before"), req.query_param("after")
        await store.update_push_rules(
            user_id, lambda s: put_rule(s, kind, rule_id, body, before=before, after=after)
        )
        return json_response({})

    async def delete_one(req: Request) -> Response:
        user_id = req.user().user_id
        kind = _kind(req)
        rule_id = req.params["rule_id"]
        await store.update_push_rules(user_id, lambda s: delete_rule(s, kind, rule_id))
        return json_response({})

    def attribute() -> tuple[Any, Any]:
        async def get(req: Request) -> Response:
            user_id = req.user().user_id
            kind = _kind(req)
            name = _attr(req)
            rule = get_rule(await store.push_rules(user_id), user_id, kind, req.params["rule_id"])
            value = rule.enabled if name == "enabled" else rule.to_json()["actions"]
            return json_response({name: value})

        async def put(req: Request) -> Response:
            user_id = req.user().user_id
            kind = _kind(req)
            name = _attr(req)
            rule_id = req.params["rule_id"]
            body = req.json()
            if name not in body:
                raise missing_param(f"Missing '{name}'")
            value = body[name]
            op = set_enabled if name == "enabled" else set_actions
            await store.update_push_rules(user_id, lambda s: op(s, kind, rule_id, value))
            return json_response({})

        return get, put

    async def get_pushers(req: Request) -> Response:
        pushers = await store.pushers(req.user().user_id)
        # `pushkey_ts` is kept for the push gateway (devices[].pushkey_ts), and the
        # creating device for password changes (`PUSHER_DEVICE`); neither is listed.
        hidden = ("pushkey_ts", PUSHER_DEVICE)
        return json_response(
            {"pushers": [{k: v for k, v in p.items() if k not in hidden} for p in pushers]}
        )

    async def set_pusher(req: Request) -> Response:
        user_id = req.user().user_id
        body = req.json()
        if "kind" in body and body["kind"] is None:
            app_id, pushkey = body.get("app_id"), body.get("pushkey")
            if not isinstance(app_id, str) or not isinstance(pushkey, str):
                raise missing_param("'app_id' and 'pushkey' are required")
            await store.delete_pusher(user_id, app_id, pushkey)
            return json_response({})
        pusher = _check_pusher(body)
        pusher["pushkey_ts"] = now_seconds()
        pusher[PUSHER_DEVICE] = req.user().device_id
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise bad_json("'append' must be a boolean")
        await store.set_pusher(user_id, pusher, append)
        return json_response({})

    async def get_notifications(req: Request) -> Response:
        user_id = req.user().user_id
        limit_text = req.query_param("limit")
        from_text = req.query_param("from")
        only = req.query_param("only")
        try:
            limit = int(limit_text) if limit_text else 20
            before = int(from_text) if from_text else None
        except ValueError:
            raise invalid_param("'limit' and 'from' must be integers") from None
        if limit < 1 or (before is not None and before < 0):
            raise invalid_param("'limit' must be positive and 'from' not negative")
        limit = min(limit, MAX_NOTIFICATIONS)
        rules = compile_ruleset(effective_ruleset(await store.push_rules(user_id), user_id))
        upto = notifier.position

        async def q(t: Txn) -> tuple[list[dict[str, Any]], int | None]:
            rows = await t.fetchall(
                "SELECT room_id FROM sync_memberships WHERE user_id = ? AND membership = 'join'",
                user_id,
            )
            return await notifications(
                t,
                user_id,
                [str(r[0]) for r in rows],
                upto,
                rules,
                before=before,
                limit=limit,
                only_highlight=only == "highlight",
            )

        found, next_pos = await db.read(q)
        # Sytest (and Synapse) always give `profile_tag`; rules carry no tag any more, so
        # it is the tag of the user's pushers when they set one, else empty.
        tags = [p["profile_tag"] for p in await store.pushers(user_id) if p.get("profile_tag")]
        for entry in found:
            entry.setdefault("profile_tag", tags[0] if tags else "")
        body: dict[str, Any] = {"notifications": found}
        if next_pos is not None:
            body["next_token"] = str(next_pos)
        return json_response(body)

    # Every path under /pushrules/ is routed here, so that a malformed one (a missing or
    # unknown scope, kind or attribute, an empty rule ID) is 400 as Synapse answers and
    # Sytest checks, rather than the router's 404. `/pushrules` without the slash stays
    # unknown (404): the spec only defines `/pushrules/`.
    add = router.add
    scope = "/pushrules/{scope}"
    kind = scope + "/{kind}"
    rule = kind + "/{rule_id}"
    add("GET", paths("/pushrules/"), get_all, auth=True)
    add(("PUT", "DELETE"), paths("/pushrules/"), malformed, auth=True)
    add(("GET", "PUT", "DELETE"), paths(scope), malformed, auth=True)
    add("GET", paths(scope + "/"), get_global, auth=True)
    add(("PUT", "DELETE"), paths(scope + "/"), malformed, auth=True)
    add(("GET", "PUT", "DELETE"), paths(kind), malformed, auth=True)
    add("GET", paths(kind + "/"), get_kind, auth=True)
    add(("PUT", "DELETE"), paths(kind + "/"), malformed, auth=True)
    add("GET", paths(rule), get_one, auth=True)
    add("PUT", paths(rule), put_one, auth=True)
    add("DELETE", paths(rule), delete_one, auth=True)
    get_attr, put_attr = attribute()
    add("GET", paths(rule + "/{attr}"), get_attr, auth=True)
    add("PUT", paths(rule + "/{attr}"), put_attr, auth=True)
    add("GET", paths("/pushers"), get_pushers, auth=True)
    add("POST", paths("/pushers/set"), set_pusher, auth=True)
    add("GET", paths("/notifications"), get_notifications, auth=True)
