"""The evaluate and report stages: every table of the paper's analysis, written by one function
that notebook 04 and ``fairdiff evaluate`` both call.

Tables go to ``runs/<dataset>-<profile>/evaluation/tables/<name>.csv`` (the contract ``fairdiff
results`` reads), each regenerated only when the stage keys of what it is made from change.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairdiff import io

TABLES = ("generation_metrics", "fid_gap", "equity_scaled_generation", "semantic_metrics", "classifier_fairness",
          "attribute_fidelity", "group_reference_metrics")  # the last only with evaluate.reference.attribute set


def tables_dir(ctx) -> Path:
    return ctx.layout.evaluation / "tables"


def fid_gap(generation: pd.DataFrame) -> pd.DataFrame:
    """Per method and attribute, the largest minus the smallest group FID."""
    per_group = generation[(generation["attribute"] != "all") & (generation["metric"] == "fid")]
    return (per_group.groupby(["method", "attribute"], sort=False)["value"].agg(lambda v: v.max() - v.min())
            .rename("fid_gap").reset_index())


def equity(generation: pd.DataFrame, methods) -> pd.DataFrame:
    """ES-FID and ES-IS per method and attribute (:func:`fairdiff.evaluate.features.equity_table`)."""
    from fairdiff.evaluate.features import equity_table

    return pd.concat([equity_table(generation[generation["method"] == m]).assign(method=m) for m in methods],
                     ignore_index=True)


def compare_with_baseline(table: pd.DataFrame, lower_is_better: bool, what: str) -> list[str]:
    """One sentence per method: better, worse or not distinguishable from the baseline. A
    difference counts only when the two 95 % intervals do not overlap."""
    ref = table[table["method"] == "baseline"].iloc[0]
    lines = []
    for _, row in table[table["method"] != "baseline"].iterrows():
        better = row["value"] < ref["value"] if lower_is_better else row["value"] > ref["value"]
        separated = row["boot_hi"] < ref["boot_lo"] or row["boot_lo"] > ref["boot_hi"]
        verdict = ("better than" if better else "worse than") if separated else "not distinguishable from"
        lines.append(f"- {what} of **{row['method']}** ({row['value']:.3g} [{row['boot_lo']:.3g}, {row['boot_hi']:.3g}]) "
                     f"is {verdict} the baseline ({ref['value']:.3g} [{ref['boot_lo']:.3g}, {ref['boot_hi']:.3g}]).")
    return lines


def verdict(tables: dict, cfg: dict, extractor_name: str) -> str:
    """What the numbers do and do not show, written from the values (markdown)."""
    gen, gap, sem = tables["generation_metrics"], tables["fid_gap"], tables["semantic_metrics"]
    fid_all = gen[(gen["attribute"] == "all") & (gen["metric"] == "fid")]
    lines = compare_with_baseline(fid_all, True, "Overall FID") if "baseline" in set(fid_all["method"]) else []
    gaps = gap.pivot(index="method", columns="attribute", values="fid_gap")
    if {"fairbo", "baseline"} <= set(gaps.index):
        fair_gap = gaps.loc["fairbo"] - gaps.loc["baseline"]
        lines.append("- Per-group FID gap, fairbo minus baseline (negative = more equal): "
                     + ", ".join(f"{a} {v:+.3g}" for a, v in fair_gap.items())
                     + ". These gaps have no interval here; the per-group FID intervals show how much of a gap "
                       "is noise.")
    auc = sem[(sem["attribute"] == "all") & (sem["metric"] == "auc")]
    first = auc["classifier"].iloc[0] if "classifier" in auc and len(auc) else None
    if first is not None:
        auc = auc[auc["classifier"] == first]
    auc_real = auc[auc["source"] == "real"].set_index("task")["value"]
    auc_fb = auc[auc["source"] == "fairbo"].set_index("task")["value"]
    if len(auc_real) and len(auc_fb):
        lines.append("- Classifier AUC, trained on fairbo images vs on real images: "
                     + ", ".join(f"{t} {auc_fb[t]:.3f} vs {auc_real[t]:.3f}" for t in auc_real.index) + ".")
    lines.append(f"- Profile `{cfg['profile']}` on {'synthetic' if cfg['data'].get('synthetic') else 'real'} data "
                 f"with the `{extractor_name}` extractor: this demonstrates the pipeline; it does not test the "
                 "paper's claims at the paper's scale.")
    return "\n".join(lines)


def evaluate(ctx, methods=None, progress: bool = False) -> dict[str, pd.DataFrame]:
    """Every analysis table for ``methods`` (default: the profile's ``methods``), written to
    :func:`tables_dir` together with ``verdict.md``. Stages below (training, sampling, features,
    classifiers) are reused when their keys are unchanged."""
    from fairdiff import stages
    from fairdiff.progress import announce

    methods = list(methods or ctx.cfg["methods"])
    announce("evaluate", "generation metrics")
    gen = pd.concat([stages.generation_table(ctx, m) for m in methods], ignore_index=True)
    announce("evaluate", "classifiers on real and generated images")
    sem = pd.concat([stages.semantic_table(ctx, s) for s in ["real"] + methods], ignore_index=True)
    announce("evaluate", "attribute fidelity")
    fidelity = pd.concat([stages.fidelity_table(ctx, s) for s in ["real"] + methods], ignore_index=True)
    tables = {"generation_metrics": gen, "fid_gap": fid_gap(gen), "equity_scaled_generation": equity(gen, methods),
              "semantic_metrics": sem, "classifier_fairness": sem[sem["metric"].isin(["es_auc", "dpd", "eod"])],
              "attribute_fidelity": fidelity}
    if ctx.cfg["evaluate"]["reference"]["attribute"] is not None:
        announce("evaluate", "groups at matched size (evaluate.reference)")
        tables["group_reference_metrics"] = pd.concat([stages.group_reference_table(ctx, m) for m in methods],
                                                      ignore_index=True)
    out = tables_dir(ctx)
    for name, frame in tables.items():
        io.write_csv(out / f"{name}.csv", frame, float_format="%.6g")
    io.write_text(out / "verdict.md", verdict(tables, ctx.cfg, stages.domain_encoder(ctx).name) + "\n")
    return tables
