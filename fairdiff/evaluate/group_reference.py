"""Groups compared at one adequate, equal size: FID and KID of every group of one attribute
against its own real reference (``evaluate.reference``, :mod:`fairdiff.reference`), and each
group's value minus the majority group's, with jackknife intervals.

FID's small-sample bias depends on n (:mod:`fairdiff.evaluate.intervals`), so a group's FID is
comparable with another's only at the same n. Here every group has exactly n real and n
generated images (the reference sets are built that way), so the plug-in FIDs share the n-driven
part of their bias and their difference measures the gap itself. KID is unbiased at any n.

Intervals: the two-sample delete-a-block jackknife of the generation table
(:class:`fairdiff.evaluate.generation.Replicates`): the whole real and generated sets are cut into
``jackknife_blocks`` random blocks each, and every statistic, of one group or a difference of two,
is recomputed on the same replicates; a difference of two groups' values has replicates that are the
differences of theirs (the two groups' images are disjoint, so their variances add). Interval:
value -+ t se, centred on the plug-in value. KID's se adds the spread of its random subsets when
``kid_subset_size`` is below n (at n or above, KID uses every image once: no subsets).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from fairdiff.evaluate.frechet import FeatureSet, frechet_distance
from fairdiff.evaluate.generation import JACKKNIFE, Replicates, first_kept
from fairdiff.evaluate.intervals import Jackknife
from fairdiff.evaluate.kid import mmd2_of_subsets, polynomial_kernel, subset_orders
from fairdiff.evaluate.metrics import _as_float64_2d

COLUMNS = ["attribute", "group", "metric", "value", "lo", "hi", "n_real", "n_fake", "majority", "se", "interval",
           "extractor", "note"]
METRICS = ("fid", "kid")


@dataclass(frozen=True)
class _Statistic:
    """A statistic's plug-in value and its jackknife replicates (shared replicate ids)."""

    point: float
    values: np.ndarray  # one value per replicate
    deleted: np.ndarray  # rows of the statistic's selection each replicate leaves out
    n_real: int
    n_fake: int
    extra_variance: float = 0.0  # randomness of its own (KID subsets), added to the jackknife's

    def minus(self, other: "_Statistic") -> "_Statistic":
        """This value minus ``other``'s, on disjoint images: replicates, deleted rows and sizes add up."""
        return _Statistic(self.point - other.point, self.values - other.values, self.deleted + other.deleted,
                          self.n_real + other.n_real, self.n_fake + other.n_fake,
                          self.extra_variance + other.extra_variance)

    def jackknife(self, reps: Replicates) -> Jackknife:
        jk = reps.summarise(self.point, self.values, self.deleted, self.n_real, self.n_fake)
        return Jackknife(jk.point, jk.debiased, float(np.sqrt(jk.se ** 2 + self.extra_variance)), jk.df,
                         jk.n_replicates)


def _fid(real: np.ndarray, fake: np.ndarray) -> Callable[[np.ndarray, np.ndarray], float]:
    """FID of the kept rows (boolean masks); the whole sets' fits are reused by every replicate
    that keeps one side whole."""
    whole_r, whole_f = FeatureSet(real), FeatureSet(fake)

    def fid(keep_r: np.ndarray, keep_f: np.ndarray) -> float:
        return frechet_distance(whole_r if keep_r.all() else FeatureSet(real[keep_r]),
                                whole_f if keep_f.all() else FeatureSet(fake[keep_f]))
    return fid


def _kid(real: np.ndarray, fake: np.ndarray, subset_size: int, n_subsets: int,
         seed: int) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], int]:
    """Per-subset unbiased MMD^2 of the kept rows, subsets of m = min(subset_size, n) rows (one
    subset, every row, when m is the whole set), and the number of distinct subsets."""
    kernels = polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake)
    m = min(subset_size, len(real), len(fake))
    orders_r, orders_f = subset_orders(len(real), len(fake), n_subsets, seed)
    if m == len(real) == len(fake):
        orders_r, orders_f = orders_r[:1], orders_f[:1]

    def kid(keep_r: np.ndarray, keep_f: np.ndarray) -> np.ndarray:
        return mmd2_of_subsets(*kernels, first_kept(orders_r, keep_r, m), first_kept(orders_f, keep_f, m))
    return kid, len(orders_r)


