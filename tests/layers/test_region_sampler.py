"""RegionSampler: values vs an independent NumPy bilinear sampler, hand cases, gradients,
TFLite (builtin ops only), XLA, mixed precision and serialization."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.layers.region_sampler import RegionSampler


def reference_sample(features, theta, output_size, scale, align_corners):
    """Per-output-pixel bilinear sampling (PyTorch affine_grid + grid_sample, zeros padding)."""
    batch, height, width, channels = features.shape
    out_h, out_w = output_size
    s_h, s_w = scale

    def base_grid(n):  # torch's linspace_from_neg_one
        if n == 1:
            return np.zeros(1)
        grid = np.linspace(-1.0, 1.0, n)
        return grid if align_corners else grid * (n - 1) / n

    def unnormalize(coord, size):
        return (coord + 1) / 2 * (size - 1) if align_corners else ((coord + 1) * size - 1) / 2

    def pixel(b, y, x):
        if 0 <= y < height and 0 <= x < width:
            return features[b, y, x]
        return np.zeros(channels)

    out = np.zeros((batch, theta.shape[1], out_h, out_w, channels))
    for b in range(batch):
        for t in range(theta.shape[1]):
            tx, ty = theta[b, t]
            for r, v in enumerate(base_grid(out_h)):
                for c, u in enumerate(base_grid(out_w)):
                    px = unnormalize(s_w * u + tx, width)
                    py = unnormalize(s_h * v + ty, height)
                    x0, y0 = int(np.floor(px)), int(np.floor(py))
                    fx, fy = px - x0, py - y0
                    out[b, t, r, c] = (
                        (1 - fy) * (1 - fx) * pixel(b, y0, x0)
                        + (1 - fy) * fx * pixel(b, y0, x0 + 1)
                        + fy * (1 - fx) * pixel(b, y0 + 1, x0)
                        + fy * fx * pixel(b, y0 + 1, x0 + 1)
                    )
    return out


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    "shape,output_size,scale",
    [
        ((2, 12, 9, 3), (5, 7), (0.25, 1.0)),  # HA-CNN scales
        ((1, 7, 10, 2), (4, 1), (0.6, 1.7)),  # single output column (u = 0)
        ((2, 5, 6, 1), (1, 3), (2.0, 0.3)),  # single output row, region larger than the image
    ],
)
def test_matches_numpy_reference(shape, output_size, scale, align_corners):
    rng = np.random.default_rng(0)
    features = rng.normal(size=shape).astype("float32")
    # Translations up to 1.3 push regions partly (or wholly) outside the image -> zero padding.
    theta = rng.uniform(-1.3, 1.3, size=(shape[0], 3, 2)).astype("float32")
    layer = RegionSampler(output_size, scale=scale, align_corners=align_corners)
    got = np.asarray(layer([features, theta]))
    want = reference_sample(features.astype("float64"), theta.astype("float64"), output_size, scale,
                            align_corners)
    assert got.shape == (shape[0], 3, *output_size, shape[3])
    assert np.abs(want).max() > 0.1  # the case samples real content, not only padding
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_theta_returns_input_exactly(align_corners):
    features = np.random.default_rng(1).normal(size=(2, 9, 6, 4)).astype("float32")
    layer = RegionSampler((9, 6), scale=(1.0, 1.0), align_corners=align_corners)
    out = np.asarray(layer([features, np.zeros((2, 1, 2), "float32")]))
    np.testing.assert_array_equal(out[:, 0], features)


def test_hand_computed_half_pixel_shifts():
    # One row [1, 2, 3, 4]; s_w = 0.5 and two output columns sample pixel centres 1 and 2.
    # One pixel is 2 / W = 0.5 in normalised units, so tx = 0.25 is a half-pixel shift.
    features = np.array([1.0, 2.0, 3.0, 4.0], "float32").reshape(1, 1, 4, 1)
    layer = RegionSampler((1, 2), scale=(1.0, 0.5))
    theta = np.array([[[0.0, 0.0], [0.25, 0.0], [0.75, 0.0], [-0.75, 0.0]]], "float32")
    out = np.asarray(layer([features, theta]))[0, :, 0, :, 0]
    # tx=0.75 -> pixels 2.5, 3.5: the right neighbour of 3.5 is padding -> 0.5 * 4.
    # tx=-0.75 -> pixels -0.5, 0.5: 0.5 * 1 and (1 + 2) / 2.
    np.testing.assert_allclose(out, [[2.0, 3.0], [2.5, 3.5], [3.5, 2.0], [0.5, 1.5]], rtol=0, atol=1e-6)


def test_half_pixel_shift_full_map_vertical():
    features = np.random.default_rng(2).normal(size=(1, 8, 3, 2)).astype("float32")
    layer = RegionSampler((8, 3), scale=(1.0, 1.0))
    out = np.asarray(layer([features, np.array([[[0.0, 1.0 / 8]]], "float32")]))[0, 0]
    padded = np.concatenate([features[0], np.zeros((1, 3, 2), "float32")], axis=0)
    np.testing.assert_allclose(out, 0.5 * (padded[:-1] + padded[1:]), atol=1e-6)


def _tent_kink_distance(theta, shape, output_size, scale):
    """Smallest distance of any sampled pixel coordinate to an integer (where the tent has a kink)."""
    (_, height, width, _), (out_h, out_w), (s_h, s_w) = shape, output_size, scale
    u = (2 * np.arange(out_w) + 1) / out_w - 1
    v = (2 * np.arange(out_h) + 1) / out_h - 1
    px = ((s_w * u[None, None] + theta[..., :1] + 1) * width - 1) / 2
    py = ((s_h * v[None, None] + theta[..., 1:] + 1) * height - 1) / 2
    coords = np.concatenate([px.ravel(), py.ravel()])
    return np.abs(coords - np.round(coords)).min()


def test_gradients_match_finite_differences():
    shape, output_size, scale = (2, 6, 5, 2), (3, 4), (0.5, 0.8)
    rng = np.random.default_rng(3)
    features = rng.normal(size=shape)
    theta = rng.uniform(-0.9, 0.9, size=(2, 2, 2))
    assert _tent_kink_distance(theta, shape, output_size, scale) > 1e-3
    weights = rng.normal(size=(2, 2, *output_size, 2))
    layer = RegionSampler(output_size, scale=scale, dtype="float64")

    def loss(f, t):
        return float(np.sum(np.asarray(layer([f, t])) * weights))

    f_var, t_var = tf.constant(features), tf.constant(theta)
    with tf.GradientTape() as tape:
        tape.watch([f_var, t_var])
        value = tf.reduce_sum(layer([f_var, t_var]) * weights)
    grad_f, grad_t = tape.gradient(value, [f_var, t_var])

    eps = 1e-6
    fd_t = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        step = np.zeros_like(theta)
        step[idx] = eps
        fd_t[idx] = (loss(features, theta + step) - loss(features, theta - step)) / (2 * eps)
    assert np.abs(fd_t).max() > 0.1
    np.testing.assert_allclose(grad_t.numpy(), fd_t, rtol=1e-6, atol=1e-7)

    # The output is linear in the features, so a sparse probe of entries suffices.
    fd_f = np.zeros_like(features)
    for idx in list(np.ndindex(features.shape))[::5]:
        step = np.zeros_like(features)
        step[idx] = eps
        fd_f[idx] = (loss(features + step, theta) - loss(features - step, theta)) / (2 * eps)
    mask = np.zeros(features.size, bool)
    mask[::5] = True
    mask = mask.reshape(features.shape)
    assert np.abs(fd_f[mask]).max() > 0.1
    np.testing.assert_allclose(grad_f.numpy()[mask], fd_f[mask], rtol=1e-6, atol=1e-7)


def _functional_model(shape=(16, 8, 3), regions=4, output_size=(6, 7)):
    features = keras.Input(shape)
    theta = keras.Input((regions, 2))
    sampled = RegionSampler(output_size, name="sampler")([features, theta])
    return keras.Model([features, theta], sampled)


def _random_inputs(batch=3, shape=(16, 8, 3), regions=4, seed=4):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(batch, *shape)).astype("float32"),
        rng.uniform(-1.1, 1.1, size=(batch, regions, 2)).astype("float32"),
    )


def test_tflite_builtin_ops_only_matches_keras():
    from ai_edge_litert.interpreter import Interpreter

    model = _functional_model()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    op_names = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "BATCH_MATMUL" in op_names
    assert not any(name.startswith("Flex") or "GATHER" in name for name in op_names), op_names

    features, theta = _random_inputs()
    inputs = interpreter.get_input_details()
    # Batch is dynamic in the converted model: resize to batch 3.
    by_rank = {4: features, 3: theta}
    for detail in inputs:
        interpreter.resize_tensor_input(detail["index"], by_rank[len(detail["shape"])].shape)
    interpreter.allocate_tensors()
    for detail in inputs:
        interpreter.set_tensor(detail["index"], by_rank[len(detail["shape"])])
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, np.asarray(model([features, theta])), atol=1e-5, rtol=0)


def test_xla_matches_eager():
    layer = RegionSampler((6, 7), scale=(0.25, 1.0))
    features, theta = _random_inputs()
    compiled = tf.function(lambda f, t: layer([f, t]), jit_compile=True)
    eager = np.asarray(layer([features, theta]))
    np.testing.assert_allclose(compiled(features, theta).numpy(), eager, atol=1e-6, rtol=0)
    want = reference_sample(features.astype("float64"), theta.astype("float64"), (6, 7), (0.25, 1.0), False)
    np.testing.assert_allclose(eager, want, atol=2e-5)


def test_mixed_precision_float16_output_close_to_float32():
    # HA-CNN level-1 geometry: an 80-row map, where float16 *sampling positions* would be off by up
    # to ~0.05 px; the layer computes them in float32, so only feature/matmul rounding remains.
    rng = np.random.default_rng(5)
    features = rng.normal(size=(2, 80, 32, 4)).astype("float32")
    theta16 = rng.uniform(-1, 1, size=(2, 4, 2)).astype("float16")
    reference = np.asarray(RegionSampler((24, 28))([features, theta16.astype("float32")]))
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        layer = RegionSampler((24, 28))
        out = layer([tf.cast(features, "float16"), tf.constant(theta16)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert layer.compute_dtype == "float16" and out.dtype == tf.float16
    np.testing.assert_allclose(out.numpy().astype("float32"), reference, atol=1e-2, rtol=0)


def test_get_config_round_trip():
    layer = RegionSampler([12, 14], scale=(0.5, 0.75), align_corners=True, sample_then_resize=True, name="s")
    config = layer.get_config()
    assert config["output_size"] == [12, 14] and config["scale"] == [0.5, 0.75] and config["align_corners"]
    clone = RegionSampler.from_config(config)
    assert clone.output_size == (12, 14) and clone.scale == (0.5, 0.75) and clone.align_corners is True
    assert clone.sample_then_resize is True
    features, theta = _random_inputs()
    np.testing.assert_array_equal(np.asarray(clone([features, theta])), np.asarray(layer([features, theta])))


def test_keras_save_load_safe_mode(tmp_path):
    model = _functional_model()
    path = os.fspath(tmp_path / "sampler.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.get_layer("sampler"), RegionSampler)
    features, theta = _random_inputs()
    np.testing.assert_array_equal(np.asarray(loaded([features, theta])), np.asarray(model([features, theta])))


def test_compute_output_shape_matches_call():
    layer = RegionSampler((5, 4))
    assert layer.compute_output_shape(((None, 16, 8, 3), (None, 4, 2))) == (None, 4, 5, 4, 3)
    features, theta = _random_inputs()
    assert tuple(layer([features, theta]).shape) == layer.compute_output_shape((features.shape, theta.shape))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"output_size": (24,)}, "output_size"),
        ({"output_size": (0, 4)}, "output_size"),
        ({"output_size": (2.5, 4)}, "output_size"),
        ({"output_size": 24}, "output_size"),
        ({"output_size": (4, 4), "scale": (0.0, 1.0)}, r"scale=\(0.0, 1.0\)"),
        ({"output_size": (4, 4), "scale": (0.25, 2.5)}, "scale"),
        ({"output_size": (4, 4), "scale": (0.25,)}, "scale"),
        ({"output_size": (4, 4), "align_corners": "yes"}, "align_corners"),
        ({"output_size": (4, 4), "sample_then_resize": 1}, "sample_then_resize=1"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RegionSampler(**kwargs)


def test_bad_input_shapes():
    layer = RegionSampler((4, 4))
    features = np.zeros((2, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match=r"theta of shape \[B, T, 2\].*\(2, 4, 3\)"):
        layer([features, np.zeros((2, 4, 3), "float32")])
    with pytest.raises(ValueError, match="same batch size"):
        layer([features, np.zeros((3, 4, 2), "float32")])
    with pytest.raises(ValueError, match=r"`features` to be a feature map \[B, H, W, C\], "
                                         r"received shape \(2, 8, 8\) \(rank 3"):
        layer([np.zeros((2, 8, 8), "float32"), np.zeros((2, 4, 2), "float32")])


def reference_resize_aligned(x, output_size):
    """Bilinear resize of [..., H, W, C] with align_corners=True (PyTorch's F.upsample/interpolate)."""
    def coords(n_out, n_in):
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    (y0, y1, fy), (x0, x1, fx) = coords(output_size[0], x.shape[-3]), coords(output_size[1], x.shape[-2])
    rows = x[..., y0, :, :] * (1 - fy)[:, None, None] + x[..., y1, :, :] * fy[:, None, None]
    return rows[..., x0, :] * (1 - fx)[:, None] + rows[..., x1, :] * fx[:, None]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(
    "shape,output_size,scale",
    [
        ((2, 20, 8, 3), (6, 7), (0.25, 1.0)),  # HA-CNN level 3: 20x8 map -> 6x7 regions
        ((1, 9, 11, 2), (12, 1), (0.6, 1.3)),  # upsampling rows, a single output column
    ],
)
def test_sample_then_resize_matches_two_step_reference(shape, output_size, scale, align_corners):
    rng = np.random.default_rng(1)
    features = rng.normal(size=shape).astype("float32")
    theta = rng.uniform(-1.3, 1.3, size=(shape[0], 3, 2)).astype("float32")
    layer = RegionSampler(output_size, scale=scale, align_corners=align_corners, sample_then_resize=True)
    got = np.asarray(layer([features, theta]))
    sampled = reference_sample(features.astype("float64"), theta.astype("float64"), shape[1:3], scale, align_corners)
    want = reference_resize_aligned(sampled, output_size)
    direct = np.asarray(RegionSampler(output_size, scale=scale, align_corners=align_corners)([features, theta]))
    assert np.abs(want - direct).max() > 0.05  # the two-step result is not the one-step one
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_reference_resize_hand_computed():
    x = np.arange(4.0).reshape(1, 4, 1, 1)  # rows 0, 1, 2, 3
    # 4 -> 3 rows with aligned corners samples rows 0, 1.5, 3; one output row reads row 0.
    np.testing.assert_allclose(reference_resize_aligned(x, (3, 1)).ravel(), [0.0, 1.5, 3.0])
    np.testing.assert_allclose(reference_resize_aligned(x, (1, 1)).ravel(), [0.0])
