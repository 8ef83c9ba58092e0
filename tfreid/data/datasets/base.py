"""The dataset contract shared by every loader: `Sample` lists and `ReIDDataset`."""

from __future__ import annotations

import dataclasses
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
