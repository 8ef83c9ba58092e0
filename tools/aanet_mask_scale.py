"""How much AANet's six OFA masks shrink the final GAP feature at initialisation.

Compares ``|features/global|`` of a randomly initialised AANet with the same network whose masks
are forced to 1 (the last BN offset of every MSA raised by 30, so the sigmoid saturates), for
both ``mask_target`` readings, with and without zero-initialised residual branches, in
inference mode (initial BN statistics) and with train-mode BN. Inference runs first: train-mode
calls move the BN statistics.

Usage:
    python tools/aanet_mask_scale.py [--input-shape 96 48] [--batch 8]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfreid.models import build_model  # noqa: E402


def gap_norm(model, x, training):
    return float(np.linalg.norm(np.asarray(model(x, training=training)["features/global"]), axis=1).mean())


def shrink(model, x, training):
    """``|GAP|`` with the masks over ``|GAP|`` with every mask at 1."""
    ofa = [layer for layer in model.layers if layer.name.startswith("ofa") and hasattr(layer, "msa")]
    masked = gap_norm(model, x, training)
    saved = [layer.msa.fuse.bn.beta.numpy() for layer in ofa]
    for layer, beta in zip(ofa, saved):
        layer.msa.fuse.bn.beta.assign(beta + 30.0)
    ones = gap_norm(model, x, training)
    for layer, beta in zip(ofa, saved):
        layer.msa.fuse.bn.beta.assign(beta)
    return masked / ones


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input-shape", type=int, nargs=2, default=(96, 48), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    x = np.random.default_rng(0).normal(size=(args.batch, *args.input_shape, 3)).astype("float32")
    for target in ("output", "residual"):
        for zero_init in (True, False):
            keras.utils.set_random_seed(0)
            model = build_model("aanet", 200, input_shape=(*args.input_shape, 3), mask_target=target,
                                zero_init_residual=zero_init)
            inference, train = shrink(model, x, False), shrink(model, x, True)
            print(f"mask_target={target} zero_init_residual={zero_init}: |GAP| with the masks / with masks = 1: "
                  f"inference {inference:.3f}, train-mode BN {train:.3f}", flush=True)
            keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
