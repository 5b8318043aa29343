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
# # 4. Analysis: image quality per group, equity-scaled metrics, and classifiers trained on generated images
#
# The paper's evidence, computed for every trained method (docs/method.md §5):
#
# 1. **Generation quality per group.** FID, MiFID and IS of each method's test images, overall
#    and for every demographic and clinical group, each generated group compared with the same
#    group's real test images. Features are extracted once per image set and sliced by metadata.
#    Equity-scaled versions (ES-FID, ES-IS) summarise how unequal a metric is across an
#    attribute's groups.
# 2. **Semantic correlation.** A classifier trained on each method's generated training images
#    (one per training prompt), selected on real validation images and tested on real test
#    images, next to the same classifier trained on the real images: AUC, ES-AUC, accuracy,
#    demographic-parity and equalised-odds differences, per task and attribute.
#
# Every value carries a bootstrap interval. The feature extractor is named in every table: the
# paper used InceptionV3, whose weights cannot be downloaded here, so by default a domain encoder
# trained on the real training images only stands in (numbers are not comparable with the paper's).

# %% tags=["parameters"]
profile = "smoke"
dataset = "fairgenmed"
data_root = None
seed = None
sets = []  # overrides in the form the --set option of the command line takes

# %%
import numpy as np
import pandas as pd

from fairdiff import analysis, stages
from fairdiff.plots import bars_with_ci, image_grid

ctx = stages.context(profile, dataset, data_root, seed, sets)
schema, figs, cfg = ctx.schema, ctx.figures, ctx.cfg
methods = list(cfg["methods"])
extractor = stages.domain_encoder(ctx)
print(f"feature extractor: {extractor.name}; bootstrap resamples: {cfg['evaluate']['n_boot']}")

# %% [markdown]
# ## Image quality, overall
# FID, KID and MiFID (lower is better) and IS (higher is better) of each method's test images, with
# 95 % intervals. FID and KID intervals come from a delete-a-block jackknife over the real and the
# generated set (no image is ever duplicated, so an interval contains its own estimate, unlike a
# bootstrap of FID); `fid_debiased` removes FID's small-sample bias and its interval covers the
# true distance (checked on Gaussian features in `tests/test_eval_intervals.py`). IS is
# bootstrapped. MiFID's threshold is calibrated from real test-to-train distances (`note` column).

# %%
tables = analysis.evaluate(ctx, methods)  # every table below; also written by `fairdiff evaluate`
gen = tables["generation_metrics"]
figs.table(gen, "04_generation_metrics")
overall = gen[(gen["attribute"] == "all") & gen["metric"].isin(["fid", "fid_debiased", "kid", "mifid", "is"])]
view = overall.assign(interval=[f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(overall["boot_lo"], overall["boot_hi"])])
view.pivot_table(index="method", columns="metric", values=["value", "interval"], aggfunc="first", sort=False)

# %% [markdown]
# ## Image quality per group
# FID of each group's generated images against the same group's real images. Groups smaller than
# the profile's `min_group_size` are flagged: FID is biased upwards and noisy there.

# %%
per_group = gen[(gen["attribute"] != "all") & (gen["metric"] == "fid")].copy()
per_group["label"] = per_group["attribute"] + "=" + per_group["group"] + np.where(per_group["small_group"], " (small)", "")
for attr in schema.attribute_names:
    part = per_group[per_group["attribute"] == attr]
    figs.figure(bars_with_ci(part, x="label", y="value", lo="boot_lo", hi="boot_hi", hue="method",
                             title=f"FID per {attr} group ({extractor.name})", ylabel="FID"),
                f"04_fid_by_{attr}", data=part)

# %% [markdown]
# The group sizes behind those FIDs (the same for every method: one generated image per real test
# image). CI checks this table against the committed smoke run; the metric values themselves are
# checked by `tests/test_reproduce.py`, which requires two smoke runs to write byte-identical CSVs.

# %%
# NBVAL_CHECK_OUTPUT
sizes = per_group.drop_duplicates(["attribute", "group"])[["attribute", "group", "n_real", "n_fake", "small_group"]]
sizes.reset_index(drop=True)

# %% [markdown]
# ## The per-group FID gap
# For each method and attribute, the largest minus the smallest group FID: the quantity a fair
# generator should shrink.

# %%
gap = tables["fid_gap"]
figs.table(gap, "04_fid_gap")
gap.pivot(index="method", columns="attribute", values="fid_gap").reindex(methods).round(3)

# %% [markdown]
# ## Equity-scaled generation metrics
# ES-IS = IS / (1 + sum over groups of |IS_g - IS|) (the authors' form for higher-is-better
# metrics). ES-FID = FID x (1 + sum over groups of |FID_g - FID| / FID) is **our** definition: the
# paper's formula for FID was not available (docs/method.md §5.3). Lower ES-FID and higher ES-IS
# are better. ES-FID, ES-KID and their size-matched versions carry jackknife intervals: each
# replicate drops a block of the real and generated sets and recomputes the overall and every
# group's value from what is left.

# %%
es = tables["equity_scaled_generation"]
figs.table(es, "04_equity_scaled_generation")
es_fid = es[es["metric"] == "es_fid"]
figs.figure(bars_with_ci(es_fid, x="attribute", y="value", lo="boot_lo", hi="boot_hi", hue="method",
                         title=f"ES-FID per attribute ({extractor.name})", ylabel="ES-FID (lower is better)"),
            "04_es_fid", data=es_fid)
es.pivot_table(index="method", columns=["metric", "attribute"], values="value", sort=False).reindex(methods).round(3)

