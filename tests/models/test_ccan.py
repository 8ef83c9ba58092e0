"""CCAN functional model: outputs, structure read from the graph, size, ablations, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.layers import CrossCorrelatedAttention, SymmetricSelfAttention
from tfreid.models import build_model, small_overrides
from tfreid.models.backbones import build_bn_inception
from tfreid.models.complexity import count_flops, count_params

NUM_CLASSES = 10
KP = 4
SMALL = {"input_shape": (128, 64, 3), "width_multiplier": 0.25, "feature_dim": 64}
# GoogLeNet Table 1 (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj), written out independently.
STAGE4 = [(192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
          (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)]
STAGE5 = [(256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)]
GLOBAL4 = ["inception4a", "inception4b", "inception4c", "inception4d", "inception4e"]
GLOBAL5 = ["inception5a", "inception5b"]


def blocks_params(cin, specs):
    total = 0
    for c1, r3, c3, r5, c5, pool in specs:
        convs = [(cin, c1, 1), (cin, r3, 1), (r3, c3, 3), (cin, r5, 1), (r5, c5, 3), (cin, pool, 1)]
        total += sum(k * k * a * b + 2 * b for a, b, k in convs)
        cin = c1 + c3 + c5 + pool
    return total


def blocks_macs(h, w, cin, specs):
    total = 0
    for c1, r3, c3, r5, c5, pool in specs:
        total += h * w * (cin * (c1 + r3 + r5 + pool) + 9 * r3 * c3 + 9 * r5 * c5)
        cin = c1 + c3 + c5 + pool
    return total


def attention_params(c, positions):
    k = c // 8
    return 3 * c * k + k * c + 2 * positions * positions  # W_g, W_f, W_h, W_w, W_alpha


def attention_macs(c, positions):
    k = c // 8
    p = positions
    return 3 * p * c * k + p * p * k + p * 2 * p * p + p * p * k + p * k * c


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model("ccan", NUM_CLASSES, **SMALL)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(2, 128, 64, 3)).astype("float32")


@pytest.fixture(scope="module")
def out(model, images):
    return {k: np.asarray(v) for k, v in model(images, training=False).items()}


def graph(model):
    """{layer name: names of the layers feeding it, in argument order}, from the model's config."""

    def walk(obj, found):
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                found.append(obj["config"]["keras_history"][0])
            for v in obj.values():
                walk(v, found)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, found)
        return found

    return {l["name"]: walk(l["inbound_nodes"], []) for l in model.get_config()["layers"]}


def consumers(edges, name):
    return sorted(layer for layer, parents in edges.items() if name in parents)


# ----------------------------------------------------------------------------- outputs
def test_small_variant():
    assert small_overrides("ccan") == SMALL


