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
# # 2. Fair fine-tuning: baseline, random perturbation, FairDiffusion and two fairness baselines
#
# Every method fine-tunes the same UNet from the same initial weights, seed and data order; they
# differ only in how the per-sample denoising losses are weighted (docs/method.md §2):
#
# | method | per-sample weight |
# |---|---|
# | `baseline` | 1 |
# | `random` | 1 + sum over attributes of e, e ~ N(0, 1) (every sigma at 1, no tuning) |
# | `fairbo` (FairDiffusion) | 1 + sum over attributes of sigma[group] * e, sigma tuned by a GP with UCB every W steps to shrink the between-group loss gap |
# | `reweight` | inverse group frequency, mean 1 |
# | `resample` | 1, with batches drawn group-balanced |
#
# The paper fine-tunes Stable Diffusion 2.1. Here (profiles `smoke` and `mini`) a tiny
# Stable-Diffusion-style pipeline is built from configs and, since no pretrained VAE exists
# offline, its VAE is first trained on the training images. The numbers below demonstrate the
# pipeline on synthetic data; they are not the paper's results.

# %% tags=["parameters"]
profile = "smoke"
dataset = "fairgenmed"
data_root = None
seed = None
sets = []  # overrides in the form the --set option of the command line takes

# %%
import numpy as np
import pandas as pd

from fairdiff import stages
from fairdiff.fairness import FairBayesianPerturbation
from fairdiff.plots import curves, image_grid

ctx = stages.context(profile, dataset, data_root, seed, sets)
schema, figs, cfg = ctx.schema, ctx.figures, ctx.cfg
base = stages.base(ctx)
print({k: base[k] for k in ("source", "vae_trained")})

# %% [markdown]
# ## The VAE stage
# The tiny default's VAE, trained once on the training images and then frozen and shared by every
# method. Top: real test images (training frame); bottom: their reconstructions.

# %%
if base["vae_trained"]:
    vae_loss = pd.read_csv(ctx.layout.base / "vae_loss.csv")
    figs.figure(curves(vae_loss, "step", "loss", title="VAE training loss", smooth=25, logy=True), "02_vae_loss",
                data=vae_loss)
real, recon, mse = stages.vae_reconstructions(ctx, n=8)
fig = image_grid(list(real) + list(recon), ["real", "reconstructed"], ncols=8, title="VAE reconstructions")
per_image = ((real / 255.0 - recon / 255.0) ** 2).reshape(len(real), -1).mean(axis=1)
figs.figure(fig, "02_vae_reconstructions", data=pd.DataFrame({"image": range(len(real)), "mse": per_image}))
print(f"reconstruction MSE on [0, 1] pixels: {mse:.4f}")

# %% [markdown]
# ## Training every method
# Each run is a folder under `runs/` with checkpoints, the final pipeline (raw and EMA UNet),
# `metrics.csv` and `bo_trace.csv`. A finished run whose training settings are unchanged is reused
# (changing `sample.*` or `evaluate.*` never retrains), an interrupted one resumes from its newest
# checkpoint, and a run trained with other settings is refused with the differing keys listed,
# never deleted (`fairdiff train --retrain` moves it aside). The same runs are what
# `fairdiff train` writes.

# %%
methods = list(cfg["methods"])
runs = {m: stages.trained(ctx, m, progress=True) for m in methods}
metrics, bo = stages.training_logs(ctx, methods)
figs.table(metrics, "02_metrics")
figs.table(bo, "02_bo_trace")
print(f"{cfg['train']['steps']} steps per method, batch {cfg['train']['batch_size']}, "
      f"BO window {cfg['fbp']['window']}")

# %% [markdown]
# ## Denoising loss
# The unweighted per-sample loss, averaged over the batch (smoothed). It should fall well below
# its starting value: the models learn.

