"""`python -m tfreid.models.convert`: PyTorch BN-Inception ImageNet weights -> CCAN's backbones.

    python -m tfreid.models.convert CHECKPOINT [--out PATH] [--no-check]

Two checkpoints convert, recognised by their keys (`tfreid.models.pytorch_layouts`):

- torchvision's ``googlenet-1378be20.pth`` (https://download.pytorch.org/models/googlenet-1378be20.pth):
  GoogLeNet v1 with BN, CCAN's paper backbone (`tfreid.models.backbones.bn_inception`, 480 / 832
  / 1024 channels; ``model.kwargs.backbone: googlenet_bn``, the default). Output
  ``tfreid_bn_inception_imagenet.weights.h5``.
- Cadene's ``bn_inception-52deb4733.pth``
  (http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth): Ioffe & Szegedy's
  BN-Inception, i.e. Inception-v2 (`tfreid.models.backbones.inception_v2`, 320 / 608 / 1024;
  ``model.kwargs.backbone: inception_v2``). Output ``tfreid_inception_v2_imagenet.weights.h5``.

Layer by layer, kernels transposed to Keras's ``[kh, kw, in, out]``, Cadene's conv biases folded
into the BN moving means, and each checkpoint's input space (torchvision: ``transform_input``;
Cadene: BGR 0..255 minus its mean) folded into the first conv, so the converted backbone takes
tfreid's ImageNet-normalised RGB input. Classifiers and ``num_batches_tracked`` are dropped.

CHECKPOINT is a ``.pth``/``.pt`` file (read with PyTorch: ``pip install 'tfreid[torch]'``) or an
``.npz`` of the same state dict (no PyTorch needed). The output is a Keras legacy HDF5 weights
file; by default it goes to Keras's cache (``~/.keras/models/``) under the backbone's file name,
where ``model.backbone_weights: imagenet`` finds it. Unless ``--no-check``, the file is loaded
into the full-width backbone of its layout to prove every layer fits.

Exit status 0 on success, 2 on bad input (one ``error:`` line; ``TFREID_DEBUG=1`` re-raises).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import numpy as np

from tfreid.models.pytorch_layouts import state_to_layers

__all__ = ["check_loads", "read_state_dict", "write_layer_weights"]


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


def check_loads(path, backbone: str = "bn_inception", width_multiplier: float = 1.0) -> int:
    """Load `path` into `backbone` (``"bn_inception"``, ``"inception_v2"``) at
    `width_multiplier`; returns the number of layers loaded."""
    from tfreid.models.backbones import build_bn_inception, build_inception_v2, load_backbone_weights

    build = build_inception_v2 if backbone == "inception_v2" else build_bn_inception
    model = build((64, 32, 3), width_multiplier=width_multiplier)
    return len(load_backbone_weights(model, str(path), backbone=backbone))


def main(argv=None) -> int:
    from tfreid.models.backbones.weights import CONVERTED, keras_cache_dir

    parser = argparse.ArgumentParser(prog="python -m tfreid.models.convert",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="googlenet-1378be20.pth or bn_inception-52deb4733.pth "
                                           "(or an .npz state dict)")
    parser.add_argument("--out", help=f"output .h5 (default: {keras_cache_dir()}/"
                                      f"{{{', '.join(f for f, _, _ in CONVERTED.values())}}} by layout)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip loading the result into the full-width backbone")
    args = parser.parse_args(argv)
    try:
        backbone, layers = state_to_layers(read_state_dict(args.checkpoint))
        file, _, what = CONVERTED[backbone]
        path = write_layer_weights(layers, args.out or os.path.join(keras_cache_dir(), file))
        loaded = None if args.no_check else check_loads(path, backbone)
    except (ValueError, FileNotFoundError, ImportError) as err:
        if os.environ.get("TFREID_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    count = sum(a.size for arrays in layers.values() for a in arrays)
    print(f"wrote {path}: {what}, {len(layers)} layers, {count:,} values"
          + ("" if loaded is None else f"; loads into the full-width backbone ({loaded} layers)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
