"""A gallery index: one folder with the embeddings of a set of images and what made them.

Layout (written under a temporary name beside the target, then renamed into place)::

    INDEX/
      index.json       format version, model (name, format, source, version, SHA-256 of the
                       weights, probe embedding), distance metric, preprocessing, images root,
                       dataset, skipped images
      embeddings.npy   float32 [N, D], memory-mapped when loaded
      paths.txt        the N image paths, one per line, relative to the images root if inside it
      labels.npy       int64 [N, 2]: pid, camid (only when built with a dataset name)
      ivf-flat-<nlist>.faiss   the approximate index, cached by the first approximate query

A folder rather than one `.npz`: a `.npy` file can be memory-mapped, so a million-row gallery is
searched block by block without being read into RAM (an `.npz` member is decompressed or copied
whole); the metadata stays readable with `cat`; the approximate index can be cached beside it.

Example:
    >>> index = build_index("runs/hacnn-x", "crops/", "crops.index")          # doctest: +SKIP
    >>> GalleryIndex.load("crops.index").query(["q.jpg"], k=5).print()       # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np

from tfreid import __version__
from tfreid.search import images as images_lib

FORMAT = "tfreid-search-index"
FORMAT_VERSION = 1
_PROBE_TOLERANCE = 1e-4  # relative to the largest value; float32 exports of one run agree to ~2e-5


class GalleryIndex:
    """A loaded index (see the module docstring for the folder layout).

    Attributes:
        path: the index folder.
        meta: the contents of `index.json`.
        embeddings: float32 `[N, D]` (memory-mapped).
        paths: the N stored image paths (relative to `root` where possible).
        pids, camids: int64 `[N]` parsed identities, or None.
    """

    def __init__(self, path, meta: dict, embeddings, paths: list[str], labels=None):
        self.path, self.meta = pathlib.Path(path), meta
        self.embeddings, self.paths = embeddings, paths
        self.pids = None if labels is None else labels[:, 0]
        self.camids = None if labels is None else labels[:, 1]

    @property
    def metric(self) -> str:
        return self.meta["metric"]

    @property
    def root(self) -> str:
        return self.meta["images"]["root"]

    @property
    def dataset(self) -> str | None:
        return self.meta["images"]["dataset"]

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        model = self.meta["model"]
        return (f"GalleryIndex({str(self.path)!r}: {len(self)} x {self.meta['dim']} {self.metric}, "
                f"{model['name']} {model['format']} {model['version']})")

    def image_path(self, i: int) -> str:
        """Absolute path of gallery image `i`."""
        return os.path.join(self.root, self.paths[i])

    @classmethod
    def load(cls, path) -> "GalleryIndex":
        """Open an index folder; the embeddings are memory-mapped, not read.

        Raises:
            FileNotFoundError: `path` does not exist.
            ValueError: not an index, another format version, or inconsistent files.
        """
        path = pathlib.Path(path).absolute()
        if not path.exists():
            raise FileNotFoundError(f"index {path}: not found (expected a folder written by "
                                    "python -m tfreid.search index)")
        meta_path = path / "index.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            raise ValueError(f"index {path}: not a tfreid search index (no readable index.json; "
                             "expected a folder written by python -m tfreid.search index)"
                             ) from None
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"index {path}: format {meta.get('format')!r} version "
                             f"{meta.get('format_version')!r}, expected {FORMAT!r} version "
                             f"{FORMAT_VERSION}; index the gallery again with this tfreid")
        count, dim = meta["count"], meta["dim"]
        try:
            embeddings = np.load(path / "embeddings.npy", mmap_mode="r")
            paths = (path / "paths.txt").read_text(encoding="utf-8").split("\n")[:count]
            labels = np.load(path / "labels.npy") if (path / "labels.npy").is_file() else None
        except (OSError, ValueError) as err:
            raise ValueError(f"index {path}: unreadable ({err})") from None
        if embeddings.dtype != np.float32 or embeddings.shape != (count, dim):
            raise ValueError(f"index {path}: embeddings.npy holds {embeddings.dtype} "
                             f"{embeddings.shape}, index.json says float32 ({count}, {dim})")
        if len(paths) != count or (labels is not None and labels.shape != (count, 2)):
            raise ValueError(f"index {path}: paths.txt/labels.npy do not hold {count} entries")
        return cls(path, meta, embeddings, paths, labels)

    def check_model(self, info) -> None:
        """Refuse a model whose embeddings are not comparable with this index's.

        The architecture, metric, preprocessing and embedding size must equal the index's; the
        weights must be the same files (SHA-256), or the same network in another format (its
        probe embedding within a relative 1e-4).

        Args:
            info: the query model's `tfreid.search.embedder.ModelInfo`.

        Raises:
            ValueError: naming the model, the differing property and both values.
        """
        mine = self.meta["model"]
        what = f"model {info.source} ({info.name}, {info.format} {info.version})"
        cure = (f"query with the index's model ({mine['source']}) or index the gallery again "
                "with this one")
        if info.name != mine["name"]:
            raise ValueError(f"{what}: index {self.path} was built with a {mine['name']} model; "
                             f"{cure}")
        for key, value in info.preprocessing.items():
            if value != self.meta["preprocessing"].get(key):
                raise ValueError(f"{what}: preprocessing {key}={value!r} differs from the index's "
                                 f"{key}={self.meta['preprocessing'].get(key)!r}; {cure}")
        if info.embedding_size != self.meta["dim"]:
            raise ValueError(f"{what}: embeddings of dimension {info.embedding_size}, index "
                             f"{self.path} holds dimension {self.meta['dim']}; {cure}")
        if info.metric != self.metric:
            raise ValueError(f"{what}: trained for the {info.metric} distance, the index uses "
                             f"{self.metric}; {cure}")
        if info.fingerprint != mine["fingerprint"]:
            ref, new = np.asarray(mine["probe"]), np.asarray(info.probe)
            diff = float(np.abs(ref - new).max())
            if diff > _PROBE_TOLERANCE * max(1.0, float(np.abs(ref).max())):
                raise ValueError(f"{what}: other weights than the index's model (SHA-256 "
                                 f"{info.fingerprint[:12]} vs {mine['fingerprint'][:12]}; probe "
                                 f"embeddings differ by up to {diff:.3g}); {cure}")

    def open_model(self, model=None, batch_size: int = 64):
        """The `Embedder` for queries: `model` (a path or an `Embedder`) once `check_model`
        accepts it, or the index's own model.

        Raises:
            FileNotFoundError: the model (or the index's recorded model) no longer exists.
            ValueError: the model is refused by `check_model`.
        """
        from tfreid.search.embedder import open_model

        mine = self.meta["model"]
        if model is None:
            if not os.path.exists(mine["source"]):
                raise FileNotFoundError(f"the index's model {mine['source']} no longer exists; "
                                        "pass --model with the same weights")
            checkpoint = mine["version"] if mine["format"] == "run" else None
            embedder = open_model(mine["source"], checkpoint, batch_size)
        elif isinstance(model, (str, os.PathLike)):
            embedder = open_model(model, batch_size=batch_size)
        else:
            embedder = model
        self.check_model(embedder.info)
        return embedder

    def query(self, images=None, k: int = 10, *, embeddings=None, model=None, **options):
        """Search the gallery for query images (or query embeddings).

        Args:
            images: query image paths, folders or list files (embedded with the index's model,
                or `model` if given and accepted by `check_model`).
            k: results per query.
            embeddings: float32 `[Q, D]` query embeddings instead of `images`.
            model: the model to embed `images` with, a path or an `Embedder` (default: the
                index's).
            **options: `tfreid.search.query.search` options (`rerank`, `approx`, `backend`, ...).

        Returns:
            `tfreid.search.results.SearchResult`.

        Example:
            >>> result = GalleryIndex.load("crops.index").query(["q.jpg"], k=5)  # doctest: +SKIP
            >>> result.indices[0], result.distances[0]                          # doctest: +SKIP
        """
        from tfreid.search.query import search

        return search(self, images, k, embeddings=embeddings, model=model, **options)


def build_index(model, images, out, *, dataset: str | None = None, batch_size: int = 64,
                on_bad_image: str = "error", overwrite: bool = False,
                progress: bool = True) -> GalleryIndex:
    """Embed every image of `images` with `model` and write an index folder `out`.

    Args:
        model: a run directory or export path, or an `Embedder`.
        images: a folder (searched recursively), an image list file, or a list of image paths.
        out: the index folder to write.
        dataset: parse pid/camid from the file names as this dataset does (`market1501`, ...).
        batch_size: images per forward pass.
        on_bad_image: `"error"` stops at the first unreadable image; `"skip"` leaves it out,
            warns, and lists it in `index.json`.
        overwrite: replace an existing `out`.
        progress: show a progress bar.

    Returns:
        The loaded `GalleryIndex`.

    Raises:
        FileExistsError: `out` exists and `overwrite` is False.
        FileNotFoundError, ValueError: bad images, model or arguments (named).

    Example:
        >>> build_index("saved_models/hacnn/1", "crops/", "crops.index", dataset="market1501")
    """
    out = pathlib.Path(out).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"index {out} already exists; pass --overwrite (overwrite=True) or "
                              "another --out")
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    if isinstance(images, (str, os.PathLike)):
        root, paths = images_lib.list_images(images)
    else:
        paths = [os.path.abspath(p) for p in images]
        root = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    if not paths:
        raise ValueError("images: the list of image paths is empty")
    broken = [p for p in paths if "\n" in p]
    if broken:
        raise ValueError(f"image path {broken[0]!r}: a line break in a file name cannot be "
                         "stored in paths.txt; rename the file")
    labels = None if dataset is None else np.stack(images_lib.parse_labels(paths, dataset), 1)
    if isinstance(model, (str, os.PathLike)):
        from tfreid.search.embedder import open_model

        model = open_model(model, batch_size=batch_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        skipped, keep = _write_embeddings(tmp, model, paths, batch_size, on_bad_image, progress)
        paths = [p for p, k in zip(paths, keep) if k]
        if not paths:
            raise ValueError(f"images {root}: every image is unreadable ({len(skipped)} skipped)")
        (tmp / "paths.txt").write_text("\n".join(images_lib.relative_paths(paths, root)),
                                       encoding="utf-8")
        if labels is not None:
            np.save(tmp / "labels.npy", labels[keep])
        info = dict(vars(model.info))
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "tfreid": __version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat("T", "seconds"),
                "count": len(paths), "dim": info["embedding_size"], "metric": info.pop("metric"),
                "preprocessing": info.pop("preprocessing"), "model": info,
                "images": {"root": root, "dataset": dataset, "skipped": skipped}}
        (tmp / "index.json").write_text(json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return GalleryIndex.load(out)


def _write_embeddings(folder: pathlib.Path, model, paths, batch_size, on_bad_image, progress):
    """Stream the embeddings of `paths` into `folder/embeddings.npy` (unreadable images left
    out); return the skipped paths and the bool mask of the kept ones."""
    skipped: list[str] = []
    target = folder / "embeddings.npy"
    dim = model.info.embedding_size
    rows = np.lib.format.open_memmap(target, "w+", np.float32, (len(paths), dim))
    start = 0
    for batch in model.embed_files(paths, batch_size, on_bad_image, progress, skipped):
        rows[start:start + len(batch)] = batch
        start += len(batch)
    keep = np.isin(paths, skipped, invert=True)
    if skipped:
        print(f"warning: {len(skipped)} unreadable image(s) skipped and listed in index.json: "
              f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
        kept = np.flatnonzero(keep)
        compact = np.lib.format.open_memmap(folder / "compact.npy", "w+", np.float32,
                                            (len(kept), dim))
        for s in range(0, len(kept), 65536):  # block copy: bounded memory
            compact[s:s + 65536] = rows[kept[s:s + 65536]]
        compact.flush()
        del rows, compact
        os.replace(folder / "compact.npy", target)
    else:
        rows.flush()
    return skipped, keep
