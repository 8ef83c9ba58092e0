"""Bad invocations of `python -m tfreid.train` give one clear line and exit code 2."""

import pytest

from tfreid import train


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope"], "unknown model 'nope'; available models: "),
    (["--model", "hacnn", "--dataset", "imagenet"], "Unknown dataset 'imagenet'"),
    (["--model", "hacnn", "--dataset", "market1501", "--data-root", "/no/such/dir"], "/no/such/dir"),
    (["--model", "hacnn", "--set", "data.batch_size=30"], "is not P*K"),
    (["--model", "hacnn", "--set", "optim.lr"], "--set expects key=value"),
    (["--model", "hacnn", "--set", "optim.lrr=0.1"], "unknown key 'optim.lrr'"),
    (["--model", "hacnn", "--config", "/no/such.yaml"], "config file not found: /no/such.yaml"),
    (["--model", "hacnn", "--resume", "--output", "/no/such/run"], "/no/such/run/checkpoints"),
])
def test_bad_invocations(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TFREID_DEBUG", raising=False)
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert message in err
    assert len(err.splitlines()) == 1, err


def test_refuses_to_reuse_a_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TFREID_DEBUG", raising=False)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert train.main(["--model", "hacnn", "--output", str(tmp_path / "run")]) == 2
    assert "pass --resume" in capsys.readouterr().err
