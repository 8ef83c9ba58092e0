"""AANet functional model (small same-graph variant): outputs, OFA placement read from the graph,
ablation switches, part/holistic heads, where each loss' gradients go, export without the
training-only alignment branch, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.layers import AttentionAlignment, OmnibearingAttention
from tfreid.losses import attention_cosine_distance, cross_entropy, improved_trihard
from tfreid.models import build_model, embedding_model, small_overrides

N = 10
SMALL = small_overrides("aanet")  # 96 x 32 input, base width 8: last maps 6 x 2 x 256
LAST = ["conv4_block4", "conv4_block5", "conv4_block6", "conv5_block1", "conv5_block2", "conv5_block3"]


def build(**kw):
    keras.utils.set_random_seed(0)
    return build_model("aanet", N, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def model():
    return build()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(4, 96, 32, 3)).astype("float32")


@pytest.fixture(scope="module")
def out(model, images):
    return {k: np.asarray(v) for k, v in model(images, training=False).items()}


def ofa_names(m):
    return [layer.name for layer in m.layers if isinstance(layer, OmnibearingAttention)]


# ----------------------------------------------------------------------------- outputs
def test_small_variant():
    assert SMALL == {"input_shape": (96, 32, 3), "base_width": 8}


def test_output_keys_shapes_and_dtypes(out):
    want = {"embedding": (4, 6 * 256), "features/global": (4, 256), "logits/global": (4, N),
            "alignment": (4, N, 6),
            **{f"logits/part{z}": (4, N) for z in range(1, 7)},
            **{f"attention/ofa{k}": (4, 6, 2, 1) for k in range(1, 7)}}
    assert {k: v.shape for k, v in out.items()} == want
    assert all(v.dtype == np.float32 for v in out.values())
    for k in range(1, 7):
        assert 0 < out[f"attention/ofa{k}"].min() and out[f"attention/ofa{k}"].max() < 1


def test_heads_are_stripe_means_of_the_last_map(model, images, out):
    # The last block's output as masked by its OFA (mask_target="output", the default).
    probe = keras.Model(model.input, model.get_layer("ofa6_apply").output)
    last = np.asarray(probe(images, training=False)).astype("float64")  # [4, 6, 2, 256]
    parts = last.mean(axis=2)  # six one-row stripes, averaged over the width
    np.testing.assert_allclose(out["embedding"], parts.reshape(4, -1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["features/global"], last.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    for z in range(1, 7):
        kernel, bias = model.get_layer(f"classifier_part{z}").get_weights()
        np.testing.assert_allclose(out[f"logits/part{z}"], parts[:, z - 1] @ kernel + bias, rtol=1e-4, atol=1e-5)
    # the holistic classifier is the one whose CAMs the alignment uses
    kernel, bias = model.get_layer("classifier_global").get_weights()
    np.testing.assert_allclose(out["logits/global"], last.mean(axis=(1, 2)) @ kernel + bias, rtol=1e-4, atol=1e-5)


def test_baseline_without_attention_and_uneven_pcb_stripes():
    """Table 3's BL (no OFA, no AAM): plain ResNet-50 parts; 8 rows in 3 stripes take PCB's
    adaptive bins 0-3, 2-6, 5-8."""
    m = build(input_shape=(128, 32, 3), num_parts=3, use_fca=False, use_msa=False, use_aam=False)
    assert ofa_names(m) == [] and "alignment" not in m.output
    assert not any(isinstance(layer, AttentionAlignment) for layer in m.layers)
    assert m.get_layer("classifier_global").output is m.output["logits/global"]
    assert m.get_layer("conv5_block1_1_conv").input is m.get_layer("conv4_block6_out").output
    x = np.random.default_rng(1).normal(size=(2, 128, 32, 3)).astype("float32")
    last = np.asarray(keras.Model(m.input, m.get_layer("conv5_block3_out").output)(x))
    emb = np.asarray(m(x)["embedding"]).reshape(2, 3, -1)
    for z, (top, bottom) in enumerate([(0, 3), (2, 6), (5, 8)]):
        np.testing.assert_allclose(emb[:, z], last[:, top:bottom].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- placement
def test_ofa_runs_in_parallel_with_the_last_six_blocks(model):
    """Eq. 2, F_out = f(F_in) * A: the map multiplies the parallel block's output."""
    assert ofa_names(model) == [f"ofa{k}" for k in range(1, 7)]
    for k, block in enumerate(LAST, 1):
        ofa = model.get_layer(f"ofa{k}")
        # same input as the block's first conv: F_in feeds both paths (Eq. 2)
        assert ofa.input is model.get_layer(f"{block}_1_conv").input
        block_out, attention = model.get_layer(f"ofa{k}_apply").input
        assert block_out is model.get_layer(f"{block}_out").output and attention is ofa.output
        assert ofa.filters == block_out.shape[-1] and ofa.strides == 1
        assert ofa.fca is not None and ofa.msa is not None and ofa.msa.layout == "compact"
    # the attended output is what the next block (and the heads) consume
    assert model.get_layer("conv4_block5_1_conv").input is model.get_layer("ofa1_apply").output
    assert model.get_layer("conv5_block1_0_conv").input is model.get_layer("ofa3_apply").output
    assert model.get_layer("global_pool").input is model.get_layer("ofa6_apply").output
    # blocks before conv4_block4 have no attention
    assert model.get_layer("conv4_block4_1_conv").input is model.get_layer("conv4_block3_out").output


