"""tf.data input pipelines: P x K training stream and ordered evaluation batches.

Graph (TensorFlow ops only; Python runs once per epoch for the sampler and on the bad-image path)::

    PKSampler row of batch b -> per image: load_image (read_file -> decode -> resize, bilinear,
    no antialias, full image) -> batch -> augment (vectorised, stateless, keyed on (seed, b))
    -> normalise -> prefetch

(``load_image`` and ``normalize`` are ``tfreid.preprocessing``'s, shared with the exports.)

Whole batches are the unit of parallelism (``interleave`` over batches), so
``deterministic=False`` can only reorder batches, never mix their images.

Bad images (missing, empty, truncated, corrupt, unsupported format). The images of a batch are
decoded in a nested dataset under ``ignore_errors()``: any TensorFlow error while reading,
decoding or resizing one image just drops it there, whatever its cause (a magic-byte check alone
would miss truncated files), and the survivors are scattered back into place, giving an in-graph
``ok`` flag per image. Then, per ``on_bad_image``:

- ``"error"``: missing files raise ``FileNotFoundError`` when the dataset is built; any other bad
  file stops iteration with an error naming the path (``tf.errors.InvalidArgumentError`` whose
  message contains ``bad image file <path>``; :func:`iterate_checked` re-raises it as
  :class:`BadImageError`, a ``ValueError``).
- ``"skip"``: the path is added to a :class:`BadImageReport` (missing files at build time, the rest
  the first time they are read; a Python call happens only on this cold path). In a training
  batch a bad row is replaced by a good row of the *same identity group* of that batch (so the
  batch keeps P*K images and correct labels; the copy shares its source row's augmentation). If all
  K rows of a group are bad, the group is replaced by the first good group of the batch (label
  included, so that batch has a repeated identity). A batch with no good image at all stops
  iteration with an error naming its first file (dropping it would spin forever when every
  image is bad). ``tfreid.data.screen`` removes files with a bad size or markers before this.
  Evaluation batches keep a mean-colour placeholder (normalised value 0) in the bad image's slot so
  features stay aligned with the sample list; look the path up in the report to discard it.

The report is returned as ``dataset.bad_image_report`` (and is the ``report`` argument if given);
read and log it at epoch end. Prefetching runs a few batches ahead, so it may already include
files of the next epoch's first batches.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import re
import threading
from typing import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from tfreid.checks import check_int, check_int_tuple
from tfreid.data.datasets.base import Sample
from tfreid.data.sampler import PKSampler, RandomSampler
from tfreid.data.transforms import AugmentConfig, augment_batch, resize_size
from tfreid.preprocessing import MEAN_PIXEL, load_image, normalize

__all__ = ["BadImageError", "BadImageReport", "as_bad_image_error", "build_eval_dataset",
           "build_train_dataset", "iterate_checked", "load_batch"]

_AUTOTUNE = tf.data.AUTOTUNE
# TF escapes quotes and non-ASCII bytes in assertion messages (C escapes), so the path is
# delimited by <...> and unescaped when re-raised as BadImageError.
_BAD_PREFIX = "bad image file <"
_BAD_RE = re.compile(re.escape(_BAD_PREFIX) + r"(.*?)>: ")
_POLICIES = ("error", "skip")
SAMPLERS = ("pk", "random")


class BadImageError(ValueError):
    """An image file could not be read or decoded; ``.path`` names it."""

    def __init__(self, path: str, message: str | None = None):
        self.path = path
        super().__init__(message or f"{_BAD_PREFIX}{path}>: cannot be read or decoded")


class BadImageReport:
    """Thread-safe record of bad image files met by a pipeline (``on_bad_image="skip"``).

    Attributes:
        paths: unique bad paths in the order first seen.
        count: ``len(paths)``.
        occurrences: how many times a bad image was met (a file sampled in many batches counts
            each time).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self.paths: list[str] = []
        self.occurrences = 0

    @property
    def count(self) -> int:
        return len(self.paths)

    def add(self, path) -> None:
        """Record one occurrence of a bad file (str or bytes path)."""
        path = path.numpy() if hasattr(path, "numpy") else path  # from tf.py_function
        path = path.decode() if isinstance(path, bytes) else str(path)
        with self._lock:
            self.occurrences += 1
            if path not in self._seen:
                self._seen.add(path)
                self.paths.append(path)

    def add_all(self, paths) -> None:
        """Record several paths (a list, or a string tensor from ``tf.py_function``)."""
        for path in paths.numpy() if hasattr(paths, "numpy") else paths:
            self.add(path)

    def summary(self, max_paths: int = 10) -> str:
        """One line for logs, e.g. at epoch end."""
        if not self.paths:
            return "no bad images"
        shown = ", ".join(self.paths[:max_paths])
        more = f" (+{self.count - max_paths} more)" if self.count > max_paths else ""
        return f"{self.count} bad image file(s) skipped ({self.occurrences} times): {shown}{more}"

    def __repr__(self) -> str:
        return f"BadImageReport(count={self.count}, occurrences={self.occurrences})"


