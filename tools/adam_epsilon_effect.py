"""How much Adam's epsilon shrinks the steps of a trained run: Keras's placement vs PyTorch's.

Keras adds epsilon to sqrt(v) before the bias correction, PyTorch to sqrt(v_hat) after, so
Keras's update is PyTorch's with eps = epsilon / sqrt(1 - beta_2^t). Per element, epsilon scales
the step by sqrt(v_hat) / (sqrt(v_hat) + eps); this prints that factor for both placements from
the Adam state in a run's latest checkpoint (a run stopped by ``--max-steps 1`` gives step 1).

    python tools/adam_epsilon_effect.py runs/hacnn-market1501-... [--keras-epsilon 1e-7] [--torch-epsilon 1e-8]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import tensorflow as tf


def velocities(checkpoint_dir: str) -> tuple[int, np.ndarray]:
    """The optimizer step and all second-moment elements of the latest checkpoint."""
    path = tf.train.latest_checkpoint(checkpoint_dir)
    if path is None:
        raise SystemExit(f"adam_epsilon_effect: no checkpoint in {checkpoint_dir}")
    reader = tf.train.load_checkpoint(path)
    step = int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))
    # Keras optimizer variables: iteration, learning_rate, then (momentum, velocity) per variable.
    names = reader.get_variable_to_shape_map()
    index = sorted(int(n.split("/")[2]) for n in names if n.startswith("optimizer/_variables/"))
    v = [reader.get_tensor(f"optimizer/_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE").ravel()
         for i in index if i >= 3 and i % 2 == 1]
    return step, np.concatenate(v)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory (its checkpoints/ hold the Adam state)")
    parser.add_argument("--beta-2", type=float, default=0.999)
    parser.add_argument("--keras-epsilon", type=float, default=1e-7)
    parser.add_argument("--torch-epsilon", type=float, default=1e-8)
    args = parser.parse_args(argv)
    step, v = velocities(os.path.join(args.run, "checkpoints"))
    root = np.sqrt(v / (1 - args.beta_2 ** step))  # sqrt(v_hat)
    root = root[root > 0]  # elements that never had a gradient take no step either way
    print(f"step {step}: {root.size:,} elements; sqrt(v_hat) quantiles 1% / 10% / 50%: "
          + " / ".join(f"{q:.2e}" for q in np.quantile(root, [0.01, 0.1, 0.5])))
    keras_eps = args.keras_epsilon / np.sqrt(1 - args.beta_2 ** step)
    for name, eps in (("PyTorch", args.torch_epsilon), ("Keras", keras_eps)):
        factor = root / (root + eps)
        print(f"{name:8s} eps {eps:.2e}: mean step factor {factor.mean():.5f}, "
              f"elements shrunk by more than 10%: {100 * (factor < 0.9).mean():.3f}%")


if __name__ == "__main__":
    main()
