"""Backbone weights by layer name: a local ``.h5`` file, or ``"imagenet"``.

``"imagenet"`` (`resolve_backbone_weights`) means, for ResNet-50, Keras's own ImageNet file
(``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``), fetched once through
``keras.utils.get_file`` with keras.applications' URL and hash and cached in
``$KERAS_HOME/models`` (default ``~/.keras/models``); for BN-Inception (GoogLeNet v1 + BN) and
Inception-v2, the file `tfreid.models.convert` writes there from the PyTorch checkpoint
(`CONVERTED`; nothing to download).

Two layouts are read, both with h5py:
- Keras's legacy HDF5 (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, ``model.save("x.h5")``):
  root (or ``model_weights/``) attribute ``layer_names``; group per layer with ``weight_names``.
- Keras 3 ``.weights.h5`` (``model.save_weights``): ``layers/<key>/vars/<i>`` with the layer name in the
  ``vars`` group's ``name`` attribute.
"""

from __future__ import annotations

import os
import re

import h5py
import keras
import numpy as np


IMAGENET = "imagenet"
# keras.applications.ResNet50(include_top=False, weights="imagenet"): same URL, same md5.
RESNET50_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
RESNET50_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{RESNET50_FILE}"
RESNET50_HASH = "4d473c1dd8becc155b73f8504c6f6626"
BN_INCEPTION_FILE = "tfreid_bn_inception_imagenet.weights.h5"  # written by tfreid.models.convert
INCEPTION_V2_FILE = "tfreid_inception_v2_imagenet.weights.h5"  # likewise
# backbone -> (file in Keras's cache, the PyTorch checkpoint it is converted from, what it is)
CONVERTED = {"bn_inception": (BN_INCEPTION_FILE, "googlenet-1378be20.pth", "BN-Inception (GoogLeNet v1 + BN)"),
             "inception_v2": (INCEPTION_V2_FILE, "bn_inception-52deb4733.pth", "Inception-v2 (Cadene's BN-Inception)")}
# Layer names each backbone's weights file must cover (after a branch prefix): a model layer of
# that name with no weights in the file is an error, not a silently random backbone layer.
BACKBONE_LAYERS = {
    "resnet50": re.compile(r"conv1_(conv|bn)|conv[2-5]_block\d+_\d_(conv|bn)"),
    "bn_inception": re.compile(r"conv[1-3]_(conv|bn)|inception\d[a-e]_branch\d(_\d)?_(conv|bn)"),
    "inception_v2": re.compile(r"(conv1_7x7_s2|conv2_3x3(_reduce)?|inception_\d[a-e]_(1x1|3x3_reduce|3x3"
                               r"|double_3x3_reduce|double_3x3_[12]|pool_proj))_(conv|bn)"),
}


# The pretrained backbone of each registered model (HA-CNN trains from scratch, as its paper);
# CCAN's follows its `backbone` option (CCAN_BACKBONES, `model_backbone`).
MODEL_BACKBONES = {"ccan": "bn_inception", "can": "resnet50", "adfl": "resnet50",
                   "aanet": "resnet50", "baseline": "resnet50"}
CCAN_BACKBONES = {"googlenet_bn": "bn_inception", "inception_v2": "inception_v2"}


def check_ccan_backbone(backbone) -> str:
    """CCAN's ``backbone`` option -> the weights backbone (``"bn_inception"``, ``"inception_v2"``)."""
    if not isinstance(backbone, str) or backbone not in CCAN_BACKBONES:
        raise ValueError(f"`backbone` must be one of {', '.join(map(repr, CCAN_BACKBONES))}, "
                         f"received backbone={backbone!r}.")
    return CCAN_BACKBONES[backbone]


def model_backbone(model: str, kwargs: dict | None = None) -> str | None:
    """The backbone whose ImageNet weights model `model` built with `kwargs` loads (None: none)."""
    if model == "ccan":
        return check_ccan_backbone((kwargs or {}).get("backbone", "googlenet_bn"))
    return MODEL_BACKBONES.get(model)


def keras_cache_dir() -> str:
    """Where ``keras.utils.get_file(..., cache_subdir="models")`` keeps files."""
    return os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")


