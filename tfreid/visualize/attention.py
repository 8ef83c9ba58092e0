"""Attention pictures: spatial attention maps as heat-map overlays, hard-attention regions as boxes.

Works for every model: each output ``attention/<name>`` of shape ``[B, h, w, 1]`` (or ``[B, h, w]``;
``[B, h, w, c]`` is averaged over ``c``) is drawn as a heat map over the input image, each
``attention/theta_<l>`` (``[B, T, 2]`` region translations, HA-CNN) as ``T`` boxes. Outputs of any
other shape (e.g. an ``[B, N, N]`` affinity matrix) are left out with a note.

A map computed from one horizontal stripe of the image (CCAN's part streams: the graph above the
output passes through a ``HorizontalStripe(index, num_parts)`` layer) is drawn over that stripe
only; every other map covers the whole image (`map_extents`).

Heat maps are min-max normalised per map (HA-CNN's soft maps lie in ``[0.5, 1)``, so an absolute
scale would show almost nothing); the panel caption gives the map's real range. The map is
stretched over the whole image, edges to edges. That is the placement the layers themselves
assume (RegionSampler's normalised coordinates are edge-aligned too); the receptive-field centres
of TF ``"same"``-padded stride-2 layers drift by half an input pixel per layer, which for HA-CNN
at 160x64 is 1.5 / 3.5 / 7.5 image pixels for soft_1..3 and 0.5 / 1.5 / 3.5 for the regions of
levels 1..3, down and to the right. It is not corrected (it depends on each architecture).

Region boxes follow `tfreid.layers.RegionSampler` (``align_corners=False``): normalised ``-1``
and ``1`` are the outer edges of the border pixels, and region ``t`` covers normalised
``[ty - s_h, ty + s_h]`` x ``[tx - s_w, tx + s_w]``. Since HA-CNN samples level ``l`` from a
feature map that is edge-aligned with the image, that is the image span
``y in [(ty - s_h + 1) H / 2, (ty + s_h + 1) H / 2]`` (continuous pixel edges), clipped to the
image when drawn (the sampler reads zeros outside).

Reference:
    W. Li, X. Zhu, S. Gong, "Harmonious Attention Network for Person Re-Identification",
    CVPR 2018, Fig. 6 (soft attention maps and hard attention regions per level).
"""

from __future__ import annotations

import pathlib
import re
import warnings

import numpy as np
from PIL import Image, ImageDraw

from tfreid.visualize import draw

PREFIX = "attention/"
THETA_PREFIX = "attention/theta_"
DEFAULT_SCALE = (0.25, 1.0)  # HA-CNN's (s_h, s_w), used when a theta's sampler is not found
# One colour per region (red first): distinct from each other and from the jet heat maps.
REGION_COLOURS = ((255, 0, 0), (255, 200, 0), (0, 210, 255), (255, 0, 255), (0, 255, 0),
                  (255, 128, 0), (128, 0, 255), (255, 255, 255))
BOX_WIDTH = 2
GAP = 6
MARGIN = 6
CAPTION_LINES = 2
ALPHA = 0.5  # heat-map opacity
MIN_PANEL_WIDTH = 128  # default enlargement: panels at least this wide (captions fit)


def _natural(key):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def attention_keys(model) -> list[str]:
    """The model's ``attention/*`` output keys: maps first, then thetas, each in natural order."""
    outputs = model.output
    if not isinstance(outputs, dict):
        raise ValueError(f"model {model.name!r} has no dict outputs, so no attention outputs")
    keys = [k for k in outputs if k.startswith(PREFIX)]
    if not keys:
        raise ValueError(f"model {model.name!r} has no attention outputs (keys starting with "
                         f"{PREFIX!r}); its outputs are {sorted(outputs)}")
    return (sorted((k for k in keys if not k.startswith(THETA_PREFIX)), key=_natural)
            + sorted((k for k in keys if k.startswith(THETA_PREFIX)), key=_natural))


def attention_model(model):
    """A `keras.Model` mapping images to the dict of ``model``'s attention outputs."""
    import keras

    return keras.Model(model.input, {k: model.output[k] for k in attention_keys(model)},
                       name=f"{model.name}_attention")


