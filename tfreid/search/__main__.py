"""`python -m tfreid.search {index,query}`: index a folder of person crops, then query it.

    index   embed every image of a folder (recursive) or list file with a training run or an
            export and write an index folder: embeddings, image paths, optional pid/camid,
            the model's identity and preprocessing
    query   embed query images with the index's model, print each query's top-k gallery
            images with distances, and with --out write results.json and ranked-list pictures

Exit status 0 on success, 2 on bad input (one `error:` line on stderr; `TFREID_DEBUG=1`
re-raises). `--help` on either sub-command lists its flags.
"""

from __future__ import annotations

import argparse
import os
import sys

from tfreid.cli import add_quiet, quiet_tensorflow

DATASETS = ("market1501", "dukemtmcreid", "cuhk03", "synthetic", "msmt17")  # images.NAME_PATTERNS


class _Parser(argparse.ArgumentParser):
    """Bad arguments give one `error:` line and exit status 2 (no usage block)."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _integer(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (sub-commands `index` and `query`)."""
    parser = _Parser(prog="python -m tfreid.search", description=__doc__.split("\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="Details: docs/search.md")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p):
        p.add_argument("--batch-size", type=_integer(1), default=64,
                       help="images per forward pass (default %(default)s)")
        p.add_argument("--on-bad-image", choices=("error", "skip"), default="error",
                       help="an unreadable image stops the command naming it (error), or is "
                            "left out with a warning listing it (skip) (default %(default)s)")
        add_quiet(p)

    index = sub.add_parser("index", help="embed a folder of images into an index",
                           description="Embed every image of --images and write an index folder.")
    index.add_argument("--model", required=True, metavar="RUN_DIR|EXPORT",
                       help="a training run directory, a SavedModel version folder, or a .tflite "
                            "/ .keras export (required)")
    index.add_argument("--images", required=True, metavar="DIR|LIST",
                       help="folder of images (searched recursively) or text file with one "
                            "image path per line, relative to its folder (required)")
    index.add_argument("--out", default="gallery.index", metavar="INDEX",
                       help="index folder to write (default %(default)s)")
    index.add_argument("--dataset", choices=DATASETS, default=None,
                       help="parse pid and camera from the file names as this dataset names "
                            "them, e.g. market1501: 0002_c1s1_000451_03.jpg (default: none)")
    index.add_argument("--overwrite", action="store_true",
                       help="replace an existing --out (default: refuse)")
    common(index)

    query = sub.add_parser(
        "query", help="search an index with query images",
        description="Print the top-k gallery images of each query; with --out also write "
                    "results.json and one ranked-list PNG per query (+ ranks_grid.png).")
    query.add_argument("--index", required=True, help="index folder from the index command "
                                                      "(required)")
    query.add_argument("--images", required=True, nargs="+", metavar="Q",
                       help="query image files, folders or list files (required)")
    query.add_argument("--model", metavar="RUN_DIR|EXPORT",
                       help="model to embed the queries with; must be the index's network, "
                            "possibly in another format (default: the model the index records)")
    query.add_argument("--topk", type=_integer(1), default=10,
                       help="results per query (default %(default)s)")
    query.add_argument("--out", metavar="DIR",
                       help="write results.json and the pictures here (default: print only)")
    mode = query.add_mutually_exclusive_group()
    mode.add_argument("--exact", action="store_true",
                      help="exact search (the default)")
    mode.add_argument("--approx", action="store_true",
                      help="approximate search with a faiss IVF-Flat index (needs the 'search' "
                           "extra), built on first use and cached in the index folder; prints "
                           "its recall@k against exact search on --recall-sample queries. For "
                           "galleries too large to scan per query (default: off)")
    query.add_argument("--backend", choices=("numpy", "faiss"), default=None,
                       help="exact search engine: numpy (chunked, bounded memory) or a faiss "
                            "flat index (same results; needs the 'search' extra) (default: numpy)")
    query.add_argument("--nlist", type=_integer(1), default=None,
                       help="--approx: inverted lists (default: sqrt(gallery size))")
    query.add_argument("--nprobe", type=_integer(1), default=None,
                       help="--approx: lists visited per query; more is slower and more "
                            "accurate (default: nlist/16)")
    query.add_argument("--recall-sample", type=_integer(0), default=100,
                       help="--approx: queries also searched exactly to measure recall@k; 0 "
                            "skips (default %(default)s)")
    query.add_argument("--rerank", action="store_true",
                       help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) of each query's "
                            "--rerank-depth nearest items. Needs the gallery-gallery distances "
                            "of that shortlist: depth^2 distances and depth embedding reads per "
                            "query (tens of ms each at depth 100), on top of the search; it "
                            "re-orders the shortlist only (default: off)")
    query.add_argument("--rerank-depth", type=_integer(1), default=100,
                       help="--rerank: shortlist length per query (default %(default)s)")
    common(query)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "query" and args.approx and args.backend == "numpy":
        parser.error("argument --backend: numpy is exact only; --approx uses faiss (drop "
                     "--backend)")
    return args


def run(args) -> int:
    """Execute one parsed sub-command; output on stdout, warnings on stderr."""
    from tfreid.search.index import GalleryIndex, build_index

    progress = not args.quiet
    if args.command == "index":
        quiet_tensorflow()
        index = build_index(args.model, args.images, args.out, dataset=args.dataset,
                            batch_size=args.batch_size, on_bad_image=args.on_bad_image,
                            overwrite=args.overwrite, progress=progress)
        if progress:
            print(f"indexed {len(index):,} images ({index.meta['dim']}-D, {index.metric}) with "
                  f"{index.meta['model']['name']} {index.meta['model']['version']}")
        print(index.path)
        return 0
    index = GalleryIndex.load(args.index)  # a bad --index fails before TensorFlow loads
    quiet_tensorflow()
    result = index.query(args.images, args.topk, model=args.model, backend=args.backend,
                         approx=args.approx, rerank=args.rerank, rerank_depth=args.rerank_depth,
                         nlist=args.nlist, nprobe=args.nprobe, recall_sample=args.recall_sample,
                         batch_size=args.batch_size, on_bad_image=args.on_bad_image,
                         progress=progress)
    print(result.format())
    if args.out:
        written = result.write(args.out)
        if progress:
            print(f"wrote {written[0]} and {len(written) - 1} picture(s) in {args.out}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (ValueError, ImportError, OSError) as err:
        if os.environ.get("TFREID_DEBUG"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
