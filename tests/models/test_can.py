"""CAN functional model: branch structure and weight sharing read from the graph, pooling + CA
wiring against NumPy, embedding, sizes, ImageNet-style weight loading, config and serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.config import default_config, from_dict, load_yaml, resolve
from tfreid.engine.session import build_loss_terms
from tfreid.layers import CosineClassifier
from tfreid.models import build_model, small_overrides
from tfreid.models.backbones import build_resnet50
from tfreid.models.can import feature_names
from tfreid.models.complexity import count_params

NUM_CLASSES = 7
SMALL = small_overrides("can")  # 128x64 input, base_width 8, feature_dim 32
H, W = SMALL["input_shape"][:2]
DIM = SMALL["feature_dim"]
C4 = 4 * 8 * SMALL["base_width"]  # stage-4 channels (2048 at width 64)
BRANCHES = ("global", "part3", "part5", "part7")
NAMES = feature_names()


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = build_model("can", NUM_CLASSES, **SMALL)
    rng = np.random.default_rng(0)
    for name in NAMES:  # random BN statistics, so that each feature's own BN shows in its values
        bn = m.get_layer(f"{name}_bn")
        bn.set_weights([rng.uniform(0.5, 1.5, DIM), rng.normal(0, 0.5, DIM),
                        rng.normal(0, 0.5, DIM), rng.uniform(0.5, 2.0, DIM)])
    return m


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).normal(size=(3, H, W, 3)).astype("float32")


@pytest.fixture(scope="module")
def out(model, images):
    return {k: np.asarray(v) for k, v in model(images, training=False).items()}


# ----------------------------------------------------------------------------- outputs
def test_small_variant():
    assert SMALL == {"input_shape": (128, 64, 3), "base_width": 8, "feature_dim": 32}


def test_feature_names_follow_the_paper():
    assert len(NAMES) == 16  # 4 global + (3-1) + (5-1) + (7-1) collaborative part features
    assert NAMES[:4] == ["global", "part3_global", "part3_1", "part3_2"]
    assert NAMES[-1] == "part7_6"
    assert len(feature_names((3, 5, 7), collaborative=False)) == 4 + 3 + 5 + 7
    assert feature_names((2, 3)) == ["global", "part2_global", "part2_1", "part3_global", "part3_1", "part3_2"]


def test_output_keys_shapes_and_dtypes(out):
    want = {"embedding": (3, 16 * DIM), "features/global_concat": (3, 4 * DIM),
            "features/local_concat": (3, 12 * DIM)}
    for name in NAMES:
        want[f"features/{name}"] = (3, DIM)
        want[f"logits/{name}"] = (3, NUM_CLASSES)
    assert {k: v.shape for k, v in out.items()} == want
    assert all(v.dtype == np.float32 for v in out.values())


def test_embedding_is_the_l2_normalised_features_concatenated(out):
    emb = out["embedding"].reshape(3, 16, DIM)
    for i, name in enumerate(NAMES):
        f = out[f"features/{name}"]
        np.testing.assert_allclose(emb[:, i], f / np.linalg.norm(f, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 4.0, rtol=1e-5)
    glob = [n for n in NAMES if n.endswith("global")]
    local = [n for n in NAMES if not n.endswith("global")]
    np.testing.assert_array_equal(out["features/global_concat"], np.concatenate([out[f"features/{n}"] for n in glob], 1))
    np.testing.assert_array_equal(out["features/local_concat"], np.concatenate([out[f"features/{n}"] for n in local], 1))


def test_inference_outputs_are_deterministic(model, images, out):
    again = model(images, training=False)
    for key in ("embedding", "logits/part5_2"):
        np.testing.assert_array_equal(np.asarray(again[key]), out[key])


# ----------------------------------------------------------------------------- structure from the graph
def _weighted(model, pred):
    return [layer for layer in model.layers if layer.weights and pred(layer.name)]


def test_shared_stages_once_and_one_stage4_copy_per_branch(model):
    names = [layer.name for layer in model.layers]
    for shared in ("conv1_conv", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out"):
        assert names.count(shared) == 1
    assert not any(n.startswith(f"{b}_conv{s}") for b in BRANCHES for s in (1, 2, 3, 4) for n in names)
    assert not any(n.startswith("conv5") for n in names)  # stage 4 exists only as branch copies
    stage3_out = model.get_layer("conv4_block6_out").output
    kernels = {}
    for b in BRANCHES:
        copy = _weighted(model, lambda n, b=b: n.startswith(f"{b}_conv5_"))
        assert len(copy) == 3 * 3 * 2 + 2  # 3 blocks x 3 (conv, BN) pairs + the shortcut's pair
        # every copy starts from the shared stage-3 output
        assert model.get_layer(f"{b}_conv5_block1_1_conv").input is stage3_out
        assert model.get_layer(f"{b}_conv5_block1_0_conv").input is stage3_out
        kernels[b] = {id(w) for layer in copy for w in layer.weights}
    for a in BRANCHES:  # distinct variables: no weight is shared between two copies
        for b in BRANCHES:
            if a < b:
                assert not kernels[a] & kernels[b]


def test_one_shared_embedding_conv_for_all_features(model):
    convs = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel.shape) == (1, 1, 2 * C4, DIM)]
    assert [c.name for c in convs] == ["embed_conv"]
    assert convs[0].bias is None
    assert len(convs[0]._inbound_nodes) == 16  # called once per feature


def test_sixteen_distinct_classifiers(model):
    classifiers = _weighted(model, lambda n: n.startswith("classifier_"))
    assert sorted(c.name for c in classifiers) == sorted(f"classifier_{n}" for n in NAMES)
    assert all(isinstance(c, CosineClassifier) and c.scale == 16.0 for c in classifiers)
    assert all(tuple(c.kernel.shape) == (DIM, NUM_CLASSES) for c in classifiers)
    assert len({id(c.kernel) for c in classifiers}) == 16


def test_logits_are_scaled_cosines_of_features_and_class_weights(model, out):
    """Sec. 4.6: features and FC weights normalised; logits = 16 cos(f, w_j)."""
    for feat in ("global", "part7_3"):
        f = out[f"features/{feat}"].astype(np.float64)
        w = np.asarray(model.get_layer(f"classifier_{feat}").kernel, np.float64)
        want = 16.0 * (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
        np.testing.assert_allclose(out[f"logits/{feat}"], want, rtol=1e-4, atol=1e-4)


def test_linear_classifier_and_no_feature_bn_variant(images):
    """classifier="linear" is a Dense; feature_bn=False leaves Eq. 3's linear map alone."""
    m = build_model("can", NUM_CLASSES, **{**SMALL, "parts": (3,)}, classifier="linear", feature_bn=False)
    assert isinstance(m.get_layer("classifier_part3_1"), keras.layers.Dense)
    assert not [layer.name for layer in m.layers if layer.name.endswith("_bn") and "conv" not in layer.name]
    probe = keras.Model(m.input, m.get_layer("part3_slice1").output)
    pooled = np.asarray(probe(images, training=False))[:, 0, 0]
    kernel = np.asarray(m.get_layer("embed_conv").kernel)[0, 0]
    got = np.asarray(m(images, training=False)["features/part3_1"])
    np.testing.assert_allclose(got, pooled @ kernel, rtol=1e-4, atol=1e-4)


