"""Media tests: the repository runs on SQLite and PostgreSQL; images are made here."""

from __future__ import annotations

import io

from PIL import Image

from myelin.storage import testing
from tests.support.backends import database_fixture

pg_dsn = testing.pg_dsn_fixture()
db = database_fixture()


def make_image(width: int, height: int, fmt: str = "PNG", mode: str = "RGB") -> bytes:
    """A gradient image (compressible, but not flat) encoded as `fmt`."""
    image = Image.new(mode, (width, height))
    if mode == "RGB":
        image.putdata(
            [
                ((x * 255) // width, (y * 255) // height, 128)
                for y in range(height)
                for x in range(width)
            ]
        )
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def make_animated_gif(width: int, height: int, frames: int = 3) -> bytes:
    images = [Image.new("RGB", (width, height), (i * 80, 0, 0)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=100)
    return out.getvalue()


def image_of(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
