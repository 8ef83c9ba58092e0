"""Generated PyTorch-layout state dicts (torchvision GoogLeNet, Cadene BN-Inception) and a NumPy
conv + BN reference, for the converter tests. No PyTorch needed."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tfreid.models import pytorch_layouts as layouts

IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
BN_KEYS = ("weight", "bias", "running_mean", "running_var")

# Cadene's bninception.py written out independently of tfreid: (1x1, 3x3 reduce, 3x3, double 3x3
# reduce, double 3x3, pool projection); 0 = no such branch (3c, 4e: stride 2, pool passed through).
CADENE = {"3a": (64, 64, 64, 64, 96, 32), "3b": (64, 64, 96, 64, 96, 64), "3c": (0, 128, 160, 64, 96, 0),
          "4a": (224, 64, 96, 96, 128, 128), "4b": (192, 96, 128, 96, 128, 128),
          "4c": (160, 128, 160, 128, 160, 128), "4d": (96, 128, 192, 160, 192, 128),
          "4e": (0, 128, 192, 192, 256, 0), "5a": (352, 192, 320, 160, 224, 128),
          "5b": (352, 192, 320, 192, 224, 128)}


def randomize(model, seed):
    """Every weight of `model` uniform in [-0.5, 1) ([0.5, 1) for gamma and variances)."""
    rng = np.random.default_rng(seed)
    for var in model.weights:
        low = 0.5 if "variance" in var.path or "gamma" in var.path else -0.5
        var.assign(rng.uniform(low, 1.0, var.shape).astype("float32"))
    return model


def cadene_convs(width=1.0):
    """``[(module, in, out, kernel)]`` of Cadene's BN-Inception, widths scaled like tfreid's."""
    w = lambda c: max(1, int(round(c * width)))
    convs = [("conv1_7x7_s2", 3, w(64), 7), ("conv2_3x3_reduce", w(64), w(64), 1),
             ("conv2_3x3", w(64), w(192), 3)]
    cin = w(192)
    for block, (c1, r3, c3, rd, cd, proj) in CADENE.items():
        m = f"inception_{block}_"
        convs += [(m + "1x1", cin, w(c1), 1)] if c1 else []
        convs += [(m + "3x3_reduce", cin, w(r3), 1), (m + "3x3", w(r3), w(c3), 3),
                  (m + "double_3x3_reduce", cin, w(rd), 1), (m + "double_3x3_1", w(rd), w(cd), 3),
                  (m + "double_3x3_2", w(cd), w(cd), 3)]
        convs += [(m + "pool_proj", cin, w(proj), 1)] if proj else []
        cin = (w(c1) + w(c3) + w(cd) + w(proj)) if proj else (w(c3) + w(cd) + cin)
    return convs


def cadene_state_dict(width=1.0, seed=0):
    """Random tensors under Cadene's keys and shapes (conv biases, ``num_batches_tracked`` and a
    ``last_linear`` stand-in included)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, cin, cout, k in cadene_convs(width):
        state[f"{name}.weight"] = rng.normal(0, 0.1, (cout, cin, k, k)).astype(np.float32)
        state[f"{name}.bias"] = rng.uniform(-0.5, 0.5, cout).astype(np.float32)
        for key, low in zip(BN_KEYS, (0.5, -0.5, -0.5, 0.5)):
            state[f"{name}_bn.{key}"] = rng.uniform(low, low + 1.0, cout).astype(np.float32)
        state[f"{name}_bn.num_batches_tracked"] = np.array(3)
    state["last_linear.weight"], state["last_linear.bias"] = np.zeros((10, 8), np.float32), np.zeros(10, np.float32)
    return state


def googlenet_state_dict(backbone) -> dict[str, np.ndarray]:
    """`backbone`'s (a tfreid BN-Inception) weights as torchvision's GoogLeNet state dict
    ([out, in, kh, kw] kernels), plus the auxiliary classifiers and fc a real checkpoint carries."""
    state = {}
    for layer in layouts.expected_layers():
        prefix = layouts.torch_prefix(layer)
        arrays = backbone.get_layer(layer).get_weights()
        if layer.endswith("_conv"):
            state[prefix + "weight"] = arrays[0].transpose(3, 2, 0, 1).copy()
        else:
            for name, array in zip(BN_KEYS, arrays):
                state[prefix + name] = array
            state[prefix + "num_batches_tracked"] = np.array(7)
    state["aux1.fc1.weight"] = np.zeros((4, 4), np.float32)
    state["fc.weight"], state["fc.bias"] = np.zeros((10, 8), np.float32), np.zeros(10, np.float32)
    return state


def conv_bn(x, kernel, bn, stride, pad, eps, bias=0.0):
    """NumPy reference: PyTorch's zero-padded conv (``[out, in, kh, kw]`` kernel, + bias) then
    inference BN (``[gamma, beta, mean, var]``) on NHWC `x`, in float64."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = kernel.shape[-1]
    windows = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    y = np.einsum("bhwcij,ocij->bhwo", windows, np.asarray(kernel, np.float64)) + bias
    gamma, beta, mean, var = (np.asarray(a, np.float64) for a in bn)
    return (y - mean) / np.sqrt(var + eps) * gamma + beta


def interior(size, kernel=7, stride=2, pad=3):
    """Output positions whose conv window lies inside an input of `size`."""
    return slice(-(-pad // stride), (size + pad - kernel) // stride + 1)