# %% [markdown]
# ## Small groups: KID and size-matched FID
# FID is biased upwards at small n, so a small group looks worse whatever the generator. KID is
# unbiased; and `fid_matched` / `kid_matched` compare every group at the size of the smallest
# (averaged over repeated equal-size subsamples), so a gap between them is not an artefact of
# group size. Groups below `evaluate.size_matched_floor` are left out of the matched comparison.

# %%
matched = gen[gen["metric"].isin(["kid", "fid_matched", "kid_matched"]) & gen["attribute"].isin(schema.attribute_names)]
figs.table(matched, "04_size_matched")
kid_m = matched[matched["metric"] == "kid_matched"]
if len(kid_m):
    figs.figure(bars_with_ci(kid_m.assign(label=kid_m["attribute"] + "=" + kid_m["group"]), x="label", y="value",
                             lo="boot_lo", hi="boot_hi", hue="method", title="size-matched KID per group",
                             ylabel="KID"), "04_kid_matched", data=kid_m)
matched.pivot_table(index=["attribute", "group"], columns=["metric", "method"], values="value", sort=False).round(4)

# %% [markdown]
# ## Precision, recall, density and coverage
# Naeem et al. (2020), k nearest neighbours in the extractor's feature space: precision and density
# say whether generated images look real, recall and coverage whether the real variety is
# reproduced; per group, each group's generated images against the same group's real ones.

# %%
prdc = gen[gen["metric"].isin(["precision", "recall", "density", "coverage"])]
figs.table(prdc, "04_prdc")
prdc[prdc["attribute"].isin(["all"] + schema.attribute_names)].pivot_table(
    index=["attribute", "group"], columns=["metric", "method"], values="value", sort=False).round(3)

# %% [markdown]
# ## Memorisation audit
# For every generated image, the distance to its nearest training image, compared with the same
# distance for held-out real test images. A generated image closer than the 1st percentile of the
# real ones (`evaluate.copy_quantile`) is a likely copy; by chance about 1 % of images are. Below:
# the share per method and group, then fairbo's closest pairs side by side.

# %%
copies = gen[gen["metric"] == "copy_share"]
figs.table(copies, "04_copy_share")
display(copies.pivot_table(index=["attribute", "group"], columns="method", values="value", sort=False).round(3))
fake_close, train_close, pairs = stages.closest_pairs(ctx, "fairbo" if "fairbo" in methods else methods[0], n=6)
figs.figure(image_grid(list(fake_close) + list(train_close), ["generated", "nearest training"], ncols=len(pairs),
                       title="closest generated-training pairs"), "04_closest_pairs", data=pairs)
pairs.round(4)

# %% [markdown]
# ## Attribute fidelity: does an image show the group it was asked for?
# A classifier per sensitive attribute, trained on real training images only, labels each image.
# On real test images its accuracy is the ceiling; on generated images the label is the group named
# in the prompt. A method that improves a group's quality while drawing it like another group shows
# up here as low fidelity for that group.

# %%
fidelity = tables["attribute_fidelity"]
figs.table(fidelity, "04_attribute_fidelity")
acc = fidelity[(fidelity["metric"] == "accuracy") & (fidelity["group"] != "all")]
for attr in schema.attribute_names:
    part = acc[acc["attribute"] == attr]
    figs.figure(bars_with_ci(part, x="group", y="value", lo="boot_lo", hi="boot_hi", hue="source",
                             title=f"attribute fidelity: {attr}", ylabel="accuracy"),
                f"04_fidelity_{attr}", data=part)
fidelity[fidelity["metric"] == "accuracy"].pivot_table(index=["attribute", "group"], columns="source", values="value",
                                                       sort=False).round(3)

# %% [markdown]
# ## Classifiers trained on generated images, tested on real ones
# For each task, the classifier trained on each method's generated training images, and the
# reference trained on the real training images. AUC and ES-AUC with bootstrap intervals
# (test rows resampled jointly).

# %%
sources = ["real"] + methods
sem_all = tables["semantic_metrics"]  # one block per configured classifier; the figures show the first
sem = sem_all[sem_all["classifier"] == cfg["evaluate"]["classifiers"][0]["arch"]]
figs.table(sem_all, "04_semantic_metrics")
auc = sem[(sem["attribute"] == "all") & (sem["metric"] == "auc")]
figs.figure(bars_with_ci(auc, x="task", y="value", lo="boot_lo", hi="boot_hi", hue="source",
                         title="test AUC of classifiers trained on real or generated images", ylabel="AUC"),
            "04_classifier_auc", data=auc)
auc.pivot(index="source", columns="task", values="value").reindex(sources).round(3)

# %% [markdown]
# ## Fairness of those classifiers, per attribute
# ES-AUC (higher is better), demographic-parity difference and equalised-odds difference (fairlearn,
# labels as y_true, predictions as y_pred; lower is better), per task and attribute.

# %%
fair = sem[sem["metric"].isin(["es_auc", "dpd", "eod"])]
figs.table(fair, "04_classifier_fairness")
for task in schema.classifier_tasks:
    part = fair[(fair["task"] == task) & (fair["metric"] == "es_auc")]
    figs.figure(bars_with_ci(part, x="attribute", y="value", lo="boot_lo", hi="boot_hi", hue="source",
                             title=f"{task}: ES-AUC per attribute", ylabel="ES-AUC"),
                f"04_es_auc_{task}", data=part)
fair.pivot_table(index=["task", "source"], columns=["metric", "attribute"], values="value", sort=False).round(3)

# %% [markdown]
# ## What the numbers do and do not show
# Written from the values above, not in advance. A difference between two methods counts only
# when their 95 % bootstrap intervals do not overlap.

# %%
from IPython.display import Markdown

Markdown(analysis.verdict(tables, cfg, extractor.name))
