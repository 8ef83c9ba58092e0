"""Flip test-time augmentation (`eval.flip`, `python -m tfreid.evaluate --flip`) for every model:
the evaluated feature is the mean of the features of the image and of its mirror image."""

import keras
import numpy as np
import pytest
from PIL import Image

from tfreid.data.datasets.base import Sample
from tfreid.inference import extract_features
from tfreid.models import build_model, embedding_model, small_overrides


@pytest.mark.slow
# The flip average lives in the evaluator, not in the models: one Inception and one ResNet model
# cover it (every registered model costs ~30 s here; tests/export covers every model).
@pytest.mark.parametrize("name", ["hacnn", "baseline"])
def test_flip_feature_is_the_mean_of_image_and_mirror(name, tmp_path):
    overrides = small_overrides(name)
    keras.utils.set_random_seed(0)
    embed = embedding_model(build_model(name, 5, **overrides))
    height, width = embed.input.shape[1:3]
    rng = np.random.default_rng(1)
    originals, mirrors = [], []
    for i in range(3):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for kind, array, paths in (("o", pixels, originals), ("m", pixels[:, ::-1], mirrors)):
            path = tmp_path / f"{kind}{i}.png"  # PNG: lossless, so the mirror file is exact
            Image.fromarray(np.ascontiguousarray(array)).save(path)
            paths.append(Sample(str(path), i, 0))
    both = extract_features(embed, originals + mirrors, (height, width), batch_size=8)
    flipped = extract_features(embed, originals, (height, width), batch_size=8, flip=True)
    assert not np.allclose(both[:3], both[3:], atol=1e-4)  # the model is not mirror-invariant
    # (no default graph depends on batch composition: batches of 6 and 3 embed an image alike)
    np.testing.assert_allclose(flipped, (both[:3] + both[3:]) / 2, rtol=1e-4, atol=1e-5)
