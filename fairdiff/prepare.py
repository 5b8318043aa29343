"""Stage before fine-tuning: the starting pipeline and the caches every method shares.

The paper fine-tunes Stable Diffusion 2.1; here the default builds a tiny pipeline and trains its
VAE on the training images (there is no pretrained VAE offline). The frozen VAE and text encoder
then encode every training image and prompt once: these caches replace the two encoders' forward
passes at every training step (the authors' script runs both each step).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from fairdiff import arrays, io, stage_keys
from fairdiff.arrays import NpyRows
from fairdiff.models import build_tiny_pipeline, encode_prompts, load_pipeline, train_vae
from fairdiff.progress import Progress
from fairdiff.schema import Schema, get_schema


def load_records(cfg: dict) -> pd.DataFrame:
    """Every record of the configured dataset, loaded with the profile's data rules (strictness,
    validation carving when a dataset ships none)."""
    from fairdiff.data import load_dataset

    d = cfg["data"]
    pickled = {"trust_pickle": True} if d["trust_pickle"] and cfg["dataset"] == "fairgenmed" else {}  # npz: FairGenMed
    return load_dataset(cfg["dataset"], d["root"], strict=d["strict"], val_fraction=d["val_fraction"],
                        seed=cfg["seed"], **pickled)


def training_records(cfg: dict, splits=("train", "val")) -> pd.DataFrame:
    """The records a diffusion model trains on (paper: train + val), from the configured root."""
    frame = load_records(cfg)
    return frame[frame["split"].isin(splits)].reset_index(drop=True)


def load_images(frame: pd.DataFrame, schema: Schema, resolution: int, progress: bool = True) -> torch.Tensor:
    """Preprocessed images [N, 3, R, R] in [-1, 1], in the training frame (paper preprocessing), all
    in memory (4 * 3 * R^2 bytes each): for small sets and tests. The stages stream instead,
    reading ``ImageRecordDataset(frame, schema, resolution, cache=False)`` one batch at a time."""
    from fairdiff.data.dataset import ImageRecordDataset

    ds = ImageRecordDataset(frame, schema, resolution, cache=False)
    return torch.stack([ds[i]["pixel_values"] for i in tqdm(range(len(ds)), desc="images", disable=not progress,
                                                                 mininterval=1.0)])


def base_source(cfg: dict, base_dir: Path) -> str:
    """The pipeline every method starts from: a real checkpoint if configured, else our base folder."""
    return cfg["model"]["pretrained"] or str(base_dir)


def prepare_base(cfg: dict, base_dir: str | Path, progress: bool = True, force: bool = False,
                 pretrained: str | Path | None = None) -> dict:
    """Build (tiny: and train the VAE of) the starting pipeline in ``base_dir``; returns a summary.
    With pretraining on (``pretrain.steps`` > 0) the base is a copy of the ``pretrained`` pipeline
    folder (:func:`fairdiff.stages.pretrained` makes it), VAE included: nothing is trained here.

    Skips the work when ``base_dir`` already holds a pipeline made from the same config and data."""
    base_dir = Path(base_dir)
    st = stage_keys.base_stage(cfg)
    key = st.key
    stamp = base_dir / "base.json"
    if not force and stage_keys.is_current(base_dir, st) and stamp.is_file():
        return json.loads(stamp.read_text())
    schema = get_schema(cfg["dataset"])
    if stage_keys.pretraining(cfg):
        if pretrained is None or not (Path(pretrained) / "model_index.json").is_file():
            raise ValueError("prepare_base: pretrain.steps > 0 needs the pretrained pipeline folder "
                             f"(stages.pretrained makes it), got {pretrained!r}")
        with io.atomic_dir(base_dir) as tmp:
            shutil.copytree(pretrained, tmp, dirs_exist_ok=True)
            summary = {"key": key, "source": str(base_dir), "pretrained": str(pretrained),
                       "pretrain_key": st.inputs["pretrain"], "vae_trained": False}
            io.write_text(tmp / "base.json", json.dumps(summary, indent=1))
            stage_keys.write_stamp(tmp, st, complete=True)
        return summary
    if cfg["model"]["pretrained"]:
        summary = {"key": key, "source": cfg["model"]["pretrained"], "vae_trained": False}
        io.write_text(stamp, json.dumps(summary, indent=1))
        stage_keys.write_stamp(base_dir, st, complete=True)
        return summary
    from fairdiff.data.dataset import ImageRecordDataset

    frame, resolution = training_records(cfg), cfg["data"]["resolution"]
    # Images are decoded per batch; a set under 64 MiB as float32 is kept after its first decode.
    small = 4 * 3 * resolution * resolution * len(frame) <= 64 * 2**20
    images = ImageRecordDataset(frame, schema, resolution, cache=small, preprocess=cfg["data"]["preprocess"])
    pipe = build_tiny_pipeline(cfg["model"], schema, resolution, seed=cfg["seed"])
    v = cfg["vae"]
    losses = train_vae(pipe.vae, images, v["steps"], v["batch_size"], v["lr"], v["kl_weight"],
                       seed=cfg["seed"], progress=progress, num_workers=cfg["data"]["num_workers"],
                       device=encode_settings(cfg)[0])
    with io.atomic_dir(base_dir) as tmp:
        pipe.save_pretrained(tmp)
        io.write_csv(tmp / "vae_loss.csv", pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses}))
        summary = {"key": key, "source": str(base_dir), "vae_trained": True, "n_images": len(images),
                   "vae_final_loss": losses[-1] if losses else None,
                   "scaling_factor": float(pipe.vae.config.scaling_factor)}
        io.write_text(tmp / "base.json", json.dumps(summary, indent=1))
        stage_keys.write_stamp(tmp, st, complete=True)
    return summary


CACHE_FORMAT = 2  # v1: one torch.save'd file held whole in memory; v2: a folder of .npy files read by rows
CACHE_BATCH = 64  # images per VAE forward pass while building (the latents' last bits may depend on it)


@dataclass
class TrainingCache:
    """Everything a training step needs, per training record, with no encoder in the loop.

    The latents are the only part that grows with the images: on disk they are
    :class:`fairdiff.arrays.NpyRows` (``latent_mean[idx]`` reads those rows as a tensor), in
    memory plain tensors; the trainer indexes both alike."""

    latent_mean: torch.Tensor | NpyRows  # [N, C, h, w], unscaled posterior mean
    latent_std: torch.Tensor | NpyRows  # [N, C, h, w]
    prompt_index: torch.Tensor  # [N] long, row of ``text`` for each record
    text: torch.Tensor  # [P + 1, T, D]; the last row is the empty prompt (classifier-free guidance)
    groups: torch.Tensor  # [N, A] long, -1 unknown
    ids: list[str]
    scaling_factor: float

    @property
    def uncond_index(self) -> int:
        return len(self.text) - 1

    @classmethod
    def load(cls, folder: str | Path) -> "TrainingCache":
        """Open a complete cache folder: latents stay on disk, the small parts are read."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{folder / 'meta.json'}: cache format {meta.get('format')!r}, expected {CACHE_FORMAT}")
        return cls(latent_mean=NpyRows(folder / "latent_mean.npy", as_torch=True),
                   latent_std=NpyRows(folder / "latent_std.npy", as_torch=True),
                   prompt_index=torch.from_numpy(np.load(folder / "prompt_index.npy")),
                   text=torch.from_numpy(np.load(folder / "text.npy")),
                   groups=torch.from_numpy(np.load(folder / "groups.npy")),
                   ids=json.loads((folder / "ids.json").read_text()), scaling_factor=float(meta["scaling_factor"]))

    def in_memory(self) -> "TrainingCache":
        """The same cache with every latent read into memory (small sets, tests)."""
        def whole(x):
            return x if isinstance(x, torch.Tensor) else x[:]

        return dataclasses.replace(self, latent_mean=whole(self.latent_mean), latent_std=whole(self.latent_std))