# %%
smooth = max(1, cfg["train"]["steps"] // 40)
figs.figure(curves(metrics, "step", "loss_unweighted", hue="method", smooth=smooth, title="denoising loss"),
            "02_loss_curves", data=metrics[["method", "step", "loss_unweighted"]])
first = metrics[metrics["step"] <= max(5, len(metrics) // (10 * len(methods)))].groupby("method")["loss_unweighted"].mean()
last_steps = metrics["step"] > metrics["step"].max() * 0.8
last = metrics[last_steps].groupby("method")["loss_unweighted"].agg(["mean", "sem"])
table = pd.DataFrame({"first steps": first, "last 20 %": last["mean"], "last 20 % (s.e.)": last["sem"]})
figs.table(table.reset_index(), "02_loss_summary")
table.round(4)

# %% [markdown]
# ## The between-group loss gap
# The objective FairDiffusion optimises: per batch, the sum over attributes of the largest minus
# the smallest group-mean loss, over the groups present (smoothed). Mean and standard error over
# the last 20 % of training per method.

# %%
figs.figure(curves(metrics, "step", "gap", hue="method", smooth=smooth, title="sum of per-attribute loss gaps"),
            "02_gap_curves", data=metrics[["method", "step", "gap"]])
gap = metrics[last_steps].groupby("method")["gap"].agg(["mean", "sem", "count"])
figs.table(gap.reset_index(), "02_gap_summary")
gap.round(4)

# %% [markdown]
# ## Sigma per group over training, and the Bayesian-optimisation events
# FairDiffusion's perturbation scales: after each BO event (every W steps) sigma jumps to the UCB
# maximiser, then drifts under the exploration mix sigma <- 0.95 sigma + 0.05 u.

# %%
sigma_cols = [c for c in metrics.columns if c.startswith("sigma[")]
fb = metrics[metrics["method"] == "fairbo"]
long = fb.melt(id_vars="step", value_vars=sigma_cols, var_name="group", value_name="sigma")
fig = curves(long, "step", "sigma", hue="group", title="fairbo: sigma per group")
for step in (bo[bo["method"] == "fairbo"]["step"] if len(bo) else []):
    fig.axes[0].axvline(step, color="grey", lw=0.5, alpha=0.5)
figs.figure(fig, "02_sigma_trajectories", data=long)

# %% [markdown]
# ## The acquisition value at each BO event
# The UCB value of the chosen candidate and the window's mean objective y (= minus the gap) that
# the GP was fitted to.

# %%
if len(bo):
    events = bo[bo["method"] == "fairbo"][["step", "acq_value", "window_mean_y", "n_points", "skipped"]]
    long_ev = events.melt(id_vars="step", value_vars=["acq_value", "window_mean_y"], var_name="quantity")
    figs.figure(curves(long_ev, "step", "value", hue="quantity", title="BO events"), "02_bo_events", data=events)
    display(events.round(4))

# %% [markdown]
# ## The perturbation weights
# Weights drawn for the training set's groups at the sigma each method used (every 10th step).
# The paper does not clip them: a share is negative (about 28 % at sigma = 1 with three attributes),
# i.e. gradient ascent on those samples.

# %%
from fairdiff.prepare import training_records
import torch

groups = torch.tensor(training_records(cfg)[schema.attribute_names].to_numpy())
rows = []
for method in ("random", "fairbo"):
    sig = metrics[metrics["method"] == method][sigma_cols].to_numpy()[::10]
    fbp = FairBayesianPerturbation(schema.n_groups, seed=cfg["seed"], bo=False, clamp=cfg["fbp"]["clamp"])
    for s in sig:
        fbp.sigma = torch.tensor(s)
        rows.append(pd.DataFrame({"method": method, "weight": fbp.weights(groups).numpy()}))
weights = pd.concat(rows, ignore_index=True)
share = weights.groupby("method")["weight"].agg(negative_share=lambda w: float((w < 0).mean()), mean="mean", std="std")
figs.table(share.reset_index(), "02_weight_summary")
import seaborn as sns
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(6, 3))
sns.histplot(weights, x="weight", hue="method", stat="density", common_norm=False, bins=60, ax=ax)
ax.axvline(0, color="k", lw=0.8)
edges = np.histogram_bin_edges(weights["weight"], bins=60)  # the bins seaborn draws
histogram = pd.concat([pd.DataFrame({"method": m, "bin_left": edges[:-1], "bin_right": edges[1:],
                                     "density": np.histogram(w, bins=edges, density=True)[0]})
                       for m, w in weights.groupby("method", sort=False)["weight"]], ignore_index=True)
figs.figure(fig, "02_weight_distribution", data=histogram)
share.round(3)

# %% [markdown]
# ## A few samples per method
# A sanity check of the trained pipelines (EMA UNet, the profile's sampler): the same four test
# prompts and seeds for every method. Full sampling and the evaluation follow in notebooks 3 and 4.

# %%
images, test = stages.sample_preview(ctx, methods, n=4)
fig = image_grid(images, methods, ncols=4, title="samples (training frame), one row per method")
figs.figure(fig, "02_samples_per_method", data=test[["id", "prompt"]])
