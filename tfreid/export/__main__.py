"""`python -m tfreid.export`: export a training run for deployment, or publish it to a serving root.

    python -m tfreid.export --run RUN [--to ROOT] [--format savedmodel|tflite|keras|onnx|all]
        [--quantize none|float16|dynamic|int8|all ...] [--version N] [--checkpoint PATH]
        [--calibration-images 128] [--quiet]

Without `--to`, writes into the run's own `export/` folder (where training put its SavedModel).
With `--to ROOT` it publishes: `ROOT/<model>/<N+1>/` for the SavedModel (the TF Serving layout),
TFLite, `.keras` and `.onnx` files in the sibling folders `<model>-tflite/`, `<model>-keras/` and
`<model>-onnx/`; one version number for all, the next free one by default, never an existing
one. Each version folder is written under a temporary name and renamed into place, so a TF
Serving instance watching ROOT never sees a partial model. `--format` takes a comma-separated
list (`savedmodel,onnx`); `all` is SavedModel, TFLite and `.keras`; `onnx` needs
`pip install 'tfreid[onnx]'` (tf2onnx). `--quantize` applies to TFLite (repeatable, or `all`);
default `none` for `--format tflite` and all four variants for `--format all`. int8 calibrates
on `--calibration-images` training images of the run's dataset (config.yaml).

Exit status 0 on success, 2 on bad input (one `error:` line on stderr; `TFREID_DEBUG=1`
re-raises). `--help` does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import sys

from tfreid.cli import HelpFormatter, add_quiet, quiet_tensorflow, run_cli
from tfreid.export import QUANTIZATIONS

FORMATS = ("savedmodel", "tflite", "keras", "onnx", "all")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfreid.export", formatter_class=HelpFormatter,
                                     description=__doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument("--to", metavar="ROOT",
                        help="serving root to publish into as version N+1 (default: the run's "
                             "own export/ folder)")
    parser.add_argument("--output", dest="to", help=argparse.SUPPRESS)  # the old name of --to
    parser.add_argument("--format", default="savedmodel", help="|".join(FORMATS))
    parser.add_argument("--quantize", nargs="+", default=None,
                        help=f"TFLite variants: {'|'.join(QUANTIZATIONS)}|all (default: none "
                             "for --format tflite, all for --format all)")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: the next free one)")
    parser.add_argument("--checkpoint", help="checkpoint prefix (default: the run's latest)")
    parser.add_argument("--calibration-images", type=int, default=128,
                        help="training images for int8 calibration")
    add_quiet(parser)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _resolve(args) -> tuple[list[str], list[str]]:
    from tfreid.checks import check_int

    requested = [f.strip() for f in args.format.split(",")]
    bad = [f for f in requested if f not in FORMATS]
    if bad:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)} (or a comma-separated "
                         f"list); got {bad[0]!r}")
    formats = list(dict.fromkeys(f for r in requested for f in (
        ["savedmodel", "tflite", "keras"] if r == "all" else [r])))
    if "onnx" in formats:
        from tfreid.export.onnx_export import require_onnx

        require_onnx()  # before any export is written
    quantize = args.quantize or (["all"] if "all" in requested else ["none"])
    bad = [q for q in quantize if q not in (*QUANTIZATIONS, "all")]
    if bad:
        raise ValueError(f"--quantize must be among {', '.join(QUANTIZATIONS)}, all; got {bad[0]!r}")
    if args.quantize and "tflite" not in formats:
        raise ValueError(f"--quantize applies to TFLite only; got --format {args.format}")
    quantize = list(QUANTIZATIONS) if "all" in quantize else list(dict.fromkeys(quantize))
    check_int("--version", args.version, allow_none=True)
    if {"int8", "dynamic"} & set(quantize) and "tflite" in formats \
            and not 1 <= args.calibration_images <= 10000:
        raise ValueError(f"--calibration-images must be in 1..10000, got {args.calibration_images}")
    return formats, quantize


def main(argv=None) -> int:
    return run_cli(_main, parse_args(argv))


def _main(args) -> int:
    formats, quantize = _resolve(args)
    quiet_tensorflow()
    from tfreid.export.run_export import export_run

    written = export_run(args.run, formats, quantize, args.to, args.version,
                         args.checkpoint, args.calibration_images, verbose=not args.quiet)
    for label, path in written.items():
        print(f"{label:>16}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
