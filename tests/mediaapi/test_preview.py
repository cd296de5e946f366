"""URL previews over HTTP, against a real `myelin serve` process and a real web site.

The site is an aiohttp server on 127.0.0.1 started by each test; the homeserver under
test whitelists 127.0.0.1 (loopback is refused by default, which the last tests prove on
a server with the default configuration). Every JSON answer that the spec describes is
checked against its OpenAPI definition by `SpecClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web

from tests.mediaapi.conftest import image_of, make_image
from tests.support.client import SpecClient
from tests.support.server import ServerProcess, start_server

AUTHED = "/_matrix/client/v1/media"
LEGACY = "/_matrix/media/v3"
PREVIEW_CAP = 10 * 1024 * 1024
PNG = make_image(40, 20)

OG_PAGE = """<!doctype html>
<html prefix="og: http://ogp.me/ns#"><head>
<title>The Rock (1996)</title>
<meta property="og:title" content="The Rock" />
<meta property="og:type" content="video.movie" />
<meta property="og:url" content="http://www.imdb.com/title/tt0117500/" />
<meta property="og:description" content="Alcatraz &amp; friends" />
<meta property="og:image" content="picture.png" />
<meta property="og:image:width" content="9999" />
</head><body><p>hello</p></body></html>
"""
# No og tags at all, and ISO-8859-1 announced only inside the document.
PLAIN_PAGE = (
    "<html><head><meta charset='iso-8859-1'><title>  Caf\xe9\n  cr\xe8me </title>"
    "<meta name='description' content='A page without OpenGraph'></head>"
    "<body><img src='/picture.png'><img src='/other.png'></body></html>"
).encode("iso-8859-1")


@dataclass
class Site:
    base: str
    hits: Counter[str]

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("preview") / "data",
        url_preview_ip_range_whitelist="127.0.0.1/32",
    )
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"myelin serve exited with {code}: {proc.stderr_lines}"


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    hits: Counter[str] = Counter()

    async def og_page(request: web.Request) -> web.StreamResponse:
        return web.Response(text=OG_PAGE, content_type="text/html")

    async def plain_page(request: web.Request) -> web.StreamResponse:
        return web.Response(body=PLAIN_PAGE, headers={"Content-Type": "text/html"})

    async def slow_page(request: web.Request) -> web.StreamResponse:
        # Slow enough that concurrent previews of it overlap (the test's assertion on the
        # number of fetches does not depend on timing when previews are de-duplicated).
        await asyncio.sleep(0.5)
        return web.Response(text=OG_PAGE.replace("picture.png", "/gone"), content_type="text/html")

    async def picture(request: web.Request) -> web.StreamResponse:
        return web.Response(body=PNG, content_type="image/png")

    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop")

    async def hop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query.get("to", "/og.html"))

    async def huge(request: web.Request) -> web.StreamResponse:
        # Streamed without a Content-Length: the cap must cut it while reading.
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        await resp.prepare(request)
        chunk = b"<p>" + b"x" * (256 * 1024)
        try:
            for _ in range(PREVIEW_CAP // len(chunk) + 8):
                await resp.write(chunk)
        except (ConnectionResetError, RuntimeError):
            pass  # the homeserver hung up, as it should
        return resp

    async def declared_huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = PREVIEW_CAP + 1
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await resp.write(b"\x89PNG")
        return resp

    async def pdf(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"%PDF-1.4 " * 1000, content_type="application/pdf")

    async def gone(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404, text="no")

    @web.middleware
    async def count(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        hits[request.path] += 1
        return await handler(request)

    app = web.Application(middlewares=[count])
    app.router.add_get("/og.html", og_page)
    app.router.add_get("/plain.html", plain_page)
    app.router.add_get("/slow.html", slow_page)
    app.router.add_get("/picture.png", picture)
    app.router.add_get("/loop", loop)
    app.router.add_get("/hop", hop)
    app.router.add_get("/huge.html", huge)
    app.router.add_get("/declared.png", declared_huge)
    app.router.add_get("/doc.pdf", pdf)
    app.router.add_get("/gone", gone)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    try:
        yield Site(f"http://127.0.0.1:{port}", hits)
    finally:
        await runner.cleanup()


def preview_path(url: str, prefix: str = AUTHED, ts: str | None = None) -> str:
    query = f"url={quote(url, safe='')}"
    if ts is not None:
        query += f"&ts={ts}"
    return f"{prefix}/preview_url?{query}"


async def check_image(c: SpecClient, token: str, og: dict[str, object]) -> None:
    """og:image is an mxc:// URI of this server whose bytes are the site's picture."""
    uri = og["og:image"]
    assert isinstance(uri, str) and uri.startswith("mxc://localhost/")
    status, body, _ = await c.raw(
        "GET",
        f"{AUTHED}/download/localhost/{uri.rsplit('/', 1)[1]}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 200 and body == PNG
    assert image_of(body).size == (40, 20)


def assert_error(status: int, body: object, expected: tuple[int, str]) -> None:
    assert isinstance(body, dict), body
    assert (status, body.get("errcode")) == expected, body
    assert isinstance(body.get("error"), str) and body["error"]


async def test_open_graph_page_with_image(server: ServerProcess, site: Site) -> None:
    async with SpecClient(server.base_url) as c:
        token = (await c.register("og"))["access_token"]
        status, og = await c.call(
            "GET", preview_path(site.url("/og.html"), ts="1510610716656"), token=token
        )
        assert status == 200, og
        assert og["og:title"] == "The Rock"
        assert og["og:type"] == "video.movie"
        assert og["og:url"] == "http://www.imdb.com/title/tt0117500/"
        assert og["og:description"] == "Alcatraz & friends"
        # The page's claim of 9999 px is replaced by the real image's figures.
        assert (og["og:image:width"], og["og:image:height"]) == (40, 20)
        assert og["og:image:type"] == "image/png"
        assert og["matrix:image:size"] == len(PNG)
        await check_image(c, token, og)
        assert site.hits == Counter({"/og.html": 1, "/picture.png": 1})

        # Cached: the same answer on the legacy path and with another ts, no new fetch.
        status, again = await c.call("GET", preview_path(site.url("/og.html"), LEGACY), token=token)
        assert (status, again) == (200, og)
        status, again = await c.call("GET", preview_path(site.url("/og.html"), ts="1"), token=token)
        assert (status, again) == (200, og)
        assert site.hits == Counter({"/og.html": 1, "/picture.png": 1})


async def test_concurrent_previews_fetch_once(server: ServerProcess, site: Site) -> None:
    async with SpecClient(server.base_url) as c:
        token = (await c.register("many"))["access_token"]
        answers = await asyncio.gather(
            *(c.call("GET", preview_path(site.url("/slow.html")), token=token) for _ in range(6))
        )
        assert all(status == 200 for status, _ in answers), answers
        og = answers[0][1]
        assert og["og:title"] == "The Rock"
        assert "og:image" not in og and "og:image:width" not in og  # the image failed: dropped
        assert all(body == og for _, body in answers)
        assert site.hits["/slow.html"] == 1
        assert site.hits["/gone"] == 1


async def test_fallbacks_and_charset(server: ServerProcess, site: Site) -> None:
    async with SpecClient(server.base_url) as c:
        token = (await c.register("plain"))["access_token"]
        status, og = await c.call("GET", preview_path(site.url("/plain.html")), token=token)
        assert status == 200, og
        assert og["og:title"] == "Café crème"
        assert og["og:description"] == "A page without OpenGraph"
        assert og["matrix:image:size"] == len(PNG)
        await check_image(c, token, og)
        assert site.hits["/other.png"] == 0  # only the first image


async def test_image_url_and_redirects(server: ServerProcess, site: Site) -> None:
    async with SpecClient(server.base_url) as c:
        token = (await c.register("image"))["access_token"]
        status, og = await c.call("GET", preview_path(site.url("/picture.png")), token=token)
        assert status == 200, og
        assert set(og) == {
            "og:image",
            "og:image:type",
            "og:image:width",
            "og:image:height",
            "matrix:image:size",
        }
        assert (og["og:image:width"], og["og:image:height"]) == (40, 20)
        await check_image(c, token, og)

        status, og = await c.call("GET", preview_path(site.url("/hop?to=/og.html")), token=token)
        assert status == 200 and og["og:title"] == "The Rock", og
        # The relative og:image is resolved against the page's final URL, after the hop.
        await check_image(c, token, og)

        status, body = await c.call(
            "GET", preview_path(site.url("/loop")), token=token, validate=False
        )
        assert_error(status, body, (502, "M_UNKNOWN"))
        assert 1 < site.hits["/loop"] <= 6  # followed a few times, then given up


async def test_oversize_non_html_and_errors(server: ServerProcess, site: Site) -> None:
    async with SpecClient(server.base_url) as c:
        token = (await c.register("errors"))["access_token"]
        for path in ("/huge.html", "/declared.png"):
            status, body = await c.call(
                "GET", preview_path(site.url(path)), token=token, validate=False
            )
            assert_error(status, body, (502, "M_TOO_LARGE"))
        # Not previewable: an empty preview, and the body is not downloaded.
        status, og = await c.call("GET", preview_path(site.url("/doc.pdf")), token=token)
        assert (status, og) == (200, {})
        status, body = await c.call(
            "GET", preview_path(site.url("/gone")), token=token, validate=False
        )
        assert_error(status, body, (502, "M_UNKNOWN"))
        # A redirect to a loopback address outside the whitelist: refused at that hop.
        port = site.base.rsplit(":", 1)[1]
        status, body = await c.call(
            "GET",
            preview_path(site.url(f"/hop?to=http://127.0.0.2:{port}/og.html")),
            token=token,
            validate=False,
        )
        assert_error(status, body, (403, "M_FORBIDDEN"))

        status, body = await c.call("GET", f"{AUTHED}/preview_url", token=token)
        assert_error(status, body, (400, "M_MISSING_PARAM"))
        for bad in ("ftp://example.org/x", "/relative", "http://"):
            status, body = await c.call("GET", preview_path(bad), token=token)
            assert_error(status, body, (400, "M_INVALID_PARAM"))
        status, body = await c.call(
            "GET", preview_path(site.url("/og.html"), ts="soon"), token=token
        )
        assert_error(status, body, (400, "M_INVALID_PARAM"))
        status, body = await c.call("GET", preview_path(site.url("/og.html")))
        assert_error(status, body, (401, "M_MISSING_TOKEN"))


async def test_cache_survives_a_restart(tmp_path: Path, site: Site) -> None:
    data = tmp_path / "data"
    options = {"url_preview_ip_range_whitelist": "127.0.0.1"}
    proc = start_server(data, **options)
    try:
        async with SpecClient(proc.base_url) as c:
            token = (await c.register("cache"))["access_token"]
            status, first = await c.call("GET", preview_path(site.url("/og.html")), token=token)
            assert status == 200, first
    finally:
        assert proc.stop() == 0
    proc = start_server(data, **options)
    try:
        async with SpecClient(proc.base_url) as c:
            status, body = await c.call(
                "POST",
                "/_matrix/client/v3/login",
                {"type": "m.login.password", "user": "cache", "password": "secret-pw"},
            )
            assert status == 200, body
            status, second = await c.call(
                "GET", preview_path(site.url("/og.html")), token=body["access_token"]
            )
            assert (status, second) == (200, first)
    finally:
        assert proc.stop() == 0
    assert site.hits["/og.html"] == 1  # the second server answered from the database


async def test_default_config_refuses_loopback(tmp_path: Path, site: Site) -> None:
    proc = start_server(tmp_path / "data")
    try:
        async with SpecClient(proc.base_url) as c:
            token = (await c.register("strict"))["access_token"]
            port = site.base.rsplit(":", 1)[1]
            for url in (
                site.url("/og.html"),  # an IP literal
                f"http://localhost:{port}/og.html",  # a name resolving to loopback
                f"http://[::ffff:127.0.0.1]:{port}/og.html",  # IPv4 in IPv6 clothing
            ):
                status, body = await c.call("GET", preview_path(url), token=token, validate=False)
                assert_error(status, body, (403, "M_FORBIDDEN"))
        assert sum(site.hits.values()) == 0  # nothing ever reached the site
    finally:
        assert proc.stop() == 0


async def test_disabled(tmp_path: Path, site: Site) -> None:
    proc = start_server(tmp_path / "data", url_preview=False)
    try:
        async with SpecClient(proc.base_url) as c:
            token = (await c.register("off"))["access_token"]
            status, body = await c.call(
                "GET", preview_path(site.url("/og.html")), token=token, validate=False
            )
            assert_error(status, body, (404, "M_UNRECOGNIZED"))
    finally:
        assert proc.stop() == 0
