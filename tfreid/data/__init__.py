"""ReID datasets, synthetic data and the tf.data input pipeline.

`tfreid.data` never imports models. The pipeline lives in `tfreid.data.pipeline`
(it imports TensorFlow; the dataset parsers do not).
"""

from tfreid.data.datasets import (
    ReIDDataset,
    Sample,
    available_datasets,
    build_dataset,
    register_dataset,
)

__all__ = ["ReIDDataset", "Sample", "available_datasets", "build_dataset", "register_dataset"]
