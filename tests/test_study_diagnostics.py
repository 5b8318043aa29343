"""The FBP signal diagnostics (fairdiff/study/diagnostics.py) on constructed traces with known
answers, and the BO-recovery simulation through the real FairBayesianPerturbation."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
import torch

from fairdiff.fairness import FairBayesianPerturbation, step_group_stats
from fairdiff.study import diagnostics as dx


def trace(y: np.ndarray, sigma: np.ndarray) -> pd.DataFrame:
    """A metrics.csv-like table: step (1-based), y and one sigma[...] column per scale."""
    frame = pd.DataFrame({"step": np.arange(1, len(y) + 1), "loss": 0.1, "y": y})
    for j in range(sigma.shape[1]):
        frame[f"sigma[g={j}]"] = sigma[:, j]
    return frame


def lstsq_r2(x: np.ndarray, y: np.ndarray) -> float:
    design = np.column_stack([np.ones(len(y)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return 1 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()


# ----------------------------------------------------------------------------- bo_signal
def test_r2_equals_a_plain_least_squares_fit_and_ignores_redundant_columns():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(90, 3))
    y = x @ [0.5, -1.0, 0.2] + rng.normal(size=90)
    result = dx.bo_signal(trace(y, x), window=30, n_shuffles=50)
    assert result["r2"] == pytest.approx(lstsq_r2(x, y), abs=1e-12)
    # a constant column and a copy of a column span nothing new: same R^2, same rank for the adjustment
    padded = np.column_stack([x, np.ones(90), x[:, 0]])
    again = dx.bo_signal(trace(y, padded), window=30, n_shuffles=50)
    assert again["r2"] == pytest.approx(result["r2"], abs=1e-12)
    assert again["r2_adjusted"] == pytest.approx(1 - (1 - result["r2"]) * 89 / 86, abs=1e-12)
    # the per-window R^2 is the fit within that window alone
    for row in result["windows"].itertuples():
        part = slice(row.window * 30, row.window * 30 + 30)
        assert row.r2 == pytest.approx(lstsq_r2(x[part], y[part]), abs=1e-12)


def test_y_linear_in_sigma_gives_r2_near_one_and_the_smallest_p():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(300, 7))
    y = x @ rng.normal(size=7) + 0.01 * rng.normal(size=300)
    result = dx.bo_signal(trace(y, x), window=30, n_shuffles=200)
    assert result["r2"] > 0.99 and result["r2_adjusted"] > 0.99
    assert result["p"] == pytest.approx(1 / 201)
    assert result["null_q95"] < 0.1 < 0.99 < result["window_r2_median"]
    assert (result["windows"]["p"] == 1 / 201).all()


def test_y_independent_of_sigma_sits_inside_its_null():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(size=(600, 7)), rng.normal(size=600)
    result = dx.bo_signal(trace(y, x), window=30, n_shuffles=500)
    assert result["p"] > 0.05 and result["r2"] <= result["null_q95"]
    # chance R^2 of 7 regressors: about 7 / (n - 1), over the whole run and within each window
    assert result["null_mean"] == pytest.approx(7 / 599, rel=0.15)
    assert result["window_null_median"] == pytest.approx(7 / 29, rel=0.15)
    assert abs(result["r2_adjusted"]) < 0.02


def test_p_values_of_noise_are_roughly_uniform_over_seeds():
    ps = []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        ps.append(dx.bo_signal(trace(rng.normal(size=60), rng.uniform(size=(60, 3))), window=30,
                               n_shuffles=99, seed=seed)["p"])
    ps = np.asarray(ps)
    # 40 uniform p-values: about 4 below 0.1 (P(more than 11) < 0.001), mean 0.5 with sd 0.046
    assert (ps < 0.1).sum() <= 11 and 0.35 < ps.mean() < 0.65


def test_snr_of_iid_noise_is_about_one_over_sqrt_window():
    for window in (10, 30):
        ratios = [dx.bo_signal(trace(np.random.default_rng(seed).normal(size=20 * window),
                                     np.random.default_rng(seed + 1000).uniform(size=(20 * window, 2))),
                               window=window, n_shuffles=1)["snr"] for seed in range(60)]
        assert np.mean(ratios) == pytest.approx(1 / np.sqrt(window), rel=0.08)
    # y that moves between windows is well above it
    rng = np.random.default_rng(3)
    shifted = rng.normal(size=600) + np.repeat(rng.normal(size=20), 30)
    result = dx.bo_signal(trace(shifted, rng.uniform(size=(600, 2))), window=30, n_shuffles=1)
    assert result["snr"] > 4 * result["snr_noise"]


def test_windows_follow_the_bo_steps_and_skip_an_incomplete_one():
    rng = np.random.default_rng(4)
    frame = trace(rng.normal(size=75), rng.uniform(size=(75, 2))).sample(frac=1, random_state=0)  # any row order
    result = dx.bo_signal(frame, window=30, n_shuffles=10)
    assert result["windows"]["first_step"].tolist() == [1, 31] and result["windows"]["n"].tolist() == [30, 30]
    assert result["n"] == 75 and result["n_windows"] == 2
    # a non-finite y leaves its window with the other 29 points, as the GP does
    frame.loc[frame["step"] == 5, "y"] = np.nan
    assert dx.bo_signal(frame, window=30, n_shuffles=10)["windows"]["n"].tolist() == [29, 30]


def test_bo_signal_refuses_tables_without_y_or_sigma():
    with pytest.raises(ValueError, match="'y' column and 'sigma"):
        dx.bo_signal(pd.DataFrame({"step": [1, 2, 3], "y": [0.0, 1.0, 2.0]}), window=2)
    with pytest.raises(ValueError, match="window"):
        dx.bo_signal(trace(np.zeros(4), np.zeros((4, 1))), window=1)


# ----------------------------------------------------------------------------- missing_shares
def test_missing_shares_from_a_metrics_table_by_hand():
    table = pd.DataFrame({"step": [1, 2, 3, 4], "loss[race=A]": [0.1, np.nan, np.nan, 0.2],
                          "loss[race=B]": [0.1, 0.2, 0.3, 0.4], "loss[sex=F]": [np.nan] * 4, "y": 0.0})
    shares = dx.missing_shares(table)
    assert shares.to_dict() == {"race=A": 0.5, "race=B": 0.0, "sex=F": 1.0}
    with pytest.raises(ValueError, match="loss"):
        dx.missing_shares(table[["step", "y"]])


def test_missing_shares_from_groups_equal_those_of_the_logged_group_means():
    # the trainer's per-group means (NaN when absent) and the groups themselves give the same shares
    rng = np.random.default_rng(5)
    n_groups = [3, 2]
    groups = np.stack([rng.choice([-1, 0, 1, 2], p=[0.1, 0.1, 0.2, 0.6], size=(200, 8)),
                       rng.choice([0, 1], p=[0.9, 0.1], size=(200, 8))], axis=2)
    means, _ = step_group_stats(torch.rand(200, 8, dtype=torch.float64), torch.from_numpy(groups), n_groups)
    names = ["r=0", "r=1", "r=2", "s=0", "s=1"]
    table = pd.DataFrame(means.numpy(), columns=[f"loss[{n}]" for n in names])
    from_groups = dx.missing_shares(groups, n_groups, names)
    pd.testing.assert_series_equal(from_groups, dx.missing_shares(table))
    # a known answer: attribute 1 group 1 is absent when all 8 rows are group 0
    assert from_groups["s=1"] == np.mean((groups[:, :, 1] == 0).all(axis=1))
    assert 0.3 < from_groups["s=1"] < 0.6  # 0.9^8 = 0.43
    with pytest.raises(ValueError, match="shape"):
        dx.missing_shares(groups[:, :, 0], n_groups)


# ----------------------------------------------------------------------------- recovery
def test_the_simulation_feeds_update_the_planted_objective():
    # y that update() reports (less the offset) is exactly -(||sigma - sigma*||^2 + noise)
    optimum = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    groups, attribute = dx._planted_batch([3, 2, 2])
    assert attribute == 0
    noise = np.random.default_rng(6).normal(size=12)
    fbp = FairBayesianPerturbation([3, 2, 2], window=100, seed=0)
    run = dx._simulate(fbp, optimum, 8.0, noise, groups)
    expected = -(((run["sigma"] - optimum) ** 2).sum(axis=1) + noise)
    np.testing.assert_allclose(run["y"], expected, rtol=0, atol=1e-12)
    assert run["clipped"] == 0 and fbp.step == 12


@lru_cache(maxsize=None)
def small_curve() -> pd.DataFrame:
    """Zero noise and a noise far above the objective's range, 2 seeds, 8 BO events each (~10 s)."""
    return dx.recovery_curve(noise_levels=(0.0, 10.0), seeds=(0, 1), steps=240, progress=False, trace_y_sd=0.2)