def np_paper_pool(y, out_h):
    """CAN Eq. (1) along the height (stride floor(IS/OS), kernel IS-(OS-1)*stride), whole width;
    max and average concatenated."""
    size = y.shape[1]
    stride = size // out_h
    kernel = size - (out_h - 1) * stride
    rows = [y[:, i * stride:i * stride + kernel].astype(np.float64) for i in range(out_h)]
    return np.stack([np.concatenate([r.max((1, 2)), r.mean((1, 2))], -1) for r in rows], 1)


def test_pooling_ca_and_embedding_values(model, images, out):
    """part-7 branch: Eq. (1) stripes of its own stage-4 map, adjacent pairs maxed, then the shared
    kernel and the feature's own BN give features/part7_k (and the global block features/part7_global)."""
    probe = keras.Model(model.input, [model.get_layer("part7_conv5_block3_out").output]
                        + [model.get_layer(f"part7_slice{k}").output for k in range(1, 7)])
    y, *slices = (np.asarray(t) for t in probe(images, training=False))
    assert y.shape == (3, H // 16, W // 16, C4)
    stripes = np_paper_pool(y, 7)  # 8 rows -> 7 stripes: stride 1, kernel 2
    kernel = np.asarray(model.get_layer("embed_conv").kernel)[0, 0]
    for k in range(1, 7):
        pooled = np.maximum(stripes[:, k - 1], stripes[:, k])
        np.testing.assert_allclose(slices[k - 1][:, 0, 0], pooled, rtol=1e-5, atol=1e-5)
        gamma, beta, mean, var = model.get_layer(f"part7_{k}_bn").get_weights()
        want = (pooled @ kernel - mean) / np.sqrt(var + 1e-5) * gamma + beta
        np.testing.assert_allclose(out[f"features/part7_{k}"], want, rtol=1e-4, atol=1e-4)
    gamma, beta, mean, var = model.get_layer("part7_global_bn").get_weights()
    block = np_paper_pool(y, 1)[:, 0]
    want = (block @ kernel - mean) / np.sqrt(var + 1e-5) * gamma + beta
    np.testing.assert_allclose(out["features/part7_global"], want, rtol=1e-4, atol=1e-4)


def test_gradients_stay_in_their_branch(model, images):
    """A part-7 logit trains the shared stages, part-7's stage-4 copy, the shared embedding and its
    own classifier, and nothing of the other branches."""
    variables = {v.path: v for v in model.trainable_variables}
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(images, training=True)["logits/part7_3"] ** 2)
    grads = dict(zip(variables, tape.gradient(loss, list(variables.values()))))

    def norm(prefix):
        gs = [g for p, g in grads.items() if p.startswith(prefix)]
        assert gs, prefix
        return sum(float(tf.norm(g)) for g in gs if g is not None)

    # (zero-initialised residual branches only pass gradient to their last BN's gamma at first)
    for live in ("conv2_block1_0_conv", "conv4_block6_3_bn", "part7_conv5_block1_0_conv",
                 "part7_conv5_block3_3_bn", "embed_conv", "part7_3_bn", "classifier_part7_3"):
        assert norm(live) > 0, live
    for dead in ("global_conv5", "part3_conv5", "part5_conv5", "part7_2_bn", "classifier_part7_2",
                 "classifier_global"):
        assert norm(dead) == 0, dead


