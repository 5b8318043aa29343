"""The study's tables: what is read from each run, and the small CSVs the README quotes.

Per seed, from the evaluation tables of every arm (:mod:`fairdiff.stages`): overall FID, the gaps
over the planted attribute (FID, KID, size-matched FID), ES-FID, the classifier's AUC and ES-AUC,
and the **primary endpoint**, the planted group's FID minus the majority group's at matched n
(``group_reference_metrics``, metric ``study.analysis.endpoint``). From the training logs of the
FBP-type runs: sigma trajectories against the band the exploration drift alone gives, and the BO
diagnostics of :mod:`fairdiff.study.diagnostics`. Nothing here writes conclusions: the tables
carry numbers, intervals and the pre-registered verdicts; the README's prose is written by people.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fairdiff.study.arms import Planted
from fairdiff.study.statistics import bootstrap_t_test, t_interval

GROUP_METRICS = ("fid", "fid_debiased", "kid", "fid_matched", "kid_matched")  # per-group rows the study reads
# (metric of the study, per-group metric it is made from, how, label); rows whose per-group metric
# the evaluation table lacks are left out.
GAP_METRICS = (("fid_gap", "fid", "gap", "FID gap"), ("worst_fid", "fid", "worst", "worst-group FID"),
               ("planted_fid", "fid", "planted", "FID of the planted group"),
               ("kid_gap", "kid", "gap", "KID gap"), ("worst_kid", "kid", "worst", "worst-group KID"),
               ("fid_matched_gap", "fid_matched", "gap", "size-matched FID gap"))
# The group-sized evaluation's rows the study reads: planted group minus the majority, at matched n.
REFERENCE_METRICS = ("fid_minus_majority", "kid_minus_majority")


def _first_classifier(sem: pd.DataFrame) -> pd.DataFrame:
    return sem[sem["classifier"] == sem["classifier"].iloc[0]] if "classifier" in sem and len(sem) else sem


def _group_rows(gen: pd.DataFrame, arm: str, planted: Planted, metric: str) -> pd.DataFrame:
    """One row per real group of the planted attribute for ``metric`` (summary rows such as the
    equity-scaled, max - min or size-matched "all" rows are not groups)."""
    return gen[(gen["method"] == arm) & (gen["attribute"] == planted.attribute) & (gen["metric"] == metric)
               & gen["group"].isin(planted.groups)]


def metric_specs(planted: Planted, task: str, gen: pd.DataFrame | None = None,
                 reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The metrics the study reports: name, label, lower_is_better, family (generation or
    classifier). ``task`` is the classifier task read (the schema's first)."""
    present = set(gen["metric"]) if gen is not None else {"fid"}
    rows = [("fid", "overall FID", True, "generation"),
            ("es_fid", f"ES-FID ({planted.attribute})", True, "generation")]
    rows += [(name, f"{label} ({planted.attribute})" if how != "planted" else f"FID of {planted.group}", True,
              "generation") for name, source, how, label in GAP_METRICS if source in present]
    if reference is not None and len(reference):
        rows += [(m, f"{m.split('_')[0].upper()} of {planted.group} minus the majority's, matched n", True,
                  "generation") for m in REFERENCE_METRICS if m in set(reference["metric"])]
    rows += [("auc", f"{task} AUC", False, "classifier"),
             ("es_auc", f"{task} ES-AUC ({planted.attribute})", False, "classifier")]
    return pd.DataFrame(rows, columns=["metric", "label", "lower_is_better", "family"])


def _gap_values(gen: pd.DataFrame, arm: str, planted: Planted) -> dict:
    values = {}
    for name, source, how, _ in GAP_METRICS:
        v = _group_rows(gen, arm, planted, source).set_index("group")["value"].dropna()
        if len(v):
            values[name] = {"gap": v.max() - v.min(), "worst": v.max(), "planted": v.get(planted.group, np.nan)}[how]
    return values


def reference_values(reference: pd.DataFrame | None, arm: str, planted: Planted) -> dict:
    """The planted group's rows of the group-sized evaluation (``group_reference_metrics``) for one arm."""
    if reference is None or reference.empty:
        return {}
    mine = reference[(reference["method"] == arm) & (reference["attribute"] == planted.attribute)
                     & (reference["group"] == planted.group) & reference["metric"].isin(REFERENCE_METRICS)]
    return {r.metric: float(r.value) for r in mine.itertuples()}


