"""Bad config values and CLI arguments: one `error:` line, exit code 2, before any work starts."""

import pytest

from tests.bad_input.conftest import BAD_KINDS
from tfreid import config as config_lib
from tfreid import evaluate, train

LOSS = "losses=[{name: ce, type: cross_entropy, output: logits/global}]"


def _run(main, argv, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TFREID_DEBUG", raising=False)
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, captured
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err, captured.out


@pytest.mark.parametrize("yaml_text, overrides, message", [
    ("", ["optim.lr=fast"], "optim.lr must be float, got 'fast' (str)"),
    ("optim:\n  lr: fast\n", [], "optim.lr must be float, got 'fast'"),
    ("data: 5\n", [], "data must be a mapping, got 5"),
    ("model: 5\n", [], "model must be a mapping, got 5"),
    ("train: [1]\n", [], "train must be a mapping"),
    ("", ["data.p=x"], "data.p must be int, got 'x'"),
    ("", ["data.flip=3"], "data.flip must be bool, got 3"),
    ("", ["losses=[5]"], "losses must be a list of loss terms"),
    ("", ["model.kwargs=3"], "model.kwargs must be dict"),
    ("", ["train.checkpoint_every=-5"], "train.checkpoint_every=-5"),
    ("", ["train.epochs=1.5"], "train.epochs must be int, got 1.5"),
    ("", ["train.log_every=0"], "train.log_every=0"),
    ("", ["optim.lr=.nan"], "optim.lr must be > 0"),
    ("", ["data.max_bad_fraction=2"], "data.max_bad_fraction must lie in [0, 1]"),
    ("", ["model.kwargs={nope: 1}"], "model 'hacnn' has no option 'nope' (model.kwargs)"),
    ("", ["losses=[{name: x, type: fancy, output: embedding}]"], "unknown loss type 'fancy'"),
    ("", ["losses=[{name: x, type: cross_entropy, output: e, kwargs: {bad: 1}}]"],
     "losses[0] (x): loss type 'cross_entropy' got unexpected argument(s) ['bad']"),
])
def test_bad_config_values(yaml_text, overrides, message, capsys, monkeypatch, tmp_path, market):
    argv = ["--model", "hacnn", "--dataset", "market1501", "--data-root", str(market)]
    if yaml_text:
        (tmp_path / "recipe.yaml").write_text(yaml_text)
        argv += ["--config", str(tmp_path / "recipe.yaml")]
    for item in overrides:
        argv += ["--set", item]
    err, _ = _run(train.main, argv, capsys, monkeypatch, tmp_path)
    assert message in err
    assert not (tmp_path / "runs").exists()  # rejected before the run directory is written


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    """PyYAML reads `5e-4` as a string (YAML 1.1 wants a dot); float fields take it as 5e-4."""
    (tmp_path / "r.yaml").write_text("optim:\n  lr: 5e-4\n  milestones: [1e1]\n")
    cfg = config_lib.resolve("hacnn", str(tmp_path / "r.yaml"), {}, ["optim.gamma=1e-1"])
    assert cfg.optim.lr == 5e-4 and cfg.optim.gamma == 0.1 and cfg.optim.milestones == [10.0]
    assert config_lib.resolve("hacnn", None, {}, ["optim.lr=5e-4"]).optim.lr == 5e-4


def test_loss_on_a_missing_output_stops_before_the_random_init_evaluation(
        capsys, monkeypatch, tmp_path, market):
    argv = ["--model", "hacnn", "--dataset", "market1501", "--data-root", str(market),
            "--set", "model.kwargs={widths: [16, 16, 16], feature_dim: 8}", "--set", "data.p=2",
            "--set", "losses=[{name: ce, type: cross_entropy, output: logits/nope}]",
            "--output", str(tmp_path / "run"), "--no-export"]
    err, out = _run(train.main, argv, capsys, monkeypatch, tmp_path)
    assert "loss term 'ce': output 'logits/nope' is not an output of model 'hacnn'" in err
    assert "Evaluating" not in out


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "-1"], "--batch-size=-1"),
    (["--batch-size", "0"], "--batch-size=0"),
    ([], "not found"),
])
def test_bad_evaluate_arguments(argv, message, capsys, monkeypatch, tmp_path):
    err, _ = _run(evaluate.main, ["--run", str(tmp_path / "no-run"), *argv], capsys, monkeypatch,
                  tmp_path)
    assert message in err


def test_bad_training_image_is_one_line_naming_file_and_split(capsys, monkeypatch, tmp_path, market):
    bad = sorted((market / "bounding_box_train").glob("*.jpg"))[3]
    bad.write_bytes(BAD_KINDS["truncated_jpeg"]())
    argv = ["--model", "hacnn", "--dataset", "market1501", "--data-root", str(market)]
    err, _ = _run(train.main, argv, capsys, monkeypatch, tmp_path)
    assert err.startswith(f"error: train image {bad}: truncated JPEG")
    assert "--set data.on_bad_image=skip" in err


def test_debug_env_reraises(monkeypatch, tmp_path):
    monkeypatch.setenv("TFREID_DEBUG", "1")
    with pytest.raises(ValueError, match="optim.lr must be float"):
        train.main(["--model", "hacnn", "--set", "optim.lr=fast"])
