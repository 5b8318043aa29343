"""Precision, recall, density and coverage of a generated feature set (Naeem et al., ICML 2020).

FID mixes two failures into one number: images that do not look real (fidelity) and real images
that the generator never produces (diversity). These four separate them, with k-nearest-neighbour
balls in feature space. With r_k(x) the distance from x to its k-th nearest neighbour in its own
set (itself excluded), real rows X (N of them) and generated rows Y (M):

    precision = 1/M sum_j 1[ exists i: |Y_j - X_i| < r_k(X_i) ]      (generated images inside the real manifold)
    recall    = 1/N sum_i 1[ exists j: |X_i - Y_j| < r_k(Y_j) ]      (real images inside the generated manifold)
    density   = 1/(k M) sum_j sum_i 1[ |Y_j - X_i| < r_k(X_i) ]       (how many real balls hold each image; ~1 if alike)
    coverage  = 1/N sum_i 1[ min_j |X_i - Y_j| < r_k(X_i) ]          (real images with a generated one in their ball)

Euclidean distances and strict inequalities, as in the authors' reference code (clovaai/
generative-evaluation-prdc). Density and coverage are robust to outliers in the real set (one far
real image makes a huge ball that inflates precision, not density). k is capped at the smaller set
size minus one, so small groups get a smaller k: their values are noisier and not directly
comparable with those of large groups at the requested k.
"""
from __future__ import annotations

import numpy as np

from fairdiff.evaluate.metrics import ArrayLike, _as_float64_2d

PRDC_KEYS = ("precision", "recall", "density", "coverage")


def pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances between every row of x and every row of y, from one matrix product."""
    squared = (x ** 2).sum(axis=1)[:, None] + (y ** 2).sum(axis=1)[None, :] - 2.0 * x @ y.T
    return np.sqrt(np.clip(squared, 0.0, None))


def kth_neighbour_radii(within: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row, from the set's own distance matrix
    (the diagonal, the row itself, is the 0-th neighbour)."""
    return np.partition(within, k, axis=1)[:, k]


def prdc_from_distances(d_rr: np.ndarray, d_ff: np.ndarray, d_rf: np.ndarray, k: int) -> dict[str, float]:
    """PRDC from the distance matrices real-real [N, N], fake-fake [M, M] and real-fake [N, M]
    (slices of one matrix computed once for all groups). k is capped at min(N, M) - 1; NaN when
    either set has fewer than 2 rows."""
    k = min(k, len(d_rr) - 1, len(d_ff) - 1)
    if k < 1:
        return {key: float("nan") for key in PRDC_KEYS}
    real_radii = kth_neighbour_radii(d_rr, k)
    fake_radii = kth_neighbour_radii(d_ff, k)
    inside_real = d_rf < real_radii[:, None]  # [N, M]: generated j inside real i's ball
    return {"precision": float(inside_real.any(axis=0).mean()),
            "recall": float((d_rf < fake_radii[None, :]).any(axis=1).mean()),
            "density": float(inside_real.sum(axis=0).mean() / k),
            "coverage": float((d_rf.min(axis=1) < real_radii).mean())}


def prdc(real: ArrayLike, fake: ArrayLike, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` (M rows Y) against ``real`` (N rows X),
    with r_k(x) the distance from x to its k-th nearest neighbour in its own set:

        precision = 1/M sum_j 1[exists i: |Y_j - X_i| < r_k(X_i)],
        recall    = 1/N sum_i 1[exists j: |X_i - Y_j| < r_k(Y_j)],
        density   = 1/(k M) sum_j sum_i 1[|Y_j - X_i| < r_k(X_i)],
        coverage  = 1/N sum_i 1[min_j |X_i - Y_j| < r_k(X_i)].

    k = 5 is the authors' recommendation; it is capped at min(N, M) - 1."""
    real, fake = _as_float64_2d(real, "real features"), _as_float64_2d(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    if k < 1:
        raise ValueError(f"prdc: k must be >= 1, got {k}")
    return prdc_from_distances(pairwise_distances(real, real), pairwise_distances(fake, fake),
                               pairwise_distances(real, fake), k)
