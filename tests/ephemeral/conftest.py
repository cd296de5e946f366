"""HTTP tests of the ephemeral streams run on a server per database backend."""

from __future__ import annotations

from tests.support.backends import server_per_backend_fixture

server = server_per_backend_fixture("module")
