"""The report stage: the README's results, printed from the evaluation stage's tables
(``fairdiff results``), exported as committed tables (``fairdiff results --export``) and written
into the README between markers from those tables (``fairdiff results --readme``).

Every number of the README's results traces back to a committed file: the default reproduction's
tables in ``figures/tables/<profile>/<dataset>/`` (copied from ``runs/<dataset>-<profile>/evaluation/
tables/``, ``figures/<profile>/<dataset>/`` and ``reports/<profile>/resources.csv`` by the export,
with ``provenance.json`` saying what made them) and the benchmark results in
``benchmarks/results/``. ``tests/test_readme_results.py`` fails when a README block differs from
what :func:`readme_blocks` renders from them.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import pandas as pd

from fairdiff import io
from fairdiff.env import PROJECT_ROOT, WORK_ROOT

METHOD_ORDER = ["real", "baseline", "random", "fairbo", "reweight", "resample"]
# Committed result tables (tracked by git, see .gitignore): figures/tables/<profile>/<dataset>/.
COMMITTED = PROJECT_ROOT / "figures" / "tables"
BENCH_RESULTS = PROJECT_ROOT / "benchmarks" / "results"
README = PROJECT_ROOT / "README.md"
README_SET = ("mini", "fairgenmed")  # the reproduction the README reports
STUDY_EXPORT = PROJECT_ROOT / "figures" / "study" / "study"  # the study the README reports (fairdiff study --export)
# What the export copies: the evaluation stage's tables (the contract this module reads), two
# tables of notebook 02 and the per-notebook resources of the reproduction.
EVALUATION_TABLES = ("generation_metrics", "equity_scaled_generation", "fid_gap", "attribute_fidelity",
                     "semantic_metrics")
NOTEBOOK_TABLES = ("02_loss_summary", "02_weight_summary")
RESOURCES = "resources"
PROVENANCE = "provenance.json"


def project_path(path: Path) -> str:
    """A path as the README names it: relative to the project when inside it."""
    path = Path(path).resolve()
    return (path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path).as_posix()


def _with_interval(value: float, lo: float, hi: float, digits: int) -> str:
    if pd.isna(lo) or pd.isna(hi):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub table, floats to 4 significant digits (pandas' to_markdown needs tabulate, which is
    not a dependency). Also used by benchmarks/run_all.py."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _ordered(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return frame.sort_values(column, key=lambda s: s.map(lambda m: rank.get(m, len(rank))), kind="stable")


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run the evaluation first (fairdiff evaluate, or make reproduce)")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _overall(gen: pd.DataFrame, method: str) -> pd.DataFrame:
    """One method's overall rows of ``generation_metrics``, indexed by metric."""
    return gen[(gen["method"] == method) & (gen["attribute"] == "all")].drop_duplicates("metric").set_index("metric")


def generation_summary(folder: Path, attributes: list[str]) -> pd.DataFrame:
    """Per method: FID, KID (x 10^3) and IS with intervals, ES-FID per attribute with its interval,
    FID gap, and attribute fidelity (accuracy of real-trained attribute classifiers on the
    method's images, labelled with the prompted group) per attribute."""
    gen, es, gap, fid = (_read(folder, n) for n in ("generation_metrics", "equity_scaled_generation", "fid_gap",
                                                     "attribute_fidelity"))
    rows = []
    for method in dict.fromkeys(gen["method"]):
        g = _overall(gen, method)
        row = {"method": method}
        for metric, label, digits, scale in (("fid", "FID", 1, 1), ("kid", "KID x1e3", 2, 1e3), ("is", "IS", 2, 1)):
            r = g.loc[metric]
            row[label] = _with_interval(r["value"] * scale, r["boot_lo"] * scale, r["boot_hi"] * scale, digits)
        e = es[(es["method"] == method) & (es["metric"] == "es_fid")].set_index("attribute")
        for attr in attributes:
            r = e.loc[attr]
            row[f"ES-FID {attr}"] = _with_interval(r["value"], r.get("boot_lo"), r.get("boot_hi"), 1)
        gp = gap[gap["method"] == method].set_index("attribute")["fid_gap"]
        row["FID gap " + " / ".join(attributes)] = " / ".join(f"{gp[a]:.1f}" for a in attributes)
        acc = fid[(fid["source"] == method) & (fid["metric"] == "accuracy") & (fid["group"] == "all")]
        acc = acc.set_index("attribute")["value"]
        row["fidelity " + " / ".join(attributes)] = " / ".join(f"{acc[a]:.2f}" for a in attributes)
        rows.append(row)
    return _ordered(pd.DataFrame(rows), "method")


