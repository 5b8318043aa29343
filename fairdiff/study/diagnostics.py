"""Does Fair Bayesian Perturbation's objective carry a signal BO can follow? (docs/method.md §5.7)

FBP's BO sees, per window, pairs (sigma used, y) with y = minus the summed group-mean loss gap of the
one batch that step used. If y barely depends on sigma, the GP fits noise and BO is random search;
and sigma drifts towards E[u] = 0.5 by the exploration mix alone, whatever BO does. These functions
measure both from a run's ``metrics.csv`` rows, and simulate how well the method's own
:class:`~fairdiff.fairness.FairBayesianPerturbation` recovers a known optimum at a given noise level:

- :func:`bo_signal`: R^2 of y on sigma against its permutation null, over the whole run and per BO
  window (what one GP fit sees), and the signal-to-noise of y between windows;
- :func:`missing_shares`: how often each group is absent from a batch (its mean loss then missing);
- :func:`recovery_curve`: distance to a planted optimum after BO versus after the drift alone, per
  noise level and seed;
- :func:`recovery_figure`, :func:`signal_figure`: the two pictures.

All of it is pure (no files); randomness comes from the ``seed`` arguments.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fairdiff.fairness import FairBayesianPerturbation
from fairdiff.progress import Progress

__all__ = ["bo_signal", "missing_shares", "recovery_curve", "recovery_figure", "signal_figure",
           "DEFAULT_NOISE_LEVELS"]

SIGMA_PREFIX, LOSS_PREFIX = "sigma[", "loss["
# Noise sd as a share of the objective's range over [0, 1]^K: from none to far above the range.
DEFAULT_NOISE_LEVELS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)


# ----------------------------------------------------------------------------- regression R^2
def _column_space(x: np.ndarray) -> np.ndarray:
    """Orthonormal basis [n, r] of the centred columns of x [n, p] (r = their rank): the least-squares
    fit with an intercept projects the centred y onto it."""
    centred = x - x.mean(axis=0)
    if centred.size == 0:
        return np.zeros((x.shape[0], 0))
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    keep = s > max(x.shape) * np.finfo(float).eps * (s[0] if len(s) else 0.0)
    return u[:, keep]


def _r2(basis: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R^2 of the regression (with intercept) of each column of y [n, m] on the basis' span; NaN
    for a constant column."""
    centred = y - y.mean(axis=0)
    total = (centred ** 2).sum(axis=0)
    explained = ((basis.T @ centred) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, explained / np.where(total > 0, total, 1.0), np.nan)


def _adjusted(r2: float, n: int, rank: int) -> float:
    """Adjusted R^2, 1 - (1 - R^2)(n - 1)/(n - rank - 1): about 0 for pure noise whatever n and the
    number of regressors, so runs of different lengths compare (plain R^2 of noise is about
    rank / (n - 1))."""
    return float(1 - (1 - r2) * (n - 1) / (n - rank - 1)) if n - rank - 1 > 0 else np.nan


def _permutation_r2(x: np.ndarray, y: np.ndarray, n_shuffles: int, rng: np.random.Generator
                    ) -> tuple[float, np.ndarray, float, int]:
    """(observed R^2, R^2 under ``n_shuffles`` random pairings of the rows of x with y, p-value,
    rank of the centred x). p = (1 + #(null >= observed)) / (n_shuffles + 1): a shuffle is as
    likely as the observed pairing under the null, so p is never 0."""
    basis = _column_space(x)
    observed = float(_r2(basis, y[:, None])[0])
    order = rng.permuted(np.tile(np.arange(len(y)), (n_shuffles, 1)), axis=1)
    null = _r2(basis, y[order].T)
    if not np.isfinite(observed):
        return observed, null, np.nan, basis.shape[1]
    p = (1 + int((null >= observed - 1e-12).sum())) / (n_shuffles + 1)
    return observed, null, p, basis.shape[1]


