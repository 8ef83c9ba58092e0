"""HA-CNN functional model: outputs, size, cost, region sharing, gradients, serialisation."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.layers import RegionSampler
from tfreid.models import build_model
from tfreid.models.blocks import PerRegion
from tfreid.models.complexity import count_flops, count_params

NUM_CLASSES = 10
T = 4
STRIPES = np.tanh(np.array([[0.0, -0.75], [0.0, -0.25], [0.0, 0.25], [0.0, 0.75]]))


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model("hacnn", NUM_CLASSES)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(2, 160, 64, 3)).astype("float32")


@pytest.fixture(scope="module")
def out(model, images):
    return {k: np.asarray(v) for k, v in model(images, training=False).items()}


# ----------------------------------------------------------------------------- independent formulas
def conv_bn(cin, cout, k, bias=False):
    return k * k * cin * cout + (cout if bias else 0) + 2 * cout  # kernel (+ bias) + BN gamma, beta


def inception_a(cin, c, b=False):
    m = c // 4
    return 3 * (conv_bn(cin, m, 1, b) + conv_bn(m, m, 3, b)) + conv_bn(cin, m, 1, b)


def inception_b(cin, c, b=False):
    m = c // 4
    return (conv_bn(cin, m, 1, b) + conv_bn(m, m, 3, b)) + (
        conv_bn(cin, m, 1, b) + 2 * conv_bn(m, m, 3, b)
    ) + conv_bn(cin, 2 * m, 1, b)


def hacnn_params(bias=False, learn_region=True, widths=(128, 256, 384), dim=512):
    total, cin = conv_bn(3, 32, 3, bias), 32
    for c in widths:
        soft = conv_bn(1, 1, 3, bias) + conv_bn(1, 1, 1, bias) + conv_bn(c, c // 16, 1, bias)
        soft += conv_bn(c // 16, c, 1, bias) + conv_bn(c, c, 1, bias)
        hard = c * 2 * T + 2 * T if learn_region else 0
        total += inception_a(cin, c, bias) + inception_b(c, c, bias) + soft + hard
        cin = c
    total += widths[-1] * dim + dim + 2 * dim  # fc_global + BN
    if learn_region:
        total += inception_b(32, 128, bias) + inception_b(128, 256, bias) + inception_b(256, 384, bias)
        total += T * widths[-1] * dim + dim + 2 * dim
    return total


def hacnn_macs(num_classes):
    """Conv / dense / sampler multiply-accumulates per 160x64 image, layer by layer."""

    def conv(h, w, cin, cout, k, s=1):
        return math.ceil(h / s) * math.ceil(w / s) * cin * cout * k * k

    def inc_a(h, w, cin, c):
        m = c // 4
        return 3 * (conv(h, w, cin, m, 1) + conv(h, w, m, m, 3)) + conv(h, w, cin, m, 1)

    def inc_b(h, w, cin, c):
        m = c // 4
        return (conv(h, w, cin, m, 1) + conv(h, w, m, m, 3, 2)) + (
            conv(h, w, cin, m, 1) + conv(h, w, m, m, 3) + conv(h, w, m, m, 3, 2)
        ) + conv(math.ceil(h / 2), math.ceil(w / 2), cin, 2 * m, 1)

    total, (h, w, cin) = conv(160, 64, 3, 32, 3, 2), (80, 32, 32)
    for c, (lh, lw) in zip((128, 256, 384), ((24, 28), (12, 14), (6, 7))):
        total += T * (lh * h * w * cin + lw * w * lh * cin)  # separable sampler: rows, then columns
        total += T * inc_b(lh, lw, cin, c)  # local Inception-B on every region
        total += inc_a(h, w, cin, c) + inc_b(h, w, c, c)
        h, w = h // 2, w // 2
        soft = conv(h, w, 1, 1, 3, 2) + conv(h, w, 1, 1, 1) + 2 * c * (c // 16) + conv(h, w, c, c, 1)
        total += soft + c * 2 * T  # hard attention Dense
        cin = c
    return total + 384 * 512 + T * 384 * 512 + 2 * 512 * num_classes


# ----------------------------------------------------------------------------- outputs
def test_output_keys_shapes_and_dtypes(out):
    want = {
        "embedding": (2, 1024),
        "logits/global": (2, NUM_CLASSES),
        "logits/local": (2, NUM_CLASSES),
        "features/global": (2, 512),
        "features/local": (2, 512),
        **{f"attention/theta_{l}": (2, T, 2) for l in (1, 2, 3)},
        "attention/soft_1": (2, 40, 16, 1),
        "attention/soft_2": (2, 20, 8, 1),
        "attention/soft_3": (2, 10, 4, 1),
    }
    assert {k: v.shape for k, v in out.items()} == want
    assert all(v.dtype == np.float32 for v in out.values())
    for level in (1, 2, 3):
        soft = out[f"attention/soft_{level}"]
        assert soft.min() >= 0.5 and soft.max() < 1.0


def test_embedding_is_two_unit_norm_halves(out):
    emb = out["embedding"]
    np.testing.assert_allclose(np.linalg.norm(emb[:, :512], axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb[:, 512:], axis=1), 1.0, rtol=1e-5)
    for half, key in ((emb[:, :512], "features/global"), (emb[:, 512:], "features/local")):
        f = out[key]
        np.testing.assert_allclose(half, f / np.linalg.norm(f, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_theta_starts_as_four_stripes(out):
    for level in (1, 2, 3):
        np.testing.assert_allclose(out[f"attention/theta_{level}"], np.broadcast_to(STRIPES, (2, T, 2)), atol=1e-6)


def test_inference_outputs_are_deterministic(model, images, out):
    again = model(images, training=False)
    for key, value in out.items():
        np.testing.assert_array_equal(np.asarray(again[key]), value)


# ----------------------------------------------------------------------------- size and cost
def test_parameter_count_matches_formula_and_paper(model):
    n = count_params(model)
    assert n == hacnn_params() == 2_923_458
    assert abs(n - 2.7e6) / 2.7e6 < 0.10  # paper: 2.7M
    # Keras' own count adds the classifiers and BN running statistics.
    bn_channels = sum(int(w.shape[0]) for w in model.weights if w.name == "moving_mean")
    assert model.count_params() == n + 2 * (512 * NUM_CLASSES + NUM_CLASSES) + 2 * bn_channels


def test_mac_count_matches_layer_by_layer_formula(model):
    macs = count_flops(model, (160, 64, 3))
    assert macs == hacnn_macs(NUM_CLASSES)
    # Paper: 1.09 GFLOPs = 2 x MACs within 5% (1 MAC = 2 FLOPs).
    assert abs(2 * macs - 1.09e9) / 1.09e9 < 0.05


# ----------------------------------------------------------------------------- structure
def test_local_inception_b_is_one_layer_set_shared_by_regions(model, images):
    for level, (cin, c) in enumerate(((32, 128), (128, 256), (256, 384)), 1):
        layer = model.get_layer(f"local{level}_inception_b")
        assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == inception_b(cin, c)
    local_names = [l.name for l in model.layers if "inception_b" in l.name and l.name.startswith("local")]
    assert local_names == ["local1_inception_b", "local2_inception_b", "local3_inception_b"]

    # Region r of image b, sampled alone and passed through the shared layer, is row b*T + r.
    probe = keras.Model(
        model.input,
        [model.get_layer("stem").output, model.get_layer("ha1").output[1], model.get_layer("local1_inception_b").output],
    )
    stem, theta, local = (np.asarray(v) for v in probe(images, training=False))
    assert local.shape == (2 * T, 12, 14, 128)
    regions = np.asarray(RegionSampler((24, 28), scale=(0.25, 1.0))([stem, theta]))
    shared = model.get_layer("local1_inception_b")
    for r in range(T):
        alone = np.asarray(shared(regions[:, r], training=False))
        np.testing.assert_allclose(local.reshape(2, T, 12, 14, 128)[:, r], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_local_loss_trains_hard_attention_global_loss_does_not(model, images):
    labels = np.array([1, 7])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fc = [model.get_layer(f"ha{l}").hard.fc.kernel for l in (1, 2, 3)]
    saved = model.get_weights()  # training=True moves the BN statistics of the shared fixture
    try:
        with tf.GradientTape(persistent=True) as tape:
            o = model(images, training=True)
            local_loss = ce(labels, o["logits/local"])
            global_loss = ce(labels, o["logits/global"])
    finally:
        model.set_weights(saved)
    for grad in tape.gradient(local_loss, fc):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
    # theta only feeds the local branch: the global loss cannot move it.
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0 for g in tape.gradient(global_loss, fc))
    # ...but the global branch gets gradients from the local loss (Eq. 7, cross-attention).
    inc = model.get_layer("global1_inception_a").trainable_weights[0]
    assert float(tf.reduce_max(tf.abs(tape.gradient(local_loss, inc)))) > 0


def test_learn_region_false_variant():
    m = build_model("hacnn", NUM_CLASSES, learn_region=False)
    o = m(np.ones((2, 160, 64, 3), "float32"), training=False)
    assert set(o) == {"embedding", "logits/global", "features/global", "attention/soft_1", "attention/soft_2", "attention/soft_3"}
    assert tuple(o["embedding"].shape) == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(o["embedding"]), axis=1), 1.0, rtol=1e-5)
    assert count_params(m) == hacnn_params(learn_region=False)
    assert not any(l.name.startswith(("local", "ha")) for l in m.layers)


def test_weights_start_like_pytorch_defaults(model):
    """Every conv and FC kernel ~ U(+-1/sqrt(fan_in)) (PyTorch's default); theta's FC is zero."""
    checked = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            continue
        kernel = np.asarray(layer.kernel)
        if layer.name == "fc":  # HardRegionAttention: zero kernel, stripe bias
            assert not kernel.any()
            continue
        bound = 1.0 / math.sqrt(np.prod(kernel.shape[:-1]))
        assert np.abs(kernel).max() <= bound, layer.path
        if kernel.size >= 4096:  # uniform: std = bound / sqrt(3), not he_normal's sqrt(6) x that
            np.testing.assert_allclose(kernel.std(), bound / math.sqrt(3), rtol=0.05, err_msg=layer.path)
        checked += 1
    assert checked == 73 + 4  # 73 convolutions, fc_global/fc_local and the two classifiers


def test_sample_then_resize_changes_only_the_local_branch(model, images, out):
    """torchreid's two-step sampling: same weights, identical global outputs, different local ones."""
    two_step = build_model("hacnn", NUM_CLASSES, sample_then_resize=True)
    two_step.set_weights(model.get_weights())
    assert all(two_step.get_layer(f"local{l}_sample").sample_then_resize for l in (1, 2, 3))
    got = {k: np.asarray(v) for k, v in two_step(images, training=False).items()}
    np.testing.assert_allclose(got["logits/global"], out["logits/global"], rtol=1e-5, atol=1e-6)
    assert np.abs(got["features/local"] - out["features/local"]).max() > 1e-3
    with pytest.raises(ValueError, match="sample_then_resize"):
        build_model("hacnn", NUM_CLASSES, sample_then_resize="yes")


def test_per_region_wrapper_normalises_each_region_and_updates_stats_per_call():
    """PerRegion(BN): region t (rows b * T + t) uses its own batch statistics; the moving mean is
    updated once per region in order, m <- 0.9 m + 0.1 mean_t (PyTorch momentum 0.1)."""
    x = np.random.default_rng(3).normal(2.0, 3.0, size=(6, 5)).astype("float32")  # B=3 images, T=2
    layer = PerRegion(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5), 2)
    got = np.asarray(layer(x, training=True))
    want, moving = np.empty_like(x), np.zeros(5)
    for t in range(2):
        rows = x[t::2].astype("float64")
        want[t::2] = (rows - rows.mean(0)) / np.sqrt(rows.var(0) + 1e-5)
        moving = 0.9 * moving + 0.1 * rows.mean(0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(layer.layer.moving_mean), moving, rtol=1e-5)
    joint = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    assert np.abs(got - joint).max() > 0.05