def _first_classifier(sem: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first configured classifier (the paper profile has two)."""
    return sem[sem["classifier"] == sem["classifier"].iloc[0]] if "classifier" in sem else sem


def classifier_summary(folder: Path, attribute: str) -> pd.DataFrame:
    """Per training source: AUC with interval for every task, and ES-AUC over ``attribute``."""
    sem = _first_classifier(_read(folder, "semantic_metrics"))
    rows = []
    for source in dict.fromkeys(sem["source"]):
        part = sem[sem["source"] == source]
        row = {"trained on": source if source == "real" else f"{source} images"}
        for task in dict.fromkeys(part["task"]):
            t = part[part["task"] == task]
            auc = t[(t["metric"] == "auc") & (t["attribute"] == "all")].iloc[0]
            es = t[(t["metric"] == "es_auc") & (t["attribute"] == attribute)].iloc[0]
            row[f"{task} AUC"] = _with_interval(auc["value"], auc["boot_lo"], auc["boot_hi"], 3)
            row[f"{task} ES-AUC ({attribute})"] = _with_interval(es["value"], es["boot_lo"], es["boot_hi"], 3)
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["_key"] = [s.split()[0] for s in frame["trained on"]]
    return _ordered(frame, "_key").drop(columns="_key")


def resources_summary(resources: pd.DataFrame) -> pd.DataFrame:
    """Minutes and peak RSS per notebook (``reports/<profile>/resources.csv`` rows of one dataset)."""
    r = resources.assign(minutes=(resources["seconds"] / 60).round(1),
                         peak_rss_mib=resources["peak_rss_mib"].round(0).astype(int))
    return r[["notebook", "minutes", "peak_rss_mib"]]


def _layout(profile: str, dataset: str | None, runs, sets, root: Path | None):
    from fairdiff.config import load_config
    from fairdiff.runs import layout_for
    from fairdiff.schema import get_schema

    cfg = load_config(profile, dataset, sets=sets)
    root = Path(root) if root else WORK_ROOT
    layout = layout_for(cfg, runs or root / "runs")
    return cfg, root, layout, list(get_schema(cfg["dataset"]).attribute_names)


def _dataset_rows(resources: pd.DataFrame, dataset: str) -> pd.DataFrame:
    return resources[resources["dataset"] == dataset] if "dataset" in resources else resources


def results_markdown(profile: str = "mini", dataset: str | None = None, runs: str | Path | None = None,
                     sets=None, root: Path | None = None) -> str:
    """The results tables of one (profile, dataset) from its runs; ``root`` replaces the work folder (tests)."""
    from fairdiff.analysis import TABLES  # noqa: F401 - the table names this reads are written there

    cfg, root, layout, attributes = _layout(profile, dataset, runs, sets, root)
    folder = layout.evaluation / "tables"
    shown = folder.relative_to(root) if folder.is_relative_to(root) else folder
    parts = [f"Tables from `{shown}`.", "", markdown_table(generation_summary(folder, attributes)), "",
             markdown_table(classifier_summary(folder, attributes[0]))]
    resources = root / "reports" / cfg["profile"] / "resources.csv"
    if resources.is_file():
        r = _dataset_rows(pd.read_csv(resources), cfg["dataset"])
        parts += ["", markdown_table(resources_summary(r)), "", f"total: {r['seconds'].sum() / 60:.1f} min"]
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- committed tables
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.rstrip("\n") if out.returncode == 0 else None  # porcelain lines start with a space


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The conditions a measurement was made under: CPU, cores, the thread setting, the load."""
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "load_avg_1_5_15min": load}


