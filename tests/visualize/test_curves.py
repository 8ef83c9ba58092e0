"""Training curves: the series read from a run's logs, and lines drawn where the data says."""

import json

import numpy as np
import pytest
from PIL import Image

from tfreid.visualize import curves


@pytest.fixture()
def logged_run(tmp_path):
    """A run directory with logs written by the trainer's ScalarLogger, including a resume that
    re-logs step 30 (the later value must win), plus metrics_init.json and metrics.json."""
    from tfreid.engine.summaries import ScalarLogger

    run = tmp_path / "run"
    logger = ScalarLogger(str(run / "logs"))
    for step, ce, lr in ((10, 5.0, 1e-3), (20, 4.0, 2e-3), (30, 9.9, 9e-3)):
        logger.log(step, {"loss/ce_global": ce, "loss/total": ce + 1.0, "learning_rate": lr,
                          "images_per_second": 30.0})
    logger.log(20, {"eval/rank1": 0.5, "eval/mAP": 0.25})
    logger.close()
    logger = ScalarLogger(str(run / "logs"))  # resumed from the step-20 checkpoint
    logger.log(30, {"loss/ce_global": 3.0, "loss/total": 4.0, "learning_rate": 1.5e-3})
    logger.log(40, {"loss/ce_global": 2.0, "loss/total": 3.0, "learning_rate": 1e-3})
    logger.close()
    (run / "metrics_init.json").write_text(json.dumps({"rank1": 0.1, "mAP": 0.05}))
    (run / "metrics.json").write_text(json.dumps({"rank1": 0.8, "mAP": 0.6, "steps": 40,
                                                  "epoch": 4.0}))
    return run


def test_load_curves(logged_run):
    c = curves.load_curves(logged_run)
    assert sorted(c.losses) == ["ce_global", "total"]
    steps, values = c.losses["ce_global"]
    assert steps.tolist() == [10, 20, 30, 40] and values.tolist() == [5.0, 4.0, 3.0, 2.0]
    assert c.learning_rate["learning_rate"][1].tolist() == pytest.approx([1e-3, 2e-3, 1.5e-3, 1e-3])
    # init at step 0, the evaluation logged at step 20, the final metrics at step 40
    assert c.retrieval["rank1"][0].tolist() == [0, 20, 40]
    assert c.retrieval["rank1"][1].tolist() == pytest.approx([0.1, 0.5, 0.8])
    assert c.retrieval["mAP"][1].tolist() == pytest.approx([0.05, 0.25, 0.6])
    assert c.steps_per_epoch == 10


def _colour(name):
    from matplotlib.colors import to_rgb

    return np.array(to_rgb(name)) * 255


def test_png_size_and_lines_where_the_data_is(logged_run, tmp_path):
    fig = curves.make_figure(curves.load_curves(logged_run))
    path = tmp_path / "c.png"
    fig.savefig(path, dpi=curves.DPI)
    pic = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert pic.shape == (360, 1350, 3)  # FIGSIZE * DPI
    height = pic.shape[0]
    ax_loss, ax_lr, ax_ret = fig.axes[:3]
    checked = 0
    for ax in (ax_loss, ax_lr, ax_ret):
        lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        assert lines, ax.get_title()
        for line in lines:
            colour = _colour(line.get_color())
            xy = ax.transData.transform(line.get_xydata())  # display pixels, origin bottom-left
            for x, y in xy:
                r, c = int(round(height - y)), int(round(x))
                patch = pic[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].reshape(-1, 3)
                # the line passes through (anti-aliased): a pixel next to the point has its colour
                assert np.abs(patch - colour).sum(1).min() < 60, (line.get_label(), x, y)
                checked += 1
    assert checked == 4 + 4 + 4 + 3 + 3  # two losses, lr, rank-1, mAP
    ret = {ln.get_label(): ln.get_ydata() for ln in ax_ret.get_lines()}
    np.testing.assert_allclose(ret["rank-1"], [10, 50, 80])  # percent
    np.testing.assert_allclose(ret["mAP"], [5, 25, 60])


def test_curves_cli(logged_run, tmp_path, capsys):
    from tfreid.visualize.__main__ import main

    out = tmp_path / "curves.png"
    assert main(["curves", "--run", str(logged_run), "--output", str(out)]) == 0
    assert Image.open(out).size == (1350, 360)
    assert main(["curves", "--run", str(logged_run), "--output", str(tmp_path / "c.jpg")]) == 2
    assert ".png" in capsys.readouterr().err
    assert main(["curves", "--run", str(tmp_path / "nothing")]) == 2
    assert "scalars.jsonl" in capsys.readouterr().err
