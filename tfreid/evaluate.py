"""`python -m tfreid.evaluate --run RUN_DIR`: re-evaluate a trained run (any checkpoint, any dataset).

Evaluating on another dataset than the one trained on is cross-domain evaluation (e.g. M->D).
Features are extracted in batches and ranked in chunks, so memory stays bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tfreid.cli import HelpFormatter, add_quiet, quiet_tensorflow, run_cli


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
    parser.add_argument("--on-bad-image", choices=("error", "skip"),
                        help="unreadable image files: stop (error) or leave them out (skip) "
                             "(default: the run's data.on_bad_image)")
    parser.add_argument("--output", help="write the metrics JSON here (default: print only)")
    add_quiet(parser)
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    return run_cli(_main, parse_args(argv))


def _main(args) -> int:
    quiet_tensorflow()
    from tfreid.checks import check_int
    from tfreid.data import build_dataset
    from tfreid.data.screen import screen_dataset
    from tfreid.engine import evaluator
    from tfreid.models import embedding_model
    from tfreid.runs import RunDir, write_json

    if args.batch_size is not None:
        check_int("--batch-size", args.batch_size)
    run = RunDir(args.run)
    cfg = run.config()
    name = args.dataset or cfg.data.dataset
    if (args.dataset and args.dataset != cfg.data.dataset) or (
            args.data_root and not _same_folder(args.data_root, cfg.data.root)):
        # another dataset (cross-domain): the run's dataset options describe its own set
        root, kwargs = args.data_root, {}
    else:
        root, kwargs = args.data_root or cfg.data.root, cfg.data.kwargs
    dataset = _load_dataset(build_dataset, name, root, kwargs)
    on_bad_image = args.on_bad_image or cfg.data.on_bad_image
    dataset, skipped = screen_dataset(dataset, on_bad_image, cfg.data.max_bad_fraction,
                                      splits=("query", "gallery"))
    cfg, model, checkpoint = run.load(args.checkpoint)  # after the cheap checks above
    flip = cfg.eval.flip if args.flip is None else args.flip
    result = evaluator.evaluate(
        embedding_model(model), dataset, (cfg.data.height, cfg.data.width),
        metric=args.metric or cfg.eval.metric, rerank=args.rerank, flip=flip,
        max_rank=cfg.eval.max_rank, protocol=cfg.eval.protocol,
        batch_size=args.batch_size or cfg.data.eval_batch_size, on_bad_image=on_bad_image,
        progress=not args.quiet)
    result["num_bad_images"] += sum(len(paths) for paths in skipped.values())
    result.update(checkpoint=checkpoint, dataset=name, data_root=root, rerank=args.rerank, flip=flip)
    print(f"{cfg.model.name} ({checkpoint}) on {name}:")
    print(evaluator.format_table({"result": result}))
    print(json.dumps(result, indent=2))
    if args.output:
        write_json(args.output, result)
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
