"""Two real Myelin servers that federate over TLS on loopback (`tests.support.federation`),
one pair for each test module of this folder."""

from __future__ import annotations

from tests.support.federation import Peer, make_cert, peers_fixture, start_peer

# Re-exported for the modules that import them from here.
__all__ = ["Peer", "make_cert", "peers", "start_peer"]

peers = peers_fixture()
