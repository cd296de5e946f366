"""The router, the rate limiter and JSON body checks, without a server."""

from __future__ import annotations

import pytest

from myelin.clientapi.http import MatrixError, Request, Response, json_response
from myelin.clientapi.ratelimit import RateLimiter
from myelin.clientapi.router import Router


async def _ok(req: Request) -> Response:
    return json_response(req.params)


def test_router_literals_parameters_and_methods() -> None:
    r = Router()
    r.add("GET", "/_matrix/client/v3/devices", _ok, auth=True)
    r.add(["GET", "PUT"], "/_matrix/client/v3/devices/{device_id}", _ok)
    r.add("GET", "/_matrix/client/v3/user/{user_id}/filter/{filter_id}", _ok)
    m = r.resolve("GET", "/_matrix/client/v3/devices")
    assert m.route.auth and m.params == {}
    m = r.resolve("PUT", "/_matrix/client/v3/devices/AB%2FC")
    assert m.params == {"device_id": "AB/C"}  # an encoded slash stays inside the segment
    m = r.resolve("GET", "/_matrix/client/v3/user/%40a%3Ab/filter/7")
    assert m.params == {"user_id": "@a:b", "filter_id": "7"}
    with pytest.raises(MatrixError) as info:
        r.resolve("DELETE", "/_matrix/client/v3/devices")
    assert (info.value.status, info.value.errcode) == (405, "M_UNRECOGNIZED")
    for path in (
        "/_matrix/client/v3/devices/",
        "/_matrix/client/v3/nope",
        "/x",
        "/_matrix/client/v3/devices/%ff%fe",
    ):
        with pytest.raises(MatrixError) as info:
            r.resolve("GET", path)
        assert (info.value.status, info.value.errcode) == (404, "M_UNRECOGNIZED")
    assert r.known_path("/_matrix/client/v3/devices/X")
    assert not r.known_path("/_matrix/client/v3/devic")
    with pytest.raises(ValueError, match="duplicate"):
        r.add("GET", "/_matrix/client/v3/devices", _ok)


def test_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(per_second=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.check("a") for _ in range(3)] == [0, 0, 0]
    wait = limiter.check("a")
    assert 0 < wait <= 500
    assert limiter.check("b") == 0  # buckets are per caller
    now[0] += 0.5
    assert limiter.check("a") == 0
    assert limiter.check("a") > 0


def _req(body: bytes) -> Request:
    return Request("POST", "/", b"", {}, body, "127.0.0.1")


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1.5}',
        b'{"a": [1, {"b": 9007199254740992}]}',
        b'{"a": -9007199254740992}',
        b'{"a": 18446744073709551616}',
        b'{"a": 1, "a": 2}',
    ],
)
def test_canonical_bodies_refuse_floats_and_big_integers(body: bytes) -> None:
    assert isinstance(_req(body).json(), dict)  # plain JSON accepts them
    with pytest.raises(MatrixError) as info:
        _req(body).json(canonical=True)
    assert info.value.errcode == "M_BAD_JSON"


def test_canonical_bodies_accept_the_edges() -> None:
    body = b'{"a": 9007199254740991, "b": -9007199254740991, "c": [true, null, "x"]}'
    assert _req(body).json(canonical=True)["a"] == 2**53 - 1


def test_public_base_url_prefers_config_then_the_request() -> None:
    req = Request("GET", "/", b"", {"host": "chat.example:8448"}, b"", "1.2.3.4", scheme="https")
    assert req.public_base_url(None) == "https://chat.example:8448"
    assert req.public_base_url("https://matrix.example/") == "https://matrix.example"
    odd = Request("GET", "/", b"", {"host": 'x"><script>'}, b"", "1.2.3.4")
    assert odd.public_base_url(None) == "http://localhost"