def encode_settings(cfg: dict) -> tuple[torch.device, torch.dtype]:
    """Where and in which precision the frozen encoders run: the accelerator in the training
    precision (``train.mixed_precision``) when there is one, else the CPU in float32."""
    if not torch.cuda.is_available():
        return torch.device("cpu"), torch.float32
    dtypes = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    return torch.device("cuda"), dtypes[cfg["train"]["mixed_precision"]]


def training_cache(cfg: dict, source: str, cache_dir: str | Path, progress: bool = True,
                   batch_size: int = CACHE_BATCH) -> TrainingCache:
    """Open the cache for (data, resolution, preprocessing, encoders, precision), building it first if needed.

    The build streams: a DataLoader (``data.num_workers`` workers) decodes ``batch_size`` images
    at a time, the VAE encodes them on the accelerator, and their rows are written to .npy files
    on disk, so host memory is bounded by the batch. After each batch the rows are flushed and the
    count of finished rows recorded; a build that is interrupted resumes at the first unrecorded
    row (rows past it are encoded again, never trusted). The folder takes its final name only
    when complete. On the CPU the latents equal those of :func:`fairdiff.models.encode_images` on the stacked
    images bit for bit (same batches, float32)."""
    frame = training_records(cfg)
    if frame.empty:
        raise ValueError(f"{cfg['data']['root']}: no train or val records to build the training cache from")
    device, dtype = encode_settings(cfg)
    key = stage_keys.digest(CACHE_FORMAT, source, _source_fingerprint(source), cfg["data"]["resolution"],
                            cfg["data"]["preprocess"], device.type, str(dtype), batch_size, list(frame["id"]),
                            list(frame["prompt"]))
    folder = Path(cache_dir) / f"train-{key}"
    if not (folder / "meta.json").is_file():
        _build_cache(folder, key, frame, cfg, source, device, dtype, batch_size, progress)
    return TrainingCache.load(folder)