def region_scales(model) -> dict[str, tuple[float, float]]:
    """``(s_h, s_w)`` of the `RegionSampler` that consumes each ``attention/theta_*`` output."""
    from tfreid.layers import RegionSampler

    samplers = [layer for layer in model.layers if isinstance(layer, RegionSampler)]
    scales = {}
    for key in attention_keys(model):
        if not key.startswith(THETA_PREFIX):
            continue
        theta = model.output[key]
        for layer in samplers:
            nodes = getattr(layer, "_inbound_nodes", [])
            if any(t is theta for node in nodes for t in getattr(node, "input_tensors", [])):
                scales[key] = tuple(float(v) for v in layer.scale)
                break
        else:
            warnings.warn(f"no RegionSampler reads {key}; drawing its regions with the HA-CNN "
                          f"scale (s_h, s_w) = {DEFAULT_SCALE}", stacklevel=2)
            scales[key] = DEFAULT_SCALE
    return scales


def _ancestors(tensor):
    """Every layer the graph passes through on the way to ``tensor`` (Keras functional)."""
    seen, layers, stack = set(), [], [tensor]
    while stack:
        history = getattr(stack.pop(), "_keras_history", None)
        if history is None or id(history.operation) in seen:
            continue
        seen.add(id(history.operation))
        layers.append(history.operation)
        for node in getattr(history.operation, "_inbound_nodes", []):
            stack.extend(getattr(node, "input_tensors", []))
    return layers


def map_extents(model) -> dict[str, tuple[float, float]]:
    """The image rows each attention map covers, as fractions ``(top, bottom)`` of the height.

    A map downstream of exactly one horizontal stripe (a ``HorizontalStripe`` layer with
    ``index``/``num_parts``, as in CCAN's part streams) covers that stripe; any other map
    ``(0, 1)``.
    """
    extents = {}
    for key in attention_keys(model):
        if key.startswith(THETA_PREFIX):
            continue
        stripes = {(layer.index, layer.num_parts) for layer in _ancestors(model.output[key])
                   if type(layer).__name__ == "HorizontalStripe"}
        if len(stripes) == 1:
            index, parts = stripes.pop()
            extents[key] = (index / parts, (index + 1) / parts)
        else:
            extents[key] = (0.0, 1.0)
    return extents


def theta_boxes(theta, scale, height: int, width: int) -> np.ndarray:
    """Image-space boxes of hard-attention regions.

    Args:
        theta: ``[T, 2]`` translations ``(tx, ty)`` of one image.
        scale: ``(s_h, s_w)``.
        height, width: image size in pixels.

    Returns:
        float ``[T, 4]`` boxes ``(x0, y0, x1, y1)`` in continuous pixel-edge coordinates (pixel
        ``i`` spans ``[i, i + 1]``), not clipped.

    Example:
        >>> theta_boxes([[0.0, 0.5]], (0.25, 1.0), 160, 64).tolist()
        [[0.0, 100.0, 64.0, 140.0]]
    """
    theta = np.asarray(theta, np.float64)
    if theta.ndim != 2 or theta.shape[1] != 2:
        raise ValueError(f"theta must have shape [T, 2] (tx, ty), got shape {theta.shape}")
    s_h, s_w = (float(v) for v in scale)
    tx, ty = theta[:, 0], theta[:, 1]
    return np.stack([(tx - s_w + 1) * width / 2, (ty - s_h + 1) * height / 2,
                     (tx + s_w + 1) * width / 2, (ty + s_h + 1) * height / 2], axis=1)


def spatial_map(value) -> np.ndarray | None:
    """One image's attention output as a 2-D map, or None if it is not spatial."""
    value = np.asarray(value, np.float32)
    if value.ndim == 3:
        value = value.mean(axis=-1)  # [h, w, 1] (or c maps: their mean)
    return value if value.ndim == 2 and min(value.shape) >= 1 else None


def heatmap_overlay(image: np.ndarray, amap: np.ndarray, alpha: float = ALPHA):
    """Blends a min-max normalised jet heat map of ``amap`` over ``image``.

    Args:
        image: uint8 ``[H, W, 3]``.
        amap: ``[h, w]`` map, stretched bilinearly over the whole image (edges to edges).
        alpha: heat-map opacity in ``[0, 1]``.

    Returns:
        ``(blended uint8 [H, W, 3], low, high)`` with the map's value range.
    """
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    amap = np.asarray(amap, np.float32)
    if amap.ndim != 2:
        raise ValueError(f"amap must be a 2-D map, got shape {amap.shape}")
    h, w = image.shape[:2]
    lo, hi = float(amap.min()), float(amap.max())
    # A flat map carries no location: show it at mid-scale rather than amplify rounding noise.
    norm = (amap - lo) / (hi - lo) if hi - lo > 1e-6 * max(1.0, abs(hi)) else np.full_like(amap, 0.5)
    big = np.asarray(Image.fromarray(norm.astype(np.float32)).resize(
        (w, h), Image.Resampling.BILINEAR))
    colours = matplotlib.colormaps["jet"](np.clip(big, 0.0, 1.0))[..., :3] * 255.0
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    return draw.to_uint8(out), lo, hi


