"""A tiny synthetic set and a tiny HA-CNN run directory (with logs) for the visualisation tests."""

import json
import pathlib

import numpy as np
import pytest

# The registered small HA-CNN: the same graph and 160x64 input at a fraction of the width.
MODEL_KWARGS = {"widths": [32, 64, 96], "feature_dim": 64}
NUM_CLASSES = 6


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> pathlib.Path:
    from tfreid.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("viz-syn") / "data"
    generate(root, SyntheticConfig(train_ids=NUM_CLASSES, test_ids=3, cameras=2, images_per_id=4,
                                   distractors=2, junk=0, seed=3), workers=1, verbose=False)
    return root


def write_run(run: pathlib.Path, data_root, model) -> pathlib.Path:
    """Writes `model` as a run directory the way `python -m tfreid.train` does (config.yaml,
    run.json, a checkpoint in CheckpointKeeper's format)."""
    import tensorflow as tf

    from tfreid import config as config_lib
    from tfreid.engine.checkpoint import model_variables

    cfg = config_lib.resolve("hacnn", None, {"data": {"dataset": "market1501",
                                                      "root": str(data_root)}}, [])
    run.mkdir(parents=True)
    cfg.dump(run / "config.yaml")
    (run / "run.json").write_text(json.dumps({"model": "hacnn", "num_classes": NUM_CLASSES,
                                              "input_size": [160, 64], "model_kwargs": MODEL_KWARGS}))
    tf.train.Checkpoint(model=model_variables(model)).save(str(run / "checkpoints" / "ckpt"))
    return run


@pytest.fixture(scope="session")
def tiny_model():
    """A small HA-CNN with randomised BatchNorm statistics (so the soft maps are not flat); its
    hard-attention Dense kernels are still zero, so every theta is the initial stripe layout."""
    import keras

    from tfreid.models import build_model

    keras.utils.set_random_seed(1)
    model = build_model("hacnn", NUM_CLASSES, **MODEL_KWARGS)
    rng = np.random.default_rng(1)
    for var in model.variables:
        name = var.path.rsplit("/", 1)[-1]
        if name in ("moving_mean", "beta"):
            var.assign(rng.normal(0.0, 0.1, var.shape).astype(np.float32))
        elif name in ("moving_variance", "gamma"):
            var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
    return model


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tiny_model, tmp_path_factory) -> pathlib.Path:
    return write_run(tmp_path_factory.mktemp("viz-run") / "run", tiny_data, tiny_model)


@pytest.fixture(scope="session")
def make_run(tiny_data, tmp_path_factory):
    """`make_run(model)`: another run directory on the tiny set holding `model`'s weights."""
    return lambda model: write_run(tmp_path_factory.mktemp("viz-run") / "run", tiny_data, model)
