"""Benchmark tfreid.metrics at benchmark scale: time and peak memory.

Cases (synthetic ids with the real datasets' sizes, 512-D float32 features). ``--features
random`` (default) draws i.i.d. Gaussian features: true matches land anywhere in the ranking, the
worst case for the evaluator. ``--features clustered`` draws them around one centre per identity,
like a trained model, so matches rank near the top (the evaluator then skips the full sort for
most rows).

* ``market``: Market-1501 test split -- 3,368 queries x 15,913 gallery, 750 ids, 6 cameras,
  2,798 distractors (pid 0). Times ``compute_distance_matrix`` and ``evaluate_rank`` on the
  full float32 distance matrix.
* ``msmt17``: MSMT17 test split -- 11,659 queries x 82,161 gallery, 3,060 ids, 15 cameras.
  Times ``evaluate_features`` (the full matrix, 3.8 GB, is never built).

Each case runs in its own subprocess; peak memory is that process's peak resident set size from
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (includes Python, NumPy and the generated features).
The RSS right before evaluation is printed too, so the evaluation's own share is visible, and
the evaluation's CPU time (``time.process_time``) next to its wall time, because the wall time
depends on how busy the machine is.

Usage:
    python tools/benchmark_eval.py --case all
    python tools/benchmark_eval.py --case msmt17 --features clustered --memory-budget-mb 1024
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

CASES = {
    # name: (num_query, num_gallery, num_ids, num_cams, num_distractors)
    "market": (3368, 15913, 750, 6, 2798),
    "msmt17": (11659, 82161, 3060, 15, 0),
}


def make_case(name, features="random", dim=512, seed=0, noise=1.5):
    """Synthetic features and ids with the sizes of ``CASES[name]``.

    Every identity appears in the gallery; each query's identity and camera are drawn so that
    most queries have matches in other cameras (a few do not, as in the real splits).
    ``features="random"``: i.i.d. N(0, 1); ``"clustered"``: identity centre + ``noise`` * N(0, 1).
    """
    nq, ng, nids, ncams, ndis = CASES[name]
    rng = np.random.default_rng(seed)
    n_real = ng - ndis
    g_pids = np.concatenate([np.arange(1, nids + 1), rng.integers(1, nids + 1, n_real - nids),
                             np.zeros(ndis, np.int64)])
    q_pids = np.concatenate([np.arange(1, nids + 1), rng.integers(1, nids + 1, nq - nids)])
    g_cams, q_cams = rng.integers(0, ncams, ng), rng.integers(0, ncams, nq)
    centres = rng.standard_normal((nids + 1, dim), dtype=np.float32)
    gf = centres[g_pids] + noise * rng.standard_normal((ng, dim), dtype=np.float32)
    gf[g_pids == 0] = noise * rng.standard_normal((ndis, dim), dtype=np.float32)
    qf = centres[q_pids] + noise * rng.standard_normal((nq, dim), dtype=np.float32)
    if features == "random":
        qf, gf = (rng.standard_normal(x.shape, dtype=np.float32) for x in (qf, gf))
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_case(name, memory_budget_mb, metric, features="random"):
    """Run one case in this process and return a dict of measurements."""
    from tfreid.metrics import compute_distance_matrix, evaluate_features, evaluate_rank

    qf, gf, q_pids, g_pids, q_cams, g_cams = make_case(name, features)
    out = {"case": name, "shape": f"{len(qf)}x{len(gf)}", "metric": metric, "features": features}
    if name == "market":
        t0 = time.perf_counter()
        distmat = compute_distance_matrix(qf, gf, metric)
        out["distance_s"] = time.perf_counter() - t0
        out["rss_before_eval_mb"] = _rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        res = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50)
        out["api"] = "evaluate_rank(distmat)"
    else:
        out["rss_before_eval_mb"] = _rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        res = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric, max_rank=50,
                                memory_budget_mb=memory_budget_mb)
        out["api"] = f"evaluate_features(memory_budget_mb={memory_budget_mb})"
    out["eval_s"] = time.perf_counter() - t0
    out["eval_cpu_s"] = time.process_time() - c0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(mAP=res.mAP, rank1=res.rank1, mINP=res.mINP, valid=res.num_valid_queries)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--case", choices=["market", "msmt17", "all"], default="all")
    p.add_argument("--metric", default="euclidean")
    p.add_argument("--features", choices=["random", "clustered"], default="random")
    p.add_argument("--memory-budget-mb", type=float, default=1024)
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:  # measured process: print one JSON line
        print(json.dumps(run_case(args.case, args.memory_budget_mb, args.metric, args.features)))
        return 0
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in (["market", "msmt17"] if args.case == "all" else [args.case]):
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", "--case", name,
               "--metric", args.metric, "--memory-budget-mb", str(args.memory_budget_mb),
               "--features", args.features]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{name}: FAILED\n{proc.stderr}", file=sys.stderr)
            return proc.returncode
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        dist = f"  distances {r['distance_s']:.2f} s" if "distance_s" in r else ""
        print(f"{r['case']:7s} {r['shape']:>12s} {r['features']} {r['api']}: eval "
              f"{r['eval_s']:.2f} s wall / {r['eval_cpu_s']:.2f} s CPU{dist}  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (before eval {r['rss_before_eval_mb']:.0f} MB)"
              f"  mAP {r['mAP']:.4f} rank1 {r['rank1']:.4f} mINP {r['mINP']:.4f} "
              f"valid {r['valid']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
