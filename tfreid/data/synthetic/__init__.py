"""Built-in synthetic person ReID dataset in the exact Market-1501 format.

`python -m tfreid.data.synthetic --out DIR` (see `__main__`) or `generate(DIR, SyntheticConfig())`
renders 128x64 crops of people with stable identity attributes (clothing colours and patterns,
hair, skin, shoes, bags, build), seen by cameras that differ in illumination, colour cast, blur,
noise, resolution and viewpoint, in misaligned detector-like boxes with clutter and occluders.
Difficulty is one level in [0, 1] plus per-knob overrides (`Difficulty`, `KNOBS`).

Modules: `config` (parameters), `identity`, `cameras`, `person` (body rendering), `scene`
(one crop), `layout` (splits and file names), `generate` (writing, process pool).

Example:
    >>> from tfreid.data.synthetic import SyntheticConfig, Difficulty, generate
    >>> cfg = SyntheticConfig(train_ids=6, test_ids=4, cameras=3,
    ...                       difficulty=Difficulty.from_level("hard", occlusion=0.2))
    >>> generate("/tmp/syn", cfg, workers=1)  # doctest: +SKIP
"""

from tfreid.data.synthetic.config import KNOBS, PRESETS, Difficulty, SyntheticConfig
from tfreid.data.synthetic.generate import (
    BOXES_FILE,
    MARKER_FILE,
    PARAMS_FILE,
    generate,
    is_complete,
    is_synthetic_set,
)
from tfreid.data.synthetic.layout import NAME_PATTERN, plan

__all__ = [
    "BOXES_FILE", "KNOBS", "MARKER_FILE", "NAME_PATTERN", "PARAMS_FILE", "PRESETS", "Difficulty",
    "SyntheticConfig", "generate", "is_complete", "is_synthetic_set", "plan",
]
