"""`POST /users/{userId}/report` (report_content.yaml, Matrix 1.14) on both backends: the
report is stored for the administrators, an unknown user gets the same 200 (the spec lets
a server conceal who has an account), bad input gets a clear error. Found missing (404
M_UNRECOGNIZED) by the acceptance audit of issue #5."""

from __future__ import annotations

from urllib.parse import quote

from myelin.clientapi.report import user_reports
from myelin.storage import Txn, open_database
from tests.relations.conftest import DATABASES
from tests.support.client import SpecClient
from tests.support.server import ServerProcess

V3 = "/_matrix/client/v3"


def q(value: str) -> str:
    return quote(value, safe="")


async def test_report_a_user(backend_server: ServerProcess) -> None:
    async with SpecClient(backend_server.base_url) as c:
        alice = (await c.register("ru_alice"))["access_token"]
        await c.register("ru_bob")
        status, body = await c.call(
            "POST",
            f"{V3}/users/{q('@ru_bob:localhost')}/report",
            {"reason": "spam"},
            token=alice,
        )
        assert (status, body) == (200, {})
        status, body = await c.call(
            "POST",
            f"{V3}/users/{q('@ru_nobody:localhost')}/report",
            {"reason": "spam"},
            token=alice,
        )
        # The spec lets a server conceal who has an account: 200 for an unknown user too.
        assert (status, body) == (200, {})
        status, body = await c.call(
            "POST", f"{V3}/users/{q('not-a-user-id')}/report", {"reason": "x"}, token=alice
        )
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
        status, body = await c.call(
            "POST", f"{V3}/users/{q('@ru_bob:localhost')}/report", {"reason": 5}, token=alice
        )
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")
        status, body = await c.call(
            "POST", f"{V3}/users/{q('@ru_bob:localhost')}/report", {"reason": "x"}
        )
        assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN")

        async def stored(t: Txn) -> list[tuple[str, str | None]]:
            return await user_reports(t, "@ru_bob:localhost")

        db = await open_database(DATABASES[backend_server.port])
        try:
            assert await db.read(stored) == [("@ru_alice:localhost", "spam")]
        finally:
            await db.close()