def fallback_endpoint(gen: pd.DataFrame, arm: str, planted: Planted) -> tuple[float, str]:
    """Without the group-sized evaluation: the planted group's size-matched FID (or plain FID, where
    the table has no size-matched rows) minus that of the attribute's largest test group. Returns
    (value, the metric used)."""
    for metric in ("fid_matched", "fid"):
        rows = _group_rows(gen, arm, planted, metric).set_index("group")
        if planted.group in rows.index and len(rows) > 1:
            majority = rows["n_real"].idxmax() if "n_real" in rows else rows.index[0]
            return float(rows.loc[planted.group, "value"] - rows.loc[majority, "value"]), f"{metric}_minus_majority"
    return np.nan, "none"


def seed_metrics(tables: dict, planted: Planted, task: str, arms, endpoint: str) -> pd.DataFrame:
    """The study's metrics of every arm in one seed's tables (long: arm, metric, value), the
    primary endpoint as ``endpoint`` (``endpoint_source`` names where it came from). ``tables``:
    generation_metrics, equity_scaled_generation and semantic_metrics with the arm in their method
    or source column, and group_reference_metrics (None where that evaluation is missing)."""
    gen, es = tables["generation_metrics"], tables["equity_scaled_generation"]
    sem, ref = _first_classifier(tables["semantic_metrics"]), tables.get("group_reference_metrics")
    rows = []
    for arm in arms:
        overall = gen[(gen["method"] == arm) & (gen["attribute"] == "all") & (gen["metric"] == "fid")]
        values = {"fid": overall["value"].iloc[0], **_gap_values(gen, arm, planted),
                  **reference_values(ref, arm, planted)}
        e = es[(es["method"] == arm) & (es["metric"] == "es_fid") & (es["attribute"] == planted.attribute)]
        values["es_fid"] = e["value"].iloc[0] if len(e) else np.nan
        s = sem[(sem["source"] == arm) & (sem["task"] == task)]
        auc = s[(s["attribute"] == "all") & (s["metric"] == "auc")]
        es_auc = s[(s["attribute"] == planted.attribute) & (s["metric"] == "es_auc")]
        values["auc"] = auc["value"].iloc[0] if len(auc) else np.nan
        values["es_auc"] = es_auc["value"].iloc[0] if len(es_auc) else np.nan
        if endpoint in values:
            source = endpoint
            values["endpoint"] = values[endpoint]
        else:
            values["endpoint"], source = fallback_endpoint(gen, arm, planted)
        rows += [{"arm": arm, "metric": k, "value": float(v)} for k, v in values.items()]
        rows.append({"arm": arm, "metric": "endpoint_source", "value": np.nan, "source": source})
    frame = pd.DataFrame(rows)
    sources = frame[frame["metric"] == "endpoint_source"].set_index("arm")["source"]
    frame = frame[frame["metric"] != "endpoint_source"].drop(columns="source")
    return frame.assign(endpoint_source=frame["arm"].map(sources))


def planted_rows(gen: pd.DataFrame, planted: Planted, arm: str = "baseline") -> pd.DataFrame:
    """Every group of the planted attribute for ``arm``: FID, and where the table has them
    debiased and size-matched FID and KID, with intervals and group sizes; the planted group flagged."""
    rows = gen[(gen["method"] == arm) & (gen["attribute"] == planted.attribute)
               & gen["group"].isin(planted.groups) & gen["metric"].isin(GROUP_METRICS)]
    keep = [c for c in ("metric", "group", "n_real", "n_fake", "value", "boot_lo", "boot_hi") if c in rows]
    return rows[keep].assign(planted=rows["group"] == planted.group).reset_index(drop=True)