def test_mask_on_the_residual_mapping_variant():
    """mask_target="residual" (He et al.'s f = the residual mapping): the map multiplies the
    residual branch; the shortcut is then added unmasked and the block's ReLU applied."""
    m = build(num_ofa=2, mask_target="residual", msa_layout="literal", use_aam=False)
    for k, block in enumerate(LAST[-2:], 1):
        ofa = m.get_layer(f"ofa{k}")
        assert ofa.input is m.get_layer(f"{block}_1_conv").input and ofa.msa.layout == "literal"
        residual, attention = m.get_layer(f"ofa{k}_apply").input
        assert residual is m.get_layer(f"{block}_3_bn").output and attention is ofa.output
        assert m.get_layer(f"{block}_add").input[1] is m.get_layer(f"ofa{k}_apply").output
    assert m.get_layer("conv5_block3_1_conv").input is m.get_layer("conv5_block2_out").output
    assert m.get_layer("global_pool").input is m.get_layer("conv5_block3_out").output


def test_explicit_blocks_with_strides_and_fca_only():
    """Table 4 style placement on chosen blocks; the first block of a stage strides, and so does
    its map (last_stride=2 here); FCA alone (Table 3) keeps no MSA."""
    blocks = ["conv3_block1", "conv4_block1", "conv5_block1"]
    m = build(ofa_blocks=blocks, last_stride=2, num_parts=3, use_msa=False, use_aam=False)
    assert ofa_names(m) == ["ofa1", "ofa2", "ofa3"]
    for k, (block, shape_in, shape_out) in enumerate(zip(
            blocks, [(24, 8, 32), (12, 4, 64), (6, 2, 128)], [(12, 4, 64), (6, 2, 128), (3, 1, 256)]), 1):
        ofa = m.get_layer(f"ofa{k}")
        assert ofa.input is m.get_layer(f"{block}_1_conv").input and ofa.strides == 2
        assert ofa.input.shape[1:] == shape_in and ofa.output.shape[1:] == shape_out
        assert ofa.msa is None and ofa.fca is not None
        assert m.get_layer(f"ofa{k}_apply").input[0] is m.get_layer(f"{block}_out").output


@pytest.mark.parametrize("target,tensor", [("residual", "3_bn"), ("output", "out")])
def test_series_variant_with_msa_only(target, tensor):
    """AANet-2: the map comes from the tensor it multiplies (SE-style inside the residual
    branch, or after the block)."""
    m = build(ofa_mode="series", num_ofa=2, use_fca=False, use_aam=False, mask_target=target)
    for k, block in enumerate(("conv5_block2", "conv5_block3"), 1):
        ofa = m.get_layer(f"ofa{k}")
        assert ofa.input is m.get_layer(f"{block}_{tensor}").output and ofa.fca is None
        assert m.get_layer(f"ofa{k}_apply").input == [ofa.input, ofa.output]


