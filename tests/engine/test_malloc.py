"""tfreid.engine.malloc: after a training iterator exists, freed tensor memory is reused.

Runs in a fresh process: TensorFlow's Python 3.11 malloc patch is process-global and applied
once, so the order of events must be controlled.
"""

import json
import pathlib
import subprocess
import sys

import pytest

HELPERS = pathlib.Path(__file__).resolve().parent

SCRIPT = r"""
import json, os, resource, sys, tempfile
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, sys.argv[1])
import keras, numpy as np
import trainer_helpers as H
from tfreid.engine import malloc, trainer as trainer_module
from tfreid.engine.strategy import create_strategy

def refault_pages():
    # Minor faults when a freed 3 MiB buffer is allocated and written again (NumPy asks for
    # huge pages from 4 MiB on, which would hide the page count).
    a = np.ones(3 << 18, np.float32); del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    b = np.ones(3 << 18, np.float32); del b
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def fit_one_step(keep):
    trainer_module.keep_tensor_memory = keep
    images, labels = H.make_data(2)
    trainer = trainer_module.Trainer(
        strategy=create_strategy(1), model_fn=H.tiny_model,
        optimizer_fn=lambda: keras.optimizers.SGD(0.1), loss_terms=H.loss_terms(),
        output_dir=tempfile.mkdtemp(), global_batch_size=8, steps_per_epoch=1, epochs=1,
        progress=False)
    trainer.fit(H.dataset_fn_for(images, labels))

fit_one_step(lambda: False)           # TF pins the mmap threshold; nothing undoes it
pinned = refault_pages()
fit_one_step(malloc.keep_tensor_memory)
print(json.dumps({"pinned": pinned, "kept": refault_pages(),
                  "applies": malloc.keep_tensor_memory()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning only")
def test_trainer_keeps_freed_tensor_memory_in_the_heap():
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(HELPERS)], capture_output=True,
                         text=True, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["applies"]:
        pytest.skip("not glibc: nothing to tune")
    # 3 MiB = 768 pages: re-faulted page by page while TF's 128 KiB threshold holds ...
    assert result["pinned"] >= 700, result
    # ... and served from the heap, already mapped, after the trainer restored the thresholds.
    assert result["kept"] <= 50, result
