"""Identifier grammar (appendices.md, "Identifier Grammar"): every rule allowed and denied."""

from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myelin.core.identifiers import (
    MAX_ID_BYTES,
    EventID,
    InvalidIdentifier,
    RoomAlias,
    RoomID,
    UserID,
    is_valid_event_id,
    is_valid_localpart,
    is_valid_namespaced_identifier,
    is_valid_opaque_identifier,
    is_valid_room_alias,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    parse_server_name,
    server_name_of,
)
from myelin.core.roomversions import EventFormat, room_version

V11 = room_version("11")
V12 = room_version("12")
HASH = "Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"
"""The v12 room ID of the specification's example, without its sigil."""

# -- server names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "host", "port"),
    [
        # The examples of appendices.md, "Server Name".
        ("matrix.org", "matrix.org", None),
        ("matrix.org:8888", "matrix.org", 8888),
        ("1.2.3.4", "1.2.3.4", None),
        ("1.2.3.4:1234", "1.2.3.4", 1234),
        ("[1234:5678::abcd]", "[1234:5678::abcd]", None),
        ("[1234:5678::abcd]:5678", "[1234:5678::abcd]", 5678),
        # More of the grammar.
        ("localhost", "localhost", None),
        ("MATRIX.ORG", "MATRIX.ORG", None),
        ("a", "a", None),
        ("xn--bcher-kva.example", "xn--bcher-kva.example", None),
        ("my-server.example.com:0", "my-server.example.com", 0),
        ("example.com:99999", "example.com", 99999),
        ("example.com:00443", "example.com", 443),
        ("0.0.0.0", "0.0.0.0", None),
        ("255.255.255.255:1", "255.255.255.255", 1),
        ("[::1]", "[::1]", None),
        ("[::1]:8448", "[::1]", 8448),
        ("[::]", "[::]", None),
        (
            "[ABCD:EF01:2345:6789:ABCD:EF01:2345:6789]",
            "[ABCD:EF01:2345:6789:ABCD:EF01:2345:6789]",
            None,
        ),
        ("[::ffff:129.144.52.38]", "[::ffff:129.144.52.38]", None),
        ("[1080::8:800:200c:417a]:1", "[1080::8:800:200c:417a]", 1),
        ("a" * 255, "a" * 255, None),
        ("a" * 255 + ":1", "a" * 255, 1),
        ("1.2.3", "1.2.3", None),  # not a dotted quad: a DNS-name by the grammar
        ("1.2.3.4.5000", "1.2.3.4.5000", None),
    ],
)
def test_valid_server_names(name: str, host: str, port: int | None) -> None:
    assert parse_server_name(name) == (host, port)
    assert is_valid_server_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        ":8448",
        "example.com:",
        "example.com:123456",
        "example.com:-1",
        "example.com:8a",
        "example.com:１２",  # fullwidth digits are not DIGIT
        "example.com:80:80",
        "exa_mple.com",
        "exa mple.com",
        "example.com/",
        "bücher.example",
        "a" * 256,
        "1.2.3.256",
        "256.1.1.1:80",
        "[1234:5678::abcd",
        "[1234:5678::abcd]x",
        "[1234:5678::abcd]:",
        "[1234:5678::abcd]:port",
        "[]",
        "[:]",
        "[1:2:3:4:5:6:7:8:9]",
        "[1::2::3]",
        "[fe80::1%eth0]",
        "[12345::]",
        "[1.2.3.4]",
        "[g::1]",
        "::1",
        "1234:5678::abcd",
    ],
)
def test_invalid_server_names(name: str) -> None:
    with pytest.raises(InvalidIdentifier) as info:
        parse_server_name(name)
    assert info.value.kind == "server_name"
    assert not is_valid_server_name(name)


def test_server_name_must_be_a_string() -> None:
    with pytest.raises(InvalidIdentifier):
        parse_server_name(None)  # type: ignore[arg-type]


# -- user IDs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_id",
    [
        "@alice:example.com",
        "@a:b",
        "@0123456789abcdefghijklmnopqrstuvwxyz._=-/+:example.com",
        "@alice:example.com:8448",
        "@alice:1.2.3.4",
        "@alice:[::1]:8448",
        "@alice:[1234:5678::abcd]",
    ],
)
def test_compliant_user_ids(user_id: str) -> None:
    assert is_valid_user_id(user_id, historical=False)
    assert is_valid_user_id(user_id)
    parsed = UserID.parse(user_id, historical=False)
    assert str(parsed) == user_id
    assert parsed.is_compliant


