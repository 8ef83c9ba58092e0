"""Load backbone weights from a local ``.h5`` file by layer name (ImageNet files; never downloaded).

Two layouts are read, both with h5py:
- Keras's legacy HDF5 (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, ``model.save("x.h5")``):
  root (or ``model_weights/``) attribute ``layer_names``; group per layer with ``weight_names``.
- Keras 3 ``.weights.h5`` (``model.save_weights``): ``layers/<key>/vars/<i>`` with the layer name in the
  ``vars`` group's ``name`` attribute.
"""

from __future__ import annotations

import os

import h5py
import keras
import numpy as np


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_weights_by_layer(path: str) -> dict[str, list[np.ndarray]]:
    """``{layer_name: [arrays in the layer's variable order]}`` for every layer with weights."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone weights file {path!r} does not exist (weights are "
                                f"never downloaded; pass a local .h5 file)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"backbone weights file {path!r} is not a readable HDF5 file: {err}") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:
            weights = {}
            for layer in map(_decode, root.attrs["layer_names"]):
                names = [_decode(n) for n in root[layer].attrs.get("weight_names", [])]
                if names:
                    weights[layer] = [np.asarray(root[layer][n]) for n in names]
            return weights
        if "layers" in f:
            weights = {}
            # Keras 3 layout, flattened: nested models keep their layers under "<key>/layers/"
            def visit(_, obj):
                if isinstance(obj, h5py.Group) and obj.name.endswith("/vars") and len(obj):
                    arrays = [np.asarray(obj[str(i)]) for i in range(len(obj))]
                    weights[_decode(obj.attrs.get("name", obj.name))] = arrays

            f.visititems(visit)
            return weights
    raise ValueError(f"backbone weights file {path!r} has neither Keras's legacy 'layer_names' "
                     f"attribute nor a Keras 3 'layers/' group")


def load_backbone_weights(model: keras.Model, path: str, prefixes=("",)) -> list[str]:
    """Copy weights from `path` into `model`'s layers with the same name (after a prefix).

    A model layer named ``prefix + name`` for a `prefix` in `prefixes` receives the file's weights
    of layer ``name``; so unshared per-branch copies of a stage (``part3_conv5_block1_1_conv``) all
    start from the same pretrained stage. Layers absent from the file (heads, attention) keep their
    initialisation.

    Returns:
        The names of the model layers that were loaded.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: nothing matched, or a matched layer's weight shapes differ from the file's
            (e.g. a ``base_width`` other than 64 or a conv without bias).
    """
    stored = read_weights_by_layer(path)
    loaded = []
    for layer in model.layers:
        for prefix in prefixes:
            if not layer.name.startswith(prefix) or layer.name[len(prefix):] not in stored:
                continue
            arrays = stored[layer.name[len(prefix):]]
            expected = [tuple(w.shape) for w in layer.weights]
            got = [a.shape for a in arrays]
            if expected != got:
                raise ValueError(f"backbone weights file {path!r}: layer {layer.name!r} expects "
                                 f"weight shapes {expected}, the file holds {got}")
            layer.set_weights(arrays)
            loaded.append(layer.name)
            break
    if not loaded:
        raise ValueError(f"backbone weights file {path!r}: no layer name of model {model.name!r} "
                         f"matches the file's layers (e.g. {sorted(stored)[:3]}); expected a "
                         f"keras.applications-compatible file")
    return loaded