def code_state() -> dict:
    """The commit of the checkout and the tracked files that differ from it (outputs excluded)."""
    changed = _git("status", "--porcelain", "--untracked-files=no")
    files = sorted(line[3:] for line in (changed or "").splitlines()
                   if not line[3:].startswith(("figures/tables/", "benchmarks/results/")))
    return {"commit": _git("rev-parse", "HEAD"), "uncommitted_changes": files if changed is not None else None}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_tables(profile: str = "mini", dataset: str | None = None, runs=None, sets=None, root: Path | None = None,
                  dest: Path | None = None, note: str = "") -> Path:
    """Copy the tables the README quotes from a finished reproduction into ``dest`` (default:
    ``figures/tables/<profile>/<dataset>/``, tracked by git) with ``provenance.json``: the
    profile, the overrides, the commit and its uncommitted changes, the date, the machine (CPU,
    cores, ``OMP_NUM_THREADS``, the load averages at export, right after the run) and each
    file's sha256; ``note``: what the exporter saw of the run's conditions (e.g. the load while it
    ran), kept as given. Refuses a ``dest`` that holds files without our provenance."""
    cfg, root, layout, _ = _layout(profile, dataset, runs, sets, root)
    dest = Path(dest) if dest else COMMITTED / cfg["profile"] / cfg["dataset"]
    figures = root / "figures" / cfg["profile"] / cfg["dataset"]
    sources = {f"{n}.csv": layout.evaluation / "tables" / f"{n}.csv" for n in EVALUATION_TABLES}
    sources |= {f"{n}.csv": figures / f"{n}.csv" for n in NOTEBOOK_TABLES}
    resources = root / "reports" / cfg["profile"] / "resources.csv"
    for path in [*sources.values(), resources]:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run the reproduction first "
                                    f"(make reproduce PROFILE={cfg['profile']} DATASETS={cfg['dataset']})")
    if dest.exists() and any(dest.iterdir()) and not (dest / PROVENANCE).is_file():
        raise FileExistsError(f"{dest}: holds files without {PROVENANCE}; not written into")
    for name, path in sources.items():
        io.write_text(dest / name, path.read_text())
    io.write_csv(dest / f"{RESOURCES}.csv", _dataset_rows(pd.read_csv(resources), cfg["dataset"]))
    names = [*sources, f"{RESOURCES}.csv"]
    finished = max(p.stat().st_mtime for p in [*sources.values(), resources])
    record = {"profile": cfg["profile"], "dataset": cfg["dataset"], "overrides": list(sets or []),
              "made_by": f"make reproduce PROFILE={cfg['profile']} DATASETS={cfg['dataset']}, then "
                         f"fairdiff results --export --config {cfg['profile']} --dataset {cfg['dataset']}",
              **code_state(),
              "run_finished_utc": _dt.datetime.fromtimestamp(finished, _dt.timezone.utc).isoformat(timespec="seconds"),
              "exported_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine_at_export": machine(), "note": note,
              "sha256": {name: _sha256(dest / name) for name in names}}
    io.write_text(dest / PROVENANCE, json.dumps(record, indent=1) + "\n")
    return dest


def read_provenance(folder: Path) -> dict:
    path = Path(folder) / PROVENANCE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; export the tables first (fairdiff results --export)")
    return json.loads(path.read_text())


def edited_tables(folder: Path) -> list[str]:
    """Files of a committed set whose content differs from the checksum the export recorded."""
    record = read_provenance(folder)
    return [name for name, digest in record["sha256"].items()
            if not (Path(folder) / name).is_file() or _sha256(Path(folder) / name) != digest]


def column_mismatches(committed: Path, fresh: Path) -> list[str]:
    """One line per CSV of ``committed`` whose columns differ from the same file in ``fresh`` (an
    export of a new run), or that ``fresh`` lacks: the committed tables no longer describe what
    the code writes."""
    problems = []
    for path in sorted(Path(committed).glob("*.csv")):
        other = Path(fresh) / path.name
        if not other.is_file():
            problems.append(f"{path.name}: not written by the fresh run")
            continue
        old, new = list(pd.read_csv(path, nrows=0).columns), list(pd.read_csv(other, nrows=0).columns)
        if old != new:
            problems.append(f"{path.name}: committed columns {old} != fresh {new}")
    return problems


# ----------------------------------------------------------------------------- the README's blocks
def _percent(share: float) -> str:
    return f"{100 * share:.1f} %"


def _interval(row, digits: int, scale: float = 1.0) -> str:
    """A value with its interval, as the README's tables print it."""
    return _with_interval(row["value"] * scale, row["boot_lo"] * scale, row["boot_hi"] * scale, digits)


