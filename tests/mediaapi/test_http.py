"""The content repository over HTTP, against a real `myelin serve` process.

matrix-nio (a client nobody here wrote) uploads, downloads and fetches thumbnails; raw
HTTP covers what nio has no API for (create + PUT, HEAD, path tricks, headers). Every JSON
answer is checked against the spec's OpenAPI definitions by `SpecClient`.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import nio
import pytest
from yarl import URL

from tests.mediaapi.conftest import image_of, make_animated_gif, make_image
from tests.support.client import SpecClient
from tests.support.server import ServerProcess, start_server

LIMIT = 12_000_000
MEDIA = "/_matrix/media/v3"
AUTHED = "/_matrix/client/v1/media"
RECOMMENDED_CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; object-src 'self';"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("media") / "data", max_upload_size=LIMIT)
    try:
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"myelin serve exited with {code}: {proc.stderr_lines}"


def media_files(server: ServerProcess) -> set[Path]:
    return {p for p in (server.data_dir / "media").rglob("*") if p.is_file()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(c: SpecClient, name: str) -> str:
    token: str = (await c.register(name))["access_token"]
    return token


async def upload(c: SpecClient, token: str, data: bytes, ctype: str, query: str = "") -> str:
    status, body = await c.call(
        "POST",
        f"{MEDIA}/upload{query}",
        token=token,
        body=data,
        headers={"Content-Type": ctype},
    )
    assert status == 200, body
    uri: str = body["content_uri"]
    assert uri.startswith("mxc://localhost/")
    return uri.removeprefix("mxc://localhost/")


async def nio_client(server: ServerProcess, name: str) -> nio.AsyncClient:
    client = nio.AsyncClient(server.base_url, name)
    reg = await client.register(name, "secret-pw")
    assert isinstance(reg, nio.RegisterResponse), reg
    return client


async def test_nio_large_round_trip_and_thumbnails(server: ServerProcess) -> None:
    client = await nio_client(server, "niomedia")
    try:
        data = os.urandom(7 * 1024 * 1024)
        up, _ = await client.upload(
            io.BytesIO(data), content_type="application/pdf", filename="big.pdf", filesize=len(data)
        )
        assert isinstance(up, nio.UploadResponse), up
        down = await client.download(mxc=up.content_uri)
        assert isinstance(down, nio.MemoryDownloadResponse), down
        assert down.body == data
        assert (down.content_type, down.filename) == ("application/pdf", "big.pdf")

        png = make_image(1000, 700)
        up, _ = await client.upload(io.BytesIO(png), content_type="image/png", filesize=len(png))
        assert isinstance(up, nio.UploadResponse), up
        media_id = up.content_uri.rsplit("/", 1)[1]
        expected = {
            (32, 32, nio.ResizingMethod.crop): (32, 32),
            (96, 96, nio.ResizingMethod.crop): (96, 96),
            (50, 80, nio.ResizingMethod.crop): (96, 96),
            (320, 240, nio.ResizingMethod.scale): (320, 224),
            (640, 480, nio.ResizingMethod.scale): (640, 448),
            (800, 600, nio.ResizingMethod.scale): (800, 560),
        }
        for (w, h, method), size in expected.items():
            thumb = await client.thumbnail("localhost", media_id, w, h, method)
            assert isinstance(thumb, nio.ThumbnailResponse), thumb
            assert thumb.content_type == "image/png"
            assert image_of(thumb.body).size == size, (w, h, method)
        # Bigger than the image: the original itself, never an upscaled copy.
        thumb = await client.thumbnail("localhost", media_id, 1200, 900)
        assert isinstance(thumb, nio.ThumbnailResponse) and thumb.body == png
        thumbs = {p for p in media_files(server) if "thumbnails" in p.parts and media_id in p.name}
        assert len(thumbs) == 5  # one file per advertised size, reused for repeated requests
        await client.thumbnail("localhost", media_id, 32, 32, nio.ResizingMethod.crop)
        assert {
            p for p in media_files(server) if "thumbnails" in p.parts and media_id in p.name
        } == thumbs
    finally:
        await client.close()


async def test_download_headers_and_dispositions(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        token = await login(c, "headers")
        html = await upload(c, token, b"<script>alert(1)</script>", "text/html", "?filename=x.html")
        status, body, headers = await c.raw(
            "GET", f"{AUTHED}/download/localhost/{html}", headers=bearer(token)
        )
        assert (status, body) == (200, b"<script>alert(1)</script>")
        assert headers["content-type"] == "text/html"
        assert headers["content-disposition"] == 'attachment; filename="x.html"'
        assert headers["content-security-policy"] == RECOMMENDED_CSP
        assert headers["cross-origin-resource-policy"] == "cross-origin"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["access-control-allow-origin"] == "*"

        name = "résumé 2024.png"
        png = await upload(
            c, token, make_image(10, 10), "image/png", "?filename=r%C3%A9sum%C3%A9%202024.png"
        )
        status, _, headers = await c.raw("GET", f"{MEDIA}/download/localhost/{png}")
        assert status == 200
        assert headers["content-disposition"] == (
            "inline; filename*=utf-8''r%C3%A9sum%C3%A9%202024.png"
        ), name
        status, _, headers = await c.raw(
            "GET", f"{AUTHED}/download/localhost/{png}/other%20name.png", headers=bearer(token)
        )
        assert headers["content-disposition"] == 'inline; filename="other name.png"'

        plain = await upload(c, token, b"no name", "")
        status, body, headers = await c.raw(
            "HEAD", f"{AUTHED}/download/localhost/{plain}", headers=bearer(token)
        )
        assert (status, body) == (200, b"")
        assert headers["content-length"] == "7"
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"] == "attachment"


async def test_oversize_upload_is_refused_and_leaves_no_file(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        token = await login(c, "oversize")
        before = media_files(server)
        status, err = await c.call(
            "POST",
            f"{MEDIA}/upload",
            token=token,
            body=b"\0" * (LIMIT + 1),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert (status, err["errcode"]) == (413, "M_TOO_LARGE")

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: caught mid-stream
            for _ in range(LIMIT // 1_000_000 + 2):
                yield b"\1" * 1_000_000

        status, raw, _ = await c.raw(
            "POST", f"{MEDIA}/upload", body=chunked(), headers=bearer(token)
        )  # type: ignore[arg-type]
        assert status == 413 and b"M_TOO_LARGE" in raw
        assert media_files(server) == before

        status, config = await c.call("GET", f"{AUTHED}/config", token=token)
        assert (status, config) == (200, {"m.upload.size": LIMIT})
        status, config = await c.call("GET", f"{MEDIA}/config", token=token)
        assert (status, config) == (200, {"m.upload.size": LIMIT})


@pytest.mark.parametrize(
    "media_path",
    [
        "localhost/..%2F..%2Fsigning.key",
        "localhost/%2E%2E",
        "localhost/abc%00def",
        "localhost/abc.def",
        "localhost/%EF%BC%8E%EF%BC%8E",
        "..%2F..%2F/abcdef",
        "local%2Fhost/abcdef",
    ],
)
async def test_path_tricks_are_refused(server: ServerProcess, media_path: str) -> None:
    async with SpecClient(server.base_url) as c:
        token = await login(c, f"tricks{abs(hash(media_path)) % 10**8}")
    async with aiohttp.ClientSession() as session:
        for prefix, headers in ((MEDIA, {}), (AUTHED, bearer(token))):
            for what in ("download", "thumbnail"):
                url = URL(
                    f"{server.base_url}{prefix}/{what}/{media_path}?width=32&height=32",
                    encoded=True,  # sent exactly as written: no client-side normalisation
                )
                async with session.get(url, headers=headers) as resp:
                    body = await resp.json()
                    assert (resp.status, body["errcode"]) == (400, "M_INVALID_PARAM"), body
            async with session.put(
                URL(f"{server.base_url}{MEDIA}/upload/{media_path}", encoded=True),
                headers=bearer(token),
                data=b"x",
            ) as resp:
                body = await resp.json()
                assert (resp.status, body["errcode"]) == (400, "M_INVALID_PARAM"), body
    assert not (server.data_dir.parent / "signing.key").exists()


async def raw_get(server: ServerProcess, path: bytes) -> bytes:
    """A GET written byte for byte, so no client library normalises `..` away."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response


