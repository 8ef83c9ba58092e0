"""Mixed precision (bfloat16 on CPU, float16 + dynamic loss scaling) and XLA train steps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.engine.strategy import create_strategy
from tfreid.engine.trainer import LossTerm, Trainer
from tfreid.models import build_model

import trainer_helpers as H


@pytest.fixture
def policy():
    """Sets the global dtype policy for one test and always restores float32."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def _trainer(out_dir, model_fn, optimizer_fn, terms=None, batch=8, **kw):
    return Trainer(strategy=create_strategy(1), model_fn=model_fn, optimizer_fn=optimizer_fn,
                   loss_terms=terms or H.loss_terms(), output_dir=str(out_dir),
                   global_batch_size=batch, steps_per_epoch=1, epochs=1, checkpoint_every=0,
                   progress=False, **kw)


def _weights(model):
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}


def test_mixed_float16_uses_loss_scaling_and_matches_float32_sgd_step(tmp_path, policy):
    images, labels = H.make_data(1)
    lr = 0.5
    ref = H.tiny_model()  # float32 policy: the independent reference
    w0 = _weights(ref)
    with tf.GradientTape() as tape:
        out = ref(images, training=True)
        loss = (tf.reduce_mean(H.ce(labels, out["logits/global"]))
                + 0.5 * tf.reduce_mean(H.ce(labels, out["logits/local"])))
    grads = dict(zip(w0, tape.gradient(loss, ref.trainable_variables)))

    policy("mixed_float16")  # forced on CPU to exercise the GPU code path
    trainer = _trainer(tmp_path, H.tiny_model, lambda: keras.optimizers.SGD(lr))
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.model.get_layer("conv").compute_dtype == "float16"
    result = trainer.fit(H.dataset_fn_for(images, labels))
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** 15  # finite: kept
    assert int(trainer.optimizer.iterations.numpy()) == 1
    # Without scale_loss the unscaled gradients would be 2**15 times too small; without
    # unscaling 2**15 times too large. float16 activations (11-bit mantissa) give ~1e-3
    # relative error in the heads; the conv kernel's gradient passes the BN backward pass,
    # whose batch-mean subtraction cancels most of it and leaves float16 round-off at ~10 %
    # of the update (measured 6 %), so its bound is 20 % in norm.
    for path, value in _weights(trainer.model).items():
        expected = -lr * grads[path].numpy()
        err = np.linalg.norm(value - w0[path] - expected) / np.linalg.norm(expected)
        assert err < (0.2 if path == "conv/kernel" else 0.02), (path, err)
    np.testing.assert_allclose(result.losses["total"], float(loss), rtol=5e-3)


def test_overflowing_loss_scale_skips_the_step_and_halves_the_scale(tmp_path, policy):
    policy("mixed_float16")
    images, labels = H.make_data(1)
    # 2**120 * loss is finite in float32, but its gradients overflow float16 activations.
    trainer = _trainer(tmp_path, H.tiny_model, lambda: keras.optimizers.LossScaleOptimizer(
        keras.optimizers.SGD(0.5), initial_scale=2.0 ** 120))
    w0 = _weights(trainer.model)
    result = trainer.fit(H.dataset_fn_for(images, labels))
    assert np.isfinite(result.losses["total"])
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** 119
    assert int(trainer.optimizer.iterations.numpy()) == 0
    for path, value in _weights(trainer.model).items():
        np.testing.assert_array_equal(value, w0[path], err_msg=path)


def test_loss_scaling_auto_only_for_float16(tmp_path, policy):
    policy("mixed_bfloat16")
    sgd = lambda: keras.optimizers.SGD(0.1)  # noqa: E731
    trainer = _trainer(tmp_path / "a", H.tiny_model, sgd)
    assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    forced = _trainer(tmp_path / "b", H.tiny_model, sgd, loss_scaling=True)
    assert isinstance(forced.optimizer, keras.optimizers.LossScaleOptimizer)
    policy("mixed_float16")
    off = _trainer(tmp_path / "c", H.tiny_model, sgd, loss_scaling=False)
    assert not isinstance(off.optimizer, keras.optimizers.LossScaleOptimizer)
    with pytest.raises(ValueError, match="`loss_scaling` must be 'auto', True or False"):
        _trainer(tmp_path / "d", H.tiny_model, sgd, loss_scaling="yes")


# ---------------------------------------------------------------- HA-CNN, one step
HACNN_CLASSES = 5


def _hacnn_case():
    """Float32 HA-CNN weights, one batch of 4 at 160x64, and its float32 loss (training mode)."""
    keras.utils.set_random_seed(0)
    model = build_model("hacnn", HACNN_CLASSES, input_shape=(160, 64, 3))
    w0 = model.get_weights()
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 160, 64, 3)).astype("float32")
    labels = np.arange(4, dtype="int32") % HACNN_CLASSES
    out = model(images, training=True)
    loss = float(np.mean(H.ce(labels, out["logits/global"]))
                 + np.mean(H.ce(labels, out["logits/local"])))
    return w0, images, labels, loss


def _hacnn_step(tmp_path, w0, images, labels, **kw):
    def model_fn():
        model = build_model("hacnn", HACNN_CLASSES, input_shape=(160, 64, 3))
        model.set_weights(w0)
        return model
    terms = [LossTerm("ce_global", "logits/global", H.ce),
             LossTerm("ce_local", "logits/local", H.ce)]
    trainer = _trainer(tmp_path, model_fn, lambda: keras.optimizers.SGD(0.01), terms=terms,
                       batch=4, **kw)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    return trainer, trainer.fit(lambda start: data)


@pytest.mark.slow  # HA-CNN build + trace: ~15 s
def test_hacnn_bfloat16_step_loss_close_to_float32(tmp_path, policy):
    w0, images, labels, ref = _hacnn_case()
    policy("mixed_bfloat16")
    trainer, result = _hacnn_step(tmp_path, w0, images, labels)
    assert trainer.model.get_layer("stem").compute_dtype == "bfloat16"
    assert trainer.model.output["logits/global"].dtype == "float32"
    loss = result.losses["total"]
    # bfloat16 keeps 8 significant bits (relative rounding 2**-9 ~ 0.2%) and the rounding of
    # ~40 layers along HA-CNN's deepest path compounds: measured 3.4 % here. 8 % still catches
    # a wrong loss (e.g. one head dropped: -50 %) while a != check proves bf16 actually ran.
    assert np.isfinite(loss) and loss != ref
    np.testing.assert_allclose(loss, ref, rtol=0.08)
    assert all(np.all(np.isfinite(w)) for w in trainer.model.get_weights())


@pytest.mark.slow  # XLA compilation of HA-CNN's train step: ~20 s
def test_hacnn_jit_step_loss_matches_float32(tmp_path, policy):
    w0, images, labels, ref = _hacnn_case()
    trainer, result = _hacnn_step(tmp_path, w0, images, labels, jit_compile=True)
    assert trainer.jit_compile and trainer.trace_count == 1
    # Same float32 math, only fused/reordered by XLA: agreement to float32 round-off.
    np.testing.assert_allclose(result.losses["total"], ref, rtol=1e-4)
