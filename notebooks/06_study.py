# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Does Fair Bayesian Perturbation narrow group gaps? A controlled, multi-seed study
#
# The default reproduction trains each method once, and one run at this scale cannot say whether a
# method works: its intervals overlap. Here the ground truth is known and every method is run with
# several seeds:
#
# 1. **A planted disparity.** The synthetic generator makes one group rare *and* different to draw
#    (`data.synth` of the profile, written to the dataset's `synth_params.json`; in the `study`
#    profile: 8 % of subjects, a darker, mottled fundus and larger discs); a second group is rare but
#    drawn like the majority, as a control. The data's seed is fixed, so every training seed sees the
#    same subjects. We first check that the baseline shows the planted gap.
# 2. **Paired runs.** For each seed, every method starts from the same base pipeline and initial
#    weights and is scored by the same feature extractor and classifiers (all through the ordinary
#    stages; `fairdiff study` runs the same code and this notebook reuses its work).
# 3. **Paired statistics.** Per-method means over seeds with 95 % t intervals; per seed, each
#    method's difference from the baseline, with a 95 % interval, an exact sign-flip permutation test
#    over seeds and Holm's correction across the metrics; the authors' bootstrap t-test for the
#    classifier metrics beside it.
# 4. **The paper's two hyperparameters**, the BO window W and the exploitation rate r, swept for
#    fairbo with a few seeds per cell.
#
# The `study-smoke` profile (the default here, for CI) runs every step at a size that takes minutes;
# its numbers mean nothing. `make study` runs the `study` profile (5 methods x 5 seeds) and then
# this notebook; `make study-sweep` adds the sweep.

# %% tags=["parameters"]
profile = "study-smoke"
dataset = None
sets = []  # overrides in the form the --set option of the command line takes
sweep = True  # run (or reuse) the fairbo W x r sweep; `make study` passes False, `make study-sweep` True

# %%
import json
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown

from fairdiff import stages, study
from fairdiff.plots import FigureWriter, bars_with_ci, image_grid

result = study.run_study(profile, dataset, sets)  # every stage reused when `fairdiff study` ran first
cfg, planted = result.cfg, result.planted
figs = FigureWriter(cfg["profile"], cfg["dataset"], root=study.FIGURES)
seeds = sorted(int(s) for s in result.per_seed["seed"].unique())
methods = list(dict.fromkeys(result.per_seed["method"]))
print(f"profile {cfg['profile']}: {len(methods)} methods x {len(seeds)} seeds; planted group "
      f"{planted.attribute}={planted.group}; results in {study.shown(result.folder)}")

# %% [markdown]
# ## The planted disparity
# What the generator was told (every knob differing from the generator's defaults is in the
# profile's `data.synth`), and the group sizes it produced in each split.

# %%
synth = json.loads((Path(cfg["data"]["root"]) / "synth_params.json").read_text())
print({k: synth["params"][k] for k in cfg["data"]["synth"]})
ctx0 = study.seed_context(profile, seeds[0], dataset, sets)
records = stages.dataset(ctx0)
names = dict(enumerate(next(a.groups for a in ctx0.schema.attributes if a.name == planted.attribute)))

# %%
# NBVAL_CHECK_OUTPUT
counts = records.assign(group=records[planted.attribute].map(names)).pivot_table(
    index="group", columns="split", values="id", aggfunc="count", fill_value=0)
counts

# %% [markdown]
# Real test images of each group (first rows of the test split) and the baseline's images for the
# same prompts (first seed), to see what the planted difference looks like at the training
# resolution.

# %%
from fairdiff.imagesets import generated_uint8, real_uint8

test = records[records["split"] == "test"].sort_values("id")
manifest = stages.sampled(ctx0, "baseline", "test").set_index("id")
real_rows, fake_rows = [], []
for g in names:  # six images per group, blanks where a group has fewer
    shown = test[test[planted.attribute] == g].head(6)
    pad = [None] * (6 - len(shown))
    real_rows += list(real_uint8(shown, ctx0.schema, cfg["data"]["resolution"])) + pad
    fake_rows += list(generated_uint8(manifest.loc[shown["id"]].reset_index())) + pad
labels = [f"real {names[g]}" for g in names] + [f"baseline {names[g]}" for g in names]
_ = figs.figure(image_grid(real_rows + fake_rows, labels, ncols=6,
                           title=f"{planted.attribute} groups: real (top) and baseline (bottom), seed {seeds[0]}"),
                "06_groups_real_and_baseline")

