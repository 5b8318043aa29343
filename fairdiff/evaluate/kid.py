"""Kernel Inception Distance: an unbiased estimate of the squared MMD between two feature sets.

With the cubic polynomial kernel k(x, y) = (x . y / d + 1)^3 (d: feature size) and m real rows x
and m generated rows y,

    MMD^2_u = 1 / (m (m - 1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - 2 / m^2 sum_{i, j} k(x_i, y_j),

averaged over ``n_subsets`` random subsets of ``subset_size`` rows of each set, as torch-fidelity
and torchmetrics' ``KernelInceptionDistance`` compute it (their defaults: 100 subsets of 1000).
Unlike FID its expectation does not depend on the sample size (a U-statistic), so it can be
compared across groups of different sizes; only its variance grows as a group shrinks. It can be
negative when the two sets are close. Here the subset size is capped at the smaller set
(torchmetrics raises instead), and sets of unequal size inside one subset (jackknife replicates)
use the general form with 1 / (n_r (n_r - 1)), 1 / (n_f (n_f - 1)) and 1 / (n_r n_f).
"""
from __future__ import annotations

import numpy as np

from fairdiff.evaluate.frechet import CHUNK_ELEMENTS
from fairdiff.evaluate.metrics import ArrayLike, _as_float64_2d


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3 for every pair of rows (KID's kernel; d = number of columns)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def subset_orders(n_real: int, n_fake: int, n_subsets: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_subsets`` random permutations of each set's rows ([S, n_real], [S, n_fake]); a subset of
    size m is the first m of a permutation, as torchmetrics takes ``randperm(n)[:m]``."""
    rng = np.random.default_rng(seed)
    return rng.random((n_subsets, n_real)).argsort(axis=1), rng.random((n_subsets, n_fake)).argsort(axis=1)


def mmd2_of_subsets(k_rr: np.ndarray, k_ff: np.ndarray, k_rf: np.ndarray, rows_real: np.ndarray,
                    rows_fake: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 of each pair of row subsets ([S, m_r] into the real rows, [S, m_f] into the
    generated ones) from the kernel matrices of the whole sets; returns S values.

    A subset's kernel sums are taken one of two ways, whichever moves less memory: when the subsets
    cover much of each set (n_r n_f <= 4 m_r m_f), as products of per-subset row counts c with the
    whole matrix (sum = c_r^T K c_f, one matrix product for all subsets); otherwise by gathering each
    subset's [m, m] block. Both give the same sums up to float rounding (tests/test_eval_kid.py)."""
    m_r, m_f = rows_real.shape[1], rows_fake.shape[1]
    if min(m_r, m_f) < 2:
        return np.full(len(rows_real), np.nan)
    counted = len(k_rr) * len(k_ff) <= 4 * m_r * m_f
    per_subset = len(k_rr) + len(k_ff) if counted else max(m_r, m_f) ** 2
    step = max(1, CHUNK_ELEMENTS // per_subset)  # bound the [S, n] counts or the gathered [S, m, m] blocks
    if len(rows_real) > step:
        return np.concatenate([mmd2_of_subsets(k_rr, k_ff, k_rf, rows_real[i:i + step], rows_fake[i:i + step])
                               for i in range(0, len(rows_real), step)])
    sums = _counted_sums if counted else _gathered_sums
    all_r, diag_r, all_f, diag_f, cross = sums(k_rr, k_ff, k_rf, rows_real, rows_fake)
    return (all_r - diag_r) / (m_r * (m_r - 1)) + (all_f - diag_f) / (m_f * (m_f - 1)) - 2.0 * cross / (m_r * m_f)


def _gathered_sums(k_rr, k_ff, k_rf, rows_real, rows_fake) -> tuple[np.ndarray, ...]:
    """Per subset: sum of its real block, of that block's diagonal, the same for the generated
    block, and the sum of its real x generated block, from gathered [S, m, m] blocks."""
    rr = k_rr[rows_real[:, :, None], rows_real[:, None, :]]
    ff = k_ff[rows_fake[:, :, None], rows_fake[:, None, :]]
    rf = k_rf[rows_real[:, :, None], rows_fake[:, None, :]]
    return (rr.sum(axis=(1, 2)), np.trace(rr, axis1=1, axis2=2), ff.sum(axis=(1, 2)), np.trace(ff, axis1=1, axis2=2),
            rf.sum(axis=(1, 2)))


def _counted_sums(k_rr, k_ff, k_rf, rows_real, rows_fake) -> tuple[np.ndarray, ...]:
    """The sums of :func:`_gathered_sums` from row counts: with c the number of times each row occurs
    in a subset, a block's sum is c_a^T K c_b and its diagonal's c . diag(K) (repeated rows included)."""
    c_r, c_f = _row_counts(rows_real, len(k_rr)), _row_counts(rows_fake, len(k_ff))
    return (((c_r @ k_rr) * c_r).sum(axis=1), c_r @ np.diagonal(k_rr), ((c_f @ k_ff) * c_f).sum(axis=1),
            c_f @ np.diagonal(k_ff), ((c_r @ k_rf) * c_f).sum(axis=1))


def _row_counts(rows: np.ndarray, n: int) -> np.ndarray:
    """[S, n] float counts of each row index in each subset of ``rows`` ([S, m])."""
    flat = (rows + n * np.arange(len(rows))[:, None]).ravel()
    return np.bincount(flat, minlength=len(rows) * n).reshape(len(rows), n).astype(np.float64)


def kid_from_features(real: ArrayLike, fake: ArrayLike, subset_size: int = 1000, n_subsets: int = 100,
                      seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over subsets) of two feature sets: per subset of m rows x of ``real`` and y of
    ``fake``, with k(x, y) = (x . y / d + 1)^3,

        MMD^2_u = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2.

    Subsets of m = min(subset_size, n_real, n_fake) rows of each set, drawn without replacement
    with a seeded numpy generator (torchmetrics draws them with torch's global RNG); std is the
    population standard deviation over subsets (torchmetrics' ``std(unbiased=False)``). When m
    equals both set sizes every subset is the whole set: one evaluation, std 0."""
    real, fake = _as_float64_2d(real, "real features"), _as_float64_2d(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    if subset_size < 2 or n_subsets < 1:
        raise ValueError(f"KID needs subset_size >= 2 and n_subsets >= 1, got {subset_size} and {n_subsets}")
    m = min(subset_size, len(real), len(fake))
    orders_r, orders_f = subset_orders(len(real), len(fake), n_subsets, seed)
    if m == len(real) == len(fake):
        orders_r, orders_f = orders_r[:1], orders_f[:1]
    values = mmd2_of_subsets(polynomial_kernel(real, real), polynomial_kernel(fake, fake),
                             polynomial_kernel(real, fake), orders_r[:, :m], orders_f[:, :m])
    return float(values.mean()), float(values.std())