def test_output_keys_shapes_and_embedding(out):
    d = SMALL["feature_dim"]
    assert {k: v.shape for k, v in out.items()} == {
        "embedding": (2, 2 * d), "logits/global": (2, NUM_CLASSES), "logits/local": (2, NUM_CLASSES),
        "features/global": (2, d), "features/local": (2, d), "attention/ss_1": (2, 16, 8, 1),
        **{f"attention/cc_{s}": (2, 8, 4, 1) for s in range(1, KP + 1)}}
    assert all(v.dtype == np.float32 for v in out.values())
    emb = out["embedding"]
    for half, key in ((emb[:, :d], "features/global"), (emb[:, d:], "features/local")):
        f = out[key]
        np.testing.assert_allclose(half, f / np.linalg.norm(f, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    for key in [k for k in out if k.startswith("attention/")]:
        assert out[key].min() >= 0 and out[key].max() > 0


# ----------------------------------------------------------------------------- structure
def test_graph_wiring_ss_after_level1_and_cc_between_z1_and_z2_stripes(model):
    edges = graph(model)
    assert isinstance(model.get_layer("ss1"), SymmetricSelfAttention)
    assert edges["ss1"] == ["inception3b"]  # SS^G_1 right after global level 1
    # Z1 (SS output) feeds global level 2 and every part stream's Z1 stripe
    assert consumers(edges, "ss1") == ["maxpool3", *(f"part{s}_z1_stripe" for s in range(1, KP + 1))]
    # Z2 (global level 2 output) feeds global level 3 and every part's CC key stripe
    assert consumers(edges, "inception4e") == ["maxpool4", *(f"part{s}_z2_stripe" for s in range(1, KP + 1))]
    for s in range(1, KP + 1):
        assert model.get_layer(f"part{s}_z1_stripe").index == s - 1
        assert model.get_layer(f"part{s}_z2_stripe").index == s - 1
        assert edges[f"part{s}_maxpool3"] == [f"part{s}_z1_stripe"]
        assert isinstance(model.get_layer(f"part{s}_cc"), CrossCorrelatedAttention)
        assert edges[f"part{s}_cc"] == [f"part{s}_inception4e", f"part{s}_z2_stripe"]  # (query, key)
        assert consumers(edges, f"part{s}_cc") == [f"part{s}_maxpool4"]
        assert edges[f"part{s}_pool"] == [f"part{s}_inception5b"]
    assert edges["local_concat"] == [f"part{s}_pool" for s in range(1, KP + 1)]
    assert edges["global_pool"] == ["inception5b"]


def test_part_streams_have_their_own_level2_and_level3_weights(model):
    owner = {}
    for layer in model.layers:
        for w in layer.weights:
            assert id(w) not in owner, f"{w.path} shared by {owner[id(w)]} and {layer.name}"
            owner[id(w)] = layer.name
    global_layers = [l for l in model.layers if l.name.startswith(tuple(GLOBAL4 + GLOBAL5)) and l.weights]
    assert len(global_layers) == 7 * 6 * 2  # 7 modules x 6 convs x (conv, bn)
    for layer in global_layers:
        shapes = [tuple(w.shape) for w in layer.weights]
        copies = [model.get_layer(f"part{s}_{layer.name}") for s in range(1, KP + 1)]
        assert all([tuple(w.shape) for w in c.weights] == shapes for c in copies)
    per_part = lambda s: sum(int(np.prod(w.shape)) for l in model.layers if l.name.startswith(f"part{s}_inception")
                             for w in l.trainable_weights)
    global45 = sum(int(np.prod(w.shape)) for l in global_layers for w in l.trainable_weights)
    assert [per_part(s) for s in range(1, KP + 1)] == [global45] * KP


def test_stripes_are_bilinear_resized_slices(model, images):
    probe = keras.Model(model.input, [model.get_layer("ss1").output[0], model.get_layer("part2_z1_stripe").output])
    z1, stripe = (np.asarray(v) for v in probe(images, training=False))
    rows = z1[:, 4:8]  # stripe 2 of 4 of a 16-row map
    # half-pixel centres, clamped at the edges: output row r samples (r + 0.5) * 4 / 16 - 0.5
    src = np.clip((np.arange(16) + 0.5) / 4 - 0.5, 0, 3)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, 3)
    frac = (src - lo)[None, :, None, None]
    np.testing.assert_allclose(stripe, rows[:, lo] * (1 - frac) + rows[:, hi] * frac, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- size and cost
@pytest.mark.slow
def test_full_size_parameters_and_macs():
    m = build_model("ccan", 751)
    assert m.output["embedding"].shape == (None, 2048)
    backbone = 5_599_904  # torchvision GoogLeNet without its ImageNet classifier
    levels23 = blocks_params(480, STAGE4) + blocks_params(832, STAGE5)
    heads = (1024 * 1024 + 3 * 1024) + (KP * 1024 * 1024 + 3 * 1024)  # Dense + bias, BN gamma/beta
    want = backbone + attention_params(480, 32 * 16) + KP * (levels23 + attention_params(832, 16 * 8)) + heads
    assert count_params(m) == want == 32_920_224
    h, w = 256 // 16, 128 // 16
    stem_and_level1 = 128 * 64 * 3 * 64 * 49 + 64 * 32 * (64 * 64 + 64 * 192 * 9) + blocks_macs(
        32, 16, 192, [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)])
    level23 = blocks_macs(h, w, 480, STAGE4) + blocks_macs(h // 2, w // 2, 832, STAGE5)
    macs = (stem_and_level1 + attention_macs(480, 512) + (1 + KP) * level23 + KP * attention_macs(832, 128)
            + 1024 * 1024 + KP * 1024 * 1024 + 2 * 1024 * 751)
    assert count_flops(m, (256, 128, 3)) == macs


# ----------------------------------------------------------------------------- ablations
def test_ablation_variants_from_builder_kwargs():
    g = build_model("ccan", NUM_CLASSES, **SMALL, branches="G", use_ss=False)  # Table 6 Id 1
    assert set(g.output) == {"embedding", "logits/global", "features/global"}
    assert g.output["embedding"].shape == (None, 64)
    assert not any(l.name.startswith(("part", "ss", "fc_local")) for l in g.layers)
    o = g(np.ones((2, 128, 64, 3), "float32"), training=False)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(o["embedding"]), axis=1), 1.0, rtol=1e-5)

    # Id 2 (+ SS), with kp = 2 on a 64x32 input to keep the build short
    lo = build_model("ccan", NUM_CLASSES, input_shape=(64, 32, 3), width_multiplier=0.25, feature_dim=16,
                     num_parts=2, branches="L", use_cc=False)
    assert set(lo.output) == {"embedding", "logits/local", "features/local", "attention/ss_1"}
    assert lo.output["embedding"].shape == (None, 16)
    names = {l.name for l in lo.layers}
    # without CC nothing needs Z2: no global level 2 or 3, no global head
    assert not names & {"maxpool3", "inception4a", "inception5b", "fc_global", "classifier_global"}
    assert {"part1_inception5b", "part2_inception5b", "ss1"} <= names and "part3_pool" not in names
    assert not any(n.endswith("_cc") or n.endswith("_z2_stripe") for n in names)

    with pytest.raises(ValueError, match="use_cc=True needs the local branch"):
        build_model("ccan", NUM_CLASSES, **SMALL, branches="G", use_cc=True)
    with pytest.raises(ValueError, match="branches='GL'"):
        build_model("ccan", NUM_CLASSES, branches="GL")
    with pytest.raises(ValueError, match="multiple of 16 \\* num_parts = 64"):
        build_model("ccan", NUM_CLASSES, input_shape=(160, 64, 3))
    with pytest.raises(ValueError, match="use_ss"):
        build_model("ccan", NUM_CLASSES, use_ss=1)
    with pytest.raises(ValueError, match="fc_bn"):
        build_model("ccan", NUM_CLASSES, fc_bn="no")