def resolve_backbone_weights(weights: str | None, backbone: str = "resnet50") -> str | None:
    """The local file behind a ``backbone_weights`` value (``None``, a path or ``"imagenet"``).

    Args:
        weights: ``None`` (random initialisation), a local ``.h5`` path, or ``"imagenet"``.
        backbone: ``"resnet50"`` (downloads Keras's ImageNet file on first use, then reads the
            cache), ``"bn_inception"`` or ``"inception_v2"`` (the converted file in the Keras
            cache, `CONVERTED`).

    Raises:
        FileNotFoundError: the path does not exist; or ``"imagenet"`` cannot be fetched (offline)
            or has not been converted; the message says where to put the file.
    """
    if weights is None:
        return None
    if backbone not in BACKBONE_LAYERS:
        raise ValueError(f"backbone must be one of {sorted(BACKBONE_LAYERS)}, received {backbone!r}")
    if weights != IMAGENET:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"backbone weights file {weights!r} does not exist (pass a "
                                    f"local .h5 file or 'imagenet')")
        return weights
    if backbone in CONVERTED:
        file, checkpoint, what = CONVERTED[backbone]
        path = os.path.join(keras_cache_dir(), file)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"backbone_weights 'imagenet' for {what} reads {path}, which does not exist: "
                f"convert the PyTorch ImageNet checkpoint once with `python -m tfreid.models.convert "
                f"{checkpoint}` (docs/weights.md), or pass the converted file's path")
        return path
    try:
        return keras.utils.get_file(RESNET50_FILE, RESNET50_URL, cache_subdir="models",
                                    file_hash=RESNET50_HASH)
    except Exception as err:  # URL/HTTP errors offline, or a hash mismatch: one clear message
        target = os.path.join(keras_cache_dir(), RESNET50_FILE)
        raise FileNotFoundError(
            f"cannot fetch the ImageNet ResNet-50 weights ({type(err).__name__}: {err}). Offline, "
            f"download {RESNET50_URL} elsewhere and put it at {target} (Keras's cache, md5 "
            f"{RESNET50_HASH}), or pass its path as model.backbone_weights") from None


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_weights_by_layer(path: str) -> dict[str, list[np.ndarray]]:
    """``{layer_name: [arrays in the layer's variable order]}`` for every layer with weights."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone weights file {path!r} does not exist (pass a local "
                                f".h5 file or 'imagenet')")
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


def load_backbone_weights(model: keras.Model, path: str, prefixes=("",),
                          backbone: str = "resnet50") -> list[str]:
    """Copy weights from `path` into `model`'s layers with the same name (after a prefix).

    A model layer named ``prefix + name`` for a `prefix` in `prefixes` receives the file's weights
    of layer ``name``; so unshared per-branch copies of a stage (``part3_conv5_block1_1_conv``) all
    start from the same pretrained stage. Layers absent from the file (heads, attention) keep their
    initialisation; a layer named like a `backbone` layer must be in the file.

    Args:
        model: the model to fill.
        path: local ``.h5`` file or ``"imagenet"`` (`resolve_backbone_weights`).
        prefixes: layer-name prefixes of the backbone copies.
        backbone: a key of `BACKBONE_LAYERS` (``"resnet50"``, ``"bn_inception"``,
            ``"inception_v2"``).

    Returns:
        The names of the model layers that were loaded.

    Raises:
        FileNotFoundError: `path` does not exist (or ``"imagenet"`` cannot be fetched).
        ValueError: nothing matched, a backbone layer is missing from the file, or a matched
            layer's weight shapes differ from the file's (e.g. a ``base_width`` other than 64 or a
            conv without bias); the message names the layer.
    """
    path = resolve_backbone_weights(path, backbone)
    stored = read_weights_by_layer(path)
    loaded = []
    for layer in model.layers:
        for prefix in prefixes:
            stem = layer.name[len(prefix):]
            if layer.name.startswith(prefix) and layer.weights and stem not in stored \
                    and BACKBONE_LAYERS[backbone].fullmatch(stem):
                raise ValueError(f"backbone weights file {path!r} has no weights for backbone "
                                 f"layer {layer.name!r} (looked for {stem!r})")
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