def load_batch(paths: tf.Tensor, size: tuple[int, int], load=load_image) -> tf.data.Dataset:
    """One element ``(images [n, h, w, 3] float32 in [0, 255], ok [n] bool)`` for ``paths [n]``.

    Each image is decoded (``load(item, size)``: a file path by default, or encoded bytes with
    ``tfreid.preprocessing.decode_resize``) in a nested dataset under ``ignore_errors()``: failed
    images simply do not arrive, the survivors carry their position and are scattered into a
    batch of mean-colour placeholders. A trailing empty element covers the case where every
    image failed.
    """
    n = tf.shape(paths)[0]
    items = tf.data.Dataset.from_tensor_slices((paths, tf.range(n)))
    items = items.map(lambda path, pos: (load(path, size), pos))
    good = items.ignore_errors().batch(tf.cast(n, tf.int64))
    empty = tf.data.Dataset.from_tensors((tf.zeros((0, *size, 3)), tf.zeros((0,), tf.int32)))

    def scatter(images, positions):
        def with_placeholders():
            fill = tf.constant(MEAN_PIXEL)
            batch = tf.tile(fill[None, None, None, :], [n, *size, 1])
            return tf.tensor_scatter_nd_update(batch, positions[:, None], images)

        ok = tf.scatter_nd(positions[:, None], tf.ones_like(positions), [n]) > 0
        # The common all-good case costs no copy.
        images = tf.cond(tf.shape(positions)[0] == n, lambda: images, with_placeholders)
        return tf.ensure_shape(images, (None, *size, 3)), ok

    return good.concatenate(empty).take(1).map(scatter)


def _handle_bad(ok, paths, policy: str, report: BadImageReport):
    """Error mode: assert naming the first bad path. Skip mode: record bad paths (cold path)."""
    all_ok = tf.reduce_all(ok)
    if policy == "error":
        first_bad = paths[tf.argmin(tf.cast(ok, tf.int32))]
        message = tf.strings.join([
            _BAD_PREFIX, first_bad, ">: cannot be read or decoded as JPEG/PNG/BMP/GIF (empty, "
            "truncated, corrupt or another format); pass on_bad_image='skip' to drop such files",
        ])
        return tf.debugging.Assert(all_ok, [message], summarize=1)

    def record():
        tf.py_function(report.add_all, [tf.boolean_mask(paths, ~ok)], [])
        return tf.constant(True)

    return tf.cond(all_ok, lambda: tf.constant(True), record)


def _check_samples(samples, policy: str, report: BadImageReport) -> tuple[list[str], np.ndarray]:
    if policy not in _POLICIES:
        raise ValueError(f"on_bad_image must be one of {_POLICIES}, got {policy!r}")
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence) or len(samples) == 0:
        raise ValueError(f"samples must be a non-empty list of Sample(path, pid, camid), got {samples!r:.80}")
    try:
        paths = [os.fspath(s[0]) for s in samples]
        pids = np.asarray([int(s[1]) for s in samples], np.int64)
    except (TypeError, IndexError, ValueError) as err:
        raise ValueError(f"samples must be Sample(path, pid, camid) tuples: {err}") from None
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing and policy == "error":
        listed = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise FileNotFoundError(f"{len(missing)} image file(s) not found: {listed}")
    for path in dict.fromkeys(missing):
        report.add(path)
    return paths, pids


def _repair_batch(images, labels, ok, p: int, k: int):
    """Replace bad rows by a good row of the same identity group, or by the first good group."""
    ok_groups = tf.reshape(ok, [p, k])
    group_ok = tf.reduce_any(ok_groups, axis=1)
    first_good_group = tf.argmax(tf.cast(group_ok, tf.int32), output_type=tf.int32)
    src_group = tf.where(group_ok, tf.range(p), first_good_group)
    src_ok = tf.gather(ok_groups, src_group)
    first_good_row = tf.argmax(tf.cast(src_ok, tf.int32), axis=1, output_type=tf.int32)
    src_row = tf.where(src_ok, tf.range(k)[None, :], first_good_row[:, None])
    flat = tf.reshape(src_group[:, None] * k + src_row, [-1])
    return tf.gather(images, flat), tf.gather(labels, flat)


