"""A tiny HA-CNN run directory and unseen test images shared by the export tests."""

import pathlib

import numpy as np
import pytest

# A narrow HA-CNN (same graph, same 160x64 input, ~20x fewer weights) keeps the conversions and
# int8 calibration of the shared export affordable on a loaded 2-core machine.
MODEL_KWARGS = {"widths": [32, 64, 96], "feature_dim": 64}
EMBEDDING_SIZE = 2 * MODEL_KWARGS["feature_dim"]  # global ++ local features


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from tfreid.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("export-syn") / "data"
    generate(root, SyntheticConfig(train_ids=6, test_ids=3, cameras=2, images_per_id=4,
                                   distractors=0, junk=0, seed=5), verbose=False)
    return root


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> pathlib.Path:
    """A run directory as `python -m tfreid.train` writes it (config.yaml, run.json,
    checkpoints/), holding a randomly initialised HA-CNN whose BatchNorm statistics and affine
    parameters are randomised so the checkpoint is not an identity-BN network (training even
    2 steps costs ~100 s on the shared CPU)."""
    import keras

    from tests.run_helpers import randomize_batchnorm, write_run
    from tfreid.models import build_model

    keras.utils.set_random_seed(1)
    model = randomize_batchnorm(build_model("hacnn", 6, **MODEL_KWARGS), seed=1)
    return write_run(tmp_path_factory.mktemp("export-run") / "run", "hacnn", model, tiny_data, 6,
                     MODEL_KWARGS).path


@pytest.fixture(scope="session")
def test_images(tiny_data) -> list[pathlib.Path]:
    """Images the model never trained on (query split), JPEG files."""
    return sorted((tiny_data / "query").glob("*.jpg"))[:6]


@pytest.fixture(scope="session")
def pixels(test_images) -> np.ndarray:
    """The test images as float32 [N, 160, 64, 3] 0..255, decoded/resized as the exports do."""
    from tfreid.preprocessing import load_image

    return np.stack([load_image(p, (160, 64)).numpy() for p in test_images])


@pytest.fixture(scope="session")
def keras_reference(tiny_run, pixels) -> np.ndarray:
    """Embeddings of `pixels` by the run's checkpoint in Keras (the parity reference)."""
    from tfreid.preprocessing import normalize
    from tfreid.models import embedding_model
    from tfreid.runs import load_run

    _, model, _ = load_run(tiny_run)
    return embedding_model(model)(normalize(pixels), training=False).numpy()


@pytest.fixture(scope="session")
def exports(tiny_run, tmp_path_factory) -> dict:
    """`python -m tfreid.export --format all` of the tiny run (all four TFLite variants, int8
    calibrated on 24 training images); `{label: path}` plus `"root"`."""
    from tfreid.export.run_export import export_run

    root = tmp_path_factory.mktemp("exports") / "saved_models"
    written = export_run(tiny_run, ["savedmodel", "tflite", "keras"],
                         ["none", "float16", "dynamic", "int8"], output=root,
                         calibration_images=24)
    return {**{k: pathlib.Path(v) for k, v in written.items()}, "root": root}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (NumPy reference)."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
