"""`python -m tfreid.models.convert`: PyTorch GoogLeNet-with-BN ImageNet weights -> CCAN's backbone.

    python -m tfreid.models.convert CHECKPOINT [--out PATH] [--no-check]

CCAN's backbone (`tfreid.models.backbones.bn_inception`: GoogLeNet v1 with BN after every conv,
global levels of 480 / 832 / 1024 channels) follows torchvision's ``googlenet`` module for module,
so torchvision's ImageNet checkpoint ``googlenet-1378be20.pth``
(https://download.pytorch.org/models/googlenet-1378be20.pth) maps onto it layer by layer:
``inception4a.branch2.1.conv.weight`` -> layer ``inception4a_branch2_1_conv``, kernel transposed
from ``[out, in, kh, kw]`` to ``[kh, kw, in, out]``; ``...bn.{weight, bias, running_mean,
running_var}`` -> gamma, beta, moving mean, moving variance. The auxiliary classifiers, ``fc`` and
``num_batches_tracked`` are dropped.

Cadene's ``bn_inception-52deb4733.pth`` (pretrainedmodels) is the other "BN-Inception": Ioffe &
Szegedy's Inception-v2 (double 3x3 branches, average-pool projections, stride-2 modules 3c/4e,
stage widths 320 / 576 / 1056 / 1024). Its tensors have other shapes than CCAN's 480 / 832 / 1024
network, so no renaming can load them; the converter recognises that file and says so.

CHECKPOINT is a ``.pth``/``.pt`` file (read with PyTorch: ``pip install 'tfreid[torch]'``) or an
``.npz`` of the same state dict (no PyTorch needed). The output is a Keras legacy HDF5 weights
file; by default it goes to Keras's cache (``~/.keras/models/tfreid_bn_inception_imagenet.
weights.h5``), where ``model.backbone_weights: imagenet`` finds it. Unless ``--no-check``, the
file is loaded into a full-width BN-Inception to prove every layer fits.

Exit status 0 on success, 2 on bad input (one ``error:`` line; ``TFREID_DEBUG=1`` re-raises).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np

__all__ = ["expected_layers", "googlenet_to_layers", "read_state_dict", "write_layer_weights"]

_SKIP = ("aux1.", "aux2.", "fc.")
_CADENE_KEYS = ("conv1_7x7_s2", "inception_3a_1x1", "inception_3c_")
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")


def expected_layers() -> list[str]:
    """The conv and BN layer names of the BN-Inception backbone, in network order."""
    from tfreid.models.backbones.bn_inception import INCEPTION

    units = ["conv1", "conv2", "conv3"]
    for block in INCEPTION:
        units += [f"inception{block}_branch{b}" for b in ("1", "2_0", "2_1", "3_0", "3_1", "4_1")]
    return [f"{u}_{kind}" for u in units for kind in ("conv", "bn")]


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """`{name: array}` from a PyTorch checkpoint (``.pth``/``.pt``, needs torch) or an ``.npz``.

    A checkpoint saved as ``{"state_dict": ...}`` or from ``nn.DataParallel`` (``module.``) is
    unwrapped.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".npz":
        with np.load(path) as npz:
            state = {k: npz[k] for k in npz.files}
    else:
        try:
            import torch
        except ImportError:
            raise ImportError("reading a PyTorch checkpoint needs PyTorch: pip install "
                              "'tfreid[torch]' (CPU wheel: pip install torch --index-url "
                              "https://download.pytorch.org/whl/cpu), or pass an .npz") from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle / zip errors of a damaged or non-checkpoint file
            raise ValueError(f"{str(path)!r} is not a readable PyTorch checkpoint: {err}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict")
        state = {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    return {k.removeprefix("module."): np.asarray(v) for k, v in state.items()}


def googlenet_to_layers(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Map a torchvision GoogLeNet (BN) state dict to `{keras_layer: [weights in Keras order]}`.

    Raises:
        ValueError: Cadene's Inception-v2 BN-Inception, or a backbone layer missing or incomplete
            (the message names the layer and the PyTorch key).
    """
    if any(k.startswith(_CADENE_KEYS) for k in state):
        raise ValueError("this is Cadene's BN-Inception (Inception-v2: keys 'conv1_7x7_s2', "
                         "'inception_3a_1x1', ...; stage widths 576/1056/1024), not the "
                         "GoogLeNet-with-BN (480/832/1024) that CCAN fine-tunes; its tensors do "
                         "not fit this backbone. Use torchvision's googlenet-1378be20.pth")
    layers = {}
    for layer in expected_layers():
        prefix = _torch_prefix(layer)
        if layer.endswith("_conv"):
            key = f"{prefix}weight"
            if key not in state:
                raise ValueError(f"checkpoint has no {key!r} (layer {layer!r}); expected "
                                 f"torchvision's GoogLeNet state dict")
            kernel = state[key]
            if kernel.ndim != 4:
                raise ValueError(f"{key!r} (layer {layer!r}) has shape {kernel.shape}, "
                                 f"expected a 4-D [out, in, kh, kw] kernel")
            layers[layer] = [np.ascontiguousarray(kernel.transpose(2, 3, 1, 0), np.float32)]
        else:
            missing = [p for p in _BN_PARAMS if f"{prefix}{p}" not in state]
            if missing:
                raise ValueError(f"checkpoint has no {prefix + missing[0]!r} (layer {layer!r})")
            layers[layer] = [np.asarray(state[f"{prefix}{p}"], np.float32) for p in _BN_PARAMS]
    unused = sorted(k for k in state if not k.startswith(_SKIP) and not k.endswith("num_batches_tracked")
                    and not any(k.startswith(_torch_prefix(layer)) for layer in layers))
    if unused:
        raise ValueError(f"checkpoint has {len(unused)} tensors no backbone layer takes, e.g. "
                         f"{unused[:3]}; expected torchvision's GoogLeNet state dict")
    return layers


def _torch_prefix(layer: str) -> str:
    """``inception4a_branch2_1_conv`` -> ``inception4a.branch2.1.conv.`` (torchvision's path)."""
    module, kind = layer.rsplit("_", 1)
    return module.replace("_branch", ".branch").replace("_", ".") + f".{kind}."


def write_layer_weights(layers: dict[str, list[np.ndarray]], path: str | os.PathLike) -> pathlib.Path:
    """Write `{layer: [arrays]}` as a Keras legacy HDF5 weights file (what
    `tfreid.models.backbones.load_backbone_weights` reads), atomically."""
    import h5py

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with h5py.File(tmp, "w") as f:
        f.attrs["layer_names"] = [name.encode("utf8") for name in layers]
        for name, arrays in layers.items():
            group = f.create_group(name)
            names = [f"{i}:0" for i in range(len(arrays))]
            group.attrs["weight_names"] = [n.encode("utf8") for n in names]
            for n, array in zip(names, arrays):
                group.create_dataset(n, data=array)
    os.replace(tmp, path)
    return path


def check_loads(path, width_multiplier: float = 1.0) -> int:
    """Load `path` into a BN-Inception of `width_multiplier`; returns the number of layers."""
    from tfreid.models.backbones import build_bn_inception, load_backbone_weights

    model = build_bn_inception((64, 32, 3), width_multiplier=width_multiplier)
    return len(load_backbone_weights(model, str(path), backbone="bn_inception"))


def main(argv=None) -> int:
    from tfreid.models.backbones.weights import BN_INCEPTION_FILE, keras_cache_dir

    default = os.path.join(keras_cache_dir(), BN_INCEPTION_FILE)
    parser = argparse.ArgumentParser(prog="python -m tfreid.models.convert",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="googlenet-1378be20.pth (or an .npz state dict)")
    parser.add_argument("--out", default=default, help="output .h5 (default %(default)s)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip loading the result into a full-width BN-Inception")
    args = parser.parse_args(argv)
    try:
        layers = googlenet_to_layers(read_state_dict(args.checkpoint))
        path = write_layer_weights(layers, args.out)
        loaded = None if args.no_check else check_loads(path)
    except (ValueError, FileNotFoundError, ImportError) as err:
        if os.environ.get("TFREID_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    count = sum(a.size for arrays in layers.values() for a in arrays)
    print(f"wrote {path}: {len(layers)} layers, {count:,} values"
          + ("" if loaded is None else f"; loads into BN-Inception ({loaded} layers)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
