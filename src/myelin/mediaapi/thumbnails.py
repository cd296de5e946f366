"""Thumbnails with Pillow: the advertised sizes, choosing one, and rendering it.

The server renders only the sizes it advertises (the spec's list: 32x32 and 96x96 crop,
320x240, 640x480 and 800x600 scale), each at most once per media, so a client cannot make
it render arbitrary sizes. A request picks the smallest advertised size of its method that
is at least as large as asked, or the largest one when none is.

- "scale" keeps the aspect ratio and fits the image inside the box.
- "crop" fills the box and cuts the overflow evenly from both sides, giving the box's
  aspect ratio.
- Neither ever upscales: an image smaller than the box is cropped to the aspect (crop) or
  kept at its size (scale).

Output is always a static image (JPEG for JPEG sources, PNG otherwise): animated sources
give their first frame, which honours `animated=false` and is the allowed fallback for
`animated=true`. These functions block (decoding is CPU work); callers run them in a
thread. Anything Pillow cannot decode is `NotAnImage`; an image with more pixels than the
limit is `ImageTooLarge`, decided from the header before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, ImageOps, UnidentifiedImageError

Method = Literal["crop", "scale"]
METHODS: tuple[Method, ...] = ("crop", "scale")


@dataclass(frozen=True, slots=True)
class ThumbnailSize:
    width: int
    height: int
    method: Method


DEFAULT_THUMBNAIL_SIZES: tuple[ThumbnailSize, ...] = (
    ThumbnailSize(32, 32, "crop"),
    ThumbnailSize(96, 96, "crop"),
    ThumbnailSize(320, 240, "scale"),
    ThumbnailSize(640, 480, "scale"),
    ThumbnailSize(800, 600, "scale"),
)

#: Images with more pixels than this are not thumbnailed (decoding cost, memory).
DEFAULT_MAX_PIXELS = 32_000_000

#: Pillow formats a client may be given as they are, as a "thumbnail" (the spec's list of
#: thumbnail content types).
_SERVABLE_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}

_ORIENTATION = 0x0112
_REDUCING_GAP = 3.0

_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError)


class NotAnImage(Exception):
    """The content is not an image Pillow can decode (or it is broken)."""


class ImageTooLarge(Exception):
    """The image has more pixels than the server is willing to decode."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    width: int
    height: int
    format: str
    animated: bool

    @property
    def servable_type(self) -> str | None:
        """The content type under which the original may serve as its own thumbnail."""
        return _SERVABLE_FORMATS.get(self.format)


def choose_size(
    sizes: tuple[ThumbnailSize, ...], width: int, height: int, method: Method
) -> ThumbnailSize:
    """The advertised size that serves a request for `width` x `height` by `method`."""
    same = [s for s in sizes if s.method == method] or list(sizes)
    big_enough = [s for s in same if s.width >= width and s.height >= height]
    if big_enough:
        return min(big_enough, key=lambda s: (s.width * s.height, s.width))
    return max(same, key=lambda s: (s.width * s.height, s.width))


def probe(path: Path) -> ImageInfo:
    """Size, format and animation of an image, from its header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format or ""
                animated = bool(getattr(img, "is_animated", False))
                width, height = img.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except _DECODE_ERRORS as exc:
        raise NotAnImage(str(exc) or type(exc).__name__) from None
    if width < 1 or height < 1:
        raise NotAnImage("image has no pixels")
    return ImageInfo(width, height, fmt, animated)


def render(
    path: Path, size: ThumbnailSize, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[bytes, str]:
    """The thumbnail of the image at `path` for `size`: (encoded bytes, content type)."""
    info = probe(path)
    if info.width * info.height > max_pixels:
        raise ImageTooLarge(
            f"image of {info.width}x{info.height} pixels exceeds the limit of {max_pixels}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as source:
                source.seek(0)  # the first frame of an animation
                if source.format == "JPEG":
                    # Decode at a reduced scale that is still at least the box (either way
                    # round, in case the EXIF orientation turns the image).
                    side = max(size.width, size.height)
                    source.draft("RGB", (side, side))
                source.load()
                image = _upright(source)
                return _encode(_resize(_normalize_mode(image), size), info.format)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except _DECODE_ERRORS as exc:
        raise NotAnImage(str(exc) or type(exc).__name__) from None


def _normalize_mode(image: Image.Image) -> Image.Image:
    """A mode that resamples well: palette and exotic modes become RGB(A) or L(A)."""
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, and only when there is one (it costs a full copy)."""
    if image.getexif().get(_ORIENTATION, 1) in (0, 1):
        return image
    return ImageOps.exif_transpose(image)


def _resize(image: Image.Image, size: ThumbnailSize) -> Image.Image:
    """Resample once, straight from the source region (`box`), with Pillow's reducing
    gap: several times faster than cropping and resizing in separate passes."""
    width, height = image.size
    if size.method == "scale":
        factor = min(size.width / width, size.height / height)
        if factor >= 1:
            return image  # never enlarge
        target = (max(1, round(width * factor)), max(1, round(height * factor)))
        return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
    aspect = size.width / size.height
    if width >= size.width and height >= size.height:
        crop_w, crop_h = (
            (height * aspect, height) if width / height > aspect else (width, width / aspect)
        )
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        return image.resize(
            (size.width, size.height),
            Image.Resampling.LANCZOS,
            box=(left, top, left + crop_w, top + crop_h),
            reducing_gap=_REDUCING_GAP,
        )
    # Smaller than the box: cut to the box's aspect ratio, keep the pixels as they are.
    crop_w = min(width, max(1, round(height * aspect)))
    crop_h = min(height, max(1, round(width / aspect)))
    left = (width - crop_w) // 2
    top = (height - crop_h) // 2
    return image.crop((left, top, left + crop_w, top + crop_h))


def _encode(image: Image.Image, source_format: str) -> tuple[bytes, str]:
    out = io.BytesIO()
    if source_format == "JPEG":
        if image.mode != "RGB":
            image = image.convert("RGB")
        image.save(out, format="JPEG", quality=80, optimize=True)
        return out.getvalue(), "image/jpeg"
    image.save(out, format="PNG", optimize=False)
    return out.getvalue(), "image/png"
