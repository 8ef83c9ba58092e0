"""Synthetic cameras: each has its own scene, dominant viewpoint and imaging chain.

Cameras differ in illumination and colour cast, saturation, blur, noise, resolution and
viewpoint, so the same clothes look different across cameras and raw colour is unreliable —
the cross-camera gap ReID models must bridge.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageFilter

VIEWS = ("front", "back", "left", "right")


@dataclasses.dataclass(frozen=True)
class Camera:
    """Imaging parameters of one camera (see `sample_camera`)."""

    gain: np.ndarray          # per-channel multiplicative gain (cast x brightness)
    gamma: float
    saturation: float         # 1 = unchanged, 0 = grey
    blur: float               # Gaussian sigma in output pixels
    downscale: float          # >= 1: resolution loss factor
    noise: float              # sensor noise std, 0-255 scale
    jpeg_quality: int
    view_probs: np.ndarray    # probabilities of VIEWS
    scene: np.ndarray         # (4, 3) scene colours: wall, wall accent, floor, floor accent
    scene_kind: int           # background layout family
    horizon: float            # floor/wall boundary as a fraction of the crop height


def camera_rng(seed: int, cam: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 3, cam]))


def sample_camera(rng: np.random.Generator, difficulty) -> Camera:
    """Draw one camera's parameters with strengths given by the difficulty knobs."""
    d = difficulty
    cast = np.exp(np.clip(rng.normal(0.0, d.cast, 3), -2.5 * d.cast, 2.5 * d.cast))
    brightness = np.exp(rng.uniform(-d.brightness, d.brightness))
    dominant = rng.integers(0, len(VIEWS))
    probs = np.full(len(VIEWS), (1.0 - d.view_bias) / len(VIEWS))
    probs[dominant] += d.view_bias
    # Real scenes are mostly greyish: a grey level per surface plus a mild tint.
    scene = rng.uniform(50, 200, (4, 1)) + rng.normal(0, 22, (4, 3))
    return Camera(
        gain=(cast / cast.mean() * brightness).astype(np.float32),
        gamma=float(np.exp(rng.uniform(-0.5, 0.5) * d.brightness)),
        saturation=float(1.0 - rng.uniform(0.0, d.desaturate)),
        blur=float(rng.uniform(0.0, d.blur)),
        downscale=float(1.0 + rng.uniform(0.0, d.downscale)),
        noise=float(rng.uniform(0.3, 1.0) * d.noise),
        jpeg_quality=int(rng.integers(72, 96)),
        view_probs=probs / probs.sum(),
        scene=np.clip(scene, 10, 245).astype(np.float32),
        scene_kind=int(rng.integers(0, 3)),
        horizon=float(rng.uniform(0.55, 0.8)),
    )


def apply_camera(image: np.ndarray, cam: Camera, rng: np.random.Generator,
                 image_light: float) -> np.ndarray:
    """Pass a clean float image (H, W, 3) in 0-255 through the camera's imaging chain.

    Args:
        image: scene radiance, float32 (H, W, 3), 0-255.
        cam: the camera.
        rng: the image's generator (per-image light and noise).
        image_light: std of the per-image log brightness.

    Returns:
        uint8 (H, W, 3).
    """
    h, w, _ = image.shape
    light = np.float32(np.exp(rng.normal(0.0, image_light)))
    x = np.clip(image * (cam.gain * light), 0, 255).astype(np.uint8)
    # The per-camera tone curve (gamma) as a 256-entry table: much cheaper than np.power.
    x = _tone_table(cam.gamma)[x]
    grey = x.mean(axis=2, keepdims=True)
    x = grey + cam.saturation * (x - grey)
    pil = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    if cam.downscale > 1.05:
        small = (max(4, round(w / cam.downscale)), max(8, round(h / cam.downscale)))
        pil = pil.resize(small, Image.BILINEAR).resize((w, h), Image.BILINEAR)
    if cam.blur > 0.2:
        pil = pil.filter(ImageFilter.GaussianBlur(cam.blur))
    x = np.asarray(pil, dtype=np.float32)
    if cam.noise > 0:
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(cam.noise)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _tone_table(gamma: float) -> np.ndarray:
    return (255.0 * (np.arange(256, dtype=np.float32) / 255.0) ** gamma).astype(np.float32)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of a uint8 image (deterministic for a given Pillow/libjpeg)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
