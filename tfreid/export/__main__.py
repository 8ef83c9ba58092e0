"""`python -m tfreid.export`: re-export any checkpoint of a training run for deployment.

    python -m tfreid.export --run RUN_DIR [--checkpoint PATH] --format savedmodel|tflite|keras|all
        [--quantize none|float16|dynamic|int8|all ...] [--output saved_models] [--version N]
        [--calibration-images 128]

Writes under `--output` as `tfreid.export.run_export.export_run` lays it out: the SavedModel in
`<output>/<model>/<version>/`, TFLite and `.keras` files in the sibling folders `<model>-tflite/`
and `<model>-keras/`; one version number for all, the next free one by default, never an
existing one. `--quantize` applies to TFLite (repeatable, or `all`); default `none` for
`--format tflite` and all four variants for `--format all`. int8 calibrates on
`--calibration-images` training images of the run's dataset (config.yaml).

Exit status 0 on success, 2 on bad input (message on stderr; `TFREID_DEBUG=1` re-raises).
"""

from __future__ import annotations

import argparse
import sys

from tfreid.cli import run_cli

FORMATS = ("savedmodel", "tflite", "keras", "all")


def parse_args(argv=None) -> argparse.Namespace:
    from tfreid.export.tflite import QUANTIZATIONS

    parser = argparse.ArgumentParser(prog="python -m tfreid.export", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument("--checkpoint", help="checkpoint prefix (default: the run's latest)")
    parser.add_argument("--format", required=True, help="|".join(FORMATS))
    parser.add_argument("--quantize", nargs="+", default=None,
                        help=f"TFLite variants: {'|'.join(QUANTIZATIONS)}|all")
    parser.add_argument("--output", default="saved_models", help="export root (default %(default)s)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: next free)")
    parser.add_argument("--calibration-images", type=int, default=128,
                        help="training images for int8 calibration (default %(default)s)")
    return parser.parse_args(argv)


def _resolve(args) -> tuple[list[str], list[str]]:
    from tfreid.checks import check_int
    from tfreid.export.tflite import QUANTIZATIONS

    if args.format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {args.format!r}")
    formats = ["savedmodel", "tflite", "keras"] if args.format == "all" else [args.format]
    quantize = args.quantize or (["all"] if args.format == "all" else ["none"])
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
    from tfreid.export.run_export import export_run

    formats, quantize = _resolve(args)
    written = export_run(args.run, formats, quantize, args.output, args.version,
                         args.checkpoint, args.calibration_images)
    for label, path in written.items():
        print(f"{label:>16}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