def _build_cache(folder: Path, key: str, frame: pd.DataFrame, cfg: dict, source: str, device: torch.device,
                 dtype: torch.dtype, batch_size: int, progress: bool) -> None:
    from torch.utils.data import DataLoader, Subset

    from fairdiff.data.dataset import ImageRecordDataset

    schema = get_schema(cfg["dataset"])
    partial = folder.with_name(f".{folder.name}.partial")
    done = _resume_point(partial, key, len(frame))
    pipe = load_pipeline(source, device=device, dtype=dtype)
    if done == 0:  # a fresh start: the small parts first
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        prompts = sorted(set(frame["prompt"]))
        lookup = {p: i for i, p in enumerate(prompts)}
        text = encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts + [""]).float().cpu().numpy()
        io.write_text(partial / "ids.json", json.dumps([str(i) for i in frame["id"]]))
        _save_npy(partial / "prompt_index.npy", np.array([lookup[p] for p in frame["prompt"]], dtype=np.int64))
        _save_npy(partial / "groups.npy", frame[schema.attribute_names].to_numpy(dtype=np.int64))
        _save_npy(partial / "text.npy", text)
    images = ImageRecordDataset(frame, schema, cfg["data"]["resolution"], cache=False,
                                preprocess=cfg["data"].get("preprocess", "ours"))
    loader = DataLoader(Subset(images, range(done, len(frame))), batch_size=batch_size,
                        num_workers=cfg["data"].get("num_workers", 0), pin_memory=device.type == "cuda")
    bar = Progress(total=len(frame), initial=done, desc="cache latents", disable=not progress, mininterval=1.0)
    with torch.no_grad():
        for batch in loader:
            dist = pipe.vae.encode(batch["pixel_values"].to(device, dtype)).latent_dist
            mean, std = dist.mean.float().cpu().numpy(), dist.std.float().cpu().numpy()
            for name, rows in (("latent_mean", mean), ("latent_std", std)):
                if done == 0:
                    arrays.create(partial / f"{name}.npy", (len(frame), *rows.shape[1:]), np.float32)
                arrays.write_rows(partial / f"{name}.npy", done, rows, sync=True)
            done += len(mean)
            io.write_text(partial / "progress.json", json.dumps({"key": key, "done": done}))
            bar.update(len(mean))
    bar.close()
    io.write_text(partial / "meta.json", json.dumps({
        "format": CACHE_FORMAT, "key": key, "n": len(frame), "source": source, "device": device.type,
        "dtype": str(dtype), "batch_size": batch_size, "scaling_factor": float(pipe.vae.config.scaling_factor)}))
    os.replace(partial, folder)


