"""Training augmentation as TensorFlow graph ops.

Everything here is graph-only (``tf.image`` + stateless ``tf.random``) so it runs inside
``tf.data`` without Python callbacks. Randomness comes from an explicit ``seed`` (shape ``[2]``
int tensor): the same seed gives the same augmentation, which is what makes a resumed training
run bit-identical to an uninterrupted one.

Images are float32 in ``[0, 255]`` until ``tfreid.preprocessing.normalize``; random erasing
fills with the ImageNet mean, i.e. exactly what becomes ~0 after normalisation (Zhong et al.
erase *after* normalising with fill 0; erasing before with the mean colour is the same thing).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfreid.checks import check_int_tuple
from tfreid.preprocessing import MEAN_PIXEL, resize_image

__all__ = [
    "AugmentConfig",
    "augment",
    "augment_batch",
    "resize_size",
]

# Random erasing hyper-parameters of Zhong et al. (and torchreid): area fraction, aspect ratio.
_ERASE_AREA = (0.02, 0.4)
_ERASE_ASPECT = (0.3, 1 / 0.3)
_ERASE_ATTEMPTS = 100  # drawn at once; the first box that fits is used (as the paper's loop)


@dataclasses.dataclass
class AugmentConfig:
    """Training augmentation switches (defaults: flip + pad-10-and-crop, the ReID baseline).

    Args:
        flip: random horizontal flip with probability 0.5.
        pad: zero-pad by ``pad`` pixels on every side, then randomly crop back to the size
            (0 = off).
        crop_from: ``(h, w)`` to resize to before randomly cropping the model size (CCAN resizes
            to 288x144 and crops 256x128); ``None`` = resize straight to the model size.
        random_erasing: probability of erasing one random box (area 2-40 %, aspect 0.3-3.3,
            filled with the mean colour).
        color_jitter: strength ``s`` of brightness, contrast and saturation jitter, each factor
            drawn uniformly from ``[1 - s, 1 + s]`` (torchvision ``ColorJitter`` style); 0 = off.

    Example:
        >>> AugmentConfig(random_erasing=0.5, crop_from=(288, 144))  # CCAN recipe
    """

    flip: bool = True
    pad: int = 10
    crop_from: tuple[int, int] | None = None
    random_erasing: float = 0.0
    color_jitter: float = 0.0

    def __post_init__(self):
        if not isinstance(self.pad, int) or self.pad < 0:
            raise ValueError(f"AugmentConfig.pad must be an integer >= 0, got {self.pad!r}")
        if not 0.0 <= float(self.random_erasing) <= 1.0:
            raise ValueError(
                f"AugmentConfig.random_erasing is a probability in [0, 1], got {self.random_erasing!r}"
            )
        if not 0.0 <= float(self.color_jitter) < 1.0:
            raise ValueError(
                f"AugmentConfig.color_jitter must be in [0, 1), got {self.color_jitter!r}"
            )
        if self.crop_from is not None:
            crop = tuple(self.crop_from)
            if len(crop) != 2 or not all(isinstance(v, int) and v > 0 for v in crop):
                raise ValueError(
                    f"AugmentConfig.crop_from must be None or (height, width) positive ints, "
                    f"got {self.crop_from!r}"
                )
            self.crop_from = crop

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all (HA-CNN paper recipe)."""
        return cls(flip=False, pad=0)


def resize_size(image_size, config: AugmentConfig) -> tuple[int, int]:
    """The size decoded images are resized to before :func:`augment` (``crop_from`` or model)."""
    size = check_int_tuple("image_size", image_size, 2)
    if config.crop_from is None:
        return size
    if config.crop_from[0] < size[0] or config.crop_from[1] < size[1]:
        raise ValueError(
            f"AugmentConfig.crop_from={config.crop_from} must be at least image_size={size}"
        )
    return config.crop_from


def _uniform(seed, shape, lo=0.0, hi=1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi)


def _randint(seed, n, high):
    """``n`` integers uniform in ``[0, high]`` (``high`` may be a per-item tensor)."""
    span = tf.cast(high, tf.float32) + 1.0
    return tf.minimum(tf.cast(tf.floor(_uniform(seed, [n]) * span), tf.int32), tf.cast(high, tf.int32))


