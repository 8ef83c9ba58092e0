"""Index folder round trip, bad-image policy, model refusal and result pictures.

The "model" here is a fixed NumPy function of the decoded pixels (4x4 grid colour means) behind a
real `Embedder`: images still go through the tf.data pipeline, and the expected embeddings are
computed from `tfreid.visualize.draw.load_images`, which decodes and resizes one file at a time.
"""

import json

import numpy as np
import pytest
from PIL import Image

from tfreid.search import GalleryIndex, build_index, exact_topk
from tfreid.search.embedder import Embedder, _info
from tfreid.visualize import draw
from tfreid.visualize.ranks import CORRECT, UNKNOWN, WRONG, cell_origin

SIZE = (32, 16)
NAMES = [f"{sub}/{pid:04d}_c{cam}s1_{n:06d}_00.{ext}" for sub, ext in (("a", "png"), ("b", "jpg"))
         for pid in (1, 2, 3) for cam, n in ((1, pid * 10), (2, pid * 10 + 1))]


def grid_means(pixels, cells=4):
    pixels = np.asarray(pixels, np.float32)
    h, w = pixels.shape[1:3]
    blocks = pixels.reshape(len(pixels), cells, h // cells, cells, w // cells, 3)
    return blocks.mean((2, 4)).reshape(len(pixels), -1) / 255.0


def fake_model(tmp_path, name="grid", scale=1.0, size=SIZE, metric="euclidean", cells=4,
               weights=b"w1") -> Embedder:
    """An Embedder computing `scale * grid_means`; `weights` stands for its weight file."""
    weight_file = tmp_path / f"weights-{weights.hex()}.bin"
    weight_file.write_bytes(weights)
    forward = lambda pixels: scale * grid_means(pixels, cells)
    info = _info(name=name, format="run", source=tmp_path / name, version="checkpoints/ckpt-1",
                 files=[weight_file], metric=metric, size=size, mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), forward=forward)
    return Embedder(info, forward)


