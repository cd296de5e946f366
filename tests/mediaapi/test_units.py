"""Pure pieces of the media repository: IDs, headers, thumbnail sizing and rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from myelin.mediaapi.files import FileStore, TooLarge
from myelin.mediaapi.headers import (
    BadHeaderValue,
    check_filename,
    content_disposition,
    normalize_content_type,
)
from myelin.mediaapi.ids import InvalidMediaID, check_media_id, is_valid_media_id, new_media_id
from myelin.mediaapi.thumbnails import (
    DEFAULT_THUMBNAIL_SIZES,
    NotAnImage,
    ThumbnailSize,
    choose_size,
    probe,
    render,
)
from tests.mediaapi.conftest import image_of, make_animated_gif, make_image


def test_new_media_ids_are_valid_and_distinct() -> None:
    ids = {new_media_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(is_valid_media_id(i) and len(i) == 24 for i in ids)


@pytest.mark.parametrize(
    "bad", ["", "..", "../x", "a/b", "a\0b", "a.b", "%2e%2e", "ａｂ", "a b", "x" * 256, "a\\b"]
)
def test_media_id_whitelist_refuses_tricks(bad: str) -> None:
    assert not is_valid_media_id(bad)
    with pytest.raises(InvalidMediaID):
        check_media_id(bad)


def test_file_paths_cannot_be_built_from_bad_ids(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    assert files.media_path("abcDEF_-9") == tmp_path / "ab" / "abcDEF_-9"
    with pytest.raises(InvalidMediaID):
        files.media_path("../signing.key")
    with pytest.raises(InvalidMediaID):
        files.thumbnail_path("a/b", 32, 32, "crop")


@pytest.mark.parametrize(
    ("ctype", "name", "expected"),
    [
        ("image/png", None, b"inline"),
        ("image/PNG; foo=bar", "cat.png", b'inline; filename="cat.png"'),
        ("text/html", "x.html", b'attachment; filename="x.html"'),
        ("image/svg+xml", None, b"attachment"),
        ("application/octet-stream", 'a"b\\c', b'attachment; filename="a\\"b\\\\c"'),
        (
            "application/pdf",
            "résumé 2.pdf",
            b"attachment; filename*=utf-8''r%C3%A9sum%C3%A9%202.pdf",
        ),
    ],
)
def test_content_disposition(ctype: str, name: str | None, expected: bytes) -> None:
    assert content_disposition(ctype, name) == expected


def test_content_type_defaults_and_refusals() -> None:
    assert normalize_content_type(None) == "application/octet-stream"
    assert normalize_content_type("  ") == "application/octet-stream"
    assert normalize_content_type("text/plain; charset=utf-8") == "text/plain; charset=utf-8"
    for bad in ["image", "image/", "/png", "text/plain\r\nX-Evil: 1", "a/b c", "é/x"]:
        with pytest.raises(BadHeaderValue):
            normalize_content_type(bad)


def test_filenames_are_checked_not_rewritten() -> None:
    assert check_filename(None) is None
    assert check_filename("") is None
    assert check_filename("War and Peace.pdf") == "War and Peace.pdf"
    for bad in ["a\nb", "a\0b", "../etc/passwd", "a\\b", "x" * 256, "\ud800"]:
        with pytest.raises(BadHeaderValue):
            check_filename(bad)


@pytest.mark.parametrize(
    ("request_size", "expected"),
    [
        ((10, 10, "crop"), (32, 32, "crop")),
        ((32, 32, "crop"), (32, 32, "crop")),
        ((33, 20, "crop"), (96, 96, "crop")),
        ((500, 500, "crop"), (96, 96, "crop")),
        ((100, 100, "scale"), (320, 240, "scale")),
        ((321, 100, "scale"), (640, 480, "scale")),
        ((700, 500, "scale"), (800, 600, "scale")),
        ((4000, 4000, "scale"), (800, 600, "scale")),
    ],
)
def test_choose_size(request_size: tuple[int, int, str], expected: tuple[int, int, str]) -> None:
    w, h, method = request_size
    chosen = choose_size(DEFAULT_THUMBNAIL_SIZES, w, h, method)  # type: ignore[arg-type]
    assert (chosen.width, chosen.height, chosen.method) == expected


def test_render_scale_crop_and_never_upscale(tmp_path: Path) -> None:
    src = tmp_path / "img"
    src.write_bytes(make_image(1000, 700))
    data, ctype = render(src, ThumbnailSize(320, 240, "scale"))
    assert ctype == "image/png" and image_of(data).size == (320, 224)
    data, ctype = render(src, ThumbnailSize(96, 96, "crop"))
    assert image_of(data).size == (96, 96)

    small = tmp_path / "small"
    small.write_bytes(make_image(50, 20))
    data, _ = render(small, ThumbnailSize(320, 240, "scale"))
    assert image_of(data).size == (50, 20)
    data, _ = render(small, ThumbnailSize(96, 96, "crop"))
    assert image_of(data).size == (20, 20)  # cut to the box's aspect, not enlarged


def test_render_jpeg_stays_jpeg_and_animation_gives_first_frame(tmp_path: Path) -> None:
    jpeg = tmp_path / "jpeg"
    jpeg.write_bytes(make_image(400, 400, "JPEG"))
    data, ctype = render(jpeg, ThumbnailSize(96, 96, "crop"))
    assert ctype == "image/jpeg" and image_of(data).format == "JPEG"

    gif = tmp_path / "gif"
    gif.write_bytes(make_animated_gif(200, 100))
    assert probe(gif).animated
    data, ctype = render(gif, ThumbnailSize(32, 32, "crop"))
    thumb = image_of(data)
    assert ctype == "image/png" and thumb.size == (32, 32)
    assert not getattr(thumb, "is_animated", False)


def test_non_images_and_broken_images_are_not_images(tmp_path: Path) -> None:
    text = tmp_path / "text"
    text.write_bytes(b"hello, not an image")
    with pytest.raises(NotAnImage):
        probe(text)
    broken = tmp_path / "broken"
    broken.write_bytes(make_image(300, 300)[:400])  # header intact, pixels cut off
    with pytest.raises(NotAnImage):
        render(broken, ThumbnailSize(96, 96, "crop"))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_receive_over_limit_leaves_no_file(tmp_path: Path) -> None:
    files = FileStore(tmp_path)

    async def body() -> object:
        for _ in range(10):
            yield b"x" * 1000

    final = files.media_path("abcdef")
    with pytest.raises(TooLarge):
        await files.receive(final, body(), limit=5000)  # type: ignore[arg-type]
    assert files_under(tmp_path) == []

    written = await files.receive(final, body(), limit=10_000)  # type: ignore[arg-type]
    assert written.size == 10_000 and not final.exists()
    await files.commit(written, final)
    assert final.read_bytes() == b"x" * 10_000
    assert files_under(tmp_path) == [final]


def test_sweep_removes_only_temporaries(tmp_path: Path) -> None:
    files = FileStore(tmp_path)
    keep = files.media_path("keepme")
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"data")
    (keep.parent / ".tmp-0123").write_bytes(b"half")
    thumb_dir = files.thumbnail_path("keepme", 32, 32, "crop").parent
    thumb_dir.mkdir(parents=True)
    (thumb_dir / ".tmp-4567").write_bytes(b"half")
    assert files.sweep_temporaries() == 2
    assert files_under(tmp_path) == [keep]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (200, 100), (10, 200, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90° clockwise: portrait
    src = tmp_path / "rotated.jpg"
    image.save(src, format="JPEG", exif=exif.tobytes())
    data, ctype = render(src, ThumbnailSize(320, 240, "scale"))
    assert ctype == "image/jpeg" and image_of(data).size == (100, 200)
    data, _ = render(src, ThumbnailSize(32, 32, "crop"))
    assert image_of(data).size == (32, 32)
