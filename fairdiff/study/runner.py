"""Running the study: every (seed, arm) through the ordinary stages, in parallel worker processes.

The work is a small graph of jobs. A **seed job** builds what every arm of the seed shares (the
base pipeline, the training caches, the feature extractor) and links it into the arms' folders;
then the seed's **arm jobs** (train, sample, evaluate one arm) are independent and fan out to
``study.workers`` processes (``concurrent.futures`` with the spawn start method, one intra-op
thread each); the **BO-recovery** simulation is one more job. Each arm writes only into its own
folder, every stage is seeded from the config, and the tables are assembled in a fixed order
afterwards, so the results are the same whatever the number of workers (a test checks 1 against 2
bit for bit). Everything is cached by the stages, so a study that was stopped resumes where it
stopped.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairdiff import io
from fairdiff.env import WORK_ROOT
from fairdiff.errors import ConfigError, DataError
from fairdiff.study import tables as tb
from fairdiff.study.arms import (Arm, Planted, arm_folder, arms_from_config, arms_table, check_arms, check_fixed_data,
                                 context_of, planted_group, seed_base, seed_folder, share_seed_work, study_root,
                                 sweep_arms, with_seed)
from fairdiff.study.statistics import (arm_means, noninferiority_table, planted_summary, primary_table,
                                       secondary_effects, sweep_cells, t_interval)

FIGURES = WORK_ROOT / "figures" / "study"  # notebook 06's figures: figures/study/<profile>/<dataset>/
EXPORTS = WORK_ROOT / "figures" / "study"  # fairdiff study --export: figures/study/<profile>/ (tracked CSVs)
# Every table the study writes to runs/study/<profile>/results/ (name -> StudyResult field).
RESULT_FILES = ("arms", "per_seed", "primary", "noninferiority", "secondary", "arm_means", "planted_gap",
                "authors_ttest", "sigma_trajectories", "sigma_summary", "bo_runs", "bo_pooled", "bo_recovery",
                "convergence", "run_times", "metrics")
FBP_TYPE = ("fairbo",)  # methods whose sigma BO moves: their logs get the BO diagnostics and the drift band


@dataclass
class StudyResult:
    """Every table of the study (also written to ``folder``)."""

    cfg: dict
    planted: Planted
    folder: Path
    arms: pd.DataFrame
    per_seed: pd.DataFrame          # long: arm, metric, value, seed, endpoint_source
    primary: pd.DataFrame
    noninferiority: pd.DataFrame
    secondary: pd.DataFrame
    arm_means: pd.DataFrame
    planted_gap: pd.DataFrame
    authors_ttest: pd.DataFrame
    sigma_trajectories: pd.DataFrame
    sigma_summary: pd.DataFrame
    bo_runs: pd.DataFrame
    bo_pooled: pd.DataFrame
    bo_recovery: pd.DataFrame
    convergence: pd.DataFrame       # the reference arm's FID against step from the pretrained base (first seed)
    run_times: pd.DataFrame
    metrics: pd.DataFrame           # the metric specs: name, label, lower_is_better, family

    @property
    def specs(self) -> pd.DataFrame:
        return self.metrics


def say(line: str) -> None:
    print(line, flush=True)


def shown(path: Path) -> str:
    """A path as the reader should see it: relative to the work folder when inside it."""
    path = Path(path)
    return str(path.relative_to(WORK_ROOT)) if path.is_relative_to(WORK_ROOT) else str(path)


# ----------------------------------------------------------------------------- jobs (run in workers)
@dataclass(frozen=True)
class Plan:
    """What a worker needs to rebuild any job's stage context (it shares nothing else): the
    configs resolved once, before any work (the seed's own and every arm's, at any seed: the
    job sets its seed), so the whole study runs on one reading of the profiles."""

    main: dict
    configs: dict
    root: str | None
    arms: tuple[Arm, ...]
    progress: bool = False
    recovery: dict = field(default_factory=dict)
    convergence: str = "baseline"  # the method whose convergence curve is drawn

    def seed_context(self, seed: int):
        return context_of(with_seed(self.main, seed), seed_folder(self.main, seed, self.root), self.root)

    def arm_context(self, seed: int, arm: Arm):
        cfg = with_seed(self.configs[arm.name], seed)
        return context_of(cfg, arm_folder(cfg, seed, arm, self.root), self.root, base=seed_base(cfg, seed, self.root))


@dataclass(frozen=True)
class Job:
    kind: str                 # "seed", "arm", "convergence" or "recovery"
    seed: int | None = None
    arm: Arm | None = None

    @property
    def label(self) -> str:
        return {"seed": f"seed {self.seed} shared work", "arm": f"{self.arm.name if self.arm else ''} seed {self.seed}",
                "convergence": f"convergence curve, seed {self.seed}", "recovery": "BO-recovery simulation"}[self.kind]


def _timed(times: list, job: Job, stage: str, fn):
    from fairdiff.progress import announce

    announce(f"study seed {job.seed}", f"{job.arm.name if job.arm else 'shared'} {stage}")
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    times.append({"seed": job.seed, "arm": job.arm.name if job.arm else "all", "stage": stage,
                  "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1),
                  "load1": round(os.getloadavg()[0], 2), "pid": os.getpid()})
    return out


def _pretrained(ctx, progress: bool) -> None:
    """The study's pretrained base (``pretrain.steps`` > 0), trained once before any seed starts."""
    from fairdiff import stage_keys, stages

    if stage_keys.pretraining(ctx.cfg):
        stages.pretrained(ctx, progress)


