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
    records: pd.DataFrame | None = None  # the loaded dataset, filled by dataset() once per context


def context(profile: str, dataset: str, data_root: str | None = None, seed: int | None = None) -> Context:
    overrides = {}
    if data_root:
        overrides["data"] = {"root": data_root}
    if seed is not None:
        overrides["seed"] = seed
    cfg = load_config(profile, dataset, overrides)
    return Context(cfg, get_schema(dataset), layout_for(cfg), FigureWriter(cfg["profile"], dataset))


def dataset(ctx: Context, progress: bool = False) -> pd.DataFrame:
    """The dataset's records (generating the synthetic default first if needed), indexed once per context."""
    from fairdiff.data import load_dataset
    from fairdiff.prepare import ensure_dataset

    if ctx.records is None:
        ctx.records = load_dataset(ctx.cfg["dataset"], ensure_dataset(ctx.cfg, progress=progress))
    return ctx.records


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
    io.write_text(stamp, json.dumps({"key": key}))  # first: an interrupted stage resumes, not restarts
    sample_run(run, split=split, out=out, progress=progress)
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
    from fairdiff.data.images import to_uint8
    from fairdiff.models import load_pipeline
    from fairdiff.prepare import base_source

    records = dataset(ctx)
    test = records[records["split"] == "test"].sort_values("id").head(n)
    ds = ImageRecordDataset(test, ctx.schema, ctx.cfg["data"]["resolution"], cache=False)
    x = torch.stack([ds[i]["pixel_values"] for i in range(len(ds))])
    vae = load_pipeline(base_source(ctx.cfg, ctx.layout.base)).vae
    with torch.no_grad():
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample
    real, rebuilt = to_uint8(x), to_uint8(recon)
    return real, rebuilt, float(np.mean((real / 255.0 - rebuilt / 255.0) ** 2))


# ----------------------------------------------------------------------------- evaluation stages
def _real_split(ctx: Context, records: pd.DataFrame, split: str):
    from fairdiff.imagesets import cached_real, to_unit_tensor

    frame = records[records["split"] == split].reset_index(drop=True)
    images = cached_real(frame, ctx.schema, ctx.cfg["data"]["resolution"], ctx.layout.evaluation / "cache")
    return frame, to_unit_tensor(images)


def domain_encoder(ctx: Context):
    """The feature extractor: InceptionV3 if ``evaluate.inception_weights`` names a local file,
    else the domain encoder, trained once on the REAL train split only and reused."""
    from fairdiff.evaluate.features import DomainEncoder, InceptionExtractor, train_domain_encoder

    e = ctx.cfg["evaluate"]
    if e.get("inception_weights"):
        return InceptionExtractor(e["inception_weights"])
    records = dataset(ctx)
    key = config_hash({"data": ctx.cfg["data"], "seed": ctx.cfg["seed"], "epochs": e["encoder_epochs"],
                       "ids": list(records["id"])})
    folder = ctx.layout.evaluation / f"encoder-{key}"
    if (folder / "weights.pt").is_file():
        return DomainEncoder.load(folder)
    frame, images = _real_split(ctx, records, "train")
    encoder = train_domain_encoder(images, frame, ctx.schema, epochs=e["encoder_epochs"], seed=ctx.cfg["seed"],
                                   in_res=ctx.cfg["data"]["resolution"])
    encoder.save(folder)
    return encoder


def _cached_table(path: Path, key: str, compute) -> pd.DataFrame:
    stamp = path.with_suffix(".key")
    if path.is_file() and stamp.is_file() and stamp.read_text() == key:
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    frame = compute()
    io.write_csv(path, frame, float_format="%.6g")
    io.write_text(stamp, key)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def generation_table(ctx: Context, method: str) -> pd.DataFrame:
    """FID, MiFID and IS (overall and per group, bootstrap intervals) of a method's test images."""
    from fairdiff.evaluate.features import generation_metrics
    from fairdiff.imagesets import generated_uint8, to_unit_tensor

    manifest = sampled(ctx, method, "test")
    extractor = domain_encoder(ctx)
    e = ctx.cfg["evaluate"]
    key = config_hash({"samples": _stamp(ctx.layout.samples(method) / "test" / "stage.json"), "extractor": extractor.name,
                       "evaluate": e})

    def compute():
        real_meta, real = _real_split(ctx, dataset(ctx), "test")
        fake = to_unit_tensor(generated_uint8(manifest))
        table = generation_metrics(real, fake, real_meta, manifest, ctx.schema, extractor, n_boot=e["n_boot"],
                                   min_group_size=e["min_group_size"], seed=ctx.cfg["seed"])
        return table.assign(method=method)

    return _cached_table(ctx.layout.evaluation / f"generation-{method}.csv", key, compute)


def semantic_table(ctx: Context, source: str) -> pd.DataFrame:
    """Classifiers trained on ``source`` images (``real`` or a method's generated train images),
    selected on real val, scored on real test, for every classifier task of the schema."""
    from fairdiff.evaluate.classifier import semantic_evaluation, train_classifier
    from fairdiff.imagesets import generated_uint8, to_unit_tensor

    e = ctx.cfg["evaluate"]
    if source == "real":
        stamp = "real"
    else:
        sampled(ctx, source, "train")
        stamp = _stamp(ctx.layout.samples(source) / "train" / "stage.json")
    key = config_hash({"source": stamp, "evaluate": e, "data": ctx.cfg["data"], "seed": ctx.cfg["seed"]})

    def compute():
        records = dataset(ctx)
        val_meta, val_x = _real_split(ctx, records, "val")
        test_meta, test_x = _real_split(ctx, records, "test")
        if source == "real":
            train_meta, train_x = _real_split(ctx, records, "train")
        else:
            train_meta = pd.read_csv(ctx.layout.samples(source) / "train" / "manifest.csv", dtype={"id": str})
            train_x = to_unit_tensor(generated_uint8(train_meta))
        tables = []
        for task in ctx.schema.classifier_tasks:
            n_classes = ctx.schema.label(task).n_classes
            model, _ = train_classifier(train_x, train_meta[task].to_numpy(), val_x, val_meta[task].to_numpy(),
                                        n_classes, epochs=e["classifier_epochs"], seed=ctx.cfg["seed"],
                                        in_res=ctx.cfg["data"]["resolution"])
            tables.append(semantic_evaluation(model, test_x, test_meta[task].to_numpy(), test_meta, ctx.schema, task,
                                              n_boot=e["n_boot"], seed=ctx.cfg["seed"]))
        return pd.concat(tables, ignore_index=True).assign(source=source)

    return _cached_table(ctx.layout.evaluation / f"semantic-{source}.csv", key, compute)