def test_local_bn_per_region_changes_only_training_statistics(model, images, out, tmp_path):
    per_region = build_model("hacnn", NUM_CLASSES, local_bn="per_region")
    per_region.set_weights(model.get_weights())
    got = {k: np.asarray(v) for k, v in per_region(images, training=False).items()}
    for key in ("embedding", "logits/global", "logits/local"):  # inference: same moving statistics
        np.testing.assert_allclose(got[key], out[key], rtol=1e-5, atol=1e-6, err_msg=key)
    trained, joint = per_region(images, training=True), model(images, training=True)
    np.testing.assert_allclose(np.asarray(trained["logits/global"]), np.asarray(joint["logits/global"]), rtol=1e-5,
                               atol=1e-5)
    assert np.abs(np.asarray(trained["logits/local"]) - np.asarray(joint["logits/local"])).max() > 1e-3
    path = tmp_path / "per_region.keras"
    per_region.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded(images)["embedding"]), np.asarray(per_region(images)["embedding"]))
    with pytest.raises(ValueError, match="`local_bn` must be 'joint' or 'per_region'"):
        build_model("hacnn", NUM_CLASSES, local_bn="per-region")


def test_conv_bias_reproduces_torchreid_count():
    assert count_params(build_model("hacnn", NUM_CLASSES, conv_bias=True)) == hacnn_params(bias=True) == 2_929_112


