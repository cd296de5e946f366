"""HTTP tests of the ephemeral streams run on a server per database backend."""

from __future__ import annotations

from tests.push_http.conftest import server

__all__ = ["server"]
