"""L2 vs decoupled weight decay and learning-rate groups (tfreid.engine.optimizers) against
hand-computed steps and a NumPy reference, BN/bias exclusion, and the same step under a
2-replica MirroredStrategy."""

import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.config import OptimConfig
from tfreid.engine.optim import build_optimizer
from tfreid.engine.optimizers import SGD, Adam, decays

REPO = pathlib.Path(__file__).resolve().parents[2]
LR, WD, GROUP_LR = 0.1, 0.05, 0.02


def small_model():
    """Dense kernel + bias, BN gamma + beta, and a classifier (the lr group in these tests)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"),
                              keras.layers.BatchNormalization(name="bn"),
                              keras.layers.Dense(2, name="classifier")])
    rng = np.random.default_rng(0)
    for v in model.trainable_variables:
        v.assign(rng.uniform(-1.5, 1.5, v.shape))
    return model


def gradients(model, step):
    rng = np.random.default_rng(10 + step)
    return [rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]


def reference(name, mode, weights, grads_per_step, lrs_per_step, decayed, momentum=0.9,
              beta_1=0.9, beta_2=0.999, eps=1e-7):
    """NumPy float64 steps. l2: g + wd w (PyTorch's weight_decay); decoupled: w - lr wd w first
    (Keras' built-in). SGD momentum in Keras' form (m = mu m - lr g; w += m), which equals
    PyTorch's at a constant lr; Adam as Keras (epsilon outside the bias-corrected sqrt)."""
    w = [np.array(x, np.float64) for x in weights]
    m = [np.zeros_like(x) for x in w]
    v = [np.zeros_like(x) for x in w]
    for t, (grads, lrs) in enumerate(zip(grads_per_step, lrs_per_step), 1):
        for i, (g, lr) in enumerate(zip(grads, lrs)):
            g = np.array(g, np.float64)
            if decayed[i] and mode == "l2":
                g = g + WD * w[i]
            if decayed[i] and mode == "decoupled":
                w[i] = w[i] - lr * WD * w[i]
            if name == "sgd":
                m[i] = momentum * m[i] - lr * g
                w[i] = w[i] + m[i]
            else:
                m[i] += (g - m[i]) * (1 - beta_1)
                v[i] += (g * g - v[i]) * (1 - beta_2)
                alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
                w[i] = w[i] - alpha * m[i] / (np.sqrt(v[i]) + eps)
    return w


def test_only_kernels_decay():
    model = small_model()
    assert {v.path.split("/", 1)[1]: decays(v) for v in model.trainable_variables} == {
        "fc/kernel": True, "fc/bias": False, "bn/gamma": False, "bn/beta": False,
        "classifier/kernel": True, "classifier/bias": False}


@pytest.mark.parametrize("name,mode,want", [
    # w = 2, g = 0.5, lr = 0.1, wd = 0.05, first step, momentum 0.9 (m starts at 0)
    ("sgd", "l2", 2 - 0.1 * (0.5 + 0.05 * 2)),            # 1.94
    ("sgd", "decoupled", 2 - 0.1 * 0.05 * 2 - 0.1 * 0.5),  # 1.94: plain SGD cannot tell them apart
    ("adam", "l2", 2 - 0.1),                                # Adam's first step moves by lr: 1.9
    ("adam", "decoupled", 2 - 0.1 * 0.05 * 2 - 0.1),        # 1.89
])
def test_hand_computed_first_step(name, mode, want):
    kernel = keras.Variable(np.full((1, 1), 2.0, "float32"), name="kernel")
    bias = keras.Variable(np.full((1,), 2.0, "float32"), name="bias")
    opt = build_optimizer(OptimConfig(name=name, lr=LR, momentum=0.9, weight_decay=WD,
                                      weight_decay_mode=mode), 10, 100)
    opt.apply_gradients([(np.full((1, 1), 0.5, "float32"), kernel), (np.full((1,), 0.5, "float32"), bias)])
    np.testing.assert_allclose(kernel.numpy(), [[want]], rtol=1e-6)
    # the bias never decays: 2 - 0.1 * 0.5 (SGD) or 2 - 0.1 (Adam) in both modes
    np.testing.assert_allclose(bias.numpy(), [1.95 if name == "sgd" else 1.9], rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam"])
@pytest.mark.parametrize("mode", ["l2", "decoupled"])
def test_three_steps_with_an_lr_group_match_numpy(name, mode):
    """Main lr x0.1 from step 1 on (milestone epoch 1 of 1-step epochs); the classifier's group
    keeps a constant lr of its own; kernels decay, biases and BN parameters do not."""
    model = small_model()
    cfg = OptimConfig(name=name, lr=LR, momentum=0.9, weight_decay=WD, weight_decay_mode=mode,
                      schedule="multistep", milestones=[1], gamma=0.1,
                      lr_groups=[{"pattern": "/classifier/", "lr": GROUP_LR, "milestones": []}])
    opt = build_optimizer(cfg, steps_per_epoch=1, total_steps=3)
    assert isinstance(opt, SGD if name == "sgd" else Adam)
    variables = model.trainable_variables
    start = [v.numpy() for v in variables]
    grads = [gradients(model, t) for t in range(3)]
    group = ["/classifier/" in v.path for v in variables]
    lrs = [[GROUP_LR if g else (LR if t == 0 else LR * 0.1) for g in group] for t in range(3)]
    for t in range(3):
        np.testing.assert_allclose(float(opt.variable_learning_rate(variables[-1])), GROUP_LR, rtol=1e-6)
        opt.apply_gradients(zip(grads[t], variables))
    want = reference(name, mode, start, grads, lrs, [decays(v) for v in variables])
    for v, w in zip(variables, want):
        np.testing.assert_allclose(v.numpy(), w, rtol=2e-5, atol=2e-6, err_msg=v.path)
    # and the decay really acted: without it the kernels end elsewhere
    plain = reference(name, mode, start, grads, lrs, [False] * len(variables))
    assert np.abs(plain[0] - want[0]).max() > 1e-4


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_decoupled_equals_keras_builtin_weight_decay(name):
    model_a, model_b = small_model(), small_model()
    ours = build_optimizer(OptimConfig(name=name, lr=LR, weight_decay=WD, weight_decay_mode="decoupled"), 1, 3)
    keras_cls = keras.optimizers.SGD if name == "sgd" else keras.optimizers.Adam
    kw = {"momentum": 0.9} if name == "sgd" else {}
    builtin = keras_cls(learning_rate=LR, weight_decay=WD, **kw)
    builtin.exclude_from_weight_decay(var_list=[v for v in model_b.trainable_variables if not decays(v)])
    for t in range(3):
        grads = gradients(model_a, t)
        ours.apply_gradients(zip(grads, model_a.trainable_variables))
        builtin.apply_gradients(zip(grads, model_b.trainable_variables))
    for a, b in zip(model_a.trainable_variables, model_b.trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_checkpoint_and_config_round_trip(tmp_path):
    model = small_model()
    cfg = OptimConfig(name="adam", lr=LR, weight_decay=WD, weight_decay_mode="l2",
                      lr_groups=[{"pattern": "classifier", "lr": GROUP_LR, "schedule": "cosine"}])
    opt = build_optimizer(cfg, 1, 10)
    opt.apply_gradients(zip(gradients(model, 0), model.trainable_variables))
    path = tf.train.Checkpoint(optimizer=opt, model=model).save(str(tmp_path / "ckpt"))
    again = Adam.from_config(opt.get_config())
    assert (again.decay_rate, again.decay_mode) == (WD, "l2")
    assert again.lr_groups[0][0] == "classifier"
    np.testing.assert_allclose(float(again.lr_groups[0][1](5)), float(opt.lr_groups[0][1](5)), rtol=1e-6)
    fresh = build_optimizer(cfg, 1, 10)
    fresh.build(model.trainable_variables)
    tf.train.Checkpoint(optimizer=fresh, model=model).restore(path).assert_existing_objects_matched()
    assert int(fresh.iterations) == 1


def test_lr_mult_scales_the_whole_schedule():
    cfg = OptimConfig(lr=1e-3, schedule="multistep", milestones=[2], warmup_epochs=1, warmup_start_lr=1e-4,
                      lr_groups=[{"pattern": "hard/fc/", "lr_mult": 0.1}])
    opt = build_optimizer(cfg, steps_per_epoch=4, total_steps=20)
    pattern, group = opt.lr_groups[0]
    main = opt._learning_rate
    assert pattern == "hard/fc/"
    for step in (0, 2, 4, 7, 8, 15):
        np.testing.assert_allclose(float(group(step)), 0.1 * float(main(step)), rtol=1e-5)


@pytest.mark.parametrize("cfg,match", [
    (OptimConfig(lr_groups=[{"pattern": "fc", "lr_mult": 0}]), r"lr_groups\[0\].lr_mult"),
    (OptimConfig(name="adamw", weight_decay=1e-4, weight_decay_mode="l2"), "adamw"),
    (OptimConfig(lr_groups=[{"lr": 0.1}]), r"lr_groups\[0\].*pattern"),
    (OptimConfig(lr_groups=[{"pattern": "fc", "momentum": 0.5}]), r"unknown key 'momentum'"),
    (OptimConfig(lr_groups=[{"pattern": "("}]), "regular expression"),
])
def test_bad_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer(cfg, 10, 100)


def test_bad_arguments():
    with pytest.raises(ValueError, match="decay_mode"):
        SGD(decay_rate=0.1, decay_mode="adamw")
    with pytest.raises(ValueError, match="decay_rate"):
        Adam(decay_rate=-1.0)
    with pytest.raises(ValueError, match="weight_decay"):
        Adam(weight_decay=0.1)


@pytest.mark.slow
def test_same_step_on_two_mirrored_replicas():
    """Each replica applies half the gradient; Keras sums them across replicas before
    update_step, so the L2 term and the group lr act once, as on one device."""
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        from tfreid.engine.strategy import configure_cpu_replicas, create_strategy
        configure_cpu_replicas(2)
        import sys; sys.path.insert(0, {str(REPO / "tests" / "engine")!r})
        from test_optimizers import small_model, gradients, reference, LR, WD, GROUP_LR
        from tfreid.config import OptimConfig
        from tfreid.engine.optim import build_optimizer
        from tfreid.engine.optimizers import decays
        for name in ("sgd", "adam"):
            strategy = create_strategy(2)
            with strategy.scope():
                model = small_model()
                cfg = OptimConfig(name=name, lr=LR, momentum=0.9, weight_decay=WD, weight_decay_mode="l2",
                                  lr_groups=[{{"pattern": "/classifier/", "lr": GROUP_LR}}])
                opt = build_optimizer(cfg, 1, 3)
                opt.build(model.trainable_variables)
            start = [v.numpy() for v in model.trainable_variables]
            grads = [gradients(model, t) for t in range(2)]

            @tf.function
            def step(gs):
                strategy.run(lambda: opt.apply_gradients(zip([g / 2 for g in gs], model.trainable_variables)))

            for g in grads:
                step([tf.constant(x) for x in g])
            group = ["/classifier/" in v.path for v in model.trainable_variables]
            lrs = [[GROUP_LR if c else LR for c in group]] * 2
            want = reference(name, "l2", start, grads, lrs, [decays(v) for v in model.trainable_variables])
            err = max(float(np.abs(v.numpy() - w).max()) for v, w in zip(model.trainable_variables, want))
            print(name, strategy.num_replicas_in_sync, err)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.split()[:1] in (["sgd"], ["adam"])]
    assert [r[:2] for r in rows] == [["sgd", "2"], ["adam", "2"]]
    assert all(float(r[2]) < 1e-5 for r in rows), rows


def test_paper_recipes_decay_as_their_pytorch_code():
    """Every recipe in configs/ with weight decay adds it to the gradient (the papers' PyTorch
    SGD/Adam weight_decay); CAN and HA-CNN's Adam recipe have none."""
    from tfreid.config import resolve

    modes = {}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = resolve(None, str(path), {}, [])
        modes[path.stem] = (cfg.optim.weight_decay_mode if cfg.optim.weight_decay else None)
    assert modes == {"aanet_market1501": "l2", "adfl_market1501": "l2", "baseline_market1501": "l2",
                     "can_market1501": None, "ccan_cuhk03": "l2", "ccan_market1501": "l2",
                     "hacnn_market1501": None, "hacnn_market1501_sgd": "l2"}


def test_paper_recipes_warm_up_only_where_their_paper_does():
    """Only ADFL's paper (and its strong baseline) warms up (20 epochs from 3e-6); every other
    recipe in configs/ starts at its paper's lr instead of inheriting the synthetic recipe's warmup."""
    from tfreid.config import resolve
    from tfreid.engine.optim import build_schedule

    warmup = {}
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = resolve(None, str(path), {}, [])
        warmup[path.stem] = cfg.optim.warmup_epochs
        schedule = build_schedule(cfg.optim, 100, 100 * cfg.train.epochs)
        first_lr = float(schedule(0)) if callable(schedule) else schedule
        assert (first_lr == pytest.approx(cfg.optim.lr)) == (not cfg.optim.warmup_epochs), path.stem
    assert warmup == {"aanet_market1501": 0, "adfl_market1501": 20, "baseline_market1501": 20, "can_market1501": 0,
                      "ccan_cuhk03": 0, "ccan_market1501": 0, "hacnn_market1501": 0, "hacnn_market1501_sgd": 0}
