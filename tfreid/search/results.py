"""Search results: the printed table, `results.json` and the ranked-list pictures.

The pictures are the `python -m tfreid.visualize ranks` drawing: the query framed black, then
its top-k gallery images framed green (same identity) or red (another identity) when the index
knows identities, grey when it does not, each captioned with its distance.

Example:
    >>> result = GalleryIndex.load("crops.index").query(["q.jpg"])   # doctest: +SKIP
    >>> print(result.format()); result.write("results/")            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys

import numpy as np

MAX_GRID_ROWS = 50  # queries stacked in ranks_grid.png (every query still gets its own PNG)


@dataclasses.dataclass
class SearchResult:
    """The top-k gallery items of each query.

    Attributes:
        index: the searched `GalleryIndex`.
        query_paths: the query image paths (None when queried with embeddings).
        query_pids, query_camids: ids parsed from the query names like the gallery's (-1 where
            unknown), or None when the index has no identities.
        indices: int64 `[Q, k]` gallery rows, best first (-1 = no result).
        distances: float32 `[Q, k]` in the index's metric (+inf = no result).
        rerank_distances: float32 `[Q, k]` re-ranked distances (the order), or None.
        metric: the distance.
        method: how the neighbours were found (`"numpy (exact)"`, ...).
        recall: approximate search only: `(recall@k, number of sampled queries)`.
        skipped: unreadable query images left out.
        seconds: wall time per stage (`embed`, `build`, `search`, `rerank`).
    """

    index: object
    query_paths: list | None
    query_pids: np.ndarray | None
    query_camids: np.ndarray | None
    indices: np.ndarray
    distances: np.ndarray
    rerank_distances: np.ndarray | None
    metric: str
    method: str
    recall: tuple | None
    skipped: list
    seconds: dict

    def matches(self) -> np.ndarray:
        """object `[Q, k]`: True/False when the query's and the item's identities are known
        (pids <= 0, distractors and junk, never match), None otherwise."""
        out = np.full(self.indices.shape, None, object)
        if self.query_pids is None or self.index.pids is None:
            return out
        g_pids = self.index.pids[np.maximum(self.indices, 0)]
        for i, pid in enumerate(self.query_pids):
            if pid >= 0:
                out[i] = [bool(same and pid > 0) for same in g_pids[i] == pid]
        return out

    def summary(self) -> str:
        """One line: what was searched, how, and (approximate) the measured recall."""
        line = (f"{len(self.indices)} queries x {len(self.index):,} gallery images, top-"
                f"{self.indices.shape[1]}, {self.metric}, {self.method}"
                f"{', re-ranked' if self.rerank_distances is not None else ''}")
        if self.recall is not None:
            line += (f"; recall@{self.indices.shape[1]} vs exact = {self.recall[0]:.3f} on "
                     f"{self.recall[1]} queries")
        return line

    def format(self) -> str:
        """The top-k of every query as text (rank, distance, identity, gallery path)."""
        lines = [self.summary()]
        matches = self.matches()
        shown = self.rerank_distances if self.rerank_distances is not None else self.distances
        for i, row in enumerate(self.indices):
            lines.append(f"query {i + 1}: {self._query_name(i)}{self._query_ids(i)}")
            for rank, g in enumerate(row[row >= 0]):
                ids = "" if self.index.pids is None else \
                    f"  pid {self.index.pids[g]:>5} cam {self.index.camids[g] + 1:>2}"
                mark = {True: "  match", False: "", None: ""}[matches[i, rank]]
                lines.append(f"  {rank + 1:>4}  {shown[i, rank]:10.4f}{ids}  {self.index.paths[g]}"
                             f"{mark}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready results (what `write` stores as `results.json`)."""
        matches = self.matches()
        queries = []
        for i, row in enumerate(self.indices):
            items = []
            for rank, g in enumerate(row[row >= 0]):
                item = {"rank": rank + 1, "gallery_index": int(g), "path": self.index.paths[g],
                        "distance": float(self.distances[i, rank])}
                if self.rerank_distances is not None:
                    item["rerank_distance"] = float(self.rerank_distances[i, rank])
                if self.index.pids is not None:
                    item.update(pid=int(self.index.pids[g]), camid=int(self.index.camids[g]),
                                match=matches[i, rank])
                items.append(item)
            query = {"path": None if self.query_paths is None else self.query_paths[i]}
            if self.query_pids is not None:
                query.update(pid=int(self.query_pids[i]), camid=int(self.query_camids[i]))
            queries.append({**query, "results": items})
        model = self.index.meta["model"]
        return {"index": str(self.index.path), "gallery_root": self.index.root,
                "gallery_size": len(self.index),
                "model": {key: model[key] for key in ("name", "format", "source", "version")},
                "metric": self.metric, "method": self.method,
                "rerank": self.rerank_distances is not None,
                "recall_at_k": None if self.recall is None else self.recall[0],
                "recall_queries": None if self.recall is None else self.recall[1],
                "skipped_queries": self.skipped, "seconds": self.seconds, "queries": queries}

    def write(self, out_dir, cell_size=(128, 64)) -> list[pathlib.Path]:
        """Write `results.json`, one ranked-list PNG per query and `ranks_grid.png`.

        A picture whose images cannot be read (a gallery moved since indexing) is skipped with
        a warning; the JSON is always written.

        Returns:
            The paths written.
        """
        from tfreid.visualize import draw
        from tfreid.visualize.ranks import render_ranked_list

        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        written, pictures = [], []
        matches = self.matches()
        shown = self.rerank_distances if self.rerank_distances is not None else self.distances
        for i, row in enumerate(self.indices if self.query_paths is not None else []):
            row = row[row >= 0]
            files = [self.query_paths[i]] + [self.index.image_path(g) for g in row]
            try:
                images = draw.to_uint8(draw.load_images(files, cell_size))
            except (FileNotFoundError, ValueError) as err:
                print(f"warning: no picture for query {files[0]}: {err}", file=sys.stderr)
                continue
            captions = [(f"{shown[i, r]:.3f}", self._item_caption(g)) for r, g in enumerate(row)]
            title = f"query {i + 1}: {os.path.basename(files[0])}  ({self.metric}, {self.method})"
            query_caption = ("query", self._ids_caption(self.query_pids, self.query_camids, i))
            picture = render_ranked_list(images[0], images[1:], matches[i, :len(row)], captions,
                                         query_caption, title)
            path = out_dir / f"q{i + 1:04d}_{draw.safe_name(files[0])}.png"
            picture.save(path)
            data["queries"][i]["picture"] = path.name
            written.append(path)
            pictures.append(picture)
        if pictures:
            grid = out_dir / "ranks_grid.png"
            draw.stack_rows(pictures[:MAX_GRID_ROWS]).save(grid)
            written.append(grid)
        listing = out_dir / "results.json"
        listing.write_text(json.dumps(data, indent=1))
        return [listing, *written]

    def _query_name(self, i: int) -> str:
        return "(embedding)" if self.query_paths is None else self.query_paths[i]

    def _query_ids(self, i: int) -> str:
        if self.query_pids is None or self.query_pids[i] < 0:
            return ""
        return f" (pid {self.query_pids[i]}, cam {self.query_camids[i] + 1})"

    def _item_caption(self, g: int) -> str:
        if self.index.pids is None:
            return os.path.basename(self.index.paths[g])[:12]
        return self._ids_caption(self.index.pids, self.index.camids, g)

    @staticmethod
    def _ids_caption(pids, camids, i: int) -> str:
        if pids is None or pids[i] < 0:
            return ""
        return f"id {pids[i]} c{camids[i] + 1}"