def test_bo_finds_the_optimum_without_noise_and_beats_the_drift():
    curve = small_curve()
    clean = curve[curve["noise_rel"] == 0].set_index(["seed", "arm"])
    for seed in (0, 1):
        bo, drift = clean.loc[(seed, "bo")], clean.loc[(seed, "drift")]
        assert bo["bo_events"] == 8 and bo["bo_skipped"] == 0 and drift["bo_events"] == 0
        assert bo["candidate_distance"] < 0.15 and bo["final_distance"] < 0.2
        # the drift pulls every scale towards 0.5: distance about sqrt(7) / 2 = 1.32 from a corner
        assert drift["final_distance"] > 1.1
        assert bo["last_window_distance"] < 0.75 * drift["last_window_distance"]
    assert (curve["clipped"] == 0).all() and (curve["range"] == 7.0).all()


def test_bo_fed_noise_does_not_beat_the_drift():
    noisy = small_curve()[lambda c: c["noise_rel"] == 10.0].groupby("arm")
    means = noisy[["final_distance", "last_window_distance", "y_r2_adjusted"]].mean()
    assert means.loc["bo", "final_distance"] > means.loc["drift", "final_distance"] - 0.1
    assert means.loc["bo", "last_window_distance"] > means.loc["drift", "last_window_distance"] - 0.1
    assert means.loc["bo", "final_distance"] > 1.0
    assert abs(means.loc["bo", "y_r2_adjusted"]) < 0.05
    assert noisy.get_group("bo")["trace_range_equiv"].iloc[0] == pytest.approx(0.02)