def test_dense_variant():
    m = build(ofa_mode="dense", num_ofa=4, use_aam=False)  # conv4_block6, conv5_block1..3
    assert m.get_layer("ofa1").input is m.get_layer("conv4_block6_1_conv").input
    add = m.get_layer("ofa3_dense_add")  # conv5_block2: input 256 ch; maps of 128 and 256 ch
    assert m.get_layer("ofa3").input is add.output
    block_in, from1, from2 = add.input
    assert block_in is m.get_layer("conv5_block2_1_conv").input
    assert from1 is m.get_layer("ofa3_from_ofa1").output  # 128 -> 256 channels via a 1x1 conv
    assert m.get_layer("ofa3_from_ofa1").input is m.get_layer("ofa1").output
    assert from2 is m.get_layer("ofa2").output  # same shape: added as it is
    assert len(m.get_layer("ofa4_dense_add").input) == 4
    assert m.get_layer("ofa2_dense_add").input[1] is m.get_layer("ofa1").output  # 128 ch into 128


def test_residual_blocks_start_as_identity(model):
    gammas = {layer.name: np.asarray(layer.gamma) for layer in model.layers if layer.name.endswith("_3_bn")}
    assert len(gammas) == 16 and all((g == 0).all() for g in gammas.values())
    assert (np.asarray(model.get_layer("conv5_block1_0_bn").gamma) == 1).all()  # shortcuts untouched


# ----------------------------------------------------------------------------- losses and gradients
def test_each_loss_trains_what_the_paper_says(model, images):
    labels = tf.constant([0, 0, 3, 3])
    # zero_init_residual: the residual branches start at 0 (their last BN gamma), so the convs
    # that get gradients at init are the stem, the projection shortcuts and those gammas
    watched = {
        "backbone": model.get_layer("conv5_block1_0_conv").kernel,
        "early_backbone": model.get_layer("conv1_conv").kernel,
        "ofa": model.get_layer("ofa6").msa.fuse.conv.kernel,
        "fca": model.get_layer("ofa1").fca.conv1.kernel,
        "aam": model.get_layer("classifier_global").kernel,
        "part1": model.get_layer("classifier_part1").kernel,
    }
    saved = model.get_weights()  # training=True moves BN statistics of the shared fixture
    try:
        with tf.GradientTape(persistent=True) as tape:
            o = model(images, training=True)
            acd = tf.reduce_mean(attention_cosine_distance(labels, o["alignment"]))
            part = tf.reduce_mean(cross_entropy(labels, o["logits/part1"]))
            tri = tf.reduce_mean(improved_trihard(labels, o["features/global"]))
    finally:
        model.set_weights(saved)

    def moved(loss):
        grads = tape.gradient(loss, list(watched.values()))
        return {k: g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for k, g in zip(watched, grads)}

    # ACD aligns the backbone's (and the attention's) last maps through the true class's CAM
    assert float(acd) > 0
    assert moved(acd) == {"backbone": True, "early_backbone": True, "ofa": True, "fca": True, "aam": True,
                          "part1": False}
    g_aam = np.asarray(tape.gradient(acd, watched["aam"]))
    assert set(np.nonzero(np.abs(g_aam).sum(axis=0))[0]) == {0, 3}  # only the true classes' CAMs
    assert moved(part) == {"backbone": True, "early_backbone": True, "ofa": True, "fca": True, "aam": False,
                           "part1": True}
    assert moved(tri) == {"backbone": True, "early_backbone": True, "ofa": True, "fca": True, "aam": False,
                          "part1": False}


# ----------------------------------------------------------------------------- export
def test_embedding_model_has_no_training_only_branch(model, images, out):
    embed = embedding_model(model)
    names = {layer.name for layer in embed.layers}
    assert not any(isinstance(layer, AttentionAlignment) for layer in embed.layers)
    assert not names & {"classifier_global", "global_pool", *(f"classifier_part{z}" for z in range(1, 7))}
    assert {f"ofa{k}" for k in range(1, 7)} <= names
    graph = tf.function(lambda x: embed(x, training=False)).get_concrete_function(
        tf.TensorSpec((None, 96, 32, 3))).graph
    op_names = [op.name for op in graph.get_operations()]
    assert not [n for n in op_names if "classifier" in n or "alignment" in n]
    assert {"Conv2D", "Sigmoid"} <= {op.type for op in graph.get_operations()}
    np.testing.assert_allclose(np.asarray(embed(images)), out["embedding"], rtol=1e-5, atol=1e-6)
    assert embed.count_params() == model.count_params() - sum(
        int(np.prod(w.shape)) for name in ("classifier_global", *(f"classifier_part{z}" for z in range(1, 7)))
        for w in model.get_layer(name).weights)


