"""Attention pictures: boxes on the right rows, heat maps over the right part of the image."""

import keras
import numpy as np
import pytest
from PIL import Image

from tfreid.visualize import attention
from tfreid.visualize.attention import (REGION_COLOURS, heatmap_overlay, panel_origin,
                                        render_attention, theta_boxes)

RED, YELLOW = REGION_COLOURS[0], REGION_COLOURS[1]


def is_colour(pixels, colour):
    return (np.asarray(pixels) == colour).all(-1)


def test_theta_boxes_hand_computed():
    # y: (ty -+ s_h + 1) * H / 2 ; x: (tx -+ s_w + 1) * W / 2
    boxes = theta_boxes([[0.0, 0.5], [0.5, -1.0]], (0.25, 1.0), 160, 64)
    np.testing.assert_allclose(boxes, [[0, 100, 64, 140], [16, -20, 80, 20]])
    with pytest.raises(ValueError, match="theta"):
        theta_boxes([0.0, 0.5], (0.25, 1.0), 160, 64)


def test_boxes_drawn_on_the_right_rows():
    image = np.full((160, 64, 3), 128, np.uint8)
    theta = np.array([[0.0, 0.5], [0.0, -0.5], [0.0, 0.9]])  # rows 100..139, 20..59, 132..(172)
    pic = np.asarray(render_attention(image, {"attention/theta_1": theta}, zoom=1))
    x, y = panel_origin(1, 64)
    panel = pic[y:y + 160, x:x + 64]
    mid = panel[:, 20:44]  # away from the (shared) vertical sides
    rows = lambda colour: np.flatnonzero(is_colour(mid, colour).all(1))
    assert rows(RED).tolist() == [100, 101, 138, 139]
    assert rows(YELLOW).tolist() == [20, 21, 58, 59]
    # Region 3 (cyan) runs past the bottom: its outline is clipped to the last rows.
    assert rows(REGION_COLOURS[2]).tolist() == [132, 133, 158, 159]
    assert (mid[22:58] == 128).all() and (mid[102:132] == 128).all()
    assert is_colour(panel[100:132, 0:2], RED).all()  # left side of region 1 (then region 3's)
    # Panel 0 is the untouched input.
    x0, _ = panel_origin(0, 64)
    assert (pic[y:y + 160, x0:x0 + 64] == 128).all()


def test_heatmap_overlay_values_and_placement():
    image = np.full((40, 20, 3), 100, np.uint8)
    amap = np.array([[3.0], [1.0]])  # top high, bottom low
    out, lo, hi = heatmap_overlay(image, amap, alpha=0.5)
    assert (lo, hi) == (1.0, 3.0)
    # jet(1) = (0.5, 0, 0), jet(0) = (0, 0, 0.5): blended 50/50 with grey 100.
    np.testing.assert_allclose(out[0, 0], [114, 50, 50], atol=1)
    np.testing.assert_allclose(out[-1, -1], [50, 50, 114], atol=1)
    top, bottom = out[:10].astype(int), out[-10:].astype(int)
    assert (top[..., 0] > top[..., 2]).all() and (bottom[..., 2] > bottom[..., 0]).all()
    flat, _, _ = heatmap_overlay(image, np.ones((4, 2)))  # a flat map: mid-scale, no noise
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) == 1


def _brightness_model():
    """A non-HA-CNN model exposing `attention/brightness` [b, h, w, 1]: the mean input value over
    4x4 cells (the generic heat-map path other models use)."""
    images = keras.Input((32, 16, 3))
    pooled = keras.layers.AveragePooling2D(4, name="pool")(images)
    amap = keras.layers.Conv2D(1, 1, kernel_initializer=keras.initializers.Constant(1 / 3),
                               name="brightness")(pooled)
    emb = keras.layers.GlobalAveragePooling2D(name="embedding")(pooled)
    return keras.Model(images, {"embedding": emb, "attention/brightness": amap})


def test_generic_attention_map_over_the_image():
    model = _brightness_model()
    assert attention.attention_keys(model) == ["attention/brightness"]
    pixels = np.zeros((1, 32, 16, 3), np.float32)
    pixels[:, :12] = 255.0  # bright top 12 rows
    maps = attention.compute_attention(model, pixels)
    assert maps["attention/brightness"].shape == (1, 8, 4, 1)
    pic = np.asarray(render_attention(pixels[0].astype(np.uint8), {k: v[0] for k, v in maps.items()},
                                      zoom=2, title="t"))
    x, y = panel_origin(1, 32)
    panel = pic[y:y + 64, x:x + 32].astype(int)
    top, bottom = panel[:16], panel[-16:]  # zoomed rows 0-7 and 24-31 of the input
    assert (top[..., 0] > top[..., 2] + 50).all()  # hot (red) where the image is bright
    assert (bottom[..., 2] > bottom[..., 0] + 50).all()  # cold (blue) where it is dark
    assert pic.shape[1] == 6 + 2 * (32 + 6) - 6 + 6