def _separation(row, ref, lower_is_better: bool) -> str | None:
    """"better" / "worse" when the two 95 % intervals do not overlap, else None."""
    if row["boot_hi"] < ref["boot_lo"] or row["boot_lo"] > ref["boot_hi"]:
        return "better" if (row["value"] < ref["value"]) == lower_is_better else "worse"
    return None


def _comparisons(folder: Path, task: str) -> list[tuple]:
    """(method, metric label, row, baseline row, lower is better, (digits, scale)) for the overall metrics,
    labelled and rounded as the tables print them."""
    gen = _read(folder, "generation_metrics")
    sem = _first_classifier(_read(folder, "semantic_metrics"))
    auc = sem[(sem["metric"] == "auc") & (sem["attribute"] == "all") & (sem["task"] == task)].set_index("source")
    out = []
    methods = [m for m in _ordered(pd.DataFrame({"m": list(dict.fromkeys(gen["method"]))}), "m")["m"] if m != "baseline"]
    base = _overall(gen, "baseline")
    for method in methods:
        g = _overall(gen, method)
        for metric, label, lower, shown in (("fid", "FID", True, (1, 1.0)), ("kid", "KID x1e3", True, (2, 1e3)),
                                            ("is", "IS", False, (2, 1.0))):
            out.append((method, label, g.loc[metric], base.loc[metric], lower, shown))
        if method in auc.index:
            out.append((method, f"{task} AUC", auc.loc[method], auc.loc["baseline"], False, (3, 1.0)))
    return out


def learning_block(folder: Path) -> str:
    """Bullets: the loss falls, classifiers on generated images, the weights' negative share."""
    loss = _read(folder, "02_loss_summary").set_index("method")
    weights = _read(folder, "02_weight_summary").set_index("method")
    sem = _first_classifier(_read(folder, "semantic_metrics"))
    task = sem["task"].iloc[0]
    auc = sem[(sem["metric"] == "auc") & (sem["attribute"] == "all") & (sem["task"] == task)].set_index("source")["value"]
    generated = auc.drop("real")
    return "\n".join([
        f"- The denoising loss falls from {loss.loc['baseline', 'first steps']:.2f} (first steps) to "
        f"{loss.loc['baseline', 'last 20 %']:.2f} (last 20 %, baseline; `02_loss_summary.csv`).",
        f"- Classifiers trained on generated images reach {task} AUC {generated.min():.2f}-{generated.max():.2f}, "
        f"against {auc['real']:.2f} for real images (`semantic_metrics.csv`).",
        f"- The weights of `random` are negative {_percent(weights.loc['random', 'negative_share'])} of the time "
        f"(docs/method.md §2.2 predicts 28 %); those of `fairbo` {_percent(weights.loc['fairbo', 'negative_share'])} "
        "(`02_weight_summary.csv`): from the first step the exploration mix pulls every sigma towards "
        "E[u] = 0.5, where about 12 % are negative (docs/method.md §3.2, §3.6)."])


def separation_block(folder: Path) -> str:
    """Which methods' overall intervals do not overlap the baseline's, written from the values."""
    task = _first_classifier(_read(folder, "semantic_metrics"))["task"].iloc[0]
    comparisons = _comparisons(folder, task)
    apart = [(m, label, row, ref, _separation(row, ref, lower), shown)
             for m, label, row, ref, lower, shown in comparisons
             if _separation(row, ref, lower)]
    metrics = ", ".join(dict.fromkeys(label for _, label, *_ in comparisons))
    if not apart:
        return (f"On this synthetic data and at this scale, no method's overall {metrics} interval separates "
                "from the baseline's (95 % intervals).")
    lines = [f"On this synthetic data and at this scale, these overall intervals do not overlap the baseline's "
             f"(95 %; {metrics} compared):"]
    lines += [f"- `{m}` {label} {_interval(row, *shown)} against {_interval(ref, *shown)}: {verdict}"
              for m, label, row, ref, verdict, shown in apart]
    lines += ["", "Every other interval of these metrics overlaps the baseline's."]
    return "\n".join(lines)


