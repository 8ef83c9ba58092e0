"""The TensorFlow internals the TFLite export relies on, kept in this one module.

TensorFlow 2.21 has no public API for these three steps; each function names the internal it
wraps, so a TensorFlow upgrade that moves one breaks here and nowhere else.

- `freeze`: Keras 3 variables are not frozen by `TFLiteConverter.from_concrete_functions` (the
  flatbuffer would read uninitialised VAR_HANDLEs), so they are folded into constants first.
- `calibrate` / `quantize`: the converter's own two-step int8 path (also behind
  `tf.lite.experimental.QuantizationDebugger`), split so that the calibrated ranges can be
  adjusted before quantising.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["calibrate", "freeze", "quantize"]


def freeze(concrete_function):
    """`concrete_function` with its variables folded into constants."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(concrete_function)


def calibrate(converter: tf.lite.TFLiteConverter) -> bytes:
    """Run the representative dataset through `converter` (int8 settings set) and return the
    float model annotated with each tensor's calibrated min/max, not yet quantised."""
    converter._experimental_calibrate_only = True
    return converter.convert()


def quantize(calibrated: bytes, denylisted_nodes: list[str] | None) -> bytes:
    """Quantise a `calibrate`d model to int8 (per-channel weights, float32 input and output),
    keeping the ops whose output tensors are named in `denylisted_nodes` float32."""
    from tensorflow.lite.python.convert import mlir_quantize

    return bytes(mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                               input_data_type=tf.float32, output_data_type=tf.float32,
                               denylisted_nodes=denylisted_nodes or None))
