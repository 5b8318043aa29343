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
# # 5. The three datasets side by side
#
# The paper also evaluates FairDiffusion on HAM10000 (dermoscopy; groups: sex x age) and
# CheXpert (chest radiographs; groups: sex x race). The same pipeline, notebooks 1-4, ran on each
# dataset with only the schema and the profile's dataset block changed. This notebook gathers
# their result tables (written by notebook 4 under `figures/<profile>/<dataset>/`).

# %% tags=["parameters"]
profile = "smoke"
datasets = ["fairgenmed", "ham10000", "chexpert"]

# %%
import pandas as pd

from fairdiff.env import WORK_ROOT
from fairdiff.plots import FigureWriter, bars_with_ci

figs = FigureWriter(profile, "all")
gen, sem = [], []
for name in datasets:
    folder = WORK_ROOT / "figures" / profile / name
    if not (folder / "04_generation_metrics.csv").is_file():
        print(f"{name}: no results yet (run notebooks 1-4 for it)")
        continue
    gen.append(pd.read_csv(folder / "04_generation_metrics.csv").assign(dataset=name))
    sem.append(pd.read_csv(folder / "04_semantic_metrics.csv").assign(dataset=name))
if not gen:
    raise RuntimeError(f"no dataset has results under figures/{profile}/: run notebooks 1-4 first")
gen, sem = pd.concat(gen, ignore_index=True), pd.concat(sem, ignore_index=True)
print(f"datasets with results: {sorted(gen['dataset'].unique())}")

# %% [markdown]
# ## Overall FID per method and dataset
# With 95 % bootstrap intervals. FID values are only comparable within a dataset: each dataset has
# its own feature extractor (trained on its real training images).

# %%
fid = gen[(gen["attribute"] == "all") & (gen["metric"] == "fid")]
figs.table(fid, "05_fid_overall")
for name, part in fid.groupby("dataset", sort=False):
    figs.figure(bars_with_ci(part, x="method", y="value", lo="boot_lo", hi="boot_hi", title=f"{name}: FID",
                             ylabel="FID"), f"05_fid_{name}", data=part)
fid.pivot(index="method", columns="dataset", values="value").round(3)

# %% [markdown]
# ## Per-group FID gap per attribute
# Largest minus smallest group FID within each attribute, per method and dataset.

# %%
groups = gen[(gen["attribute"] != "all") & (gen["metric"] == "fid")]
gap = (groups.groupby(["dataset", "method", "attribute"], sort=False)["value"].agg(lambda v: v.max() - v.min())
       .rename("fid_gap").reset_index())
figs.table(gap, "05_fid_gap")
gap.pivot_table(index="method", columns=["dataset", "attribute"], values="fid_gap", sort=False).round(3)

# %% [markdown]
# ## Classifiers trained on generated images: AUC and ES-AUC per dataset
# The main task of each dataset (FairGenMed: all four; HAM10000: malignant; CheXpert: pleural
# effusion), next to the classifier trained on real images.

# %%
cls = sem[sem["metric"].isin(["auc", "es_auc"]) & ((sem["attribute"] == "all") | (sem["metric"] == "es_auc"))]
figs.table(cls, "05_classifiers")
cls.pivot_table(index=["dataset", "task", "source"], columns=["metric", "attribute"], values="value",
                sort=False).round(3)