# %% [markdown]
# ## Is the planted gap visible to the evaluation?
# Each seed's baseline: the FID of every group of the planted attribute against that group's real
# test images, with its interval. The planted group is small, and FID is biased upwards on small
# sets, so the rare control group drawn like the majority is the fair comparison, and so are the
# size-matched FID (every group subsampled to the same size) and KID (unbiased), where the
# evaluation table has them.

# %%
gap_rows = result.planted_gap
figs.table(gap_rows, "06_planted_gap")
for metric in dict.fromkeys(gap_rows["metric"]):
    part = gap_rows[gap_rows["metric"] == metric].assign(seed=lambda f: "seed " + f["seed"].astype(str))
    figs.figure(bars_with_ci(part, x="group", y="value", lo="boot_lo", hi="boot_hi", hue="seed",
                             title=f"baseline {metric.upper()} per {planted.attribute} group ({planted.group}: planted)",
                             ylabel=metric.upper()), f"06_planted_gap_{metric}", data=part)
study.planted_summary(gap_rows).round(3)

# %% [markdown]
# ## Every seed, every method
# The study's metrics per seed (one line per seed joins its methods: the pairing the statistics
# use). Lower is better for FID-type metrics, higher for AUC-type ones.

# %%
figs.table(result.per_seed, "06_per_seed")
labels = result.specs.set_index("metric")["label"]
figs.figure(study.paired_lines(result.per_seed, result.specs), "06_per_seed")
result.per_seed.pivot_table(index=["seed", "method"], columns="metric", values="value", sort=False)[
    [m for m in result.specs["metric"] if m in set(result.per_seed["metric"])]].rename(columns=labels).round(3)

# %% [markdown]
# ## Means over seeds
# Each method's mean with a 95 % t interval over seeds; `sd` is the seed-to-seed standard
# deviation, how much one run's number moves when only the training seed changes.

# %%
means = result.method_means.merge(result.specs[["metric", "label"]], on="metric")
figs.table(means, "06_method_means")
order = [label for label in result.specs["label"] if label in set(means["label"])]
means.assign(value=[study.format_ci(m, lo, hi) for m, lo, hi in zip(means["mean"], means["lo"], means["hi"])]).pivot(
    index="label", columns="method", values="value").reindex(index=order, columns=methods)

# %% [markdown]
# ## Paired effects against the baseline
# Method minus baseline within each seed: the mean difference with its 95 % interval, the exact
# sign-flip p-value and its Holm adjustment across the metrics of that method, and a paired t-test.
# Green points go the good way (lower FID, higher AUC); an effect counts when its interval
# excludes 0.

# %%
effects = result.paired_effects
figs.table(effects, "06_paired_effects")
figs.figure(study.forest_plot(effects), "06_forest_paired_effects", data=effects)
effects[["method", "label", "diff", "lo", "hi", "n_better", "n_seeds", "p_signflip", "p_holm", "p_ttest"]].round(4)

# %% [markdown]
# ### The authors' significance test, for comparison
# The authors compare two classifiers with a t-test on their bootstrap AUC replicates from one
# run. Per seed, that test against the baseline (AUC of the first task, ES-AUC over the planted
# attribute):

# %%
figs.table(result.authors_ttest, "06_authors_ttest")
result.authors_ttest.pivot_table(index=["method", "metric"], columns="seed", values="p_authors", sort=False).round(4)

# %% [markdown]
# ## The BO window W and the exploitation rate r
# fairbo for every (W, r) of the profile's grid, each with `study.sweep_seeds` seeds, against the
# baseline of the same seed. The gap reduction is the baseline's FID gap over the planted attribute
# minus fairbo's: positive means fairbo's groups are closer. Each cell shows the mean and its 95 %
# interval over seeds.

# %%
cells = study.run_sweep(profile, dataset, sets) if sweep else study.load_sweep(profile, dataset, sets)
if cells is None:
    print("the sweep has not been run for this profile: `make study-sweep` (or fairdiff study --sweep)")
else:
    figs.table(cells, "06_sweep_cells")
    figs.figure(study.sweep_heatmap(cells), "06_sweep_heatmap", data=cells)
    display(cells.round(3))  # noqa: F821 - IPython's display

# %% [markdown]
# ## What the study shows, and what it does not
# Written from the values above, not in advance.

# %%
Markdown(study.reading(result, cells))

# %%
runs = result.run_times
per_run = runs[runs["method"] != "all"].groupby(["seed", "method"], sort=False)["seconds"].sum()
print(f"measured work: {runs['seconds'].sum() / 60:.1f} min in all; per run (train + sample + evaluate) median "
      f"{per_run.median():.0f} s, max {per_run.max():.0f} s; 1-min load average during the runs: median "
      f"{runs['load1'].median():.1f}")
