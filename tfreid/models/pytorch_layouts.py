"""PyTorch ImageNet state dicts -> tfreid backbone layers, for `tfreid.models.convert`.

Two layouts, told apart by their keys (`detect_layout`):

- ``"googlenet"``: torchvision's ``googlenet`` (``conv1.conv.weight``, ``inception4a.branch2.1.
  conv.weight``, ...) -> `tfreid.models.backbones.bn_inception` (CCAN's paper backbone):
  module ``inception4a.branch2.1.conv`` -> layer ``inception4a_branch2_1_conv``;
  ``...bn.{weight, bias, running_mean, running_var}`` -> gamma, beta, moving mean, moving
  variance. ``aux1``, ``aux2``, ``fc`` are dropped.
- ``"cadene"``: Cadene's ``pretrainedmodels.bninception`` (``conv1_7x7_s2.weight``,
  ``inception_3a_1x1.weight``, ...) -> `tfreid.models.backbones.inception_v2`: conv ``M`` ->
  layer ``M_conv``, its BN ``M_bn`` -> layer ``M_bn``. The conv bias ``b`` folds exactly into
  the BN: ``BN(Wx + b)`` with moving mean ``mu`` equals ``BN(Wx)`` with moving mean ``mu - b``.
  ``last_linear`` is dropped.

Kernels go from ``[out, in, kh, kw]`` to ``[kh, kw, in, out]``; ``num_batches_tracked`` is
dropped. Both checkpoints expect another input than tfreid's (RGB, ``(x / 255 - mean) / std``
with ImageNet's mean and std); `fold_input_transform` folds the difference into the first conv
and its BN, so the converted network computes on tfreid's input what the PyTorch network
computes on its own. That is exact wherever the first conv's window lies inside the image: at
the border PyTorch pads its own input space with zeros, tfreid pads the normalised input, and
zero in one space is not zero in the other.
"""

from __future__ import annotations

import numpy as np

from tfreid.preprocessing import IMAGENET_MEAN, IMAGENET_STD

LAYOUTS = {"googlenet": "bn_inception", "cadene": "inception_v2"}  # layout -> backbone
_SKIP = {"googlenet": ("aux1.", "aux2.", "fc."), "cadene": ("last_linear.",)}
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
_MEAN, _STD = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)  # tfreid's input space (RGB)
CADENE_MEAN_BGR = np.array([104.0, 117.0, 128.0])  # pretrainedmodels' settings: BGR, 0..255, std 1


def detect_layout(state: dict) -> str:
    """``"googlenet"`` or ``"cadene"`` from the first conv's key."""
    if "conv1.conv.weight" in state:
        return "googlenet"
    if "conv1_7x7_s2.weight" in state:
        return "cadene"
    raise ValueError(f"checkpoint has neither torchvision GoogLeNet's 'conv1.conv.weight' nor "
                     f"Cadene BN-Inception's 'conv1_7x7_s2.weight' (first keys: {sorted(state)[:3]}); "
                     f"expected googlenet-1378be20.pth or bn_inception-52deb4733.pth")


def expected_layers(backbone: str = "bn_inception") -> list[str]:
    """The conv and BN layer names of `backbone` (``"bn_inception"``, ``"inception_v2"``), in
    network order."""
    if backbone == "inception_v2":
        from tfreid.models.backbones.inception_v2 import conv_units

        units = conv_units()
    else:
        from tfreid.models.backbones.bn_inception import INCEPTION

        units = ["conv1", "conv2", "conv3"]
        for block in INCEPTION:
            units += [f"inception{block}_branch{b}" for b in ("1", "2_0", "2_1", "3_0", "3_1", "4_1")]
    return [f"{u}_{kind}" for u in units for kind in ("conv", "bn")]


def torch_prefix(layer: str) -> str:
    """``inception4a_branch2_1_conv`` -> ``inception4a.branch2.1.conv.`` (torchvision's path)."""
    module, kind = layer.rsplit("_", 1)
    return module.replace("_branch", ".branch").replace("_", ".") + f".{kind}."


def _get(state, key, layer, ndim, layout):
    if key not in state:
        raise ValueError(f"checkpoint has no {key!r} (layer {layer!r}); expected the {layout} "
                         f"state dict")
    array = np.asarray(state[key], np.float32)
    if array.ndim != ndim:
        raise ValueError(f"{key!r} (layer {layer!r}) has shape {array.shape}, expected "
                         f"{'a 4-D [out, in, kh, kw] kernel' if ndim == 4 else 'a vector'}")
    return array


def _kernel(state, key, layer, layout):
    return np.ascontiguousarray(_get(state, key, layer, 4, layout).transpose(2, 3, 1, 0))


def _bn(state, prefix, layer, layout, channels):
    arrays = [_get(state, prefix + p, layer, 1, layout) for p in _BN_PARAMS]
    for p, array in zip(_BN_PARAMS, arrays):
        if array.shape != (channels,):
            raise ValueError(f"{prefix + p!r} (layer {layer!r}) has shape {array.shape}, expected "
                             f"({channels},): the conv before it has {channels} filters")
    return arrays


