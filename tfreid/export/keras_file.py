"""`.keras` export: the embedding model with its preprocessing, loadable with `safe_mode=True`.

The saved model takes the same input as every other export — float32 (or uint8) RGB pixels in
0..255, `[N, H, W, 3]` — because the ImageNet normalisation is included as the first layer
(a stock `keras.layers.Normalization` with the mean/variance scaled to 0..255, named
`preprocess`), followed by the run's embedding network; its single output is the embedding
`[N, D]`. Only registered tfreid layers and stock Keras layers are used (no `Lambda`), so

    model = keras.saving.load_model(path, safe_mode=True)

works in a fresh process once `tfreid` is imported (which registers the custom layers;
`tfreid.inference.FeatureExtractor` does that for you).

Example:
    >>> export_keras(embedding_model(model), "out/hacnn.keras", (160, 64))
"""

from __future__ import annotations

import os
import pathlib

import keras
import numpy as np

from tfreid.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from tfreid.runs import write_json

__all__ = ["deploy_model", "export_keras"]


def deploy_model(embed: keras.Model, image_size) -> keras.Model:
    """Wrap `embed` (normalised images -> embedding) as 0..255 RGB pixels -> embedding.

    Args:
        embed: Keras model mapping ImageNet-normalised `[N, H, W, 3]` images to `[N, D]`.
        image_size: `(H, W)`.

    Returns:
        A functional `keras.Model` named `<embed.name>_deploy`, sharing `embed`'s weights.
    """
    height, width = (int(v) for v in image_size)
    mean = 255.0 * np.asarray(IMAGENET_MEAN, np.float32)
    variance = np.square(255.0 * np.asarray(IMAGENET_STD, np.float32))
    images = keras.Input((height, width, 3), name="images")
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="preprocess")(images)
    embedding = embed(x)
    return keras.Model(images, embedding, name=f"{embed.name}_deploy")


def export_keras(embed: keras.Model, path: str | os.PathLike, image_size,
                 metadata: dict | None = None) -> pathlib.Path:
    """Save `deploy_model(embed, image_size)` to `path` (`.keras`) plus a `.json` sidecar.

    Written under a temporary name and renamed, so a reader never sees half a file.

    Returns:
        The path of the `.keras` file.
    """
    path = pathlib.Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"path must end in .keras, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = deploy_model(embed, image_size)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    info = {"format": "keras", "input_size": [int(v) for v in image_size],
            "input": "float32 RGB 0..255 [N, H, W, 3]; normalisation is the 'preprocess' layer",
            "output": "float32 embedding [N, D]",
            "embedding_size": int(embed.output.shape[-1]),
            "load": "import tfreid; keras.saving.load_model(path, safe_mode=True)",
            **(metadata or {})}
    write_json(path.with_suffix(".json"), info)
    return path
