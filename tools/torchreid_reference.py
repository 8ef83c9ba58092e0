"""Train torchreid's networks (PyTorch) on a Market-style folder: the reference for tfreid's A/B.

Runs in a separate virtual environment with PyTorch (never a tfreid dependency) and loads only
torchreid's model file, by path, so the comparison uses the PyTorch port's own network:

    python -m venv ~/torchenv && ~/torchenv/bin/pip install torch numpy scipy pillow
    # hacnn.py / resnet.py from https://github.com/KaiyangZhou/deep-person-reid (torchreid/models)
    ~/torchenv/bin/python tools/torchreid_reference.py --model-file hacnn.py \\
        --data-root ../shared/data/realreid/market1501 --epochs 5 --eval-epochs 1,3,5 --out runs/torch

``--model-file hacnn.py`` (HA-CNN paper recipe, as tfreid's `configs/hacnn_market1501.yaml`):
160x64 bilinear resize, horizontal flip, ImageNet normalisation, shuffled batches of 32 images
(drop last), Adam lr 5e-4 betas (0.9, 0.999), no weight decay, cross-entropy on the global + local
logits; evaluated on the L2-normalised 1024-D embedding with the Euclidean distance.

``--model-file resnet.py`` (the ADFL strong baseline, tfreid's ``baseline`` model): torchreid's
ResNet-50 trunk (last stride 1, zero-initialised residual branches) + global max pooling + FC 1024 +
BNNeck, P x K batches (``--p``/``--k``), cross-entropy on the BN output + batch-hard triplet
(margin 0.3, Euclidean) on the FC output, Adam ``--lr`` constant; evaluated on the BN output with
the cosine distance.

Metrics use ``tfreid.metrics`` (NumPy only, no TensorFlow), Market protocol. Writes
``<out>/scalars.jsonl`` (mean losses every ``--log-every`` steps, the same tags as tfreid's) and
``<out>/metrics_epoch{N}.json``.

``--bench-steps N`` instead times N bare train steps on random tensors (batch 32, after 3 warm-up
steps), then N inference passes, and exits: the PyTorch side of the bare-step benchmarks.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import re
import sys
import time
import types

import numpy as np
import torch
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
# tfreid/__init__ needs TensorFlow; this venv has PyTorch only, so load the NumPy-only metrics
# subpackage under an empty parent package.
sys.modules.setdefault("tfreid", types.ModuleType("tfreid")).__path__ = [str(REPO / "tfreid")]
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


class StrongBaseline(torch.nn.Module):
    """ResNet-50 trunk -> global max pool -> FC -> BNNeck -> bias-free classifier."""

    def __init__(self, module, num_classes: int, bottleneck: int = 1024):
        super().__init__()
        self.trunk = module.ResNet(num_classes, "softmax", module.Bottleneck, [3, 4, 6, 3],
                                   zero_init_residual=True, last_stride=1)
        self.fc = torch.nn.Linear(2048, bottleneck)
        self.bnneck = torch.nn.BatchNorm1d(bottleneck)
        self.classifier = torch.nn.Linear(bottleneck, num_classes, bias=False)

    def forward(self, x):
        feature = self.fc(torch.amax(self.trunk.featuremaps(x), dim=(2, 3)))
        embedding = self.bnneck(feature)
        return (self.classifier(embedding), feature) if self.training else embedding


def load_model(model_file: str, num_classes: int) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("torchreid_model", model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "HACNN"):
        return module.HACNN(num_classes, loss="softmax", use_gpu=False)
    return StrongBaseline(module, num_classes)


def batch_hard_triplet(features, labels, margin=0.3):
    distances = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    hardest_positive = (distances * same).amax(dim=1)
    hardest_negative = (distances + same * 1e6).amin(dim=1)
    return torch.relu(hardest_positive - hardest_negative + margin).mean()


class PKBatches(torch.utils.data.Sampler):
    """P identities x K images per batch (K with replacement when an identity has fewer)."""

    def __init__(self, pids, p, k, seed):
        self.by_id, self.p, self.k, self.seed, self.epoch = {}, p, k, seed, 0
        for index, pid in enumerate(pids):
            self.by_id.setdefault(pid, []).append(index)
        self.batches = len(pids) // (p * k)

    def __len__(self):
        return self.batches

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        ids = list(self.by_id)
        for _ in range(self.batches):
            batch = []
            for pid in rng.choice(ids, self.p, replace=False):
                images = self.by_id[pid]
                batch += list(rng.choice(images, self.k, replace=len(images) < self.k))
            yield batch


@torch.no_grad()
def embed(model, items, size, batch_size=128):
    loader = torch.utils.data.DataLoader(Images(items, size, flip=False), batch_size=batch_size)
    return np.concatenate([model(x).numpy() for x, _ in loader])


def evaluate(model, query, gallery, size, metric) -> dict:
    model.eval()
    qf, gf = embed(model, query, size), embed(model, gallery, size)
    model.train()
    distmat = compute_distance_matrix(qf, gf, metric=metric)
    result = evaluate_rank(distmat, np.array([p for _, p, _ in query]),
                           np.array([p for _, p, _ in gallery]),
                           np.array([c for _, _, c in query]), np.array([c for _, _, c in gallery]))
    return {"mAP": float(result.mAP), "rank1": float(result.cmc[0]), "rank5": float(result.cmc[4]),
            "rank10": float(result.cmc[9]), "mINP": float(result.mINP)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-file", required=True, help="torchreid's models/hacnn.py")
    parser.add_argument("--data-root", required=True, help="Market-1501 style folder")
    parser.add_argument("--out", help="output folder (required unless --bench-steps)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--eval-epochs", default="1,3,5", help="comma-separated epochs to evaluate")
    parser.add_argument("--batch-size", type=int, default=32, help="HA-CNN: shuffled batch size")
    parser.add_argument("--p", type=int, default=8, help="ResNet-50: identities per batch")
    parser.add_argument("--k", type=int, default=4, help="ResNet-50: images per identity")
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--bench-steps", type=int, default=0, help="time N bare steps and exit")
    args = parser.parse_args(argv)

    if not args.bench_steps and not args.out:
        parser.error("--out is required for training")
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = pathlib.Path(args.data_root)
    size = (args.height, args.width)
    train = read_split(root / "bounding_box_train", relabel=True)
    query, gallery = read_split(root / "query", False), read_split(root / "bounding_box_test", False)
    num_classes = len({p for _, p, _ in train})
    model = load_model(args.model_file, num_classes)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {num_classes} classes")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    criterion = torch.nn.CrossEntropyLoss()

    hacnn = not isinstance(model, StrongBaseline)
    tags = ("ce_global", "ce_local") if hacnn else ("ce_global", "triplet_global")

    def train_step(images, labels):
        outputs = model(images)
        if hacnn:
            terms = [criterion(outputs[0], labels), criterion(outputs[1], labels)]
        else:
            terms = [criterion(outputs[0], labels), batch_hard_triplet(outputs[1], labels)]
        loss = terms[0] + terms[1]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return terms[0], terms[1], loss  # the two named terms, then their sum

    if args.bench_steps:
        batch = args.batch_size if hacnn else args.p * args.k
        images = torch.randn(batch, 3, *size)
        labels = torch.arange(batch) // (1 if hacnn else args.k) % num_classes
        for _ in range(3):
            train_step(images, labels)
        t0 = time.perf_counter()
        for _ in range(args.bench_steps):
            train_step(images, labels)
        seconds = (time.perf_counter() - t0) / args.bench_steps
        print(f"torchreid {type(model).__name__} bare train step: {seconds:.3f} s/step, "
              f"{batch / seconds:.1f} img/s ({torch.get_num_threads()} threads)")
        model.eval()
        with torch.no_grad():
            for _ in range(3):
                model(images)
            t0 = time.perf_counter()
            for _ in range(args.bench_steps):
                model(images)
        seconds = (time.perf_counter() - t0) / args.bench_steps
        print(f"torchreid {type(model).__name__} inference: {seconds:.3f} s/batch, "
              f"{batch / seconds:.1f} img/s")
        return 0
    batching = (dict(batch_size=args.batch_size, shuffle=True, drop_last=True) if hacnn else
                dict(batch_sampler=PKBatches([p for _, p, _ in train], args.p, args.k, args.seed)))
    loader = torch.utils.data.DataLoader(Images(train, size, flip=True), num_workers=1,
                                         persistent_workers=True, **batching)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    eval_epochs = {int(e) for e in args.eval_epochs.split(",") if e}
    log = open(out / "scalars.jsonl", "w")
    step, window, compute = 0, [], 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        for images, labels in loader:
            t0 = time.perf_counter()
            values = train_step(images, labels)
            compute += time.perf_counter() - t0
            step += 1
            window.append([v.item() for v in values])
            if step % args.log_every == 0:
                means = np.mean(window, axis=0)
                for tag, value in zip((*(f"loss/{t}" for t in tags), "loss/total"), means):
                    log.write(json.dumps({"step": step, "tag": tag, "value": float(value)}) + "\n")
                log.flush()
                window = []
        print(f"epoch {epoch}: step {step}, {step * len(labels) / compute:.1f} img/s "
              f"(train step only), last loss {values[-1].item():.4f}", flush=True)
        if epoch in eval_epochs:
            metric = "euclidean" if hacnn else "cosine"
            metrics = {"epoch": epoch, "steps": step, **evaluate(model, query, gallery, size, metric)}
            (out / f"metrics_epoch{epoch}.json").write_text(json.dumps(metrics, indent=2))
            print(json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
