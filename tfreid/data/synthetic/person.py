"""Rendering one person: head, hair, torso, arms, legs, shoes, bag, hat, logo, with shading.

The body is drawn as a part-label map with Pillow's ImageDraw at `ss` x supersampling (draw order
handles self-occlusion), then coloured with one lookup table, patterned (stripes / checks) and
shaded in vectorised NumPy, and box-filtered down — that anti-aliases edges cheaply.
The drawn person depends on the view: a logo is only on the front, a backpack is a block on the
back, a strap pair from the front and a slab from the side; a handbag shows only from the side
that carries it (and at the hip from the front / back); long hair covers the back.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from tfreid.data.synthetic.identity import Identity

# Part labels. FAR_* are the limbs on the far side in side views (drawn darker).
SKIN, HAIR, UPPER, ARM, LOWER, SHOE, BAG, LOGO, HAT, FAR_ARM, FAR_LOWER, FAR_SKIN, FAR_SHOE = \
    range(1, 14)
# Second-colour variants for stripes / checks, assigned after drawing.
UPPER_2, ARM_2, FAR_ARM_2, LOWER_2, FAR_LOWER_2 = range(14, 19)


class _Pen:
    """Draws on the label image in person units: u across (0 = body axis), v down (0 = top)."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, ph: float, ss: int):
        self.draw, self.cx, self.top, self.ph, self.ss = draw, cx, top, ph, ss

    def pt(self, u, v):
        return ((self.cx + u * self.ph) * self.ss, (self.top + v * self.ph) * self.ss)

    def poly(self, points, label):
        self.draw.polygon([self.pt(u, v) for u, v in points], fill=label)

    def rect(self, u0, v0, u1, v1, label):
        self.poly([(u0, v0), (u1, v0), (u1, v1), (u0, v1)], label)

    def ellipse(self, u, v, ru, rv, label):
        (x0, y0), (x1, y1) = self.pt(u - ru, v - rv), self.pt(u + ru, v + rv)
        self.draw.ellipse([x0, y0, x1, y1], fill=label)

    def limb(self, u0, v0, u1, v1, w0, w1, label):
        """A tapered segment from (u0, v0) (half width w0) to (u1, v1) (half width w1)."""
        du, dv = u1 - u0, v1 - v0
        n = max(np.hypot(du, dv), 1e-6)
        pu, pv = -dv / n, du / n
        self.poly([(u0 + pu * w0, v0 + pv * w0), (u1 + pu * w1, v1 + pv * w1),
                   (u1 - pu * w1, v1 - pv * w1), (u0 - pu * w0, v0 - pv * w0)], label)


def _draw_legs(pen, p: Identity, view: str, stride: float, hip: float, far: bool):
    b = p.build
    lower_end = {"trousers": 0.955, "shorts": 0.70, "skirt": 0.74}[p.lower_type]
    if view in ("front", "back"):
        spread = 0.02 * abs(stride)
        legs = [(-0.05 * b - spread, -0.055 * b - 2 * spread), (0.05 * b + spread, 0.055 * b + 2 * spread)]
        labels = (LOWER, SKIN, SHOE)
    else:
        f = -1.0 if view == "left" else 1.0
        swing = 0.16 * stride
        legs = [(0.0, -swing * f), (0.0, swing * f)]
        labels = (FAR_LOWER, FAR_SKIN, FAR_SHOE) if far else (LOWER, SKIN, SHOE)
        legs = [legs[0]] if far else [legs[1]]
    for u_hip, u_ankle in legs:
        # Clothing to `lower_end`, skin below it; interpolate along the leg.
        t = (lower_end - hip) / (0.955 - hip)
        u_mid = u_hip + t * (u_ankle - u_hip)
        pen.limb(u_hip, hip, u_ankle, 0.955, 0.05 * b, 0.034 * b, labels[1])
        pen.limb(u_hip, hip, u_mid, lower_end, 0.052 * b, 0.042 * b, labels[0])
        if view in ("front", "back"):
            pen.rect(u_ankle - 0.04 * b, 0.945, u_ankle + 0.04 * b, 1.0, labels[2])
        else:
            f = -1.0 if view == "left" else 1.0
            toe = u_ankle + f * 0.075
            heel = u_ankle - f * 0.03
            pen.poly([(heel, 0.94), (u_ankle + f * 0.02, 0.94), (toe, 0.975), (toe, 1.0),
                      (heel, 1.0)], labels[2])


def _draw_arm(pen, p, u_sh, v_sh, u_hand, v_hand, sleeve, skin):
    w = 0.036 * p.build
    elbow = 0.45 if not p.long_sleeves else 1.0
    u_el, v_el = u_sh + elbow * (u_hand - u_sh), v_sh + elbow * (v_hand - v_sh)
    pen.limb(u_sh, v_sh, u_hand, v_hand, w, 0.8 * w, skin)
    pen.limb(u_sh, v_sh, u_el, v_el, 1.1 * w, 0.95 * w, sleeve)
    pen.ellipse(u_hand, v_hand + 0.012, 0.025, 0.025, skin)


