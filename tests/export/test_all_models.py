"""Every registered model exports in every format and matches Keras (issue 5: "for every model in
the registry"). Each model is built at its registry `small` size (same graph, narrow widths),
written as a run directory, exported with `python -m tfreid.export --format all`, and compared
with the Keras checkpoint on unseen images; all SavedModels are then loaded in one fresh process
through both signatures."""

import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.export.conftest import cosine
from tests.export.test_export_cli import DENYLIST, _graph_ops
from tfreid.models import available_models

# HA-CNN's every-format export, parity bounds and fresh-process loading are checked on the
# session export of tests/export/conftest.py (test_tflite, test_inference, test_export_cli);
# exporting it again here would add two minutes to CI.
MODELS = [name for name in available_models() if name != "hacnn"]
# variant -> (minimum per-image cosine, minimum mean cosine) vs the Keras checkpoint. The
# issue's bounds (int8: mean >= 0.98 on the trained run); these random-init narrow networks
# calibrated on 16 images meet them too.
BOUNDS = {"savedmodel": (0.9999, 0.9999), "keras": (0.9999, 0.9999),
          "tflite-float32": (0.9999, 0.9999), "tflite-float16": (0.999, 0.999),
          "tflite-dynamic": (0.999, 0.999), "tflite-int8": (0.95, 0.98)}
_EXPORTS: dict = {}
# Random BN statistics/affines with gamma / sqrt(var) in [0.35, 1]: a non-identity BN for the
# folding, but damped. With scales up to 1.7 (tests/export/conftest.py's HA-CNN) the random deep
# residual nets (ResNet-50 models) blow activations up to norms ~2000 and become chaotic: merely
# rounding the Keras weights to float16 then moves AANet's embedding to cosine 0.98, so no
# quantised export could meet the bounds on such a network (a trained network is not chaotic).
BN_RANGES = {"gamma": (0.5, 1.0), "moving_variance": (1.0, 2.0)}


def _make_run(name: str, data_root: pathlib.Path, root: pathlib.Path):
    """A run directory (config.yaml, run.json, checkpoint) of the small `name` with randomised
    BatchNorm statistics/affines (so BN folding and quantisation see a non-identity BN)."""
    import keras

    from tests.run_helpers import randomize_batchnorm, write_run
    from tfreid.models import build_model, small_overrides

    kwargs = dict(small_overrides(name))
    height, width = kwargs.pop("input_shape", (160, 64, 3))[:2]
    keras.utils.set_random_seed(7)
    model = build_model(name, 6, input_shape=(height, width, 3), **kwargs)
    randomize_batchnorm(model, seed=7, ranges=BN_RANGES)
    run = write_run(root / f"run-{name}", name, model, data_root, 6, kwargs, (height, width))
    return run.path, model, (height, width)


def _pixels(paths, size) -> np.ndarray:
    from tfreid.preprocessing import load_image

    return np.stack([load_image(p, size).numpy() for p in paths])


@pytest.fixture(scope="module")
def exported(tiny_data, test_images, tmp_path_factory):
    """`exported(name)` -> dict(run, paths, size, reference), built once per model."""
    from tfreid.preprocessing import normalize
    from tfreid.export.run_export import export_run
    from tfreid.models import embedding_model

    root = tmp_path_factory.mktemp("all-models")

    def get(name):
        if name not in _EXPORTS:
            run, model, size = _make_run(name, tiny_data, root)
            paths = export_run(run, ["savedmodel", "tflite", "keras"],
                               ["none", "float16", "dynamic", "int8"],
                               output=root / "saved_models", calibration_images=16)
            pixels = _pixels(test_images, size)
            reference = embedding_model(model)(normalize(pixels), training=False).numpy()
            _EXPORTS[name] = {"run": run, "paths": {k: pathlib.Path(v) for k, v in paths.items()},
                              "size": size, "pixels": pixels, "reference": reference,
                              "root": root / "saved_models"}
        return _EXPORTS[name]

    return get


@pytest.mark.slow  # ~15-25 s per model (4 TFLite conversions, SavedModel, .keras)
@pytest.mark.parametrize("name", MODELS)
def test_every_format_matches_keras(exported, name):
    from tfreid.inference import FeatureExtractor

    ex = exported(name)
    sm = ex["root"] / name / "1"  # TF Serving layout: <base>/<model>/<numeric version>/
    assert ex["paths"]["savedmodel"] == sm and (sm / "saved_model.pb").is_file()
    assert (sm / "variables" / "variables.index").is_file()
    info = json.loads((sm / "assets" / "tfreid.json").read_text())
    assert info["model"] == name and info["input_size"] == list(ex["size"])
    assert info["embedding_size"] == ex["reference"].shape[1]
    assert not _graph_ops(sm) & DENYLIST
    for fmt, (per_image, mean) in BOUNDS.items():
        extractor = FeatureExtractor(ex["paths"][fmt])
        assert extractor.image_size == ex["size"], fmt
        cos = cosine(extractor(ex["pixels"]), ex["reference"])
        assert cos.min() >= per_image and cos.mean() >= mean, (fmt, cos)
        if fmt.startswith("tflite"):
            sidecar = json.loads(ex["paths"][fmt].with_suffix(".json").read_text())
            assert not any(op.startswith(("Flex", "CUSTOM")) for op in sidecar["ops"]), sidecar["ops"]
            assert extractor.kernels == "xnnpack", fmt  # XNNPACK accepts every variant


@pytest.mark.slow  # one fresh interpreter for all models (~15 s)
def test_fresh_process_savedmodels_both_signatures(exported, test_images):
    """Each SavedModel, loaded in a new Python process (tfreid not imported), answers through
    `serving_default` (pixels) and `serve_bytes` (the JPEG files) with the Keras embeddings."""
    done = {}
    for name in MODELS:
        try:
            done[name] = exported(name)
        except Exception as err:  # reported by test_every_format_matches_keras
            print(f"{name}: not exported ({type(err).__name__}: {err})")
    assert done, "no model exported"
    jobs = {name: {"path": str(ex["paths"]["savedmodel"]), "pixels": ex["pixels"].tolist()}
            for name, ex in done.items()}
    script = textwrap.dedent(f"""
        import json, sys, numpy as np, tensorflow as tf
        jobs = json.loads(sys.stdin.read())
        raw = tf.stack([tf.io.read_file(p) for p in {[str(p) for p in test_images]!r}])
        out = {{}}
        for name, job in jobs.items():
            sig = tf.saved_model.load(job["path"]).signatures
            a = sig["serving_default"](images=tf.constant(job["pixels"], tf.float32))["embedding"]
            b = sig["serve_bytes"](image_bytes=raw)["embedding"]
            out[name] = [a.numpy().tolist(), b.numpy().tolist()]
        assert "tfreid" not in sys.modules
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(jobs),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, ex in done.items():
        a, b = (np.array(v) for v in out[name])
        np.testing.assert_allclose(a, ex["reference"], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(b, ex["reference"], atol=1e-4, err_msg=name)