async def test_raw_dot_segments_never_escape(server: ServerProcess) -> None:
    escape = await raw_get(server, f"{MEDIA}/download/localhost/../../../signing.key".encode())
    assert escape.startswith(b"HTTP/1.1 404") and b"M_UNRECOGNIZED" in escape, escape
    for media_id in (b"..", b".", b"%2e%2e"):
        response = await raw_get(server, f"{MEDIA}/download/localhost/".encode() + media_id)
        assert response.startswith(b"HTTP/1.1 400") and b"M_INVALID_PARAM" in response


async def test_thumbnail_refusals(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        token = await login(c, "thumbfail")
        before = media_files(server)
        for data in (b"plain text, no image", make_image(300, 300)[:600]):
            media_id = await upload(c, token, data, "image/png")
            status, err = await c.call(
                "GET",
                f"{AUTHED}/thumbnail/localhost/{media_id}?width=32&height=32&method=crop",
                token=token,
            )
            assert (status, err["errcode"]) == (400, "M_UNKNOWN")
        assert {p for p in media_files(server) - before if "thumbnails" in p.parts} == set()

        png = await upload(c, token, make_image(100, 100), "image/png")
        for query, code in [
            ("height=32", "M_MISSING_PARAM"),
            ("width=32", "M_MISSING_PARAM"),
            ("width=x&height=32", "M_INVALID_PARAM"),
            ("width=-1&height=32", "M_INVALID_PARAM"),
            ("width=32&height=32&method=stretch", "M_INVALID_PARAM"),
            ("width=32&height=32&animated=maybe", "M_INVALID_PARAM"),
            ("width=32&height=32&timeout_ms=soon", "M_INVALID_PARAM"),
        ]:
            status, err = await c.call(
                "GET", f"{AUTHED}/thumbnail/localhost/{png}?{query}", token=token
            )
            assert (status, err["errcode"]) == (400, code), query
        # The spec's definitions list no 404 for these, yet M_NOT_FOUND is what missing
        # media gets (content_repo.md); the body is still a standard error.
        status, err = await c.call(
            "GET",
            f"{AUTHED}/thumbnail/localhost/doesNotExist?width=32&height=32",
            token=token,
            validate=False,
        )
        assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
        status, err = await c.call(
            "GET", f"{AUTHED}/download/example.org/abcdef", token=token, validate=False
        )
        assert (status, err["errcode"]) == (404, "M_NOT_FOUND")  # remote media: no federation


async def test_animated_false_gives_a_static_thumbnail(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        token = await login(c, "animated")
        gif = await upload(c, token, make_animated_gif(200, 100), "image/gif")
        for animated in ("false", "true"):  # no animated thumbnails yet: true falls back
            status, body, headers = await c.raw(
                "GET",
                f"{AUTHED}/thumbnail/localhost/{gif}?width=96&height=96&method=crop&animated={animated}",
                headers=bearer(token),
            )
            assert status == 200 and headers["content-type"] == "image/png"
            assert headers["content-disposition"] == 'inline; filename="thumbnail.png"'
            image = image_of(body)
            assert image.size == (96, 96) and not getattr(image, "is_animated", False)
        jpeg = await upload(c, token, make_image(500, 400, "JPEG"), "image/jpeg")
        status, body, headers = await c.raw(
            "GET", f"{MEDIA}/thumbnail/localhost/{jpeg}?width=320&height=240"
        )
        assert (status, headers["content-type"]) == (200, "image/jpeg")
        assert image_of(body).size == (300, 240)


async def test_create_then_upload(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        alice = await login(c, "creator")
        bob = await login(c, "intruder")
        status, created = await c.call("POST", "/_matrix/media/v1/create", token=alice)
        assert status == 200, created
        assert created["unused_expires_at"] > 0
        media_id = created["content_uri"].removeprefix("mxc://localhost/")
        put = f"{MEDIA}/upload/localhost/{media_id}"

        status, err = await c.call(
            "GET", f"{AUTHED}/download/localhost/{media_id}?timeout_ms=0", token=alice
        )
        assert (status, err["errcode"]) == (504, "M_NOT_YET_UPLOADED")
        status, err = await c.call(
            "PUT", put, token=bob, body=b"bob's", headers={"Content-Type": "text/plain"}
        )
        assert (status, err["errcode"]) == (403, "M_FORBIDDEN")

        async def download_when_ready() -> tuple[int, bytes, dict[str, str]]:
            return await c.raw(
                "GET",
                f"{AUTHED}/download/localhost/{media_id}?timeout_ms=15000",
                headers=bearer(alice),
            )

        waiting = asyncio.create_task(download_when_ready())
        status, body = await c.call(
            "PUT",
            put + "?filename=late.txt",
            token=alice,
            body=b"finally",
            headers={"Content-Type": "text/plain"},
        )
        assert (status, body) == (200, {})
        status, content, headers = await asyncio.wait_for(waiting, 20)
        assert (status, content) == (200, b"finally")
        assert headers["content-disposition"] == 'inline; filename="late.txt"'

        status, err = await c.call(
            "PUT", put, token=alice, body=b"again", headers={"Content-Type": "text/plain"}
        )
        assert (status, err["errcode"]) == (409, "M_CANNOT_OVERWRITE_MEDIA")
        status, err = await c.call(
            "PUT", f"{MEDIA}/upload/localhost/neverCreated", token=alice, body=b"x"
        )
        assert (status, err["errcode"]) == (404, "M_NOT_FOUND")
        status, err = await c.call(
            "PUT", f"{MEDIA}/upload/localhost/bad.id", token=alice, body=b"x"
        )
        assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")


async def test_authentication(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        token = await login(c, "authcheck")
        media_id = await upload(c, token, b"secret-ish", "text/plain")
        for path in (
            f"{AUTHED}/download/localhost/{media_id}",
            f"{AUTHED}/download/localhost/{media_id}/name.txt",
            f"{AUTHED}/thumbnail/localhost/{media_id}?width=32&height=32",
            f"{AUTHED}/config",
            f"{MEDIA}/config",
        ):
            status, err = await c.call("GET", path)
            assert (status, err["errcode"]) == (401, "M_MISSING_TOKEN"), path
        status, err = await c.call("POST", f"{MEDIA}/upload", body=b"x")
        assert (status, err["errcode"]) == (401, "M_MISSING_TOKEN")
        status, err = await c.call("POST", "/_matrix/media/v1/create")
        assert (status, err["errcode"]) == (401, "M_MISSING_TOKEN")
        # The deprecated endpoints stay open (this server has not frozen them).
        status, body, _ = await c.raw("GET", f"{MEDIA}/download/localhost/{media_id}")
        assert (status, body) == (200, b"secret-ish")


async def test_download_query_parameters_are_accepted(server: ServerProcess) -> None:
    async with SpecClient(server.base_url) as c:
        token = await login(c, "params")
        media_id = await upload(c, token, b"params", "text/plain")
        query = "?allow_remote=false&timeout_ms=5000&allow_redirect=true"
        for path in (
            f"{AUTHED}/download/localhost/{media_id}",
            f"{MEDIA}/download/localhost/{media_id}",
        ):
            status, body, _ = await c.raw("GET", path + query, headers=bearer(token))
            assert (status, body) == (200, b"params")  # never a redirect: the bytes themselves
        for bad in ("allow_remote=maybe", "timeout_ms=-1", "allow_redirect=2"):
            status, err = await c.call("GET", f"{MEDIA}/download/localhost/{media_id}?{bad}")
            assert (status, err["errcode"]) == (400, "M_INVALID_PARAM"), bad


def test_media_survives_a_restart_and_unfinished_files_are_swept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"

    async def put_media(base_url: str) -> tuple[str, str]:
        async with SpecClient(base_url) as c:
            token = await login(c, "restart")
            return token, await upload(c, token, b"kept across restarts", "text/plain")

    first = start_server(data_dir)
    try:
        token, media_id = asyncio.run(put_media(first.base_url))
    finally:
        assert first.stop() == 0
    leftover = data_dir / "media" / media_id[:2] / ".tmp-crashed"
    leftover.write_bytes(b"half an upload")

    async def get_media(base_url: str) -> tuple[int, bytes]:
        async with SpecClient(base_url) as c:
            status, body, _ = await c.raw(
                "GET", f"{AUTHED}/download/localhost/{media_id}", headers=bearer(token)
            )
            return status, body

    second = start_server(data_dir)
    try:
        assert asyncio.run(get_media(second.base_url)) == (200, b"kept across restarts")
        assert not leftover.exists()
    finally:
        assert second.stop() == 0
