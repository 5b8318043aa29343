"""Pretraining: the base every method fine-tunes, trained once on a general pool of synthetic subjects.

The paper fine-tunes Stable Diffusion, a model that already draws images well. No such model
exists offline, and a tiny UNet trained from scratch for a few hundred steps draws the optic disc
but neither vessels nor texture. With ``pretrain.steps`` > 0 the tiny pipeline is therefore trained
once on a *pool*: ``pretrain.n`` subjects drawn by the dataset's own synthetic generator with
their own seed and knobs (``pretrain.synth``; the study sets its planted knobs to 0, so the pool
shows no planted phenotype). Its VAE is trained on the pool (``vae.*``), then its UNet by the
ordinary training loop (:func:`fairdiff.train.train`, method ``baseline``), so the pretraining
resumes from its checkpoints like any run. The result is a stock diffusers folder
(``StableDiffusionPipeline.save_pretrained``, the EMA UNet as ``unet``) that the base stage copies
for every run (:func:`fairdiff.prepare.prepare_base`), so each method starts from its weights.

Its key (:func:`fairdiff.stage_keys.pretrain_stage`) covers the model, the VAE settings, the
resolution and preprocessing, and ``pretrain.*``, but neither the dataset's data nor a training
seed: one pretraining serves every seed of a study. The pool's other training settings are the
declared defaults of ``train`` (configs/mini.yaml), never a profile's or an arm's ``train``.

Layout (``<root>``: the context's pretraining folder, ``runs/pretrain`` by default)::

    <root>/<dataset>-<key>/     stage.json (stage "pretrain"), pretrain.json (a summary)
        pool/                   the pool's synthetic dataset (its knobs in synth_params.json)
        base/                   the pipeline with the VAE trained on the pool (base/cache: latents)
        baseline/               the training run on the pool: every checkpoint kept, final/
        pipeline/               the result: StableDiffusionPipeline folder, EMA UNet as unet

The convergence figure (:func:`convergence_frame`, :func:`flattening_step`,
:func:`convergence_figure`) shows the FID of samples drawn at the pretraining checkpoints and at
the fine-tuning checkpoints of a method, step 0 being the pretrained base itself.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fairdiff import io, stage_keys
from fairdiff.errors import ConfigError, RunConflict

POOL, BASE, RUN, PIPELINE, SUMMARY = "pool", "base", "baseline", "pipeline", "pretrain.json"


def folder(cfg: dict, root: str | Path) -> Path:
    """``<root>/<dataset>-<key>``: one folder per pretraining key."""
    return Path(root) / f"{cfg['dataset']}-{stage_keys.pretrain_stage(cfg).key}"


def check_settings(cfg: dict) -> None:
    """Pretraining builds the tiny model from scratch: it cannot start from ``model.pretrained``."""
    if stage_keys.pretraining(cfg) and cfg["model"]["pretrained"]:
        raise ConfigError(f"pretrain.steps: {cfg['pretrain']['steps']} pretrains the tiny model on a synthetic pool, "
                          f"but model.pretrained is set ({cfg['model']['pretrained']!r}), which is already a "
                          "pretrained base; set pretrain.steps to 0 or model.pretrained to null")


def pool_config(cfg: dict, where: str | Path) -> dict:
    """The config of the pool's run in ``where`` (:func:`folder`): the profile's dataset, resolution,
    preprocessing, model and VAE settings; the pool as its data (``pretrain.n``, ``seed``,
    ``synth``) and seed; the declared ``train`` defaults with ``pretrain.steps``, ``lr`` and
    ``batch_size``, every checkpoint kept. Its own ``pretrain.steps`` is 0: the pool's base is
    built from scratch."""
    from fairdiff.config import _reference

    p = cfg["pretrain"]
    pool = copy.deepcopy(cfg)
    pool["seed"] = p["seed"]
    pool["data"].update(root=str(Path(where) / POOL), synthetic=True, n=p["n"], seed=p["seed"],
                        synth=copy.deepcopy(p["synth"]))
    pool["train"] = copy.deepcopy(_reference()["train"]) | {
        "steps": p["steps"], "lr": float(p["lr"]), "batch_size": p["batch_size"],
        "checkpoint_every": p["checkpoint_every"], "keep_checkpoints": p["steps"] // p["checkpoint_every"] + 1,
        "report_to": None}
    pool["pretrain"] = dict(p, steps=0)
    return pool


def pretrain(cfg: dict, root: str | Path, progress: bool = False, max_steps: int | None = None) -> Path | None:
    """The pretrained pipeline folder of ``cfg`` under ``root``: reused when complete, resumed from
    the pool run's newest checkpoint when unfinished, built when absent. ``max_steps`` stops the
    pool's training early (tests of resuming): then None is returned and nothing is exported.

    Every process calls it under ``accelerate launch`` (the training loop is collective); only the
    main one writes. A folder that is not ours, or ours for another key, is never written into."""
    from accelerate import PartialState

    from fairdiff import locks
    from fairdiff.prepare import ensure_dataset, prepare_base
    from fairdiff.train import train

    check_settings(cfg)
    st = stage_keys.pretrain_stage(cfg)
    where = folder(cfg, root)
    if stage_keys.is_current(where, st) and (where / PIPELINE / "model_index.json").is_file():
        return where / PIPELINE
    state = PartialState(cpu=not torch.cuda.is_available())
    with locks.folder_lock(where, "pretraining", enabled=state.is_main_process):
        stamp = stage_keys.read_stamp(where)
        if not stage_keys.is_empty(where) and (stamp is None or stamp.get("stage") != "pretrain"
                                               or stamp["key"] != st.key):
            raise RunConflict(f"{where}: not empty and not a fairdiff pretraining of this key (no matching "
                              f"{stage_keys.STAMP}); nothing was changed: move it away")
        pool = pool_config(cfg, where)
        if state.is_main_process:
            if progress:
                print(f"pretraining: {cfg['pretrain']['steps']} steps on a pool of {cfg['pretrain']['n']} synthetic "
                      f"subjects in {where}", flush=True)
            stage_keys.write_stamp(where, st, complete=False)
            ensure_dataset(pool, progress=progress)
            prepare_base(pool, where / BASE, progress=progress)
        state.wait_for_everyone()
        run = train(pool, "baseline", where / RUN, str(where / BASE), where / BASE / "cache", resume="latest",
                    max_steps=max_steps, progress=progress)
        done = stage_keys.is_current(run, stage_keys.train_stage(pool, "baseline"))
        if done and state.is_main_process:
            export_pipeline(run / "final", where / PIPELINE)
            io.write_text(where / SUMMARY, json.dumps(summary(cfg, run), indent=1))
            stage_keys.write_stamp(where, st, complete=True)
        state.wait_for_everyone()
    return where / PIPELINE if done else None


def export_pipeline(final: str | Path, out: str | Path) -> Path:
    """A training run's final pipeline as a stock diffusers folder whose ``unet`` holds the EMA
    weights (the raw ones when the run kept no EMA): the weights every method starts from."""
    from fairdiff.models import load_pipeline

    final = Path(final)
    pipe = load_pipeline(final, unet="ema" if (final / "unet_ema").is_dir() else "raw")
    with io.atomic_dir(out) as tmp:
        pipe.save_pretrained(tmp)
    return Path(out)


def summary(cfg: dict, run: Path) -> dict:
    """What was pretrained: the pool, the steps and the loss at the end (mean of the last tenth)."""
    metrics = pd.read_csv(run / "metrics.csv")
    tail = metrics[metrics["step"] > 0.9 * metrics["step"].max()]
    p = cfg["pretrain"]
    return {"key": stage_keys.pretrain_stage(cfg).key, "steps": p["steps"],
            "pool": {"n": p["n"], "seed": p["seed"], "synth": p["synth"]},
            "loss_first": float(metrics["loss"].iloc[0]), "loss_last_tenth": float(tail["loss"].mean())}


# ----------------------------------------------------------------------------- convergence figure
def checkpoint_unet(ckpt: str | Path, unet, which: str = "ema"):
    """Load the ``ema`` (or ``raw``) UNet weights of a training checkpoint into ``unet`` (in place)."""
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    state = torch.load(Path(ckpt) / "model.pt", weights_only=True, map_location="cpu")
    if which == "ema" and state.get("ema"):
        ema = EMAModel(unet.parameters(), model_cls=UNet2DConditionModel, model_config=unet.config, foreach=True)
        ema.load_state_dict(state["ema"])
        ema.copy_to(unet.parameters())
    else:
        unet.load_state_dict(state["unet"])
    return unet


def curve_records(test: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` test records (all when fewer) in a seeded order: the prompts drawn at every point."""
    if len(test) <= n:
        return test.reset_index(drop=True)
    return test.sample(n=n, random_state=seed).reset_index(drop=True)


