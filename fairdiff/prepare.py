"""Stage before fine-tuning: the starting pipeline and the caches every method shares.

The paper fine-tunes Stable Diffusion 2.1; here the default builds a tiny pipeline and trains its
VAE on the training images (there is no pretrained VAE offline). The frozen VAE and text encoder
then encode every training image and prompt once: these caches replace the two encoders' forward
passes at every training step (the authors' script runs both each step).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from fairdiff import io
from fairdiff.models import build_tiny_pipeline, encode_images, encode_prompts, load_pipeline, train_vae
from fairdiff.schema import Schema, get_schema


def training_records(cfg: dict, splits=("train", "val")) -> pd.DataFrame:
    """The records a diffusion model trains on (paper: train + val), from the configured root."""
    from fairdiff.data import load_dataset

    frame = load_dataset(cfg["dataset"], cfg["data"]["root"])
    return frame[frame["split"].isin(splits)].reset_index(drop=True)


def load_images(frame: pd.DataFrame, schema: Schema, resolution: int, progress: bool = True) -> torch.Tensor:
    """Preprocessed images [N, 3, R, R] in [-1, 1], in the training frame (paper preprocessing)."""
    from fairdiff.data.dataset import ImageRecordDataset

    ds = ImageRecordDataset(frame, schema, resolution, cache=False)
    return torch.stack([ds[i]["pixel_values"] for i in tqdm(range(len(ds)), desc="images", disable=not progress,
                                                                 mininterval=1.0)])


def base_source(cfg: dict, base_dir: Path) -> str:
    """The pipeline every method starts from: a real checkpoint if configured, else our base folder."""
    return cfg["model"]["pretrained"] or str(base_dir)


def prepare_base(cfg: dict, base_dir: str | Path, progress: bool = True, force: bool = False) -> dict:
    """Build (tiny: and train the VAE of) the starting pipeline in ``base_dir``; returns a summary.

    Skips the work when ``base_dir`` already holds a pipeline made from the same config and data."""
    base_dir = Path(base_dir)
    key = _base_key(cfg)
    stamp = base_dir / "base.json"
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return json.loads(stamp.read_text())
    schema = get_schema(cfg["dataset"])
    if cfg["model"]["pretrained"]:
        summary = {"key": key, "source": cfg["model"]["pretrained"], "vae_trained": False}
        io.write_text(stamp, json.dumps(summary, indent=1))
        return summary
    frame = training_records(cfg)
    images = load_images(frame, schema, cfg["data"]["resolution"], progress)
    pipe = build_tiny_pipeline(cfg["model"], schema, cfg["data"]["resolution"], seed=cfg["seed"])
    v = cfg["vae"]
    losses = train_vae(pipe.vae, images, v["steps"], v["batch_size"], v["lr"], v["kl_weight"],
                       seed=cfg["seed"], progress=progress)
    with io.atomic_dir(base_dir) as tmp:
        pipe.save_pretrained(tmp)
        io.write_csv(tmp / "vae_loss.csv", pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses}))
        summary = {"key": key, "source": str(base_dir), "vae_trained": True, "n_images": len(images),
                   "vae_final_loss": losses[-1] if losses else None,
                   "scaling_factor": float(pipe.vae.config.scaling_factor)}
        io.write_text(tmp / "base.json", json.dumps(summary, indent=1))
    return summary


def _base_key(cfg: dict) -> str:
    part = {k: cfg[k] for k in ("dataset", "seed", "model", "vae")}
    part["data"] = {k: cfg["data"][k] for k in ("root", "resolution", "n")}
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainingCache:
    """Everything a training step needs, per training record, with no encoder in the loop."""

    latent_mean: torch.Tensor  # [N, C, h, w], unscaled posterior mean
    latent_std: torch.Tensor  # [N, C, h, w]
    prompt_index: torch.Tensor  # [N] long, row of ``text`` for each record
    text: torch.Tensor  # [P + 1, T, D]; the last row is the empty prompt (classifier-free guidance)
    groups: torch.Tensor  # [N, A] long, -1 unknown
    ids: list[str]
    scaling_factor: float

    @property
    def uncond_index(self) -> int:
        return len(self.text) - 1

    def state(self) -> dict:
        return {k: getattr(self, k) for k in ("latent_mean", "latent_std", "prompt_index", "text", "groups")} | {
            "ids": list(self.ids), "scaling_factor": torch.tensor(self.scaling_factor)}


def training_cache(cfg: dict, source: str, cache_dir: str | Path, progress: bool = True) -> TrainingCache:
    """Load the cache for (data, resolution, encoders) or build and save it (atomically) once."""
    schema = get_schema(cfg["dataset"])
    frame = training_records(cfg)
    key = hashlib.sha256(json.dumps([source, _source_fingerprint(source), cfg["data"]["resolution"],
                                     list(frame["id"]), list(frame["prompt"])]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"train-{key}.pt"
    if path.is_file():
        state = torch.load(path, weights_only=True)
        state["scaling_factor"] = float(state["scaling_factor"])
        return TrainingCache(**state)
    pipe = load_pipeline(source)
    images = load_images(frame, schema, cfg["data"]["resolution"], progress)
    mean, std = encode_images(pipe.vae, images)
    prompts = sorted(set(frame["prompt"]))
    text = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts + [""])
    lookup = {p: i for i, p in enumerate(prompts)}
    cache = TrainingCache(
        latent_mean=mean, latent_std=std,
        prompt_index=torch.tensor([lookup[p] for p in frame["prompt"]], dtype=torch.long),
        text=text, groups=torch.tensor(frame[schema.attribute_names].to_numpy(), dtype=torch.long),
        ids=list(frame["id"]), scaling_factor=float(pipe.vae.config.scaling_factor))
    with io.atomic_path(path) as tmp:
        torch.save(cache.state(), tmp)
    return cache


def _source_fingerprint(source: str) -> str:
    """Changes when the base pipeline folder is rebuilt, so stale caches are never reused."""
    stamp = Path(source) / "base.json"
    return stamp.read_text() if stamp.is_file() else source


SYNTHESISERS = {
    "fairgenmed": ("fairdiff.data.synth.fairgenmed", "generate_fairgenmed"),
    "ham10000": ("fairdiff.data.synth.ham10000", "generate_ham10000"),
    "chexpert": ("fairdiff.data.synth.chexpert", "generate_chexpert"),
}


def synthesise(dataset: str, out: str | Path, n: int, seed: int, overwrite: bool = False, progress: bool = True):
    """Write a synthetic dataset in the real on-disk format (dispatch to the dataset's generator)."""
    import importlib

    if dataset not in SYNTHESISERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SYNTHESISERS)}")
    module, func = SYNTHESISERS[dataset]
    return getattr(importlib.import_module(module), func)(out, n, seed=seed, overwrite=overwrite, progress=progress)


def ensure_dataset(cfg: dict, progress: bool = True) -> Path:
    """The configured dataset folder; for the synthetic default, generate it unless an identical one exists."""
    root = Path(cfg["data"]["root"])
    if not cfg["data"].get("synthetic"):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: dataset folder not found (data.root in the {cfg['profile']} profile)")
        return root
    params = root / "synth_params.json"
    if params.is_file():
        saved = json.loads(params.read_text())
        if saved.get("n") == cfg["data"]["n"] and saved.get("seed") == cfg["seed"]:
            return root
    synthesise(cfg["dataset"], root, cfg["data"]["n"], cfg["seed"], overwrite=params.is_file(), progress=progress)
    return root