def test_fc1_without_bn_is_a_bare_dense():
    """fc_bn=False: features/global = GAP(level 3) W + b, no BN layer in the head."""
    g = build_model("ccan", NUM_CLASSES, **SMALL, branches="G", use_ss=False, fc_bn=False)
    assert not any(layer.name.startswith("fc_global_bn") for layer in g.layers)
    x = np.random.default_rng(2).normal(size=(2, 128, 64, 3)).astype("float32")
    pooled = np.asarray(keras.Model(g.input, g.get_layer("global_pool").output)(x, training=False))
    kernel, bias = g.get_layer("fc_global").get_weights()
    got = np.asarray(g(x, training=False)["features/global"])
    np.testing.assert_allclose(got, pooled @ kernel + bias, rtol=1e-4, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        build_model("ccan", NUM_CLASSES, backbone_weights="/nowhere.h5")


# ----------------------------------------------------------------------------- training signal
@pytest.mark.slow
def test_gradients_reach_the_intended_weights(model, images):
    labels = np.array([1, 7])
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    targets = {
        "level1": model.get_layer("inception3a_branch1_conv").kernel,
        "ss_alpha": model.get_layer("ss1").alpha_kernel,
        "global_level2": model.get_layer("inception4e_branch1_conv").kernel,
        "part3_level2": model.get_layer("part3_inception4a_branch1_conv").kernel,
        "part3_cc_alpha": model.get_layer("part3_cc").alpha_kernel,
        "part3_cc_f": model.get_layer("part3_cc").f_kernel,
    }
    saved = model.get_weights()  # training=True moves the BN statistics of the shared fixture
    try:
        with tf.GradientTape(persistent=True) as tape:
            o = model(images, training=True)
            local_loss = ce(labels, o["logits/local"])
            global_loss = ce(labels, o["logits/global"])
    finally:
        model.set_weights(saved)
    nonzero = lambda g: g is not None and float(tf.reduce_max(tf.abs(g))) > 0
    local = {k: nonzero(g) for k, g in zip(targets, tape.gradient(local_loss, list(targets.values())))}
    glob = {k: nonzero(g) for k, g in zip(targets, tape.gradient(global_loss, list(targets.values())))}
    # the local loss reaches Z1 (levels 1, SS) and, through the CC key, global level 2
    assert local == dict.fromkeys(targets, True)
    assert glob == {"level1": True, "ss_alpha": True, "global_level2": True,
                    "part3_level2": False, "part3_cc_alpha": False, "part3_cc_f": False}


# ----------------------------------------------------------------------------- weights
# (`.keras` safe-mode round trip and export parity of the registry's small CCAN:
# tests/export/test_all_models.py; of each attention layer: tests/layers/)
@pytest.mark.slow
def test_backbone_weights_fill_global_and_every_part_copy(tmp_path):
    backbone = build_bn_inception((64, 32, 3), width_multiplier=0.25)
    rng = np.random.default_rng(3)
    for var in backbone.weights:
        var.assign(rng.normal(0.0, 0.1, var.shape).astype("float32"))
    path = str(tmp_path / "bn_inception.weights.h5")
    backbone.save_weights(path)
    # two part streams on a 64x32 input: the same wiring at a fraction of the build time
    m = build_model("ccan", NUM_CLASSES, input_shape=(64, 32, 3), width_multiplier=0.25, feature_dim=16,
                    num_parts=2, backbone_weights=path)
    for name in ("conv1_conv", "inception3b_branch2_1_conv", "inception4e_branch4_1_bn", "inception5b_branch1_conv"):
        want = [np.asarray(w) for w in backbone.get_layer(name).weights]
        copies = [name] + ([f"part{s}_{name}" for s in (1, 2)] if name.startswith(("inception4", "inception5")) else [])
        for copy in copies:
            for got, ref in zip(m.get_layer(copy).weights, want):
                np.testing.assert_array_equal(np.asarray(got), ref, err_msg=copy)