def build_train_dataset(
    samples: Sequence[Sample],
    image_size=(160, 64),
    p: int = 8,
    k: int = 4,
    seed: int = 0,
    augment: AugmentConfig | None = AugmentConfig(),
    start_step: int = 0,
    on_bad_image: str = "error",
    deterministic: bool = False,
    report: BadImageReport | None = None,
    random_erasing_start_epoch: int = 0,
    sampler: str = "pk",
) -> tf.data.Dataset:
    """Infinite stream of P x K training batches ``(images, labels)``.

    Batch ``b`` (0-based from the start of training) holds the samples of row ``b % len(sampler)``
    of ``sampler.epoch_indices(b // len(sampler))`` (``PKSampler(pids, p, k, seed)``, or
    ``RandomSampler(len(pids), p * k, seed)``), in that order (with the P x K sampler, rows
    ``[i*k:(i+1)*k]`` share a label). Its augmentation uses stateless random ops seeded with
    ``(seed, b)``, row ``position`` taking row ``position`` of every random draw, so
    ``start_step=s`` reproduces batches ``s, s+1, ...`` of a fresh stream exactly, without reading
    the skipped images. The images of a batch always stay together and in order;
    ``deterministic=False`` only lets whole batches arrive out of order when that is faster.

    Args:
        samples: training ``Sample(path, pid, camid)`` list (pids are used as labels as is).
        image_size: model input ``(height, width)``.
        p, k: identities per batch and images per identity.
        seed: sampler and augmentation seed.
        augment: an :class:`AugmentConfig`, or ``None`` for no augmentation.
        start_step: first batch number to produce (resume).
        on_bad_image: ``"error"`` or ``"skip"`` (see the module docstring).
        deterministic: ``tf.data.Options.deterministic``.
        report: a :class:`BadImageReport` to fill; a new one if ``None``.
        random_erasing_start_epoch: batches of epochs before this one (epoch = batch //
            batches per epoch, 0-based) get no random erasing (CCAN erases from epoch 50 on);
            the other augmentations and their random draws are unchanged. Default 0.
        sampler: ``"pk"`` (:class:`PKSampler`: P identities x K images) or ``"random"``
            (:class:`RandomSampler`: shuffled batches of ``p * k`` images, no identity balance).

    Returns:
        ``tf.data.Dataset`` of ``(float32 [p*k, H, W, 3] normalised, int32 [p*k])``, with the
        report attached as ``.bad_image_report``.

    Example:
        >>> ds = build_train_dataset(data.train, (160, 64), p=8, k=4, seed=1)
        >>> images, labels = next(iter(ds))
    """
    size = check_int_tuple("image_size", image_size, 2)
    check_int("start_step", start_step, 0)
    if augment is not None and not isinstance(augment, AugmentConfig):
        raise ValueError(f"augment must be an AugmentConfig or None, got {type(augment).__name__}")
    erase_from = check_int("random_erasing_start_epoch", random_erasing_start_epoch, 0)
    load_size = size if augment is None else resize_size(size, augment)
    report = BadImageReport() if report is None else report
    paths, pids = _check_samples(samples, on_bad_image, report)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    sampler = PKSampler(pids, p, k, seed) if sampler == "pk" else RandomSampler(len(pids), p * k, seed)
    pk, per_epoch = sampler.p * sampler.k, len(sampler)
    paths_t, labels_t = tf.constant(paths), tf.constant(pids.astype(np.int32))

    def epoch_rows(epoch):
        rows = tf.numpy_function(sampler.epoch_indices, [epoch], tf.int64, stateful=False)
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(rows, [per_epoch, pk]))

    # One Python call per epoch (the sampler), none per image.
    first_epoch, first_row = divmod(int(start_step), per_epoch)
    rows = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch_rows).skip(first_row)
    rows = tf.data.Dataset.zip(tf.data.Dataset.range(int(start_step), np.iinfo(np.int64).max), rows)

    def load(batch, indices):
        return load_batch(tf.gather(paths_t, indices), load_size).map(
            lambda images, ok: (batch, images, ok, tf.gather(paths_t, indices), tf.gather(labels_t, indices)))

    def finish(batch, images, ok, paths, labels):
        with tf.control_dependencies([_handle_bad(ok, paths, on_bad_image, report)]):
            if augment is not None:
                key = tf.stack([tf.cast(seed, tf.int64), batch])  # row i <-> (seed, batch, i)
                if erase_from > 0 and augment.random_erasing > 0:
                    # Same seed with erasing off: identical flips/crops, just no erased box.
                    no_erase = dataclasses.replace(augment, random_erasing=0.0)
                    images = tf.cond(batch // per_epoch >= erase_from,
                                     lambda: augment_batch(images, size, augment, seed=key),
                                     lambda: augment_batch(images, size, no_erase, seed=key))
                else:
                    images = augment_batch(images, size, augment, seed=key)
            images = normalize(images)
        if on_bad_image == "skip":
            # Dropping an all-bad batch would spin forever on an all-bad dataset: stop instead.
            message = tf.strings.join([_BAD_PREFIX, paths[0], ">: every image of training batch ",
                                       tf.strings.as_string(batch), " is unreadable (",
                                       f"{pk} images); check the dataset with "
                                       "python -m tfreid.data.check"])
            with tf.control_dependencies([tf.debugging.Assert(tf.reduce_any(ok), [message])]):
                images, labels = _repair_batch(images, labels, ok, sampler.p, sampler.k)
        return images, labels

    # Whole batches are loaded in parallel: reordering (deterministic=False) never mixes batches.
    ds = rows.interleave(load, num_parallel_calls=_AUTOTUNE, deterministic=deterministic)
    ds = ds.map(finish, num_parallel_calls=_AUTOTUNE, deterministic=deterministic)
    ds = ds.map(lambda images, labels: (tf.ensure_shape(images, (pk, *size, 3)),
                                        tf.ensure_shape(labels, (pk,))))
    ds = _with_options(ds.prefetch(_AUTOTUNE), deterministic)
    ds.bad_image_report = report
    return ds


