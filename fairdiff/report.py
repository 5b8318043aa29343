"""The report stage: the README's results tables, printed from the evaluation stage's tables
(``fairdiff report`` / ``fairdiff results``).

Numbers in the README are pasted from this output, never typed by hand, so each one traces back
to a file in ``runs/<dataset>-<profile>/evaluation/tables/`` (written by
:func:`fairdiff.analysis.evaluate`, which notebook 04 and ``fairdiff evaluate`` both call) and the
command that made it.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairdiff.env import WORK_ROOT

METHOD_ORDER = ["real", "baseline", "random", "fairbo", "reweight", "resample"]


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


def generation_summary(folder: Path, attributes: list[str]) -> pd.DataFrame:
    """Per method: FID, KID (x 10^3) and IS with intervals, ES-FID per attribute with its interval,
    FID gap, and attribute fidelity (accuracy of real-trained attribute classifiers on the
    method's images, labelled with the prompted group) per attribute."""
    gen, es, gap, fid = (_read(folder, n) for n in ("generation_metrics", "equity_scaled_generation", "fid_gap",
                                                     "attribute_fidelity"))
    rows = []
    for method in dict.fromkeys(gen["method"]):
        g = gen[(gen["method"] == method) & (gen["attribute"] == "all")].drop_duplicates("metric").set_index("metric")
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


def classifier_summary(folder: Path, attribute: str) -> pd.DataFrame:
    """Per training source: AUC with interval for every task, and ES-AUC over ``attribute``."""
    sem = _read(folder, "semantic_metrics")
    if "classifier" in sem:  # the first configured classifier (the paper profile has two)
        sem = sem[sem["classifier"] == sem["classifier"].iloc[0]]
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


def results_markdown(profile: str = "mini", dataset: str | None = None, runs: str | Path | None = None,
                     sets=None, root: Path | None = None) -> str:
    """The results tables of one (profile, dataset); ``root`` replaces the work folder (tests)."""
    from fairdiff.analysis import TABLES  # noqa: F401 - the table names this reads are written there
    from fairdiff.config import load_config
    from fairdiff.runs import layout_for
    from fairdiff.schema import get_schema

    cfg = load_config(profile, dataset, sets=sets)
    root = Path(root) if root else WORK_ROOT
    folder = layout_for(cfg, runs or root / "runs").evaluation / "tables"
    attributes = list(get_schema(cfg["dataset"]).attribute_names)
    shown = folder.relative_to(root) if folder.is_relative_to(root) else folder
    parts = [f"Tables from `{shown}`.", "", markdown_table(generation_summary(folder, attributes)), "",
             markdown_table(classifier_summary(folder, attributes[0]))]
    resources = root / "reports" / cfg["profile"] / "resources.csv"
    if resources.is_file():
        r = pd.read_csv(resources)
        r = r[r["dataset"] == cfg["dataset"]] if "dataset" in r else r
        r = r.assign(minutes=(r["seconds"] / 60).round(1), peak_rss_mib=r["peak_rss_mib"].round(0).astype(int))
        parts += ["", markdown_table(r[["notebook", "minutes", "peak_rss_mib"]]),
                  "", f"total: {r['seconds'].sum() / 60:.1f} min"]
    return "\n".join(parts) + "\n"
