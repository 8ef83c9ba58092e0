import numpy as np
import pytest

from tfreid.config import OptimConfig
from tfreid.engine.optim import LinearWarmup, build_optimizer, build_schedule


def test_multistep_in_epochs():
    cfg = OptimConfig(lr=0.03, schedule="multistep", milestones=[2, 3], gamma=0.1)
    schedule = build_schedule(cfg, steps_per_epoch=10, total_steps=40)
    values = [float(schedule(s)) for s in (0, 19, 20, 29, 30, 39)]
    np.testing.assert_allclose(values, [0.03, 0.03, 0.003, 0.003, 0.0003, 0.0003], rtol=1e-6)


def test_linear_warmup_then_schedule():
    cfg = OptimConfig(lr=3.5e-4, schedule="multistep", milestones=[4], warmup_epochs=2,
                      warmup_start_lr=3.5e-6)
    schedule = build_schedule(cfg, steps_per_epoch=5, total_steps=50)
    assert isinstance(schedule, LinearWarmup)
    # step 5 of a 10-step ramp from 3.5e-6 to 3.5e-4
    np.testing.assert_allclose(float(schedule(0)), 3.5e-6, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(5)), 3.5e-6 + 0.5 * (3.5e-4 - 3.5e-6), rtol=1e-5)
    np.testing.assert_allclose(float(schedule(10)), 3.5e-4, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(25)), 3.5e-5, rtol=1e-5)


def test_warmup_serialises():
    import keras

    schedule = LinearWarmup(keras.optimizers.schedules.PiecewiseConstantDecay([10], [1.0, 0.1]), 4, 0.5)
    again = LinearWarmup.from_config(schedule.get_config())
    np.testing.assert_allclose([float(again(s)) for s in (0, 2, 4, 11)], [0.5, 0.75, 1.0, 0.1], rtol=1e-6)


def test_build_optimizers():
    sgd = build_optimizer(OptimConfig(name="sgd", lr=0.03, momentum=0.9, nesterov=True), 10, 100)
    assert (sgd.momentum, sgd.nesterov) == (0.9, True)
    assert float(sgd.learning_rate.numpy()) == pytest.approx(0.03)
    adam = build_optimizer(OptimConfig(name="adam", beta_2=0.99, weight_decay=1e-4), 10, 100)
    assert adam.beta_2 == 0.99 and adam.decay_rate == pytest.approx(1e-4)
    assert adam.decay_mode == "decoupled" and adam.weight_decay is None  # applied by tfreid, kernels only
    with pytest.raises(ValueError, match="milestones"):
        build_schedule(OptimConfig(schedule="multistep", milestones=[3, 2]), 10, 100)