def group_reference_from_features(real_f: np.ndarray, fake_f: np.ndarray, real_groups: np.ndarray,
                                  fake_groups: np.ndarray, groups: tuple[str, ...], attribute: str, majority: str,
                                  extractor_name: str, *, jackknife_blocks: int = 20, kid_subset_size: int = 1000,
                                  kid_subsets: int = 100, seed: int = 0, ci: float = 0.95,
                                  note: str = "") -> pd.DataFrame:
    """The table (columns :data:`COLUMNS`) from feature arrays ([n, d]) and group ids (0..G-1 into
    ``groups``; -1: no group). Every group must have the same number (>= 2) of real and generated
    rows. Rows: ``fid`` and ``kid`` per group, then ``fid_minus_majority`` and ``kid_minus_majority``
    for every group but ``majority``; ``majority`` names that group on every row."""
    real_f, fake_f = _as_float64_2d(real_f, "real features"), _as_float64_2d(fake_f, "fake features")
    if real_f.shape[1] != fake_f.shape[1]:
        raise ValueError(f"feature sizes differ: real {real_f.shape[1]}, generated {fake_f.shape[1]}")
    real_groups, fake_groups = np.asarray(real_groups), np.asarray(fake_groups)
    if len(real_groups) != len(real_f) or len(fake_groups) != len(fake_f):
        raise ValueError(f"group ids: {len(real_groups)} real and {len(fake_groups)} generated for "
                         f"{len(real_f)} and {len(fake_f)} feature rows")
    if majority not in groups:
        raise ValueError(f"majority {majority!r} is not a group of {attribute} ({', '.join(groups)})")
    reps = Replicates(len(real_f), len(fake_f), jackknife_blocks, seed)
    stats: dict[str, dict[str, _Statistic]] = {}
    for gid, group in enumerate(groups):
        r, f = np.flatnonzero(real_groups == gid), np.flatnonzero(fake_groups == gid)
        if len(r) != len(f) or len(r) < 2:
            raise ValueError(f"{attribute} group {group}: expected as many real as generated images (at least 2 "
                             f"each: groups are compared at matched n), got {len(r)} real and {len(f)} generated")
        fid = _fid(real_f[r], fake_f[f])
        fid_point, fid_values, deleted = reps.evaluate(fid, r, f)
        kid, distinct = _kid(real_f[r], fake_f[f], kid_subset_size, kid_subsets, seed)
        per_subset = kid(np.ones(len(r), bool), np.ones(len(f), bool))
        kid_point, kid_values, _ = reps.evaluate(lambda a, b: float(kid(a, b).mean()), r, f)
        stats[group] = {"fid": _Statistic(fid_point, fid_values, deleted, len(r), len(f)),
                        "kid": _Statistic(kid_point, kid_values, deleted, len(r), len(f),
                                          float(per_subset.var()) / distinct)}
    rows = []

    def add(group: str, metric: str, stat: _Statistic, n: int) -> None:
        jk = stat.jackknife(reps)
        lo, hi = jk.interval(ci)
        rows.append({"attribute": attribute, "group": group, "metric": metric, "value": stat.point, "lo": lo,
                     "hi": hi, "n_real": n, "n_fake": n, "majority": majority, "se": jk.se,
                     "interval": JACKKNIFE if np.isfinite(lo) else "", "extractor": extractor_name, "note": note})

    for group, by_metric in stats.items():
        for metric in METRICS:
            add(group, metric, by_metric[metric], by_metric[metric].n_real)
    for group, by_metric in stats.items():
        if group != majority:
            for metric in METRICS:
                add(group, f"{metric}_minus_majority", by_metric[metric].minus(stats[majority][metric]),
                    by_metric[metric].n_real)
    return pd.DataFrame(rows, columns=COLUMNS)


def group_reference_metrics(real_images, fake_images, real_meta: pd.DataFrame, fake_meta: pd.DataFrame, schema,
                            extractor, attribute: str, majority: str, *, batch_size: int = 256, num_workers: int = 0,
                            **settings) -> pd.DataFrame:
    """:func:`group_reference_from_features` of two image sets (any image source of
    :func:`fairdiff.evaluate.features.extract`) and their metadata, embedded once each by
    ``extractor`` (the one of every other generation metric); ``settings``: its keyword arguments."""
    from fairdiff.evaluate.features import _blas_threads_for, extract
    from fairdiff.evaluate.groups import group_ids, group_names

    for what, images, meta in (("real", real_images, real_meta), ("generated", fake_images, fake_meta)):
        if len(images) != len(meta):
            raise ValueError(f"{what}: {len(images)} images but {len(meta)} metadata rows")
    real_f = extract(extractor, real_images, batch_size, num_workers)[0].double().numpy()
    fake_f = extract(extractor, fake_images, batch_size, num_workers)[0].double().numpy()
    with _blas_threads_for(extractor.num_features):
        return group_reference_from_features(
            real_f, fake_f, group_ids(real_meta, schema, attribute), group_ids(fake_meta, schema, attribute),
            group_names(schema, attribute), attribute, majority, extractor.name, **settings)
