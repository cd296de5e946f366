"""Room aliases on a server whose name has a port (`localhost:8448`, as under Sytest).

The alias's server name is everything after its first colon, so the port belongs to it;
splitting at the last colon took only the port and refused every local alias.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.client import SpecClient
from tests.support.rooms import create_room, register
from tests.support.server import free_port, start_server

V3 = "/_matrix/client/v3"


@pytest.mark.parametrize("name", ["localhost:{port}", "[::1]:{port}"])
async def test_local_alias_with_port_in_server_name(tmp_path: Path, name: str) -> None:
    port = free_port()
    server_name = name.format(port=port)
    server = start_server(
        tmp_path / "data", port=port, server_name=server_name, registration="open"
    )
    try:
        async with SpecClient(server.base_url) as c:
            token = await register(c, "alice")
            room_id = await create_room(c, token, {"room_alias_name": "lobby"})
            alias = f"#lobby:{server_name}"
            status, body = await c.call("GET", f"{V3}/directory/room/{alias.replace('#', '%23')}")
            assert (status, body["room_id"]) == (200, room_id)
            status, body = await c.call(
                "PUT",
                f"{V3}/directory/room/%23other:elsewhere.example",
                {"room_id": room_id},
                token=token,
            )
            assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    finally:
        server.stop()
