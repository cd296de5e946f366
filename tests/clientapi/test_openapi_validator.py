"""The spec validator itself: it must refuse what the spec does not allow."""

from __future__ import annotations

from pathlib import Path

import pytest

from myelin.clientapi import account, devices, discovery
from myelin.clientapi.context import ClientContext
from myelin.clientapi.router import Router
from myelin.server.config import Config
from tests.support.openapi import SpecMismatch, find_operation, validate_response

V3 = "/_matrix/client/v3"


def test_accepts_what_the_spec_allows() -> None:
    validate_response("GET", f"{V3}/account/whoami", 200, {"user_id": "@a:b", "device_id": "D"})
    validate_response("GET", "/_matrix/client/r0/account/whoami", 200, {"user_id": "@a:b"})
    # A $ref into another file (definitions/auth_response.yaml).
    validate_response("POST", f"{V3}/register", 401, {"flows": [{"stages": ["m.login.dummy"]}]})
    validate_response("GET", f"{V3}/devices/X", 404, {"errcode": "M_NOT_FOUND", "error": "x"})
    validate_response(
        "GET",
        "/_matrix/key/v2/server",
        200,
        {
            "server_name": "a",
            "valid_until_ts": 1,
            "verify_keys": {"ed25519:x": {"key": "k"}},
            "old_verify_keys": {},
            "signatures": {"a": {"ed25519:x": "s"}},
        },
    )


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", f"{V3}/account/whoami", 200, {"device_id": "D"}),  # user_id missing
        ("GET", f"{V3}/account/whoami", 200, {"user_id": 5}),
        ("POST", f"{V3}/register", 401, {"flows": "dummy"}),
        ("GET", f"{V3}/devices", 200, {"devices": [{"display_name": "no id"}]}),
        ("GET", f"{V3}/account/whoami", 418, {}),  # a status the spec does not list
        ("GET", f"{V3}/no/such/endpoint", 200, {}),
        ("GET", f"{V3}/account/whoami", 401, {"error": "no errcode"}),
    ],
)
def test_refuses_what_the_spec_does_not_allow(
    method: str, path: str, status: int, body: object
) -> None:
    with pytest.raises(SpecMismatch):
        validate_response(method, path, status, body)


def test_picks_the_literal_route_over_a_parameter() -> None:
    op = find_operation("GET", f"{V3}/register/available")
    assert op.template == f"{V3}/register/available"
    assert find_operation("PUT", f"{V3}/devices/ABC").template == f"{V3}/devices/{{deviceId}}"


def test_every_route_of_the_account_modules_is_a_spec_operation(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path)
    ctx = ClientContext(config=config, users=None, key=None)  # type: ignore[arg-type]
    router = Router()
    discovery.install(router, ctx)
    account.install(router, ctx)
    devices.install(router, ctx)
    routes = router.routes()
    assert ("POST", f"{V3}/register") in routes
    # Served for compatibility, not in the spec: Synapse's admin registration (Sytest uses
    # it), the human pages, and the key lookup by ID that the spec dropped.
    outside_spec = {
        "/_synapse/admin/v1/register",
        "/",
        "/_matrix/static",
        "/_matrix/static/",
        "/_matrix/key/v2/server/{key_id}",
    }
    for method, template in routes:
        if template in outside_spec:
            continue
        concrete = template.replace("{", "X").replace("}", "")
        op = find_operation(method, concrete)
        assert op.method == method
