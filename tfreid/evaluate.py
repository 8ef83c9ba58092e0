"""`python -m tfreid.evaluate --run RUN_DIR`: re-evaluate a trained run (any checkpoint, any dataset).

Evaluating on another dataset than the one trained on is cross-domain evaluation (e.g. M->D).
Features are extracted in batches and ranked in chunks, so memory stays bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tfreid.cli import HelpFormatter, add_quiet, error, quiet_tensorflow


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfreid.evaluate", formatter_class=HelpFormatter,
                                     description="Evaluate a trained tfreid run.")
    parser.add_argument("--run", required=True, help="run directory from python -m tfreid.train")
    parser.add_argument("--checkpoint", help="checkpoint prefix (default: the latest)")
    parser.add_argument("--dataset", help="dataset to evaluate on (default: the run's)")
    parser.add_argument("--data-root", help="dataset folder (default: the run's)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="average image + mirror features (default: the run's eval.flip)")
    parser.add_argument("--metric", choices=("euclidean", "sqeuclidean", "cosine"),
                        help="distance (default: the run's eval.metric)")
    parser.add_argument("--batch-size", type=int,
                        help="images per forward pass (default: the run's data.eval_batch_size)")
    parser.add_argument("--output", help="write the metrics JSON here (default: print only)")
    add_quiet(parser)
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_tensorflow()
    from tfreid.data import build_dataset
    from tfreid.engine import evaluator
    from tfreid.models import embedding_model
    from tfreid.runs import load_run

    try:
        cfg, model, checkpoint = load_run(args.run, args.checkpoint)
        name = args.dataset or cfg.data.dataset
        if (args.dataset and args.dataset != cfg.data.dataset) or (
                args.data_root and not _same_folder(args.data_root, cfg.data.root)):
            # another dataset (cross-domain): the run's dataset options describe its own set
            root, kwargs = args.data_root, {}
        else:
            root, kwargs = args.data_root or cfg.data.root, cfg.data.kwargs
        dataset = _load_dataset(build_dataset, name, root, kwargs)
    except (ValueError, FileNotFoundError) as err:
        return error(err)
    flip = cfg.eval.flip if args.flip is None else args.flip
    result = evaluator.evaluate(
        embedding_model(model), dataset, (cfg.data.height, cfg.data.width),
        metric=args.metric or cfg.eval.metric, rerank=args.rerank, flip=flip,
        max_rank=cfg.eval.max_rank, protocol=cfg.eval.protocol,
        batch_size=args.batch_size or cfg.data.eval_batch_size, on_bad_image=cfg.data.on_bad_image,
        progress=not args.quiet)
    result.update(checkpoint=checkpoint, dataset=name, data_root=root, rerank=args.rerank, flip=flip)
    print(f"{cfg.model.name} ({checkpoint}) on {name}:")
    print(evaluator.format_table({"result": result}))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    return 0


def _same_folder(a, b) -> bool:
    try:
        return bool(b) and os.path.samefile(a, b)
    except OSError:  # either is missing: the dataset loader reports a missing root clearly
        return False


def _load_dataset(build_dataset, name, root, kwargs):
    """`build_dataset`, except that a finished synthetic set in `root` is read as it is: given
    the run's (or no) generation options, the synthetic loader would regenerate, in place, a set
    made with other options (another seed, camera count, ...) instead of evaluating on it."""
    if name == "synthetic" and root:
        import dataclasses
        import pathlib

        from tfreid.data.synthetic import MARKER_FILE

        if (pathlib.Path(root) / MARKER_FILE).is_file():
            return dataclasses.replace(build_dataset("market1501", root), name="synthetic")
    return build_dataset(name, root, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
