"""Gallery search benchmark: build + query time and peak memory, NumPy exact vs faiss.

For each gallery size, random float32 embeddings are written to an `.npy` file (as an index
stores them), then every method runs in a fresh process on that file:

    numpy exact     tfreid.search.exact_topk over the memory-mapped file (no build step)
    faiss exact     IndexFlatL2 filled from the file, then searched
    faiss IVF-Flat  trained + filled (default nlist = sqrt(N)), searched with nprobe = nlist/16
                    (the CLI default) and nlist/4; recall@k against the NumPy result

Query time is measured twice: all queries in one call (a batch: exact search reads the gallery
once for all of them) and one query alone (median of 3; interactive use). Memory is sampled
from /proc/self/status every 5 ms: `anon` is the peak of the process's own allocations (what
search needs in RAM); `rss` also counts the file pages it touched (page cache the kernel can
drop). Prints a Markdown table with the load average before/after each run.

    nice -n 19 python tools/benchmark_search.py [--sizes 10000 100000 1000000] [--dim 1024]
        [--queries 100] [--topk 10] [--workdir /tmp/search-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np

METHODS = ("numpy", "faiss-flat", "faiss-ivf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="gallery sizes (default %(default)s)")
    parser.add_argument("--dim", type=int, default=1024,
                        help="embedding size (default %(default)s)")
    parser.add_argument("--queries", type=int, default=100, help="queries (default %(default)s)")
    parser.add_argument("--topk", type=int, default=10, help="k (default %(default)s)")
    parser.add_argument("--workdir", default="/tmp/search-bench",
                        help="where the embedding files go (4 GB per million; default %(default)s)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = pathlib.Path(args.workdir)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), workdir, args.topk)))
        return 0
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        write_embeddings(workdir, size, args.dim, args.queries)
        for method in METHODS:
            before = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, __file__, "--worker", method, str(size),
                                   "--workdir", str(workdir), "--topk", str(args.topk)],
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{method} on {size}: {proc.stderr[-2000:]}")
            for result in json.loads(proc.stdout.strip().splitlines()[-1]):
                rows.append({**result, "size": size, "load": (before, os.getloadavg()[0])})
                print(format_row(rows[-1], args.queries), flush=True)
        for name in ("gallery", "exact"):
            (workdir / f"{name}-{size}.npy").unlink(missing_ok=True)
    print(f"\n{os.cpu_count()} CPUs, {args.queries} queries, top-{args.topk}, {args.dim}-D "
          f"float32, euclidean\n")
    print(HEADER.format(queries=args.queries, topk=args.topk))
    for row in rows:
        print(format_row(row, args.queries))
    return 0


HEADER = ("| gallery | method | build s | {queries} queries s | ms/query in batch | 1 query ms | "
          "peak anon MB | peak RSS MB | recall@{topk} | load 1-min before/after |\n"
          "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")


def format_row(row: dict, queries: int) -> str:
    recall = "1 (exact)" if row["recall"] is None else f"{row['recall']:.3f}"
    return (f"| {row['size']:,} | {row['method']} | {row['build']:.2f} | {row['query']:.2f} | "
            f"{1000 * row['query'] / queries:.1f} | {1000 * row['single']:.1f} | "
            f"{row['anon_mb']:,.0f} | {row['rss_mb']:,.0f} | {recall} | "
            f"{row['load'][0]:.1f} / {row['load'][1]:.1f} |")


def timed(search, queries) -> tuple[float, float, np.ndarray]:
    """`(batch seconds, median single-query seconds, batch result indices)`."""
    start = time.perf_counter()
    found = search(queries)[0]
    batch = time.perf_counter() - start
    singles = []
    for i in range(3):
        start = time.perf_counter()
        search(queries[i:i + 1])
        singles.append(time.perf_counter() - start)
    return batch, float(np.median(singles)), found


def write_embeddings(workdir: pathlib.Path, size: int, dim: int, queries: int) -> None:
    """Random N(0, 1) gallery (block by block) and queries; the gallery as a .npy file."""
    rng = np.random.default_rng(size)
    gallery = np.lib.format.open_memmap(workdir / f"gallery-{size}.npy", "w+", np.float32,
                                        (size, dim))
    for start in range(0, size, 65536):
        stop = min(size, start + 65536)
        gallery[start:stop] = rng.standard_normal((stop - start, dim), np.float32)
    gallery.flush()
    np.save(workdir / "queries.npy", rng.standard_normal((queries, dim), np.float32))


class MemorySampler:
    """Peak RssAnon / VmRSS of this process, sampled in a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, {"anon": 0, "rss": 0}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {"anon": int(fields["RssAnon"].split()[0]), "rss": int(fields["VmRSS"].split()[0])}

    def _run(self):
        while not self._stop.is_set():
            now = self._read()
            self.peak = {k: max(self.peak[k], now[k]) for k in now}
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def worker(method: str, size: int, workdir: pathlib.Path, k: int) -> list[dict]:
    """Run one method on one gallery size; returns one result row per configuration."""
    from tfreid.search import exact_topk, faiss_index

    queries = np.load(workdir / "queries.npy")
    with MemorySampler() as memory:
        gallery = np.load(workdir / f"gallery-{size}.npy", mmap_mode="r")
        start = time.perf_counter()
        if method == "numpy":
            batch, single, found = timed(lambda q: exact_topk(q, gallery, k), queries)
            np.save(workdir / f"exact-{size}.npy", found)  # the recall reference
            timings = [("numpy exact", 0.0, batch, single, None)]
        elif method == "faiss-flat":
            index = faiss_index.build_flat(gallery, "euclidean")
            build = time.perf_counter() - start
            batch, single, _ = timed(
                lambda q: faiss_index.search(index, q, gallery, k, "euclidean"), queries)
            timings = [("faiss flat (exact)", build, batch, single, None)]
        else:
            exact = np.load(workdir / f"exact-{size}.npy")
            ivf = faiss_index.build_ivf(gallery, "euclidean")
            build = time.perf_counter() - start
            timings = []
            for nprobe in (faiss_index.default_nprobe(ivf.nlist), max(1, ivf.nlist // 4)):
                batch, single, found = timed(
                    lambda q: faiss_index.ivf_topk(ivf, q, gallery, k, "euclidean", nprobe),
                    queries)
                timings.append((f"faiss IVF-Flat nlist={ivf.nlist} nprobe={nprobe}", build,
                                batch, single, faiss_index.recall_at_k(found, exact)))
    return [{"method": name, "build": b, "query": q, "single": one, "recall": r,
             "anon_mb": memory.peak["anon"] / 1024, "rss_mb": memory.peak["rss"] / 1024}
            for name, b, q, one, r in timings]


if __name__ == "__main__":
    sys.exit(main())