def _geometry(images, size, config, n, seeds):
    """[crop_from random crop] -> flip -> pad + random crop, as one gather per axis.

    Zero padding then cropping back equals shifting the image by (oy - pad, ox - pad) with zero
    fill, and a flip of the padded image is the padded flipped image, so every output pixel maps
    to one source pixel (or to zero): gathering rows then columns does all three at once.
    """
    height, width = size
    src_h, src_w = images.shape[1], images.shape[2]
    if not config.flip and config.pad == 0 and (src_h, src_w) == (height, width):
        return images
    cy = _randint(seeds[0], n, src_h - height) if src_h > height else tf.zeros([n], tf.int32)
    cx = _randint(seeds[1], n, src_w - width) if src_w > width else tf.zeros([n], tf.int32)
    pad = config.pad
    oy = _randint(seeds[2], n, 2 * pad) - pad if pad else tf.zeros([n], tf.int32)
    ox = _randint(seeds[3], n, 2 * pad) - pad if pad else tf.zeros([n], tf.int32)
    rows = tf.range(height)[None, :] + oy[:, None]  # row in the cropped image, [n, height]
    cols = tf.range(width)[None, :] + ox[:, None]
    if config.flip:
        flip = _uniform(seeds[4], [n]) < 0.5
        cols = tf.where(flip[:, None], width - 1 - cols, cols)
    # Out-of-range rows/cols point at one appended zero row/col (the padding), so no mask pass.
    rows = tf.where((rows >= 0) & (rows < height), rows + cy[:, None], src_h)
    cols = tf.where((cols >= 0) & (cols < width), cols + cx[:, None], src_w)
    out = tf.pad(images, [[0, 0], [0, 1], [0, 1], [0, 0]])
    out = tf.gather(out, rows, axis=1, batch_dims=1)
    # Gathering whole rows is far faster than gathering 3-float pixels: transpose around it.
    out = tf.gather(tf.transpose(out, [0, 2, 1, 3]), cols, axis=1, batch_dims=1)
    return tf.transpose(out, [0, 2, 1, 3])


def _color_jitter(images, strength, n, seeds):
    """Brightness, contrast, saturation factors in [1-s, 1+s] (torchvision blend definitions).

    Contrast blends with the image's mean gray level, saturation with each pixel's gray level
    (ITU-R 601 luma); the saturation blend is one [3, 3] colour matrix per image (a batched
    matmul), which avoids slow broadcasting over the channel axis.
    """
    factor = lambda seed: _uniform(seed, [n], 1.0 - strength, 1.0 + strength)[:, None, None, None]
    luma = tf.constant([0.299, 0.587, 0.114], tf.float32)
    images = tf.clip_by_value(images * factor(seeds[0]), 0.0, 255.0)
    mean = tf.reduce_sum(tf.reduce_mean(images, axis=[1, 2]) * luma, axis=1)[:, None, None, None]
    contrast = factor(seeds[1])
    images = tf.clip_by_value(images * contrast + mean * (1.0 - contrast), 0.0, 255.0)
    sat = factor(seeds[2])[:, 0, 0]  # [n, 1]
    # out_c = sat * x_c + (1 - sat) * sum_j luma_j x_j  ->  x @ (sat I + (1 - sat) luma 1^T)
    matrix = sat[:, :, None] * tf.eye(3) + (1.0 - sat)[:, :, None] * luma[None, :, None]
    shape = tf.shape(images)
    flat = tf.linalg.matmul(tf.reshape(images, [n, -1, 3]), matrix)
    return tf.clip_by_value(tf.reshape(flat, shape), 0.0, 255.0)