def test_recovery_curve_refuses_bad_settings():
    with pytest.raises(ValueError, match="optimum"):
        dx.recovery_curve(optimum=[2.0] * 7, progress=False)
    with pytest.raises(ValueError, match="noise_levels"):
        dx.recovery_curve(noise_levels=(-1.0,), progress=False)
    with pytest.raises(ValueError, match="at least 2 groups"):
        dx.recovery_curve(n_groups=(1, 1), optimum=[0.0, 0.0], progress=False)


# ----------------------------------------------------------------------------- figures
def test_figures_draw_the_frames_they_are_given():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = small_curve()
    fig = dx.recovery_figure(curve, measured=1.0)
    bo_line = [line for line in fig.axes[0].get_lines() if line.get_label() == "BO + exploration"][0]
    expected = curve[curve["arm"] == "bo"].groupby("noise_rel")["final_distance"].mean()
    np.testing.assert_allclose(bo_line.get_ydata(), expected.to_numpy())
    plt.close(fig)

    rng = np.random.default_rng(7)
    signal = dx.bo_signal(trace(rng.normal(size=90), rng.uniform(size=(90, 2))), window=30, n_shuffles=20)
    fig = dx.signal_figure({"run a": signal, "run b": signal})
    assert len(fig.axes) == 4
    observed = [line for line in fig.axes[1].get_lines() if line.get_label() == "observed"][0]
    np.testing.assert_allclose(observed.get_ydata(), signal["windows"]["r2"].to_numpy())
    plt.close(fig)
