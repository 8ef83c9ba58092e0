"""Tests for tfreid.metrics.compute_distance_matrix against scipy.spatial.distance.cdist."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from tfreid.metrics import compute_distance_matrix


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    return rng.standard_normal((23, 16)), rng.standard_normal((41, 16))


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_matches_cdist(feats, metric, chunk_size):
    qf, gf = feats
    d = compute_distance_matrix(qf, gf, metric, chunk_size=chunk_size)
    assert d.dtype == np.float32 and d.shape == (23, 41)
    np.testing.assert_allclose(d, cdist(qf, gf, metric), rtol=1e-5, atol=1e-5)
    d64 = compute_distance_matrix(qf, gf, metric, chunk_size=chunk_size, dtype=np.float64)
    np.testing.assert_allclose(d64, cdist(qf, gf, metric), rtol=1e-10, atol=1e-10)


def test_hand_values_and_edge_cases():
    q = np.array([[0.0, 0.0], [1.0, 0.0]])
    g = np.array([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(compute_distance_matrix(q, g),
                               [[5, 2, 0, 1], [np.sqrt(20), np.sqrt(5), 1, 0]], rtol=1e-6)
    np.testing.assert_allclose(compute_distance_matrix(q, g, "sqeuclidean"),
                               [[25, 4, 0, 1], [20, 5, 1, 0]], rtol=1e-6)
    # cosine: zero vectors have similarity 0 (distance 1) instead of NaN
    np.testing.assert_allclose(compute_distance_matrix(q, g, "cosine"),
                               [[1, 1, 1, 1], [1 - 3 / 5, 1, 1, 0]], atol=1e-6)
    # identical rows: the expansion may cancel slightly below zero; clipped, never NaN
    x = np.full((3, 128), 0.1234567)
    d = compute_distance_matrix(x, x)
    assert np.isfinite(d).all() and (d >= 0).all() and d.max() < 1e-2


def test_errors_name_argument_and_value():
    q, g = np.zeros((2, 3)), np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"metric must be one of .*'manhattan'"):
        compute_distance_matrix(q, g, "manhattan")
    with pytest.raises(ValueError, match="qf has dim 3, gf has dim 5"):
        compute_distance_matrix(q, np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"gf must be a non-empty 2-D array.*\(4,\)"):
        compute_distance_matrix(q, np.zeros(4))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        compute_distance_matrix(q, g, chunk_size=0)
    with pytest.raises(ValueError, match="qf contains NaN"):
        compute_distance_matrix(np.full((2, 3), np.nan), g)


def test_metrics_package_imports_no_tensorflow():
    import tfreid.metrics  # noqa: F401  (already imported above; check what came with it)
    assert tfreid.metrics.evaluate_rank is not None
    # tests in other packages may import TF in the same session, so check in a fresh process
    code = ("import sys, tfreid.metrics; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras') "
            "or (m.startswith('tfreid.') and not m.startswith('tfreid.metrics'))]; "
            "print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=pathlib.Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stdout + proc.stderr
