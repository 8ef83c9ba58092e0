"""Size and cost of a tfreid model at chosen settings: parameters and MACs per image.

Prints, per configuration: learned parameters without classifiers and with them
(`tfreid.models.complexity.count_params`, BN statistics excluded as PyTorch counts), the
parameters of the layers whose names start with ``--part`` (e.g. ``ofa``), and the
multiply-accumulates per image of the inference graph (`count_flops` on
`tfreid.models.embedding_model`; the papers' "FLOPs" are MACs). ``--sweep`` varies one keyword.

Usage:
    python tools/model_cost.py --model aanet --num-classes 767 --input-shape 384 192 3 \
        --set msa_layout=literal --sweep num_ofa=0,3,6 --part ofa
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

import keras  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from tfreid.models import build_model, embedding_model  # noqa: E402
from tfreid.models.complexity import count_flops, count_params  # noqa: E402


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def measure(model_name: str, num_classes: int, kwargs: dict, part: str | None = None) -> dict:
    """Counts for one configuration (see the module docstring)."""
    model = build_model(model_name, num_classes, **kwargs)
    shape = tuple(model.inputs[0].shape[1:])
    result = {"model": model_name, "num_classes": num_classes, "kwargs": kwargs, "input_shape": list(shape),
              "params": count_params(model),
              "params_with_classifiers": count_params(model, exclude_classifiers=False),
              "embedding_macs": count_flops(embedding_model(model), shape)}
    if part:
        result[f"params_{part}"] = sum(int(np.prod(w.shape)) for layer in model.layers
                                       if layer.name.startswith(part) for w in layer.weights
                                       if w.name not in ("moving_mean", "moving_variance"))
    keras.backend.clear_session()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--num-classes", type=int, default=751)
    parser.add_argument("--input-shape", type=int, nargs=3, metavar=("H", "W", "C"))
    parser.add_argument("--set", type=_pair, action="append", default=[], metavar="KEY=VALUE",
                        help="model keyword (value parsed as YAML)")
    parser.add_argument("--sweep", type=_pair, metavar="KEY=V1,V2,...", help="vary one keyword")
    parser.add_argument("--part", help="also count the layers whose names start with this")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.num_classes < 1:
        parser.error(f"--num-classes must be >= 1, received {args.num_classes}")
    base = {k: yaml.safe_load(v) for k, v in args.set}
    if args.input_shape:
        base["input_shape"] = tuple(args.input_shape)
    configs = [base]
    if args.sweep:
        key, values = args.sweep
        configs = [{**base, key: yaml.safe_load(v)} for v in values.split(",")]
    rows = []
    for kwargs in configs:
        row = measure(args.model, args.num_classes, kwargs, args.part)
        rows.append(row)
        extra = f"  {args.part} {row[f'params_{args.part}']:,}" if args.part else ""
        print(f"{json.dumps({k: v for k, v in kwargs.items() if k != 'input_shape'})}: params "
              f"{row['params']:,} (with classifiers {row['params_with_classifiers']:,}){extra}, "
              f"{row['embedding_macs'] / 1e9:.3f} GMACs per image", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