def authors_ttest_rows(sem: pd.DataFrame, task: str, planted: Planted, arms, reference: str) -> pd.DataFrame:
    """Per arm: the authors' bootstrap t-test of its classifier against the reference arm's (AUC of
    ``task``, ES-AUC over the planted attribute), from the bootstrap summaries."""
    sem = _first_classifier(sem)
    picks = {"auc": ("all", "auc"), "es_auc": (planted.attribute, "es_auc")}
    rows = []
    for name, (attribute, metric) in picks.items():
        part = sem[(sem["task"] == task) & (sem["attribute"] == attribute) & (sem["metric"] == metric)]
        part = part.set_index("source")
        if reference not in part.index:
            continue
        ref = part.loc[reference]
        for arm in arms:
            if arm == reference or arm not in part.index:
                continue
            r = part.loc[arm]
            rows.append({"arm": arm, "metric": name, "value": r["value"], "reference": ref["value"],
                         "boot_mean": r["boot_mean"], "boot_std": r["boot_std"], "n_boot": int(r["n_valid"]),
                         "reference_boot_mean": ref["boot_mean"], "reference_boot_std": ref["boot_std"],
                         "p_authors": bootstrap_t_test(r["boot_mean"], r["boot_std"], int(r["n_valid"]),
                                                       ref["boot_mean"], ref["boot_std"], int(ref["n_valid"]))})
    return pd.DataFrame(rows)


def wide_per_seed(per_seed: pd.DataFrame) -> pd.DataFrame:
    """One row per arm x seed with every metric as a column (and where the endpoint came from)."""
    wide = per_seed.pivot_table(index=["arm", "seed"], columns="metric", values="value", sort=False).reset_index()
    wide.columns.name = None
    sources = per_seed.drop_duplicates(["arm", "seed"]).set_index(["arm", "seed"])["endpoint_source"]
    return wide.assign(endpoint_source=[sources[(a, s)] for a, s in zip(wide["arm"], wide["seed"])])


def long_per_seed(wide: pd.DataFrame) -> pd.DataFrame:
    """The inverse of :func:`wide_per_seed`."""
    metrics = [c for c in wide.columns if c not in ("arm", "seed", "endpoint_source")]
    long = wide.melt(id_vars=["arm", "seed", "endpoint_source"], value_vars=metrics, var_name="metric")
    return long[["arm", "metric", "value", "seed", "endpoint_source"]]


# ----------------------------------------------------------------------------- sigma
def sigma_log(run) -> pd.DataFrame:
    """The sigma used at every step of a run (step, then one column per group, named
    ``attribute=group``), from its metrics.csv; empty without a log or sigma columns."""
    from pathlib import Path

    path = Path(run) / "metrics.csv"
    if not path.is_file():
        return pd.DataFrame()
    log = pd.read_csv(path)
    cols = [c for c in log.columns if c.startswith("sigma[")]
    if not cols:
        return pd.DataFrame()
    return log[["step", *cols]].rename(columns={c: c[len("sigma["):-1] for c in cols})


def final_sigmas(log: pd.DataFrame, tail: float = 0.1) -> pd.Series:
    """The perturbation scale a run ended with, per group: the mean sigma over the last ``tail`` of
    its steps."""
    if log.empty:
        return pd.Series(dtype=float)
    return log.drop(columns="step").iloc[-max(1, int(len(log) * tail)):].mean()


def drift_band(steps, sigma0: float, exploitation: float, z: float = 1.96) -> pd.DataFrame:
    """What the exploration mix alone does to a group's sigma: starting at ``sigma0`` and mixed
    every step as sigma <- r sigma + (1 - r) u, u ~ U(0, 1), the sigma used at step t (1-based,
    after t - 1 mixes) has mean r^(t-1) sigma0 + (1 - r^(t-1)) / 2 and variance
    (1 - r)^2 / 12 x (1 - r^(2(t-1))) / (1 - r^2). The band is mean +- ``z`` sd (its normal
    approximation; BO-free, so a trajectory inside it is what no BO would also give)."""
    t = np.asarray(steps, dtype=float) - 1
    r = float(exploitation)
    decay = r ** t
    mean = decay * sigma0 + (1 - decay) / 2
    var = (1 - r) ** 2 / 12 * ((1 - r ** (2 * t)) / (1 - r ** 2) if r < 1 else 0 * t)
    sd = np.sqrt(var)
    return pd.DataFrame({"step": np.asarray(steps), "band_mean": mean, "band_sd": sd, "band_lo": mean - z * sd,
                         "band_hi": mean + z * sd})


