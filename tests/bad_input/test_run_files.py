"""Damaged run-directory files: errors name the file; writes are atomic; leftovers are cleaned."""

import json

import pytest

from tfreid import train
from tfreid.runs import INFO_FILE, METRICS_FILE, METRICS_INIT_FILE, RunDir, read_json, write_json


@pytest.mark.parametrize("name", [INFO_FILE, METRICS_FILE, METRICS_INIT_FILE])
@pytest.mark.parametrize("content", ["", '{"model": "hacnn", "x": 1', '{"bad\x01": 1}'])
def test_damaged_json_errors_name_the_file(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    run = RunDir(tmp_path)
    read = {INFO_FILE: run.info, METRICS_FILE: run.read_metrics,
            METRICS_INIT_FILE: lambda: run.read_metrics(init=True)}[name]
    with pytest.raises(ValueError) as info:
        read()
    assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
    assert ("is empty" if not content else "is not valid JSON") in str(info.value)


def test_run_json_of_the_wrong_shape(tmp_path):
    (tmp_path / INFO_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"run.json: expected a JSON object with model"):
        RunDir(tmp_path).info()


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"mAP": 0.5})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill between writing the temporary file and the rename

    monkeypatch.setattr("os.replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"mAP": 0.9})
    assert read_json(path) == {"mAP": 0.5}  # the old file is intact, never truncated


def test_resume_with_damaged_metrics_init_fails_at_start(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TFREID_DEBUG", raising=False)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / METRICS_INIT_FILE).write_text("")
    assert train.main(["--model", "hacnn", "--resume", "--output", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {run / METRICS_INIT_FILE} is empty; restore it or delete it (a run " \
                  "re-creates its JSON files)"


def test_stale_checkpoint_temporaries_are_removed(tmp_path):
    import keras
    import tensorflow as tf

    from tfreid.engine.checkpoint import CheckpointKeeper

    stale = tmp_path / "ckpt-7_temp"
    stale.mkdir()
    (stale / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"half")
    (tmp_path / "notes_temp").mkdir()  # not a checkpoint temporary: kept
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD()
    optimizer.build(model.trainable_variables)
    CheckpointKeeper(tmp_path, model, optimizer, tf.Variable(0, dtype=tf.int64))
    assert not stale.exists() and (tmp_path / "notes_temp").exists()


def test_resumed_logger_drops_rolled_back_rows(tmp_path):
    from tfreid.engine.summaries import ScalarLogger
    from tfreid.runs import read_scalars

    logger = ScalarLogger(str(tmp_path))
    for step in (10, 20, 30):
        logger.log(step, {"loss/total": float(step)})
    logger.close()
    with open(tmp_path / "scalars.jsonl", "a") as f:
        f.write('{"step": 40, "tag": "loss/to')  # torn by the kill
    logger = ScalarLogger(str(tmp_path), resume_step=20)  # the last checkpoint was step 20
    logger.log(30, {"loss/total": 3.0})
    logger.close()
    assert read_scalars(tmp_path)["loss/total"] == [(10, 10.0), (20, 20.0), (30, 3.0)]
    assert all(json.loads(line) for line in (tmp_path / "scalars.jsonl").read_text().splitlines())
