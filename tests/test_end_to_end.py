"""`python -m tfreid.train` end to end on a tiny synthetic set: run directory, metrics, export,
re-evaluation and resume — the run-directory and export contracts."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tfreid import evaluate, train

pytestmark = pytest.mark.slow

TINY = ["--set", "data.p=4", "--set", "data.k=2", "--set", "data.eval_batch_size=16",
        "--set", "train.log_every=1"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tfreid.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("syn") / "data"
    generate(root, SyntheticConfig(train_ids=6, test_ids=4, cameras=3, images_per_id=5,
                                   distractors=3, junk=2, seed=3), verbose=False)
    return root


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    """Trains 3 steps from inside an empty working directory (`out/cwd`)."""
    out = tmp_path_factory.mktemp("run")
    argv = ["--model", "hacnn", "--dataset", "market1501", "--data-root", str(tiny_data),
            "--output", str(out / "run"), "--max-steps", "3", *TINY]
    cwd = pathlib.Path.cwd()
    (out / "cwd").mkdir()
    os.chdir(out / "cwd")
    try:
        assert train.main(argv) == 0
    finally:
        os.chdir(cwd)
    return out


def test_training_exports_into_its_run_directory_only(tiny_run):
    """Publishing is explicit: a training run never writes ./saved_models (a TF Serving instance
    watching it would serve a test run as the latest version)."""
    assert not any((tiny_run / "cwd").iterdir())
    export = tiny_run / "run" / "export" / "hacnn" / "1"
    assert (export / "saved_model.pb").is_file()
    assert json.loads((tiny_run / "run" / "metrics.json").read_text())["export"] == str(export)


def test_run_directory_contract(tiny_run):
    run = tiny_run / "run"
    for name in ("config.yaml", "run.json", "metrics.json", "metrics_init.json", "logs/scalars.jsonl"):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("ckpt-3.index"))
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP", "init"):
        assert key in metrics
    assert metrics["steps"] == 3 and metrics["images_per_second"] > 0
    assert 0.0 <= metrics["mAP"] <= 1.0 and metrics["rank1"] <= metrics["rank5"] <= metrics["rank10"]
    tags = {json.loads(line)["tag"] for line in (run / "logs/scalars.jsonl").read_text().splitlines()}
    assert {"loss/ce_global", "loss/ce_local", "loss/total", "learning_rate", "eval/mAP"} <= tags


def _events(logdir):
    """tag -> [(step, plugin name, TensorProto)] read back from every TensorBoard event file."""
    import tensorflow as tf

    out = {}
    for path in sorted(pathlib.Path(logdir).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.metadata.plugin_data.plugin_name, v.tensor))
    return out


def test_tensorboard_events_hold_config_init_eval_and_pictures(tiny_run):
    """TensorBoard shows the resolved config and hparams, the random-init evaluation at step 0,
    and at each evaluation a ranked-list picture and HA-CNN's hard-attention boxes."""
    import tensorflow as tf

    run = tiny_run / "run"
    events = _events(run / "logs")
    (step, plugin, tensor), = events["config"]
    assert step == 0 and plugin == "text"
    assert "name: hacnn" in tf.make_ndarray(tensor).item().decode()
    assert any(plugin == "hparams" for entries in events.values() for _, plugin, _ in entries)
    init = json.loads((run / "metrics_init.json").read_text())
    final = json.loads((run / "metrics.json").read_text())
    m_ap = {step: float(tf.make_ndarray(t)) for step, _, t in events["eval/mAP"]}
    assert m_ap == {0: pytest.approx(init["mAP"]), 3: pytest.approx(final["mAP"])}
    for tag in ("eval/ranked_lists", "eval/hard_attention"):
        assert [(step, plugin) for step, plugin, _ in events[tag]] == [(0, "images"), (3, "images")], tag
        for _, _, tensor in events[tag]:
            width, height, png = tf.make_ndarray(tensor)
            image = tf.io.decode_png(png).numpy()
            assert image.shape == (int(height), int(width), 3) and image.std() > 10, tag
    # 4 ranked lists (query + top 5 at 128x64 each) stacked; 4 attention rows
    assert int(tf.make_ndarray(events["eval/ranked_lists"][0][2])[1]) > 4 * 128