@pytest.mark.slow
def test_keras_safe_mode_round_trip(model, images, tmp_path):
    path = tmp_path / "hacnn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    want, got = model(images, training=False), loaded(images, training=False)
    assert set(got) == set(want)
    for key, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(value), err_msg=key)


def test_mixed_precision_keeps_heads_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        m = build_model("hacnn", NUM_CLASSES, input_shape=(64, 32, 3), local_sizes=((12, 14), (6, 7), (3, 4)))
        o = m(np.random.default_rng(1).normal(size=(2, 64, 32, 3)).astype("float32"), training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert m.get_layer("global1_inception_a").compute_dtype == "float16"
    for key in ("embedding", "logits/global", "logits/local", "features/global", "features/local"):
        assert o[key].dtype == tf.float32, key
        assert np.isfinite(np.asarray(o[key])).all()


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_classes"):
        build_model("hacnn", 0)
    with pytest.raises(ValueError, match="widths"):
        build_model("hacnn", 10, widths=(128, 250, 384))
    with pytest.raises(ValueError, match="local_sizes"):
        build_model("hacnn", 10, local_sizes=((24, 28), (10, 14), (6, 7)))
    with pytest.raises(ValueError, match="input_shape"):
        build_model("hacnn", 10, input_shape=(160, 64))
