"""The controlled multi-seed study: does Fair Bayesian Perturbation narrow group gaps?

A profile (``configs/study.yaml``) plants a disparity in the synthetic data: one group is made rare
and different to draw (``data.synth``, stated in the dataset's ``synth_params.json``), and the data's
seed (``data.seed``) is fixed, so every training seed sees the same subjects. For each seed of
``study.seeds`` every method of ``methods`` is trained, sampled and evaluated through the ordinary
stages (:mod:`fairdiff.stages`, :func:`fairdiff.analysis.evaluate`): within a seed all methods start
from the same base pipeline and initial weights, and are scored by the same feature extractor and
classifiers. The statistics then pair the methods by seed (docs/method.md §5 for the metrics).

Layout (``<p>`` is the profile's name)::

    runs/study/<p>/seed-<k>/<dataset>-<p>/      one seed's runs: base/, <method>/, samples/, evaluation/
    runs/study/<p>/sweep/W<w>-r<r>/seed-<k>/    the fairbo sweep's runs; their base/ and feature
                                                extractor are links to the seed's (same stage keys)
    runs/study/<p>/results/*.csv                 every number the notebook and ``fairdiff study --table`` show
    figures/study/<p>/<dataset>/                 notebook 06's figures, each next to its data

Everything is resumable by construction: a finished stage is a cache hit, an unfinished training
run resumes from its newest checkpoint, so rerunning ``fairdiff study`` after a kill continues
where it stopped.

Statistics (all over seeds, n = number of seeds):

- per-method means with a 95 % t interval over seeds;
- paired differences, method minus baseline within a seed, with a 95 % t interval, an exact
  sign-flip permutation test (two-sided; with n seeds its smallest possible p-value is
  2 / 2^n, 0.0625 at n = 5) and a paired t-test; Holm's correction across the metrics reported
  for each method;
- the authors' bootstrap t-test form for the classifier metrics, per seed: a t-test between the
  bootstrap replicates of two classifiers' test AUCs (their ``bootstrap_t_test.py`` runs
  ``ttest_rel`` on the replicate lists). Bootstrap replicates of one test set are not independent
  observations, so this p-value shrinks with the number of replicates whatever the effect; it is
  shown next to the seed-level test to make that visible, not as evidence.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from fairdiff import io
from fairdiff.env import WORK_ROOT
from fairdiff.errors import ConfigError, DataError

FIGURES = WORK_ROOT / "figures" / "study"  # FigureWriter root: figures/study/<profile>/<dataset>/
RESULT_FILES = ("per_seed", "planted_gap", "method_means", "paired_effects", "authors_ttest", "fairbo_sigma",
                "run_times")


# ----------------------------------------------------------------------------- statistics
def t_interval(values, ci: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of ``values`` with a Student-t interval (NaN bounds for n < 2)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
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
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
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
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
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
    The replicates are treated as independent observations, which they are not (module
    docstring)."""
    if min(n_a, n_b) < 2 or not np.isfinite([mean_a, std_a, mean_b, std_b]).all():
        return np.nan
    if std_a == 0 and std_b == 0:
        return 0.0 if mean_a != mean_b else 1.0
    return float(scipy.stats.ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False).pvalue)


# ----------------------------------------------------------------------------- settings and folders
@dataclass(frozen=True)
class Planted:
    """The planted group: an attribute and one of its groups, as the evaluation tables name them
    (``groups``: all of the attribute's groups)."""

    attribute: str
    group: str
    groups: tuple[str, ...] = field(default=(), compare=False)


def study_root(cfg: dict, root: str | Path | None = None) -> Path:
    """``runs/study/<profile>`` (``root`` replaces ``runs/study``)."""
    return Path(root or WORK_ROOT / "runs" / "study") / cfg["profile"]


def planted_group(cfg: dict, schema) -> Planted:
    """``study.planted`` checked against the dataset's attributes."""
    p = cfg["study"]["planted"]
    names = {a.name: a for a in schema.attributes}
    if p["attribute"] not in names:
        raise ConfigError(f"study.planted.attribute: {p['attribute']!r} is not an attribute of {cfg['dataset']}; "
                          f"expected one of {', '.join(names)}")
    groups = names[p["attribute"]].groups
    if p["group"] not in groups:
        raise ConfigError(f"study.planted.group: {p['group']!r} is not a group of {p['attribute']}; expected one of "
                          f"{', '.join(groups)}")
    return Planted(p["attribute"], p["group"], tuple(groups))


def _check_fixed_data(cfg: dict) -> None:
    if cfg["data"].get("synthetic") and cfg["data"]["seed"] is None:
        raise ConfigError(f"profile {cfg['profile']}: data.seed: the study needs a fixed data seed (an integer), "
                          "so that every training seed sees the same subjects")


def seed_context(profile: str, seed: int, dataset: str | None = None, sets=(), root: str | Path | None = None,
                 sweep: tuple[int, float] | None = None):
    """The stage context of one training seed (and, with ``sweep`` = (W, r), of one sweep cell):
    the profile with ``seed`` set, in its own runs folder."""
    from fairdiff import stages

    cfg = stages.context(profile, dataset, sets=list(sets)).cfg
    base = study_root(cfg, root)
    if sweep is not None and tuple(sweep) != (cfg["fbp"]["window"], cfg["fbp"]["exploitation"]):
        w, r = sweep
        sets = [*sets, f"fbp.window={w}", f"fbp.exploitation={r}"]
        runs = base / "sweep" / f"W{w}-r{r:g}" / f"seed-{seed}"
    else:  # the profile's own (W, r): the main comparison's fairbo run is that cell
        runs = base / f"seed-{seed}"
    return stages.context(profile, dataset, seed=int(seed), sets=list(sets), runs=runs)


