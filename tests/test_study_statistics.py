"""The study's pre-registered statistics against hand computations, closed forms and simulation:
TOST, non-inferiority, the minimum detectable effect, seeds needed, the % change and the verdicts."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from fairdiff import study
from fairdiff.study import statistics as st


def test_tost_by_hand():
    d = np.array([1.0, 2.0, 0.5, 1.5])  # mean 1.25; squared deviations sum to 1.25, so sd^2 = 1.25 / 3
    se = math.sqrt(1.25 / 3) / 2
    got = st.tost(d, margin=3.0)
    p_lower = scipy.stats.t.sf((1.25 + 3.0) / se, 3)   # H0: mean <= -3
    p_upper = scipy.stats.t.cdf((1.25 - 3.0) / se, 3)  # H0: mean >= +3
    assert got["p_lower"] == pytest.approx(p_lower) and got["p_upper"] == pytest.approx(p_upper)
    assert got["p"] == pytest.approx(max(p_lower, p_upper)) and got["p"] < 0.05
    # a margin inside the mean: never equivalent
    assert st.tost(d, margin=1.0)["p"] > 0.5
    assert math.isnan(st.tost([1.0], 3.0)["p"]) and math.isnan(st.tost(d, 0.0)["p"]) and \
        math.isnan(st.tost(d, np.nan)["p"])
    # no spread: equivalent exactly when the mean lies inside the margin
    assert st.tost([0.5, 0.5], 1.0)["p"] == 0.0 and st.tost([1.5, 1.5], 1.0)["p"] == 1.0


def test_tost_equals_the_ninety_percent_interval_inside_the_margin():
    rng = np.random.default_rng(3)
    for _ in range(200):
        d = rng.normal(rng.normal(0, 1), rng.uniform(0.2, 2), size=rng.integers(2, 12))
        margin = rng.uniform(0.1, 3)
        _, lo, hi = study.t_interval(d, 0.90)
        assert (st.tost(d, margin)["p"] < 0.05) == (-margin < lo and hi < margin)


def test_verdict_logic():
    assert st.verdict(-3.0, -1.0, 0.5) == "narrower"
    assert st.verdict(1.0, 3.0, 0.5) == "wider"
    assert st.verdict(-1.0, 1.0, 0.01) == "equivalent"
    assert st.verdict(-1.0, 1.0, 0.2) == "inconclusive"
    assert st.verdict(-0.5, -0.1, 0.001) == "narrower"  # a difference is reported as one, even a small one
    assert st.verdict(np.nan, np.nan, np.nan) == "inconclusive"
    assert st.verdict(-1.0, 1.0, 0.04, alpha=0.01) == "inconclusive"


def test_percent_of_the_baseline_gap():
    assert st.percent_of(5.0, 20.0) == pytest.approx(25.0)
    assert st.percent_of(-5.0, 20.0) == pytest.approx(-25.0)
    for scale in (0.0, -20.0, np.nan):  # no gap, or a reversed one, is no scale
        assert math.isnan(st.percent_of(5.0, scale))


def test_noninferiority_by_hand():
    d = [1.0, 2.0, 3.0]  # mean 2, sd 1: 95 % interval 2 +- 4.303 / sqrt 3
    half = scipy.stats.t.ppf(0.975, 2) / math.sqrt(3)
    r = st.noninferiority(d, margin=10.0)
    assert (r["diff"], r["lo"], r["hi"]) == pytest.approx((2.0, 2 - half, 2 + half))
    assert r["verdict"] == "non-inferior"
    assert r["p"] == pytest.approx(scipy.stats.t.cdf((2.0 - 10.0) * math.sqrt(3), 2))
    assert st.noninferiority(d, margin=1.0)["verdict"] == "inconclusive"
    assert st.noninferiority([5.0, 6.0, 7.0], margin=1.0)["verdict"] == "inferior"


def test_minimum_detectable_effect_against_closed_forms_and_simulation():
    # large n: the usual closed form (t + t) sd / sqrt(n)
    n = 200
    closed = (scipy.stats.t.ppf(0.975, n - 1) + scipy.stats.t.ppf(0.8, n - 1)) * 2.0 / math.sqrt(n)
    assert st.minimum_detectable_effect(2.0, n) == pytest.approx(closed, rel=2e-3)
    # small n: the noncentral t's power at the MDE is the requested one
    for n in (3, 5, 8):
        mde = st.minimum_detectable_effect(1.0, n)
        crit, nc = scipy.stats.t.ppf(0.975, n - 1), mde * math.sqrt(n)
        power = scipy.stats.nct.sf(crit, n - 1, nc) + scipy.stats.nct.cdf(-crit, n - 1, nc)
        assert power == pytest.approx(0.8, abs=1e-6)
        assert mde > (crit + scipy.stats.t.ppf(0.8, n - 1)) / math.sqrt(n) * 0.99
    # simulation: paired t-tests at the MDE reject about 80 % of the time (also at n = 2)
    rng = np.random.default_rng(0)
    for n in (2, 6):
        mde = st.minimum_detectable_effect(1.5, n)
        d = rng.normal(mde, 1.5, size=(40_000, n))
        p = scipy.stats.ttest_1samp(d, 0.0, axis=1).pvalue
        assert np.mean(p < 0.05) == pytest.approx(0.8, abs=0.01)
    assert st.minimum_detectable_effect(1.0, 5, power=0.9) > st.minimum_detectable_effect(1.0, 5)
    assert st.minimum_detectable_effect(0.0, 5) == 0.0 and math.isnan(st.minimum_detectable_effect(1.0, 1))


def test_seeds_for_halfwidth_by_hand():
    # t(0.975, 16) / sqrt 17 = 0.514 > 0.5 >= t(0.975, 17) / sqrt 18 = 0.497
    assert st.seeds_for_halfwidth(1.0, 0.5) == 18
    assert st.seeds_for_halfwidth(1.0, 100.0) == 2
    assert math.isnan(st.seeds_for_halfwidth(np.nan, 0.5)) and math.isnan(st.seeds_for_halfwidth(1.0, 0.0))


ANALYSIS = {"confidence": 0.95, "equivalence_margin": 0.2, "noninferiority_margin": 0.1, "power": 0.8,
            "target_halfwidth": 0.15}


def _endpoint(values: dict) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "arm": arm, "value": v} for arm, vs in values.items() for s, v in enumerate(vs)])


def test_primary_table_known_answers():
    frame = _endpoint({"baseline": [10.0, 12.0, 14.0],   # gap 12 on average
                       "fairbo": [9.0, 10.5, 12.0],       # -1, -1.5, -2
                       "fixed": [10.5, 11.5, 14.0],       # +0.5, -0.5, 0
                       "random": [15.0, 18.0, 19.0]})     # +5, +6, +5
    comparisons = [("fairbo", "baseline"), ("fixed", "baseline"), ("random", "baseline"), ("fairbo", "fixed")]
    primary = [("fairbo", "baseline"), ("fairbo", "fixed")]
    t = st.primary_table(frame, comparisons, primary, "baseline", ANALYSIS).set_index(["arm", "against"])
    fb = t.loc[("fairbo", "baseline")]
    d = np.array([-1.0, -1.5, -2.0])
    mean, lo, hi = study.t_interval(d)
    assert fb["reference_gap"] == 12.0 and fb["n_seeds"] == 3 and fb["n_lower"] == 3
    assert (fb["pct"], fb["pct_lo"], fb["pct_hi"]) == pytest.approx((100 * mean / 12, 100 * lo / 12, 100 * hi / 12))
    assert fb["p_tost"] == pytest.approx(st.tost(d, 0.2 * 12)["p"]) and fb["margin_pct"] == 20
    assert fb["verdict"] == "narrower"
    assert fb["mde_pct"] == pytest.approx(100 * st.minimum_detectable_effect(d.std(ddof=1), 3) / 12)
    assert fb["seeds_needed"] == st.seeds_for_halfwidth(d.std(ddof=1), 0.15 * 12)
    # Holm over the primary family only: the two primary rows, nothing else
    family = t[t["family"] == "primary"]
    np.testing.assert_allclose(family["p_holm"], study.holm(family["p_ttest"].to_numpy()))
    assert t.loc[("random", "baseline"), "family"] == "other arms" and np.isnan(t.loc[("random", "baseline"), "p_holm"])
    assert t.loc[("random", "baseline"), "verdict"] == "wider"
    # fairbo against the fixed control: still in % of the baseline gap
    vs_fixed = t.loc[("fairbo", "fixed")]
    assert vs_fixed["pct"] == pytest.approx(100 * np.mean([-1.5, -1.0, -2.0]) / 12)
    # fixed: +0.5, -0.5, 0 -> mean 0, 90 % interval +-0.84 inside +-2.4: equivalent
    assert t.loc[("fixed", "baseline"), "verdict"] == "equivalent"


def test_primary_table_without_a_baseline_gap_claims_nothing():
    frame = _endpoint({"baseline": [-1.0, -2.0, -1.5], "fairbo": [-1.1, -2.0, -1.4]})
    row = st.primary_table(frame, [("fairbo", "baseline")], [], "baseline", ANALYSIS).iloc[0]
    assert math.isnan(row["pct"]) and math.isnan(row["p_tost"]) and row["verdict"] == "inconclusive"


def test_noninferiority_table():
    overall = _endpoint({"baseline": [20.0, 22.0, 24.0], "fairbo": [21.0, 23.0, 26.0], "fixed": [21.0, 23.0, 25.5]})
    t = st.noninferiority_table(overall, ["baseline", "fairbo", "fixed"], "baseline", ANALYSIS).set_index("arm")
    row = t.loc["fairbo"]  # +1, +1, +2
    assert row["reference_fid"] == 22.0 and row["margin"] == pytest.approx(2.2)
    assert row["diff"] == pytest.approx(4 / 3) and row["pct"] == pytest.approx(100 * 4 / 3 / 22)
    assert row["verdict"] == "inconclusive"  # upper bound 1.33 + 4.30 x 0.33 = 2.77 > 2.2 > lower bound
    assert t.loc["fixed", "verdict"] == "non-inferior"  # +1, +1, +1.5: upper bound 1.17 + 4.30 x 0.17 = 1.88
    assert "baseline" not in t.index
