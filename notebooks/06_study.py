# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Does Fair Bayesian Perturbation narrow a planted group gap? A controlled, multi-seed study
#
# The default reproduction trains each method once, and one run at this scale cannot say whether a
# method works. Here the ground truth is known, every arm is run with several seeds, and the
# analysis was fixed before any run (`study.analysis` of the profile):
#
# 1. **A planted disparity.** The synthetic generator makes one group rare *and* different to draw
#    (`data.synth`, written to the dataset's `synth_params.json`); the data's seed is fixed, so every
#    training seed sees the same subjects.
# 2. **Arms** (`study.arms`): the paper's fairbo, a fixed-sigma control without BO (what the
#    exploration drift alone gives), random, fairbo as CompDiff runs it, reweighting, resampling and
#    group DRO on the planted attribute, and two oracle arms whose sigma is set by hand. Within a
#    seed every arm starts from the same base pipeline and initial weights and is scored by the same
#    feature extractor (`fairdiff study` runs the same code; this notebook reuses its work).
# 3. **Pre-registered statistics.** Primary endpoint: the planted group's FID minus the majority
#    group's at matched n, per arm as a change from the baseline in % of the baseline gap, paired by
#    seed, with a 95 % t interval and an equivalence test (TOST); overall FID as non-inferiority;
#    Holm only over the primary family; the minimum detectable effect from the seed spread.
# 4. **BO diagnostics**: does BO's objective carry a signal, and where does sigma go without BO?
#
# Every figure below is drawn from the study's result tables (`runs/study/<profile>/results/`, or
# their committed copies in `figures/study/<profile>/`: set `tables` to that folder and `run` to
# False to redraw them without running anything); only the samples need the runs. The `study-smoke`
# profile (the default here, for CI) runs every arm at a size that takes minutes; its numbers mean
# nothing.

# %% tags=["parameters"]
profile = "study-smoke"
dataset = None
sets = []  # overrides in the form the --set option of the command line takes
seeds = None  # None: study.seeds of the profile
arms = None  # None: every arm of study.arms
workers = None  # None: study.workers; the results do not depend on it
sweep = True  # run (or reuse) the fairbo W x r sweep; `make study` passes False, `make study-sweep` True
run = True  # False: only redraw from the tables in `tables` (no training, no samples)
tables = None  # a folder of result tables (e.g. "../figures/study/study"); None: the study's results folder
figure_root = None  # the figures go to <figure_root>/<name>/<dataset>/, name: the profile's or the tables
                    # folder's; None: figures/study/

# %%
from pathlib import Path

import numpy as np
import pandas as pd

from fairdiff import stages, study
from fairdiff.plots import FigureWriter
from fairdiff.study import figures

if run:
    result = study.run_study(profile, dataset, sets, seeds=seeds, arms=arms, workers=workers)
else:
    result = study.load_results(profile, dataset, sets, folder=tables)
cfg, planted = result.cfg, result.planted
figs = FigureWriter(Path(tables).name if tables else cfg["profile"], cfg["dataset"], root=figure_root or study.FIGURES)
run_seeds = sorted(int(s) for s in result.per_seed["seed"].unique())
run_arms = list(result.arms["arm"])
print(f"profile {cfg['profile']}: {len(run_arms)} arms x {len(run_seeds)} seeds; planted group "
      f"{planted.attribute}={planted.group}; tables in {study.shown(result.folder)}")

# %% [markdown]
# ## The arms
# Each arm's method and the settings it changes (`set`); for the arms whose perturbation scales
# are fixed, the sigma of the planted group and the mean sigma of every other group (0: no
# perturbation; NaN: fairbo, whose sigma BO moves).

# %%
result.arms

# %% [markdown]
# ## The planted disparity
# What the generator was told (the profile's `data.synth`) and the group sizes it produced in each
# split; the group-sized evaluation compares every group at the same n on top of these.

# %%
# NBVAL_CHECK_OUTPUT
if run:
    ctx0 = study.seed_context(profile, run_seeds[0], dataset, sets)
    records = stages.dataset(ctx0)
    names = dict(enumerate(next(a.groups for a in ctx0.schema.attributes if a.name == planted.attribute)))
    counts = records.assign(group=records[planted.attribute].map(names)).pivot_table(
        index="group", columns="split", values="id", aggfunc="count", fill_value=0)
else:
    counts = "the group counts need the data (run = True)"
counts

# %% [markdown]
# The baseline's FID for every group of the planted attribute, per seed, with its interval and
# group sizes (from the ordinary test split: the planted group is small there, which is why the
# primary endpoint uses the group-sized evaluation).

# %%
result.planted_gap.round(3)

