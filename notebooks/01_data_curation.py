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
# # 1. Data curation: who is in the data, and what the model will be asked to draw
#
# FairDiffusion fine-tunes a latent diffusion model on SLO fundus images described by a text
# prompt carrying the patient's race, gender and ethnicity and four clinical labels (glaucoma,
# vision-loss severity, cup-to-disc ratio, refraction). Before any training, this notebook shows
# the population the model learns from: group sizes, how the clinical labels spread across
# groups, what the images and prompts look like, and what the loader refused to read.
#
# By default the data are **synthetic**: procedural fundus renders written in exactly the
# FairGenMed on-disk format (`fairdiff synth fairgenmed`), with the source hospital's
# demographics. Point `data_root` at a real FairGenMed folder to curate the real data instead.
# The same notebook serves HAM10000 and CheXpert (`dataset`).

# %% tags=["parameters"]
profile = "smoke"  # smoke (CI, seconds) | mini (the default reproduction) | paper
dataset = "fairgenmed"  # fairgenmed | ham10000 | chexpert
data_root = None  # None: synthetic data in the real format; or a path to the real dataset folder
seed = None  # None: the profile's seed
sets = []  # overrides in the form the --set option of the command line takes

# %%
# NBVAL_CHECK_OUTPUT
import pandas as pd

from fairdiff import stages
from fairdiff.data import summary
from fairdiff.imagesets import real_uint8
from fairdiff.plots import counts_bar, grouped_grid, share_heatmap

pd.set_option("display.width", 120)
ctx = stages.context(profile, dataset, data_root, seed, sets)
records = stages.dataset(ctx)
schema, figs = ctx.schema, ctx.figures
print(f"{len(records)} subjects from {'synthetic' if ctx.cfg['data'].get('synthetic') else 'real'} {dataset} data")
print(records["split"].value_counts().reindex(["train", "val", "test"]).to_string())

# %% [markdown]
# ## Group sizes
# Subjects per group of each sensitive attribute, per split. Subjects whose attribute is unknown
# (stored as -1) are kept (the prompt leaves that word out) but counted apart from the known groups.

# %%
# NBVAL_CHECK_OUTPUT
sizes = summary.group_sizes(records, schema)
figs.table(sizes, "01_group_sizes")
overall = sizes[sizes["split"] == "all"]
fig = counts_bar(overall, x="group", hue="attribute", title="Subjects per group (all splits)")
figs.figure(fig, "01_group_sizes")
overall.pivot_table(index=["attribute", "group"], values=["count", "share"], sort=False).round(3)

# %% [markdown]
# ## The intersection of the attributes
# Counts for every combination of the sensitive attributes: the smallest cells are the groups a
# model sees least.

# %%
# NBVAL_CHECK_OUTPUT
cross = summary.intersections(records, schema)
figs.table(cross, "01_intersections")
cross

# %% [markdown]
# ## Clinical labels within each group
# Share of each clinical class within every group. Differences here are part of the data, not of
# the model: a generator that is fair still has to reproduce them.

# %%
shares = summary.label_shares(records, schema)
figs.table(shares, "01_label_shares")
for lab in schema.labels:
    wide = shares[shares["label"] == lab.name].pivot_table(index=["attribute", "group"], columns="class",
                                                           values="share", sort=False)[list(lab.classes)]
    figs.figure(share_heatmap(wide, title=f"{lab.name}: share of each class per group"),
                f"01_label_shares_{lab.name}", data=wide.reset_index())

# %% [markdown]
# ## What the images look like, per group and per clinical label
# The first subjects (by id) of each group, after the paper's preprocessing at the training
# resolution, shown in the anatomical frame (the training frame rotated back).

# %%
k, res = 6, max(ctx.cfg["data"]["resolution"], 64)
for column in schema.attribute_names + schema.label_names:
    chosen = summary.first_per_group(records, column, k)
    names = (schema.attribute(column).groups if column in schema.attribute_names
             else schema.label(column).classes)
    fig = grouped_grid(list(real_uint8(chosen, schema, res)), list(chosen[column]), names, k,
                       title=f"real images by {column}")
    figs.figure(fig, f"01_images_by_{column}", data=chosen[["id", "split", column]])

# %% [markdown]
# ## Prompts
# One prompt per group of the first attribute, built from the paper's template: every subject's
# prompt names its groups and its clinical labels.

# %%
# NBVAL_CHECK_OUTPUT
examples = summary.first_per_group(records, schema.attribute_names[0], 1)
for prompt in examples["prompt"]:
    print(prompt)

# %% [markdown]
# ## What the loader rejected, and why
# In the default (lenient) mode a subject with a bad file or field is skipped and listed here with
# the file, the field and what was expected; `strict=True` raises on the first one instead.

# %%
# NBVAL_CHECK_OUTPUT
rejections = records.attrs.get("rejections", pd.DataFrame(columns=["id", "file", "field", "reason"]))
figs.table(rejections, "01_rejections")
print(f"{len(rejections)} subjects rejected; unknown demographics kept: {records.attrs.get('unknown', {})}")
rejections.head(20)
