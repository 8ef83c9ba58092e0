"""`python -m tfreid.evaluate --run RUN_DIR`: re-evaluate a trained run (any checkpoint, any dataset).

Evaluating on another dataset than the one trained on is cross-domain evaluation (e.g. M->D).
Features are extracted in batches and ranked in chunks, so memory stays bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tfreid.evaluate",
                                     description="Evaluate a trained tfreid run.")
    parser.add_argument("--run", required=True, help="run directory from python -m tfreid.train")
    parser.add_argument("--checkpoint", help="checkpoint prefix (default: the latest)")
    parser.add_argument("--dataset", help="dataset to evaluate on (default: the run's)")
    parser.add_argument("--data-root", help="dataset folder")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    parser.add_argument("--flip", action="store_true", help="average image + mirror features")
    parser.add_argument("--metric", choices=("euclidean", "sqeuclidean", "cosine"))
    parser.add_argument("--batch-size", type=int, help="images per forward pass")
    parser.add_argument("--output", help="write the metrics JSON here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tfreid.data import build_dataset
    from tfreid.engine import evaluator
    from tfreid.engine.run_dir import load_run
    from tfreid.models import embedding_model

    try:
        cfg, model, checkpoint = load_run(args.run, args.checkpoint)
        name = args.dataset or cfg.data.dataset
        if args.dataset and args.dataset != cfg.data.dataset:
            root, kwargs = args.data_root, {}
        else:
            root, kwargs = args.data_root or cfg.data.root, cfg.data.kwargs
        dataset = build_dataset(name, root, **kwargs)
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("TFREID_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = evaluator.evaluate(
        embedding_model(model), dataset, (cfg.data.height, cfg.data.width),
        metric=args.metric or cfg.eval.metric, rerank=args.rerank, flip=args.flip,
        max_rank=cfg.eval.max_rank, protocol=cfg.eval.protocol,
        batch_size=args.batch_size or cfg.data.eval_batch_size, on_bad_image=cfg.data.on_bad_image)
    result.update(checkpoint=checkpoint, dataset=name, rerank=args.rerank, flip=args.flip)
    print(f"{cfg.model.name} ({checkpoint}) on {name}:")
    print(evaluator.format_table({"result": result}))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