def _check_all_used(state, layers, prefixes, layout):
    unused = sorted(k for k in state if not k.startswith(_SKIP[layout])
                    and not k.endswith("num_batches_tracked") and not k.startswith(prefixes))
    if unused:
        raise ValueError(f"checkpoint has {len(unused)} tensors no backbone layer takes, e.g. "
                         f"{unused[:3]}; expected the {layout} state dict")
    return layers


def googlenet_to_layers(state: dict) -> dict[str, list[np.ndarray]]:
    """torchvision GoogLeNet state dict -> ``{bn_inception layer: [weights in Keras order]}``,
    with ``transform_input`` folded into ``conv1`` (its ImageNet weights expect
    ``x * std / 0.5 + (mean - 0.5) / 0.5`` per channel of the normalised input).

    Raises:
        ValueError: a backbone tensor missing or of the wrong rank/length, or a tensor no layer
            takes (the message names the layer and the PyTorch key).
    """
    layers = {}
    for conv in expected_layers("bn_inception")[::2]:
        kernel = _kernel(state, f"{torch_prefix(conv)}weight", conv, "googlenet")
        bn = conv[:-len("conv")] + "bn"
        layers[conv], layers[bn] = [kernel], _bn(state, torch_prefix(bn), bn, "googlenet", kernel.shape[-1])
    layers["conv1_conv"][0], layers["conv1_bn"] = fold_input_transform(
        layers["conv1_conv"][0], layers["conv1_bn"], _STD / 0.5, (_MEAN - 0.5) / 0.5)
    return _check_all_used(state, layers, tuple(torch_prefix(layer) for layer in layers), "googlenet")


def cadene_to_layers(state: dict) -> dict[str, list[np.ndarray]]:
    """Cadene BN-Inception state dict -> ``{inception_v2 layer: [weights in Keras order]}``: conv
    biases folded into the BN moving means, Cadene's input space (BGR, 0..255 minus
    `CADENE_MEAN_BGR`) folded into ``conv1_7x7_s2``.

    Raises:
        ValueError: as `googlenet_to_layers`.
    """
    from tfreid.models.backbones.inception_v2 import conv_units

    layers = {}
    for unit in conv_units():
        conv, bn = f"{unit}_conv", f"{unit}_bn"
        kernel = _kernel(state, f"{unit}.weight", conv, "cadene")
        bias = _get(state, f"{unit}.bias", conv, 1, "cadene")
        gamma, beta, mean, var = _bn(state, f"{unit}_bn.", bn, "cadene", kernel.shape[-1])
        if bias.shape != mean.shape:
            raise ValueError(f"{unit + '.bias'!r} (layer {conv!r}) has shape {bias.shape}, "
                             f"expected {mean.shape}")
        layers[conv], layers[bn] = [kernel], [gamma, beta, mean - bias, var]
    rgb_kernel = layers["conv1_7x7_s2_conv"][0][:, :, ::-1]  # Cadene's input channels are BGR
    layers["conv1_7x7_s2_conv"][0], layers["conv1_7x7_s2_bn"] = fold_input_transform(
        rgb_kernel, layers["conv1_7x7_s2_bn"], 255.0 * _STD, 255.0 * _MEAN - CADENE_MEAN_BGR[::-1])
    prefixes = tuple(f"{unit}{suffix}" for unit in conv_units() for suffix in (".", "_bn."))
    return _check_all_used(state, layers, prefixes, "cadene")


def fold_input_transform(kernel, bn, scale, offset):
    """The first conv and BN for input ``x`` of a network trained on ``scale * x + offset``.

    ``conv(scale * x + offset) = conv'(x) + c`` with ``conv'`` the kernel scaled per input
    channel and ``c[o] = sum(kernel[..., i, o] * offset[i])`` (where the window lies inside the
    image); the BN then subtracts ``moving_mean - c`` instead.

    Args:
        kernel: ``[kh, kw, in, out]``, input channels in ``x``'s order.
        bn: ``[gamma, beta, moving_mean, moving_variance]`` of the BN after the conv.
        scale, offset: per input channel, length ``in``.

    Returns:
        ``(kernel', [gamma, beta, moving_mean', moving_variance])`` as float32.
    """
    kernel = np.asarray(kernel, np.float64)
    if kernel.shape[2] != len(scale):
        raise ValueError(f"the first conv has {kernel.shape[2]} input channels, expected "
                         f"{len(scale)} (RGB)")
    gamma, beta, mean, var = bn
    shift = np.einsum("hwio,i->o", kernel, np.asarray(offset, np.float64))
    folded = np.ascontiguousarray(kernel * np.asarray(scale, np.float64)[:, None], np.float32)
    return folded, [gamma, beta, (mean - shift).astype(np.float32), var]


def state_to_layers(state: dict) -> tuple[str, dict[str, list[np.ndarray]]]:
    """``(backbone, {layer: [weights]})`` for a state dict of either layout."""
    layout = detect_layout(state)
    convert = googlenet_to_layers if layout == "googlenet" else cadene_to_layers
    return LAYOUTS[layout], convert(state)