def _reference_table(ctx, method: str):
    """The group-sized evaluation of one arm (``group_reference_metrics`` rows), or None when the
    stage or its setting (``evaluate.reference.attribute``) is absent."""
    from fairdiff import stages

    build = getattr(stages, "group_reference_table", None)
    ref = ctx.cfg["evaluate"].get("reference") or {}
    if build is None or ref.get("attribute") is None:
        return None
    return build(ctx, method)


def prepare_seed(plan: Plan, job: Job) -> dict:
    """The seed's shared work, built once before its arms start: the base pipeline, the feature
    extractor and the training cache (every arm trains from the seed's base folder, so one cache
    serves them all; arms running at once must not build it concurrently); then each arm's folder
    gets its links."""
    from fairdiff import stages
    from fairdiff.prepare import base_source, training_cache

    times = []
    main = plan.seed_context(job.seed)
    _timed(times, job, "base", lambda: stages.base(main, plan.progress))
    contexts = [plan.arm_context(job.seed, arm) for arm in plan.arms]
    _timed(times, job, "encoder", lambda: stages.domain_encoder(main))
    for ctx in contexts:
        share_seed_work(main, ctx)
    _timed(times, job, "caches", lambda: [training_cache(c.cfg, base_source(c.cfg, c.layout.base), c.layout.cache,
                                                         progress=False) for c in contexts])
    return {"times": times}


def run_arm(plan: Plan, job: Job) -> dict:
    """Train, sample and evaluate one arm of one seed; returns its times and evaluation tables
    (method and source columns renamed to the arm)."""
    from fairdiff import stages

    arm, times = job.arm, []
    main, ctx = plan.seed_context(job.seed), plan.arm_context(job.seed, arm)
    share_seed_work(main, ctx)
    _timed(times, job, "train", lambda: stages.trained(ctx, arm.method, plan.progress))
    _timed(times, job, "sample", lambda: (stages.sampled(ctx, arm.method, "test", plan.progress),
                                          stages.sampled(ctx, arm.method, "train", plan.progress)))
    gen = _timed(times, job, "evaluate", lambda: stages.generation_table(ctx, arm.method))
    sem = _timed(times, job, "classifiers", lambda: stages.semantic_table(ctx, arm.method))
    ref = _timed(times, job, "reference", lambda: _reference_table(ctx, arm.method))
    return {"times": times, "generation": gen.assign(method=arm.name), "semantic": sem.assign(source=arm.name),
            "reference": None if ref is None else ref.assign(method=arm.name)}


def run_recovery(plan: Plan, job: Job) -> dict:
    from fairdiff.study.diagnostics import recovery_curve

    times = []
    curve = _timed(times, job, "recovery", lambda: recovery_curve(**plan.recovery, progress=plan.progress))
    return {"times": times, "curve": curve}


def run_convergence(plan: Plan, job: Job) -> dict:
    """The convergence curve of the seed's own config (the reference arm's method, fine-tuned again
    from the pretrained base with a checkpoint at every point: :func:`fairdiff.stages.convergence`)."""
    from fairdiff import stages

    times = []
    ctx = plan.seed_context(job.seed)
    frame = _timed(times, job, "convergence", lambda: stages.convergence(ctx, plan.convergence, plan.progress))
    return {"times": times, "curve": frame.assign(seed=job.seed)}


RUNNERS = {"seed": prepare_seed, "arm": run_arm, "convergence": run_convergence, "recovery": run_recovery}