def _signal_frame(metrics: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows with a finite y and sigma, in step order, and the sigma columns; clear errors otherwise."""
    if not isinstance(metrics, pd.DataFrame):
        raise TypeError(f"metrics: expected a pandas DataFrame (a run's metrics.csv rows), "
                        f"got {type(metrics).__name__}")
    sigma_cols = [c for c in metrics.columns if str(c).startswith(SIGMA_PREFIX)]
    if "y" not in metrics.columns or not sigma_cols:
        raise ValueError("metrics: expected a 'y' column and 'sigma[...]' columns (a fairbo run's metrics.csv); "
                         f"got columns {list(metrics.columns)}")
    frame = metrics.sort_values("step") if "step" in metrics.columns else metrics
    frame = frame.reset_index(drop=True)
    if "step" not in frame.columns:
        frame = frame.assign(step=np.arange(1, len(frame) + 1))
    return frame, sigma_cols


def bo_signal(metrics: pd.DataFrame, window: int, n_shuffles: int = 1000, seed: int = 0) -> dict:
    """How much of y the sigma used explains, against what chance gives.

    ``metrics``: a fairbo run's metrics.csv rows (``y``, ``sigma[...]`` = the sigma used at the step,
    ``step`` 1-based; a recorded trace works too). Rows with a non-finite y or sigma are left out, as
    the GP leaves them out. Returns a dict:

    - ``r2``: R^2 of the least-squares fit of y on every sigma column (with intercept), all steps;
      ``null_r2`` (array), ``null_mean``, ``null_q95``: the same with the sigma rows shuffled
      ``n_shuffles`` times; ``p``: share of shuffles reaching the observed R^2 (+1 corrected);
      ``r2_adjusted``: the adjusted R^2 (about 0 for noise at any n; compares with
      :func:`recovery_curve`'s ``y_r2_adjusted``).
    - per BO window (steps w*window+1 .. (w+1)*window, complete windows only: the data one GP fit
      sees): ``windows`` (a frame: window, first_step, n, r2, null_mean, null_q95, p),
      ``window_r2_median`` and ``window_null_median`` (median over windows of the shuffled mean).
      With n points and p free scales chance alone gives about p / (n - 1).
    - ``snr``: sd of the window means of y over the mean within-window sd of y, and ``snr_noise`` =
      1 / sqrt(window), what i.i.d. noise gives; well above it means y moves between windows
      (from sigma, or from training progress: a trend shows up here too).
    - ``n``, ``n_windows``, ``n_sigma``, ``window``, ``n_shuffles``.

    The shuffles treat steps as exchangeable; a trend shared by y and sigma's drift would count as
    signal, so a null result here is not an artefact of trends.
    """
    if int(window) < 2:
        raise ValueError(f"window: expected at least 2 steps per BO window, got {window}")
    if int(n_shuffles) < 1:
        raise ValueError(f"n_shuffles: expected a positive number of shuffles, got {n_shuffles}")
    window, n_shuffles = int(window), int(n_shuffles)
    frame, sigma_cols = _signal_frame(metrics)
    window_id = (frame["step"].to_numpy(dtype=np.int64) - 1) // window
    complete = pd.Series(window_id).map(pd.Series(window_id).value_counts()).to_numpy() == window
    finite = np.isfinite(frame[["y", *sigma_cols]].to_numpy(dtype=float)).all(axis=1)
    x, y = frame[sigma_cols].to_numpy(dtype=float)[finite], frame["y"].to_numpy(dtype=float)[finite]
    if len(y) < 3:
        raise ValueError(f"metrics: expected at least 3 steps with a finite y and sigma, got {len(y)}")
    rng = np.random.default_rng(seed)
    r2, null, p, rank = _permutation_r2(x, y, n_shuffles, rng)

    rows, means, sds = [], [], []
    for w in np.unique(window_id[complete & finite]):
        part = finite & complete & (window_id == w)
        wx, wy = frame[sigma_cols].to_numpy(dtype=float)[part], frame["y"].to_numpy(dtype=float)[part]
        if len(wy) < 3:
            continue
        w_r2, w_null, w_p, _ = _permutation_r2(wx, wy, n_shuffles, rng)
        rows.append({"window": int(w), "first_step": int(w) * window + 1, "n": len(wy), "r2": w_r2,
                     "null_mean": float(np.nanmean(w_null)), "null_q95": float(np.nanquantile(w_null, 0.95)),
                     "p": w_p})
        means.append(wy.mean())
        sds.append(wy.std(ddof=1))
    windows = pd.DataFrame(rows, columns=["window", "first_step", "n", "r2", "null_mean", "null_q95", "p"])
    snr = float(np.std(means, ddof=1) / np.mean(sds)) if len(means) >= 2 and np.mean(sds) > 0 else np.nan
    return {"r2": r2, "r2_adjusted": _adjusted(r2, len(y), rank), "null_r2": null,
            "null_mean": float(np.nanmean(null)), "null_q95": float(np.nanquantile(null, 0.95)), "p": p,
            "windows": windows, "window_r2_median": float(windows["r2"].median()) if len(windows) else np.nan,
            "window_null_median": float(windows["null_mean"].median()) if len(windows) else np.nan,
            "snr": snr, "snr_noise": 1.0 / np.sqrt(window),
            "n": int(len(y)), "n_windows": int(len(windows)), "n_sigma": len(sigma_cols), "window": window,
            "n_shuffles": n_shuffles}


# ----------------------------------------------------------------------------- absent groups
def missing_shares(data, n_groups: Sequence[int] | None = None, names: Sequence[str] | None = None) -> pd.Series:
    """Share of steps (batches) from which each group was absent, so its mean loss, and its part in
    the gap, was missing from that step's y.

    ``data``: a run's metrics.csv rows (its ``loss[attr=group]`` columns are NaN when the group was
    absent), or the groups of every step, an integer array [S, B, A] (-1 = unknown) with ``n_groups``
    (and optionally ``names``, one per group in flat order; default ``a<i>=<g>``). Returns a Series
    indexed by group, named ``missing_share``."""
    if isinstance(data, pd.DataFrame):
        cols = [c for c in data.columns if str(c).startswith(LOSS_PREFIX)]
        if not cols:
            raise ValueError("missing_shares: expected 'loss[...]' columns (per-group mean losses, as in metrics.csv); "
                             f"got columns {list(data.columns)}")
        if len(data) == 0:
            raise ValueError("missing_shares: the table has no rows")
        shares = data[cols].isna().mean()
        shares.index = [c[len(LOSS_PREFIX):-1] for c in cols]
        return shares.rename("missing_share")
    if n_groups is None:
        raise ValueError("missing_shares: groups per step need n_groups (the number of groups of each attribute)")
    groups = np.asarray(data.cpu().numpy() if isinstance(data, torch.Tensor) else data)
    n_groups = [int(n) for n in n_groups]
    if groups.ndim != 3 or groups.shape[2] != len(n_groups) or groups.shape[0] == 0:
        raise ValueError(f"missing_shares: expected groups of shape [S, B, {len(n_groups)}] (steps, batch, attributes) "
                         f"with S >= 1, got {groups.shape}")
    if not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"missing_shares: expected integer group ids, got {groups.dtype}")
    if names is None:
        names = [f"a{a}={g}" for a, n in enumerate(n_groups) for g in range(n)]
    if len(names) != sum(n_groups):
        raise ValueError(f"missing_shares: expected {sum(n_groups)} names (one per group), got {len(names)}")
    shares = [float((~(groups[:, :, a] == g).any(axis=1)).mean()) for a, n in enumerate(n_groups) for g in range(n)]
    return pd.Series(shares, index=list(names), name="missing_share")


# ----------------------------------------------------------------------------- BO recovery
def _planted_batch(n_groups: Sequence[int]) -> tuple[torch.Tensor, int]:
    """Two samples that differ only in the first attribute with two or more groups (groups 0 and 1;
    every other attribute: group 0), and that attribute's index: with losses [0, v] the group gap
    FairBayesianPerturbation computes is |v|, the other attributes adding 0."""
    attribute = next((a for a, n in enumerate(n_groups) if n >= 2), None)
    if attribute is None:
        raise ValueError(f"n_groups: the simulation needs an attribute with at least 2 groups, got {list(n_groups)}")
    groups = torch.zeros(2, len(n_groups), dtype=torch.long)
    groups[1, attribute] = 1
    return groups, attribute


def _simulate(fbp: FairBayesianPerturbation, optimum: np.ndarray, offset: float, noise: np.ndarray,
              groups: torch.Tensor) -> dict:
    """Drive ``fbp.update`` for len(noise) steps on y(sigma) = -(||sigma - optimum||^2 + noise_t):
    each step's two-sample batch has losses [0, offset + ||sigma - optimum||^2 + noise_t], so the
    gap update() computes is that value (its absolute value, if ever negative; counted). The
    constant ``offset`` keeps it positive and does not change where the objective peaks (the GP
    standardises y)."""
    sigmas, ys, clipped, candidates, skipped = [], [], 0, [], 0
    for eps in noise:
        sigma = fbp.sigma.numpy()
        value = offset + float(((sigma - optimum) ** 2).sum()) + float(eps)
        clipped += value < 0
        record = fbp.update(torch.tensor([0.0, value], dtype=torch.float64), groups)
        sigmas.append(sigma)
        ys.append(record["y"] + offset)
        if record["bo"] is not None:
            if record["bo"]["candidate"] is not None:
                candidates.append(np.asarray(record["bo"]["candidate"]))
            else:
                skipped += 1
    return {"sigma": np.asarray(sigmas), "y": np.asarray(ys), "final": fbp.sigma.numpy(), "clipped": clipped,
            "candidates": candidates, "skipped": skipped}


def recovery_curve(noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS, seeds: Sequence[int] = (0, 1, 2),
                   n_groups: Sequence[int] = (3, 2, 2), optimum: Sequence[float] | None = None, steps: int = 300,
                   window: int = 30, exploitation: float = 0.95, beta: float = 0.1, num_restarts: int = 5,
                   raw_samples: int = 20, gp_likelihood: str = "closed_form", trace_y_sd: float | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """Can FBP's BO find a known optimum through noise as large as a real run's?

    The method's own :class:`FairBayesianPerturbation` (its ``update``: BO every ``window`` steps, the
    exploration mix every step) runs ``steps`` steps on y(sigma) = -||sigma - sigma*||^2 - noise, the
    noise N(0, (level * range)^2) with ``range`` = the objective's range over [0, 1]^K, for every
    ``noise_levels`` entry and seed. The squared distance is smooth, has one known maximiser and is
    close to linear along each scale (as a run's gap would be to first order), so the GP can model
    it; ``optimum`` = sigma* (default: 1 for the second group of the first attribute, race=Black on
    FairGenMed, the study's planted group; 0 elsewhere). The default 300 steps (10 BO events) is the
    study's training length. The control arm ``drift`` is the same object with no BO event in the
    run (its window longer than the run): the exploration mix alone, with the same draws u. Both
    arms and every level of a seed share the same standard-normal noise draws.

    One row per (noise level, seed, arm): ``noise_rel`` (noise sd / range), ``noise_sd``, ``range``,
    ``final_distance`` (||sigma after the last step - sigma*||), ``last_window_distance`` (of the mean
    sigma used over the last window), ``candidate_distance`` (of the last BO candidate; NaN for the
    drift), ``y_r2`` and ``y_r2_adjusted`` (R^2 of y on sigma over the run, :func:`bo_signal`'s
    statistic: a real run's adjusted R^2 places it on this curve), ``bo_events``, ``bo_skipped``,
    ``clipped`` (steps whose gap had to be folded, expected 0), and, given ``trace_y_sd`` (a real
    run's sd of y), ``trace_range_equiv`` = trace_y_sd / noise_rel: how wide (in that run's units of
    y) sigma's effect on y would have to be for the run's noise to sit at this level."""
    n_groups = [int(n) for n in n_groups]
    k = sum(n_groups)
    if optimum is None:
        optimum = np.zeros(k)
        optimum[1 if n_groups[0] >= 2 else 0] = 1.0
    optimum = np.asarray(optimum, dtype=float)
    if optimum.shape != (k,) or not ((optimum >= 0) & (optimum <= 1)).all():
        raise ValueError(f"optimum: expected {k} values in [0, 1] (one per group), got {optimum.tolist()}")
    if int(steps) < int(window):
        raise ValueError(f"steps: expected at least one BO window ({window} steps), got {steps}")
    levels = [float(v) for v in noise_levels]
    if not levels or min(levels) < 0:
        raise ValueError(f"noise_levels: expected non-negative noise levels, got {list(noise_levels)}")
    groups, _ = _planted_batch(n_groups)
    span = float((np.maximum(optimum, 1 - optimum) ** 2).sum())  # max of ||s - s*||^2 over the cube; min is 0
    settings = dict(exploitation=exploitation, beta=beta, num_restarts=num_restarts, raw_samples=raw_samples,
                    gp_likelihood=gp_likelihood)
    rows = []
    with Progress(total=len(levels) * len(seeds), desc="BO recovery", disable=not progress) as bar:
        for seed in seeds:
            z = np.random.default_rng([int(seed), 7]).standard_normal(int(steps))
            for level in levels:
                noise_sd = level * span
                for arm, arm_window in (("bo", window), ("drift", int(steps) + 1)):
                    fbp = FairBayesianPerturbation(n_groups, window=arm_window, seed=int(seed), **settings)
                    run = _simulate(fbp, optimum, 8.0 * noise_sd, noise_sd * z, groups)
                    last = run["candidates"][-1] if run["candidates"] else None
                    basis = _column_space(run["sigma"])
                    y_r2 = float(_r2(basis, run["y"][:, None])[0])
                    row = {"noise_rel": level, "noise_sd": noise_sd, "range": span, "seed": int(seed), "arm": arm,
                           "final_distance": float(np.linalg.norm(run["final"] - optimum)),
                           "last_window_distance": float(np.linalg.norm(run["sigma"][-window:].mean(axis=0) - optimum)),
                           "candidate_distance": np.nan if last is None else float(np.linalg.norm(last - optimum)),
                           "y_r2": y_r2, "y_r2_adjusted": _adjusted(y_r2, len(run["y"]), basis.shape[1]),
                           "bo_events": len(run["candidates"]) + run["skipped"], "bo_skipped": run["skipped"],
                           "clipped": run["clipped"]}
                    if trace_y_sd is not None:
                        row["trace_range_equiv"] = float(trace_y_sd) / level if level > 0 else np.inf
                    rows.append(row)
                bar.update(1)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- figures
def recovery_figure(curve: pd.DataFrame, measured: float | None = None):
    """Distance to the planted optimum against noise (sd over the objective's range), BO versus the
    exploration drift alone: one panel for the sigma after the last step, one for the mean sigma of
    the last window; a line per arm through the seed means, every seed as a dot. ``measured``: a
    noise level to mark (e.g. where a real run's R^2 falls on the curve)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    positive = curve.loc[curve["noise_rel"] > 0, "noise_rel"]
    for ax, column, title in zip(axes, ("final_distance", "last_window_distance"),
                                 ("sigma after the last step", "mean sigma over the last window")):
        for arm, color in (("bo", "tab:blue"), ("drift", "tab:grey")):
            part = curve[curve["arm"] == arm]
            if part.empty:
                continue
            ax.scatter(part["noise_rel"], part[column], color=color, alpha=0.35, s=14)
            mean = part.groupby("noise_rel")[column].mean()
            label = "BO + exploration" if arm == "bo" else "exploration drift only"
            ax.plot(mean.index, mean.to_numpy(), color=color, marker="o", label=label)
        if len(positive):
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        if measured is not None:
            ax.axvline(measured, color="tab:red", ls="--", lw=1, label="measured level")
        ax.set_xlabel("noise sd / objective range over [0, 1]^K")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("distance to the optimum sigma*")
    axes[0].legend(fontsize=8)
    fig.suptitle("Does BO find a known optimum through noise? (FairBayesianPerturbation on a planted objective)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def signal_figure(signal: dict | Mapping[str, dict]):
    """What a run's y says about sigma: the whole-run R^2 of y on sigma against its shuffled null
    (histogram), and each BO window's R^2 against that window's null (mean and 95th percentile).
    ``signal``: :func:`bo_signal`'s dict, or a mapping name -> dict (one row of panels each)."""
    import matplotlib.pyplot as plt

    signals = {"": signal} if "r2" in signal else dict(signal)
    fig, axes = plt.subplots(len(signals), 2, figsize=(10, 3.4 * len(signals)), squeeze=False)
    for (name, s), (left, right) in zip(signals.items(), axes):
        prefix = f"{name}: " if name else ""
        left.hist(s["null_r2"], bins=40, color="tab:grey", alpha=0.7, label="sigma shuffled")
        left.axvline(s["r2"], color="tab:red", lw=2, label=f"observed (p = {s['p']:.3g})")
        left.set_xlabel(f"R^2 of y on the {s['n_sigma']} sigma columns, {s['n']} steps")
        left.set_title(f"{prefix}whole run", fontsize=9)
        left.legend(fontsize=8)
        w = s["windows"]
        right.fill_between(w["window"], 0, w["null_q95"], color="tab:grey", alpha=0.25, label="null, 95th percentile")
        right.plot(w["window"], w["null_mean"], color="tab:grey", label="null mean")
        right.plot(w["window"], w["r2"], color="tab:red", marker="o", ms=3, lw=1, label="observed")
        right.set_xlabel(f"BO window ({s['window']} steps)")
        right.set_ylabel("R^2 within the window")
        right.set_title(f"{prefix}per window (what one GP fit sees)\ny's between-window SNR {s['snr']:.2f}, "
                        f"noise alone {s['snr_noise']:.2f}", fontsize=9)
        right.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- a recorded trace
def trace_report(trace: str | Path, out: str | Path, n_shuffles: int = 1000, seeds: Sequence[int] = (0, 1, 2)) -> Path:
    """The diagnostics of a recorded fairbo trace (a metrics-like CSV with ``y`` and ``sigma[...]``,
    ``window`` and ``seed`` columns, e.g. benchmarks/results/fbp_trace_mini.csv.gz) written as small
    tables into ``out`` with ``provenance.json``: ``bo_signal.csv`` (one row: R^2 of y on sigma and its
    shuffled null, per-window medians, SNR), ``bo_signal_windows.csv`` and ``recovery_curve.csv`` (the
    BO-recovery simulation at noise levels spanning the trace's y sd). What the README quotes about a
    run's BO signal comes from here: ``python -m fairdiff.study.diagnostics TRACE OUT``."""
    import datetime as dt
    import hashlib
    import json

    from fairdiff import io, report

    trace, out = Path(trace), Path(out)
    frame = pd.read_csv(trace)
    window = int(frame["window"].iloc[0]) if "window" in frame else 30
    signal = bo_signal(frame, window, n_shuffles=n_shuffles)
    row = {k: v for k, v in signal.items() if np.isscalar(v)}
    row["y_sd"] = float(frame["y"].std(ddof=1))
    tables = {"bo_signal": pd.DataFrame([row]), "bo_signal_windows": signal["windows"],
              "recovery_curve": recovery_curve(seeds=seeds, window=window, trace_y_sd=row["y_sd"])}
    for name, table in tables.items():
        io.write_csv(out / f"{name}.csv", table, float_format="%.6g")
    record = {"made_by": f"python -m fairdiff.study.diagnostics {trace} {out}", "trace": str(trace),
              "trace_sha256": hashlib.sha256(trace.read_bytes()).hexdigest(), **report.code_state(),
              "exported_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine_at_export": report.machine(),
              "sha256": {f"{n}.csv": hashlib.sha256((out / f"{n}.csv").read_bytes()).hexdigest() for n in tables}}
    io.write_text(out / "provenance.json", json.dumps(record, indent=1) + "\n")
    return out


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: python -m fairdiff.study.diagnostics TRACE.csv[.gz] OUT_FOLDER")
    print(trace_report(sys.argv[1], sys.argv[2]))