def fairbo_block(folder: Path, attributes: list[str]) -> str:
    """fairbo against the baseline on the group differences: ES-FID, FID gap, ES-AUC."""
    es = _read(folder, "equity_scaled_generation")
    es = es[es["metric"] == "es_fid"].set_index(["method", "attribute"])
    gap = _read(folder, "fid_gap").set_index(["method", "attribute"])["fid_gap"]
    sem = _first_classifier(_read(folder, "semantic_metrics"))
    task = sem["task"].iloc[0]
    esauc = sem[(sem["metric"] == "es_auc") & (sem["task"] == task) & (sem["attribute"] == attributes[0])]
    esauc = esauc.set_index("source")
    worse = [a for a in attributes if es.loc[("fairbo", a), "value"] > es.loc[("baseline", a), "value"]]
    apart = [a for a in attributes if _separation(es.loc[("fairbo", a)], es.loc[("baseline", a)], True)]
    overlap = ("the intervals overlap on every attribute" if not apart else
               "the intervals do not overlap on " + ", ".join(apart))
    lead = (f"ES-FID of `fairbo` is higher (less equal) than the baseline's on {len(worse)} of {len(attributes)} "
            f"attributes ({', '.join(worse) or 'none'}); {overlap}:")
    es_words = "; ".join(f"over {a} {es.loc[('fairbo', a), 'value']:.1f} against {es.loc[('baseline', a), 'value']:.1f}"
                         for a in attributes)
    gap_words = "; ".join(f"over {a} {gap[('fairbo', a)]:.1f} against {gap[('baseline', a)]:.1f}" for a in attributes)
    auc_fb, auc_base = esauc.loc["fairbo"], esauc.loc["baseline"]
    auc_sep = _separation(auc_fb, auc_base, False)
    return "\n".join([
        lead, f"- ES-FID (fairbo against baseline): {es_words}.",
        f"- FID gap (largest minus smallest group FID; no interval): {gap_words}.",
        f"- {task} ES-AUC over {attributes[0]}: {_interval(auc_fb, 3)} against {_interval(auc_base, 3)}"
        f" ({'intervals overlap' if auc_sep is None else auc_sep})."])


def small_groups_block(folder: Path) -> str:
    gen = _read(folder, "generation_metrics")
    rows = gen[(gen["method"] == "baseline") & (gen["metric"] == "fid") & (gen["attribute"] != "all")
               & (gen["size_matched"] != True)]  # noqa: E712 - a column of booleans read from CSV
    small = rows[rows["small_group"] == True].drop_duplicates(["attribute", "group"])  # noqa: E712
    if small.empty:
        return "No test group is below the minimum group size."
    listed = ", ".join(f"{g} ({a}, {int(n)} images)" for a, g, n in zip(small["attribute"], small["group"],
                                                                          small["n_real"]))
    return f"Test groups below the minimum size, flagged `small_group` in `generation_metrics.csv`: {listed}."


def provenance_block(folder: Path, shown: str) -> str:
    p = read_provenance(folder)
    m = p["machine_at_export"]
    changes = p.get("uncommitted_changes") or []
    code = f"commit `{(p['commit'] or 'unknown')[:7]}`" + (f" with uncommitted changes to {len(changes)} files"
                                                           if changes else "")
    threads = m["omp_num_threads"] or "unset (torch: one thread per core)"
    load = " / ".join(f"{x:.1f}" for x in m["load_avg_1_5_15min"])
    return (f"Made by `make reproduce` (profile `{p['profile']}`, {p['dataset']}) at {code}, finished "
            f"{p['run_finished_utc'][:16].replace('T', ' ')} UTC, on {m['cores']} cores ({m['cpu']}), "
            f"`OMP_NUM_THREADS` {threads}; load average {load} (1 / 5 / 15 min) at the export right after"
            + (f"; {p['note']}" if p.get("note") else "") + f". Tables and `provenance.json` in `{shown}`.")


def resources_block(folder: Path) -> str:
    r = _read(folder, RESOURCES)
    return (markdown_table(resources_summary(r)) + "\n\n"
            f"In all, **{r['seconds'].sum() / 60:.1f} min** starting with no data and no models (the synthetic data, "
            "the VAE and every model are made during the run).")


def stage_keys_block() -> str:
    """The settings left out of stage keys, listed from :mod:`fairdiff.stage_keys` itself."""
    from fairdiff.stage_keys import METHOD_SECTIONS, NOT_IN_KEYS, OMITTED_AT

    def yaml_value(v) -> str:
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    return "\n".join([
        "- left out of every key (they change how work is done, never what it produces): "
        + ", ".join(f"`{k}`" for k in sorted(NOT_IN_KEYS)) + ";",
        "- left out only at the value that reproduces runs made before the setting existed: "
        + ", ".join(f"`{k}` at `{yaml_value(v)}`" for k, v in sorted(OMITTED_AT.items())) + ";",
        "- read by some methods only, so in the training key of those methods alone: "
        + "; ".join(f"`{section}.*` ({', '.join(f'`{m}`' for m in methods)})"
                    for section, methods in METHOD_SECTIONS.items()) + ".",
    ])