def panel_origin(index: int, panel_width: int) -> tuple[int, int]:
    """Top-left pixel of panel ``index`` (0 = the input image) in `render_attention`'s picture."""
    return (MARGIN + index * (panel_width + GAP),
            MARGIN + draw.TEXT_HEIGHT + CAPTION_LINES * draw.TEXT_HEIGHT)


def auto_zoom(width: int) -> int:
    """The smallest integer enlargement making an image at least `MIN_PANEL_WIDTH` wide."""
    return max(1, -(-MIN_PANEL_WIDTH // int(width)))


def render_attention(image: np.ndarray, outputs: dict, scales: dict | None = None,
                     zoom: int | None = None, title: str | None = None,
                     extents: dict | None = None) -> Image.Image:
    """One row of panels: the input, each attention map over it, each theta's regions as boxes.

    Args:
        image: uint8 ``[H, W, 3]``, the model input as the model saw it (resized).
        outputs: ``{key: value}`` for ONE image: maps ``[h, w(, c)]`` and thetas ``[T, 2]``.
        scales: ``{theta key: (s_h, s_w)}`` (default `DEFAULT_SCALE` for every theta).
        zoom: integer display enlargement (default `auto_zoom`: panels >= 128 px wide).
        title: header line (default none).
        extents: ``{map key: (top, bottom)}`` image rows (fractions) a map covers (default the
            whole image; see `map_extents`).

    Returns:
        RGB `PIL.Image.Image`; panel positions are given by `panel_origin` with panel width
        ``W * zoom``. Region ``t`` is outlined in ``REGION_COLOURS[t]``. Captions are clipped to
        their panel's width.
    """
    h, w = image.shape[:2]
    zoom = auto_zoom(w) if zoom is None else zoom
    if isinstance(zoom, bool) or not isinstance(zoom, (int, np.integer)) or not 1 <= zoom <= 16:
        raise ValueError(f"zoom must be an integer in 1..16, got {zoom!r}")
    scales = scales or {}
    big = draw.zoom(image, zoom)
    panels = [(big, ("input", f"{h}x{w}"))]
    for key in sorted(outputs, key=lambda k: (k.startswith(THETA_PREFIX), _natural(k))):
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if key.startswith(THETA_PREFIX):
            theta = np.asarray(outputs[key], np.float64)
            scale = scales.get(key, DEFAULT_SCALE)
            boxes = theta_boxes(theta, scale, h * zoom, w * zoom)
            panels.append((_boxes(big, boxes), (name, f"T={len(theta)}, s_h={scale[0]:g}")))
            continue
        amap = spatial_map(outputs[key])
        if amap is None:
            warnings.warn(f"{key} has shape {np.shape(outputs[key])}, not a spatial map; "
                          "left out of the picture", stacklevel=2)
            continue
        top, bottom = (extents or {}).get(key, (0.0, 1.0))
        r0 = min(int(round(top * h)), h - 1) * zoom
        r1 = max(int(round(bottom * h)) * zoom, r0 + zoom)
        blended = big.copy()
        blended[r0:r1], lo, hi = heatmap_overlay(big[r0:r1], amap)
        panels.append((blended, (name, f"[{lo:.3g}, {hi:.3g}]")))
    pw = w * zoom
    x_end, y0 = panel_origin(len(panels), pw)
    width = max(x_end - GAP + MARGIN, draw.text_width(title or "") + 2 * MARGIN)
    canvas = Image.new("RGB", (width, y0 + h * zoom + MARGIN), draw.BACKGROUND)
    pen = ImageDraw.Draw(canvas)
    if title:
        draw.text(pen, (MARGIN, MARGIN - 2), title)
    for i, (pixels, caption) in enumerate(panels):
        x, y = panel_origin(i, pw)
        canvas.paste(Image.fromarray(pixels), (x, y))
        label = Image.new("RGB", (pw, CAPTION_LINES * draw.TEXT_HEIGHT), draw.BACKGROUND)
        label_pen = ImageDraw.Draw(label)
        for j, line in enumerate(caption):
            draw.text(label_pen, (0, j * draw.TEXT_HEIGHT), line)
        canvas.paste(label, (x, y - CAPTION_LINES * draw.TEXT_HEIGHT))
    return canvas


def _boxes(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Outlines ``boxes`` (pixel edges) on a copy of ``image``, clipped to it."""
    h, w = image.shape[:2]
    canvas = Image.fromarray(image.copy())
    pen = ImageDraw.Draw(canvas)
    for t, (x0, y0, x1, y1) in enumerate(boxes):
        # Edge coordinates -> the first and last pixel inside the box.
        left, top = int(np.clip(np.round(x0), 0, w - 1)), int(np.clip(np.round(y0), 0, h - 1))
        right = int(np.clip(np.round(x1) - 1, 0, w - 1))
        bottom = int(np.clip(np.round(y1) - 1, 0, h - 1))
        if right < left or bottom < top or x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            continue  # entirely outside the image
        pen.rectangle([left, top, right, bottom], outline=REGION_COLOURS[t % len(REGION_COLOURS)],
                      width=BOX_WIDTH)
    return np.asarray(canvas)


def compute_attention(model, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """The attention outputs of ``model`` for ``images`` (float ``[n, H, W, 3]`` in ``[0, 255]``,
    normalised here as the pipeline does); ``{key: array [n, ...]}``."""
    from tfreid.preprocessing import normalize

    net = attention_model(model)
    chunks = [net(normalize(images[i:i + batch_size]), training=False)
              for i in range(0, len(images), batch_size)]
    return {k: np.concatenate([np.asarray(c[k], np.float32) for c in chunks]) for k in chunks[0]}


def render_attention_rows(model, pixels: np.ndarray, titles, zoom: int | None = None) -> list:
    """One `render_attention` picture per image of ``pixels`` (float ``[n, H, W, 3]`` in 0..255)
    with ``model``'s attention outputs; ``titles`` gives each picture's header line."""
    outputs = compute_attention(model, pixels)
    scales, extents = region_scales(model), map_extents(model)
    return [render_attention(draw.to_uint8(pixels[i]), {k: v[i] for k, v in outputs.items()},
                             scales, zoom, title=title, extents=extents)
            for i, title in enumerate(titles)]


def write_attention(run_dir, images=None, output_dir=None, *, num_images: int = 8,
                    zoom: int | None = None, checkpoint: str | None = None) -> list[pathlib.Path]:
    """Renders the attention of a run's model for some images.

    Args:
        run_dir: a run directory written by ``python -m tfreid.train``.
        images: image files or folders (their ``*.jpg``/``*.png``); default ``num_images``
            query images of the run's dataset, spread over the split.
        output_dir: where to write (default ``RUN/visualize/attention``).
        num_images: how many dataset images when ``images`` is not given.
        zoom: integer display enlargement (default: panels >= 128 px wide).
        checkpoint: checkpoint prefix (default: the latest).

    Returns:
        The PNGs written: ``attention_<image>.png`` per image, then ``attention_grid.png``.
    """
    from tfreid.runs import load_run

    cfg, model, _ = load_run(run_dir, checkpoint)
    paths = _image_paths(images) if images else _dataset_images(cfg, num_images)
    size = (cfg.data.height, cfg.data.width)
    pixels = draw.load_images(paths, size)
    pictures = render_attention_rows(model, pixels, [f"{cfg.model.name}: {pathlib.Path(path).name}"
                                                     for path in paths], zoom)
    output_dir = pathlib.Path(output_dir or pathlib.Path(run_dir) / "visualize" / "attention")
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, picture in zip(paths, pictures):
        target = output_dir / f"attention_{draw.safe_name(path)}.png"
        picture.save(target)
        written.append(target)
    grid = output_dir / "attention_grid.png"
    draw.stack_rows(pictures).save(grid)
    return written + [grid]


def _image_paths(items) -> list[pathlib.Path]:
    paths = []
    for item in items:
        item = pathlib.Path(item)
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if not found:
                raise ValueError(f"--images folder {item} holds no .jpg/.png files")
            paths.extend(found)
        elif item.is_file():
            paths.append(item)
        else:
            raise FileNotFoundError(f"--images: {item} is neither an image file nor a folder")
    return paths


def _dataset_images(cfg, num_images: int) -> list[str]:
    from tfreid.data import build_dataset

    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}")
    query = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.kwargs).query
    pick = np.unique(np.round(np.linspace(0, len(query) - 1, min(num_images, len(query)))))
    return [query[int(i)].path for i in pick]