# ----------------------------------------------------------------------------- metrics of one seed
def _first_classifier(sem: pd.DataFrame) -> pd.DataFrame:
    return sem[sem["classifier"] == sem["classifier"].iloc[0]] if "classifier" in sem and len(sem) else sem


GROUP_METRICS = ("fid", "fid_debiased", "kid", "fid_matched", "kid_matched")  # per-group rows the study reads
# (metric of the study, per-group metric it is made from, how, label, lower is better); rows whose
# per-group metric the evaluation table lacks are left out (KID and size-matched FID are newer).
GAP_METRICS = (("fid_gap", "fid", "gap", "FID gap"), ("worst_fid", "fid", "worst", "worst-group FID"),
               ("planted_fid", "fid", "planted", "FID of the planted group"),
               ("kid_gap", "kid", "gap", "KID gap"), ("worst_kid", "kid", "worst", "worst-group KID"),
               ("fid_matched_gap", "fid_matched", "gap", "size-matched FID gap"))


def _group_rows(gen: pd.DataFrame, method: str, planted: Planted, metric: str) -> pd.DataFrame:
    """One row per real group of the planted attribute for ``metric`` (summary rows such as the
    equity-scaled, max - min or size-matched "all" rows are not groups)."""
    return gen[(gen["method"] == method) & (gen["attribute"] == planted.attribute) & (gen["metric"] == metric)
               & gen["group"].isin(planted.groups)]


def metric_specs(cfg: dict, schema, gen: pd.DataFrame | None = None) -> pd.DataFrame:
    """The metrics the study reports: name, label, lower_is_better, family (generation or
    classifier). The first-listed classifier task and the planted attribute are the ones read."""
    p = planted_group(cfg, schema)
    task = schema.classifier_tasks[0]
    present = set(gen["metric"]) if gen is not None else {"fid"}
    rows = [("fid", "overall FID", True, "generation")]
    rows += [(name, f"{label} ({p.attribute})" if how != "planted" else f"FID of {p.group}", True, "generation")
             for name, source, how, label in GAP_METRICS if source in present]
    rows.insert(2, ("es_fid", f"ES-FID ({p.attribute})", True, "generation"))
    rows += [("auc", f"{task} AUC", False, "classifier"),
             ("es_auc", f"{task} ES-AUC ({p.attribute})", False, "classifier")]
    return pd.DataFrame(rows, columns=["metric", "label", "lower_is_better", "family"])


def _gap_values(gen: pd.DataFrame, method: str, planted: Planted) -> dict:
    values = {}
    for name, source, how, _ in GAP_METRICS:
        v = _group_rows(gen, method, planted, source).set_index("group")["value"].dropna()
        if len(v):
            values[name] = {"gap": v.max() - v.min(), "worst": v.max(), "planted": v.get(planted.group, np.nan)}[how]
    return values


def seed_metrics(tables: dict, cfg: dict, schema, methods) -> pd.DataFrame:
    """The study's metrics of every method in one seed's evaluation tables (long: method, metric, value)."""
    p = planted_group(cfg, schema)
    gen, es = tables["generation_metrics"], tables["equity_scaled_generation"]
    sem = _first_classifier(tables["semantic_metrics"])
    task = schema.classifier_tasks[0]
    rows = []
    for method in methods:
        overall = gen[(gen["method"] == method) & (gen["attribute"] == "all") & (gen["metric"] == "fid")]
        values = {"fid": overall["value"].iloc[0], **_gap_values(gen, method, p)}
        e = es[(es["method"] == method) & (es["metric"] == "es_fid") & (es["attribute"] == p.attribute)]
        values["es_fid"] = e["value"].iloc[0] if len(e) else np.nan
        s = sem[(sem["source"] == method) & (sem["task"] == task)]
        auc = s[(s["attribute"] == "all") & (s["metric"] == "auc")]
        es_auc = s[(s["attribute"] == p.attribute) & (s["metric"] == "es_auc")]
        values["auc"] = auc["value"].iloc[0] if len(auc) else np.nan
        values["es_auc"] = es_auc["value"].iloc[0] if len(es_auc) else np.nan
        rows += [{"method": method, "metric": k, "value": float(v)} for k, v in values.items()]
    return pd.DataFrame(rows)


def planted_rows(gen: pd.DataFrame, planted: Planted, method: str = "baseline") -> pd.DataFrame:
    """Every group of the planted attribute for ``method``: FID, and where the table has them
    debiased and size-matched FID and KID, with intervals and group sizes; the planted group flagged."""
    rows = gen[(gen["method"] == method) & (gen["attribute"] == planted.attribute)
               & gen["group"].isin(planted.groups) & gen["metric"].isin(GROUP_METRICS)]
    keep = [c for c in ("metric", "group", "n_real", "n_fake", "value", "boot_lo", "boot_hi") if c in rows]
    return rows[keep].assign(planted=rows["group"] == planted.group).reset_index(drop=True)


def final_sigmas(run: Path, tail: float = 0.1) -> pd.DataFrame:
    """The perturbation scale fairbo ended with, per group (mean of sigma over the last ``tail`` of
    the steps, from the run's metrics.csv): whether BO singled out a group. Empty without a log."""
    path = Path(run) / "metrics.csv"
    if not path.is_file():
        return pd.DataFrame(columns=["group", "sigma"])
    log = pd.read_csv(path)
    cols = [c for c in log.columns if c.startswith("sigma[")]
    last = log[cols].iloc[-max(1, int(len(log) * tail)):].mean()
    return pd.DataFrame({"group": [c[len("sigma["):-1] for c in cols], "sigma": last.to_numpy()})


