"""Worker process for the multi-worker test (MultiWorkerMirroredStrategy on 127.0.0.1).

    python tests/engine/multiworker_helpers.py RUN_DIR RESULT_DIR HOST:PORT,HOST:PORT TASK_INDEX

Every worker trains the same tiny configuration (``trainer_helpers.tiny_model``, SGD, global batch
8, synchronized BN) into the SAME ``RUN_DIR`` — as on a shared filesystem — and writes its final
weights to ``RESULT_DIR/worker<i>.npz`` plus one JSON line on stdout. The collective-op setup
must come before any other TF op, hence a fresh process per worker.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

STEPS_PER_EPOCH, EPOCHS, GLOBAL_BATCH, LR = 2, 2, 8, 0.2


def make_trainer(strategy, run_dir, epochs=EPOCHS):
    """The trainer every worker runs (and the test's single-process reference/resume runs)."""
    import trainer_helpers as H
    from tfreid.engine.trainer import Trainer

    return Trainer(strategy=strategy, model_fn=H.tiny_model,
                   optimizer_fn=lambda: keras.optimizers.SGD(LR, momentum=0.9),
                   loss_terms=H.loss_terms(), output_dir=run_dir, global_batch_size=GLOBAL_BATCH,
                   steps_per_epoch=STEPS_PER_EPOCH, epochs=epochs, checkpoint_every=0,
                   log_every=1, sync_bn=True, progress=False)


def dataset_fn():
    """Four distinct global batches, repeated (the same sequence on every worker)."""
    import trainer_helpers as H

    return H.dataset_fn_for(*H.make_data(4, batch=GLOBAL_BATCH), batch=GLOBAL_BATCH)


def weights(model):
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def _worker(run_dir, result_dir, hosts, task_index):
    from tfreid.engine.strategy import create_strategy, tf_config_from_hosts

    strategy = create_strategy(tf_config=tf_config_from_hosts(hosts, task_index))
    trainer = make_trainer(strategy, run_dir)
    trainer.restore()
    result = trainer.fit(dataset_fn())
    np.savez(os.path.join(result_dir, f"worker{task_index}.npz"), **weights(trainer.model))
    print(json.dumps({"task_index": task_index, "is_chief": trainer.is_chief,
                      "replicas": strategy.num_replicas_in_sync, "steps": result.steps,
                      "tmp_dir": trainer._tmp_ckpt_dir,  # noqa: SLF001
                      "tmp_dir_exists": bool(trainer._tmp_ckpt_dir  # noqa: SLF001
                                             and os.path.exists(trainer._tmp_ckpt_dir)),  # noqa: SLF001
                      "losses": result.losses}), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