def test_savedmodel_matches_keras_in_a_fresh_process(tiny_run, tiny_data):
    """The export (0..255 RGB in, preprocessing in-graph) gives the checkpoint's embeddings."""
    export = tiny_run / "run" / "export" / "hacnn" / "1"
    assert (export / "saved_model.pb").is_file()
    info = json.loads((export / "assets" / "tfreid.json").read_text())
    assert info["input_size"] == [160, 64] and info["embedding_size"] == 1024
    image = sorted((tiny_data / "query").glob("*.jpg"))[0]
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        from tfreid.preprocessing import decode_resize
        loaded = tf.saved_model.load({str(export)!r})
        raw = tf.io.read_file({str(image)!r})
        pixels = decode_resize(raw, (160, 64))[None]
        a = loaded.signatures["serving_default"](images=pixels)["embedding"].numpy()
        b = loaded.signatures["serve_bytes"](image_bytes=tf.stack([raw]))["embedding"].numpy()
        print(json.dumps({{"a": a.tolist(), "b": b.tolist(), "pixels": pixels.numpy().tolist()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = np.array(served["a"]), np.array(served["b"])
    np.testing.assert_allclose(a, b, atol=1e-5)
    # each half of the embedding is unit norm
    np.testing.assert_allclose(np.linalg.norm(a[:, :512], axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(a[:, 512:], axis=1), 1.0, atol=1e-4)

    from tfreid.preprocessing import normalize
    from tfreid.runs import load_run
    from tfreid.models import embedding_model

    _, model, _ = load_run(tiny_run / "run")
    pixels = np.array(served["pixels"], dtype=np.float32)
    expected = embedding_model(model)(normalize(pixels), training=False).numpy()
    np.testing.assert_allclose(a, expected, atol=1e-4)


def test_export_never_overwrites(tiny_run, tmp_path):
    from tfreid.runs import load_run
    from tfreid.export.savedmodel import export_savedmodel
    from tfreid.models import embedding_model

    _, model, _ = load_run(tiny_run / "run")
    embed = embedding_model(model)
    first = export_savedmodel(embed, tmp_path, "hacnn", (160, 64))
    second = export_savedmodel(embed, tmp_path, "hacnn", (160, 64))
    assert (first.name, second.name) == ("1", "2")
    with pytest.raises(FileExistsError):
        export_savedmodel(embed, tmp_path, "hacnn", (160, 64), version=1)
    assert not [p for p in (tmp_path / "hacnn").iterdir() if p.name.startswith(".tmp")]


def test_evaluate_cli_reproduces_final_metrics(tiny_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert evaluate.main(["--run", str(tiny_run / "run"), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    final = json.loads((tiny_run / "run" / "metrics.json").read_text())
    assert result["mAP"] == pytest.approx(final["mAP"], abs=1e-6)
    assert result["rank1"] == pytest.approx(final["rank1"], abs=1e-6)


def test_evaluate_progress_and_quiet(tiny_run, capsys):
    run = str(tiny_run / "run")
    assert evaluate.main(["--run", run]) == 0
    out = capsys.readouterr().out
    assert "embedding query: " in out and "embedding gallery: " in out
    assert not {"\x1b", "\b", "\r"} & set(out)
    assert evaluate.main(["--run", run, "--quiet"]) == 0
    assert "embedding" not in capsys.readouterr().out


def test_evaluate_cli_bad_run(tmp_path, capsys):
    assert evaluate.main(["--run", str(tmp_path)]) == 2
    assert "a tfreid run directory" in capsys.readouterr().err


def test_resume_continues_from_the_last_checkpoint(tiny_run, tiny_data, capsys):
    run = tiny_run / "run"
    argv = ["--model", "hacnn", "--resume", "--output", str(run), "--max-steps", "5",
            "--no-export", *TINY]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(f"run directory: {run}") == 2  # at the start and at the end
    assert "Epoch 2/" in out and not {"\x1b", "\b", "\r"} & set(out)  # plain lines in a file
    assert (run / "checkpoints" / "ckpt-5.index").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 5
    steps = [json.loads(line)["step"] for line in (run / "logs/scalars.jsonl").read_text().splitlines()
             if json.loads(line)["tag"] == "loss/total"]
    assert steps[-2:] == [4, 5]  # continued at step 4, not from 1
