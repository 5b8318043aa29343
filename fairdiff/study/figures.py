"""Notebook 06's figures, each drawn from the study's result tables alone (the CSVs in
``runs/study/<profile>/results/`` or their exported copies in ``figures/study/<profile>/``), so a
reader can redraw every figure from committed files; only the samples need the runs themselves.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fairdiff.study.tables import fmt

VERDICT_COLOURS = {"narrower": "tab:green", "wider": "tab:red", "equivalent": "tab:blue", "inconclusive": "tab:grey"}


def forest_plot(primary: pd.DataFrame):
    """The primary endpoint per comparison: the change in % of the baseline gap with its 95 %
    interval, the equivalence band (+-margin) shaded, coloured by the pre-registered verdict, the
    Holm-adjusted p beside the primary family's rows."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = primary.reset_index(drop=True)
    y = np.arange(len(rows))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.42 * len(rows)))
    margin = float(rows["margin_pct"].iloc[0]) if len(rows) else 20.0
    ax.axvspan(-margin, margin, color="tab:blue", alpha=0.1, lw=0)
    ax.axvline(0, color="black", lw=0.8)
    err = np.vstack([(rows["pct"] - rows["pct_lo"]).clip(lower=0), (rows["pct_hi"] - rows["pct"]).clip(lower=0)])
    colours = [VERDICT_COLOURS.get(v, "tab:grey") for v in rows["verdict"]]
    ax.errorbar(rows["pct"], y, xerr=np.nan_to_num(err), fmt="none", ecolor="grey", capsize=3)
    ax.scatter(rows["pct"], y, c=colours, zorder=3)
    labels = [f"{a} vs {b}" + (" *" if f == "primary" else "") for a, b, f in
              zip(rows["arm"], rows["against"], rows["family"])]
    ax.set_yticks(y, labels, fontsize=8)
    for yi, row in zip(y, rows.itertuples()):
        text = f"{row.verdict}" + (f", Holm p {fmt(row.p_holm, 2)}" if row.family == "primary" else "")
        ax.annotate(text, (1.0, yi), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)
    gap = rows["reference_gap"].iloc[0] if len(rows) else np.nan
    ax.set_xlabel(f"change of the planted group's FID excess over the majority, % of the baseline gap ({fmt(gap)})")
    ax.set_title("Primary endpoint, paired by seed (95 % t interval); shaded: equivalence margin; * primary family",
                 fontsize=9)
    ax.legend(handles=[Patch(color=c, label=v) for v, c in VERDICT_COLOURS.items()], fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def dose_response(primary: pd.DataFrame, arms: pd.DataFrame, reference: str = "baseline"):
    """The fixed-scale arms (the baseline and every ``random`` arm: sigma set by hand, no BO) placed
    by the sigma of the planted group:
    their primary-endpoint change from the baseline (95 % interval), the baseline itself at 0; the
    marker says the sigma of every other group. Does any sigma help the planted group?"""
    import matplotlib.pyplot as plt

    fixed = arms[arms["method"].isin(("baseline", "random"))].set_index("arm")
    rows = primary[(primary["against"] == reference) & primary["arm"].isin(fixed.index)].set_index("arm")
    points = [(reference, 0.0, 0.0, 0.0, 0.0)] if reference in fixed.index else []
    for arm, r in rows.iterrows():
        points.append((arm, float(fixed.loc[arm, "planted_sigma"]), float(fixed.loc[arm, "others_sigma"]),
                       r["pct"], (r["pct_lo"], r["pct_hi"])))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.axhline(0, color="black", lw=0.8)
    for arm, x, others, pct, ci in points:
        lo, hi = ci if isinstance(ci, tuple) else (pct, pct)
        marker = "s" if others == 0 else ("o" if np.isclose(others, x) else "^")
        ax.errorbar([x], [pct], yerr=[[max(pct - lo, 0) if np.isfinite(lo) else 0],
                                      [max(hi - pct, 0) if np.isfinite(hi) else 0]],
                    fmt=marker, capsize=3, ms=7)
        ax.annotate(arm, (x, pct), xytext=(6, 4), textcoords="offset points", fontsize=7)
    ax.set_xlabel("sigma of the planted group (fixed, no BO)")
    ax.set_ylabel("primary endpoint change, % of baseline gap")
    ax.set_title("Dose-response of the fixed-sigma arms (square: others at 0; circle: all equal; triangle: others "
                 "differ)", fontsize=8)
    fig.tight_layout()
    return fig


def sigma_trajectories(traj: pd.DataFrame, planted_column: str):
    """Per FBP-type arm: every group's sigma used (mean over seeds, min-max shaded) against the band
    the exploration drift alone gives without BO (grey: mean +- 1.96 sd), the planted group in red."""
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(traj["arm"]))
    fig, axes = plt.subplots(1, max(1, len(arms)), figsize=(5.2 * max(1, len(arms)), 3.4), squeeze=False)
    for ax, arm in zip(axes.flat, arms):
        part = traj[traj["arm"] == arm]
        band = part[part["group"] == planted_column] if planted_column in set(part["group"]) else part
        band = band.drop_duplicates("step")
        ax.fill_between(band["step"], band["band_lo"], band["band_hi"], color="grey", alpha=0.25,
                        label="drift alone (no BO), 95 %")
        ax.plot(band["step"], band["band_mean"], color="grey", lw=1, ls="--")
        for group, g in part.groupby("group", sort=False):
            mine = group == planted_column
            colour = "tab:red" if mine else None
            ax.plot(g["step"], g["mean"], lw=2 if mine else 0.8, color=colour, alpha=1 if mine else 0.6,
                    label=group if mine else None)
            if mine:
                ax.fill_between(g["step"], g["min"], g["max"], color="tab:red", alpha=0.15)
        ax.set_title(f"{arm}: sigma used per group (mean over seeds)", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("sigma")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def sweep_heatmap(cells: pd.DataFrame, metric: str = "fid_gap"):
    """W x r grid of the mean gap reduction (baseline gap minus the cell's; positive = narrower),
    each cell annotated with its 95 % interval over seeds."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    part = cells[cells["metric"] == metric]
    value = part.pivot(index="window", columns="exploitation", values="reduction")
    text = part.assign(label=[f"{fmt(m, 2)}\n[{fmt(lo, 2)}, {fmt(hi, 2)}]" for m, lo, hi in
                              zip(part["reduction"], part["lo"], part["hi"])])
    labels = text.pivot(index="window", columns="exploitation", values="label").reindex_like(value)
    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * value.shape[1], 0.8 + 0.9 * value.shape[0]))
    bound = float(np.nanmax(np.abs(value.to_numpy()))) if np.isfinite(value.to_numpy()).any() else 1.0
    sns.heatmap(value, annot=labels.to_numpy(), fmt="", cmap="RdBu", center=0, vmin=-(bound or 1), vmax=bound or 1,
                ax=ax, cbar_kws={"label": f"{metric} reduction"}, annot_kws={"fontsize": 8})
    ax.set_xlabel("exploitation rate r")
    ax.set_ylabel("BO window W (steps)")
    ax.set_title(f"fairbo vs baseline: {metric} reduction, mean [95 % interval] over seeds", fontsize=9)
    return fig


def paired_lines(per_seed: pd.DataFrame, specs: pd.DataFrame):
    """Per metric, every seed's value for every arm, the points of one seed joined: the pairing the
    statistics use."""
    import matplotlib.pyplot as plt

    metrics = [m for m in specs["metric"] if m in set(per_seed["metric"])]
    ncols = min(3, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 2.8 * nrows), squeeze=False)
    arms = list(dict.fromkeys(per_seed["arm"]))
    labels = specs.set_index("metric")["label"]
    for ax, metric in zip(axes.flat, metrics):
        part = per_seed[per_seed["metric"] == metric].pivot(index="seed", columns="arm", values="value")[arms]
        for seed, row in part.iterrows():
            ax.plot(range(len(arms)), row.to_numpy(), marker="o", lw=0.8, ms=3, label=f"seed {seed}")
        ax.set_xticks(range(len(arms)), arms, rotation=60, fontsize=7)
        ax.set_title(labels[metric], fontsize=9)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def group_samples(real: dict, generated: dict, per_group: int, title: str = ""):
    """Per group of the planted attribute, ``per_group`` real test images beside the same prompts'
    images from every arm: ``real`` {group: [uint8 images]}, ``generated`` {arm: {group: [...]}}."""
    from fairdiff.plots import image_grid

    columns = ["real", *generated]
    images, rows = [], []
    for group, reals in real.items():
        for k in range(per_group):
            rows.append(f"{group} {k + 1}")
            images.append(reals[k] if k < len(reals) else None)
            for arm in generated:
                mine = generated[arm].get(group, [])
                images.append(mine[k] if k < len(mine) else None)
    return image_grid(images, rows, ncols=len(columns), title=title, col_labels=columns, size=1.1)
