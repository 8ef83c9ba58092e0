"""One detector crop: cluttered background, misaligned person box, other people, occluders.

`render_image` is the whole pipeline for one file. All randomness comes from the image's own
generator (derived from (seed, pid, cam, index)), identities and cameras from theirs, so an image
is the same whatever order or process renders it.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from tfreid.data.synthetic.cameras import VIEWS, apply_camera, camera_rng, sample_camera
from tfreid.data.synthetic.config import Difficulty
from tfreid.data.synthetic.identity import identity_rng, sample_identity
from tfreid.data.synthetic.person import colour_person, draw_labels

HEIGHT, WIDTH = 128, 64
SUPERSAMPLE = 2


def image_rng(seed: int, pid: int, cam: int, index: int) -> np.random.Generator:
    """The generator of one image; pid + 1 keeps junk (-1) non-negative (domain tag 1)."""
    return np.random.default_rng(np.random.SeedSequence([seed, 1, pid + 1, cam, index]))


@functools.lru_cache(maxsize=None)
def _camera(seed: int, cam: int, difficulty: Difficulty):
    return sample_camera(camera_rng(seed, cam), difficulty)


@functools.lru_cache(maxsize=20000)
def _identity(seed: int, pid: int, difficulty: Difficulty):
    return sample_identity(identity_rng(seed, pid), difficulty.palette_size,
                           difficulty.id_colour_jitter)


def _smooth_noise(rng, h, w, cells):
    small = rng.uniform(-1, 1, (cells * 2, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def render_background(rng: np.random.Generator, cam, texture: float,
                      variety: float) -> np.ndarray:
    """A street scene (wall + floor + texture) leaning towards the camera's scene, float (H, W, 3).

    Half of each surface colour comes from the camera's scene and half is drawn per image, and
    the layout family follows the camera's only 60% of the time: the background hints at the
    camera without being a fixed signature that colour features could lock on to. `variety`
    scales how far surface colours stray from mid-grey.
    """
    h, w = HEIGHT, WIDTH
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    horizon = (cam.horizon + rng.normal(0, 0.08)) * h
    own = 128 + variety * (rng.uniform(-75, 75, (4, 1)) + rng.normal(0, 18, (4, 3)))
    scene = (0.5 * (128 + variety * (cam.scene - 128)) + 0.5 * own).astype(np.float32)
    kind = cam.scene_kind if rng.random() < 0.6 else int(rng.integers(0, 3))
    wall, floor = scene[0], scene[2]
    ramp = (rows / h)[..., None]
    img = np.where((rows >= horizon)[..., None], floor * (0.8 + 0.3 * ramp), wall * (1.1 - 0.3 * ramp))
    img = np.broadcast_to(img, (h, w, 3)).copy()
    accent = scene[1] - scene[0]
    if kind == 0:  # brick / tile wall: a grid of mortar lines
        period = rng.integers(7, 14)
        dy, dx = rng.integers(0, period, 2)
        lines = (((rows + dy) % period) < 1.5) | (((cols + dx) % (2 * period)) < 1.5)
        img += (texture * 0.5 * (lines & (rows < horizon)))[..., None] * accent
    elif kind == 1:  # shop front: bright windows and signs
        for _ in range(rng.integers(2, 5)):
            x0, y0 = rng.integers(-10, w), rng.integers(-10, int(horizon))
            x1, y1 = x0 + rng.integers(8, 40), y0 + rng.integers(8, 50)
            colour = texture * 0.7 * (rng.uniform(0, 255, 3) - wall)
            img[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] += colour
    else:  # vegetation / smooth blotches
        img += texture * 0.6 * _smooth_noise(rng, h, w, 4)[..., None] * accent
    # Floor: perspective tile lines getting denser towards the horizon.
    depth = np.maximum(rows - horizon, 0) + 4.0
    floor_lines = ((60.0 / depth + rng.uniform(0, 1)) % 1.0 < 0.12) & (rows > horizon)
    img += (texture * 0.35 * floor_lines)[..., None] * (scene[3] - scene[2])
    img += texture * 12.0 * _smooth_noise(rng, h, w, 3)[..., None]
    return img


def _place(rng, d: Difficulty, ident, junk: bool):
    """Person box (cx, top, ph) in output pixels, misaligned like a detector's."""
    ph = HEIGHT * 0.9 * ident.height * np.exp(rng.normal(0, d.scale_jitter))
    cx = WIDTH / 2 + rng.normal(0, d.shift) * WIDTH
    top = (HEIGHT - ph) / 2 + rng.normal(0, d.shift) * HEIGHT * 0.5
    if junk:
        # A bad detection: only a fragment of the body (head, legs or one edge) is inside.
        kind = rng.integers(0, 3)
        ph = HEIGHT * rng.uniform(0.9, 1.6)
        if kind == 0:
            top = HEIGHT - ph * rng.uniform(0.15, 0.3)
        elif kind == 1:
            top = -ph * rng.uniform(0.7, 0.85)
        else:
            cx = rng.choice([-1, 1]) * WIDTH * rng.uniform(0.55, 0.65) + WIDTH / 2
    elif rng.random() < d.cutoff:
        kind = rng.integers(0, 3)
        if kind == 0:  # too large: feet or head cut off
            ph *= rng.uniform(1.15, 1.4)
            top += rng.choice([-1, 1]) * rng.uniform(0.1, 0.2) * ph
        elif kind == 1:  # shifted sideways
            cx += rng.choice([-1, 1]) * rng.uniform(0.25, 0.4) * WIDTH
        else:  # box too small at the top: lower body cut
            top += rng.uniform(0.15, 0.3) * ph
    return float(cx), float(top), float(ph)


