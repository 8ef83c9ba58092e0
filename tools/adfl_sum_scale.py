"""ADFL's "1sum" starts at twice its input: does the factor 2 change anything downstream?

Runs the default ADFL (small variant, random alphas so the attention is on) twice on the same
batch with train-mode BN: once as built (S(I) + C(I)) and once with every AttentionArrangement
output halved (the mean instead of the sum), and prints the largest difference per output.

Usage:
    python tools/adfl_sum_scale.py
"""

from __future__ import annotations

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfreid.layers.attention_arrangement import AttentionArrangement  # noqa: E402
from tfreid.models import build_model, small_overrides  # noqa: E402


def main() -> int:
    small = small_overrides("adfl")
    x = np.random.default_rng(0).normal(size=(8, *small["input_shape"])).astype("float32")
    keras.utils.set_random_seed(0)
    model = build_model("adfl", 10, **small)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        for w in layer.weights:
            if w.name == "alpha":
                w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    summed = {k: np.asarray(v) for k, v in model(x, training=True).items()}
    original = AttentionArrangement.call

    def halved(self, inputs):
        out = original(self, inputs)
        return (0.5 * out[0], out[1]) if isinstance(out, tuple) else 0.5 * out

    AttentionArrangement.call = halved
    try:
        mean = {k: np.asarray(v) for k, v in model(x, training=True).items()}
    finally:
        AttentionArrangement.call = original
    for key in sorted(summed):
        print(f"{key:20s} max |sum - mean| {np.abs(summed[key] - mean[key]).max():.2e}   "
              f"max |value| {np.abs(summed[key]).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