def authors_ttest_rows(sem: pd.DataFrame, schema, planted: Planted, methods) -> pd.DataFrame:
    """Per method: the authors' bootstrap t-test of its classifier against the baseline's (AUC of
    the first task, ES-AUC over the planted attribute), from the bootstrap summaries."""
    sem = _first_classifier(sem)
    task = schema.classifier_tasks[0]
    picks = {"auc": ("all", "auc"), "es_auc": (planted.attribute, "es_auc")}
    rows = []
    for name, (attribute, metric) in picks.items():
        part = sem[(sem["task"] == task) & (sem["attribute"] == attribute) & (sem["metric"] == metric)]
        part = part.set_index("source")
        if "baseline" not in part.index:
            continue
        ref = part.loc["baseline"]
        for method in methods:
            if method == "baseline" or method not in part.index:
                continue
            r = part.loc[method]
            rows.append({"method": method, "metric": name, "value": r["value"], "baseline": ref["value"],
                         "boot_mean": r["boot_mean"], "boot_std": r["boot_std"], "n_boot": int(r["n_valid"]),
                         "baseline_boot_mean": ref["boot_mean"], "baseline_boot_std": ref["boot_std"],
                         "p_authors": bootstrap_t_test(r["boot_mean"], r["boot_std"], int(r["n_valid"]),
                                                       ref["boot_mean"], ref["boot_std"], int(ref["n_valid"]))})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- across seeds