def test_user_id_parts() -> None:
    parsed = UserID.parse("@alice:[::1]:8448")
    assert parsed == UserID("alice", "[::1]:8448")
    assert server_name_of("@alice:[::1]:8448") == "[::1]:8448"


@pytest.mark.parametrize(
    "user_id",
    [
        "@Alice:example.com",  # upper case
        "@:example.com",  # empty localpart
        "@al ice:example.com",
        "@alice!:example.com",
        "@alice#:example.com",
        "@ali*ce:example.com",
        "@ünïcode:example.com",
        "@\x01:example.com",
        "@~tilde:example.com",
    ],
)
def test_historical_user_ids_are_accepted_but_not_compliant(user_id: str) -> None:
    assert is_valid_user_id(user_id)
    assert is_valid_user_id(user_id, historical=True)
    assert not is_valid_user_id(user_id, historical=False)
    assert not UserID.parse(user_id).is_compliant
    with pytest.raises(InvalidIdentifier):
        UserID.parse(user_id, historical=False)


@pytest.mark.parametrize(
    "user_id",
    [
        "alice:example.com",  # no sigil
        "#alice:example.com",
        "@alice",  # no domain
        "@alice:",  # empty domain
        "@alice:exa mple.com",
        "@alice:example.com:port",
        "@al\x00ice:example.com",  # NUL is never allowed
        "@al\ud800ice:example.com",  # nor surrogates
        "@alice:[::1",
        "",
        "@",
    ],
)
def test_invalid_user_ids(user_id: str) -> None:
    assert not is_valid_user_id(user_id)
    assert not is_valid_user_id(user_id, historical=False)
    with pytest.raises(InvalidIdentifier) as info:
        UserID.parse(user_id)
    assert info.value.kind == "user_id"


def test_user_id_colon_splits_at_the_first_colon() -> None:
    # The localpart cannot contain ':', so "@a:b:c" is localpart "a" on server "b:c",
    # which is not a valid server name (port must be digits).
    assert not is_valid_user_id("@a:b:c")
    assert UserID.parse("@a:b:1") == UserID("a", "b:1")


def test_user_id_255_byte_limit_counts_bytes() -> None:
    server = "example.com"
    fits = "@" + "a" * (MAX_ID_BYTES - len(server) - 2) + ":" + server
    assert len(fits.encode()) == MAX_ID_BYTES
    assert is_valid_user_id(fits, historical=False)
    assert not is_valid_user_id("@a" + fits[1:], historical=False)
    # Multibyte historical localpart: 255 characters would be fine, 255 bytes is the rule.
    multibyte = "@" + "é" * 122 + ":" + server  # 1 + 244 + 1 + 11 = 257 bytes, 135 chars
    assert len(multibyte) < MAX_ID_BYTES
    assert not is_valid_user_id(multibyte)
    assert is_valid_user_id("@" + "é" * 121 + ":" + server)


@pytest.mark.parametrize(
    ("localpart", "current", "historical"),
    [
        ("alice", True, True),
        ("a.b_c=d-e/f+g", True, True),
        ("", False, True),
        ("Alice", False, True),
        ("a b", False, True),
        ("a:b", False, False),
        ("a\x00", False, False),
        ("\udc00", False, False),
        ("日本", False, True),
    ],
)
def test_localparts(localpart: str, current: bool, historical: bool) -> None:
    assert is_valid_localpart(localpart) is current
    assert is_valid_localpart(localpart, historical=False) is current
    assert is_valid_localpart(localpart, historical=True) is historical


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._=-/+", min_size=1, max_size=40))
def test_every_compliant_localpart_round_trips(localpart: str) -> None:
    user_id = f"@{localpart}:example.org"
    assert UserID.parse(user_id, historical=False) == UserID(localpart, "example.org")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_historical_localparts_are_anything_but_colon_and_nul(localpart: str) -> None:
    expected = ":" not in localpart and "\x00" not in localpart
    assert is_valid_user_id(f"@{localpart}:example.org") is expected


# -- room IDs ------------------------------------------------------------------------------


def test_room_ids_with_a_domain() -> None:
    assert RoomID.parse("!UcYsUzyxTGDxLBEvLy:example.org") == RoomID(
        "UcYsUzyxTGDxLBEvLy", "example.org"
    )
    for room_id in ("!a:b", "!any thing\x01 Ü:example.org:8448", "!x:[::1]"):
        assert is_valid_room_id(room_id)
        assert is_valid_room_id(room_id, V11)
        assert not is_valid_room_id(room_id, V12)
        assert str(RoomID.parse(room_id)) == room_id


