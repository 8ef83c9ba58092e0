"""Image preprocessing shared by training, evaluation, export, inference and pictures.

Every consumer of images goes through these functions, so the training pipeline and the
exported serving graphs see the same pixels: encoded bytes are decoded to RGB
(:func:`decode_image`), resized bilinearly without antialiasing to the model size
(:func:`resize_image`, :func:`decode_resize`, :func:`load_image`) as float32 in ``[0, 255]``,
and normalised with the ImageNet statistics (:func:`normalize`).

This module imports TensorFlow and NumPy only (no other tfreid module).

Example:
    >>> pixels = load_image("query/0001_c1s1_000151_00.jpg", (160, 64))  # [160, 64, 3] 0..255
    >>> model_input = normalize(pixels[None])
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MEAN_PIXEL", "decode_image", "decode_resize",
           "load_image", "normalize", "resize_image"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The mean colour in 0..255: what becomes 0 after `normalize` (placeholders, random erasing).
MEAN_PIXEL = tuple(255.0 * m for m in IMAGENET_MEAN)


def decode_image(contents: tf.Tensor) -> tf.Tensor:
    """Decode JPEG / PNG / BMP / GIF bytes to uint8 RGB ``[H, W, 3]`` (graph op).

    Grayscale is replicated to RGB, alpha is dropped (not composited), palette PNG/GIF/BMP are
    expanded through their palette (TensorFlow's BMP decoder alone would return the raw 8-bit
    indices), 16-bit PNG is scaled to 8 bit, GIF gives its first frame.

    Args:
        contents: scalar string tensor, the file bytes.

    Returns:
        uint8 tensor ``[H, W, 3]``. Undecodable input raises a TensorFlow error.
    """
    def generic():
        return tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)

    def bmp():
        # Parse the BMP header only for BMP files (the per-image cost matters on the hot path).
        header = tf.strings.substr(tf.strings.join([tf.strings.substr(contents, 0, 64), "\0" * 64]), 0, 64)
        header = tf.cast(tf.io.decode_raw(header, tf.uint8), tf.int32)
        u16 = lambda i: header[i] + 256 * header[i + 1]
        u32 = lambda i: u16(i) + 65536 * u16(i + 2)

        def palette():
            indices = tf.io.decode_bmp(contents, channels=0)[..., 0]
            colours = tf.where(u32(46) == 0, 256, u32(46))
            table = tf.io.decode_raw(tf.strings.substr(contents, 14 + u32(14), 4 * colours), tf.uint8)
            table = tf.reshape(table, [-1, 4])[:, 2::-1]  # BMP palette entries are B, G, R, 0
            return tf.gather(table, tf.cast(indices, tf.int32))

        return tf.cond((u16(28) == 8) & (u32(14) >= 40), palette, generic)

    image = tf.cond(tf.strings.substr(contents, 0, 2) == "BM", bmp, generic)
    return tf.ensure_shape(image, [None, None, 3])


def resize_image(image, size) -> tf.Tensor:
    """Bilinear resize (half-pixel centres, no antialias) of ``[..., h, w, 3]`` to ``size``.

    Args:
        image: one image ``[h, w, 3]`` or a batch ``[n, h, w, 3]``, any real or integer dtype,
            values in 0..255.
        size: ``(height, width)``: Python ints, or an int32 tensor ``[2]``.

    Returns:
        float32 ``[..., height, width, 3]`` in 0..255 (not normalised); with a Python ``size``
        the height and width are static.
    """
    resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=False)
    if isinstance(size, (tuple, list)):
        resized = tf.ensure_shape(resized, (*resized.shape[:-3], *(int(v) for v in size), 3))
    return resized


def decode_resize(contents: tf.Tensor, size) -> tf.Tensor:
    """:func:`decode_image` then :func:`resize_image`: encoded bytes -> float32 ``[H, W, 3]``."""
    return resize_image(decode_image(contents), size)


def load_image(path, size) -> tf.Tensor:
    """Read an image file and :func:`decode_resize` it to ``size``.

    Args:
        path: file path (str, PathLike or scalar string tensor).
        size: ``(height, width)`` of the model input.

    Returns:
        float32 ``[height, width, 3]`` in 0..255. A missing or undecodable file raises a
        TensorFlow error.
    """
    path = path if isinstance(path, tf.Tensor) else str(path)
    return decode_resize(tf.io.read_file(path), size)


def normalize(images_0_255: tf.Tensor) -> tf.Tensor:
    """ImageNet normalisation: ``(x / 255 - mean) / std`` per RGB channel, float32.

    Computed as ``x * (1 / (255 std)) - mean / std`` (equal up to float rounding, ~1e-6).

    Args:
        images_0_255: ``[..., 3]`` tensor (any real or integer dtype) with values in [0, 255].

    Returns:
        float32 tensor of the same shape.
    """
    x = tf.cast(images_0_255, tf.float32)
    scale = 1.0 / (255.0 * np.asarray(IMAGENET_STD, np.float32))
    offset = -np.asarray(IMAGENET_MEAN, np.float32) / np.asarray(IMAGENET_STD, np.float32)
    if x.shape.rank is not None and x.shape.rank >= 3 and x.shape[-3:].is_fully_defined():
        # Broadcasting a length-3 vector along the innermost axis is ~3x slower on CPU than
        # broadcasting an [H, W, 3] plane along the outer axes, so tile the constants.
        tile = (*x.shape[-3:-1], 1)
        scale, offset = np.tile(scale, tile), np.tile(offset, tile)
    return x * tf.constant(scale) + tf.constant(offset)