# %% [markdown]
# ## The primary endpoint
# Per comparison: the change of the planted group's FID excess over the majority (arm minus
# reference, paired by seed) in % of the baseline gap, with its 95 % t interval; the TOST p-value
# for equivalence within the margin; the paired t-test's p, Holm-adjusted over the primary family
# only; the pre-registered verdict (narrower / wider: the interval excludes 0; equivalent: TOST
# p < 0.05; otherwise inconclusive); the minimum detectable effect (80 % power) and the number of
# seeds an interval of +-15 % of the baseline gap would need, both from the seed spread. The forest
# plot shows the same rows, the equivalence band shaded.

# %%
primary = result.primary
print("endpoint source:", ", ".join(sorted(set(result.per_seed["endpoint_source"].dropna()))))
figs.figure(figures.forest_plot(primary), "06_primary_forest", data=primary)
primary[["arm", "against", "family", "n_seeds", "reference_gap", "pct", "pct_lo", "pct_hi", "p_tost", "p_ttest",
         "p_holm", "verdict", "mde_pct", "seeds_needed"]].round(3)

# %% [markdown]
# ## Overall FID: non-inferiority
# Each arm's change of overall FID from the baseline (paired by seed, 95 % interval), in absolute
# terms and in % of the baseline's; non-inferior when the interval's upper bound is below the margin.

# %%
result.noninferiority.round(3)

# %% [markdown]
# ## Does any sigma help? The oracle arms
# The arms whose sigma is fixed by hand (no BO), placed by the sigma of the planted group: the
# baseline (no perturbation), fixed-0.5, random (1 everywhere) and the two oracles (only the
# planted group perturbed, or every group but it), with their primary-endpoint change.

# %%
reference = cfg["study"]["analysis"]["reference"]
dose = result.arms.merge(primary[primary["against"] == reference][["arm", "pct", "pct_lo", "pct_hi"]], on="arm",
                         how="left")
dose = dose[dose["method"].isin(["baseline", "random"])]
_ = figs.figure(figures.dose_response(primary, result.arms, reference), "06_dose_response", data=dose)

# %% [markdown]
# ## Secondary metrics
# Every other metric, arm minus baseline paired by seed, with a 95 % interval and unadjusted p-values
# (secondary: no family-wise claim is made from them). One line per seed joins its arms in the
# second figure: the pairing the statistics use.

# %%
secondary = result.secondary
figs.figure(figures.paired_lines(result.per_seed, result.specs), "06_per_seed", data=result.per_seed)
secondary.assign(change=[study.format_ci(m, lo, hi, sign=True) for m, lo, hi in
                         zip(secondary["diff"], secondary["lo"], secondary["hi"])]).pivot_table(
    index="label", columns="arm", values="change", aggfunc="first", sort=False)

# %% [markdown]
# ## Where does sigma go, with and without BO?
# Every FBP-type arm's sigma per group (mean over seeds; the planted group in red with its range over
# seeds) against what the exploration mix alone gives (sigma <- r sigma + (1 - r) u, u ~ U(0, 1),
# no BO: grey, mean +- 1.96 sd). A trajectory inside the band is what no BO would also give. The
# table gives the final sigma per group and the share of (seed, step) points outside the band.

# %%
if len(result.sigma_trajectories):
    figs.figure(figures.sigma_trajectories(result.sigma_trajectories, planted.column), "06_sigma_trajectories",
                data=result.sigma_trajectories)
result.sigma_summary.round(3)

# %% [markdown]
# ## Does BO see a signal?
# Per fairbo-type run: R^2 of the objective y on the sigma used against its shuffled-sigma null
# (whole run and per BO window), the between-window signal-to-noise of y (and what noise alone
# gives), the sd of y and the share of batches missing each group; then pooled over seeds.

# %%
display(result.bo_runs.round(3))  # noqa: F821 - IPython's display
result.bo_pooled.round(3)

# %% [markdown]
# ## Can BO find a known optimum through this much noise?
# The method's own FBP object on a planted objective (optimum: sigma 1 for the planted group, 0
# elsewhere), at noise levels from none to 30 times the objective's range, against the same object
# without BO (the drift alone): distance to the optimum at the end. The red line marks the noise
# level at which the simulated runs' R^2 equals the study's fairbo runs' mean R^2
# (`matched_noise_rel` of the pooled BO diagnostics).

# %%
from fairdiff.study.diagnostics import recovery_figure

curve = result.bo_recovery
if len(curve):
    fair = result.bo_pooled[result.bo_pooled["arm"] == "fairbo"] if len(result.bo_pooled) else pd.DataFrame()
    level = float(fair["matched_noise_rel"].iloc[0]) if "matched_noise_rel" in fair and len(fair) else np.nan
    print(f"measured noise level (R^2 match): {level:.3g}" if np.isfinite(level) else
          "the fairbo runs' R^2 lies outside the simulated curve's range")
    figs.figure(recovery_figure(curve, level if np.isfinite(level) else None), "06_bo_recovery", data=curve)
    display(curve.groupby(["noise_rel", "arm"])[["final_distance", "last_window_distance", "y_r2"]]  # noqa: F821
            .mean().round(3))

