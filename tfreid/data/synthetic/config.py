"""Parameters of the synthetic ReID generator: split sizes and the difficulty knobs.

Every knob is a float interpolated between an "easy" and a "hard" end by one difficulty level
in [0, 1] (`Difficulty.from_level`), and any knob can be overridden on its own, so the set can be
tuned after seeing how fast a model learns it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

GENERATOR_VERSION = 1

# knob -> (value at level 0, value at level 1, meaning). Ranges chosen by looking at the
# contact sheet and at the two raw-colour baselines of tools/synthetic_difficulty.py.
KNOBS: dict[str, tuple[float, float, str]] = {
    "palette_size": (16.0, 5.0, "clothing colours in use (fewer -> more look-alike identities)"),
    "id_colour_jitter": (14.0, 4.0, "per-identity RGB jitter around the palette colour (0-255)"),
    "cast": (0.03, 0.30, "std of the per-camera log gain of each colour channel"),
    "brightness": (0.10, 0.55, "half range of the per-camera log brightness"),
    "image_light": (0.03, 0.22, "std of the per-image log brightness (clouds, shadows)"),
    "desaturate": (0.0, 0.55, "max per-camera loss of saturation (0 = none, 1 = grey)"),
    "blur": (0.15, 1.1, "max per-camera Gaussian blur sigma in pixels"),
    "downscale": (0.0, 1.6, "max per-camera extra down-scaling factor (1 + x) before upscaling"),
    "noise": (1.0, 9.0, "max per-camera sensor noise std (0-255 scale)"),
    "shift": (0.02, 0.13, "std of the person-centre shift in the crop (fraction of crop size)"),
    "scale_jitter": (0.03, 0.14, "std of the log person height relative to the crop"),
    "cutoff": (0.0, 0.30, "probability of a bad box that cuts part of the person off"),
    "occlusion": (0.0, 0.45, "probability of an occluder (pole, car/box) in front"),
    "clutter": (0.05, 0.75, "probability of other people's fragments in the crop"),
    "texture": (0.10, 1.0, "contrast of the background textures"),
    "scene_variety": (0.3, 1.0, "spread of background colours around mid-grey"),
    "view_bias": (0.2, 0.7, "how strongly each camera prefers its dominant view"),
}
INT_KNOBS = {"palette_size"}
# Calibrated on the default set with tools/synthetic_difficulty.py (seed 0, 60 test ids):
# level 0.0 -> raw-pixel mAP 0.41; 0.15 -> 0.21; 0.3 -> 0.09; 0.5 -> 0.05. "medium" keeps the
# raw-pixel baseline near 0.15-0.2 so that a CNN can learn the set in minutes on a CPU.
PRESETS = {"easy": 0.05, "medium": 0.2, "hard": 0.4}


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """Resolved difficulty knobs (see `KNOBS` for their meaning and ranges).

    Example:
        >>> d = Difficulty.from_level("medium", occlusion=0.0)
        >>> d.occlusion, d.palette_size
        (0.0, 14)
    """

    level: float = 0.2
    knobs: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_level(cls, level: float | str = "medium", **overrides: float) -> "Difficulty":
        """Interpolate every knob at `level` (a float in [0, 1] or a preset name).

        Args:
            level: 0 = easiest, 1 = hardest, or one of "easy", "medium", "hard".
            **overrides: explicit knob values that replace the interpolated ones.

        Returns:
            A frozen `Difficulty`.
        """
        if isinstance(level, str):
            if level in PRESETS:
                level = PRESETS[level]
            else:
                try:
                    level = float(level)
                except ValueError:
                    raise ValueError(
                        f"difficulty must be a float in [0, 1] or one of {sorted(PRESETS)}; "
                        f"got {level!r}"
                    ) from None
        level = float(level)
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"difficulty must lie in [0, 1]; got {level}")
        unknown = sorted(set(overrides) - set(KNOBS))
        if unknown:
            raise ValueError(
                f"unknown difficulty knob(s) {unknown}; available knobs: {sorted(KNOBS)}"
            )
        values = {}
        for name, (easy, hard, _) in KNOBS.items():
            value = float(overrides[name]) if name in overrides else easy + level * (hard - easy)
            if value < 0:
                raise ValueError(f"difficulty knob {name} must be >= 0; got {value}")
            values[name] = float(round(value)) if name in INT_KNOBS else round(value, 6)
        if not 2 <= values["palette_size"] <= len_palette():
            raise ValueError(
                f"difficulty knob palette_size must be in [2, {len_palette()}]; "
                f"got {values['palette_size']}"
            )
        return cls(level=level, knobs=tuple(sorted(values.items())))

    def __getattr__(self, name: str):
        # Only reached for names that are not dataclass fields, i.e. the knobs.
        for key, value in object.__getattribute__(self, "knobs"):
            if key == name:
                return int(value) if key in INT_KNOBS else value
        raise AttributeError(name)

    def as_dict(self) -> dict[str, float]:
        return dict(self.knobs)


def len_palette() -> int:
    from tfreid.data.synthetic.identity import UPPER_PALETTE

    return len(UPPER_PALETTE)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Defaults give the ~5k-image default set (200 + 100 ids, 6 cameras).

    Args:
        train_ids: identities in `bounding_box_train/`.
        test_ids: identities in `query/` + `bounding_box_test/` (disjoint from train ids).
        cameras: number of cameras (2..9: Market file names hold one camera digit).
        images_per_id: train images per train id, and gallery images per test id (queries come
            on top: one per (test id, camera) for a random subset of the id's cameras).
        distractors: `0000_*` gallery images of people outside the id set.
        junk: `-1_*` gallery images (bad detections; loaders drop them).
        seed: master seed; every image has its own generator derived from (seed, pid, cam, index).
        difficulty: resolved `Difficulty` knobs.
    """

    train_ids: int = 200
    test_ids: int = 100
    cameras: int = 6
    images_per_id: int = 14
    distractors: int = 300
    junk: int = 150
    seed: int = 0
    difficulty: Difficulty = dataclasses.field(default_factory=Difficulty.from_level)

    def __post_init__(self):
        def check(name, lo, hi, why):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}] ({why}); got {value!r}")

        check("train_ids", 1, 9998, "4-digit Market ids")
        check("test_ids", 1, 9998, "4-digit Market ids")
        check("cameras", 2, 9, "cross-camera queries need >= 2 cameras; names hold one digit")
        check("images_per_id", 2, 500, "each test id needs gallery images in 2 cameras")
        check("distractors", 0, 100000, "count")
        check("junk", 0, 100000, "count")
        check("seed", 0, 2**32 - 1, "a non-negative 32-bit seed")
        if self.train_ids + self.test_ids > 9999:
            raise ValueError(
                f"train_ids + test_ids must be <= 9999 (4-digit ids); "
                f"got {self.train_ids} + {self.test_ids}"
            )
        if not isinstance(self.difficulty, Difficulty):
            raise ValueError(f"difficulty must be a Difficulty; got {type(self.difficulty)}")

    def to_dict(self) -> dict:
        """JSON-friendly parameters (what `synthetic.json` stores and the cache hash covers)."""
        out = dataclasses.asdict(self)
        out["difficulty"] = {"level": self.difficulty.level, **self.difficulty.as_dict()}
        out["generator_version"] = GENERATOR_VERSION
        return out

    @classmethod
    def from_dict(cls, params: dict) -> "SyntheticConfig":
        params = dict(params)
        params.pop("generator_version", None)
        diff = dict(params.pop("difficulty", {}))
        level = diff.pop("level", "medium")
        return cls(**params, difficulty=Difficulty.from_level(level, **diff))

    def short_hash(self) -> str:
        """10 hex digits identifying the generated content (used by the dataset cache)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]