@pytest.mark.parametrize(
    "room_id",
    ["!:example.org", "!a\x00:example.org", "!a:bad host", "!a:", "a:example.org", "#a:b", ""],
)
def test_invalid_room_ids(room_id: str) -> None:
    assert not is_valid_room_id(room_id)
    assert not is_valid_room_id(room_id, V11)
    with pytest.raises(InvalidIdentifier) as info:
        RoomID.parse(room_id)
    assert info.value.kind == "room_id"


def test_domainless_room_ids() -> None:
    parsed = RoomID.parse("!" + HASH, V12)
    assert parsed == RoomID(HASH, None)
    assert str(parsed) == "!" + HASH
    assert is_valid_room_id("!" + HASH)
    assert not is_valid_room_id("!" + HASH, V11)
    # Without a version the hash's length is not known to be required.
    assert is_valid_room_id("!short-hash_")
    for bad in (
        "!short-hash_",  # not 43 characters
        "!" + HASH[:-1] + "R",  # 43 characters, but not base64 of 32 bytes
        "!" + HASH + "A",
        "!" + HASH.replace("-", "+"),  # standard, not URL-safe, alphabet
        "!" + HASH[:-1] + "=",
        "!",
    ):
        assert not is_valid_room_id(bad, V12), bad
    assert not is_valid_room_id("!abc+def")
    with pytest.raises(InvalidIdentifier):
        server_name_of("!" + HASH)


def test_room_id_255_byte_limit() -> None:
    fits = "!" + "x" * (MAX_ID_BYTES - 3) + ":b"
    assert is_valid_room_id(fits)
    assert not is_valid_room_id("!x" + fits[1:])


# -- room aliases --------------------------------------------------------------------------


def test_room_aliases() -> None:
    assert RoomAlias.parse("#room:example.org") == RoomAlias("room", "example.org")
    assert is_valid_room_alias("#Any Thing! 日本:example.org:1")
    assert server_name_of("#room:[::1]:80") == "[::1]:80"
    for bad in ("#:example.org", "#a\x00b:example.org", "#room", "room:example.org", "#r:x y"):
        assert not is_valid_room_alias(bad), bad
        with pytest.raises(InvalidIdentifier) as info:
            RoomAlias.parse(bad)
        assert info.value.kind == "room_alias"
    fits = "#" + "x" * (MAX_ID_BYTES - 3) + ":b"
    assert is_valid_room_alias(fits)
    assert not is_valid_room_alias("#x" + fits[1:])


# -- event IDs -----------------------------------------------------------------------------


def test_event_ids_per_format() -> None:
    v1_id = "$a4ecee13e2accdadf56c1025:example.com"
    v3_id = "$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk"
    v4_id = "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg"
    assert EventID.parse(v1_id, EventFormat.V1) == EventID(
        "a4ecee13e2accdadf56c1025", "example.com"
    )
    assert EventID.parse(v3_id, EventFormat.V2) == EventID(v3_id[1:], None)
    assert EventID.parse(v4_id, EventFormat.V3) == EventID(v4_id[1:], None)
    assert is_valid_event_id(v4_id, EventFormat.V4)
    assert not is_valid_event_id(v1_id, EventFormat.V2)
    assert not is_valid_event_id(v1_id, EventFormat.V3)
    assert not is_valid_event_id(v3_id, EventFormat.V1)
    assert not is_valid_event_id(v3_id, EventFormat.V3)  # '/' is not URL-safe
    assert not is_valid_event_id(v4_id, EventFormat.V2)  # '-' and '_' are not standard
    for any_id in (v1_id, v3_id, v4_id):
        assert is_valid_event_id(any_id)
        assert str(EventID.parse(any_id)) == any_id
    assert server_name_of(v1_id) == "example.com"
    with pytest.raises(InvalidIdentifier):
        server_name_of(v4_id)


@pytest.mark.parametrize(
    "event_id",
    ["", "$", "abc", "$abc=", "$ab cd", "$:example.com", "$a:", "$a\x00b:example.com", "!abc"],
)
def test_invalid_event_ids(event_id: str) -> None:
    assert not is_valid_event_id(event_id)
    with pytest.raises(InvalidIdentifier) as info:
        EventID.parse(event_id)
    assert info.value.kind == "event_id"


