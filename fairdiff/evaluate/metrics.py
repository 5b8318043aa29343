"""Metric arithmetic: image-set distances, prediction fairness, equity scaling, bootstrap.

Pure numpy/scipy in float64 (torch tensors are accepted as input) and no model in sight:
feature extraction lives in :mod:`fairdiff.evaluate.features`, so every number here can be
checked by hand on small arrays.
"""
from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.special
import torch

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


# ----------------------------------------------------------------------------- image-set metrics
def _as_float64_2d(x: ArrayLike, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{what}: expected a [N, d] feature array with N >= 2, got shape {x.shape}")
    return x


def fid_from_features(real: ArrayLike, fake: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID when the features are Inception's).

    d = |mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2)), unbiased covariances (N - 1), as in
    torchmetrics. Only the trace of the square root is needed, and it is the sum of the square
    roots of the eigenvalues of S_r S_f (real and >= 0 in exact arithmetic: the product of two PSD
    matrices is similar to a PSD one). That is about twice as fast as ``scipy.linalg.sqrtm`` at d = 128,
    which matters inside a bootstrap, and stays finite when few samples make the covariances
    singular; rounding leaves tiny negative or imaginary parts, which are dropped."""
    real, fake = _as_float64_2d(real, "real features"), _as_float64_2d(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = np.cov(real, rowvar=False, ddof=1), np.cov(fake, rowvar=False, ddof=1)
    cov_r, cov_f = np.atleast_2d(cov_r), np.atleast_2d(cov_f)
    eigenvalues = np.linalg.eigvals(cov_r @ cov_f)
    trace_sqrt = np.sqrt(np.clip(eigenvalues.real, 0.0, None)).sum()
    diff = mu_r - mu_f
    return float(diff @ diff + np.trace(cov_r) + np.trace(cov_f) - 2.0 * trace_sqrt)


def memorization_distance(real: ArrayLike, fake: ArrayLike, cosine_eps: float = 0.1) -> float:
    """MiFID's memorisation term: mean over real rows of the smallest cosine distance to a fake row.

    Follows torchmetrics 1.9: distance = 1 - |cos|; rows whose features sum to zero are dropped
    (torchmetrics' guard against division by zero); a mean distance at or above ``cosine_eps``
    means "no memorisation" and becomes 1, so MiFID reduces to FID."""
    real, fake = _as_float64_2d(real, "real features"), _as_float64_2d(fake, "fake features")
    real, fake = real[real.sum(1) != 0], fake[fake.sum(1) != 0]
    real = real / np.linalg.norm(real, axis=1, keepdims=True)
    fake = fake / np.linalg.norm(fake, axis=1, keepdims=True)
    mean_min = float((1.0 - np.abs(real @ fake.T)).min(axis=1).mean())
    return mean_min if mean_min < cosine_eps else 1.0


def mifid_from_fid(fid: float, distance: float) -> float:
    """Combine a FID and a memorisation distance as torchmetrics does (0 when FID <= 1e-8)."""
    return fid / (distance + 1e-14) if fid > 1e-8 else 0.0


def mifid_from_features(real: ArrayLike, fake: ArrayLike, cosine_eps: float = 0.1) -> float:
    """Memorisation-informed FID (Kaggle's MiFID as torchmetrics computes it): FID / memorisation distance.

    A generator whose images sit almost on top of real ones (mean cosine distance < ``cosine_eps``)
    has its FID inflated by 1 / distance."""
    return mifid_from_fid(fid_from_features(real, fake), memorization_distance(real, fake, cosine_eps))


def inception_score_from_logits(logits: ArrayLike, splits: int = 10,
                                shuffle_seed: int | None = 0) -> tuple[float, float]:
    """Inception Score (mean, std over splits) from class logits, with torchmetrics' semantics.

    Rows are permuted (seeded here; torchmetrics uses torch's global RNG), cut like ``torch.chunk``
    (chunks of ceil(N / splits) rows, so fewer than ``splits`` chunks when N is small), and per
    chunk IS = exp(mean_i KL(p(y|x_i) || p(y))). std is the unbiased std over chunks (NaN for one
    chunk). ``shuffle_seed=None`` keeps the given order."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits: expected a non-empty [N, C] array, got shape {logits.shape}")
    mean, std = inception_scores(logits[None], splits, shuffle_seed)
    return float(mean[0]), float(std[0])


def inception_scores(logits: ArrayLike, splits: int = 10, shuffle_seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`inception_score_from_logits` of R sets of logits at once ([R, N, C] -> mean [R], std
    [R]), every set permuted and cut the same way: the bootstrap of IS scores its resamples in one
    pass instead of R calls. Each value equals the single-set function's, bit for bit."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[1] == 0:
        raise ValueError(f"logits: expected a [R, N, C] array with N > 0, got shape {logits.shape}")
    n = logits.shape[1]
    if shuffle_seed is not None:
        logits = logits[:, np.random.default_rng(shuffle_seed).permutation(n)]
    size = -(-n // splits)  # ceil, as torch.chunk
    starts = np.arange(0, n, size)
    counts = np.diff(np.append(starts, n))
    log_p = scipy.special.log_softmax(logits, axis=2)
    p = np.exp(log_p)
    with np.errstate(divide="ignore"):
        log_marginal = np.log(np.add.reduceat(p, starts, axis=1) / counts[:, None])  # log p(y) per chunk
    terms = np.where(p > 0, p * (log_p - np.repeat(log_marginal, counts, axis=1)), 0.0)
    scores = np.exp(np.add.reduceat(terms.sum(axis=2), starts, axis=1) / counts)  # [R, chunks]
    std = np.std(scores, axis=1, ddof=1) if scores.shape[1] > 1 else np.full(len(scores), np.nan)
    return np.mean(scores, axis=1), std


# ----------------------------------------------------------------------------- predictions
def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic on mid-ranks: equal to sklearn's roc_auc_score
    (ties count one half), at a fraction of its cost, which matters inside a bootstrap."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    if np.isnan(scores).any():
        return float("nan")
    ranks = _mid_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _mid_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N with ties at their mean rank: ``scipy.stats.rankdata(x)`` for finite x, exactly (the
    ranks are half-integers), without its per-call overhead, which dominated the bootstrap of AUCs."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    tie_start = np.ones(len(x), dtype=bool)
    np.not_equal(sorted_x[1:], sorted_x[:-1], out=tie_start[1:])
    starts = np.flatnonzero(tie_start)
    ends = np.append(starts[1:], len(x))
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean of ranks starts+1 .. ends
    return ranks


def auc(y_true: ArrayLike, scores: ArrayLike, n_classes: int) -> float:
    """ROC AUC; binary for ``n_classes == 2`` (scores [N] or [N, 2]), else macro one-vs-rest.

    Multi-class: the mean over classes present in ``y_true`` (with some negatives) of the binary
    AUC of class c against the rest, scored by column c. With every class present this equals
    sklearn's ``roc_auc_score(multi_class="ovr", average="macro")``; unlike it, a bootstrap
    resample that misses a class still gets a value. NaN when undefined (one class only)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if n_classes == 2:
        return _binary_auc(y_true == 1, scores[:, 1] if scores.ndim == 2 else scores)
    per_class = [_binary_auc(y_true == c, scores[:, c]) for c in range(n_classes)]
    per_class = [v for v in per_class if np.isfinite(v)]
    return float(np.mean(per_class)) if len(per_class) >= 2 else float("nan")


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of correct predictions (NaN for an empty set)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def _rate(hits: np.ndarray) -> float:
    return float(hits.mean()) if len(hits) else 0.0  # fairlearn (via sklearn): 0/0 -> 0


def _group_differences(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """(DPD, EOD) of binary 0/1 arrays, as fairlearn's demographic_parity_difference and
    equalized_odds_difference compute them (between groups, worst case): the max - min over
    groups of the selection rate; the larger of the TPR and FPR max - min."""
    selection, tpr, fpr = [], [], []
    for g in np.unique(groups):
        yt, yp = y_true[groups == g], y_pred[groups == g] == 1
        selection.append(_rate(yp))
        tpr.append(_rate(yp[yt == 1]))
        fpr.append(_rate(yp[yt == 0]))
    return float(np.ptp(selection)), float(max(np.ptp(tpr), np.ptp(fpr)))


def fairness_differences(y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike,
                         n_classes: int = 2) -> tuple[float, float]:
    """(DPD, EOD) with labels as y_true and predictions as y_pred, equal to fairlearn's functions.

    Rows of unknown group (-1) are left out. Multi-class: one-vs-rest per class present in
    ``y_true``, averaged over those classes. (The authors' multi-class code swapped the two
    arguments, so its DPD measured disparity in label rates, not in predictions.) Computed in
    numpy rather than through fairlearn's MetricFrame, which costs 0.1-0.5 s a call: too slow
    for a bootstrap over attributes and tasks; tests check equality with fairlearn."""
    y_true, y_pred, groups = (np.asarray(a) for a in (y_true, y_pred, groups))
    known = groups >= 0
    y_true, y_pred, groups = y_true[known], y_pred[known], groups[known]
    if len(y_true) == 0:
        return float("nan"), float("nan")
    if n_classes == 2:
        return _group_differences(y_true, y_pred, groups)
    per_class = [_group_differences((y_true == c).astype(int), (y_pred == c).astype(int), groups)
                 for c in np.unique(y_true)]
    return tuple(float(v) for v in np.mean(per_class, axis=0))


def dpd(y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike, n_classes: int = 2) -> float:
    """Demographic parity difference: max - min over groups of P(prediction = 1 | group).

    See :func:`fairness_differences`."""
    return fairness_differences(y_true, y_pred, groups, n_classes)[0]


def eod(y_true: ArrayLike, y_pred: ArrayLike, groups: ArrayLike, n_classes: int = 2) -> float:
    """Equalized odds difference: the larger of the TPR and FPR gaps between groups.

    See :func:`fairness_differences`."""
    return fairness_differences(y_true, y_pred, groups, n_classes)[1]


# ----------------------------------------------------------------------------- group summaries
def _values(per_group: Mapping[object, float] | Sequence[float]) -> np.ndarray:
    values = per_group.values() if isinstance(per_group, Mapping) else per_group
    return np.asarray(list(values), dtype=np.float64)


def equity_scaled(overall: float, per_group: Mapping[object, float] | Sequence[float],
                  higher_is_better: bool, alpha: float = 1.0) -> float:
    """Equity-scaled metric: the overall value penalised by how far the groups stray from it.

    Higher is better (AUC, ACC, IS), from the authors' code and Harvard-GF:
        ES-M = M / (1 + alpha * sum_g |M_g - M|).
    Lower is better (FID): OUR definition (docs/method.md §5.3; the paper's formula was not
    available), relative deviations so the penalty does not depend on FID's scale:
        ES-M = M * (1 + alpha * sum_g |M_g - M| / M)  (= M + alpha * sum_g |M_g - M|).
    Both equal M when every group equals M and get worse as groups diverge. A NaN group value
    gives NaN: pass only the groups you mean to count."""
    deviation = np.abs(_values(per_group) - overall).sum()
    if higher_is_better:
        return float(overall / (1.0 + alpha * deviation))
    return float(overall + alpha * deviation)  # the form above without dividing: KID can be 0 or negative


def between_group_disparity(overall: float,
                            per_group: Mapping[object, float] | Sequence[float]) -> tuple[float, float]:
    """(population std of the group values, max - min of them), both divided by the overall value.

    The authors' between-group disparity on AUC; NaN when there are no groups."""
    values = _values(per_group)
    if len(values) == 0:
        return float("nan"), float("nan")
    return float(values.std() / overall), float((values.max() - values.min()) / overall)


# ----------------------------------------------------------------------------- bootstrap
def bootstrap(statistic: Callable[..., float | np.ndarray], *arrays: ArrayLike, n: int = 100,
              seed: int = 0, ci: float = 0.95, paired: bool = True,
              batched: Callable[..., np.ndarray] | None = None, block_elements: int = 2 ** 22) -> dict[str, object]:
    """Percentile bootstrap of ``statistic(*arrays)``.

    ``paired=True`` resamples the rows of all arrays jointly (labels with their scores and groups:
    AUC, DPD); ``paired=False`` resamples each array on its own (a real and a generated image set:
    FID). ``statistic`` may return a float or a 1-d array (several metrics from one resample, so
    they stay consistent). A resample where the statistic is NaN (e.g. AUC with one class) is
    left out; ``n_valid`` counts the rest. Returns point, mean, std (over resamples, ddof 1), lo,
    hi, n_valid; with ``n=0`` mean/std/lo/hi are NaN.

    ``batched``, when given, computes the statistic of many resamples at once: it takes the arrays
    with a leading resample axis ([R, N, ...]) and returns [R] (or [R, k]) values equal to
    ``statistic``'s; resamples go to it in blocks of about ``block_elements`` array elements (4 M:
    32 MiB of float64, times the statistic's temporaries; one resample at a time when a single
    resample is larger), so memory stays bounded whatever N and n. The resamples are the same either way.

    For AUC, accuracy and IS. Not for FID-like set distances: a resample with replacement repeats
    images, FID penalises the lost diversity, and the interval lands above the estimate; those use
    the jackknife of :mod:`fairdiff.evaluate.intervals`."""
    arrays = tuple(a if isinstance(a, torch.Tensor) else np.asarray(a) for a in arrays)
    sizes = [len(a) for a in arrays]
    if paired and len(set(sizes)) > 1:
        raise ValueError(f"paired bootstrap needs arrays of equal length, got {sizes}")
    point = np.asarray(statistic(*arrays), dtype=np.float64)
    rng = np.random.default_rng(seed)
    replicates = np.full((n, *point.shape), np.nan)
    # elements held per resample of a block: its row indices, and with ``batched`` also the rows themselves
    per_resample = sum(sizes) + (sum(int(np.prod(a.shape)) for a in arrays) if batched is not None else 0)
    block = max(1, block_elements // max(per_resample, 1))
    for first in range(0, n, block):
        rows = _resample_rows(rng, sizes, paired, min(block, n - first))
        if batched is not None:
            replicates[first:first + len(rows[0])] = batched(*[a[r] for a, r in zip(arrays, rows)])
        else:
            for i in range(len(rows[0])):
                replicates[first + i] = statistic(*[a[r[i]] for a, r in zip(arrays, rows)])
    tail = 100.0 * (1.0 - ci) / 2.0
    mean = std = lo = hi = np.full(point.shape, np.nan)
    if n > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: the answer is NaN
            mean = np.nanmean(replicates, axis=0)
            std = np.nanstd(replicates, axis=0, ddof=1) if n > 1 else np.full(point.shape, np.nan)
            lo, hi = np.nanpercentile(replicates, [tail, 100.0 - tail], axis=0)
    scalar = point.ndim == 0
    pack = (lambda v: float(v)) if scalar else (lambda v: np.asarray(v))
    n_valid = np.isfinite(replicates).sum(axis=0)
    return {"point": pack(point), "mean": pack(mean), "std": pack(std), "lo": pack(lo), "hi": pack(hi),
            "n_valid": int(n_valid) if scalar else n_valid}


def _resample_rows(rng: np.random.Generator, sizes: list[int], paired: bool, count: int) -> list[np.ndarray]:
    """Row indices of ``count`` resamples, one [count, size] array per input array, drawn in the
    order a loop over resamples draws them (paired: one draw of N rows shared by every array;
    unpaired: one draw per array, array after array), so blocks of any size give the same resamples."""
    if paired:
        rows = rng.integers(0, sizes[0], (count, sizes[0]))
        return [rows] * len(sizes)
    draws = [[rng.integers(0, size, size) for size in sizes] for _ in range(count)]
    return [np.stack([d[k] for d in draws]) for k in range(len(sizes))]