def convergence_frame(points: list[tuple[str, int, Path | None]], base: str | Path, records: pd.DataFrame,
                      real_features: np.ndarray, extractor, sample: dict, *, seed: int, resolution: int,
                      rotate: bool, progress: bool = False) -> pd.DataFrame:
    """FID against ``real_features`` of images drawn for ``records`` (the same prompts and seeds at
    every point) by the pipeline at ``base`` with the UNet of each point: (phase, step, checkpoint
    folder, or None for the base's own UNet). One row per point: phase, step, fid, n_fake, n_real."""
    from fairdiff.evaluate.metrics import fid_from_features
    from fairdiff.models import load_pipeline
    from fairdiff.progress import Progress
    from fairdiff.sample import _to_anatomical, generate, image_seed, set_scheduler

    pipe = load_pipeline(base, dtype=getattr(torch, sample["dtype"]))
    set_scheduler(pipe, sample["scheduler"])
    own = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    prompts, seeds = list(records["prompt"]), [image_seed(seed, i) for i in records["id"]]
    rows = []
    bar = Progress(total=len(points), desc="convergence", disable=not progress)
    for phase, step, ckpt in points:
        if ckpt is None:
            pipe.unet.load_state_dict(own)
        else:
            checkpoint_unet(ckpt, pipe.unet, sample["unet"])
        images = np.concatenate([
            _to_anatomical(generate(pipe, prompts[i:i + sample["batch_size"]], seeds[i:i + sample["batch_size"]],
                                    sample["steps"], sample["guidance_scale"], resolution), rotate)
            for i in range(0, len(prompts), sample["batch_size"])])
        fake = extractor.features(images).numpy()
        rows.append({"phase": phase, "step": int(step), "fid": fid_from_features(real_features, fake),
                     "n_fake": len(fake), "n_real": len(real_features)})
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def flattening_step(curve: pd.DataFrame, tolerance: float = 0.1) -> int:
    """The first step from which the rest of the curve (steps at or after it) stays within a factor
    ``1 + tolerance`` of its own minimum: where more steps stop changing FID by more than that."""
    curve = curve.sort_values("step")
    fid, steps = curve["fid"].to_numpy(dtype=float), curve["step"].to_numpy()
    for i in range(len(fid)):
        rest = fid[i:]
        if rest.max() <= (1.0 + tolerance) * rest.min():
            return int(steps[i])
    raise ValueError("flattening_step: an empty curve")