def run_job(plan: Plan, job: Job) -> dict:
    """One job, its exception handed back picklable (with the worker's traceback), so that the
    main process raises what went wrong instead of a pickling error."""
    try:
        return RUNNERS[job.kind](plan, job)
    except Exception as exc:  # noqa: BLE001 - re-raised in the main process
        text = traceback.format_exc()
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - an exception class that does not round-trip
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return {"error": exc, "traceback": text}


def _init_worker() -> None:
    """One intra-op thread per worker: the workers, not the threads, use the cores."""
    import torch

    import fairdiff  # noqa: F401 - caches inside the project, offline

    torch.set_num_threads(1)


class _Inline:
    """An executor that runs each job at submission, in this process (``study.workers: 1``)."""

    def submit(self, fn, *args) -> Future:
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _pick(pending: list[Job], ready: set) -> Job | None:
    """The next job to start: an arm of a seed whose shared work is done (seeds in order), else the
    next seed's shared work, else anything else."""
    for kinds in (("arm", "convergence"), ("seed",), ("recovery",)):
        for job in pending:
            if job.kind in kinds and (job.kind in ("seed", "recovery") or job.seed in ready):
                return job
    return None


def execute(plan: Plan, jobs: list[Job], workers: int) -> dict:
    """Run ``jobs`` (arm jobs wait for their seed's job) on ``workers`` processes (in this process
    when 1), printing a line per finished job with the time left; returns {job: result}."""
    import torch

    pending, running, results, ready = list(jobs), {}, {}, set()
    durations: dict[str, list[float]] = {}
    t_all = time.perf_counter()
    threads = torch.get_num_threads()
    if workers > 1:
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker)
    else:
        executor = _Inline()
        torch.set_num_threads(1)  # the same one thread as a worker: the same last bits
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = _pick(pending, ready)
                if job is None:
                    break
                pending.remove(job)
                running[executor.submit(run_job, plan, job)] = (job, time.perf_counter())
            if not running:  # cannot happen while every arm's seed job is among the jobs
                raise RuntimeError(f"study: no job can start: {[j.label for j in pending]}")
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                job, t0 = running.pop(future)
                out = future.result()
                if "error" in out:
                    say(f"study: {job.label} failed:\n{out['traceback']}")
                    raise out["error"]
                results[job] = out
                if job.kind == "seed":
                    ready.add(job.seed)
                seconds = time.perf_counter() - t0
                durations.setdefault(job.kind, []).append(seconds)
                say(_progress_line(job, seconds, results, jobs, pending, running, durations, workers, t_all))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
    return results


def _progress_line(job, seconds, results, jobs, pending, running, durations, workers, t_all) -> str:
    left = [j for j in pending] + [j for j, _ in running.values()]
    guess = sum(np.mean(durations.get(j.kind, [seconds])) for j in left) / max(1, workers)
    return (f"study · {job.label} · {seconds:.0f} s · {len(results)}/{len(jobs)} done · "
            f"{(time.perf_counter() - t_all) / 60:.1f} min so far, about {guess / 60:.1f} min left · "
            f"load {os.getloadavg()[0]:.1f}")


def _jobs(seeds, arms, recovery: bool = False, convergence: bool = False) -> list[Job]:
    jobs = []
    for seed in seeds:
        jobs += [Job("seed", seed)] + [Job("arm", seed, arm) for arm in arms]
        if convergence and seed == seeds[0]:
            jobs.append(Job("convergence", seed))
    return jobs + ([Job("recovery")] if recovery else [])


# ----------------------------------------------------------------------------- the study
def _analysis(cfg: dict, arm_names: list[str]):
    """``study.analysis``: the reference arm, the comparisons (every arm against the reference,
    plus the primary pairs) and the primary family, checked against the arms run."""
    a = cfg["study"]["analysis"]
    reference = a["reference"]
    if reference not in arm_names:
        raise ConfigError(f"study.analysis.reference: {reference!r} is not among the arms run "
                          f"({', '.join(arm_names)}); the study compares every arm with it")
    primary = []
    for text in a["primary"]:
        parts = [p.strip() for p in str(text).split(" vs ")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"study.analysis.primary: expected entries '<arm> vs <arm>', got {text!r}")
        if all(p in arm_names for p in parts):
            primary.append(tuple(parts))
        else:
            say(f"note: the primary comparison {text!r} is left out: not all of its arms were run")
    comparisons = [(arm, reference) for arm in arm_names if arm != reference]
    comparisons += [pair for pair in primary if pair not in comparisons]
    return reference, comparisons, primary


def _workers(workers: int | None, cfg: dict) -> int:
    workers = int(cfg["study"]["workers"] if workers is None else workers)
    if workers < 1:
        raise ConfigError(f"workers: expected at least 1 (runs at a time), got {workers}")
    return workers


