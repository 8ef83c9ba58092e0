"""The ADFL training recipe: backbone frozen for the first epochs, warmup + multistep (Eq. 4),
the paper YAML configs."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid import config as config_lib
from tfreid.engine.freeze import BackboneFreezer, backbone_layers
from tfreid.engine.optim import build_schedule
from tfreid.engine.strategy import create_strategy
from tfreid.engine.trainer import LossTerm, Trainer

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def tiny_backbone_model():
    """Conv-BN 'backbone' named like ResNet-50's stem + a Dense-BN head (dict outputs)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 4, 3), name="images")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = keras.layers.Dense(4, name="bottleneck")(x)
    x = keras.layers.BatchNormalization(name="bnneck_global")(x)
    return keras.Model(inputs, {"logits/global": keras.layers.Dense(5, name="classifier_global")(x),
                                "embedding": x})


def ce(labels, logits):
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def test_backbone_is_frozen_for_the_first_epochs_then_trains(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 8, 4, 3)).astype("float32")
    labels = rng.integers(0, 5, 32).astype("int32")
    freezer, snapshots = BackboneFreezer(2), {}

    def hook(model, epoch):  # snapshot every variable at the start of each epoch
        snapshots[epoch] = {v.path: v.numpy().copy() for v in model.variables}
        return freezer(model, epoch)

    trainer = Trainer(
        strategy=create_strategy(1), model_fn=tiny_backbone_model,
        # decoupled weight decay would shrink frozen weights too if they were merely
        # gradient-masked: they must be out of the optimizer's variables
        optimizer_fn=lambda: keras.optimizers.Adam(0.05, weight_decay=0.1),
        loss_terms=[LossTerm("ce_global", "logits/global", ce)], output_dir=str(tmp_path),
        global_batch_size=8, steps_per_epoch=2, epochs=3, progress=False, epoch_hook=hook)
    trainer.fit(lambda start: tf.data.Dataset.from_tensor_slices((images, labels))
                .batch(8, drop_remainder=True).repeat().skip(start))
    final = {v.path: v.numpy() for v in trainer.model.variables}
    backbone = [p for p in final if p.startswith("conv1_")]
    head = [p for p in final if p.startswith(("bottleneck", "bnneck", "classifier"))]
    assert len(backbone) == 6  # kernel, bias, gamma, beta, moving mean/variance
    for path in backbone:  # epochs 1-2 frozen: weights AND BN statistics untouched
        np.testing.assert_array_equal(snapshots[2][path], snapshots[0][path], err_msg=path)
        assert not np.array_equal(final[path], snapshots[2][path]), path  # epoch 3 trains it
    for path in head:
        assert not np.array_equal(snapshots[1][path], snapshots[0][path]), path
    assert all(layer.trainable for layer in trainer.model.layers)
    assert trainer.trace_count == 2  # traced frozen, retraced once when the backbone thawed


def test_freezer_arguments_and_models_without_backbone():
    with pytest.raises(ValueError, match="freeze_backbone_epochs"):
        BackboneFreezer(-1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
    assert BackboneFreezer(0)(model, 0) is False  # disabled: never touches the model
    with pytest.raises(ValueError, match="no layer of model"):
        BackboneFreezer(1)(model, 0)
    with pytest.raises(ValueError, match="freeze_backbone_epochs"):
        config_lib.resolve("adfl", None, {}, ["train.freeze_backbone_epochs=-2"])


def test_backbone_pattern_selects_resnet50_names_only():
    names = ["conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad", "pool1_pool",
             "conv2_block1_0_conv", "conv4_block6_out", "conv5_block3_3_bn", "part3_conv5_block1_add"]
    others = ["images", "attn3", "af3_conv1", "af3_pool", "global_pool", "bottleneck",
              "bnneck_global", "classifier_fused", "conv6_block1_out", "conv1"]
    model = type("M", (), {"layers": [type("L", (), {"name": n})() for n in names + others]})()
    assert [layer.name for layer in backbone_layers(model)] == names


def test_paper_learning_rate_eq_4():
    """Linear warmup 3e-6 -> 3.5e-4 over 20 epochs, x0.1 after epochs 80 and 130."""
    cfg = config_lib.resolve(None, str(CONFIGS / "adfl_market1501.yaml"), {}, []).optim
    spe = 10
    schedule = build_schedule(cfg, steps_per_epoch=spe, total_steps=150 * spe)

    def eq4(t):  # the paper's lr(t), t in epochs (the ramp is applied per step here)
        if t <= 20:
            return 3e-6 + (3.5e-4 - 3e-6) / 20 * t
        return 3.5e-4 if t <= 80 else 3.5e-5 if t <= 130 else 3.5e-6

    # (at exactly t = 80 and 130 Eq. 4 still gives the higher rate; tfreid decays from the
    # first step of the 81st / 131st epoch, as PyTorch's per-epoch MultiStepLR does)
    for step in (0, 5, 100, 199, 200, 500, 799, 801, 1299, 1301, 1499):
        np.testing.assert_allclose(float(schedule(step)), eq4(step / spe), rtol=1e-5, err_msg=str(step))


@pytest.mark.parametrize("name,model", [("adfl_market1501.yaml", "adfl"), ("baseline_market1501.yaml", "baseline")])
def test_paper_configs(name, model):
    cfg = config_lib.resolve(None, str(CONFIGS / name), {}, [])
    assert cfg.model.name == model
    assert (cfg.data.height, cfg.data.width, cfg.data.p, cfg.data.k, cfg.data.pad) == (384, 128, 8, 4, 10)
    assert cfg.data.flip and cfg.eval.flip
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay) == ("adam", 3.5e-4, 5e-4)
    assert (cfg.train.epochs, cfg.train.freeze_backbone_epochs) == (150, 5)
    outputs = {t.output for t in cfg.losses}
    assert {"logits/global", "features/global"} <= outputs
    assert ({"logits/fused", "features/fused"} <= outputs) == (model == "adfl")
