"""tfreid: person re-identification with attention networks in TensorFlow 2 / Keras 3."""

import importlib.util as _util

__version__ = "0.1.0"

# TensorFlow is an extra so that CPU and GPU installs each get exactly one TensorFlow build.
if _util.find_spec("tensorflow") is None:
    raise ImportError("tfreid needs TensorFlow, which comes with an extra: "
                      "pip install 'tfreid[cpu]' (CPU) or 'tfreid[gpu]' (CUDA GPUs, Linux)")