def _shared(plan: Plan, seed: int, progress: bool) -> None:
    """What every seed shares, made once here before anything fans out: the data, the per-group
    reference pool, the pretrained base."""
    from fairdiff import stages

    ctx = plan.seed_context(seed)
    stages.dataset(ctx, progress)
    if (ctx.cfg["evaluate"].get("reference") or {}).get("attribute") is not None:
        stages.reference_records(ctx, progress)  # the group-balanced real pool, drawn once beside the data
    _pretrained(ctx, progress)


# Noise sd over the planted objective's range: from none to far beyond it, so that the real runs'
# R^2 of y on sigma, however small, falls inside the simulated curve (the diagnostics' default
# levels stop at 3).
RECOVERY_NOISE = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def _recovery_settings(cfg: dict, schema, planted: Planted) -> dict:
    """The BO-recovery simulation run with the study's own FBP settings and steps, its optimum at
    the planted group (1 there, 0 elsewhere), at :data:`RECOVERY_NOISE`."""
    f = cfg["fbp"]
    columns = [f"{a.name}={g}" for a in schema.attributes for g in a.groups]
    optimum = [1.0 if c == planted.column else 0.0 for c in columns]
    return {"noise_levels": list(RECOVERY_NOISE), "n_groups": [a.n_groups for a in schema.attributes],
            "optimum": optimum, "steps": cfg["train"]["steps"],
            "window": f["window"], "exploitation": f["exploitation"], "beta": f["beta"],
            "num_restarts": f["bo_restarts"], "raw_samples": f["bo_raw_samples"], "gp_likelihood": f["gp_likelihood"]}


def _recovery_is_current(folder: Path, settings: dict) -> bool:
    from fairdiff import stage_keys

    return (folder / "bo_recovery.csv").is_file() and \
        stage_keys.is_current(folder / "bo_recovery.csv", stage_keys.Stage("bo_recovery", settings))


CACHED_BELOW_S = 2.0  # a stage this quick found its work cached


def _merge_times(path: Path, new: pd.DataFrame, cached_below_s: float = CACHED_BELOW_S) -> pd.DataFrame:
    """Keep the measured time of work that this invocation found cached (a rerun would otherwise
    overwrite a real time with a cache hit's)."""
    if not path.is_file() or new.empty:
        return new
    old = pd.read_csv(path)
    if not {"seed", "arm", "stage"} <= set(old.columns):
        return new
    old = old.drop_duplicates(["seed", "arm", "stage"]).set_index(["seed", "arm", "stage"])
    merged = new.set_index(["seed", "arm", "stage"])
    for key in merged.index:
        if merged.loc[key, "seconds"] < cached_below_s and key in old.index:
            cols = [c for c in ("seconds", "cpu_seconds", "load1", "pid") if c in old.columns]
            merged.loc[key, cols] = old.loc[key, cols].to_numpy()
    return merged.reset_index()


def log_invocation(folder: Path, started: float, seeds, arms, workers: int, results: dict) -> pd.DataFrame:
    """Append this invocation to ``invocations.csv``: when it started and ended, its wall time, what it
    was asked for and how many of its jobs did work (a job whose stages all took under
    ``CACHED_BELOW_S`` found its work cached). A study made in several invocations (a pilot, then the rest) adds up its rows."""
    import datetime as dt

    ended = time.time()
    did_work = sum(1 for out in results.values()
                   if any(t["seconds"] >= CACHED_BELOW_S for t in out.get("times", [])))
    utc = dt.timezone.utc
    row = {"started_utc": dt.datetime.fromtimestamp(started, utc).isoformat(timespec="seconds"),
           "ended_utc": dt.datetime.fromtimestamp(ended, utc).isoformat(timespec="seconds"),
           "wall_minutes": round((ended - started) / 60, 2), "workers": workers, "cores": os.cpu_count(),
           "seeds": " ".join(str(s) for s in seeds), "arms": " ".join(a.name for a in arms),
           "jobs": len(results), "jobs_that_worked": did_work, "load1_at_end": round(os.getloadavg()[0], 2)}
    path = folder / "invocations.csv"
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    frame = pd.concat([old, pd.DataFrame([row])], ignore_index=True)
    io.write_csv(path, frame)
    return frame