def test_event_id_255_byte_limit() -> None:
    assert is_valid_event_id("$" + "A" * 254, EventFormat.V3)
    assert not is_valid_event_id("$" + "A" * 255, EventFormat.V3)
    assert is_valid_event_id("$" + "x" * 252 + ":b", EventFormat.V1)
    assert not is_valid_event_id("$" + "x" * 253 + ":b", EventFormat.V1)


# -- helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "alice", "%x:y", "@bad", None, 12])
def test_server_name_of_refuses_what_is_not_an_identifier(value: object) -> None:
    with pytest.raises(InvalidIdentifier):
        server_name_of(value)  # type: ignore[arg-type]


def test_error_carries_kind_value_and_reason() -> None:
    with pytest.raises(InvalidIdentifier) as info:
        UserID.parse("@alice")
    assert isinstance(info.value, ValueError)
    assert info.value.kind == "user_id"
    assert info.value.value == "@alice"
    assert "domain" in info.value.reason
    assert "@alice" in str(info.value)


def test_values_are_frozen() -> None:
    parsed = UserID.parse("@a:b")
    with pytest.raises(AttributeError):
        parsed.localpart = "c"  # type: ignore[misc]
    assert hash(parsed) == hash(UserID("a", "b"))


# -- server-name properties ----------------------------------------------------------------

ports = st.none() | st.integers(min_value=0, max_value=99999)


def with_port(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=4, max_size=4), ports)
def test_every_ipv4_literal_parses(parts: list[int], port: int | None) -> None:
    host = ".".join(map(str, parts))
    assert parse_server_name(with_port(host, port)) == (host, port)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 999), min_size=4, max_size=4).filter(lambda p: max(p) > 255))
def test_dotted_quads_out_of_range_are_refused(parts: list[int]) -> None:
    assert not is_valid_server_name(".".join(map(str, parts)))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**128 - 1), st.booleans(), ports)
def test_every_ipv6_literal_parses(number: int, exploded: bool, port: int | None) -> None:
    address = ipaddress.IPv6Address(number)
    host = f"[{address.exploded if exploded else address.compressed}]"
    assert parse_server_name(with_port(host, port)) == (host, port)
    assert is_valid_user_id(f"@u:{with_port(host, port)}", historical=False)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.text(
            alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
            min_size=1,
            max_size=20,
        ),
        min_size=1,
        max_size=5,
    ).filter(lambda labels: not all(label.isdigit() for label in labels) or len(labels) != 4),
    ports,
)
def test_dns_names_parse(labels: list[str], port: int | None) -> None:
    host = ".".join(labels)
    assert parse_server_name(with_port(host, port)) == (host, port)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from("@!#$") | st.just(""), st.text(max_size=30))
def test_arbitrary_text_parses_or_raises_invalid_identifier(sigil: str, rest: str) -> None:
    text = sigil + rest
    for parse in (UserID.parse, RoomID.parse, RoomAlias.parse, EventID.parse, server_name_of):
        with contextlib.suppress(InvalidIdentifier):
            parse(text)
    for event_format in EventFormat:
        is_valid_event_id(text, event_format)
    for version in (V11, V12):
        is_valid_room_id(text, version)
    with contextlib.suppress(InvalidIdentifier):
        parse_server_name(rest)


# -- namespaced and opaque identifiers -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("m.login.password", True),
        ("com.example.identifier", True),
        ("a", True),
        ("a" * 255, True),
        ("a" * 256, False),
        ("", False),
        ("M.upper", False),
        ("1abc", False),
        ("_abc", False),
        (".abc", False),
        ("a-b_c.d9", True),
        ("a b", False),
        ("a/b", False),
        ("é", False),
    ],
)
def test_namespaced_identifiers(value: str, valid: bool) -> None:
    assert is_valid_namespaced_identifier(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("ABCdef-123._~", True),
        ("x" * 255, True),
        ("x" * 256, False),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("a+b", False),
        ("a:b", False),
        ("é", False),
    ],
)
def test_opaque_identifiers(value: str, valid: bool) -> None:
    assert is_valid_opaque_identifier(value) is valid


def test_opaque_identifier_length_can_be_set_per_api() -> None:
    assert is_valid_opaque_identifier("x" * 32, max_length=32)
    assert not is_valid_opaque_identifier("x" * 33, max_length=32)
