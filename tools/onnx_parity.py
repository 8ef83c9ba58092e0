"""ONNX export of every registered model at full size (random weights): conversion time, file size,
ONNX Runtime vs Keras cosine on synthetic test images, and batch-1 latency of both.

    python tools/onnx_parity.py [--models hacnn ccan ...] [--images 32] [--steps 20]

Needs `pip install 'tfreid[onnx]'`. Prints one Markdown table row per model (docs/export.md).
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import numpy as np


def main(argv=None) -> int:
    import keras
    import tensorflow as tf

    from tfreid.data import build_dataset
    from tfreid.export.onnx_export import export_onnx
    from tfreid.export.tflite import frozen_function
    from tfreid.inference import FeatureExtractor
    from tfreid.models import available_models, build_model, embedding_model
    from tfreid.preprocessing import load_image, normalize

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=available_models())
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    data = build_dataset("synthetic")
    print("| model | input | convert s | .onnx MB | cos min / mean | Keras b1 ms | ORT b1 ms |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        keras.utils.set_random_seed(0)
        model = build_model(name, 10)
        size = tuple(int(v) for v in model.input.shape[1:3])
        embed = embedding_model(model)
        pixels = np.stack([load_image(s.path, size).numpy() for s in data.query[:args.images]])
        reference = embed(normalize(pixels), training=False).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = export_onnx(embed, pathlib.Path(tmp) / f"{name}.onnx", size,
                               frozen=frozen_function(embed, size))
            seconds = time.perf_counter() - start
            extractor = FeatureExtractor(path)
            got = extractor(pixels)
            cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
            forward = tf.function(lambda x: embed(normalize(x), training=False))
            one = pixels[:1]
            timings = {"keras": [], "ort": []}
            for _ in range(args.steps):  # interleaved; first call of each is warm-up
                for label, fn in (("keras", lambda: forward(tf.constant(one)).numpy()),
                                  ("ort", lambda: extractor.embed_pixels(one))):
                    t0 = time.perf_counter()
                    fn()
                    timings[label].append(time.perf_counter() - t0)
            ms = {k: 1000 * float(np.median(v[1:])) for k, v in timings.items()}
            print(f"| `{name}` | {size[0]}x{size[1]} | {seconds:.1f} | {path.stat().st_size / 1e6:.1f} "
                  f"| {cos.min():.6f} / {cos.mean():.6f} | {ms['keras']:.1f} | {ms['ort']:.1f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