def _resolve(profile, dataset, sets, seeds, arm_names):
    from fairdiff import stages

    first = stages.context(profile, dataset, sets=list(sets))
    cfg, schema = first.cfg, first.schema
    check_fixed_data(cfg)
    planted = planted_group(cfg, schema)
    arms = arms_from_config(cfg)
    if arm_names:
        unknown = [a for a in arm_names if a not in {x.name for x in arms}]
        if unknown:
            raise ConfigError(f"arms {', '.join(unknown)}: not in study.arms of {cfg['profile']} "
                              f"({', '.join(a.name for a in arms)})")
        arms = [a for a in arms if a.name in arm_names]
    seeds = [int(s) for s in (cfg["study"]["seeds"] if seeds is None else seeds)]
    return cfg, schema, planted, arms, seeds


def _seed_tables(results: dict, seed: int, arms: list[Arm]) -> dict:
    from fairdiff.analysis import equity

    outs = [results[Job("arm", seed, arm)] for arm in arms]
    gen = pd.concat([o["generation"] for o in outs], ignore_index=True)
    refs = [o["reference"] for o in outs if o["reference"] is not None]
    return {"generation_metrics": gen, "equity_scaled_generation": equity(gen, [a.name for a in arms]),
            "semantic_metrics": pd.concat([o["semantic"] for o in outs], ignore_index=True),
            "group_reference_metrics": pd.concat(refs, ignore_index=True) if refs else None}


def run_study(profile: str = "study", dataset: str | None = None, sets=(), seeds=None, arms=None,
              root: str | Path | None = None, workers: int | None = None, progress: bool = False) -> StudyResult:
    """Train, sample and evaluate every arm of ``study.arms`` (or the named ``arms``) for every seed
    of ``study.seeds`` (or ``seeds``) through the stages (cached work is reused), on ``workers``
    processes (default ``study.workers``); then compute and write the study's tables."""
    from fairdiff import stage_keys, stages

    sets = tuple(sets)
    cfg, schema, planted, arms, seeds = _resolve(profile, dataset, sets, seeds, arms)
    reference, comparisons, primary = _analysis(cfg, [a.name for a in arms])
    analysis = cfg["study"]["analysis"]
    main, configs = check_arms(profile, dataset, sets, arms, seed=seeds[0])
    workers = _workers(workers, cfg)
    folder = study_root(cfg, root) / "results"
    recovery = _recovery_settings(cfg, schema, planted)
    need_recovery = any(a.method in FBP_TYPE for a in arms) and not _recovery_is_current(folder, recovery)
    reference_method = next(a.method for a in arms if a.name == reference)
    plan = Plan(main, configs, None if root is None else str(root), tuple(arms),
                progress=progress and workers == 1, recovery=recovery, convergence=reference_method)
    convergence = stage_keys.pretraining(cfg) and hasattr(stages, "convergence")
    t_all, started = time.perf_counter(), time.time()
    _shared(plan, seeds[0], progress)
    say(f"study {cfg['profile']}: {len(arms)} arms x {len(seeds)} seeds on {workers} worker(s): "
        + ", ".join(a.name for a in arms))
    results = execute(plan, _jobs(seeds, arms, need_recovery, convergence), workers)

    per_seed, gaps, authors = [], [], []
    task = schema.classifier_tasks[0]
    names = [a.name for a in arms]
    for seed in seeds:
        t = _seed_tables(results, seed, arms)
        per_seed.append(tb.seed_metrics(t, planted, task, names, analysis["endpoint"]).assign(seed=seed))
        gaps.append(tb.planted_rows(t["generation_metrics"], planted, reference).assign(seed=seed))
        authors.append(tb.authors_ttest_rows(t["semantic_metrics"], task, planted, names, reference).assign(seed=seed))
    per_seed = pd.concat(per_seed, ignore_index=True)
    sources = set(per_seed["endpoint_source"])
    if sources != {analysis["endpoint"]}:
        say(f"note: primary endpoint: {analysis['endpoint']} (group_reference_metrics, evaluate.reference) is not "
            f"available for every run; using {', '.join(sorted(sources))} from the generation table instead")
    specs = tb.metric_specs(planted, task, t["generation_metrics"], t["group_reference_metrics"])
    endpoint = per_seed[per_seed["metric"] == "endpoint"]
    overall = per_seed[per_seed["metric"] == "fid"]
    sigma_traj, sigma_summary, bo_runs = _fbp_logs(plan, seeds, arms, planted)
    curve = _recovery(folder, recovery, results, bo_runs)
    pooled = tb.bo_pooled(bo_runs) if len(bo_runs) else pd.DataFrame()
    if len(pooled) and len(curve):  # where each arm's mean R^2 falls on the simulated curve
        pooled["matched_noise_rel"] = [tb.measured_noise_level(curve, r2) for r2 in pooled["r2"]]
    times = pd.DataFrame([t for out in results.values() for t in out["times"]])
    result = StudyResult(
        cfg, planted, folder, arms_table(arms, configs, schema, planted), per_seed,
        primary_table(endpoint, comparisons, primary, reference, analysis),
        noninferiority_table(overall, names, reference, analysis),
        secondary_effects(per_seed, specs, reference, analysis["confidence"]),
        arm_means(per_seed, analysis["confidence"]), pd.concat(gaps, ignore_index=True),
        pd.concat(authors, ignore_index=True), sigma_traj, sigma_summary, bo_runs,
        pooled, curve,
        results[Job("convergence", seeds[0])]["curve"] if convergence else pd.DataFrame(),
        _merge_times(folder / "run_times.csv", times), specs)
    write_results(result)
    log_invocation(folder, started, seeds, arms, workers, results)
    for row in result.primary.itertuples():
        say(f"primary · {row.arm} vs {row.against} ({row.family}): "
            f"{tb.format_ci(row.pct, row.pct_lo, row.pct_hi, sign=True)} % of the baseline gap; verdict {row.verdict}")
    say(f"study {cfg['profile']}: {len(seeds)} seeds x {len(arms)} arms in "
        f"{(time.perf_counter() - t_all) / 60:.1f} min on {workers} worker(s); results in {shown(folder)}")
    return result


