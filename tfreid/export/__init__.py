"""Deployment exports: SavedModel (TF Serving), TFLite/LiteRT, `.keras`.

Submodules import TensorFlow; this package itself does not (`python -m tfreid.export --help`
answers without it).
"""

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")  # TFLite variants (tfreid.export.tflite)