def test_residual_blocks_start_as_identity(model, images):
    last_bns = [layer for layer in model.layers if layer.name.endswith("_3_bn") and "_block" in layer.name]
    assert len(last_bns) == 13 + 4 * 3  # shared stages 1-3 + four stage-4 copies
    assert all(not np.any(np.asarray(layer.gamma)) for layer in last_bns)
    probe = keras.Model(model.input, [model.get_layer("conv4_block5_out").output,
                                      model.get_layer("conv4_block6_out").output])
    before, after = probe(images, training=False)
    np.testing.assert_array_equal(np.asarray(after), np.asarray(before))  # relu(x + 0) of a relu output


def test_without_collaborative_attention_and_other_branch_sets():
    m = build_model("can", NUM_CLASSES, **{**SMALL, "parts": (2, 3), "collaborative": False},
                    zero_init_residual=False)
    assert np.all(np.asarray(m.get_layer("part3_conv5_block2_3_bn").gamma) == 1.0)
    names = feature_names((2, 3), collaborative=False)
    assert names == ["global", "part2_global", "part2_1", "part2_2", "part3_global", "part3_1", "part3_2", "part3_3"]
    assert not [layer.name for layer in m.layers if layer.name.endswith("_ca")]
    assert tuple(m.output["embedding"].shape) == (None, len(names) * DIM)
    assert tuple(m.output["features/local_concat"].shape) == (None, 5 * DIM)
    assert len(m.get_layer("embed_conv")._inbound_nodes) == len(names)
    assert {f"logits/{n}" for n in names} <= set(m.output)


# ----------------------------------------------------------------------------- size
def conv_bn(cin, cout, k):
    return k * k * cin * cout + cout + 2 * cout  # kernel + bias (Keras ResNet convs) + BN gamma/beta


def stage_params(cin, filters, blocks):
    total = conv_bn(cin, 4 * filters, 1)  # projection shortcut of the first block
    for b in range(blocks):
        c = cin if b == 0 else 4 * filters
        total += conv_bn(c, filters, 1) + conv_bn(filters, filters, 3) + conv_bn(filters, 4 * filters, 1)
    return total


def can_params(w, dim, num_features, num_branches):
    total = conv_bn(3, w, 7) + stage_params(w, w, 3) + stage_params(4 * w, 2 * w, 4)
    total += stage_params(8 * w, 4 * w, 6) + num_branches * stage_params(16 * w, 8 * w, 3)
    return total + 2 * 32 * w * dim + num_features * 2 * dim  # shared embed conv + per-feature BN


def test_parameter_count_matches_formula(model):
    assert count_params(model) == can_params(8, DIM, 16, 4)
    # full size: 23.5M ResNet-50 + 3 more stage-4 copies (3 x 14.96M) + 1.05M embedding = 69.5M
    assert can_params(64, 256, 16, 4) == 69_519_360