# ----------------------------------------------------------------------------- performance
def _bench(bench: Path, name: str) -> pd.DataFrame:
    return _read(bench, name)


def _measured_at(provenance: pd.DataFrame, *files: str) -> str:
    rows = provenance[provenance["file"].isin(files)]
    return "; ".join(dict.fromkeys(f"`{str(c)[:7]}` {str(d)[:10]}" for c, d in zip(rows["commit"], rows["date_utc"])))


def performance_block(bench: Path, tables: Path) -> str:
    """The README's performance table: every measured value from ``benchmarks/results/`` (and the
    reproduction's resources), with the commit and date each file was measured at."""
    prov = _bench(bench, "provenance")
    train = _bench(bench, "train").set_index("variant")
    b128 = _bench(bench, "train-b128").set_index("variant")
    fbp = _bench(bench, "bench_fbp").set_index("what")
    ev = _bench(bench, "bench_eval_features").set_index("way")
    sample = _bench(bench, "sample").set_index("variant")
    synth = _bench(bench, "bench_synth_fairgenmed").set_index("stage")
    ext = _bench(bench, "bench_synth_external").set_index("step")
    index = _bench(bench, "index_fairgenmed")
    res = _read(tables, RESOURCES)
    ours, ref, fb = train.loc["fairdiff"], train.loc["reference"], train.loc["fairdiff-fairbo"]
    speed = ours["speedup_vs_reference"]
    share = fb["fbp_share_of_baseline_step"]
    b_ours, b_fb = b128.loc["fairdiff"], b128.loc["fairdiff-fairbo"]
    minutes = res["seconds"].sum() / 60
    once, authors = ev.loc["once + slice"], ev.loc["per group, per metric (authors)"]
    batched, single = sample.loc["ddim 12 steps, batch 64"], sample.loc["ddim 12 steps, batch 1"]
    ddim, dpm = sample.loc["ddim 75 steps, batch 64"], sample.loc["dpmsolver 12 steps, batch 64"]
    synth_rate = synth.loc["generate_fairgenmed, end to end", "subjects_per_s_cpu"]
    ext_rates = [ext.loc[f"generate {d}", "per_s_cpu"] for d in ("ham10000", "chexpert")]
    index_cpu = index["cpu_s"].median()
    eval_speed = authors["speedup_cpu"]
    sample_speed = batched["images_per_s"] / single["images_per_s"]
    repeats = lambda r: f"{int(r['repeats'])} repeat{'s' if int(r['repeats']) != 1 else ''}"  # noqa: E731
    met = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    rss = ", ".join(f"{n[:2]}: {v:.0f} MiB" for n, v in zip(res["notebook"], res["peak_rss_mib"]))
    rows = [
        ("training step, this trainer vs a loop written the way the authors' script works (DataLoader decoding and "
         "preprocessing every JPEG, tokenizer + CLIP text encoder + VAE every step, then UNet, AdamW, EMA; fp32, one "
         "process), same tiny model, data and batch (mini, 32 px, batch 16); where the step's time goes: "
         "`profile_train.md`",
         f"{ours['ms_per_step_mean']:.1f} vs {ref['ms_per_step_mean']:.1f} ms per step: **{speed:.2f}x** "
         f"(ratio within each of {repeats(ours)}: {ours['speedup_vs_reference_min']:.2f}-"
         f"{ours['speedup_vs_reference_max']:.2f}x)", f"3.0x: {met(speed >= 3.0)}", "train.csv"),
        ("FBP's own work in a fairbo step through the real trainer (weights, update, BO events every 30 steps), "
         "over the baseline step",
         f"mini, batch 16: {fb['fbp_ms_per_step']:.1f} ms of a {ours['ms_per_step_mean']:.1f} ms step, **{_percent(share)}** "
         f"({repeats(fb)}: {_percent(fb['fbp_share_of_baseline_step_min'])}-{_percent(fb['fbp_share_of_baseline_step_max'])}); "
         f"batch 128 ({repeats(b_fb)}): {b_fb['fbp_ms_per_step']:.1f} ms of a {b_ours['ms_per_step_mean']:.0f} ms step, "
         f"**{_percent(b_fb['fbp_share_of_baseline_step'])}**", f"< 3 % at mini batch 16: {met(share < 0.03)}",
         "train.csv, train-b128.csv"),
        ("one BO event (GP fit + UCB maximisation, K = 7, 30 points, 1 thread): the recorded run's events replayed "
         "(`bo_replay.md`) / a synthetic window; FBP per step without BO",
         f"{fbp.loc['one BO event, recorded trace, shipped', 'median_ms']:.0f} ms (the authors' gpytorch fit: "
         f"{fbp.loc['one BO event, recorded trace, authors', 'median_ms']:.0f} ms) / "
         f"{fbp.loc['one BO event (as shipped: 1 thread)', 'median_ms']:.0f} ms; "
         f"{fbp.loc['weights+update, step without BO', 'median_ms']:.2f} ms", "", "bench_fbp.csv"),
        ("`make reproduce` (mini, FairGenMed, from no data; `make env` not included)",
         f"**{minutes:.1f} min** (the machine's load while it ran: the provenance of the results above)",
         f"< 15 min: {met(minutes < 15)}", "figures/tables/mini/fairgenmed/resources.csv"),
        ("per-group evaluation, 19 groups + overall, FID + MiFID + IS: features once and sliced vs the authors' "
         "re-extraction per group and metric",
         f"{once['wall_s']:.2f} vs {authors['wall_s']:.1f} s: **{eval_speed:.1f}x** "
         f"({ev.loc['per group', 'speedup_cpu']:.1f}x vs re-extracting per group only); the full table of "
         f"`generation_metrics` (KID, precision/recall/density/coverage, jackknife intervals, size-matched repeats) "
         f"{ev.loc['once + slice, every metric of generation_metrics', 'wall_s']:.1f} s",
         f">= 10x: {met(eval_speed >= 10)}", "bench_eval_features.csv"),
        ("sampling, batched (64) vs one image at a time, 12 steps, float32",
         f"{batched['images_per_s']:.1f} vs {single['images_per_s']:.1f} images/s: **{sample_speed:.1f}x**",
         f">= 3x: {met(sample_speed >= 3)}", "sample.csv"),
        ("the paper's DDIM 75 steps vs DPM-Solver++ 12 steps, 160 test prompts, batch 64, FID on the domain "
         "encoder (one run each, no interval)",
         f"{ddim['images_per_s']:.1f} vs {dpm['images_per_s']:.1f} images/s "
         f"(**{dpm['images_per_s'] / ddim['images_per_s']:.1f}x**) at FID {ddim['fid_vs_test']:.1f} vs "
         f"{dpm['fid_vs_test']:.1f}", "", "sample.csv"),
        ("peak RSS of each mini notebook (runner + kernel) / the training benchmark process",
         f"{rss} / {ours['process_peak_rss_mib']:.0f} MiB (batch 16), {b_ours['process_peak_rss_mib']:.0f} MiB "
         "(batch 128)", "", "figures/tables/mini/fairgenmed/resources.csv, train.csv, train-b128.csv"),
        ("synthetic FairGenMed, full-size JPG + npz, one core", f"**{synth_rate:.0f} subjects/s** end to end",
         f"100/s: {met(synth_rate >= 100)}", "bench_synth_fairgenmed.csv"),
        ("synthetic HAM10000 / CheXpert, one core", f"{ext_rates[0]:.0f} / {ext_rates[1]:.0f} images/s",
         f"100/s: {met(min(ext_rates) >= 100)}", "bench_synth_external.csv"),
        ("indexing 10,000 FairGenMed subjects (median of the repeats)", f"{index_cpu:.1f} CPU-s",
         f"< 10 s: {met(index_cpu < 10)}", "index_fairgenmed.csv"),
        ("SD-2.1-sized UNet, 512 px, bf16, on a GPU (`benchmarks/gpu_check.sh`)",
         "prepared, **not run**: no GPU was lent to this task", "", ""),
    ]
    table = pd.DataFrame(rows, columns=["what", "measured", "target", "file"])
    files = [[f.strip() for f in cell.split(",") if f.strip()] for cell in table["file"]]
    table["measured at"] = [
        "; ".join(filter(None, [_measured_at(prov, *[f for f in fs if "/" not in f]),
                                "the reproduction above" if any("/" in f for f in fs) else ""])) or "never"
        for fs in files]
    table["file"] = ["; ".join(f"`{f}`" for f in fs) for fs in files]
    return markdown_table(table)