def method_means(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per method and metric: mean over seeds with a 95 % t interval."""
    rows = []
    for (method, metric), part in per_seed.groupby(["method", "metric"], sort=False):
        mean, lo, hi = t_interval(part["value"])
        rows.append({"method": method, "metric": metric, "n_seeds": int(part["value"].notna().sum()),
                     "mean": mean, "lo": lo, "hi": hi, "sd": float(part["value"].std(ddof=1))})
    return pd.DataFrame(rows)


def paired_effects(per_seed: pd.DataFrame, specs: pd.DataFrame, reference: str = "baseline") -> pd.DataFrame:
    """Per method and metric: the mean paired difference (method minus ``reference``, same seed)
    with a 95 % t interval, the sign-flip and paired-t p-values and Holm's correction of the
    sign-flip p-values across the metrics of that method. ``better`` says whether the mean
    difference points the good way (lower FID, higher AUC)."""
    wide = per_seed.pivot_table(index=["seed", "metric"], columns="method", values="value", sort=False)
    rows = []
    for method in [m for m in dict.fromkeys(per_seed["method"]) if m != reference]:
        block = []
        for spec in specs.itertuples():
            if spec.metric not in wide.index.get_level_values("metric"):
                continue
            part = wide.xs(spec.metric, level="metric")
            d = (part[method] - part[reference]).dropna().to_numpy()
            mean, lo, hi = t_interval(d)
            block.append({"method": method, "metric": spec.metric, "label": spec.label, "family": spec.family,
                          "lower_is_better": spec.lower_is_better, "n_seeds": len(d), "diff": mean, "lo": lo,
                          "hi": hi, "better": bool(mean < 0) if spec.lower_is_better else bool(mean > 0),
                          "n_better": int(((d < 0) if spec.lower_is_better else (d > 0)).sum()),
                          "p_signflip": sign_flip_pvalue(d), "p_ttest": paired_t_pvalue(d)})
        adjusted = holm([b["p_signflip"] for b in block])
        adjusted_t = holm([b["p_ttest"] for b in block])
        for b, p, pt in zip(block, adjusted, adjusted_t):
            b["p_holm"], b["p_ttest_holm"] = p, pt
        rows += block
    return pd.DataFrame(rows)


def planted_summary(planted: pd.DataFrame) -> pd.DataFrame:
    """Per metric (FID, KID): the planted group's value minus the largest other group's, per seed,
    and whether its interval lies above every other group's."""
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


# ----------------------------------------------------------------------------- the runner
@dataclass
class StudyResult:
    """Every table of the study (also written to ``folder``)."""

    cfg: dict
    planted: Planted
    folder: Path
    per_seed: pd.DataFrame
    planted_gap: pd.DataFrame
    method_means: pd.DataFrame
    paired_effects: pd.DataFrame
    authors_ttest: pd.DataFrame
    fairbo_sigma: pd.DataFrame
    run_times: pd.DataFrame
    specs: pd.DataFrame


def _say(line: str) -> None:
    print(line, flush=True)


def shown(path: Path) -> str:
    """A path as the reader should see it: relative to the work folder when inside it."""
    path = Path(path)
    return str(path.relative_to(WORK_ROOT)) if path.is_relative_to(WORK_ROOT) else str(path)


def _timed(times: list, seed: int, method: str, stage: str, fn):
    from fairdiff.progress import announce

    announce(f"study seed {seed}", f"{method} {stage}")
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    times.append({"seed": seed, "method": method, "stage": stage, "seconds": round(time.perf_counter() - t0, 1),
                  "cpu_seconds": round(time.process_time() - c0, 1), "load1": round(os.getloadavg()[0], 2)})
    return out


def _merge_times(path: Path, new: pd.DataFrame, cached_below_s: float = 2.0) -> pd.DataFrame:
    """Keep the measured time of work that this invocation found cached (a rerun would otherwise
    overwrite a real time with a cache hit's)."""
    if not path.is_file() or new.empty:
        return new
    old = pd.read_csv(path).set_index(["seed", "method", "stage"])
    merged = new.set_index(["seed", "method", "stage"])
    for key in merged.index:
        if merged.loc[key, "seconds"] < cached_below_s and key in old.index:
            cols = [c for c in ("seconds", "cpu_seconds", "load1") if c in old.columns]
            merged.loc[key, cols] = old.loc[key, cols].to_numpy()
    return merged.reset_index()


def run_study(profile: str = "study", dataset: str | None = None, sets=(), seeds=None, methods=None,
              root: str | Path | None = None, progress: bool = False) -> StudyResult:
    """Train, sample and evaluate every method for every seed of ``study.seeds`` through the
    stages (cached work is reused), then compute and write the study's tables."""
    from fairdiff import analysis, stages

    first = stages.context(profile, dataset, sets=list(sets))
    cfg, schema = first.cfg, first.schema
    _check_fixed_data(cfg)
    planted = planted_group(cfg, schema)
    seeds = list(cfg["study"]["seeds"] if seeds is None else seeds)
    methods = list(methods or cfg["methods"])
    if "baseline" not in methods:
        raise ConfigError(f"profile {cfg['profile']}: methods: the study compares against baseline; add it")
    folder = study_root(cfg, root) / "results"
    times, per_seed, planted_frames, authors, sigmas = [], [], [], [], []
    t_all = time.perf_counter()
    # Every seed's config is resolved before any work, so the whole study runs on one reading of the profiles.
    contexts = [seed_context(profile, seed, dataset, sets, root) for seed in seeds]
    for i, (seed, ctx) in enumerate(zip(seeds, contexts), 1):
        _timed(times, seed, "all", "base", lambda: stages.base(ctx, progress))  # the seed's VAE
        for method in methods:
            tag = f"seed {i}/{len(seeds)} (seed={seed}) · {method}"
            t0 = time.perf_counter()
            _timed(times, seed, method, "train", lambda: stages.trained(ctx, method, progress))
            _timed(times, seed, method, "sample", lambda: (stages.sampled(ctx, method, "test", progress),
                                                           stages.sampled(ctx, method, "train", progress)))
            _timed(times, seed, method, "evaluate", lambda: (stages.generation_table(ctx, method),
                                                             stages.semantic_table(ctx, method)))
            _say(f"{tag} · {time.perf_counter() - t0:.0f} s · "
                 + ", ".join(f"{t['stage']} {t['seconds']:.0f} s" for t in times[-3:])
                 + f" · load {os.getloadavg()[0]:.1f} · {(time.perf_counter() - t_all) / 60:.1f} min so far")
        tables = _timed(times, seed, "all", "evaluate", lambda: analysis.evaluate(ctx, methods))
        per_seed.append(seed_metrics(tables, ctx.cfg, schema, methods).assign(seed=seed))
        planted_frames.append(planted_rows(tables["generation_metrics"], planted).assign(seed=seed))
        authors.append(authors_ttest_rows(tables["semantic_metrics"], schema, planted, methods).assign(seed=seed))
        if "fairbo" in methods:
            sigmas.append(final_sigmas(ctx.layout.method("fairbo")).assign(seed=seed))
    per_seed = pd.concat(per_seed, ignore_index=True)
    gen_any = tables["generation_metrics"]
    specs = metric_specs(cfg, schema, gen_any)
    result = StudyResult(cfg, planted, folder, per_seed, pd.concat(planted_frames, ignore_index=True),
                         method_means(per_seed), paired_effects(per_seed, specs),
                         pd.concat(authors, ignore_index=True),
                         pd.concat(sigmas, ignore_index=True) if sigmas else pd.DataFrame(columns=["group", "sigma"]),
                         _merge_times(folder / "run_times.csv", pd.DataFrame(times)), specs)
    write_results(result)
    for metric, part in planted_summary(result.planted_gap).groupby("metric", sort=False):
        mean, lo, hi = t_interval(part["excess"])
        _say(f"planted gap check ({metric}, baseline): {planted.group} minus the worst other {planted.attribute} group "
             f"{format_ci(mean, lo, hi, sign=True)}; {planted.group} worst in {int(part['is_worst'].sum())} of "
             f"{len(part)} seeds, interval above all others in {int(part['separated'].sum())}")
    _say(f"study {cfg['profile']}: {len(seeds)} seeds x {len(methods)} methods in "
         f"{(time.perf_counter() - t_all) / 60:.1f} min; results in {shown(folder)}")
    return result


def write_results(result: StudyResult) -> None:
    for name in RESULT_FILES:
        io.write_csv(result.folder / f"{name}.csv", getattr(result, name), float_format="%.6g")
    io.write_csv(result.folder / "metrics.csv", result.specs)


def load_results(profile: str = "study", dataset: str | None = None, sets=(), root: str | Path | None = None):
    """The study's tables as written by :func:`run_study` (for ``fairdiff study --table``)."""
    from fairdiff import stages

    ctx = stages.context(profile, dataset, sets=list(sets))
    folder = study_root(ctx.cfg, root) / "results"
    missing = [n for n in (*RESULT_FILES, "metrics") if not (folder / f"{n}.csv").is_file()]
    if missing:
        raise DataError(folder, None, f"the study's results ({', '.join(m + '.csv' for m in missing)}): run the study "
                        f"first (fairdiff study --profile {profile})", "missing")
    frames = {n: pd.read_csv(folder / f"{n}.csv") for n in (*RESULT_FILES, "metrics")}
    frames["specs"] = frames.pop("metrics")
    return StudyResult(ctx.cfg, planted_group(ctx.cfg, ctx.schema), folder, **frames)


# ----------------------------------------------------------------------------- the W x r sweep
def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` (relative), so a sweep run reuses the seed's base pipeline or feature
    extractor instead of training an identical one (their stage keys do not depend on fbp)."""
    if link.is_symlink() or link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)


def _share_seed_work(main, cell) -> None:
    """Point a sweep cell's base/, feature extractor and decoded real images at the seed's (built
    first if missing)."""
    from fairdiff import stages

    stages.base(main)
    stages.domain_encoder(main)
    _link(main.layout.base, cell.layout.base)
    for folder in [*main.layout.evaluation.glob("encoder-*"), main.layout.evaluation / "cache"]:
        if folder.exists():
            _link(folder, cell.layout.evaluation / folder.name)


def sweep_grid(cfg: dict) -> list[tuple[int, float]]:
    s = cfg["study"]
    return [(w, r) for w in s["sweep_window"] for r in s["sweep_exploitation"]]


def run_sweep(profile: str = "study", dataset: str | None = None, sets=(), root: str | Path | None = None,
              progress: bool = False) -> pd.DataFrame:
    """fairbo for every (W, r) of the sweep grid and every seed of ``study.sweep_seeds``, each
    compared with the baseline of the same seed; returns and writes the per-cell summary
    (``sweep_cells.csv``; per seed: ``sweep_per_seed.csv``). The gap reduction is the baseline's
    FID gap over the planted attribute minus fairbo's (positive: fairbo's groups are closer)."""
    from fairdiff import stages

    first = stages.context(profile, dataset, sets=list(sets))
    cfg, schema = first.cfg, first.schema
    _check_fixed_data(cfg)
    planted = planted_group(cfg, schema)
    seeds, grid = list(cfg["study"]["sweep_seeds"]), sweep_grid(cfg)
    folder = study_root(cfg, root) / "results"
    rows, t_all, n_done = [], time.perf_counter(), 0
    # every run's config resolved before any work: the whole sweep runs on one reading of the profiles
    contexts = {(seed, cell): seed_context(profile, seed, dataset, sets, root, sweep=cell)
                for seed in seeds for cell in [None, *grid]}
    for seed in seeds:
        main = contexts[(seed, None)]
        base_gen = stages.generation_table(main, "baseline")
        for w, r in grid:
            n_done += 1
            t0 = time.perf_counter()
            cell = contexts[(seed, (w, r))]
            if cell.layout.root != main.layout.root:
                _share_seed_work(main, cell)
            gen = pd.concat([base_gen, stages.generation_table(cell, "fairbo")], ignore_index=True)
            for metric in ("fid", "kid", "fid_matched"):
                gaps = {m: _group_rows(gen, m, planted, metric)["value"].dropna() for m in ("baseline", "fairbo")}
                if len(gaps["fairbo"]) == 0 or len(gaps["baseline"]) == 0:
                    continue
                base_metric = metric.replace("_matched", "")
                overall = gen[(gen["attribute"] == "all") & (gen["group"] == "all")
                              & (gen["metric"] == base_metric)].set_index("method")["value"]
                rows.append({"window": w, "exploitation": r, "seed": seed, "metric": metric,
                             "gap_baseline": gaps["baseline"].max() - gaps["baseline"].min(),
                             "gap_fairbo": gaps["fairbo"].max() - gaps["fairbo"].min(),
                             "overall_baseline": overall.get("baseline", np.nan),
                             "overall_fairbo": overall.get("fairbo", np.nan)})
            _say(f"sweep {n_done}/{len(seeds) * len(grid)} · seed {seed} · fairbo W={w} r={r:g} · "
                 f"{time.perf_counter() - t0:.0f} s · load {os.getloadavg()[0]:.1f} · "
                 f"{(time.perf_counter() - t_all) / 60:.1f} min so far")
    per_seed = pd.DataFrame(rows)
    per_seed["reduction"] = per_seed["gap_baseline"] - per_seed["gap_fairbo"]
    cells = sweep_cells(per_seed)
    io.write_csv(folder / "sweep_per_seed.csv", per_seed, float_format="%.6g")
    io.write_csv(folder / "sweep_cells.csv", cells, float_format="%.6g")
    _say(f"sweep {cfg['profile']}: {len(grid)} cells x {len(seeds)} seeds in "
         f"{(time.perf_counter() - t_all) / 60:.1f} min")
    return cells


def sweep_cells(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per (metric, W, r): the mean gap reduction over seeds with a 95 % t interval and the
    sign-flip p-value, and the mean change of overall quality (fairbo minus baseline)."""
    rows = []
    for (metric, w, r), part in per_seed.groupby(["metric", "window", "exploitation"], sort=False):
        mean, lo, hi = t_interval(part["reduction"])
        cost = t_interval(part["overall_fairbo"] - part["overall_baseline"])
        rows.append({"metric": metric, "window": w, "exploitation": r, "n_seeds": len(part), "reduction": mean,
                     "lo": lo, "hi": hi, "p_signflip": sign_flip_pvalue(part["reduction"]),
                     "overall_change": cost[0], "overall_change_lo": cost[1], "overall_change_hi": cost[2]})
    return pd.DataFrame(rows)


def load_sweep(profile: str = "study", dataset: str | None = None, sets=(), root: str | Path | None = None):
    """The sweep's per-cell table, or None when the sweep has not been run."""
    from fairdiff import stages

    path = study_root(stages.context(profile, dataset, sets=list(sets)).cfg, root) / "results" / "sweep_cells.csv"
    return pd.read_csv(path) if path.is_file() else None


# ----------------------------------------------------------------------------- reporting
def _fmt(value: float, digits: int = 3) -> str:
    return "nan" if not np.isfinite(value) else f"{value:.{digits}g}"


def format_ci(mean: float, lo: float, hi: float, digits: int = 3, sign: bool = False) -> str:
    m = f"{mean:+.{digits}g}" if sign and np.isfinite(mean) else _fmt(mean, digits)
    return m if not np.isfinite(lo) else f"{m} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _p(p: float) -> str:
    return "nan" if not np.isfinite(p) else (f"{p:.2g}" if p >= 0.001 else f"{p:.1e}")


def readme_table(result: StudyResult, sweep: pd.DataFrame | None = None) -> str:
    """The README's "Does it work?" tables (markdown): per metric, the baseline's mean over seeds and
    every method's paired difference from it (95 % t interval; Holm-adjusted sign-flip p); with
    ``sweep``, the W x r grid of fairbo's FID-gap reduction."""
    from fairdiff.report import markdown_table

    means = result.method_means.set_index(["method", "metric"])
    effects = result.paired_effects.set_index(["method", "metric"])
    methods = [m for m in dict.fromkeys(result.per_seed["method"]) if m != "baseline"]
    rows = []
    for spec in result.specs.itertuples():
        if ("baseline", spec.metric) not in means.index:
            continue
        b = means.loc[("baseline", spec.metric)]
        row = {"metric": f"{spec.label} ({'lower' if spec.lower_is_better else 'higher'} is better)",
               "baseline": format_ci(b["mean"], b["lo"], b["hi"])}
        for m in methods:
            e = effects.loc[(m, spec.metric)]
            row[f"{m} − baseline"] = f"{format_ci(e['diff'], e['lo'], e['hi'], sign=True)}; p {_p(e['p_holm'])}"
        rows.append(row)
    n = int(result.per_seed["seed"].nunique())
    note = (f"Mean over {n} seeds [95 % t interval]; differences are paired by seed; p: exact sign-flip test over "
            f"seeds, Holm-adjusted across the {len(rows)} metrics of each method (smallest possible p with {n} seeds: "
            f"{2 / 2 ** n:.3g}). From `{shown(result.folder)}`.")
    out = markdown_table(pd.DataFrame(rows)) + "\n\n" + note + "\n"
    cells = None if sweep is None else sweep[sweep["metric"] == "fid"]
    if cells is not None and len(cells):
        grid = cells.assign(text=[f"{format_ci(m, lo, hi, sign=True)}; overall FID {c:+.3g}" for m, lo, hi, c in
                                  zip(cells["reduction"], cells["lo"], cells["hi"], cells["overall_change"])])
        grid = grid.pivot(index="window", columns="exploitation", values="text")
        grid = grid.rename(columns=lambda r: f"r = {r:g}").reset_index().rename(columns={"window": "W"})
        out += ("\n" + markdown_table(grid) + "\n\n"
                f"fairbo's {result.planted.attribute} FID-gap reduction (baseline gap minus fairbo gap, same seed; "
                f"positive = narrower), mean [95 % t interval] over {int(cells['n_seeds'].max())} seed(s), and the "
                "mean change of overall FID (fairbo minus baseline; positive = worse). From `"
                f"{shown(result.folder / 'sweep_cells.csv')}`.\n")
    return out


