"""Request signing and the `X-Matrix` header (server-server-api.md, "Request
Authentication"): what one server signs is what the other verifies."""

from __future__ import annotations

import pytest

from myelin.core.federation import (
    XMatrix,
    XMatrixError,
    format_x_matrix,
    parse_x_matrix,
    server_acl_allows,
    sign_request,
    signed_request_blob,
)
from myelin.core.signing import SignatureError, SigningKey, verify_signature


def test_signed_request_verifies_with_the_same_inputs_only() -> None:
    key = SigningKey.from_seed(bytes(range(32)), "k1")
    header = sign_request("PUT", "/_matrix/x?a=1", "a.example", "b.example", key, {"n": 1})
    auth = parse_x_matrix(header)
    assert (auth.origin, auth.destination, auth.key) == ("a.example", "b.example", "ed25519:k1")
    blob = signed_request_blob("PUT", "/_matrix/x?a=1", "a.example", "b.example", {"n": 1})
    verify_signature(blob, auth.sig, key.verify_key)
    other = signed_request_blob("PUT", "/_matrix/x?a=2", "a.example", "b.example", {"n": 1})
    with pytest.raises(SignatureError):
        verify_signature(other, auth.sig, key.verify_key)


def test_float_content_is_still_authenticated() -> None:
    # Refusing a float is the endpoint's business (M_BAD_JSON), not the signature check's.
    blob = signed_request_blob("PUT", "/x", "a", "b", {"v": 1.5})
    assert b'"v":1.5' in blob


@pytest.mark.parametrize(
    "header",
    [
        'X-Matrix origin="a.example",destination="b.example",key="ed25519:k",sig="c2ln"',
        'X-Matrix  origin=a.example , key="ed25519:k",\tsig=c2ln ,destination=b.example',
        'x-matrix ORIGIN="a.example",Key="ed25519:k",SIG="c2ln",destination="b\\.example"',
    ],
)
def test_parse_accepts_rfc9110_forms(header: str) -> None:
    auth = parse_x_matrix(header)
    assert (auth.origin, auth.key, auth.sig) == ("a.example", "ed25519:k", "c2ln")
    assert auth.destination == "b.example"


def test_parse_old_servers_without_destination_and_with_colons() -> None:
    auth = parse_x_matrix("X-Matrix origin=a.example:8448,key=ed25519:k,sig=c2ln")
    assert (auth.origin, auth.destination) == ("a.example:8448", None)


@pytest.mark.parametrize(
    "header",
    ["Bearer abc", 'X-Matrix origin="a"', 'X-Matrix origin="a,key="k",sig="s"', "X-Matrix"],
)
def test_parse_refuses_bad_headers(header: str) -> None:
    with pytest.raises(XMatrixError):
        parse_x_matrix(header)


def test_format_round_trips() -> None:
    auth = XMatrix("a.example", "b.example", "ed25519:k", "c2ln")
    assert parse_x_matrix(format_x_matrix(auth)) == auth


@pytest.mark.parametrize(
    ("content", "server", "allowed"),
    [
        (None, "evil.example", True),
        ({"allow": ["*"]}, "good.example:8448", True),
        ({"allow": ["*"], "deny": ["evil.example"]}, "evil.example:8448", False),
        ({"allow": ["*.good.example"]}, "a.good.example", True),
        ({"allow": ["*.good.example"]}, "good.example", False),
        ({"allow": ["*"], "allow_ip_literals": False}, "127.0.0.1:8448", False),
        ({"allow": ["*"], "allow_ip_literals": False}, "[::1]:8448", False),
        ({"allow": ["*"]}, "127.0.0.1", True),
        ({"deny": ["*"]}, "any.example", False),
        ({}, "any.example", False),
        ({"allow": ["ser?er.example"]}, "SERVER.example", True),
    ],
)
def test_server_acl(content: dict[str, object] | None, server: str, allowed: bool) -> None:
    assert server_acl_allows(content, server) is allowed
