"""The dataset contract shared by every loader: `Sample` lists and `ReIDDataset`."""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple


class Sample(NamedTuple):
    """One image: its file path, person id and camera id (camids start at 0)."""

    path: str
    pid: int
    camid: int


@dataclasses.dataclass
class ReIDDataset:
    """Train / query / gallery splits of a ReID benchmark.

    Train pids are relabelled 0..N-1; query and gallery keep the original ids (pid 0 marks
    distractors, junk pid -1 is dropped at load time).
    """

    name: str
    root: str
    train: list[Sample]
    query: list[Sample]
    gallery: list[Sample]

    @property
    def num_train_pids(self) -> int:
        return len({s.pid for s in self.train})

    def summary(self) -> str:
        """A small table of images / ids / cameras per split."""
        lines = [f"{self.name} ({self.root})", "  split    | images |  ids | cams"]
        for split in ("train", "query", "gallery"):
            samples = getattr(self, split)
            ids = len({s.pid for s in samples})
            cams = len({s.camid for s in samples})
            lines.append(f"  {split:<8} | {len(samples):6d} | {ids:4d} | {cams:4d}")
        return "\n".join(lines)


def relabel(samples: list[Sample]) -> list[Sample]:
    """Map train pids to 0..N-1 in sorted order of the original ids."""
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid) for s in samples]


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def check_inside_root(dataset: ReIDDataset) -> None:
    """ValueError unless every image path of `dataset` resolves (symlinks followed, ``..``
    collapsed) inside ``dataset.root``: one rule for every loader, so a CSV row or a symlink
    cannot make training read arbitrary files. Opt out with ``allow_outside_root=True``."""
    root = os.path.realpath(dataset.root)
    for split in ("train", "query", "gallery"):
        for s in getattr(dataset, split):
            real = os.path.realpath(s.path)
            if not _inside(real, root):
                raise ValueError(
                    f"dataset {dataset.name!r}: {split} image {s.path} resolves to {real}, outside "
                    f"the dataset folder {root}; move it inside, or opt in with "
                    "allow_outside_root=True (--set data.kwargs.allow_outside_root=true)")


def find_bad_links(root: str) -> list[tuple[str, str]]:
    """``(path, reason)`` for every symlink under `root` that dangles or leads outside it."""
    real_root = os.path.realpath(root)
    found = []
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                continue
            real = os.path.realpath(path)
            if not os.path.exists(path):
                found.append((path, f"dangling symlink (-> {os.readlink(path)})"))
            elif not _inside(real, real_root):
                found.append((path, f"symlink leading outside the dataset folder (-> {real})"))
    return sorted(found)
