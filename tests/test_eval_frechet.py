"""The factor route to the Frechet distance equals fid_from_features (and an SVD reference where
covariances are singular), one set at a time and in batches of subsets."""
from __future__ import annotations

import numpy as np
import pytest

from fairdiff.evaluate import metrics as M
from fairdiff.evaluate.frechet import FeatureSet, frechet_distance, frechet_of_subsets


def pooled(n: int, d: int, shift: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.maximum((rng.normal(size=(n, 6)) + shift) @ rng.normal(size=(6, d)), 0.0) + 0.05 * rng.random((n, d))


def svd_reference(x: np.ndarray, y: np.ndarray) -> float:
    """tr((S_x S_y)^(1/2)) as the nuclear norm of the centred cross product, by SVD (accurate for
    the tiny singular values of singular covariances)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    trace_sqrt = np.linalg.svd(xc @ yc.T / np.sqrt((len(x) - 1) * (len(y) - 1)), compute_uv=False).sum()
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + (xc ** 2).sum() / (len(x) - 1)
                 + (yc ** 2).sum() / (len(y) - 1) - 2 * trace_sqrt)


@pytest.mark.parametrize("n_real,n_fake,d", [(300, 250, 16), (160, 140, 32), (17, 17, 32), (5, 40, 32), (200, 9, 32)])
def test_equals_fid_from_features(n_real, n_fake, d):
    x, y = pooled(n_real, d, 0.0, 1), pooled(n_fake, d, 0.3, 2)
    ours = frechet_distance(FeatureSet(x), FeatureSet(y))
    assert ours == pytest.approx(svd_reference(x, y), rel=1e-8)
    assert ours == pytest.approx(M.fid_from_features(x, y), rel=1e-6)  # the general eigenvalues lose ~1e-7 there


def test_cached_factor_is_reused_with_either_side():
    x, y = pooled(300, 16, 0.0, 3), pooled(250, 16, 0.2, 4)
    a, b = FeatureSet(x), FeatureSet(y)
    _ = b.factor  # only the second set has its factor: the route swaps sides
    assert frechet_distance(a, b) == pytest.approx(M.fid_from_features(x, y), rel=1e-9)
    assert not a.has_factor()


def test_batched_subsets_equal_one_by_one():
    x, y = pooled(90, 24, 0.0, 5), pooled(80, 24, 0.2, 6)
    rng = np.random.default_rng(7)
    for m in (12, 30):  # both below d and above it
        rows_r = np.stack([rng.permutation(90)[:m] for _ in range(5)])
        rows_f = np.stack([rng.permutation(80)[:m] for _ in range(5)])
        expected = [svd_reference(x[r], y[f]) for r, f in zip(rows_r, rows_f)]
        assert frechet_of_subsets(x, y, rows_r, rows_f) == pytest.approx(expected, rel=1e-8)
    assert np.isnan(frechet_of_subsets(x, y, rows_r[:, :1], rows_f[:, :1])).all()
    with pytest.raises(ValueError, match=">= 2 rows"):
        FeatureSet(x[:1])