def _random_erasing(images, probability, n, seeds):
    """Zhong et al. random erasing, vectorised: draw all attempts, keep the first that fits."""
    height, width = images.shape[1], images.shape[2]
    area = _uniform(seeds[0], [n, _ERASE_ATTEMPTS], *_ERASE_AREA) * float(height * width)
    aspect = _uniform(seeds[1], [n, _ERASE_ATTEMPTS], *_ERASE_ASPECT)
    box_h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    box_w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (box_h < height) & (box_w < width)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)[:, None]
    box_h = tf.gather(box_h, first, batch_dims=1)[:, 0]
    box_w = tf.gather(box_w, first, batch_dims=1)[:, 0]
    top = _randint(seeds[2], n, height - box_h)[:, None]
    left = _randint(seeds[3], n, width - box_w)[:, None]
    apply = (_uniform(seeds[4], [n]) < probability) & tf.reduce_any(fits, axis=1)
    # Masks in the [n, H, W*3] layout: broadcasting over a trailing length-3 axis is slow on CPU.
    rows = tf.range(height)[None, :]
    cols = tf.repeat(tf.range(width), 3)[None, :]
    row_in = (rows >= top) & (rows < top + box_h[:, None]) & apply[:, None]
    col_in = (cols >= left) & (cols < left + box_w[:, None])
    inside = row_in[:, :, None] & col_in[:, None, :]
    fill = tf.tile(tf.constant(MEAN_PIXEL, tf.float32), [width])
    flat = tf.reshape(images, [n, height, width * 3])
    flat = tf.where(inside, tf.broadcast_to(fill, tf.shape(flat)), flat)
    return tf.reshape(flat, [n, height, width, 3])


def augment_batch(images: tf.Tensor, image_size, config: AugmentConfig, seed=None) -> tf.Tensor:
    """Random training augmentation of a batch, vectorised (graph ops, stateless randomness).

    Order (as torchreid): [random crop from ``crop_from``] -> flip -> pad + random crop ->
    colour jitter -> random erasing. ``tfreid.preprocessing.normalize`` is applied afterwards by
    the pipeline.
    Item ``i`` uses row ``i`` of random draws keyed on ``seed``, so its augmentation is a pure
    function of ``(seed, i)`` and of the batch size.

    Args:
        images: ``[n, h, w, 3]`` in [0, 255], already resized to ``resize_size(image_size,
            config)`` (otherwise resized here first, bilinear).
        image_size: model input ``(height, width)``.
        config: an :class:`AugmentConfig`.
        seed: int tensor of shape ``[2]``; the same seed gives the same output. ``None`` draws a
            fresh seed from the global generator (not reproducible).

    Returns:
        float32 ``[n, height, width, 3]`` in [0, 255].

    Example:
        >>> batch = tf.fill([32, 160, 64, 3], 100.0)
        >>> augment_batch(batch, (160, 64), AugmentConfig(), seed=[1, 2]).shape
        TensorShape([32, 160, 64, 3])

    Reference:
        Zhong et al., "Random Erasing Data Augmentation", AAAI 2020 (random erasing);
        CCAN paper (resize 288x144 then random-crop 256x128).
    """
    size = check_int_tuple("image_size", image_size, 2)
    if not isinstance(config, AugmentConfig):
        raise ValueError(f"config must be an AugmentConfig, got {type(config).__name__}")
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 13)
    images = tf.cast(images, tf.float32)
    if images.shape.rank != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [n, h, w, 3], got shape {images.shape}")
    src = resize_size(size, config)
    if tuple(images.shape[1:3]) != src:
        images = resize_image(images, src)
    n = tf.shape(images)[0]
    images = _geometry(images, size, config, n, seeds[0:5])
    if config.color_jitter > 0:
        images = _color_jitter(images, float(config.color_jitter), n, seeds[5:8])
    if config.random_erasing > 0:
        images = _random_erasing(images, float(config.random_erasing), n, seeds[8:13])
    return tf.ensure_shape(images, (None, *size, 3))


def augment(image: tf.Tensor, image_size, config: AugmentConfig, seed=None) -> tf.Tensor:
    """:func:`augment_batch` for one ``[h, w, 3]`` image; returns ``[height, width, 3]``.

    Example:
        >>> augment(tf.fill([160, 64, 3], 9.0), (160, 64), AugmentConfig(), seed=[0, 1]).shape
        TensorShape([160, 64, 3])
    """
    return augment_batch(tf.convert_to_tensor(image)[None], image_size, config, seed)[0]
