"""URL previews in pieces: the address policy, charset detection, HTML parsing, and the
cache table (on SQLite and PostgreSQL, through the `db` fixture of the conftest)."""

from __future__ import annotations

import pytest

from myelin.clientapi.http import MatrixError
from myelin.mediaapi.preview import (
    DEFAULT_IP_RANGE_BLACKLIST,
    AddressPolicy,
    CachedPreview,
    PreviewStore,
    detect_charset,
    parse_html,
    parse_url,
)
from myelin.mediaapi.store import MediaStore
from myelin.storage import Database

DEFAULT = AddressPolicy(DEFAULT_IP_RANGE_BLACKLIST, ())


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.31.255.255",
        "192.168.0.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "fe80::1",
        "fe80::1%eth0",
        "fd00::1",
        "ff02::1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "not an address",
    ],
)
def test_default_policy_refuses_special_addresses(address: str) -> None:
    assert not DEFAULT.allowed(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_default_policy_allows_public_addresses(address: str) -> None:
    assert DEFAULT.allowed(address)


def test_whitelist_wins_and_blacklist_is_configurable() -> None:
    policy = AddressPolicy(DEFAULT_IP_RANGE_BLACKLIST, ("127.0.0.1/32", "10.5.0.0/16"))
    assert policy.allowed("127.0.0.1") and policy.allowed("::ffff:127.0.0.1")
    assert policy.allowed("10.5.9.9")
    assert not policy.allowed("127.0.0.2") and not policy.allowed("10.6.0.1")
    custom = AddressPolicy(("8.8.8.0/24",), ())
    assert not custom.allowed("8.8.8.8")
    assert custom.allowed("127.0.0.1")  # an operator's explicit choice


def test_charset_detection() -> None:
    assert detect_charset(b"<p>x", None) == "utf-8"
    assert detect_charset(b"<p>x", "ISO-8859-1") == "iso8859-1"
    assert detect_charset(b"<meta charset='windows-1252'>", None) == "cp1252"
    http_equiv = b'<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'
    assert detect_charset(http_equiv, None) == "shift_jis"
    assert detect_charset(b'<?xml version="1.0" encoding="koi8-r"?><html>', None) == "koi8-r"
    assert detect_charset(b"\xef\xbb\xbf<meta charset=latin-1>", "latin-1") == "utf-8-sig"
    assert detect_charset(b"<meta charset=nonsense>", "bogus") == "utf-8"


def test_parse_html_open_graph_and_fallbacks() -> None:
    page = parse_html(
        b"<html><head><title>Ignored &amp; title</title>"
        b"<meta property='og:title' content=' First '>"
        b"<meta property='og:title' content='Second'>"
        b"<meta name='og:site_name' content='Site'>"
        b"<meta property='og:image:alt' content=''>"
        b"<meta name='description' content='desc'></head>"
        b"<body><img alt='no src'><img src='a.png'></body></html>"
    )
    assert page.open_graph() == {
        "og:title": "First",
        "og:site_name": "Site",
        "og:description": "desc",
        "og:image": "a.png",
    }
    fallback = parse_html(b"<title>\n A  &eacute;t&eacute; \n</title><p><img src=x.gif>")
    assert fallback.open_graph() == {"og:title": "A été", "og:image": "x.gif"}
    assert parse_html(b"\xff\xfe garbage <<<>>> </p").open_graph() == {}


def test_parse_url() -> None:
    assert str(parse_url("https://example.org/a?b=1#frag")) == "https://example.org/a?b=1"
    with pytest.raises(MatrixError) as missing:
        parse_url(None)
    assert missing.value.errcode == "M_MISSING_PARAM"
    for bad in ("javascript:alert(1)", "file:///etc/passwd", "//example.org", "http://"):
        with pytest.raises(MatrixError) as err:
            parse_url(bad)
        assert (err.value.status, err.value.errcode) == (400, "M_INVALID_PARAM"), bad


async def test_preview_store_keeps_fresh_versions(db: Database) -> None:
    await MediaStore.open(db)  # the media migrations create url_previews
    store = PreviewStore(db)
    url = "https://example.org/a"
    assert await store.get(url, 0) is None
    await store.put(url, CachedPreview(1000, 5000, {"og:title": "old"}))
    await store.put(url, CachedPreview(2000, 6000, {"og:title": "new", "matrix:image:size": 7}))
    await store.put(url, CachedPreview(2000, 6000, {"og:title": "dup"}))  # same ms: ignored
    newest = await store.get(url, 3000)
    assert newest == CachedPreview(2000, 6000, {"og:title": "new", "matrix:image:size": 7})
    assert await store.get("https://example.org/b", 3000) is None
    assert await store.get(url, 6000) is None  # expired
    # Writing drops every expired version, of any URL.
    await store.put("https://example.org/b", CachedPreview(7000, 9000, {}))
    assert await store.get(url, 0) is None
    assert await store.get("https://example.org/b", 8000) == CachedPreview(7000, 9000, {})