@pytest.fixture
def gallery(tmp_path):
    """12 Market-named crops (pids 1-3, cameras 1-2) in two subfolders, plus a non-image."""
    root = tmp_path / "gallery"
    rng = np.random.default_rng(0)
    for i, name in enumerate(NAMES):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pid = int(name.split("/")[1][:4])
        colour = np.array([80 * pid, 255 - 60 * pid, 40 * (i % 3)], np.float32)
        pixels = colour + rng.normal(scale=12, size=(48, 24, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name, quality=95)
    (root / "notes.txt").write_text("not an image")
    return root


def test_eval_pipeline_yields_pixels_when_not_normalized(gallery):
    """The hook search embeds through: the same batches before `normalize`."""
    from tfreid.data.datasets.base import Sample
    from tfreid.data.pipeline import build_eval_dataset
    from tfreid.preprocessing import normalize

    samples = [Sample(str(gallery / n), 0, 0) for n in NAMES[:5]]
    pixels = np.concatenate(list(build_eval_dataset(samples, SIZE, 2, normalized=False)))
    normalised = np.concatenate(list(build_eval_dataset(samples, SIZE, 2)))
    np.testing.assert_allclose(pixels, draw.load_images([s.path for s in samples], SIZE), atol=1e-4)
    np.testing.assert_allclose(normalize(pixels).numpy(), normalised, atol=1e-5)


def test_round_trip(tmp_path, gallery):
    model = fake_model(tmp_path)
    index = build_index(model, gallery, tmp_path / "g.index", dataset="market1501",
                        batch_size=5, progress=False)
    assert sorted(p.name for p in index.path.iterdir()) == ["embeddings.npy", "index.json",
                                                              "labels.npy", "paths.txt"]
    loaded = GalleryIndex.load(tmp_path / "g.index")
    assert loaded.paths == sorted(NAMES) and isinstance(loaded.embeddings, np.memmap)
    expected = grid_means(draw.load_images([gallery / p for p in loaded.paths], SIZE))
    np.testing.assert_allclose(loaded.embeddings, expected, atol=1e-5)
    assert loaded.pids.tolist() == [int(p[2:6]) for p in loaded.paths]
    assert loaded.camids.tolist() == [int(p[8]) - 1 for p in loaded.paths]
    meta = json.loads((tmp_path / "g.index" / "index.json").read_text())
    assert meta["count"] == 12 and meta["dim"] == 48 and meta["metric"] == "euclidean"
    assert meta["preprocessing"]["input_size"] == list(SIZE)
    assert meta["model"]["name"] == "grid" and meta["model"]["fingerprint"] == model.info.fingerprint
    assert meta["images"] == {"root": str(gallery), "dataset": "market1501", "skipped": []}
    assert loaded.image_path(0) == str(gallery / loaded.paths[0])
    # queried with embeddings or with images, the answer is the exact search
    q = expected[[2, 7]] + 0.01
    result = loaded.query(embeddings=q, k=4)
    np.testing.assert_array_equal(result.indices, exact_topk(q, expected, 4)[0])
    by_image = loaded.query([gallery / loaded.paths[5]], k=3, model=model, progress=False)
    assert by_image.indices[0, 0] == 5 and by_image.distances[0, 0] < 1e-5
    assert by_image.query_pids.tolist() == [loaded.pids[5]]


def test_list_file_paths_are_relative_to_the_list(tmp_path, gallery):
    listing = gallery / "list.txt"
    listing.write_text(f"{NAMES[3]}\n\n{gallery / NAMES[0]}\n")
    index = build_index(fake_model(tmp_path), listing, tmp_path / "l.index", progress=False)
    assert index.paths == [NAMES[3], NAMES[0]] and index.pids is None


def test_bad_images_skip_or_stop(tmp_path, gallery, capsys):
    bad = gallery / "a" / "0009_c1s1_000001_00.jpg"
    bad.write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(ValueError, match=f"{bad}.*--on-bad-image skip"):
        build_index(fake_model(tmp_path), gallery, tmp_path / "e.index", progress=False)
    assert not (tmp_path / "e.index").exists() and not list(tmp_path.glob(".e.index*"))
    index = build_index(fake_model(tmp_path), gallery, tmp_path / "s.index",
                        on_bad_image="skip", progress=False)
    assert f"1 unreadable image(s) skipped" in capsys.readouterr().err
    assert index.meta["images"]["skipped"] == [str(bad)] and len(index) == 12
    expected = grid_means(draw.load_images([gallery / p for p in index.paths], SIZE))
    np.testing.assert_allclose(index.embeddings, expected, atol=1e-5)


def test_existing_index_is_not_overwritten_by_default(tmp_path, gallery):
    build_index(fake_model(tmp_path), gallery, tmp_path / "o.index", progress=False)
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        build_index(fake_model(tmp_path), gallery, tmp_path / "o.index", progress=False)
    build_index(fake_model(tmp_path), gallery / "a", tmp_path / "o.index", overwrite=True,
                progress=False)
    assert len(GalleryIndex.load(tmp_path / "o.index")) == 6


@pytest.mark.parametrize("other,match", [
    (dict(name="other"), "built with a grid model"),
    (dict(size=(64, 16)), r"preprocessing input_size=\[64, 16\] differs .*=\[32, 16\]"),
    (dict(cells=2), "dimension 12, index .* holds dimension 48"),
    (dict(metric="cosine"), "trained for the cosine distance, the index uses euclidean"),
    (dict(weights=b"w2", scale=1.5), "other weights than the index's model"),
])
def test_another_model_is_refused(tmp_path, gallery, other, match):
    index = build_index(fake_model(tmp_path), gallery / "a", tmp_path / "m.index", progress=False)
    with pytest.raises(ValueError, match=match):
        index.query([gallery / NAMES[0]], model=fake_model(tmp_path, **other), progress=False)


def test_same_weights_in_another_format_are_accepted(tmp_path, gallery):
    """Other weight files (a SavedModel of the same run) but the same probe embedding."""
    index = build_index(fake_model(tmp_path), gallery / "a", tmp_path / "f.index", progress=False)
    export = fake_model(tmp_path, weights=b"exported", scale=1.0 + 1e-6)
    assert export.info.fingerprint != index.meta["model"]["fingerprint"]
    assert index.query([gallery / NAMES[1]], k=1, model=export, progress=False).indices[0, 0] == 1


def test_load_errors(tmp_path, gallery):
    with pytest.raises(FileNotFoundError, match="not found"):
        GalleryIndex.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a tfreid search index"):
        GalleryIndex.load(gallery)
    build_index(fake_model(tmp_path), gallery / "a", tmp_path / "c.index", progress=False)
    np.save(tmp_path / "c.index" / "embeddings.npy", np.zeros((6, 7), np.float32))
    with pytest.raises(ValueError, match=r"\(6, 7\), index.json says float32 \(6, 48\)"):
        GalleryIndex.load(tmp_path / "c.index")


def test_unparseable_names_with_a_dataset(tmp_path, gallery):
    (gallery / "a" / "cam3_person.png").write_bytes((gallery / NAMES[0]).read_bytes())
    with pytest.raises(ValueError, match="cam3_person.png.*expected <pid>_c<camera>"):
        build_index(fake_model(tmp_path), gallery, tmp_path / "u.index", dataset="market1501")


def frame_colour(picture, position, cell_size=(128, 64)):
    x, y = cell_origin(position, cell_size[1])
    return tuple(np.asarray(picture)[y + 1, x + 1])


def test_pictures_and_json(tmp_path, gallery):
    model = fake_model(tmp_path)
    index = build_index(model, gallery, tmp_path / "p.index", dataset="market1501", progress=False)
    queries = [gallery / NAMES[0], gallery / NAMES[9]]
    result = index.query(queries, k=4, model=model, progress=False)
    written = result.write(tmp_path / "out")
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [p.name for p in written][:1] == ["results.json"] and (tmp_path / "out" / "ranks_grid.png").is_file()
    for q, record in enumerate(data["queries"]):
        assert record["pid"] == int(NAMES[[0, 9][q]].split("/")[1][:4])
        assert [r["gallery_index"] for r in record["results"]] == result.indices[q].tolist()
        picture = Image.open(tmp_path / "out" / record["picture"])
        for r in record["results"]:
            assert r["match"] == (r["pid"] == record["pid"])
            assert frame_colour(picture, r["rank"]) == (CORRECT if r["match"] else WRONG)
    # without identities the frames are grey and the JSON has no pid fields
    plain = build_index(model, gallery, tmp_path / "n.index", progress=False)
    result = plain.query(queries[:1], k=2, model=model, progress=False)
    result.write(tmp_path / "plain")
    record = json.loads((tmp_path / "plain" / "results.json").read_text())["queries"][0]
    assert "pid" not in record and "match" not in record["results"][0]
    assert frame_colour(Image.open(tmp_path / "plain" / record["picture"]), 1) == UNKNOWN
