"""The per-method generation table from feature arrays: image-set metrics overall and per group,
with intervals that hold at small n, size-matched comparisons and a memorisation audit.

Everything is computed from matrices built once per call (the kernel, Euclidean and cosine
distance matrices of the real test and generated features, the generated-to-training and
test-to-training nearest distances) and sliced per group; FID uses the factor route of
:mod:`fairdiff.evaluate.frechet`. :func:`fairdiff.evaluate.features.generation_metrics` extracts
the features and calls :func:`generation_metrics_from_features`.

Checked on Gaussian features (d = 8 or 16, one attribute with groups of 20-40 and 80-160 images,
150 draws each): ``es_fid_debiased`` covers the closed-form ES-FID in 0.97 of draws; the jackknife
se of ``fid_matched`` / ``kid_matched`` is 1.25-1.3 times their observed standard deviation
(conservative, coverage 0.99), that of a max - min gap about twice (the gap of noisy values is not
smooth), so gap intervals are wide.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from fairdiff.evaluate import metrics as M
from fairdiff.evaluate.frechet import FeatureSet, frechet_distance, frechet_of_subsets
from fairdiff.evaluate.intervals import (NAN_JACKKNIFE, Jackknife, combine_jackknife, grouped_jackknife,
                                         jackknife_blocks, wilson_interval)
from fairdiff.evaluate.kid import mmd2_of_subsets, polynomial_kernel, subset_orders
from fairdiff.evaluate.memorisation import (calibrated_mifid_eps, copy_threshold, cosine_distances,
                                            nearest_neighbours)
from fairdiff.evaluate.prdc import pairwise_distances, prdc_from_distances

GENERATION_COLUMNS = ["extractor", "attribute", "group", "n_real", "n_fake", "small_group", "size_matched", "metric",
                      "value", "boot_mean", "boot_std", "boot_lo", "boot_hi", "n_valid", "interval", "note"]
ES_GROUP = "(equity-scaled)"
GAP_GROUP = "(max - min)"
MATCHED_ALL = "all (size-matched)"
JACKKNIFE = "jackknife"
JACKKNIFE_DEBIASED = "jackknife, bias-corrected"
BOOTSTRAP = "percentile bootstrap"


@dataclass(frozen=True)
class Settings:
    """The table's settings, the keyword arguments of :func:`fairdiff.evaluate.features.generation_metrics`
    (whose docstring says what each does)."""

    n_boot: int = 100
    min_group_size: int = 50
    seed: int = 0
    splits: int = 10
    mifid_eps: float | str = "calibrated"
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    prdc_k: int = 5
    size_matched_floor: int = 5
    size_matched_repeats: int = 20
    jackknife_blocks: int = 20
    copy_quantile: float = 0.01
    ci: float = 0.95


# ----------------------------------------------------------------------------- jackknife bookkeeping
class Replicates:
    """The jackknife's blocks over the whole real and generated sets; a replicate leaves one block
    of one set out. Every statistic, of the whole sets or of one group, uses these same
    replicates, so group values and the summaries built from them (ES, gaps) stay consistent."""

    def __init__(self, n_real: int, n_fake: int, n_blocks: int, seed: int):
        rng = np.random.default_rng(seed)
        self.enabled = n_blocks >= 2
        self.real = jackknife_blocks(n_real, max(n_blocks, 2), rng)
        self.fake = jackknife_blocks(n_fake, max(n_blocks, 2), rng)
        blocks = (int(self.real.max()) + 1, int(self.fake.max()) + 1) if self.enabled else (0, 0)
        self.ids = [(side, b) for side, g in enumerate(blocks) for b in range(g)]

    def deleted(self, real_rows: np.ndarray, fake_rows: np.ndarray) -> np.ndarray:
        """Rows of a selection (global row numbers per set) each replicate leaves out."""
        r = np.bincount(self.real[real_rows], minlength=int(self.real.max()) + 1)
        f = np.bincount(self.fake[fake_rows], minlength=int(self.fake.max()) + 1)
        return np.array([(r if side == 0 else f)[b] for side, b in self.ids], dtype=np.int64)

    def kept(self, j: int, real_rows: np.ndarray, fake_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks over a selection's rows: which ones replicate ``j`` keeps."""
        side, b = self.ids[j]
        keep_r = self.real[real_rows] != b if side == 0 else np.ones(len(real_rows), bool)
        keep_f = self.fake[fake_rows] != b if side == 1 else np.ones(len(fake_rows), bool)
        return keep_r, keep_f

    def summarise(self, point: float, values: np.ndarray, deleted: np.ndarray, n_real: int, n_fake: int) -> Jackknife:
        """Combine a statistic's replicate values (NaN-free where ``deleted`` > 0) into a :class:`Jackknife`."""
        if not self.enabled:
            return Jackknife(float(point), float("nan"), float("nan"), float("nan"), 0)
        sides = []
        for side, n in ((0, n_real), (1, n_fake)):
            use = np.array([s == side for s, _ in self.ids]) & (deleted > 0)
            sides.append(grouped_jackknife(point, values[use], deleted[use], n))
        return combine_jackknife(point, sides, int(np.isfinite(values[deleted > 0]).sum()))

    def evaluate(self, statistic: Callable[[np.ndarray, np.ndarray], float], real_rows: np.ndarray,
                 fake_rows: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(point, replicate values, deleted counts) of ``statistic(keep_real, keep_fake)``, a function of
        boolean masks over the selection's rows; replicates that delete nothing repeat the point."""
        point = statistic(np.ones(len(real_rows), bool), np.ones(len(fake_rows), bool))
        deleted = self.deleted(real_rows, fake_rows)
        values = np.full(len(self.ids), point, dtype=np.float64)
        for j in np.flatnonzero(deleted):
            values[j] = statistic(*self.kept(j, real_rows, fake_rows))
        return point, values, deleted


def first_kept(orders: np.ndarray, keep: np.ndarray, m: int) -> np.ndarray:
    """The first min(m, kept) kept rows of each permutation in ``orders`` [S, n] (a subsample that
    replaces a left-out row by the next one in its random order, so replicates keep the size m)."""
    n_kept = int(keep.sum())
    return orders[keep[orders]].reshape(len(orders), n_kept)[:, :min(m, n_kept)]


# ----------------------------------------------------------------------------- the table
class _Table:
    """Shared matrices of one call and the row builder."""

    def __init__(self, real_f: np.ndarray, fake_f: np.ndarray, fake_logits: np.ndarray, train_f: np.ndarray | None,
                 extractor_name: str, s: Settings):
        self.real_f, self.fake_f, self.fake_logits, self.s = real_f, fake_f, fake_logits, s
        self.name = extractor_name
        self.kernel = (polynomial_kernel(real_f, real_f), polynomial_kernel(fake_f, fake_f),
                       polynomial_kernel(real_f, fake_f))
        self.dist = (pairwise_distances(real_f, real_f), pairwise_distances(fake_f, fake_f),
                     pairwise_distances(real_f, fake_f))
        cos = cosine_distances(real_f, fake_f)
        # MiFID as torchmetrics: rows whose features sum to 0 are dropped on both sides
        self.cos = np.where((real_f.sum(1) != 0)[:, None] & (fake_f.sum(1) != 0)[None, :], cos, np.nan)
        self.reps = Replicates(len(real_f), len(fake_f), s.jackknife_blocks, s.seed)
        self.rows: list[dict] = []
        self.train = train_f is not None
        if self.train:
            self.fake_nn = nearest_neighbours(fake_f, train_f)[0]
            self.test_nn = nearest_neighbours(real_f, train_f)[0]
            self.tau = copy_threshold(self.test_nn, s.copy_quantile)
        if s.mifid_eps == "calibrated" and self.train:
            self.eps = calibrated_mifid_eps(real_f, train_f, s.copy_quantile)
            self.eps_note = (f"calibrated: the {100 * s.copy_quantile:g} % quantile of real test-to-train cosine "
                             "distances")
        elif s.mifid_eps == "calibrated":
            self.eps, self.eps_note = 0.1, "fixed 0.1 (torchmetrics' default): no training features to calibrate"
        else:
            self.eps, self.eps_note = float(s.mifid_eps), f"fixed {float(s.mifid_eps):g}"

    def add(self, attribute: str, group: str, n_real: int, n_fake: int, metric: str, value: float, *,
            jackknife: Jackknife | None = None, debiased: bool = False, boot: dict | None = None,
            interval: tuple[float, float] | None = None, interval_name: str = "", matched: bool = False,
            small: bool | None = None, note: str = "") -> None:
        """One table row; the interval comes from a jackknife, a bootstrap dict or (lo, hi)."""
        mean = std = lo = hi = np.nan
        n_valid = 0
        if jackknife is not None:
            lo, hi = jackknife.interval(self.s.ci, debiased)
            mean, std, n_valid = value, jackknife.se, jackknife.n_replicates
            interval_name = JACKKNIFE_DEBIASED if debiased else JACKKNIFE
        elif boot is not None:
            mean, lo, hi, std, n_valid = boot["mean"], boot["lo"], boot["hi"], boot.get("std", np.nan), boot["n_valid"]
            interval_name = BOOTSTRAP if n_valid else ""
        elif interval is not None:
            lo, hi = interval
        if small is None:
            small = min(n_real, n_fake) < self.s.min_group_size
        self.rows.append({"extractor": self.name, "attribute": attribute, "group": group, "n_real": int(n_real),
                          "n_fake": int(n_fake), "small_group": bool(small), "size_matched": matched, "metric": metric,
                          "value": float(value), "boot_mean": float(mean), "boot_std": float(std),
                          "boot_lo": float(lo), "boot_hi": float(hi), "n_valid": int(n_valid),
                          "interval": interval_name if np.isfinite(lo) else "", "note": note})

    # ------------------------------------------------------------------------- per selection
    def fid_statistic(self, real_rows: np.ndarray, fake_rows: np.ndarray) -> Callable:
        real_all, fake_all = FeatureSet(self.real_f[real_rows]), FeatureSet(self.fake_f[fake_rows])

        def fid(keep_r: np.ndarray, keep_f: np.ndarray) -> float:
            if keep_r.sum() < 2 or keep_f.sum() < 2:
                return np.nan
            a = real_all if keep_r.all() else FeatureSet(self.real_f[real_rows[keep_r]])
            b = fake_all if keep_f.all() else FeatureSet(self.fake_f[fake_rows[keep_f]])
            return frechet_distance(a, b)
        return fid

    def memorisation_statistic(self, real_rows: np.ndarray, fake_rows: np.ndarray) -> Callable:
        """MiFID's distance: mean over real rows of the smallest cosine distance to a generated row."""
        cos = self.cos[np.ix_(real_rows, fake_rows)]
        valid_r = ~np.isnan(cos).all(1)
        cos = np.where(np.isnan(cos), np.inf, cos)  # dropped rows and columns never win the minimum
        row_min = cos.min(axis=1)

        def distance(keep_r: np.ndarray, keep_f: np.ndarray) -> float:
            mins = row_min if keep_f.all() else np.where(keep_f[None, :], cos, np.inf).min(axis=1)
            use = keep_r & valid_r & np.isfinite(mins)
            mean_min = float(mins[use].mean()) if use.any() else np.nan
            return mean_min if mean_min < self.eps else 1.0
        return distance

    def kid_statistic(self, real_rows: np.ndarray, fake_rows: np.ndarray, m: int, n_subsets: int,
                      seed: int) -> tuple[Callable, int]:
        """Mean MMD^2 over subsets of m rows (first m of each random order, :func:`first_kept`) and
        the number of distinct subsets (1 when every subset is the whole selection)."""
        k_rr, k_ff, k_rf = (k[np.ix_(a, b)] for k, (a, b) in zip(self.kernel, ((real_rows, real_rows),
                                                                               (fake_rows, fake_rows),
                                                                               (real_rows, fake_rows))))
        orders_r, orders_f = subset_orders(len(real_rows), len(fake_rows), n_subsets, seed)
        if m == len(real_rows) == len(fake_rows):
            orders_r, orders_f = orders_r[:1], orders_f[:1]

        def kid(keep_r: np.ndarray, keep_f: np.ndarray) -> np.ndarray:
            return mmd2_of_subsets(k_rr, k_ff, k_rf, first_kept(orders_r, keep_r, m), first_kept(orders_f, keep_f, m))
        return kid, len(orders_r)

    def matched_fid_statistic(self, real_rows: np.ndarray, fake_rows: np.ndarray, m: int, seed: int) -> Callable:
        orders_r, orders_f = subset_orders(len(real_rows), len(fake_rows), self.s.size_matched_repeats, seed)
        if m == len(real_rows) == len(fake_rows):
            orders_r, orders_f = orders_r[:1], orders_f[:1]
        real, fake = self.real_f[real_rows], self.fake_f[fake_rows]

        def fid(keep_r: np.ndarray, keep_f: np.ndarray) -> float:
            return float(frechet_of_subsets(real, fake, first_kept(orders_r, keep_r, m),
                                            first_kept(orders_f, keep_f, m)).mean())
        return fid

    def selection(self, attribute: str, group: str, real_rows: np.ndarray, fake_rows: np.ndarray) -> dict:
        """Every per-selection metric; returns the replicate values the attribute summaries need."""
        s, reps = self.s, self.reps
        n_r, n_f = len(real_rows), len(fake_rows)
        out = {}
        both = n_r >= 2 and n_f >= 2
        fid = self.fid_statistic(real_rows, fake_rows) if both else None
        if both:
            point, values, deleted = reps.evaluate(fid, real_rows, fake_rows)
            jk = reps.summarise(point, values, deleted, n_r, n_f)
        else:
            point, values, deleted, jk = np.nan, np.full(len(reps.ids), np.nan), reps.deleted(real_rows, fake_rows), \
                NAN_JACKKNIFE
        out["fid"] = (point, values, jk)
        self.add(attribute, group, n_r, n_f, "fid", point, jackknife=jk)
        self.add(attribute, group, n_r, n_f, "fid_debiased", jk.debiased, jackknife=jk, debiased=True)

        if both:
            distance = self.memorisation_statistic(real_rows, fake_rows)
            mem_point, mem_values, _ = reps.evaluate(distance, real_rows, fake_rows)
            mifid_values = np.array([M.mifid_from_fid(f, d) if np.isfinite(f) else np.nan
                                     for f, d in zip(values, mem_values)])
            mifid_point = M.mifid_from_fid(point, mem_point)
            self.add(attribute, group, n_r, n_f, "mifid", mifid_point,
                     jackknife=reps.summarise(mifid_point, mifid_values, deleted, n_r, n_f), note=f"eps {self.eps:.4g}")
        else:
            self.add(attribute, group, n_r, n_f, "mifid", np.nan, note=f"eps {self.eps:.4g}")

        m = min(s.kid_subset_size, n_r, n_f)
        if m >= 2:
            kid, n_distinct = self.kid_statistic(real_rows, fake_rows, m, s.kid_subsets, s.seed)
            per_subset = kid(np.ones(n_r, bool), np.ones(n_f, bool))
            kid_point, kid_values, _ = reps.evaluate(lambda a, b: float(kid(a, b).mean()), real_rows, fake_rows)
            jk_kid = reps.summarise(kid_point, kid_values, deleted, n_r, n_f)
            subset_var = per_subset.var() / n_distinct  # the subsets' own randomness, on top of the data's
            jk_kid = Jackknife(jk_kid.point, jk_kid.debiased, float(np.sqrt(jk_kid.se ** 2 + subset_var)), jk_kid.df,
                               jk_kid.n_replicates)
            out["kid"] = (kid_point, kid_values, jk_kid)
            note = f"subsets of {m}, {n_distinct} distinct"
            self.add(attribute, group, n_r, n_f, "kid", kid_point, jackknife=jk_kid, note=note)
            self.add(attribute, group, n_r, n_f, "kid_std", float(per_subset.std()), note=note)
        else:
            out["kid"] = (np.nan, np.full(len(reps.ids), np.nan), NAN_JACKKNIFE)
            self.add(attribute, group, n_r, n_f, "kid", np.nan)
            self.add(attribute, group, n_r, n_f, "kid_std", np.nan)

        d_rr, d_ff, d_rf = (d[np.ix_(a, b)] for d, (a, b) in zip(self.dist, ((real_rows, real_rows),
                                                                             (fake_rows, fake_rows),
                                                                             (real_rows, fake_rows))))
        k = min(s.prdc_k, n_r - 1, n_f - 1)
        for metric, value in prdc_from_distances(d_rr, d_ff, d_rf, s.prdc_k).items():
            self.add(attribute, group, n_r, n_f, metric, value, note=f"k {k}" if k >= 1 else "")

        logits = self.fake_logits[fake_rows]
        if len(logits) >= 1:
            boot = M.bootstrap(lambda lg: M.inception_score_from_logits(lg, s.splits, s.seed)[0], logits,
                               n=s.n_boot, seed=s.seed, batched=lambda lg: M.inception_scores(lg, s.splits, s.seed)[0])
            self.add(attribute, group, n_r, n_f, "is", boot["point"], boot=boot)
            self.add(attribute, group, n_r, n_f, "is_std", M.inception_score_from_logits(logits, s.splits, s.seed)[1])
        else:
            self.add(attribute, group, n_r, n_f, "is", np.nan)
            self.add(attribute, group, n_r, n_f, "is_std", np.nan)

        if self.train:
            flagged = self.fake_nn[fake_rows] < self.tau
            share = float(flagged.mean()) if n_f else np.nan
            self.add(attribute, group, n_r, n_f, "copy_share", share,
                     interval=wilson_interval(int(flagged.sum()), n_f, s.ci), interval_name="wilson",
                     note=f"nearest-training distance below tau {self.tau:.4g}")
            median_test = np.median(self.test_nn[real_rows]) if n_r else np.nan
            ratio = np.median(self.fake_nn[fake_rows]) / median_test if n_f and median_test > 0 else np.nan
            self.add(attribute, group, n_r, n_f, "nn_train_ratio", ratio,
                     note="median nearest-training distance, generated / real test")
        return out

    # ------------------------------------------------------------------------- size matching
    def matched(self, attribute: str, group: str, real_rows: np.ndarray, fake_rows: np.ndarray, m: int,
                seed: int) -> dict:
        """FID and KID averaged over ``size_matched_repeats`` subsamples of m rows per set."""
        reps, s = self.reps, self.s
        fid = self.matched_fid_statistic(real_rows, fake_rows, m, seed)
        point, values, deleted = reps.evaluate(fid, real_rows, fake_rows)
        jk = reps.summarise(point, values, deleted, len(real_rows), len(fake_rows))
        kid, _ = self.kid_statistic(real_rows, fake_rows, m, s.size_matched_repeats, seed)
        kid_point, kid_values, _ = reps.evaluate(lambda a, b: float(kid(a, b).mean()), real_rows, fake_rows)
        jk_kid = reps.summarise(kid_point, kid_values, deleted, len(real_rows), len(fake_rows))
        note = f"{s.size_matched_repeats} subsamples of {m} of {len(real_rows)} real / {len(fake_rows)} generated"
        for metric, p, j in (("fid_matched", point, jk), ("kid_matched", kid_point, jk_kid)):
            self.add(attribute, group, m, m, metric, p, jackknife=j, matched=True, note=note)
        return {"fid_matched": (point, values, jk), "kid_matched": (kid_point, kid_values, jk_kid)}

    # ------------------------------------------------------------------------- attribute summaries
    def summaries(self, attribute: str, overall: dict, groups: dict[str, dict], m: int | None) -> None:
        """ES and max - min gap of every compared metric, with the joint jackknife over whole sets."""
        reps = self.reps
        all_r, all_f = np.arange(len(self.real_f)), np.arange(len(self.fake_f))
        deleted = reps.deleted(all_r, all_f)
        n_r, n_f = len(all_r), len(all_f)
        for metric in ("fid", "kid", "fid_matched", "kid_matched"):
            if metric not in overall:
                continue
            o_point, o_values, o_jk = overall[metric]
            parts = [g[metric] for g in groups.values() if metric in g]
            g_points = np.array([p for p, _, _ in parts])
            g_values = np.array([v for _, v, _ in parts]).reshape(len(parts), len(reps.ids))
            matched = metric.endswith("_matched")
            size = (m, m) if matched else (n_r, n_f)

            def es(o: float, g: np.ndarray) -> float:
                g = g[np.isfinite(g)]
                return M.equity_scaled(o, g, higher_is_better=False) if len(g) and np.isfinite(o) else np.nan

            def gap(g: np.ndarray) -> float:
                g = g[np.isfinite(g)]
                return float(g.max() - g.min()) if len(g) >= 2 else np.nan

            for name, fn, group_label in ((f"es_{metric}", lambda o, g: es(o, g), ES_GROUP),
                                          (f"{metric}_gap", lambda o, g: gap(g), GAP_GROUP)):
                point = fn(o_point, g_points)
                values = np.array([fn(o_values[j], g_values[:, j]) for j in range(len(reps.ids))])
                jk = reps.summarise(point, values, deleted, n_r, n_f)
                self.add(attribute, group_label, *size, name, point, jackknife=jk, matched=matched, small=False)
                if metric == "fid":  # the same summary of the bias-corrected values, with the same se
                    debiased = fn(o_jk.debiased, np.array([j.debiased for _, _, j in parts]))
                    shifted = Jackknife(debiased, debiased, jk.se, jk.df, jk.n_replicates)
                    label = "es_fid_debiased" if name.startswith("es_") else "fid_debiased_gap"
                    self.add(attribute, group_label, *size, label, debiased, jackknife=shifted, debiased=True,
                             small=False, note="from the bias-corrected values; se of the plug-in summary")


def generation_metrics_from_features(real_f: np.ndarray, fake_f: np.ndarray, fake_logits: np.ndarray,
                                     real_masks: dict[tuple[str, str], np.ndarray],
                                     fake_masks: dict[tuple[str, str], np.ndarray], extractor_name: str,
                                     train_f: np.ndarray | None = None, **settings) -> pd.DataFrame:
    """The generation table (columns :data:`GENERATION_COLUMNS`) from feature arrays ([n, d] each,
    logits [n_fake, C]) and boolean group masks keyed (attribute, group); ``settings`` are the
    fields of :class:`Settings`. See :func:`fairdiff.evaluate.features.generation_metrics` for what
    the rows mean. Memory grows as n^2: seven [n, n] float64 matrices (about 220 MiB at 2000
    images per set)."""
    s = Settings(**settings)
    real_f, fake_f = M._as_float64_2d(real_f, "real features"), M._as_float64_2d(fake_f, "fake features")
    if train_f is not None:
        train_f = M._as_float64_2d(train_f, "training features")
    dims = {"real": real_f.shape[1], "fake": fake_f.shape[1]}
    if train_f is not None:
        dims["train"] = train_f.shape[1]
    if len(set(dims.values())) > 1:
        raise ValueError(f"feature sizes differ: {dims}")
    if len(fake_logits) != len(fake_f):
        raise ValueError(f"{len(fake_logits)} logit rows for {len(fake_f)} generated feature rows")
    for what, masks, n in (("real", real_masks, len(real_f)), ("fake", fake_masks, len(fake_f))):
        bad = {key: len(mask) for key, mask in masks.items() if len(mask) != n}
        if bad:
            raise ValueError(f"{what} group masks must have {n} rows (one per feature row); got {bad}")
    if s.mifid_eps != "calibrated" and not isinstance(s.mifid_eps, (int, float)):
        raise ValueError(f"mifid_eps: expected a number or 'calibrated', got {s.mifid_eps!r}")
    if s.size_matched_floor < 2:
        raise ValueError(f"size_matched_floor: expected >= 2 (FID and KID need 2 images), got {s.size_matched_floor}")
    table = _Table(real_f, fake_f, fake_logits, train_f, extractor_name, s)
    n_r, n_f = len(real_f), len(fake_f)
    overall = table.selection("all", "all", np.arange(n_r), np.arange(n_f))
    table.add("all", "all", n_r, n_f, "mifid_eps", table.eps, small=False, note=table.eps_note)
    if table.train:
        table.add("all", "all", n_r, n_f, "copy_threshold", table.tau, small=False,
                  note=f"the {100 * s.copy_quantile:g} % quantile of real test-to-train distances (Euclidean)")
    attributes = list(dict.fromkeys(a for a, _ in real_masks))
    for index, attribute in enumerate(attributes):
        keys = [key for key in real_masks if key[0] == attribute]
        groups = {group: table.selection(attribute, group, np.flatnonzero(real_masks[(attribute, group)]),
                                         np.flatnonzero(fake_masks[(attribute, group)])) for _, group in keys}
        sizes = {group: min(int(real_masks[(attribute, group)].sum()), int(fake_masks[(attribute, group)].sum()))
                 for _, group in keys}
        compared = [g for g, size in sizes.items() if size >= s.size_matched_floor]
        m = min((sizes[g] for g in compared), default=None)
        attribute_overall = dict(overall)
        if m is not None:
            seed = s.seed + 1 + index
            attribute_overall.update(table.matched(attribute, MATCHED_ALL, np.arange(n_r), np.arange(n_f), m, seed))
            for group in compared:
                groups[group] = {**groups[group],
                                 **table.matched(attribute, group, np.flatnonzero(real_masks[(attribute, group)]),
                                                 np.flatnonzero(fake_masks[(attribute, group)]), m, seed)}
        table.summaries(attribute, attribute_overall, groups, m)
    return pd.DataFrame(table.rows, columns=GENERATION_COLUMNS)
