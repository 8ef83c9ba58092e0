"""Small drawing helpers shared by the visualisations: image loading, frames, text, grids.

Pictures are composed with Pillow so every frame and box lands on exact pixels (the tests check
pixel colours); matplotlib is used only for its colour maps and for the training-curve plots.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
TEXT_HEIGHT = 13  # pixels per caption line (the default 10 pt font plus spacing)


@functools.lru_cache(maxsize=None)
def font() -> ImageFont.ImageFont:
    """Pillow's built-in font (no font file needed, identical on every machine)."""
    return ImageFont.load_default()


def load_images(paths, size) -> np.ndarray:
    """Read image files and resize them as the evaluation pipeline does (`tfreid.preprocessing`).

    Args:
        paths: image file paths (JPEG/PNG/BMP/GIF).
        size: ``(height, width)`` of the model input.

    Returns:
        float32 ``[n, height, width, 3]`` in ``[0, 255]`` (not normalised).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file cannot be decoded as an image.
    """
    import tensorflow as tf

    from tfreid.preprocessing import decode_resize

    size = tuple(int(v) for v in size)
    out = []
    for path in paths:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"image {path} not found")
        try:
            out.append(decode_resize(tf.constant(path.read_bytes()), size).numpy())
        except tf.errors.OpError as err:
            raise ValueError(f"cannot decode image {path}: {str(err).splitlines()[0][:200]}") from None
    if not out:
        raise ValueError("no images given")
    return np.stack(out).astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float ``[0, 255]`` pixels to displayable uint8 (rounded, clipped)."""
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def framed(image: np.ndarray, colour, width: int) -> Image.Image:
    """The image with a solid ``width``-pixel frame of ``colour`` around it (outside it)."""
    h, w = image.shape[:2]
    canvas = Image.new("RGB", (w + 2 * width, h + 2 * width), tuple(colour))
    canvas.paste(Image.fromarray(image), (width, width))
    return canvas


def zoom(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (keeps pixels crisp)."""
    if factor == 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def text(draw: ImageDraw.ImageDraw, xy, message: str, fill=TEXT) -> None:
    """Draws one caption line with its top-left corner at ``xy``."""
    draw.text(xy, message, fill=fill, font=font())


def text_width(message: str) -> int:
    """Width in pixels of ``message`` in the caption font."""
    return int(np.ceil(font().getlength(message)))


def stack_rows(images: list[Image.Image], gap: int = 8) -> Image.Image:
    """Stacks pictures vertically (left-aligned) on a white background."""
    width = max(im.width for im in images)
    height = sum(im.height for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height + gap
    return canvas


def safe_name(path) -> str:
    """A file-name-safe stem for an image path (for output PNG names)."""
    stem = pathlib.Path(str(path)).stem
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