# ----------------------------------------------------------------------------- ImageNet-style loading
def test_backbone_weights_load_by_name_into_every_stage4_copy(tmp_path):
    net = build_resnet50((H, W, 3), last_stride=2, base_width=8)
    rng = np.random.default_rng(5)
    for layer in net.layers:
        if layer.weights:
            layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.weights])
    path = str(tmp_path / "resnet50_notop.h5")
    net.save(path)  # Keras's legacy HDF5 layout, as the ImageNet notop file
    m = build_model("can", NUM_CLASSES, **SMALL, backbone_weights=path)
    source = {layer.name: layer.get_weights() for layer in net.layers if layer.weights}
    checked = 0
    for layer in m.layers:
        name = layer.name
        for b in BRANCHES:
            name = name.removeprefix(f"{b}_") if name.startswith(f"{b}_conv5") else name
        if name in source:
            for got, want in zip(layer.get_weights(), source[name]):
                np.testing.assert_array_equal(got, want)
            checked += 1
    stage4 = sum(1 for n in source if n.startswith("conv5"))
    assert checked == len(source) + 3 * stage4  # shared layers once, stage 4 in all 4 copies


# ----------------------------------------------------------------------------- config and errors
def test_default_recipe_and_paper_config_match_the_model_outputs(model):
    full_dim = {"features/global_concat": 4 * 256, "features/local_concat": 12 * 256}
    for cfg in (from_dict(default_config("can")).validate(),
                resolve(None, "configs/can_market1501.yaml", {}, [])):
        assert cfg.model.name == "can" and cfg.eval.metric == "cosine"
        assert cfg.data.p * cfg.data.k == 32
        for term in cfg.losses:
            assert term.output in model.output, term.output
            if term.type == "center_loss":  # the default feature_dim 256 x number of features
                assert term.kwargs["feature_dim"] == full_dim[term.output]
        assert sorted(t.output for t in cfg.losses if t.type == "cross_entropy") == sorted(
            f"logits/{n}" for n in NAMES)
        # Eq. (5) summed over the features: L = sum CE + sum triplet + 5e-4 x sum center
        assert {t.type: t.weight for t in cfg.losses} == {
            "cross_entropy": 1.0, "batch_hard_triplet": 1.0, "center_loss": 5e-4}
        # Eq. (7)-(8): batch-hard triplet on squared Euclidean distances
        assert {t.kwargs.get("metric") for t in cfg.losses if t.type == "batch_hard_triplet"} == {"sqeuclidean"}
        terms = build_loss_terms(cfg, num_classes=NUM_CLASSES)
        center = [t.fn for t in terms if t.name.startswith("center")]
        assert [c.num_classes for c in center] == [NUM_CLASSES, NUM_CLASSES]
    paper = load_yaml("configs/can_market1501.yaml")
    assert (paper["data"]["height"], paper["data"]["width"]) == (384, 128)
    assert paper["optim"]["lr"] == 3e-4 and paper["optim"]["milestones"] == [250, 350, 450]
    assert paper["train"]["epochs"] == 600


@pytest.mark.parametrize("kwargs,message", [
    ({"parts": ()}, "parts=()"),
    ({"parts": (3, 3)}, r"parts=\(3, 3\)"),
    ({"parts": (1, 3)}, r"parts=\(1, 3\)"),
    ({"parts": 3}, "parts=3"),
    ({"last_stride": 3}, "last_stride=3"),
    ({"bin_rule": "torch"}, "bin_rule='torch'"),
    ({"collaborative": "yes"}, "collaborative='yes'"),
    ({"feature_dim": 0}, "feature_dim=0"),
    ({"zero_init_residual": 1}, "zero_init_residual=1"),
    ({"classifier": "arcface"}, "classifier='arcface'"),
    ({"cosine_scale": 0}, "scale=0"),
    ({"feature_bn": "no"}, "feature_bn='no'"),
    ({"input_shape": (96, 32, 3)}, r"6-row stage-4 maps.*parts=\(3, 5, 7\).*at least 7 rows.*>= 112"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("can", NUM_CLASSES, **{**SMALL, **kwargs})


@pytest.mark.slow  # ~15 s: saves and reloads the 360-layer graph
def test_keras_file_round_trip(model, images, tmp_path):
    path = tmp_path / "can.keras"
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    # (compared with the model as it is now: the gradient test's training pass moved BN statistics)
    want, got = model(images, training=False), again(images, training=False)
    for key in ("embedding", "logits/part7_6", "features/local_concat"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), rtol=1e-6, atol=1e-6)