def _person_layer(rng, ident, view, cx, top, ph, ss=SUPERSAMPLE):
    stride = rng.uniform(-1, 1)
    labels = draw_labels(ident, view, stride, cx, top, ph, (HEIGHT, WIDTH), ss)
    return colour_person(labels, ident, cx, top, ph, ss, rng.uniform(-1, 1))


def _composite(img, layer):
    rgb, alpha = layer
    return img * (1.0 - alpha[..., None]) + rgb


def _fragment(rng, main_ph):
    """Another (random) person at the crop edge, as detector crops in crowds contain."""
    ident = sample_identity(rng, 16, 14.0)
    ph = main_ph * rng.uniform(0.8, 1.15)
    cx = WIDTH / 2 + rng.choice([-1, 1]) * WIDTH * rng.uniform(0.45, 0.75)
    top = (HEIGHT - ph) / 2 + rng.normal(0, 0.08) * HEIGHT
    # Fragments are partial and secondary: no supersampling saves a third of the time.
    return _person_layer(rng, ident, VIEWS[rng.integers(0, 4)], cx, top, ph, ss=1)


def _occlude(rng, img, cx, top, ph):
    h, w = HEIGHT, WIDTH
    colour = rng.uniform(20, 230, 3).astype(np.float32)
    if rng.random() < 0.45:  # pole or post
        x0 = int(np.clip(cx + rng.normal(0, 0.2) * w, 0, w - 2))
        x1 = min(x0 + int(rng.integers(2, 7)), w)
        # Rounded look: brighter towards one side.
        img[:, x0:x1] = colour * np.linspace(0.8, 1.1, x1 - x0, dtype=np.float32)[None, :, None]
    else:  # car, bin or box in front of the legs
        y0 = int(np.clip(top + ph * rng.uniform(0.6, 0.85), h * 0.45, h - 6))
        x0 = int(rng.integers(-w // 2, w // 2))
        x1 = x0 + int(rng.integers(w // 2, w + 10))
        x0, x1 = max(x0, 0), min(x1, w)
        img[y0:, x0:x1] = colour
        img[y0:y0 + 2, x0:x1] = colour * 0.6  # edge/bumper line
    return img


def _box(alpha):
    """Tight (x0, y0, x1, y1) of a person's alpha, clipped to the crop, end-exclusive."""
    ys, xs = np.nonzero(alpha > 0.25)
    if len(ys) == 0:
        return 0, 0, 0, 0
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def render_image(seed: int, pid: int, cam: int, index: int, difficulty: Difficulty):
    """Render one crop.

    Args:
        seed: master seed.
        pid: identity (> 0), 0 for a distractor, -1 for junk (both are one-off random people).
        cam: camera number, 1-based.
        index: image index within (pid, cam).
        difficulty: resolved difficulty knobs.

    Returns:
        (uint8 image (128, 64, 3), camera JPEG quality, person box (x0, y0, x1, y1)).
    """
    d = difficulty
    rng = image_rng(seed, pid, cam, index)
    camera = _camera(seed, cam, d)
    if pid > 0:
        ident = _identity(seed, pid, d)
    else:
        ident = sample_identity(rng, d.palette_size, d.id_colour_jitter)
    view = VIEWS[rng.choice(len(VIEWS), p=camera.view_probs)]
    img = render_background(rng, camera, d.texture, d.scene_variety)
    cx, top, ph = _place(rng, d, ident, junk=pid < 0)
    n_frag = int(rng.random() < d.clutter) * int(rng.integers(1, 3))
    front = [rng.random() < 0.25 for _ in range(n_frag)]
    fragments = [_fragment(rng, ph) for _ in range(n_frag)]
    for layer, in_front in zip(fragments, front):
        if not in_front:
            img = _composite(img, layer)
    person = _person_layer(rng, ident, view, cx, top, ph)
    img = _composite(img, person)
    for layer, in_front in zip(fragments, front):
        if in_front:
            img = _composite(img, layer)
    if rng.random() < d.occlusion:
        img = _occlude(rng, img, cx, top, ph)
    out = apply_camera(img.astype(np.float32), camera, rng, d.image_light)
    return out, camera.jpeg_quality, _box(person[1])