def draw_labels(p: Identity, view: str, stride: float, cx: float, top: float, ph: float,
                size: tuple[int, int], ss: int) -> np.ndarray:
    """Part-label map (H*ss, W*ss) uint8 of identity `p` seen from `view`.

    Args:
        p: the identity.
        view: one of "front", "back", "left", "right" ("left" = walking towards image left).
        stride: gait phase in [-1, 1] (leg and arm swing).
        cx, top, ph: body axis x, top of the head y and body height, in output pixels.
        size: output (H, W).
        ss: supersampling factor.
    """
    h, w = size
    img = Image.new("L", (w * ss, h * ss), 0)
    pen = _Pen(ImageDraw.Draw(img), cx, top, ph, ss)
    b = p.build
    hip = 1.0 - p.leg_ratio
    side = view in ("left", "right")
    f = -1.0 if view == "left" else 1.0
    sh_w = (0.075 if side else 0.13) * b
    waist_w = (0.07 if side else 0.105) * b
    hand_v = hip + 0.04

    if side:
        # Far limbs first so that the torso hides them partly.
        _draw_legs(pen, p, view, stride, hip, far=True)
        _draw_arm(pen, p, 0.0, 0.17, -0.1 * stride * f, hand_v, FAR_ARM, FAR_SKIN)
        if p.long_hair:
            pen.rect(-f * 0.06, 0.06, f * 0.01, 0.22, HAIR)
    elif p.long_hair and view == "front":
        pen.rect(-0.07, 0.05, 0.07, 0.2, HAIR)
    if p.bag == "handbag" and view in ("front", "back"):
        # The carrying hand's side: the person's right is image-left from the front.
        s = -p.bag_side if view == "front" else p.bag_side
        pen.rect(s * (waist_w + 0.02), hip - 0.04, s * (waist_w + 0.1), hip + 0.08, BAG)

    _draw_legs(pen, p, view, stride, hip, far=False)
    if p.lower_type == "skirt":
        pen.poly([(-waist_w, hip - 0.02), (waist_w, hip - 0.02), (waist_w * 1.5, 0.74),
                  (-waist_w * 1.5, 0.74)], LOWER)
    else:
        pen.poly([(-waist_w, hip - 0.02), (waist_w, hip - 0.02), (waist_w, hip + 0.07),
                  (-waist_w, hip + 0.07)], LOWER)
    pen.rect(-0.022, 0.105, 0.022, 0.16, SKIN)  # neck
    pen.poly([(-sh_w, 0.145), (sh_w, 0.145), (waist_w, hip + 0.03), (-waist_w, hip + 0.03)], UPPER)
    if p.upper_pattern == "logo" and view == "front":
        s, v = 0.045, 0.25
        if p.logo_shape == "circle":
            pen.ellipse(0.0, v, s, s, LOGO)
        elif p.logo_shape == "square":
            pen.rect(-s, v - s, s, v + s, LOGO)
        else:
            pen.poly([(-s, v + s), (s, v + s), (0.0, v - s)], LOGO)
    if p.bag == "backpack":
        if view == "back":
            pen.rect(-0.1 * b, 0.17, 0.1 * b, 0.42, BAG)
        elif view == "front":
            for s in (-1, 1):
                pen.rect(s * 0.075 * b - 0.014, 0.145, s * 0.075 * b + 0.014, 0.33, BAG)
        else:
            pen.rect(-f * sh_w, 0.17, -f * (sh_w + 0.085), 0.42, BAG)
    if view == "back" and p.long_hair:
        pen.rect(-0.065, 0.06, 0.065, 0.24, HAIR)

    if side:
        _draw_arm(pen, p, 0.0, 0.17, 0.1 * stride * f, hand_v, ARM, SKIN)
        visible_side = -1 if view == "left" else 1
        if p.bag == "handbag" and p.bag_side == visible_side:
            pen.rect(-0.06, hip - 0.02, 0.08, hip + 0.12, BAG)
    else:
        for s in (-1, 1):
            out = 0.015 + 0.02 * abs(stride)
            _draw_arm(pen, p, s * (sh_w - 0.025), 0.165, s * (waist_w + 0.045 + out), hand_v,
                      ARM, SKIN)

    # Head: hair shape first, then the visible face on top of it.
    pen.ellipse(0.0, 0.065, 0.052, 0.064, HAIR)
    if view == "front":
        pen.ellipse(0.0, 0.075, 0.044, 0.052, SKIN)
    elif side:
        pen.ellipse(f * 0.014, 0.078, 0.036, 0.05, SKIN)
    if p.hat is not None:
        pen.poly([(-0.056, 0.035), (0.056, 0.035), (0.045, 0.0), (-0.045, 0.0)], HAT)
        if side:
            pen.rect(0.0, 0.03, f * 0.085, 0.045, HAT)
    return np.asarray(img)


