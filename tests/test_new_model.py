"""Adding a model takes one Python file and one YAML recipe (tests/toy/), and a recipe whose loss
terms name outputs the model does not have fails when the trainer is built."""

import pathlib
import subprocess
import sys
import textwrap

import pytest

from tfreid import config as config_lib
from tfreid.runs import RunDir

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tfreid.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("toy-syn") / "data"
    generate(root, SyntheticConfig(train_ids=6, test_ids=3, cameras=2, images_per_id=4,
                                   distractors=0, junk=0, seed=2), workers=1, verbose=False)
    return root


@pytest.mark.slow  # one training process (~30 s)
def test_a_sixth_model_trains_from_one_file_and_one_recipe(tiny_data, tmp_path):
    # A fresh process: the toy model is registered there only, not in this test session.
    script = textwrap.dedent(f"""
        import sys
        import tests.toy.toy_model
        from tfreid import train
        sys.exit(train.main(["--model", "toy", "--dataset", "market1501",
                             "--data-root", {str(tiny_data)!r}, "--output", {str(tmp_path / "run")!r},
                             "--max-steps", "2"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunDir(tmp_path / "run")
    cfg = run.config()
    assert (cfg.model.name, cfg.data.height, cfg.data.width, cfg.batch_size) == ("toy", 32, 16, 8)
    assert [t.name for t in cfg.losses] == ["ce", "triplet", "center"]
    assert run.info() == {"model": "toy", "num_classes": 6, "input_size": [32, 16],
                          "model_kwargs": {}}
    metrics = run.read_metrics()
    assert metrics["steps"] == 2 and set(metrics["losses"]) == {"ce", "triplet", "center", "total"}
    assert 0.0 <= metrics["mAP"] <= 1.0 and "init" in metrics
    assert [step for step, _ in run.read_scalars()["loss/center"]] == [1, 2]


def test_loss_outputs_are_checked_when_the_trainer_is_built(tiny_data, tmp_path):
    from tfreid.data import build_dataset
    from tfreid.engine import session

    cfg = config_lib.resolve(
        "hacnn", None, {"model": {"kwargs": {"widths": [32, 64, 96], "feature_dim": 64}},
                        "data": {"dataset": "market1501", "root": str(tiny_data), "p": 2}},
        ["losses=[{name: ce, type: cross_entropy, output: logits/global},"
         " {name: ce_parts, type: cross_entropy, output: logits/parts}]"])
    with pytest.raises(ValueError, match=r"loss term 'ce_parts': output 'logits/parts' is not an "
                                         r"output of model 'hacnn'; its outputs: .*logits/local"):
        session.run(cfg, build_dataset("market1501", str(tiny_data)), tmp_path / "run")
    run = RunDir(tmp_path / "run")
    assert not run.has_metrics(init=True) and run.latest_checkpoint() is None
