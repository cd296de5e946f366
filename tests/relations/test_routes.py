"""Every route of the relations, search, spaces and report modules is an operation of the
spec, with the same method and version prefix."""

from __future__ import annotations

from myelin.clientapi import relations, report, search, spaces
from myelin.clientapi.router import Router
from tests.support.openapi import find_operation


def test_every_route_is_a_spec_operation() -> None:
    router = Router()
    for module in (relations, search, spaces, report):
        module.install(router, None)
    routes = router.routes()
    assert len(routes) == 14  # v1: 6; search and the three reports under both v3 and r0
    for method, template in routes:
        concrete = template.replace("{", "X").replace("}", "")
        op = find_operation(method, concrete)
        assert op.method == method, template
        version = template.split("/")[3]
        # `r0` is served beside `v3` for older clients.
        expected = op.template.split("/")[3]
        assert version == expected or (version, expected) == ("r0", "v3"), template