# %% [markdown]
# ## Convergence of the base
# Overall FID against step (first seed): at the pretraining checkpoints on the general pool, then
# while the baseline fine-tunes from the pretrained base (step 0: the base itself), each with a
# dashed line where the curve flattens. Drawn when the profile pretrains (`pretrain.steps` > 0).

# %%
if len(result.convergence):
    from fairdiff.pretrain import convergence_figure

    figs.figure(convergence_figure(result.convergence), "06_convergence", data=result.convergence)
    display(result.convergence.round(3))  # noqa: F821 - IPython's display
else:
    print("no convergence curve: this profile does not pretrain its base (pretrain.steps: 0)")

# %% [markdown]
# ## What the arms draw
# Real test images of every group of the planted attribute (top) and the baseline's images for the
# same prompts (first seed): what the planted difference looks like at the training resolution.
# Then, per group, real images (first column) beside the images every arm drew for the same
# prompts and seeds; the table under it lists which record each row shows.

# %%
from fairdiff.imagesets import generated_uint8, real_uint8
from fairdiff.plots import image_grid

if run:
    test = records[records["split"] == "test"].sort_values("id")
    base_arm = next(a for a in study.arms_from_config(cfg) if a.name == reference)
    manifest = stages.sampled(study.arm_context(profile, run_seeds[0], base_arm, dataset, sets), base_arm.method,
                              "test").set_index("id")
    real_rows, fake_rows = [], []
    for g in names:  # six images per group, blanks where a group has fewer
        chosen = test[test[planted.attribute] == g].head(6)
        pad = [None] * (6 - len(chosen))
        real_rows += list(real_uint8(chosen, ctx0.schema, cfg["data"]["resolution"])) + pad
        fake_rows += list(generated_uint8(manifest.loc[chosen["id"]].reset_index())) + pad
    labels = [f"real {names[g]}" for g in names] + [f"{reference} {names[g]}" for g in names]
    _ = figs.figure(image_grid(real_rows + fake_rows, labels, ncols=6, title=f"{planted.attribute} groups: real "
                               f"(top) and {reference} (bottom), seed {run_seeds[0]}"), "06_groups_real_and_baseline")

# %%
if run:
    per_group = 2
    chosen = {names[g]: test[test[planted.attribute] == g].head(per_group) for g in names}
    real = {g: list(real_uint8(rows, ctx0.schema, cfg["data"]["resolution"])) for g, rows in chosen.items()}
    generated = {}
    for arm in study.arms_from_config(cfg):
        if arm.name not in run_arms:
            continue
        ctx = study.arm_context(profile, run_seeds[0], arm, dataset, sets)
        manifest = stages.sampled(ctx, arm.method, "test").set_index("id")
        generated[arm.name] = {g: list(generated_uint8(manifest.loc[rows["id"]].reset_index()))
                               for g, rows in chosen.items() if len(rows)}
    shown_rows = pd.concat([rows.assign(group=g)[["group", "id", "prompt"]] for g, rows in chosen.items()])
    figs.figure(figures.group_samples(real, generated, per_group,
                                      f"{planted.attribute} groups: real and every arm, seed {run_seeds[0]}"),
                "06_group_samples", data=shown_rows)
    display(shown_rows)  # noqa: F821

# %% [markdown]
# ## The BO window W and the exploitation rate r
# fairbo for every (W, r) of the profile's grid, each an arm run with `study.sweep_seeds`, against
# the baseline of the same seed. The reduction is the baseline's gap minus the cell's (positive: the
# cell's groups are closer), mean and 95 % interval over seeds.

# %%
cells = study.run_sweep(profile, dataset, sets, workers=workers) if (sweep and run) else \
    study.load_sweep(profile, dataset, sets)
if cells is None:
    print("the sweep has not been run for this profile: `make study-sweep` (or fairdiff study --sweep)")
else:
    figs.figure(figures.sweep_heatmap(cells, "fid_gap"), "06_sweep_heatmap", data=cells)
    display(cells.round(3))  # noqa: F821

# %% [markdown]
# ## The work it took
# Measured time per (arm, seed) run and stage, and the machine's load while the runs worked.

# %%
times = result.run_times
per_run = times[times["arm"] != "all"].groupby(["arm", "seed"], sort=False)["seconds"].sum()
print(f"measured work: {times['seconds'].sum() / 60:.1f} min in all; per run (train + sample + evaluate) median "
      f"{per_run.median():.0f} s, max {per_run.max():.0f} s; 1-min load average while running: "
      f"{study.tables.load_summary(times)}")
per_run.groupby("arm", sort=False).median().rename("median seconds per run").to_frame()