def sigma_tables(logs: dict, settings: dict, planted: Planted, max_points: int = 100):
    """(trajectories, summary) of the FBP-type runs' sigma against the drift band.

    ``logs``: {(arm, seed): :func:`sigma_log` frame}; ``settings``: {arm: (fbp.sigma_init,
    fbp.sigma_groups, fbp.exploitation)}, each group's band starting at its own sigma.
    trajectories: per arm, group and step (thinned to about ``max_points`` steps): the mean, min and
    max over seeds and the band. summary: per arm and group: the final sigma (mean over the last
    10 % of steps) as a mean over seeds with a 95 % t interval, the band at the last step, and the
    share of (seed, step) points outside the band (about 5 % if sigma only drifted)."""
    traj, summary = [], []
    for arm in dict.fromkeys(a for a, _ in logs):
        runs = {seed: log for (a, seed), log in logs.items() if a == arm and not log.empty}
        if not runs:
            continue
        sigma_init, sigma_groups, r = settings[arm]
        stacked = pd.concat([log.assign(seed=seed) for seed, log in runs.items()], ignore_index=True)
        last = int(stacked["step"].max())
        stride = max(1, int(np.ceil(last / max_points)))
        groups = [c for c in stacked.columns if c not in ("step", "seed")]
        for group in groups:
            sigma0 = float(sigma_groups.get(group, sigma_init))
            band = drift_band(sorted(stacked["step"].unique()), sigma0, r).set_index("step")
            per_step = stacked.groupby("step")[group].agg(["mean", "min", "max", "count"])
            kept = per_step[(per_step.index % stride == 0) | (per_step.index == 1) | (per_step.index == last)]
            traj.append(pd.DataFrame({"arm": arm, "group": group, "step": kept.index, "mean": kept["mean"].to_numpy(),
                                      "min": kept["min"].to_numpy(), "max": kept["max"].to_numpy(),
                                      "n_seeds": kept["count"].to_numpy()}).join(band, on="step"))
            b = band.reindex(stacked["step"])
            outside = ((stacked[group].to_numpy() < b["band_lo"].to_numpy())
                       | (stacked[group].to_numpy() > b["band_hi"].to_numpy()))
            finals = [final_sigmas(log)[group] for log in runs.values()]
            mean, lo, hi = t_interval(finals)
            summary.append({"arm": arm, "group": group, "planted": group == planted.column, "n_seeds": len(finals),
                            "final_sigma": mean, "final_lo": lo, "final_hi": hi, "sigma0": sigma0, "exploitation": r,
                            "band_mean": band.loc[last, "band_mean"], "band_lo": band.loc[last, "band_lo"],
                            "band_hi": band.loc[last, "band_hi"], "share_outside_band": float(outside.mean())})
    return (pd.concat(traj, ignore_index=True) if traj else pd.DataFrame(),
            pd.DataFrame(summary))


# ----------------------------------------------------------------------------- BO diagnostics
SIGNAL_FIELDS = ("r2", "null_mean", "null_q95", "p", "window_r2_median", "window_null_median", "snr", "snr_noise",
                 "n", "n_windows")


def bo_run_row(metrics: pd.DataFrame, window: int, planted: Planted, seed: int = 0) -> dict:
    """One FBP-type run's BO diagnostics: :func:`~fairdiff.study.diagnostics.bo_signal`'s numbers
    (R^2 of y on sigma against its shuffled null, per run and per BO window; the between-window
    SNR of y), the sd of y, and the share of batches missing each group."""
    from fairdiff.study.diagnostics import bo_signal, missing_shares

    signal = bo_signal(metrics, window, seed=seed)
    row = {k: signal[k] for k in SIGNAL_FIELDS}
    row["excess_r2"] = signal["r2"] - signal["null_mean"]
    row["y_sd"] = float(metrics["y"].std(ddof=1))
    shares = missing_shares(metrics)
    row["missing_planted"] = float(shares.get(planted.column, np.nan))
    row.update({f"missing[{g}]": float(v) for g, v in shares.items()})
    return row


