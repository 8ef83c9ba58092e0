"""Train torchreid's HA-CNN (PyTorch) on a Market-style folder: the reference for tfreid's A/B.

Runs in a separate virtual environment with PyTorch (never a tfreid dependency) and loads only
torchreid's model file, by path, so the comparison uses the PyTorch port's own network:

    python -m venv ~/torchenv && ~/torchenv/bin/pip install torch numpy scipy pillow
    # hacnn.py from https://github.com/KaiyangZhou/deep-person-reid (torchreid/models/hacnn.py)
    ~/torchenv/bin/python tools/torchreid_reference.py --model-file hacnn.py \\
        --data-root ../shared/data/realreid/market1501 --epochs 5 --eval-epochs 1,3,5 --out runs/torch

Recipe (the HA-CNN paper's, as tfreid's `configs/hacnn_market1501.yaml`): 160x64 bilinear resize,
horizontal flip, ImageNet normalisation, shuffled batches of 32 images (drop last), Adam lr 5e-4
betas (0.9, 0.999), no weight decay, cross-entropy on the global + local logits. Evaluation: the
L2-normalised 1024-D embedding, Euclidean distance, Market protocol, computed with
``tfreid.metrics`` (NumPy only, no TensorFlow). Writes ``<out>/scalars.jsonl`` (mean losses every
``--log-every`` steps, the same tags as tfreid's) and ``<out>/metrics_epoch{N}.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import re
import sys
import time

import numpy as np
import torch
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tfreid.metrics import compute_distance_matrix, evaluate_rank  # noqa: E402  (NumPy only)

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
_NAME = re.compile(r"^([-\d]+)_c(\d+)")


def read_split(folder: pathlib.Path, relabel: bool):
    """(path, pid, camid) of a Market folder; junk (-1) dropped; pids relabelled 0..N-1 if asked."""
    items = []
    for path in sorted(folder.glob("*.jpg")):
        match = _NAME.match(path.name)
        if match and int(match.group(1)) >= 0:
            items.append((str(path), int(match.group(1)), int(match.group(2)) - 1))
    if relabel:
        ids = {pid: i for i, pid in enumerate(sorted({p for _, p, _ in items}))}
        items = [(path, ids[pid], cam) for path, pid, cam in items]
    return items


class Images(torch.utils.data.Dataset):
    def __init__(self, items, size, flip):
        self.items, self.size, self.flip = items, size, flip

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, pid, _ = self.items[i]
        image = Image.open(path).convert("RGB").resize(self.size[::-1], Image.BILINEAR)
        array = (np.asarray(image, np.float32) / 255.0 - MEAN) / STD
        if self.flip and torch.rand(()) < 0.5:
            array = array[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))), pid


def load_model(model_file: str, num_classes: int) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("torchreid_hacnn", model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HACNN(num_classes, loss="softmax", use_gpu=False)


@torch.no_grad()
def embed(model, items, size, batch_size=128):
    loader = torch.utils.data.DataLoader(Images(items, size, flip=False), batch_size=batch_size)
    return np.concatenate([model(x).numpy() for x, _ in loader])


def evaluate(model, query, gallery, size) -> dict:
    model.eval()
    qf, gf = embed(model, query, size), embed(model, gallery, size)
    model.train()
    distmat = compute_distance_matrix(qf, gf, metric="euclidean")
    result = evaluate_rank(distmat, np.array([p for _, p, _ in query]),
                           np.array([p for _, p, _ in gallery]),
                           np.array([c for _, _, c in query]), np.array([c for _, _, c in gallery]))
    return {"mAP": float(result.mAP), "rank1": float(result.cmc[0]), "rank5": float(result.cmc[4]),
            "rank10": float(result.cmc[9]), "mINP": float(result.mINP)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-file", required=True, help="torchreid's models/hacnn.py")
    parser.add_argument("--data-root", required=True, help="Market-1501 style folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--eval-epochs", default="1,3,5", help="comma-separated epochs to evaluate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    root, out = pathlib.Path(args.data_root), pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = (160, 64)
    train = read_split(root / "bounding_box_train", relabel=True)
    query, gallery = read_split(root / "query", False), read_split(root / "bounding_box_test", False)
    num_classes = len({p for _, p, _ in train})
    model = load_model(args.model_file, num_classes)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {num_classes} classes")
    loader = torch.utils.data.DataLoader(Images(train, size, flip=True), batch_size=args.batch_size,
                                         shuffle=True, drop_last=True, num_workers=1,
                                         persistent_workers=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    criterion = torch.nn.CrossEntropyLoss()
    eval_epochs = {int(e) for e in args.eval_epochs.split(",") if e}
    log = open(out / "scalars.jsonl", "w")
    step, window, compute = 0, [], 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        for images, labels in loader:
            t0 = time.perf_counter()
            logits_global, logits_local = model(images)
            ce_global, ce_local = criterion(logits_global, labels), criterion(logits_local, labels)
            loss = ce_global + ce_local
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            compute += time.perf_counter() - t0
            step += 1
            window.append([ce_global.item(), ce_local.item(), loss.item()])
            if step % args.log_every == 0:
                means = np.mean(window, axis=0)
                for tag, value in zip(("loss/ce_global", "loss/ce_local", "loss/total"), means):
                    log.write(json.dumps({"step": step, "tag": tag, "value": float(value)}) + "\n")
                log.flush()
                window = []
        print(f"epoch {epoch}: step {step}, {step * args.batch_size / compute:.1f} img/s "
              f"(train step only), last loss {loss.item():.4f}", flush=True)
        if epoch in eval_epochs:
            metrics = {"epoch": epoch, "steps": step, **evaluate(model, query, gallery, size)}
            (out / f"metrics_epoch{epoch}.json").write_text(json.dumps(metrics, indent=2))
            print(json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