def colour_person(labels: np.ndarray, p: Identity, cx: float, top: float, ph: float, ss: int,
                  light: float) -> tuple[np.ndarray, np.ndarray]:
    """Colour, pattern and shade a label map and box-filter it to output resolution.

    Patterns are applied on the labels (cheap uint8 work), colours by a Pillow palette lookup
    and the box-filter by `Image.reduce`; label 0 is black, so the reduced RGB is already
    premultiplied by coverage. Shading is smooth, so it is applied after reduction.

    Args:
        labels: (H*ss, W*ss) uint8 from `draw_labels`.
        p: the identity.
        cx, top, ph: as in `draw_labels`.
        ss: supersampling factor.
        light: horizontal light direction in [-1, 1] (which side of the body is brighter).

    Returns:
        (premultiplied RGB float32 (H, W, 3), alpha float32 (H, W)).
    """
    h, w = labels.shape[0] // ss, labels.shape[1] // ss
    # Only the person's neighbourhood needs colouring (the rest of the canvas is empty).
    r0, r1 = int(np.clip(np.floor(top), 0, h)), int(np.clip(np.ceil(top + ph) + 1, 0, h))
    c0, c1 = int(np.clip(np.floor(cx - 0.35 * ph), 0, w)), int(np.clip(np.ceil(cx + 0.35 * ph), 0, w))
    rgb_out = np.zeros((h, w, 3), np.float32)
    alpha_out = np.zeros((h, w), np.float32)
    if r1 <= r0 or c1 <= c0:
        return rgb_out, alpha_out
    labels = labels[r0 * ss:r1 * ss, c0 * ss:c1 * ss]
    hs, ws = labels.shape
    v = ((np.arange(hs, dtype=np.float32) + 0.5) / ss + r0 - top) / ph
    u = ((np.arange(ws, dtype=np.float32) + 0.5) / ss + c0 - cx) / ph
    if p.upper_pattern in ("stripes", "checks") or p.lower_checks:
        labels = labels.copy()
    if p.upper_pattern in ("stripes", "checks"):
        band = (np.floor(v / p.stripe_period) % 2).astype(bool)[:, None]
        if p.upper_pattern == "checks":
            band = band ^ (np.floor(u / p.stripe_period) % 2).astype(bool)[None, :]
        for lab, lab2 in ((UPPER, UPPER_2), (ARM, ARM_2), (FAR_ARM, FAR_ARM_2)):
            labels[band & (labels == lab)] = lab2
    if p.lower_checks:
        band = (np.floor(v / 0.05) % 2).astype(bool)[:, None] ^ \
            (np.floor(u / 0.05) % 2).astype(bool)[None, :]
        for lab, lab2 in ((LOWER, LOWER_2), (FAR_LOWER, FAR_LOWER_2)):
            labels[band & (labels == lab)] = lab2
    lut = np.zeros((256, 3), np.float32)
    lut[SKIN], lut[HAIR], lut[UPPER], lut[ARM] = p.skin, p.hair, p.upper, p.upper * 0.9
    lut[LOWER], lut[SHOE], lut[BAG], lut[LOGO] = p.lower, p.shoes, p.bag_colour, p.upper_second
    lut[HAT] = p.hat if p.hat is not None else p.hair
    lut[FAR_ARM], lut[FAR_LOWER] = p.upper * 0.7, p.lower * 0.7
    lut[FAR_SKIN], lut[FAR_SHOE] = p.skin * 0.7, p.shoes * 0.7
    lut[UPPER_2], lut[ARM_2], lut[FAR_ARM_2] = (p.upper_second * k for k in (1.0, 0.9, 0.7))
    lut[LOWER_2], lut[FAR_LOWER_2] = p.lower * 0.55 + 40.0, (p.lower * 0.55 + 40.0) * 0.7
    # Palette entries are 8-bit; keep the lookup at 8 bits and scale alpha to 0..255.
    pal = np.clip(lut + 0.5, 0, 255).astype(np.uint8)
    pal[0] = 0
    img = Image.fromarray(labels)  # "L"; putpalette turns it into "P"
    img.putpalette(pal.tobytes())
    rgb = np.asarray(img.convert("RGB").reduce(ss), dtype=np.float32)
    alpha = np.asarray(Image.fromarray(np.minimum(labels, 1) * 255).reduce(ss),
                       dtype=np.float32) * np.float32(1 / 255)
    # Cylinder-like shading across the body and a little darkening towards the feet.
    u1, v1 = u[ss // 2::ss], v[ss // 2::ss]
    across = np.clip(1.08 - 9.0 * (u1 - 0.05 * light) ** 2 + 0.8 * light * u1, 0.55, 1.15)
    down = 1.05 - 0.15 * np.clip(v1, 0, 1)
    rgb_out[r0:r1, c0:c1] = rgb * (down[:, None] * across[None, :])[..., None].astype(np.float32)
    alpha_out[r0:r1, c0:c1] = alpha
    return rgb_out, alpha_out
