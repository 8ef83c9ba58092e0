"""A tiny synthetic set and a tiny HA-CNN run directory (with logs) for the visualisation tests."""

import pathlib

import pytest

# The registered small HA-CNN: the same graph and 160x64 input at a fraction of the width.
MODEL_KWARGS = {"widths": [32, 64, 96], "feature_dim": 64}
NUM_CLASSES = 6


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> pathlib.Path:
    from tfreid.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("viz-syn") / "data"
    generate(root, SyntheticConfig(train_ids=NUM_CLASSES, test_ids=3, cameras=2, images_per_id=4,
                                   distractors=2, junk=0, seed=3), workers=1, verbose=False)
    return root


def write_run(run: pathlib.Path, data_root, model) -> pathlib.Path:
    """Writes the small HA-CNN `model` as a run directory (`tests.run_helpers.write_run`)."""
    from tests.run_helpers import write_run as write

    return write(run, "hacnn", model, data_root, NUM_CLASSES, MODEL_KWARGS).path


@pytest.fixture(scope="session")
def tiny_model():
    """A small HA-CNN with randomised BatchNorm statistics (so the soft maps are not flat); its
    hard-attention Dense kernels are still zero, so every theta is the initial stripe layout."""
    import keras

    from tfreid.models import build_model

    from tests.run_helpers import randomize_batchnorm

    keras.utils.set_random_seed(1)
    return randomize_batchnorm(build_model("hacnn", NUM_CLASSES, **MODEL_KWARGS), seed=1)


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tiny_model, tmp_path_factory) -> pathlib.Path:
    return write_run(tmp_path_factory.mktemp("viz-run") / "run", tiny_data, tiny_model)


@pytest.fixture(scope="session")
def make_run(tiny_data, tmp_path_factory):
    """`make_run(model)`: another run directory on the tiny set holding `model`'s weights."""
    return lambda model: write_run(tmp_path_factory.mktemp("viz-run") / "run", tiny_data, model)
