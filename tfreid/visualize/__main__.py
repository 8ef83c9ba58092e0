"""`python -m tfreid.visualize {ranks,attention,curves} --run RUN_DIR ...`: pictures of a run.

    ranks      a PNG per query: the query, then its top-k gallery images framed green (same
               identity) / red (another identity) with their distances, ranked exactly as the
               evaluation ranks them; plus ranks_grid.png with all of them
    attention  per image: the input, every attention map as a heat-map overlay and every
               hard-attention theta as region boxes (HA-CNN: soft_1..3, theta_1..3)
    curves     loss terms, learning rate, rank-1 and mAP over the training steps (one PNG)

Output goes to RUN_DIR/visualize/ unless --output is given. Exit status 0 on success, 2 on bad
input (message on stderr; `TFREID_DEBUG=1` re-raises).
"""

from __future__ import annotations

import argparse
import sys

from tfreid.cli import HelpFormatter, add_quiet, quiet_tensorflow, run_cli


def _cell_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x64, got {text!r}") from None
    if not (8 <= h <= 1024 and 8 <= w <= 1024):
        raise argparse.ArgumentTypeError(f"cell size {text!r} out of range 8..1024")
    return h, w


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfreid.visualize", formatter_class=HelpFormatter,
                                     description="Pictures of a trained tfreid run.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.formatter_class = HelpFormatter
        p.add_argument("--run", required=True, help="run directory from python -m tfreid.train")
        p.add_argument("--output", help="output folder (file for curves) (default: "
                                        "RUN/visualize/)")
        add_quiet(p)

    ranks = sub.add_parser("ranks", help="ranked lists of queries")
    common(ranks)
    ranks.add_argument("--checkpoint", help="checkpoint prefix (default: the latest)")
    ranks.add_argument("--dataset", help="dataset to rank (default: the run's)")
    ranks.add_argument("--data-root", help="dataset folder (default: the run's)")
    ranks.add_argument("--num-queries", type=_positive, default=20,
                       help="queries shown, spread over the query list (default %(default)s)")
    ranks.add_argument("--topk", type=_positive, default=10,
                       help="gallery images per query (default %(default)s)")
    ranks.add_argument("--cell-size", type=_cell_size, default=(128, 64), metavar="HxW",
                       help="displayed image size (default 128x64)")
    ranks.add_argument("--batch-size", type=_positive,
                       help="images per forward pass (default: the run's data.eval_batch_size)")

    attention = sub.add_parser("attention", help="attention maps and hard-attention regions")
    common(attention)
    attention.add_argument("--checkpoint", help="checkpoint prefix (default: the latest)")
    attention.add_argument("--images", nargs="+", metavar="PATH",
                           help="image files or folders (default: query images of the run's "
                                "dataset)")
    attention.add_argument("--num-images", type=_positive, default=8,
                           help="dataset images when --images is not given (default %(default)s)")
    attention.add_argument("--zoom", type=_positive,
                           help="integer display enlargement (default: panels >= 128 px wide)")

    curves = sub.add_parser("curves", help="training curves from the run's logs")
    common(curves)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run(args) -> list:
    """Executes one subcommand; returns the paths written."""
    import pathlib

    out = pathlib.Path(args.output) if args.output else None
    if args.command == "curves":
        from tfreid.visualize.curves import plot_curves

        return [plot_curves(args.run, out)]
    if args.command == "attention":
        from tfreid.visualize.attention import write_attention

        return write_attention(args.run, args.images, out, num_images=args.num_images,
                               zoom=args.zoom, checkpoint=args.checkpoint)
    from tfreid.visualize.ranks import compute_ranked_lists, write_ranked_lists

    lists = compute_ranked_lists(args.run, dataset=args.dataset, data_root=args.data_root,
                                 checkpoint=args.checkpoint, num_queries=args.num_queries,
                                 topk=args.topk, batch_size=args.batch_size,
                                 progress=not args.quiet)
    return write_ranked_lists(lists, out or pathlib.Path(args.run) / "visualize" / "ranks",
                              args.cell_size)


def main(argv=None) -> int:
    return run_cli(_main, parse_args(argv))


def _main(args) -> int:
    quiet_tensorflow()
    for path in run(args):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
