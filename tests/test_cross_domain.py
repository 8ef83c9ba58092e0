"""Cross-domain evaluation (ADFL Table V, M->D): train on one synthetic set, evaluate the run on a
second set generated with another seed and other cameras, with `python -m tfreid.evaluate`."""

import json

import pytest

from tfreid import evaluate, train
from tfreid.data import build_dataset
from tfreid.data.synthetic import MARKER_FILE, Difficulty, SyntheticConfig, generate

pytestmark = pytest.mark.slow

SOURCE = dict(train_ids=6, test_ids=4, cameras=3, images_per_id=5, distractors=3, junk=2, seed=3)
# The target domain: other people (seed), 5 cameras instead of 3, and much stronger camera
# effects (colour cast, brightness, blur, down-scaling) than the source's "medium" level.
TARGET = SyntheticConfig(train_ids=3, test_ids=6, cameras=5, images_per_id=4, distractors=4, junk=1,
                         seed=11, difficulty=Difficulty.from_level(
                             "medium", cast=0.3, brightness=0.55, blur=1.1, downscale=1.6))


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    generate(root / "source", SyntheticConfig(**SOURCE), workers=1, verbose=False)
    generate(root / "target", TARGET, workers=1, verbose=False)
    return root


@pytest.fixture(scope="module")
def run(domains):
    """A tiny baseline run (3 steps) trained on the source set through the training CLI."""
    out = domains / "run"
    argv = ["--model", "baseline", "--dataset", "synthetic", "--data-root", str(domains / "source"),
            "--output", str(out), "--max-steps", "3", "--no-export",
            "--set", "model.kwargs={base_width: 8, bottleneck_dim: 32}",
            "--set", "data.height=64", "--set", "data.width=32", "--set", "data.p=4",
            "--set", "data.k=2", "--set", "data.eval_batch_size=16",
            "--set", "train.eval_at_start=false", "--set", "eval.flip=false", "--set", f"data.kwargs={json.dumps(SOURCE)}"]
    assert train.main(argv) == 0
    return out


def _evaluate(tmp_path, run, *extra):
    path = tmp_path / f"eval{len(list(tmp_path.iterdir()))}.json"
    assert evaluate.main(["--run", str(run), "--output", str(path), *extra]) == 0
    return json.loads(path.read_text())


def test_evaluates_the_other_domain_and_leaves_it_untouched(domains, run, tmp_path):
    target = domains / "target"
    before = {p.name: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()}
    in_domain = _evaluate(tmp_path, run)
    cross = _evaluate(tmp_path, run, "--dataset", "synthetic", "--data-root", str(target))
    as_market = _evaluate(tmp_path, run, "--dataset", "market1501", "--data-root", str(target))

    source_set = build_dataset("market1501", str(domains / "source"))
    target_set = build_dataset("market1501", str(target))
    final = json.loads((run / "metrics.json").read_text())
    # in-domain evaluation reproduces the run's own final metrics on the source test split
    assert (in_domain["num_query"], in_domain["num_gallery"]) == (len(source_set.query), len(source_set.gallery))
    assert in_domain["mAP"] == pytest.approx(final["mAP"], abs=1e-6)
    # cross-domain: the query/gallery of the TARGET set (5 cameras, 6 test ids), not the source's
    assert (cross["num_query"], cross["num_gallery"]) == (len(target_set.query), len(target_set.gallery))
    assert (cross["num_query"], cross["num_gallery"]) != (in_domain["num_query"], in_domain["num_gallery"])
    assert {s.camid for s in target_set.query + target_set.gallery} == set(range(5))
    assert cross["mAP"] != pytest.approx(in_domain["mAP"], abs=1e-6)
    assert cross["data_root"] == str(target) and cross["dataset"] == "synthetic"
    assert cross["flip"] is False  # the run's eval.flip (the default config's)
    # the same folder read by the Market-1501 loader gives the same numbers
    for key in ("mAP", "rank1", "mINP", "num_query", "num_gallery"):
        assert as_market[key] == pytest.approx(cross[key], abs=1e-7), key
    # the target set was evaluated as it is: not regenerated with the source's options
    after = {p.name: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert (target / MARKER_FILE).read_text().strip() == TARGET.short_hash()


def test_flip_follows_the_run_config_unless_overridden(domains, run, tmp_path):
    import shutil

    import yaml

    flipped_run = tmp_path / "flipped_run"
    shutil.copytree(run, flipped_run)
    config = yaml.safe_load((flipped_run / "config.yaml").read_text())
    config["eval"]["flip"] = True
    (flipped_run / "config.yaml").write_text(yaml.safe_dump(config))
    target = ["--dataset", "market1501", "--data-root", str(domains / "target")]
    assert _evaluate(tmp_path, flipped_run, *target)["flip"] is True  # the run's eval.flip
    assert _evaluate(tmp_path, flipped_run, *target, "--no-flip")["flip"] is False
