"""`python -m tfreid.data.synthetic --out DIR [...]`: write a synthetic Market-1501-format set.

Example:
    python -m tfreid.data.synthetic --out /tmp/syn --difficulty 0.6 --knob occlusion=0.3
"""

from __future__ import annotations

import argparse
import sys

from tfreid.cli import HelpFormatter, add_quiet
from tfreid.data.synthetic.config import KNOBS, PRESETS, Difficulty, SyntheticConfig
from tfreid.data.synthetic.generate import check_out, generate


def build_parser() -> argparse.ArgumentParser:
    defaults = SyntheticConfig.__dataclass_fields__
    p = argparse.ArgumentParser(
        prog="python -m tfreid.data.synthetic", formatter_class=HelpFormatter,
        description="Generate a synthetic person ReID dataset in the Market-1501 format.",
        epilog="difficulty knobs (level 0 -> 1): " + "; ".join(
            f"{k} {lo:g}->{hi:g} ({why})" for k, (lo, hi, why) in KNOBS.items()),
    )
    p.add_argument("--out", required=True, help="output folder")
    for name in ("train_ids", "test_ids", "cameras", "images_per_id", "distractors", "junk",
                 "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=defaults[name].default,
                       help=name.replace("_", " "))
    p.add_argument("--difficulty", default="medium",
                   help=f"a level in [0, 1] or one of {', '.join(PRESETS)} (default medium)")
    p.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                   help="override one difficulty knob (repeatable) (default: the level's)")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: CPUs)")
    p.add_argument("--overwrite", action="store_true",
                   help="allow writing into a non-empty folder that is not a synthetic set")
    add_quiet(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        knobs = {}
        for item in args.knob:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--knob expects NAME=VALUE; got {item!r}")
            try:
                knobs[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"--knob {name}: value must be a number; got {value!r}") from None
        config = SyntheticConfig(
            train_ids=args.train_ids, test_ids=args.test_ids, cameras=args.cameras,
            images_per_id=args.images_per_id, distractors=args.distractors, junk=args.junk,
            seed=args.seed, difficulty=Difficulty.from_level(args.difficulty, **knobs))
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1; got {args.workers}")
        check_out(args.out, args.overwrite)
    except ValueError as err:
        parser.error(str(err))
    # Errors past this point are bugs or I/O problems: let them show their traceback.
    generate(args.out, config, workers=args.workers, overwrite=args.overwrite,
             verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
