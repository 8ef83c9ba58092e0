"""ADFL and the strong baseline: outputs, BNNeck, placements/fusions counted, loading, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.models import build_model, small_overrides
from tfreid.models.adfl import ATTENTION_MODULES, attention_layer
from tfreid.models.complexity import count_params

NUM_CLASSES = 7
SMALL = small_overrides("adfl")  # 64x32 input, ResNet width 8, 64-D bottleneck
W = SMALL["base_width"]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model("adfl", NUM_CLASSES, **SMALL)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(4, 64, 32, 3)).astype("float32")


# ----------------------------------------------------------------------------- hand-computed sizes
def conv_bn(cin, cout, k, bias=True):
    return k * k * cin * cout + (cout if bias else 0) + 2 * cout  # kernel (+ bias) + BN gamma, beta


def resnet50_params(w):
    total, cin = conv_bn(3, w, 7), w
    for stage, blocks in zip((1, 2, 3, 4), (3, 4, 6, 3)):
        f = w * 2 ** (stage - 1)
        total += conv_bn(cin, 4 * f, 1)  # projection shortcut of block 1
        for block in range(blocks):
            total += conv_bn(cin if block == 0 else 4 * f, f, 1) + conv_bn(f, f, 3) + conv_bn(f, 4 * f, 1)
        cin = 4 * f
    return total


def attention_params(module, c):
    dense = lambda i, o: i * o + o  # noqa: E731  (1x1 conv / dense with bias)
    single = {
        "s": {1: 2 * dense(c, c // 8) + dense(c, c) + 1, 2: 9 * 2},
        "c": {1: 1, 2: dense(c, c // 16) + dense(c // 16, c)},
        "h": {1: 3 * dense(c, c // 64) + dense(c // 64, c) + 1, 2: 0},
        "b": {1: 1},
    }
    kind, rest = int(module[0]), module[1:]
    if rest in single:
        return single[rest][kind]
    return single["s"][kind] + single["c"][kind]


def adfl_params(w=W, attention="1sum", stages=(3,), af_stage=3, fusion="cat", af_dim=None, bottleneck=64):
    feature = bottleneck or 32 * w
    af_dim = af_dim or feature
    total = resnet50_params(w)
    total += sum(attention_params(attention, 4 * w * 2 ** (s - 1)) for s in stages)
    if bottleneck:
        total += 32 * w * bottleneck + bottleneck
    total += 2 * feature  # bnneck_global
    if af_stage:
        c = 4 * w * 2 ** (af_stage - 1)
        total += conv_bn(c, af_dim, 3, bias=False) + conv_bn(af_dim, af_dim, 1, bias=False)
        total += 2 * (feature + af_dim if fusion == "cat" else feature)  # bnneck_fused
    return total


def test_resnet50_formula_is_keras_resnet50():
    assert resnet50_params(64) == 23_534_592  # keras.applications.ResNet50(include_top=False), trainable


def test_paper_default_is_af3_cat_1024_attn3_1sum_and_counts():
    m = build_model("adfl", 751)
    assert count_params(m) == adfl_params(64, bottleneck=1024) == 37_440_770
    assert m.output["embedding"].shape == (None, 2048)  # 1024 backbone ++ 1024 AF
    assert m.get_layer("attn3").arrangement == "sum" and m.get_layer("attn3").attention_type == 1
    assert m.get_layer("af3_conv1").filters == 1024 and m.get_layer("af3_conv1").kernel_size == 3
    assert isinstance(m.get_layer("af_fusion"), keras.layers.Concatenate)
    assert m.get_layer("conv5_block1_1_conv").strides == (1, 1)  # last stride 1
    assert m.output["attention/attn3"].shape == (None, 24, 8, 1)  # 384x128 / 16
    # classifiers: bias-free after the BNNeck
    assert m.count_params() - count_params(m, include_statistics=True) == 751 * 1024 + 751 * 2048


# ----------------------------------------------------------------------------- outputs
def test_small_variants_and_the_baseline_is_adfl_without_its_attention(model):
    assert SMALL == {"input_shape": (64, 32, 3), "base_width": 8, "bottleneck_dim": 64}
    assert small_overrides("baseline") == SMALL
    baseline = build_model("baseline", NUM_CLASSES, **small_overrides("baseline"))
    names = {layer.name for layer in baseline.layers}
    extra = {layer.name for layer in model.layers} - names
    assert names < {layer.name for layer in model.layers}
    assert extra == {"attn3", "af3_conv1", "af3_conv2", "af3_pool", "af_fusion", "bnneck_fused",
                     "classifier_fused"}, extra


def test_outputs_and_bnneck(model, images):
    out = {k: np.asarray(v) for k, v in model(images, training=False).items()}
    assert {k: v.shape for k, v in out.items()} == {
        "embedding": (4, 128), "features/global": (4, 64), "logits/global": (4, NUM_CLASSES),
        "features/fused": (4, 128), "logits/fused": (4, NUM_CLASSES), "attention/attn3": (4, 4, 2, 1)}
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_allclose(out["attention/attn3"].sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    # embedding = BN(fused) with the moving statistics; logits = embedding @ W (no bias)
    bn = model.get_layer("bnneck_fused")
    g, b, mean, var = (np.asarray(v) for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    np.testing.assert_allclose(out["embedding"], (out["features/fused"] - mean) / np.sqrt(var + 1e-5) * g + b,
                               rtol=1e-5, atol=1e-5)
    kernel = np.asarray(model.get_layer("classifier_fused").kernel)
    np.testing.assert_allclose(out["logits/fused"], out["embedding"] @ kernel, rtol=1e-4, atol=1e-5)
    # cat fusion: backbone feature first, then the max-pooled AF map
    probe = keras.Model(model.input, [model.get_layer("af3_conv2").output, model.get_layer("global_pool").output])
    af_map, pooled = (np.asarray(t) for t in probe(images, training=False))
    np.testing.assert_allclose(out["features/fused"][:, 64:], af_map.max(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(out["features/fused"][:, :64], out["features/global"], rtol=1e-6)
    assert pooled.shape == (4, 32 * W)


def test_type1_attention_starts_as_identity(model, images):
    probe = keras.Model(model.input, [model.get_layer("conv4_block6_out").output,
                                      model.get_layer("attn3").output[0]])
    stage, attended = (np.asarray(t) for t in probe(images, training=False))
    np.testing.assert_allclose(attended, 2 * stage, rtol=1e-6)  # 1sum: S(I) + C(I) = 2I at alpha=0


def test_every_module_name_builds_a_size_identical_layer():
    x = np.random.default_rng(1).normal(size=(2, 4, 2, 128)).astype("float32")
    for module in ATTENTION_MODULES:
        layer = attention_layer(module, f"m{module}")
        y = layer(x)
        has_map = module not in ("1c", "1b", "2c")
        assert isinstance(y, tuple) == has_map, module
        assert tuple((y[0] if has_map else y).shape) == x.shape, module
        assert sum(int(np.prod(w.shape)) for w in layer.weights) == attention_params(module, 128), module
    with pytest.raises(ValueError, match="1multiply"):
        attention_layer("1multiply", "bad")


@pytest.mark.parametrize("kwargs", [
    dict(attention="2multiply", attention_stages=(2,), af_stage=2, af_fusion="sum"),
    dict(attention="1h", attention_stages=(4,), af_stage=4, af_fusion="cat", af_dim=48),
    dict(attention="2sc", attention_stages=(2, 3, 4), af_stage=3, af_fusion="sum", bottleneck_dim=None),
], ids=["AF2-sum-attn2-2multiply", "AF4-cat-48-attn4-1h", "AF3-sum-2048-attn234-2sc"])
def test_placements_and_fusions_build_and_count(kwargs):
    m = build_model("adfl", NUM_CLASSES, **{**SMALL, **kwargs})
    want = adfl_params(attention=kwargs["attention"], stages=kwargs["attention_stages"],
                       af_stage=kwargs["af_stage"], fusion=kwargs.get("af_fusion", "cat"),
                       af_dim=kwargs.get("af_dim"), bottleneck=kwargs.get("bottleneck_dim", 64))
    assert count_params(m) == want
    stage4 = m.get_layer("conv5_block3_out").output.shape
    for s in kwargs["attention_stages"]:
        assert m.get_layer(f"attn{s}") is not None
    if kwargs["af_stage"]:
        # the AF conv block brings the attention map to stage 4's size (stride 2 from stage 2)
        assert m.get_layer(f"af{kwargs['af_stage']}_conv1").output.shape[1:3] == stage4[1:3]
        dim = m.output["features/fused"].shape[-1]
        feature = m.output["features/global"].shape[-1]
        assert dim == (feature + (kwargs.get("af_dim") or feature) if kwargs["af_fusion"] == "cat" else feature)
    out = m(np.zeros((2, 64, 32, 3), "float32"), training=False)
    assert np.isfinite(np.asarray(out["embedding"])).all()


def test_baseline_is_the_backbone_path_only(model, tmp_path):
    # ADFL's weights file holds every backbone layer (and the baseline's head) under the same names
    path = str(tmp_path / "adfl.weights.h5")
    model.save_weights(path)
    m = build_model("baseline", NUM_CLASSES, **small_overrides("baseline"), backbone_weights=path)
    assert set(m.output) == {"embedding", "features/global", "logits/global"}
    assert count_params(m) == adfl_params(attention="1c", stages=(), af_stage=None)
    assert not any(layer.name.startswith(("attn", "af")) for layer in m.layers)
    assert m.get_layer("bnneck_global").output is m.output["embedding"]
    for name in ("conv1_conv", "conv4_block6_3_bn", "conv5_block3_3_conv"):  # backbone_weights loaded
        for a, b in zip(m.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_residual_blocks_start_as_identity(model, images):
    last_bns = [layer for layer in model.layers if layer.name.endswith("_3_bn") and "_block" in layer.name]
    assert len(last_bns) == 16 and all(not np.any(np.asarray(layer.gamma)) for layer in last_bns)
    probe = keras.Model(model.input, [model.get_layer("conv3_block2_out").output,
                                      model.get_layer("conv3_block3_out").output])
    before, after = probe(images, training=False)
    np.testing.assert_array_equal(np.asarray(after), np.asarray(before))  # relu(x + 0) of a relu output
    plain = build_model("baseline", NUM_CLASSES, **small_overrides("baseline"), zero_init_residual=False)
    assert np.all(np.asarray(plain.get_layer("conv3_block3_3_bn").gamma) == 1.0)


def test_all_losses_reach_every_weight(model, images):
    labels = np.array([0, 0, 1, 1])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    saved = model.get_weights()
    try:
        model.get_layer("attn3").spatial.alpha.assign(0.5)  # else the 1s projections get no gradient
        for layer in model.layers:  # zero-initialised residual branches pass no gradient inside
            if layer.name.endswith("_3_bn") and "_block" in layer.name:
                layer.gamma.assign(tf.ones_like(layer.gamma))
        with tf.GradientTape() as tape:
            o = model(images, training=True)
            loss = ce(labels, o["logits/global"]) + ce(labels, o["logits/fused"])
            loss += tf.reduce_mean(o["features/global"] ** 2) + tf.reduce_mean(o["features/fused"] ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
    finally:
        model.set_weights(saved)
    dead = [v.path for v, g in zip(model.trainable_variables, grads)
            if g is None or float(tf.reduce_max(tf.abs(g))) == 0.0]
    assert not dead


def test_attention_without_af_skip_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        m = build_model("adfl", NUM_CLASSES, **{**SMALL, "attention": "1c", "af_stage": None})
        o = m(np.random.default_rng(1).normal(size=(2, 64, 32, 3)).astype("float32"), training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert count_params(m) == adfl_params(attention="1c", af_stage=None)
    assert set(o) == {"embedding", "features/global", "logits/global"}  # 1c has no spatial map
    assert m.get_layer("conv3_block1_1_conv").compute_dtype == "bfloat16"
    assert m.get_layer("bnneck_global").output is m.output["embedding"]
    for key in o:
        assert o[key].dtype == tf.float32 and np.isfinite(np.asarray(o[key])).all(), key


@pytest.mark.parametrize("kwargs,message", [
    (dict(attention="3s"), "attention"),
    (dict(attention="1multiply"), "attention"),
    (dict(attention_stages=(1,)), "attention_stages"),
    (dict(attention_stages=(3, 3)), "attention_stages"),
    (dict(af_stage=2), "af_stage"),
    (dict(attention=None), "af_stage"),
    (dict(af_fusion="max"), "af_fusion"),
    (dict(af_fusion="sum", af_dim=32), "af_dim"),
    (dict(bottleneck_dim=0), "bottleneck_dim"),
    (dict(last_stride=3), "last_stride"),
    (dict(input_shape=(64, 32)), "input_shape"),
    (dict(zero_init_residual=1), "zero_init_residual"),
])
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("adfl", NUM_CLASSES, **{**SMALL, **kwargs})
