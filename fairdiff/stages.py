"""Stage functions the notebooks call: each reuses its result when its inputs are unchanged.

A notebook cell stays one line (``stages.trained(ctx, "fairbo")``) and rerunning a notebook
after a crash or a parameter change redoes only what changed. Results live in the run
directory (:mod:`fairdiff.runs`), so any notebook can be rerun alone.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fairdiff import io
from fairdiff.config import config_hash, load_config
from fairdiff.plots import FigureWriter
from fairdiff.runs import RunLayout, layout_for
from fairdiff.schema import Schema, get_schema


@dataclass
class Context:
    cfg: dict
    schema: Schema
    layout: RunLayout
    figures: FigureWriter


def context(profile: str, dataset: str, data_root: str | None = None, seed: int | None = None) -> Context:
    overrides = {}
    if data_root:
        overrides["data"] = {"root": data_root}
    if seed is not None:
        overrides["seed"] = seed
    cfg = load_config(profile, dataset, overrides)
    return Context(cfg, get_schema(dataset), layout_for(cfg), FigureWriter(cfg["profile"], dataset))


def dataset(ctx: Context, progress: bool = False) -> pd.DataFrame:
    """The dataset's records (generating the synthetic default first if needed)."""
    from fairdiff.data import load_dataset
    from fairdiff.prepare import ensure_dataset

    return load_dataset(ctx.cfg["dataset"], ensure_dataset(ctx.cfg, progress=progress))


def base(ctx: Context, progress: bool = False) -> dict:
    from fairdiff.prepare import ensure_dataset, prepare_base

    ensure_dataset(ctx.cfg, progress=progress)
    return prepare_base(ctx.cfg, ctx.layout.base, progress=progress)


def trained(ctx: Context, method: str, progress: bool = False) -> Path:
    """A finished run of ``method`` for this config: reused if present, else (re)trained from scratch."""
    from fairdiff.prepare import base_source
    from fairdiff.train import train

    base(ctx, progress)
    run = ctx.layout.method(method)
    key = config_hash(ctx.cfg) + ":" + _stamp(ctx.layout.base / "base.json")
    stamp = run / "stage.json"
    if (run / "final").is_dir() and stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return run
    if run.exists():
        if not (run / "config.yaml").is_file() and any(run.iterdir()):
            raise FileExistsError(f"{run}: exists and is not a fairdiff run; move it away")
        shutil.rmtree(run)  # a stale or unfinished run of ours
    train(ctx.cfg, method, run, base_source(ctx.cfg, ctx.layout.base), ctx.layout.cache, progress=progress)
    io.write_text(stamp, json.dumps({"key": key}))
    return run


def sampled(ctx: Context, method: str, split: str = "test", progress: bool = False) -> pd.DataFrame:
    """Generated images of ``split`` for a trained method (resumes; skips images already written)."""
    from fairdiff.sample import sample_run

    run = trained(ctx, method, progress)
    out = ctx.layout.samples(method) / split
    key = _stamp(run / "stage.json")
    stamp = out / "stage.json"
    if out.exists() and (not stamp.is_file() or json.loads(stamp.read_text()).get("key") != key):
        shutil.rmtree(out)  # samples of an older run of this method
    sample_run(run, split=split, out=out, progress=progress)
    io.write_text(stamp, json.dumps({"key": key}))
    return pd.read_csv(out / "manifest.csv", dtype={"id": str})


def _stamp(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def training_logs(ctx: Context, methods) -> tuple[pd.DataFrame, pd.DataFrame]:
    """metrics.csv and bo_trace.csv of every method's run, stacked with a ``method`` column."""
    metrics, bo = [], []
    for method in methods:
        run = ctx.layout.method(method)
        metrics.append(pd.read_csv(run / "metrics.csv").assign(method=method))
        trace = run / "bo_trace.csv"
        if trace.stat().st_size > 1:
            bo.append(pd.read_csv(trace).assign(method=method))
    return pd.concat(metrics, ignore_index=True), (pd.concat(bo, ignore_index=True) if bo else pd.DataFrame())


def vae_reconstructions(ctx: Context, n: int = 8):
    """(real, reconstructed) uint8 images of the first ``n`` test subjects through the base VAE."""
    import numpy as np
    import torch

    from fairdiff.data.dataset import ImageRecordDataset
    from fairdiff.models import load_pipeline
    from fairdiff.prepare import base_source

    records = dataset(ctx)
    test = records[records["split"] == "test"].sort_values("id").head(n)
    ds = ImageRecordDataset(test, ctx.schema, ctx.cfg["data"]["resolution"], cache=False)
    x = torch.stack([ds[i]["pixel_values"] for i in range(len(ds))])
    vae = load_pipeline(base_source(ctx.cfg, ctx.layout.base)).vae
    with torch.no_grad():
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample

    def to_uint8(t):
        return ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    return to_uint8(x), to_uint8(recon), float(np.mean((to_uint8(x) / 255.0 - to_uint8(recon) / 255.0) ** 2))