def build_eval_dataset(
    samples: Sequence[Sample],
    image_size=(160, 64),
    batch_size: int = 128,
    on_bad_image: str = "error",
    flip: bool = False,
    report: BadImageReport | None = None,
    normalized: bool = True,
) -> tf.data.Dataset:
    """Ordered, unaugmented batches of normalised images (last partial batch kept).

    Args:
        samples: ``Sample`` list (query or gallery); output follows its order exactly.
        image_size: model input ``(height, width)``.
        batch_size: images per batch (>= 1).
        on_bad_image: ``"error"`` or ``"skip"`` (skip keeps a placeholder, see module docstring).
        flip: yield horizontally mirrored images (flip test-time augmentation).
        report: a :class:`BadImageReport` to fill; a new one if ``None``.
        normalized: ImageNet-normalise (default); False yields RGB pixels in 0..255, the input
            of the exported models (which normalise in-graph).

    Returns:
        ``tf.data.Dataset`` of float32 ``[b, H, W, 3]``, ``.bad_image_report`` attached.

    Example:
        >>> feats = [model(x)["embedding"] for x in build_eval_dataset(data.query, (160, 64))]
    """
    size = check_int_tuple("image_size", image_size, 2)
    check_int("batch_size", batch_size)
    report = BadImageReport() if report is None else report
    paths, _ = _check_samples(samples, on_bad_image, report)

    def finish(images, ok, paths):
        with tf.control_dependencies([_handle_bad(ok, paths, on_bad_image, report)]):
            images = tf.reverse(images, axis=[2]) if flip else tf.identity(images)
            return normalize(images) if normalized else images

    ds = tf.data.Dataset.from_tensor_slices(paths).batch(int(batch_size))
    ds = ds.interleave(lambda batch: load_batch(batch, size).map(lambda im, ok: (im, ok, batch)),
                       num_parallel_calls=_AUTOTUNE, deterministic=True)
    ds = ds.map(finish, num_parallel_calls=_AUTOTUNE, deterministic=True)
    ds = _with_options(ds.prefetch(_AUTOTUNE), True)
    ds.bad_image_report = report
    return ds


def _with_options(ds: tf.data.Dataset, deterministic: bool) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return ds.with_options(options)


def iterate_checked(dataset: Iterable) -> Iterator:
    """Iterate ``dataset``, turning the pipeline's bad-image errors into :class:`BadImageError`.

    Example:
        >>> for images, labels in iterate_checked(ds.take(100)): ...
    """
    iterator = iter(dataset)
    while True:
        try:
            element = next(iterator)
        except StopIteration:
            return
        except tf.errors.InvalidArgumentError as err:
            bad = as_bad_image_error(err)
            if bad is None:
                raise
            raise bad from None
        yield element


def as_bad_image_error(err: Exception) -> BadImageError | None:
    """The :class:`BadImageError` a pipeline assertion `err` carries, or ``None``."""
    match = _BAD_RE.search(getattr(err, "message", ""))
    if not isinstance(err, tf.errors.InvalidArgumentError) or match is None:
        return None
    unescape = lambda text: codecs.escape_decode(text.encode())[0].decode(errors="replace")
    line = err.message[match.start():].split("\n")[0].rstrip("]")
    return BadImageError(unescape(match.group(1)), unescape(line))