def _fbp_logs(plan: Plan, seeds, arms, planted):
    """Sigma trajectories against the drift band, and the BO diagnostics, of every FBP-type run."""
    logs, settings, bo_rows = {}, {}, []
    for arm in arms:
        if arm.method not in FBP_TYPE:
            continue
        f = plan.configs[arm.name]["fbp"]
        settings[arm.name] = (float(f.get("sigma_init", 1.0)), dict(f.get("sigma_groups") or {}), f["exploitation"])
        for seed in seeds:
            run = plan.arm_context(seed, arm).layout.method(arm.method)
            logs[(arm.name, seed)] = tb.sigma_log(run)
            metrics = pd.read_csv(run / "metrics.csv")
            bo_rows.append({"arm": arm.name, "seed": seed, **tb.bo_run_row(metrics, f["window"], planted, seed)})
    traj, summary = tb.sigma_tables(logs, settings, planted)
    return traj, summary, pd.DataFrame(bo_rows)


def _recovery(folder: Path, settings: dict, results: dict, bo_runs: pd.DataFrame) -> pd.DataFrame:
    """The BO-recovery curve (simulated now or read from an earlier run with the same settings), with
    the measured runs placed on it: ``trace_range_equiv`` from the fairbo runs' sd of y."""
    from fairdiff import stage_keys

    path = folder / "bo_recovery.csv"
    out = results.get(Job("recovery"))
    if out is not None:
        curve = out["curve"]
    elif _recovery_is_current(folder, settings):
        curve = pd.read_csv(path)
    else:
        return pd.DataFrame()
    if len(bo_runs):
        y_sd = float(bo_runs["y_sd"].mean())
        curve = curve.assign(trace_range_equiv=[y_sd / v if v > 0 else np.inf for v in curve["noise_rel"]])
    if out is not None:
        io.write_csv(path, curve, float_format="%.6g")
        stage_keys.write_stamp(path, stage_keys.Stage("bo_recovery", settings), complete=True)
    return curve


def write_results(result: StudyResult) -> None:
    for name in RESULT_FILES:
        frame = getattr(result, name)
        if name == "per_seed":
            frame = tb.wide_per_seed(frame)
        io.write_csv(result.folder / f"{name}.csv", frame, float_format="%.6g")


