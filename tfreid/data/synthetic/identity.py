"""Stable identity attributes of synthetic people.

An identity is fixed by (seed, pid) alone, so every image of it, rendered in any process and any
order, shows the same person. Colours come from small palettes on purpose: many identities share
upper and lower clothing colours and differ only in pattern, hair, shoes, bag or build — the hard
negatives that make colour matching insufficient.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Ordered from common to rare: `palette_size` keeps the first N (dark clothes dominate, as in
# real street scenes). Weights follow the same order.
UPPER_PALETTE = np.array([
    (32, 32, 36), (225, 225, 218), (125, 125, 128), (36, 46, 96), (172, 36, 38), (52, 92, 172),
    (52, 122, 62), (202, 182, 140), (112, 72, 42), (222, 190, 52), (222, 132, 162),
    (112, 62, 142), (230, 122, 42), (42, 132, 132), (152, 142, 92), (42, 72, 48),
], dtype=np.float32)
LOWER_PALETTE = np.array([
    (30, 30, 34), (38, 50, 92), (72, 96, 142), (110, 110, 114), (178, 162, 122),
    (96, 66, 42), (220, 220, 214), (46, 72, 50), (130, 40, 40), (150, 150, 160),
    (60, 60, 70), (90, 110, 80), (200, 190, 170), (80, 50, 80), (140, 120, 90), (20, 40, 60),
], dtype=np.float32)
HAIR_PALETTE = np.array([(20, 16, 14), (60, 38, 24), (104, 70, 40), (196, 164, 100),
                         (150, 150, 150), (140, 60, 30)], dtype=np.float32)
HAIR_WEIGHTS = np.array([0.4, 0.25, 0.15, 0.1, 0.05, 0.05])
SKIN_PALETTE = np.array([(240, 200, 170), (222, 176, 140), (190, 140, 100), (140, 96, 64),
                         (96, 64, 44)], dtype=np.float32)
SHOE_PALETTE = np.array([(24, 24, 24), (230, 230, 230), (100, 64, 36), (120, 120, 124),
                         (180, 40, 40), (50, 80, 160)], dtype=np.float32)
SHOE_WEIGHTS = np.array([0.35, 0.25, 0.15, 0.1, 0.08, 0.07])
BAG_PALETTE = np.array([(28, 28, 30), (110, 70, 40), (120, 120, 126), (170, 40, 44),
                        (50, 80, 160), (200, 180, 140)], dtype=np.float32)

UPPER_PATTERNS = ("plain", "stripes", "checks", "logo")
LOWER_TYPES = ("trousers", "shorts", "skirt")
BAGS = ("none", "backpack", "handbag")
LOGO_SHAPES = ("circle", "square", "triangle")


@dataclasses.dataclass(frozen=True)
class Identity:
    """Appearance of one person; colours are RGB float32 in 0-255.

    `bag_side` is the person's side carrying a handbag (+1 right, -1 left): a handbag is only
    seen when that side faces the camera, a backpack only from the back or the side, a logo only
    from the front.
    """

    upper: np.ndarray
    upper_pattern: str
    upper_second: np.ndarray
    stripe_period: float
    long_sleeves: bool
    logo_shape: str
    lower: np.ndarray
    lower_type: str
    lower_checks: bool
    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    hat: np.ndarray | None
    shoes: np.ndarray
    bag: str
    bag_colour: np.ndarray
    bag_side: int
    build: float
    leg_ratio: float
    height: float


def identity_rng(seed: int, pid: int) -> np.random.Generator:
    """The generator that fixes identity `pid` (domain tag 2 keeps it apart from image streams)."""
    return np.random.default_rng(np.random.SeedSequence([seed, 2, pid]))


def _pick(rng, palette, n=None, weights=None):
    n = len(palette) if n is None else n
    if weights is None:
        # Geometric weights over the palette order: common colours come first.
        weights = 0.85 ** np.arange(n)
    weights = np.asarray(weights[:n], dtype=np.float64)
    return int(rng.choice(n, p=weights / weights.sum()))


def sample_identity(rng: np.random.Generator, palette_size: int, colour_jitter: float) -> Identity:
    """Draw one identity.

    Args:
        rng: the identity's own generator (`identity_rng`) or, for distractors/junk, the
            image's generator.
        palette_size: number of upper/lower clothing colours to draw from.
        colour_jitter: std of the per-identity RGB offset around the palette colour.

    Returns:
        An `Identity`.
    """
    def jitter(colour):
        return np.clip(colour + rng.normal(0.0, colour_jitter, 3), 0, 255).astype(np.float32)

    upper_i = _pick(rng, UPPER_PALETTE, palette_size)
    second_i = (upper_i + 1 + rng.integers(0, len(UPPER_PALETTE) - 1)) % len(UPPER_PALETTE)
    upper_pattern = UPPER_PATTERNS[_pick(rng, UPPER_PATTERNS, weights=[0.45, 0.2, 0.15, 0.2])]
    lower_type = LOWER_TYPES[_pick(rng, LOWER_TYPES, weights=[0.7, 0.18, 0.12])]
    bag = BAGS[_pick(rng, BAGS, weights=[0.45, 0.3, 0.25])]
    hat = None
    if rng.random() < 0.12:
        hat = jitter(BAG_PALETTE[rng.integers(0, len(BAG_PALETTE))])
    return Identity(
        upper=jitter(UPPER_PALETTE[upper_i]),
        upper_pattern=upper_pattern,
        upper_second=jitter(UPPER_PALETTE[second_i]),
        stripe_period=float(rng.uniform(0.035, 0.07)),
        long_sleeves=bool(rng.random() < 0.6),
        logo_shape=LOGO_SHAPES[rng.integers(0, len(LOGO_SHAPES))],
        lower=jitter(LOWER_PALETTE[_pick(rng, LOWER_PALETTE, palette_size)]),
        lower_type=lower_type,
        lower_checks=bool(rng.random() < 0.12),
        skin=jitter(SKIN_PALETTE[rng.integers(0, len(SKIN_PALETTE))]),
        hair=jitter(HAIR_PALETTE[_pick(rng, HAIR_PALETTE, weights=HAIR_WEIGHTS)]),
        long_hair=bool(rng.random() < 0.35),
        hat=hat,
        shoes=jitter(SHOE_PALETTE[_pick(rng, SHOE_PALETTE, weights=SHOE_WEIGHTS)]),
        bag=bag,
        bag_colour=jitter(BAG_PALETTE[rng.integers(0, len(BAG_PALETTE))]),
        bag_side=int(rng.choice([-1, 1])),
        build=float(rng.uniform(0.8, 1.25)),
        leg_ratio=float(rng.uniform(0.44, 0.52)),
        height=float(rng.uniform(0.92, 1.06)),
    )
