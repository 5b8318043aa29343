"""The study's statistics, all over training seeds (n = number of seeds; docs/method.md §5.9).

Pre-registered in the profile's ``study.analysis`` before any run:

- **Primary endpoint**: the planted group's FID minus the majority group's at matched n, per arm
  as a change from the reference arm (baseline), paired by seed, with a 95 % t interval, shown in
  % of the reference arm's mean gap (the scale is that mean, taken as fixed).
- **Equivalence** by two one-sided t-tests (TOST) with a margin of +-``equivalence_margin`` of the
  reference gap, so "no effect" is claimed positively or not at all; the verdict of an arm is
  narrower / wider (95 % interval excludes 0), equivalent (TOST p < 1 - confidence) or
  inconclusive.
- **Overall FID as non-inferiority**: an arm is non-inferior when the upper bound of the 95 %
  interval of its change is below ``noninferiority_margin`` x the reference's overall FID.
- **Holm** only over the primary family (``study.analysis.primary``).
- The **minimum detectable effect** (two-sided paired t-test, ``power``) and the number of seeds a
  95 % interval of at most +-``target_halfwidth`` of the reference gap needs, both from the seed
  spread of the paired differences.

Everything else is secondary: intervals and unadjusted p-values, labelled as such.
"""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import scipy.integrate
import scipy.optimize
import scipy.stats

