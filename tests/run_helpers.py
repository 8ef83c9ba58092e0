"""Run directories for tests, written with `tfreid.runs` as `python -m tfreid.train` writes them."""

import numpy as np

# gamma / moving_variance drawn from these ranges, beta / moving_mean from N(0, 0.1): a BatchNorm
# that is not the identity, so BN folding and quantisation are exercised.
BN_RANGES = {"gamma": (0.5, 1.5), "moving_variance": (0.5, 1.5)}


def randomize_batchnorm(model, seed: int, ranges: dict = BN_RANGES):
    """Gives every BatchNormalization of `model` random statistics and affines (in place)."""
    rng = np.random.default_rng(seed)
    for var in model.variables:
        leaf = var.path.rsplit("/", 1)[-1]
        if leaf in ("moving_mean", "beta"):
            var.assign(rng.normal(0.0, 0.1, var.shape).astype(np.float32))
        elif leaf in ranges:
            var.assign(rng.uniform(*ranges[leaf], var.shape).astype(np.float32))
    return model


def write_run(path, name: str, model, data_root, num_classes: int, model_kwargs: dict,
              size=None):
    """Writes `model` (built by `build_model(name, num_classes, **model_kwargs)`) as a run on
    the Market-format set `data_root`: config.yaml, run.json and a checkpoint. Returns the
    `tfreid.runs.RunDir`."""
    from tfreid import config as config_lib
    from tfreid.runs import RunDir

    data = {"dataset": "market1501", "root": str(data_root)}
    if size is not None:
        data.update(height=size[0], width=size[1])
    cfg = config_lib.resolve(name, None, {"model": {"kwargs": dict(model_kwargs)}, "data": data}, [])
    run = RunDir.create(path, cfg, num_classes)
    run.save_weights(model)
    return run