def test_keras_round_trip_safe_mode(model, images, out, tmp_path):
    model.save(tmp_path / "aanet.keras")
    loaded = keras.saving.load_model(tmp_path / "aanet.keras", safe_mode=True)
    got = loaded(images, training=False)
    assert set(got) == set(out)
    for key, value in out.items():
        np.testing.assert_allclose(np.asarray(got[key]), value, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- size and errors
def _conv_bn(cin, cout, kh=1, kw=1):
    return kh * kw * cin * cout + 2 * cout


def _ofa_params(c, f, layout):
    mid = c // 16
    fca = c * (c // 16) + c // 16 + (c // 16) * c + c
    branches = 4 * _conv_bn(c, mid) + sum(2 * _conv_bn(mid, mid, 1, n) for n in (3, 5, 7))
    if layout == "compact":  # each branch maps its c/16 channels straight to f, one BN after the sum
        return fca + branches + 4 * mid * f + 2 * f
    return fca + branches + 4 * _conv_bn(mid, c) + _conv_bn(c, f)


def test_ofa_parameter_count_matches_formula(model):
    widths = [(128, 128)] * 3 + [(128, 256), (256, 256), (256, 256)]
    literal = build(num_ofa=3, msa_layout="literal", use_aam=False)
    for k, (c, f) in enumerate(widths, 1):
        layer = model.get_layer(f"ofa{k}")
        assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == _ofa_params(c, f, "compact")
        if k > 3:
            layer = literal.get_layer(f"ofa{k - 3}")
            assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == _ofa_params(c, f, "literal")


@pytest.mark.parametrize("kwargs,match", [
    ({"ofa_mode": "stacked"}, "ofa_mode"),
    ({"num_ofa": 17}, "num_ofa"),
    ({"mask_target": "shortcut"}, "mask_target"),
    ({"msa_layout": "paper"}, "msa_layout"),
    ({"ofa_blocks": ["conv6_block1"]}, "ofa_blocks"),
    ({"num_parts": 7}, r"`num_parts`=7 exceeds the height 6"),
    ({"input_shape": (96, 32)}, "input_shape"),
    ({"last_stride": 3}, "last_stride"),
    ({"use_aam": "no"}, "use_aam"),
    ({"height_threshold": 2.0}, "height_threshold"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


# ----------------------------------------------------------------------------- paper recipe
def test_paper_config_follows_sec_4_2(model):
    """ACD summed over identities (Eq. 7), L2 weight decay, and after epoch 40 the lr of every
    layer but the classifiers drops to 0.001 while the classifiers keep 0.01."""
    from tfreid.config import resolve
    from tfreid.engine.optim import build_optimizer

    cfg = resolve(None, "configs/aanet_market1501.yaml", {}, [])
    assert cfg.model.kwargs["mask_target"] == "output" and cfg.model.kwargs["msa_layout"] == "compact"
    acd = [t for t in cfg.losses if t.type == "attention_cosine_distance"]
    assert [t.kwargs for t in acd] == [{"sum_over_identities": True}]
    assert (cfg.optim.name, cfg.optim.weight_decay_mode, cfg.optim.weight_decay) == ("sgd", "l2", 5e-4)
    opt = build_optimizer(cfg.optim, steps_per_epoch=10, total_steps=1000)
    opt.build(model.trainable_variables)
    for step, conv_lr in ((399, 0.01), (400, 0.001), (999, 0.001)):
        opt.iterations.assign(step)
        lrs = {v.path: float(opt.variable_learning_rate(v)) for v in model.trainable_variables}
        fixed = {p for p, lr in lrs.items() if lr == pytest.approx(0.01)}
        assert fixed == {p for p in lrs if p.startswith("classifier_")} | (set(lrs) if conv_lr == 0.01 else set())
        assert len({p.split("/")[0] for p in lrs if p.startswith("classifier_")}) == 7
        assert all(lr == pytest.approx(conv_lr) for p, lr in lrs.items() if not p.startswith("classifier_"))
