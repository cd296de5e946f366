"""Fixtures every test suite may use; the helpers themselves live in `tests/support/`."""

from __future__ import annotations

from tests.support.server import myelin_server, shared_server

__all__ = ["myelin_server", "shared_server"]
