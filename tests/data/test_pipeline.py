"""tf.data pipeline, decoding and augmentation, checked against NumPy / hand-computed values."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfreid.data.datasets.base import Sample
from tfreid.data.pipeline import (
    BadImageError,
    build_eval_dataset,
    build_train_dataset,
    iterate_checked,
)
from tfreid.data.sampler import PKSampler, RandomSampler
from tfreid.data.transforms import AugmentConfig, augment, augment_batch
from tfreid.preprocessing import decode_image, normalize

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def np_normalize(x):
    return (np.asarray(x, np.float64) / 255.0 - MEAN) / STD


def _encode(array, fmt, mode=None, **kw):
    image = Image.fromarray(array) if mode is None else Image.fromarray(array, mode)
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _write(path, array, fmt="PNG"):
    path.write_bytes(_encode(array, fmt))
    return str(path)


@pytest.fixture(scope="module")
def pk_samples(tmp_path_factory):
    """5 identities x 3 images, 12x6 PNGs; pixel values encode (pid, image) uniquely."""
    root = tmp_path_factory.mktemp("pk")
    rng = np.random.default_rng(0)
    samples = []
    for pid in range(5):
        for j in range(3):
            array = rng.integers(0, 256, (12, 6, 3), dtype=np.uint8)
            array[0, 0] = (pid * 40, j * 80, 7)
            samples.append(Sample(_write(root / f"{pid}_{j}.png", array), pid, j % 2))
    return samples


# --- normalise / decode ---------------------------------------------------------------------


def test_normalize_matches_numpy_static_and_dynamic_shapes():
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(normalize(x).numpy(), np_normalize(x), atol=2e-6)
    dynamic = tf.function(normalize, input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    x8 = x[0].astype(np.uint8)
    np.testing.assert_allclose(dynamic(x8).numpy(), np_normalize(x8), atol=2e-6)


def test_decode_formats_to_rgb(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    rgba = np.concatenate([rgb, rng.integers(0, 256, (5, 7, 1), dtype=np.uint8)], axis=-1)
    palette = Image.fromarray(rgb).quantize(8)
    pal_rgb = np.asarray(palette.convert("RGB"))
    as_bytes = lambda im, fmt: (lambda b: (im.save(b, fmt), b.getvalue())[1])(io.BytesIO())
    cases = {
        "gray png": (_encode(gray, "PNG"), np.repeat(gray[..., None], 3, -1)),
        "gray bmp": (_encode(gray, "BMP"), np.repeat(gray[..., None], 3, -1)),
        "rgb bmp": (_encode(rgb, "BMP"), rgb),
        "rgba png (alpha dropped)": (_encode(rgba, "PNG"), rgb),
        "palette png": (as_bytes(palette, "PNG"), pal_rgb),
        "palette bmp": (as_bytes(palette, "BMP"), pal_rgb),
        "gif": (as_bytes(palette, "GIF"), pal_rgb),
    }
    for name, (data, expected) in cases.items():
        out = decode_image(tf.constant(data))
        assert out.dtype == tf.uint8 and out.shape == (5, 7, 3), name
        np.testing.assert_array_equal(out.numpy(), expected, err_msg=name)
    jpeg = decode_image(tf.constant(_encode(np.full((8, 8), 200, np.uint8), "JPEG", quality=95)))
    assert jpeg.shape == (8, 8, 3) and np.abs(jpeg.numpy().astype(int) - 200).max() <= 2


# --- eval dataset ---------------------------------------------------------------------------


def test_eval_values_order_count_and_flip(tmp_path):
    # Hand case: a [0, 255] row resized 1x2 -> 1x4 with half-pixel centres samples x = -0.25
    # (clamped), 0.25, 0.75, 1.25 (clamped) -> 0, 63.75, 191.25, 255.
    ramp = np.zeros((1, 2, 3), np.uint8)
    ramp[0, 1] = 255
    rng = np.random.default_rng(3)
    random_img = rng.integers(0, 256, (5, 3, 3), dtype=np.uint8)
    samples = [Sample(_write(tmp_path / "ramp.png", ramp), 0, 0),
               Sample(_write(tmp_path / "rand.png", random_img), 1, 0)]
    for i in range(5):  # constant colours: exact normalised values after any resize
        constant = np.full((9, 4, 3), (10 * i, 128, 250), np.uint8)
        samples.append(Sample(_write(tmp_path / f"c{i}.png", constant), 2 + i, 0))
    batches = list(build_eval_dataset(samples, image_size=(2, 4), batch_size=3))
    assert [b.shape[0] for b in batches] == [3, 3, 1]  # order kept, last partial batch kept
    out = np.concatenate([b.numpy() for b in batches])
    hand = np.array([0.0, 63.75, 191.25, 255.0])[None, :, None].repeat(2, 0).repeat(3, 2)
    np.testing.assert_allclose(out[0], np_normalize(hand), atol=1e-5)
    reference = tf.image.resize(random_img.astype(np.float32), (2, 4), method="bilinear").numpy()
    np.testing.assert_allclose(out[1], np_normalize(reference), atol=1e-5)
    for i in range(5):
        expected = np.broadcast_to(np_normalize([10 * i, 128, 250]), (2, 4, 3))
        np.testing.assert_allclose(out[2 + i], expected, atol=1e-5)
    flipped = np.concatenate([b.numpy() for b in build_eval_dataset(samples, (2, 4), batch_size=4, flip=True)])
    np.testing.assert_array_equal(flipped, out[:, :, ::-1])
    assert not np.allclose(flipped[1], out[1])  # the random image is asymmetric


# --- augmentation ---------------------------------------------------------------------------


def _shift(image, dy, dx):
    """NumPy reference of zero-pad + crop: out[y, x] = image[y + dy, x + dx] or 0 outside."""
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    ys, xs = np.arange(h) + dy, np.arange(w) + dx
    ok_y, ok_x = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
    out[np.ix_(ok_y, ok_x)] = image[np.ix_(ys[ok_y], xs[ok_x])]
    return out


def test_flip_pad_and_crop_are_exact_shifts_and_mirrors():
    image = np.arange(10 * 6 * 3, dtype=np.float32).reshape(10, 6, 3) + 1  # all distinct, nonzero
    batch = np.repeat(image[None], 64, 0)
    out = augment_batch(batch, (10, 6), AugmentConfig(flip=True, pad=2), seed=[4, 2]).numpy()
    candidates = {(f, dy, dx): _shift(image[:, ::-1] if f else image, dy, dx)
                  for f in (0, 1) for dy in range(-2, 3) for dx in range(-2, 3)}
    found = set()
    for item in out:
        match = [key for key, ref in candidates.items() if np.array_equal(item, ref)]
        assert len(match) == 1
        found.add(match[0])
    assert {key[0] for key in found} == {0, 1} and len(found) > 10  # both flips, many shifts
    # crop_from: resize is skipped (already that size) and the output is a window of the input.
    big = np.arange(14 * 8 * 3, dtype=np.float32).reshape(14, 8, 3)
    config = AugmentConfig(flip=False, pad=0, crop_from=(14, 8))
    crops = augment_batch(np.repeat(big[None], 16, 0), (10, 6), config, seed=[0, 9]).numpy()
    windows = {(y, x): big[y:y + 10, x:x + 6] for y in range(5) for x in range(3)}
    offsets = {next(k for k, w in windows.items() if np.array_equal(c, w)) for c in crops}
    assert len(offsets) > 3


def test_random_erasing_box_and_color_jitter_on_gray():
    image = np.full((1, 40, 20, 3), 17.0, np.float32)
    config = AugmentConfig(flip=False, pad=0, random_erasing=1.0)
    out = augment_batch(np.repeat(image, 32, 0), (40, 20), config, seed=[1, 1]).numpy()
    fill = 255.0 * MEAN
    for item in out:
        erased = np.all(np.isclose(item, fill), axis=-1)
        kept = np.all(item == 17.0, axis=-1)
        assert (erased | kept).all() and erased.any()
        rows, cols = np.where(erased)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert erased.sum() == h * w  # one solid rectangle
        assert 0.02 * 800 - 2 * (h + w) <= h * w <= 0.4 * 800 + 2 * (h + w)  # area, up to rounding
    # On a constant gray image contrast and saturation are no-ops: only the brightness factor shows.
    gray = np.full((16, 8, 4, 3), 100.0, np.float32)
    config = AugmentConfig(flip=False, pad=0, color_jitter=0.3)
    jitter = augment_batch(gray, (8, 4), config, seed=[2, 3]).numpy()
    factors = jitter[:, 0, 0, 0] / 100.0
    np.testing.assert_allclose(jitter, factors[:, None, None, None] * gray, rtol=1e-4)
    assert factors.min() >= 0.7 - 1e-4 and factors.max() <= 1.3 + 1e-4 and factors.std() > 0.05


def test_color_jitter_matches_numpy_definition():
    from tfreid.data.transforms import _color_jitter

    x = np.random.default_rng(4).uniform(0, 255, (4, 6, 5, 3)).astype(np.float32)
    seeds = tf.random.experimental.stateless_split(tf.constant([1, 2], tf.int64), 3)
    out = _color_jitter(tf.constant(x), 0.3, 4, seeds).numpy()
    def factor(s):
        return tf.random.stateless_uniform([4], seed=s, minval=0.7, maxval=1.3).numpy()[:, None, None, None]

    luma = np.array([0.299, 0.587, 0.114])
    ref = np.clip(x * factor(seeds[0]), 0, 255)  # brightness
    mean = (ref @ luma).mean(axis=(1, 2))[:, None, None, None]
    ref = np.clip((ref - mean) * factor(seeds[1]) + mean, 0, 255)  # contrast vs mean gray
    grey = (ref @ luma)[..., None]
    ref = np.clip((ref - grey) * factor(seeds[2]) + grey, 0, 255)  # saturation vs pixel gray
    np.testing.assert_allclose(out, ref, atol=2e-3)


def test_augment_is_reproducible_per_seed():
    image = tf.random.stateless_uniform([16, 8, 3], seed=[0, 0], maxval=255.0)
    config = AugmentConfig(random_erasing=0.5, color_jitter=0.2, pad=3)
    a = augment(image, (16, 8), config, seed=[5, 6]).numpy()
    np.testing.assert_array_equal(a, augment(image, (16, 8), config, seed=[5, 6]).numpy())
    assert not np.array_equal(a, augment(image, (16, 8), config, seed=[5, 7]).numpy())


# --- training stream ------------------------------------------------------------------------


def _take(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_train_batches_follow_sampler_and_resume_exactly(pk_samples):
    pids = np.array([s.pid for s in pk_samples])
    sampler = PKSampler(pids, p=2, k=2, seed=11)  # 3 batches per epoch
    kw = dict(image_size=(12, 6), p=2, k=2, seed=11, deterministic=True, augment=AugmentConfig(pad=2))
    full = _take(build_train_dataset(pk_samples, **kw), 8)
    for b, (images, labels) in enumerate(full):
        assert images.shape == (4, 12, 6, 3) and images.dtype == np.float32 and labels.dtype == np.int32
        np.testing.assert_array_equal(labels, pids[sampler.epoch_indices(b // 3)[b % 3]])
    resumed = _take(build_train_dataset(pk_samples, start_step=5, **kw), 3)
    for (a_img, a_lab), (b_img, b_lab) in zip(full[5:], resumed):
        np.testing.assert_array_equal(a_img, b_img)
        np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(full[0][0], full[3][0])  # epochs 0 and 1 start differently


def test_random_sampler_batches_are_the_shuffled_images(pk_samples):
    pids = np.array([s.pid for s in pk_samples])
    # deterministic: the default lets tf.data deliver batches out of order
    kw = dict(image_size=(12, 6), p=4, k=1, seed=3, augment=None, sampler="random", deterministic=True)
    batches = _take(build_train_dataset(pk_samples, **kw), 6)  # 3 batches per epoch of 15
    order = [RandomSampler(15, 4, seed=3).epoch_indices(e) for e in range(2)]
    for b, (images, labels) in enumerate(batches):
        indices = order[b // 3][b % 3]
        np.testing.assert_array_equal(labels, pids[indices])
        expected = [np.asarray(Image.open(pk_samples[i].path), np.float32) for i in indices]
        np.testing.assert_allclose(images, np_normalize(np.stack(expected)), atol=1e-5)
    with pytest.raises(ValueError, match="sampler must be one of"):
        build_train_dataset(pk_samples, **{**kw, "sampler": "balanced"})


def test_resume_does_not_read_skipped_batches(tmp_path, pk_samples):
    pids = np.array([s.pid for s in pk_samples])
    batches = [PKSampler(pids, 2, 2, seed=11).epoch_indices(e) for e in range(3)]
    early, late = set(np.concatenate(batches)[:5].ravel()), set(np.concatenate(batches)[5:8].ravel())
    victim = sorted(early - late)[0]  # read before step 5 only
    samples = list(pk_samples)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    samples[victim] = Sample(str(corrupt), pids[victim], 0)
    kw = dict(image_size=(12, 6), p=2, k=2, seed=11, deterministic=True)
    assert len(_take(build_train_dataset(samples, start_step=5, **kw), 3)) == 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="corrupt.png"):
        _take(build_train_dataset(samples, **kw), 5)


def test_train_without_augmentation_is_the_resized_image(pk_samples):
    # deterministic: under load the default lets whole batches arrive out of order (CI saw batch 1 first)
    images, labels = _take(build_train_dataset(pk_samples, (12, 6), p=2, k=2, seed=0, augment=None,
                                               deterministic=True), 1)[0]
    indices = PKSampler([s.pid for s in pk_samples], 2, 2, seed=0).epoch_indices(0)[0]
    for row, index in zip(images, indices):
        source = np.asarray(Image.open(pk_samples[index].path), np.float32)
        np.testing.assert_allclose(row, np_normalize(source), atol=1e-5)


# --- bad images -----------------------------------------------------------------------------


def test_bad_image_error_mode_names_the_path(tmp_path, pk_samples):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    samples = list(pk_samples[:4]) + [Sample(str(bad), 9, 0)]
    with pytest.raises(BadImageError, match="broken.jpg") as info:
        for _ in iterate_checked(build_eval_dataset(samples, (12, 6), batch_size=2)):
            pass
    assert info.value.path == str(bad) and isinstance(info.value, ValueError)
    with pytest.raises(tf.errors.InvalidArgumentError, match=str(bad)):  # raw iteration too
        list(build_train_dataset(samples[2:], (12, 6), p=2, k=1).take(6))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        build_train_dataset(samples + [Sample(str(tmp_path / "missing.png"), 9, 0)], (12, 6), p=2, k=1)


def test_bad_image_skip_mode_completes_and_reports(tmp_path, pk_samples):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    # id 0 loses one of 3 images; id 5's only image is bad; a missing file is reported at build.
    samples = [Sample(str(text), 0, 0), *pk_samples[1:], Sample(str(empty), 5, 0),
               Sample(str(tmp_path / "gone.png"), 5, 1)]
    ds = build_train_dataset(samples, (12, 6), p=2, k=2, seed=0, augment=None, on_bad_image="skip")
    batches = _take(ds, 24)  # 4 epochs: every identity is sampled
    good = {np.asarray(Image.open(s.path)).tobytes(): s.pid for s in pk_samples[1:]}
    for images, labels in batches:
        assert images.shape == (4, 12, 6, 3)
        assert (labels.reshape(2, 2) == labels.reshape(2, 2)[:, :1]).all() and 5 not in labels
        for image, label in zip(images, labels):  # every row is a real image of its label
            pixels = np.rint(image * STD * 255 + MEAN * 255).astype(np.uint8)
            assert good[pixels.tobytes()] == label
    report = ds.bad_image_report
    assert set(report.paths) == {str(text), str(empty), str(tmp_path / "gone.png")} and report.count == 3
    assert "3 bad image file(s)" in report.summary()
    eval_ds = build_eval_dataset(samples, (12, 6), batch_size=8, on_bad_image="skip")
    out = np.concatenate([b.numpy() for b in eval_ds])
    assert out.shape[0] == len(samples)  # placeholders keep alignment with the sample list
    np.testing.assert_allclose(out[0], 0.0, atol=1e-5)  # mean-colour placeholder
    assert str(text) in eval_ds.bad_image_report.paths


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(on_bad_image="ignore"), "on_bad_image"),
        (dict(image_size=(12,)), "image_size"),
        (dict(start_step=-1), "start_step"),
        (dict(augment="flip"), "augment"),
        (dict(p=6), "p=6"),
    ],
)
def test_train_bad_arguments(pk_samples, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_train_dataset(pk_samples, **{"image_size": (12, 6), "p": 2, "k": 2, **kwargs})


def test_augment_config_validation():
    with pytest.raises(ValueError, match="random_erasing"):
        AugmentConfig(random_erasing=1.5)
    with pytest.raises(ValueError, match="pad"):
        AugmentConfig(pad=-1)
    with pytest.raises(ValueError, match="crop_from"):
        build_train_dataset([Sample("x.png", 0, 0)], (160, 64), augment=AugmentConfig(crop_from=(100, 50)),
                            p=1, k=1)
