"""Validate responses against the official OpenAPI definitions of the Matrix spec.

`SpecValidator().validate(method, path, status, body)` finds the operation for a concrete
request path (e.g. `/_matrix/client/v3/devices/ABC`) among every `*.yaml` of the
client-server and server-server APIs, picks the response schema for the status code,
resolves every `$ref` (across files and inside a file), and checks the body with
jsonschema. `r0` paths are checked against their `v3` definitions. A response the spec
does not describe (unknown path, method or status) is an error too: the point is that
every answer of the server is one the spec allows.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SPEC_ROOT = Path(
    os.environ.get("MYELIN_MATRIX_SPEC", Path(__file__).resolve().parents[3] / "shared/matrix-spec")
)
API_DIRS = ("client-server", "server-server")


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecMismatch(AssertionError):
    """A response that the spec does not allow, with the reason."""


@cache
def _load(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)


def _pointer(doc: Any, fragment: str) -> Any:
    node = doc
    for part in fragment.lstrip("/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def resolve(node: Any, base: Path, stack: tuple[str, ...] = ()) -> Any:
    """A copy of `node` with every `$ref` replaced by what it points to.

    A reference that is already being resolved further up (a recursive schema) becomes
    `{}` (anything), which keeps the schema finite and still checks everything around it.
    """
    if isinstance(node, list):
        return [resolve(item, base, stack) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        file_part, _, fragment = ref.partition("#")
        target_file = (base.parent / file_part).resolve() if file_part else base
        key = f"{target_file}#{fragment}"
        if key in stack:
            return {}
        target = _pointer(_load(target_file), fragment)
        resolved = resolve(target, target_file, (*stack, key))
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        if siblings and isinstance(resolved, dict):
            return {**resolved, **resolve(siblings, base, stack)}
        return resolved
    return {
        k: resolve(v, base, stack)
        for k, v in node.items()
        if not (isinstance(k, str) and (k.startswith("x-") or k in ("example", "examples")))
    }


@dataclass(frozen=True)
class Operation:
    file: Path
    template: str
    method: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]


def _base_path(doc: dict[str, Any]) -> str:
    servers = doc.get("servers") or [{}]
    variables = servers[0].get("variables", {})
    base: str = variables.get("basePath", {}).get("default", "")
    return base


@cache
def operations() -> tuple[Operation, ...]:
    ops: list[Operation] = []
    for api in API_DIRS:
        for path in sorted((SPEC_ROOT / "data/api" / api).glob("*.yaml")):
            doc = _load(path.resolve())
            if not isinstance(doc, dict) or "paths" not in doc:
                continue
            base = _base_path(doc)
            for template, item in doc["paths"].items():
                full = base + template
                regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(full)) + "$"
                # A trailing parameter may be empty (`.../state/{eventType}/{stateKey}` with
                # the empty state key, written with or without the final slash).
                if regex.endswith("[^/]+$"):
                    regex = regex.removesuffix("[^/]+$") + "[^/]*$"
                for method, spec in item.items():
                    if method in ("get", "put", "post", "delete", "patch", "head"):
                        ops.append(
                            Operation(path.resolve(), full, method.upper(), re.compile(regex), spec)
                        )
    return tuple(ops)


def find_operation(method: str, path: str) -> Operation:
    path = path.split("?", 1)[0]
    candidates = [path]
    if path.startswith("/_matrix/client/r0/"):
        candidates.append("/_matrix/client/v3/" + path[len("/_matrix/client/r0/") :])
    candidates += [c + "/" for c in candidates if not c.endswith("/")]
    for candidate in candidates:
        matches = [op for op in operations() if op.method == method and op.pattern.match(candidate)]
        if matches:
            # Prefer the most literal template (fewest parameters) when several match.
            return min(matches, key=lambda op: op.template.count("{"))
    raise SpecMismatch(f"the spec has no operation {method} {path}")


#: Errors any endpoint may give although its definition does not list them: malformed or
#: mistyped JSON (M_NOT_JSON, M_BAD_JSON, the spec's "common error codes"), a body over the
#: limit, rate limiting, an internal failure; 401 only where a token is required.
GENERIC_ERRORS = (400, 413, 429, 500)


def _standard_error() -> dict[str, Any]:
    error_file = (SPEC_ROOT / "data/api/client-server/definitions/errors/error.yaml").resolve()
    return dict(resolve(_load(error_file), error_file))


def response_schema(method: str, path: str, status: int) -> dict[str, Any]:
    op = find_operation(method, path)
    responses = op.spec.get("responses", {})
    response = responses.get(str(status))
    generic = status in GENERIC_ERRORS or (status == 401 and bool(op.spec.get("security")))
    if response is None and generic:
        return _standard_error()
    if response is None:
        raise SpecMismatch(
            f"{method} {op.template}: the spec lists no {status} response "
            f"(it lists {', '.join(sorted(responses))})"
        )
    response = resolve(response, op.file)
    content = response.get("content", {})
    media = content.get("application/json")
    if media is None and status >= 400:
        # The spec lists the status without a body; every error is still a standard error
        # response (client-server-api, "Standard error response").
        return _standard_error()
    if media is None:
        raise SpecMismatch(f"{method} {op.template} {status}: no application/json response")
    schema: dict[str, Any] = media.get("schema", {})
    return schema


def validate_response(method: str, path: str, status: int, body: Any) -> None:
    """Raise SpecMismatch unless `body` is what the spec allows for this response."""
    schema = response_schema(method, path, status)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(
            f"at {'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in errors[:5]
        )
        raise SpecMismatch(f"{method} {path} {status}: {details}")