def performance_notes_block(bench: Path) -> str:
    """FBP's cost per step and the step length above which it stays under 3 %, from the results."""
    train = _bench(bench, "train").set_index("variant")
    b128 = _bench(bench, "train-b128").set_index("variant")
    bo = _bench(bench, "bench_fbp").set_index("what").loc["one BO event, recorded trace, shipped", "median_ms"]
    per_step = train.loc["fairdiff-fairbo", "fbp_ms_per_step"]
    return (f"FBP's own cost does not depend on the model: {per_step:.1f} ms a step at batch 16 and "
            f"{b128.loc['fairdiff-fairbo', 'fbp_ms_per_step']:.1f} ms at batch 128 (`train.csv`, `train-b128.csv`), "
            f"including a BO event of about {bo:.0f} ms every 30 steps ({bo / 30:.1f} ms a step; `bench_fbp.csv`). "
            f"At {per_step:.1f} ms its share is under 3 % for any step longer than {per_step / 0.03:.0f} ms, which "
            f"the tiny CPU model's {train.loc['fairdiff', 'ms_per_step_mean']:.0f} ms step is not.")


def readme_blocks(tables: Path | None = None, bench: Path | None = None, study: Path | None = None) -> dict[str, str]:
    """Every results block of the README, rendered from the committed tables."""
    from fairdiff.schema import get_schema
    from fairdiff.study import readme as study_readme

    profile, dataset = README_SET
    tables = Path(tables) if tables else COMMITTED / profile / dataset
    bench = Path(bench) if bench else BENCH_RESULTS
    attributes = list(get_schema(dataset).attribute_names)
    shown = project_path(tables)
    return {
        "reproduction-provenance": provenance_block(tables, shown),
        "reproduction-resources": resources_block(tables),
        "image-quality": markdown_table(generation_summary(tables, attributes)),
        "classifiers": markdown_table(classifier_summary(tables, attributes[0])),
        "learning": learning_block(tables),
        "separation": separation_block(tables),
        "fairbo": fairbo_block(tables, attributes),
        "small-groups": small_groups_block(tables),
        "performance": performance_block(bench, tables),
        "performance-notes": performance_notes_block(bench),
        "stage-keys": stage_keys_block(),
        **study_readme.blocks(study or STUDY_EXPORT, bench),
    }


BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)


def render_readme(text: str, blocks: dict[str, str]) -> str:
    """``text`` with the body of every ``<!-- results:NAME -->`` ... ``<!-- /results:NAME -->``
    block replaced by ``blocks[NAME]``. A block the text lacks, or a marker with no rendering, is
    an error: the README and the renderer must name the same blocks."""
    found = [m.group("name") for m in BLOCK.finditer(text)]
    opened = re.findall(r"<!-- results:([\w-]+) -->", text)
    if sorted(found) != sorted(opened):
        raise ValueError(f"README results markers not closed: {sorted(set(opened) - set(found))}")
    if sorted(found) != sorted(blocks):
        raise ValueError(f"README results blocks {sorted(found)} != rendered blocks {sorted(blocks)}")
    return BLOCK.sub(lambda m: m.group(1) + blocks[m.group("name")].rstrip("\n") + "\n" + m.group(4), text)


def readme_differences(text: str, blocks: dict[str, str]) -> list[str]:
    """Names of the blocks whose README body differs from the rendering."""
    rendered = render_readme(text, blocks)
    now = {m.group("name"): m.group("body") for m in BLOCK.finditer(text)}
    new = {m.group("name"): m.group("body") for m in BLOCK.finditer(rendered)}
    return [name for name in now if now[name] != new[name]]


def write_readme(path: Path = README, blocks: dict[str, str] | None = None) -> list[str]:
    """Rewrite the README's results blocks from the committed tables; returns the blocks changed."""
    text = Path(path).read_text()
    blocks = blocks if blocks is not None else readme_blocks()
    changed = readme_differences(text, blocks)
    if changed:
        io.write_text(path, render_readme(text, blocks))
    return changed