def _resume_point(partial: Path, key: str, n: int) -> int:
    """Rows an interrupted build of this cache finished (0: start afresh)."""
    try:
        state = json.loads((partial / "progress.json").read_text())
        shapes = [NpyRows(partial / f"{name}.npy").shape[0] for name in ("latent_mean", "latent_std")]
        small = all((partial / f).is_file() for f in ("ids.json", "prompt_index.npy", "groups.npy", "text.npy"))
    except (OSError, ValueError):
        return 0
    if state.get("key") != key or shapes != [n, n] or not small or not 0 < state.get("done", 0) <= n:
        return 0
    return int(state["done"])


def _save_npy(path: Path, array: np.ndarray) -> None:
    with io.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def _source_fingerprint(source: str) -> str:
    """Changes when the base pipeline folder is rebuilt, so stale caches are never reused."""
    stamp = Path(source) / "base.json"
    return stamp.read_text() if stamp.is_file() else source


SYNTHESISERS = {  # dataset -> (module, generator function, parameter class)
    "fairgenmed": ("fairdiff.data.synth.fairgenmed", "generate_fairgenmed", "FundusSynthParams"),
    "ham10000": ("fairdiff.data.synth.ham10000", "generate_ham10000", "DermoscopySynthParams"),
    "chexpert": ("fairdiff.data.synth.chexpert", "generate_chexpert", "ChestXraySynthParams"),
}


def synth_params(dataset: str, knobs: dict | None = None):
    """The generator's parameter object with ``knobs`` (``data.synth`` of a profile) changed; an
    unknown knob or a bad value is a ConfigError naming it."""
    import dataclasses
    import importlib

    from fairdiff.errors import ConfigError

    module, _, cls_name = SYNTHESISERS[dataset]
    cls = getattr(importlib.import_module(module), cls_name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in knobs or {}:
        if key not in fields:
            raise ConfigError(f"data.synth.{key}: unknown knob of the synthetic {dataset} generator ({cls_name}); "
                              f"expected one of {', '.join(fields)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in (knobs or {}).items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.synth: {err}") from None


def synthesise(dataset: str, out: str | Path, n: int, seed: int, overwrite: bool = False, progress: bool = True,
               params=None):
    """Write a synthetic dataset in the real on-disk format (dispatch to the dataset's generator)."""
    import importlib

    if dataset not in SYNTHESISERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SYNTHESISERS)}")
    module, func, _ = SYNTHESISERS[dataset]
    return getattr(importlib.import_module(module), func)(out, n, seed=seed, overwrite=overwrite, progress=progress,
                                                          params=params)


def ensure_dataset(cfg: dict, progress: bool = True) -> Path:
    """The configured dataset folder; for the synthetic default, generate it unless an identical one exists."""
    root = Path(cfg["data"]["root"])
    if not cfg["data"].get("synthetic"):
        if not root.is_dir():
            from fairdiff.errors import DataError

            raise DataError(root, "data.root", f"an existing dataset folder (set data.root in the {cfg['profile']} "
                            "profile, or --set data.root=PATH; the README says how to obtain each dataset)",
                            "no such folder")
        return root
    d = cfg["data"]
    seed = cfg["seed"] if d["seed"] is None else d["seed"]
    knobs = synth_params(cfg["dataset"], d["synth"])
    params = root / "synth_params.json"
    if params.is_file():
        from dataclasses import asdict

        saved = json.loads(params.read_text())
        wanted = json.loads(json.dumps(asdict(knobs)))
        if saved.get("n") == d["n"] and saved.get("seed") == seed and saved.get("params") == wanted:
            return root
    synthesise(cfg["dataset"], root, d["n"], seed, overwrite=params.is_file(), progress=progress, params=knobs)
    return root