def bo_pooled(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm, over its seeds: the mean of every run diagnostic, with a 95 % t interval for R^2,
    its excess over the shuffled null and the SNR, and the share of runs whose R^2 beats the
    null at p < 0.05."""
    rows = []
    for arm, part in runs.groupby("arm", sort=False):
        row = {"arm": arm, "n_runs": len(part)}
        for col in [c for c in part.columns if c not in ("arm", "seed")]:
            row[col] = float(part[col].mean())
        for col in ("r2", "excess_r2", "snr"):
            _, row[f"{col}_lo"], row[f"{col}_hi"] = t_interval(part[col])
        row["share_p_below_0.05"] = float((part["p"] < 0.05).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def measured_noise_level(curve: pd.DataFrame, r2: float) -> float:
    """Where a real run's R^2 of y on sigma falls on the BO-recovery curve: the noise level (sd over
    the objective's range) at which the simulated BO runs' mean R^2 equals ``r2``, by
    interpolation in log noise (NaN outside the curve's range)."""
    bo = curve[(curve["arm"] == "bo") & (curve["noise_rel"] > 0)].groupby("noise_rel")["y_r2"].mean()
    if len(bo) < 2 or not np.isfinite(r2):
        return np.nan
    x, y = np.log(bo.index.to_numpy()), bo.to_numpy()
    order = np.argsort(y)  # R^2 falls as noise grows
    if not (y.min() <= r2 <= y.max()):
        return np.nan
    return float(np.exp(np.interp(r2, y[order], x[order])))


# ----------------------------------------------------------------------------- printing
def fmt(value: float, digits: int = 3) -> str:
    return "nan" if not np.isfinite(value) else f"{value:.{digits}g}"


def format_ci(mean: float, lo: float, hi: float, digits: int = 3, sign: bool = False) -> str:
    m = f"{mean:+.{digits}g}" if sign and np.isfinite(mean) else fmt(mean, digits)
    return m if not np.isfinite(lo) else f"{m} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def plain_tables(result) -> str:
    """The study's main tables as plain text, for ``fairdiff study --table``: the primary endpoint
    (pre-registered verdicts), non-inferiority of overall FID and the secondary metrics, each
    number with its interval. No prose: the reader draws the conclusions."""
    p = result.primary.copy()
    primary = pd.DataFrame({
        "arm vs": p["arm"] + " vs " + p["against"], "family": p["family"], "n": p["n_seeds"],
        "change, % of baseline gap": [format_ci(m, lo, hi, sign=True) for m, lo, hi in
                                      zip(p["pct"], p["pct_lo"], p["pct_hi"])],
        "p (t)": p["p_ttest"].map(lambda v: fmt(v, 2)), "p Holm": p["p_holm"].map(lambda v: fmt(v, 2)),
        "TOST p": p["p_tost"].map(lambda v: fmt(v, 2)), "verdict": p["verdict"],
        "MDE %": p["mde_pct"].map(lambda v: fmt(v, 3)), "seeds needed": p["seeds_needed"].map(lambda v: fmt(v, 3))})
    n = result.noninferiority
    noninf = pd.DataFrame({
        "arm": n["arm"], "overall FID change": [format_ci(m, lo, hi, sign=True) for m, lo, hi in
                                                zip(n["diff"], n["lo"], n["hi"])],
        "% of baseline": [format_ci(m, lo, hi, sign=True) for m, lo, hi in zip(n["pct"], n["pct_lo"], n["pct_hi"])],
        "margin": n["margin"].map(fmt), "verdict": n["verdict"]})
    s = result.secondary
    secondary = s.assign(change=[format_ci(m, lo, hi, sign=True) for m, lo, hi in zip(s["diff"], s["lo"], s["hi"])])
    secondary = secondary.pivot_table(index="label", columns="arm", values="change", aggfunc="first", sort=False)
    gap = p["reference_gap"].iloc[0] if len(p) else np.nan
    margin = float(p["margin_pct"].iloc[0]) if len(p) else np.nan
    source = ", ".join(sorted(set(result.per_seed["endpoint_source"].dropna())))
    return "\n\n".join([
        f"Primary endpoint: {source} of {result.planted.group} ({result.planted.attribute}); baseline gap "
        f"{fmt(gap)} (mean over seeds). Equivalence margin +-{fmt(margin)} % of it.", primary.to_string(index=False),
        "Overall FID, non-inferiority (arm minus baseline, paired by seed, 95 % t interval):",
        noninf.to_string(index=False),
        "Secondary metrics (arm minus baseline, 95 % t interval, unadjusted):", secondary.to_string()]) + "\n"


def load_summary(times: pd.DataFrame) -> str:
    """The machine's 1-minute load average while the runs worked (median and range)."""
    if times.empty or "load1" not in times:
        return "unknown"
    return f"median {times['load1'].median():.2f} (range {times['load1'].min():.2f}-{times['load1'].max():.2f})"