def _effect_sentence(e, baseline_mean: float) -> str:
    """A paired effect in words: direction, size (also relative to the baseline) and evidence."""
    rel = f" ({100 * e['diff'] / baseline_mean:+.0f} % of the baseline's {_fmt(baseline_mean)})" \
        if np.isfinite(baseline_mean) and baseline_mean != 0 else ""
    if e["hi"] < 0 or e["lo"] > 0:
        verdict = "better" if e["better"] else "worse"
        claim = f"**{verdict}**: the interval excludes 0"
    else:
        claim = "**not distinguishable from 0**: the interval includes it"
    return (f"{e['label']}: {format_ci(e['diff'], e['lo'], e['hi'], sign=True)}{rel}, {claim}; "
            f"better in {e['n_better']} of {e['n_seeds']} seeds; sign-flip p = {_p(e['p_signflip'])} "
            f"(Holm {_p(e['p_holm'])}), paired t p = {_p(e['p_ttest'])}")


def reading(result: StudyResult, sweep: pd.DataFrame | None = None) -> str:
    """What the study shows and does not show, written from its numbers (markdown)."""
    p, n = result.planted, int(result.per_seed["seed"].nunique())
    means = result.method_means.set_index(["method", "metric"])
    effects = result.paired_effects.set_index(["method", "metric"])
    lines = []
    summary = planted_summary(result.planted_gap)
    fid = summary[summary["metric"] == "fid"]
    if len(fid):
        ex = t_interval(fid["excess"])
        visible = ex[1] > 0 if np.isfinite(ex[1]) else bool(fid["is_worst"].all())
        lines.append(
            f"- **Planted gap.** In the baseline, {p.attribute}={p.group} has FID {_fmt(fid['planted'].mean())} on "
            f"average over {n} seeds against {_fmt(fid['worst_other'].mean())} for the worst other {p.attribute} group "
            f"(difference {format_ci(*ex, sign=True)}); it is the worst group in {int(fid['is_worst'].sum())} of "
            f"{len(fid)} seeds and its interval lies above every other group's in {int(fid['separated'].sum())}. "
            + ("The planted disparity is **visible** to the evaluation." if visible else
               "The planted disparity is **not clearly visible** at this scale, so a method has little to narrow."))
        rows = result.planted_gap
        for metric, what in (("fid_matched", "Size-matched FID (every group subsampled to the same size)"),
                             ("kid", "KID (unbiased at any size)")):
            part = rows[rows["metric"] == metric]
            if len(part):
                per_group = part.groupby("group", sort=False)["value"].mean()
                lines.append(f"  {what} per {p.attribute} group, mean over seeds: "
                             + ", ".join(f"{g} {_fmt(v)}" for g, v in per_group.items()) + ".")
    if ("fairbo", "fid_gap") in effects.index:
        gap = effects.loc[("fairbo", "fid_gap")]
        base_gap = means.loc[("baseline", "fid_gap"), "mean"]
        narrows = gap["hi"] < 0
        widens = gap["lo"] > 0
        answer = ("**Yes, here fairbo narrows the gap**" if narrows else
                  "**No, here fairbo widens the gap**" if widens else
                  "**Not detectably: fairbo's effect on the gap is indistinguishable from 0 here**; the mean "
                  f"difference points to a {'wider' if gap['diff'] > 0 else 'narrower'} gap")
        lines.append(f"- **Does fairbo narrow the gap?** {answer}. " + _effect_sentence(gap, base_gap) + ".")
        if not (narrows or widens) and np.isfinite(gap["lo"]) and base_gap:
            lines.append(f"  With {n} seeds the data are compatible with anything from a "
                         f"{100 * max(0.0, -gap['lo']) / base_gap:.0f} % narrower to a "
                         f"{100 * max(0.0, gap['hi']) / base_gap:.0f} % wider gap than the baseline's.")
        for metric in ("fid", "auc", "es_fid", "worst_fid", "planted_fid", "es_auc", "kid_gap"):
            if ("fairbo", metric) in effects.index:
                lines.append("  - " + _effect_sentence(effects.loc[("fairbo", metric)],
                                                       means.loc[("baseline", metric), "mean"]) + ".")
        sig = result.fairbo_sigma
        mine = sig[sig["group"] == f"{p.attribute}={p.group}"]["sigma"]
        if len(mine):
            others = sig[sig["group"] != f"{p.attribute}={p.group}"]["sigma"]
            lines.append(f"  - Why: BO moved the perturbation scales from 1 to {_fmt(sig['sigma'].mean(), 2)} on "
                         f"average (every group, last 10 % of training); the planted group's ended at "
                         f"{_fmt(mine.mean(), 2)} (range {_fmt(mine.min(), 2)}-{_fmt(mine.max(), 2)} over seeds), the "
                         f"others' at {_fmt(others.mean(), 2)}: "
                         + ("BO did not single out the planted group, so fairbo's loss weights were the `random` "
                            "method's perturbation at about half its scale, spread evenly over the groups."
                            if abs(mine.mean() - others.mean()) < 0.1 else
                            "BO treated the planted group differently from the other groups."))
    others = []
    for m in dict.fromkeys(result.paired_effects["method"]):
        if m == "fairbo":
            continue
        part = result.paired_effects[result.paired_effects["method"] == m]
        sep = part[(part["hi"] < 0) | (part["lo"] > 0)]
        others.append(f"**{m}**: " + ("no metric separates from the baseline" if sep.empty else "; ".join(
            f"{r.label} {'better' if r.better else 'worse'} ({format_ci(r.diff, r.lo, r.hi, sign=True)}, Holm p "
            f"{_p(r.p_holm)})" for r in sep.itertuples())))
    if others:
        lines.append("- **The other methods**, paired with the baseline (interval excluding 0): "
                     + "; ".join(others) + ".")
    a = result.authors_ttest
    if len(a):
        sig = a[a["p_authors"] < 0.05]
        seed_level = result.paired_effects[result.paired_effects["family"] == "classifier"]
        better = sig["value"] > sig["baseline"]
        both = sorted(set(sig.loc[better, "method"] + " " + sig.loc[better, "metric"])
                      & set(sig.loc[~better, "method"] + " " + sig.loc[~better, "metric"]))
        flips = (f"; {', '.join(both)} 'significantly' better than the baseline in one seed and worse in another"
                 if both else "")
        lines.append(f"- **The authors' bootstrap t-test** (one seed at a time, replicates as observations) calls "
                     f"{len(sig)} of {len(a)} single-seed classifier comparisons with the baseline significant at 0.05 "
                     f"({int(better.sum())} better, {int((~better).sum())} worse; median p "
                     f"{_p(a['p_authors'].median())}){flips}; across seeds, the paired tests above call "
                     f"{int((seed_level['p_holm'] < 0.05).sum())} of {len(seed_level)}. A single run's bootstrap "
                     "t-test measures the test set's resampling noise, not the seed-to-seed variation of training.")
    if sweep is not None and len(sweep):
        s = sweep[sweep["metric"] == "fid"]
        best = s.loc[s["reduction"].idxmax()]
        excl = s[s["lo"] > 0]
        k = int(s["n_seeds"].max())
        lines.append(
            f"- **The W x r sweep** ({k} seed{'s' if k > 1 else ''} per cell; gap reduction = baseline gap minus "
            f"fairbo gap, positive = narrower): the largest mean reduction is "
            f"{format_ci(best['reduction'], best['lo'], best['hi'], sign=True)} "
            f"at W = {int(best['window'])}, r = {best['exploitation']:g}; "
            + (f"{len(excl)} of {len(s)} cells have an interval above 0." if len(excl) else
               f"no cell's interval lies above 0 (cells: {len(s)}).")
            + f" The cells' mean reductions span {_fmt(s['reduction'].min())} to {_fmt(s['reduction'].max())} and "
              f"their overall-FID changes {_fmt(s['overall_change'].min())} to {_fmt(s['overall_change'].max())}."
            + (f" With {k} seeds per cell the intervals are wide (t with {k - 1} degrees of freedom)." if 1 < k <= 3
               else " With one seed per cell there are no intervals." if k == 1 else ""))
    lines.append(
        f"- **What this says about the paper's claim.** This is a controlled test of the mechanism (per-group loss "
        f"perturbations tuned by BO) on synthetic {result.cfg['data']['resolution']} px fundus images with a tiny "
        f"latent diffusion model trained from scratch for {result.cfg['train']['steps']} steps, scored by a domain "
        "encoder instead of InceptionV3, with a gap we planted ourselves. It says whether the method narrows a "
        "known gap at this scale and with this evaluation; it does not test the paper's numbers (SD 2.1 fine-tuned "
        "on real FairGenMed at 512 px), where the model, the data and the size of the gaps differ. The seed spread "
        "(per-seed table) shows how much a single run's numbers move: a one-seed comparison at this scale can "
        "point either way.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures
def forest_plot(effects: pd.DataFrame):
    """One panel per metric: every method's paired difference from the baseline with its 95 %
    interval over seeds, the Holm-adjusted sign-flip p written beside it."""
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(effects["metric"]))
    ncols = min(3, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 0.5 + 1.9 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        part = effects[effects["metric"] == metric].reset_index(drop=True)
        y = np.arange(len(part))[::-1]
        err = np.vstack([(part["diff"] - part["lo"]).clip(lower=0), (part["hi"] - part["diff"]).clip(lower=0)])
        colors = ["tab:green" if b else "tab:red" for b in part["better"]]
        ax.errorbar(part["diff"], y, xerr=np.nan_to_num(err), fmt="none", ecolor="grey", capsize=3)
        ax.scatter(part["diff"], y, c=colors, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, part["method"])
        for yi, row in zip(y, part.itertuples()):
            ax.annotate(f"p={_p(row.p_holm)}", (1.0, yi), xycoords=("axes fraction", "data"), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=7)
        lower = bool(part["lower_is_better"].iloc[0])
        ax.set_title(f"{part['label'].iloc[0]}\n(method − baseline; {'<0' if lower else '>0'} is better)", fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def sweep_heatmap(cells: pd.DataFrame, metric: str = "fid"):
    """W x r grid of the mean FID-gap reduction (baseline gap minus fairbo gap; positive =
    narrower), each cell annotated with its 95 % interval over seeds."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    part = cells[cells["metric"] == metric]
    value = part.pivot(index="window", columns="exploitation", values="reduction")
    text = part.assign(label=[f"{_fmt(m, 2)}\n[{_fmt(lo, 2)}, {_fmt(hi, 2)}]" for m, lo, hi in
                              zip(part["reduction"], part["lo"], part["hi"])])
    labels = text.pivot(index="window", columns="exploitation", values="label").reindex_like(value)
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * value.shape[1], 0.8 + 0.9 * value.shape[0]))
    bound = float(np.nanmax(np.abs(value.to_numpy()))) or 1.0
    sns.heatmap(value, annot=labels.to_numpy(), fmt="", cmap="RdBu", center=0, vmin=-bound, vmax=bound, ax=ax,
                cbar_kws={"label": f"{metric.upper()} gap reduction"}, annot_kws={"fontsize": 8})
    ax.set_xlabel("exploitation rate r")
    ax.set_ylabel("BO window W (steps)")
    ax.set_title(f"fairbo vs baseline: {metric.upper()} gap reduction, mean [95 % interval] over seeds", fontsize=9)
    return fig


def paired_lines(per_seed: pd.DataFrame, specs: pd.DataFrame):
    """Per metric, every seed's value for every method, the points of one seed joined: the pairing
    the statistics use."""
    import matplotlib.pyplot as plt

    metrics = [m for m in specs["metric"] if m in set(per_seed["metric"])]
    ncols = min(3, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 2.6 * nrows), squeeze=False)
    methods = list(dict.fromkeys(per_seed["method"]))
    labels = specs.set_index("metric")["label"]
    for ax, metric in zip(axes.flat, metrics):
        part = per_seed[per_seed["metric"] == metric].pivot(index="seed", columns="method", values="value")[methods]
        for seed, row in part.iterrows():
            ax.plot(range(len(methods)), row.to_numpy(), marker="o", lw=0.8, ms=3, label=f"seed {seed}")
        ax.set_xticks(range(len(methods)), methods, rotation=30, fontsize=8)
        ax.set_title(labels[metric], fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- notebook 06
def run_notebook(profile: str = "study", dataset: str | None = None, sets=(), sweep: bool = False,
                 root: str | Path | None = None) -> Path:
    """Execute notebook 06 with papermill into ``reports/<profile>/study/`` (with its HTML); it is
    re-executed when its source, parameters, the package or the study's result files change."""
    from fairdiff import stages
    from fairdiff.reproduce import run_notebook as execute
    from fairdiff.stage_keys import digest

    cfg = stages.context(profile, dataset, sets=list(sets)).cfg
    folder = study_root(cfg, root) / "results"
    upstream = digest(*[(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(folder.glob("*.csv"))])
    out = WORK_ROOT / "reports" / cfg["profile"] / "study"
    params = {"profile": profile, "dataset": dataset, "sets": list(sets), "sweep": sweep}
    _, ran = execute("06_study", params, out, upstream)
    _say(f"notebook 06_study: {'executed' if ran else 'unchanged, not re-executed'}: {shown(out / '06_study.html')}")
    return out
