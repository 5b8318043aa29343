"""Generating images from a trained run: one per record of a split, plus a condition grid per group.

Each image's initial noise comes from its own generator seeded from (seed, record id), so an image
is the same whatever the batch size or order, and a killed run resumes where it stopped: images
already on disk are skipped. Images are rotated back to the anatomical frame (the paper trains on
rotated fundus images) before they are saved.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image
from fairdiff.progress import Progress

from fairdiff import io
from fairdiff.data.images import pipeline_kwargs, to_anatomical
from fairdiff.schema import Schema, get_schema

SCHEDULERS = ("ddim", "dpmsolver")


def image_seed(seed: int, record_id: str) -> int:
    """A stable 63-bit seed per record: independent of batch composition and Python's hash salt."""
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def set_scheduler(pipe, name: str) -> None:
    """DDIM as the paper, or DPM-Solver++ (multistep): similar images in far fewer steps."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {SCHEDULERS}")
    cls = DDIMScheduler if name == "ddim" else DPMSolverMultistepScheduler
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], steps: int, guidance_scale: float,
             resolution: int) -> np.ndarray:
    """uint8 images [N, H, W, 3] in the training frame, one generator per image."""
    device = pipe.unet.device
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    shape = (pipe.unet.config.in_channels, resolution // pipe.vae_scale_factor, resolution // pipe.vae_scale_factor)
    latents = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device, pipe.unet.dtype)
    out = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance_scale, height=resolution,
               width=resolution, latents=latents, output_type="np").images
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _to_anatomical(images: np.ndarray, rotate: bool) -> np.ndarray:
    """A batch [B, H, W, C] back to the frame of the files on disk (the one rotation rule lives in
    :func:`fairdiff.data.images.to_anatomical`)."""
    if not rotate:
        return images
    return to_anatomical(torch.from_numpy(images).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous().numpy()


def sample_records(pipe, records: pd.DataFrame, schema: Schema, out: str | Path, *, seed: int, steps: int,
                   guidance_scale: float, resolution: int, batch_size: int, unet_name: str, scheduler: str,
                   progress: bool = True, rotate: bool | None = None) -> pd.DataFrame:
    """Write ``<out>/images/<id>.png`` for every record and ``<out>/manifest.csv``; skip existing images.

    Records are drawn in fixed chunks of ``batch_size`` (positions in ``records``), and a chunk with
    any image missing is drawn whole, writing only the missing ones. An image therefore always
    comes from the same batch, so a run resumed after a kill writes the same bits as one that was
    never stopped, in float32 too (where an image's last bits depend on its batch). ``rotate``
    (default: the schema's) says whether training images were rotated, i.e. whether generated ones
    are turned back before saving."""
    rotate = schema.rotate if rotate is None else rotate
    out = Path(out)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    manifest = records.drop(columns=[c for c in ("image_path", "npz_path") if c in records.columns]).copy()
    manifest["seed"] = [image_seed(seed, i) for i in manifest["id"]]
    manifest["path"] = [str(img_dir / f"{i}.png") for i in manifest["id"]]
    manifest["unet"], manifest["scheduler"], manifest["steps"], manifest["guidance_scale"] = (
        unet_name, scheduler, steps, guidance_scale)
    missing = np.array([not Path(p).is_file() for p in manifest["path"]], dtype=bool)
    bar = Progress(total=len(manifest), initial=int((~missing).sum()), desc=f"sample {out.parent.name}/{out.name}",
               disable=not progress, mininterval=1.0)
    for start in range(0, len(manifest), batch_size):
        todo = missing[start:start + batch_size]
        if not todo.any():
            continue
        chunk = manifest.iloc[start:start + batch_size]
        images = _to_anatomical(generate(pipe, list(chunk["prompt"]), list(chunk["seed"]), steps,
                                         guidance_scale, resolution), rotate)
        for img, path in zip(images[todo], chunk["path"][todo]):
            with io.atomic_path(path) as tmp:
                Image.fromarray(img).save(tmp, format="PNG")
        bar.update(int(todo.sum()))
    bar.close()
    io.write_csv(out / "manifest.csv", manifest)
    return manifest


def condition_grid(records: pd.DataFrame, schema: Schema, per_group: int) -> pd.DataFrame:
    """Prompts that differ only in one attribute's group: the other attributes and the labels are held
    at their most common value in ``records``, so a grid row isolates what the group word does."""
    ref = {name: int(records[name][records[name] >= 0].mode().iloc[0]) for name in schema.attribute_names}
    ref |= {name: int(records[name].mode().iloc[0]) for name in schema.label_names}
    rows = []
    for attr in schema.attributes:
        for g, word in enumerate(attr.groups):
            ids = ref | {attr.name: g}
            for k in range(per_group):
                rows.append({"id": f"grid-{attr.name}-{g}-{k}", "attribute": attr.name, "group": word,
                             "prompt": schema.prompt(**ids), **ids})
    return pd.DataFrame(rows)


def run_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a training run folder (no config.yaml)")
    return yaml.safe_load(path.read_text())


def sample_run(run_dir: str | Path, split: str = "test", out: str | Path | None = None, unet: str | None = None,
               scheduler: str | None = None, steps: int | None = None, batch_size: int | None = None,
               grid: bool = True, progress: bool = True, sample: dict | None = None,
               records: pd.DataFrame | None = None) -> Path:
    """Sample a trained run: one image per record of ``split`` (+ the condition grid for the test split).

    ``sample`` (a config's ``sample`` section) defaults to the one the run was trained with; the
    keyword arguments override single settings. ``records`` (default: the run's dataset) are the
    records whose ``split`` rows are drawn, e.g. the per-group reference (:mod:`fairdiff.reference`)."""
    from fairdiff.data import load_dataset
    from fairdiff.models import load_pipeline

    cfg = run_config(run_dir)
    s = sample or cfg["sample"]
    unet = unet or s["unet"]
    scheduler, steps, batch_size = scheduler or s["scheduler"], steps or s["steps"], batch_size or s["batch_size"]
    final = Path(run_dir) / "final"
    if not final.is_dir():
        raise FileNotFoundError(f"{final}: the run has no final pipeline yet (training unfinished?)")
    schema = get_schema(cfg["dataset"])
    pipe = load_pipeline(final, unet=unet, device="cuda" if torch.cuda.is_available() else "cpu",
                         dtype=getattr(torch, s.get("dtype", "float32")))
    set_scheduler(pipe, scheduler)
    if records is None:
        records = load_dataset(cfg["dataset"], cfg["data"]["root"])
    out = Path(out) if out else Path(run_dir).parent / "samples" / cfg["method"] / split
    common = dict(seed=cfg["seed"], steps=steps, guidance_scale=s["guidance_scale"],
                  resolution=cfg["data"]["resolution"], batch_size=batch_size, unet_name=unet,
                  scheduler=scheduler, progress=progress,
                  rotate=pipeline_kwargs(schema, cfg["data"].get("preprocess", "ours"))["rotate"])
    sample_records(pipe, records[records["split"] == split].reset_index(drop=True), schema, out, **common)
    if grid and split == "test":
        sample_records(pipe, condition_grid(records, schema, s["grid_per_group"]), schema, out / "grid", **common)
    return out


def sample_stage_run(run_dir: str | Path, out: str | Path, st, sample: dict, split: str = "test",
                     progress: bool = True, records: pd.DataFrame | None = None) -> Path:
    """Sample into ``out`` under the pipeline's stage rule (:mod:`fairdiff.stage_keys`): an
    unfinished folder of the same key resumes; a folder of ours with another key (another run or
    other sampler settings) is regenerated completely, so a manifest never describes images it did
    not write; a folder that is not ours is refused."""
    import shutil

    from fairdiff import stage_keys
    from fairdiff.errors import RunConflict

    out = Path(out)
    stamp = stage_keys.read_stamp(out)
    if not stage_keys.is_empty(out):
        if stamp is None or stamp.get("stage") != "sample":
            raise RunConflict(f"{out}: not empty and not a fairdiff sample folder (no {stage_keys.STAMP} of ours); "
                              "nothing was changed: choose another --out")
        if stamp["key"] != st.key:
            shutil.rmtree(out)  # ours, for another run or sampler: regenerated whole, never mixed
    stage_keys.write_stamp(out, st)
    sample_run(run_dir, split=split, out=out, progress=progress, sample=sample, records=records)
    stage_keys.write_stamp(out, st, complete=True)
    return out