def convergence_figure(frame: pd.DataFrame, tolerance: float = 0.1):
    """FID against step: the pretraining checkpoints (left) and the fine-tuning of a method from
    the pretrained base (right, step 0 = the base), each with a dashed line where it flattens
    (:func:`flattening_step`)."""
    import matplotlib.pyplot as plt

    phases = [p for p in ("pretrain", "finetune") if p in set(frame["phase"])]
    titles = {"pretrain": "pretraining on the pool", "finetune": "fine-tuning from the pretrained base"}
    fig, axes = plt.subplots(1, len(phases), figsize=(5.2 * len(phases), 3.4), squeeze=False, sharey=True)
    for ax, phase in zip(axes[0], phases):
        curve = frame[frame["phase"] == phase].sort_values("step")
        ax.plot(curve["step"], curve["fid"], marker="o")
        flat = flattening_step(curve, tolerance)
        ax.axvline(flat, color="grey", linestyle="--")
        ax.annotate(f"flat from step {flat}\n(within {tolerance:.0%})", (flat, curve["fid"].max()), fontsize=8,
                    xytext=(4, -4), textcoords="offset points", va="top")
        ax.set_title(titles[phase], fontsize=10)
        ax.set_xlabel(f"{phase} step")
    axes[0, 0].set_ylabel(f"FID, {frame['n_fake'].iloc[0]} generated vs\n{frame['n_real'].iloc[0]} real test images")
    fig.tight_layout()
    return fig