def _read(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # an empty table (e.g. no FBP-type arm: no BO diagnostics)
        return pd.DataFrame()


def results_folder(profile: str = "study", dataset: str | None = None, sets=(), root=None) -> Path:
    from fairdiff import stages

    return study_root(stages.context(profile, dataset, sets=list(sets)).cfg, root) / "results"


def load_results(profile: str = "study", dataset: str | None = None, sets=(), root: str | Path | None = None,
                 folder: str | Path | None = None) -> StudyResult:
    """The study's tables as written by :func:`run_study` (or from ``folder``, e.g. an export)."""
    from fairdiff import stages

    ctx = stages.context(profile, dataset, sets=list(sets))
    folder = Path(folder) if folder else study_root(ctx.cfg, root) / "results"
    missing = [n for n in RESULT_FILES if not (folder / f"{n}.csv").is_file()]
    if missing:
        raise DataError(folder, None, f"the study's results ({', '.join(m + '.csv' for m in missing)}): run the study "
                        f"first (fairdiff study --profile {profile})", "missing")
    frames = {n: _read(folder / f"{n}.csv") for n in RESULT_FILES}
    frames["per_seed"] = tb.long_per_seed(frames["per_seed"])
    return StudyResult(ctx.cfg, planted_group(ctx.cfg, ctx.schema), folder, **frames)


# ----------------------------------------------------------------------------- the W x r sweep
def run_sweep(profile: str = "study", dataset: str | None = None, sets=(), root: str | Path | None = None,
              workers: int | None = None, progress: bool = False) -> pd.DataFrame:
    """fairbo for every (W, r) of the sweep grid and every seed of ``study.sweep_seeds``, each cell an
    arm compared with the reference arm of the same seed; writes and returns the per-cell summary
    (``sweep_cells.csv``; per seed: ``sweep_per_seed.csv``). The gap reduction is the reference
    arm's gap minus the cell's (positive: the cell's groups are closer)."""
    sets = tuple(sets)
    cfg, schema, planted, arms, _ = _resolve(profile, dataset, sets, None, None)
    reference = cfg["study"]["analysis"]["reference"]
    base = [a for a in arms if a.name == reference]
    if not base:
        raise ConfigError(f"study.analysis.reference: {reference!r} is not an arm of {cfg['profile']}")
    cells = sweep_arms(cfg, arms)
    run_arms = base + list(dict.fromkeys(cells.values()))
    seeds = [int(s) for s in cfg["study"]["sweep_seeds"]]
    main, configs = check_arms(profile, dataset, sets, run_arms, seed=seeds[0])
    workers = _workers(workers, cfg)
    folder = study_root(cfg, root) / "results"
    plan = Plan(main, configs, None if root is None else str(root), tuple(run_arms),
                progress=progress and workers == 1)
    t_all = time.perf_counter()
    _shared(plan, seeds[0], progress)
    results = execute(plan, _jobs(seeds, run_arms), workers)
    task, names = schema.classifier_tasks[0], [a.name for a in run_arms]
    endpoint = cfg["study"]["analysis"]["endpoint"]
    rows = []
    for seed in seeds:
        m = tb.seed_metrics(_seed_tables(results, seed, run_arms), planted, task, names, endpoint)
        values = m.set_index(["arm", "metric"])["value"]
        for (w, r), arm in cells.items():
            for metric in ("fid_gap", "kid_gap", "fid_matched_gap", "endpoint"):
                if (arm.name, metric) not in values.index:
                    continue
                rows.append({"window": w, "exploitation": r, "arm": arm.name, "seed": seed, "metric": metric,
                             "gap_baseline": values[(reference, metric)], "gap_fairbo": values[(arm.name, metric)],
                             "overall_baseline": values[(reference, "fid")],
                             "overall_fairbo": values[(arm.name, "fid")]})
    per_seed = pd.DataFrame(rows)
    per_seed["reduction"] = per_seed["gap_baseline"] - per_seed["gap_fairbo"]
    table = sweep_cells(per_seed, cfg["study"]["analysis"]["confidence"])
    io.write_csv(folder / "sweep_per_seed.csv", per_seed, float_format="%.6g")
    io.write_csv(folder / "sweep_cells.csv", table, float_format="%.6g")
    say(f"sweep {cfg['profile']}: {len(cells)} cells x {len(seeds)} seeds in "
        f"{(time.perf_counter() - t_all) / 60:.1f} min on {workers} worker(s)")
    return table


def load_sweep(profile: str = "study", dataset: str | None = None, sets=(), root: str | Path | None = None):
    """The sweep's per-cell table, or None when the sweep has not been run."""
    path = results_folder(profile, dataset, sets, root) / "sweep_cells.csv"
    return pd.read_csv(path) if path.is_file() else None


# ----------------------------------------------------------------------------- export
EXPORTED = (*RESULT_FILES, "sweep_cells", "sweep_per_seed", "invocations")


def export(profile: str = "study", dataset: str | None = None, sets=(), root: str | Path | None = None,
           dest: str | Path | None = None, command: str | None = None) -> Path:
    """Copy the study's result tables into ``dest/<profile>/`` (default ``figures/study/``, where
    git tracks CSVs) with ``provenance.json``: the profile and overrides, the command, the commit
    and its uncommitted changes, when the results were written and exported, the machine (CPU,
    cores, threads, the load averages) and the runs' own load and worker record, and each file's
    sha256. Refuses a folder that holds files without our provenance."""
    import datetime as dt
    import hashlib
    import json

    from fairdiff import report

    folder = results_folder(profile, dataset, sets, root)
    result = load_results(profile, dataset, sets, root)
    out = Path(dest or EXPORTS) / result.cfg["profile"]
    # notebook 06's figure folders (<dataset>/) live in the same folder; only files count as someone's
    if out.exists() and any(p.is_file() for p in out.iterdir()) and not (out / "provenance.json").is_file():
        raise FileExistsError(f"{out}: holds files without provenance.json; not written into")
    names = [n for n in EXPORTED if (folder / f"{n}.csv").is_file()]
    for name in names:
        io.write_text(out / f"{name}.csv", (folder / f"{name}.csv").read_text())
    times = result.run_times
    state = report.code_state()
    if state.get("uncommitted_changes"):
        state["uncommitted_changes"] = [f for f in state["uncommitted_changes"] if not f.startswith("figures/study/")]
    written = max((folder / f"{n}.csv").stat().st_mtime for n in names)
    record = {"profile": result.cfg["profile"], "dataset": result.cfg["dataset"], "overrides": list(sets),
              "made_by": command or f"fairdiff study --profile {profile}, then fairdiff study --profile {profile} "
                                    f"--export {shown(Path(dest or EXPORTS))}",
              **state,
              "results_written_utc": dt.datetime.fromtimestamp(written, dt.timezone.utc).isoformat(timespec="seconds"),
              "exported_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine_at_export": report.machine(),
              "runs": {"workers": int(times["pid"].nunique()) if "pid" in times and len(times) else None,
                       "threads_per_worker": 1, "load1_while_running": tb.load_summary(times),
                       "work_minutes": round(float(times["seconds"].sum()) / 60, 1) if len(times) else None},
              "sha256": {f"{n}.csv": hashlib.sha256((out / f"{n}.csv").read_bytes()).hexdigest() for n in names}}
    io.write_text(out / "provenance.json", json.dumps(record, indent=1) + "\n")
    return out


def planted_gap_check(result: StudyResult) -> list[str]:
    """One line per metric: the reference arm's planted group minus the worst other group, over seeds."""
    lines = []
    for metric, part in planted_summary(result.planted_gap).groupby("metric", sort=False):
        mean, lo, hi = t_interval(part["excess"])
        lines.append(f"{metric}: {result.planted.group} minus the worst other {result.planted.attribute} group "
                     f"{tb.format_ci(mean, lo, hi, sign=True)}; worst in {int(part['is_worst'].sum())} of {len(part)} "
                     f"seeds, interval above all others in {int(part['separated'].sum())}")
    return lines


def run_notebook(profile: str = "study", dataset: str | None = None, sets=(), sweep: bool = False,
                 root: str | Path | None = None, seeds=None, arms=None, workers: int | None = None,
                 tables: str | Path | None = None, figures: str | Path | None = None) -> Path:
    """Execute notebook 06 with papermill into ``reports/<profile>/study/`` (with its HTML); it is
    re-executed when its source, parameters, the package or the study's result files change.
    With ``tables`` (e.g. the committed ``figures/study/<profile>/``) it runs nothing and redraws
    every figure from those tables into ``reports/<profile>/study-redraw/``, the figures to
    ``<figures>/<tables folder name>/<dataset>/`` (default ``figures/study/``)."""
    import hashlib

    from fairdiff import stages
    from fairdiff.reproduce import run_notebook as execute_notebook
    from fairdiff.stage_keys import digest

    cfg = stages.context(profile, dataset, sets=list(sets)).cfg
    folder = Path(tables).resolve() if tables is not None else study_root(cfg, root) / "results"
    if not folder.is_dir():
        raise DataError(folder, None, "the study's result tables: fairdiff study --export writes them", "missing")
    upstream = digest(*[(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in sorted(folder.glob("*.csv"))])
    out = WORK_ROOT / "reports" / cfg["profile"] / ("study" if tables is None else "study-redraw")
    params = {"profile": profile, "dataset": dataset, "sets": list(sets), "sweep": sweep,
              "seeds": None if seeds is None else list(seeds), "arms": None if arms is None else list(arms),
              "workers": workers}
    if tables is not None:
        params.update(run=False, tables=str(folder))
    if figures is not None:
        params["figure_root"] = str(Path(figures).resolve())
    _, ran = execute_notebook("06_study", params, out, upstream)
    say(f"notebook 06_study: {'executed' if ran else 'unchanged, not re-executed'}: {shown(out / '06_study.html')}")
    return out


__all__ = ["StudyResult", "run_study", "run_sweep", "load_results", "load_sweep", "export", "execute", "Plan", "Job"]