VERDICTS = ("narrower", "wider", "equivalent", "inconclusive")


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def t_interval(values, ci: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of ``values`` with a Student-t interval (NaN bounds for n < 2)."""
    x = _finite(values)
    if len(x) == 0:
        return np.nan, np.nan, np.nan
    mean = float(x.mean())
    if len(x) < 2:
        return mean, np.nan, np.nan
    half = scipy.stats.t.ppf(0.5 + ci / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return mean, float(mean - half), float(mean + half)


def sign_flip_pvalue(diffs, max_exact: int = 20, n_random: int = 100_000, seed: int = 0) -> float:
    """Two-sided paired permutation test of mean(diffs) = 0: under the null each paired difference
    is as likely to have either sign, so the p-value is the share of the 2^n sign patterns whose
    |sum| is at least the observed one (all patterns up to ``max_exact`` pairs, else ``n_random``
    random ones plus the observed). Its smallest value is 2 / 2^n: 0.0625 with 5 pairs."""
    d = _finite(diffs)
    if len(d) == 0:
        return np.nan
    observed = abs(d.sum())
    if len(d) <= max_exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones(len(d)), rng.choice((1.0, -1.0), size=(n_random, len(d)))])
    flipped = np.abs(signs @ d)
    tolerance = 1e-12 * max(1.0, np.abs(d).sum())  # ties up to rounding count as at least as extreme
    return float(np.mean(flipped >= observed - tolerance))


def paired_t_pvalue(diffs) -> float:
    """Two-sided one-sample t-test of the paired differences (NaN for fewer than 2, or no spread)."""
    d = _finite(diffs)
    if len(d) < 2 or np.all(d == d[0]):
        return np.nan
    return float(scipy.stats.ttest_1samp(d, 0.0).pvalue)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error across the given tests; NaN stays NaN
    and is not counted in the family)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    m = len(valid)
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def bootstrap_t_test(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int) -> float:
    """The authors' significance test of two classifiers: a t-test between their bootstrap AUC
    replicates, here from each list's mean, standard deviation and length (two-sided, Welch).
    The replicates are treated as independent observations, which they are not: the p-value
    shrinks with the number of replicates whatever the effect."""
    if min(n_a, n_b) < 2 or not np.isfinite([mean_a, std_a, mean_b, std_b]).all():
        return np.nan
    if std_a == 0 and std_b == 0:
        return 0.0 if mean_a != mean_b else 1.0
    return float(scipy.stats.ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False).pvalue)


# ----------------------------------------------------------------------------- pre-registered tests
def tost(diffs, margin: float) -> dict:
    """Two one-sided t-tests of equivalence: H0 mean <= -margin and H0 mean >= +margin, each
    against its one-sided alternative. ``p`` is the larger of the two p-values: equivalence at
    level alpha is claimed when p < alpha, which is the same as the 1 - 2 alpha interval lying
    inside (-margin, +margin). NaN with fewer than 2 differences or a margin that is not positive."""
    d = _finite(diffs)
    out = {"p": np.nan, "p_lower": np.nan, "p_upper": np.nan}
    if len(d) < 2 or not np.isfinite(margin) or margin <= 0:
        return out
    mean, se, df = d.mean(), d.std(ddof=1) / np.sqrt(len(d)), len(d) - 1
    if se == 0:
        inside = -margin < mean < margin
        out.update(p=0.0 if inside else 1.0, p_lower=0.0 if mean > -margin else 1.0,
                   p_upper=0.0 if mean < margin else 1.0)
        return out
    p_lower = float(scipy.stats.t.sf((mean + margin) / se, df))
    p_upper = float(scipy.stats.t.cdf((mean - margin) / se, df))
    out.update(p=max(p_lower, p_upper), p_lower=p_lower, p_upper=p_upper)
    return out


def verdict(lo: float, hi: float, tost_p: float, alpha: float = 0.05) -> str:
    """The primary endpoint's verdict from the 95 % interval of (arm - reference) and the TOST
    p-value: narrower (interval below 0), wider (above 0), equivalent (includes 0 and TOST
    p < alpha) or inconclusive (everything else, also when an interval is missing)."""
    if np.isfinite(hi) and hi < 0:
        return "narrower"
    if np.isfinite(lo) and lo > 0:
        return "wider"
    if np.isfinite(tost_p) and tost_p < alpha:
        return "equivalent"
    return "inconclusive"


def noninferiority(diffs, margin: float, ci: float = 0.95) -> dict:
    """Is an arm not worse than the reference by ``margin`` or more (a higher value is worse, as
    for FID)? ``non-inferior`` when the upper bound of the ``ci`` interval of the mean change is
    below the margin (a one-sided test at (1 - ci) / 2), ``inferior`` when the lower bound is above
    it, else ``inconclusive``; ``p`` is the one-sided t-test of H0 mean >= margin."""
    d = _finite(diffs)
    mean, lo, hi = t_interval(d, ci)
    p = np.nan
    if len(d) >= 2 and np.isfinite(margin):
        se = d.std(ddof=1) / np.sqrt(len(d))
        p = float(scipy.stats.t.cdf((mean - margin) / se, len(d) - 1)) if se > 0 else float(mean >= margin)
    state = ("non-inferior" if np.isfinite(hi) and hi < margin else
             "inferior" if np.isfinite(lo) and lo > margin else "inconclusive")
    return {"diff": mean, "lo": lo, "hi": hi, "p": p, "verdict": state}


def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at ``alpha`` with ``n`` pairs when the differences are
    normal with mean ``effect`` and standard deviation ``sd``: P(|T| > t_crit) for the noncentral T,
    written as an integral over the chi-square variable of the sample variance (stable for any
    degrees of freedom, also n = 2 where the noncentral t's own routines fail)."""
    if n < 2 or not (np.isfinite(effect) and np.isfinite(sd)) or sd <= 0:
        return np.nan
    df, nc = n - 1, abs(effect) * np.sqrt(n) / sd
    crit = scipy.stats.t.ppf(1 - alpha / 2, df)

    def rejected(v: float) -> float:
        s = crit * np.sqrt(v / df)
        return (scipy.stats.norm.sf(s - nc) + scipy.stats.norm.cdf(-s - nc)) * scipy.stats.chi2.pdf(v, df)

    lo, hi = scipy.stats.chi2.ppf([1e-12, 1 - 1e-12], df)  # all but 2e-12 of the variable's mass
    return float(scipy.integrate.quad(rejected, lo, hi, points=[df], limit=200)[0])


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean paired difference a two-sided paired t-test at ``alpha`` detects with
    probability ``power`` from ``n`` pairs whose differences have standard deviation ``sd``
    (:func:`paired_t_power` solved for the effect; it approaches the usual closed form
    (t_{1-alpha/2, n-1} + t_{power, n-1}) sd / sqrt(n) as n grows, and exceeds it for few pairs)."""
    if n < 2 or not np.isfinite(sd) or sd < 0:
        return np.nan
    if sd == 0:
        return 0.0
    high = sd
    while paired_t_power(high, sd, n, alpha) < power and high < 1e6 * sd:
        high *= 2
    return float(scipy.optimize.brentq(lambda e: paired_t_power(e, sd, n, alpha) - power, 0.0, high,
                                       xtol=1e-10 * sd))


def seeds_for_halfwidth(sd: float, halfwidth: float, ci: float = 0.95, most: int = 10_000) -> float:
    """The smallest number of seeds n >= 2 whose ``ci`` t interval of a mean paired difference has
    a half width t_{n-1} sd / sqrt(n) of at most ``halfwidth``, taking ``sd`` (the pilot's spread)
    as the truth; NaN when it cannot be computed or exceeds ``most``."""
    if not (np.isfinite(sd) and np.isfinite(halfwidth)) or halfwidth <= 0:
        return np.nan
    for n in range(2, most + 1):
        if scipy.stats.t.ppf(0.5 + ci / 2, n - 1) * sd / np.sqrt(n) <= halfwidth:
            return float(n)
    return np.nan


def percent_of(value: float, scale: float) -> float:
    """``value`` in % of ``scale`` (NaN when the scale is not a positive number: a reference gap
    that is absent or reversed is no scale to express changes in)."""
    return 100.0 * value / scale if np.isfinite(scale) and scale > 0 else np.nan


# ----------------------------------------------------------------------------- tables over seeds
def _paired(wide: pd.DataFrame, arm: str, reference: str) -> np.ndarray:
    if arm not in wide or reference not in wide:
        return np.array([])
    return (wide[arm] - wide[reference]).dropna().to_numpy()


def primary_table(endpoint: pd.DataFrame, comparisons, primary, reference: str, analysis: dict) -> pd.DataFrame:
    """The pre-registered analysis of the primary endpoint.

    ``endpoint``: one value per (seed, arm) (columns seed, arm, value). ``comparisons``: (arm,
    against) pairs; ``primary``: the pairs of the Holm family. Every difference is expressed in %
    of the ``reference`` arm's mean endpoint over seeds (the baseline gap), and so is the TOST
    margin. Columns: the pair and its family, the reference gap, the mean difference with its
    interval (absolute and in %), TOST, sign-flip and t p-values, Holm's adjustment (primary rows
    only), the verdict, the seed spread, the minimum detectable effect and the seeds needed."""
    ci, alpha = analysis["confidence"], 1 - analysis["confidence"]
    wide = endpoint.pivot_table(index="seed", columns="arm", values="value", sort=False)
    gap = float(wide[reference].mean()) if reference in wide else np.nan
    margin = analysis["equivalence_margin"] * gap if np.isfinite(gap) and gap > 0 else np.nan
    rows = []
    for arm, against in comparisons:
        d = _paired(wide, arm, against)
        mean, lo, hi = t_interval(d, ci)
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else np.nan
        eq = tost(d, margin)
        rows.append({
            "arm": arm, "against": against, "family": "primary" if (arm, against) in primary else "other arms",
            "n_seeds": len(d), "reference_gap": gap, "diff": mean, "lo": lo, "hi": hi,
            "pct": percent_of(mean, gap), "pct_lo": percent_of(lo, gap), "pct_hi": percent_of(hi, gap),
            "margin_pct": 100 * analysis["equivalence_margin"], "p_tost": eq["p"],
            "p_ttest": paired_t_pvalue(d), "p_signflip": sign_flip_pvalue(d),
            "n_lower": int((d < 0).sum()), "verdict": verdict(lo, hi, eq["p"], alpha),
            "sd_diff": sd, "mde_pct": percent_of(minimum_detectable_effect(sd, len(d), alpha, analysis["power"]), gap),
            "seeds_needed": seeds_for_halfwidth(sd, analysis["target_halfwidth"] * gap if gap > 0 else np.nan, ci)})
    table = pd.DataFrame(rows)
    if len(table):
        in_family = table["family"] == "primary"
        table["p_holm"] = np.nan
        table.loc[in_family, "p_holm"] = holm(table.loc[in_family, "p_ttest"].to_numpy())
    return table


def noninferiority_table(overall: pd.DataFrame, arms, reference: str, analysis: dict) -> pd.DataFrame:
    """Overall FID of every arm against the ``reference`` arm as non-inferiority: the change
    (arm - reference, paired by seed) with its interval, also in % of the reference's mean
    overall FID, the margin (``noninferiority_margin`` of that mean) and the verdict."""
    wide = overall.pivot_table(index="seed", columns="arm", values="value", sort=False)
    base = float(wide[reference].mean()) if reference in wide else np.nan
    margin = analysis["noninferiority_margin"] * base
    rows = []
    for arm in arms:
        if arm == reference:
            continue
        d = _paired(wide, arm, reference)
        r = noninferiority(d, margin, analysis["confidence"])
        rows.append({"arm": arm, "against": reference, "n_seeds": len(d), "reference_fid": base, **r,
                     "pct": percent_of(r["diff"], base), "pct_lo": percent_of(r["lo"], base),
                     "pct_hi": percent_of(r["hi"], base), "margin": margin,
                     "margin_pct": 100 * analysis["noninferiority_margin"]})
    return pd.DataFrame(rows)


def arm_means(per_seed: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """Per arm and metric: mean over seeds with a t interval and the seed-to-seed sd."""
    rows = []
    for (arm, metric), part in per_seed.groupby(["arm", "metric"], sort=False):
        mean, lo, hi = t_interval(part["value"], ci)
        rows.append({"arm": arm, "metric": metric, "n_seeds": int(part["value"].notna().sum()),
                     "mean": mean, "lo": lo, "hi": hi, "sd": float(part["value"].std(ddof=1))})
    return pd.DataFrame(rows)


def secondary_effects(per_seed: pd.DataFrame, specs: pd.DataFrame, reference: str = "baseline",
                      ci: float = 0.95) -> pd.DataFrame:
    """Per arm and secondary metric: the mean paired difference (arm minus ``reference``, same
    seed) with a t interval, the sign-flip and paired-t p-values, unadjusted (secondary: no
    family-wise claim is made from them). ``better`` says whether the mean difference points the
    good way (lower FID, higher AUC)."""
    wide = per_seed.pivot_table(index=["seed", "metric"], columns="arm", values="value", sort=False)
    rows = []
    for arm in [a for a in dict.fromkeys(per_seed["arm"]) if a != reference]:
        for spec in specs.itertuples():
            if spec.metric not in wide.index.get_level_values("metric"):
                continue
            d = _paired(wide.xs(spec.metric, level="metric"), arm, reference)
            mean, lo, hi = t_interval(d, ci)
            rows.append({"arm": arm, "metric": spec.metric, "label": spec.label, "family": "secondary",
                         "lower_is_better": spec.lower_is_better, "n_seeds": len(d), "diff": mean, "lo": lo,
                         "hi": hi, "better": bool(mean < 0) if spec.lower_is_better else bool(mean > 0),
                         "n_better": int(((d < 0) if spec.lower_is_better else (d > 0)).sum()),
                         "p_signflip": sign_flip_pvalue(d), "p_ttest": paired_t_pvalue(d)})
    return pd.DataFrame(rows)


def planted_summary(planted: pd.DataFrame) -> pd.DataFrame:
    """Per metric and seed: the planted group's value minus the largest other group's, and whether
    its interval lies above every other group's."""
    rows = []
    for (metric, seed), g in planted.groupby(["metric", "seed"], sort=False):
        mine, others = g[g["planted"]], g[~g["planted"]]
        if mine.empty or others.empty:
            continue
        m = mine.iloc[0]
        rows.append({"metric": metric, "seed": seed, "planted": m["value"], "worst_other": others["value"].max(),
                     "excess": m["value"] - others["value"].max(),
                     "mean_other": others["value"].mean(), "is_worst": bool(m["value"] > others["value"].max()),
                     "separated": bool(m["boot_lo"] > others["boot_hi"].max())})
    return pd.DataFrame(rows)


def sweep_cells(per_seed: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """Per (metric, W, r): the mean gap reduction (reference gap minus the cell's; positive:
    narrower) over seeds with a t interval and the sign-flip p-value, and the mean change of
    overall FID (cell minus reference)."""
    rows = []
    for (metric, w, r), part in per_seed.groupby(["metric", "window", "exploitation"], sort=False):
        mean, lo, hi = t_interval(part["reduction"], ci)
        cost = t_interval(part["overall_fairbo"] - part["overall_baseline"], ci)
        rows.append({"metric": metric, "window": w, "exploitation": r, "n_seeds": len(part), "reduction": mean,
                     "lo": lo, "hi": hi, "p_signflip": sign_flip_pvalue(part["reduction"]),
                     "overall_change": cost[0], "overall_change_lo": cost[1], "overall_change_hi": cost[2]})
    return pd.DataFrame(rows)