def test_part_maps_cover_their_stripe_only():
    """A map computed from stripe 1 of 4 (CCAN's HorizontalStripe) is found to cover rows
    [1/4, 2/4) and drawn there only; a map of the whole input covers everything."""
    from tfreid.models.ccan import HorizontalStripe

    images = keras.Input((16, 8, 3))
    part = keras.layers.Conv2D(1, 1, name="part_map")(HorizontalStripe(1, 4, name="stripe")(images))
    full = keras.layers.Conv2D(1, 1, name="full_map")(images)
    model = keras.Model(images, {"embedding": keras.layers.Flatten()(images),
                                 "attention/part": part, "attention/whole": full})
    extents = attention.map_extents(model)
    assert extents == {"attention/part": (0.25, 0.5), "attention/whole": (0.0, 1.0)}
    image = np.full((16, 8, 3), 128, np.uint8)
    ramp = np.linspace(0, 1, 16)[:, None].repeat(8, 1)
    pic = np.asarray(render_attention(image, {"attention/part": ramp, "attention/whole": ramp},
                                      zoom=2, extents=extents))
    x, y = panel_origin(1, 16)  # "part" sorts before "whole"
    panel = pic[y:y + 32, x:x + 16]
    assert (panel[:8] == 128).all() and (panel[16:] == 128).all()  # outside rows 4..7 (x2)
    assert (panel[8:16] != 128).any(-1).all()
    x, _ = panel_origin(2, 16)
    assert (pic[y:y + 32, x:x + 16] != 128).any(-1).all()


def test_auto_zoom_makes_panels_at_least_128_wide():
    assert [attention.auto_zoom(w) for w in (32, 64, 100, 128, 192)] == [4, 2, 2, 1, 1]


def test_no_attention_outputs_is_a_clear_error():
    images = keras.Input((8, 8, 3))
    model = keras.Model(images, {"embedding": keras.layers.Flatten()(images)})
    with pytest.raises(ValueError, match="no attention outputs"):
        attention.attention_keys(model)


def test_hacnn_attention_cli(tiny_run, tiny_data, tmp_path):
    """HA-CNN on a run: 7 panels (input, soft 1-3, theta 1-3); a fresh network's regions are the
    initial stripes, ty = tanh(-0.75, -0.25, 0.25, 0.75), drawn at the hand-computed rows."""
    from tfreid.visualize.__main__ import main

    images = sorted((tiny_data / "query").glob("*.jpg"))[:2]
    out = tmp_path / "attn"
    assert main(["attention", "--run", str(tiny_run), "--images", *map(str, images),
                 "--zoom", "1", "--output", str(out)]) == 0
    pngs = sorted(out.glob("attention_*.png"))
    assert len(pngs) == 3 and (out / "attention_grid.png") in pngs
    pic = np.asarray(Image.open(out / f"attention_{images[0].stem}.png").convert("RGB"))
    x6, y = panel_origin(6, 64)
    assert pic.shape == (y + 160 + 6, x6 + 64 + 6, 3)
    ty = np.tanh([-0.75, -0.25, 0.25, 0.75])
    for t, colour in enumerate(REGION_COLOURS[:4]):
        top = int(np.round((ty[t] - 0.25 + 1) * 80))
        bottom = int(np.round((ty[t] + 0.25 + 1) * 80)) - 1
        for level in (4, 5, 6):  # theta_1..3 panels
            x, _ = panel_origin(level, 64)
            col = pic[y:y + 160, x + 32]
            # Later regions overdraw earlier ones where stripes overlap, so check the edges that
            # no later stripe covers: the top edge of each, and the bottom edge of the last.
            assert is_colour(col[top], colour), (level, t)
            if t == 3:
                assert is_colour(col[bottom], colour)
    # The soft-map panels are the input blended with a heat map: not equal to the input.
    x0, _ = panel_origin(0, 64)
    for level in (1, 2, 3):
        x, _ = panel_origin(level, 64)
        assert np.abs(pic[y:y + 160, x:x + 64].astype(int)
                      - pic[y:y + 160, x0:x0 + 64].astype(int)).mean() > 20


def test_region_scales_follow_the_sampler():
    from tfreid.models import build_model

    model = build_model("hacnn", 3, widths=[16, 16, 16], feature_dim=8, region_scale=(0.5, 1.0))
    assert attention.region_scales(model) == {f"attention/theta_{i}": (0.5, 1.0) for i in (1, 2, 3)}
