"""Stage functions the notebooks call: each reuses its result when its inputs are unchanged.

A notebook cell stays one line (``stages.trained(ctx, "fairbo")``) and rerunning a notebook
after a crash or a parameter change redoes only what changed. Results live in the run
directory (:mod:`fairdiff.runs`), so any notebook can be rerun alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fairdiff import io, locks, stage_keys, tracking
from fairdiff.config import load_config
from fairdiff.errors import RunConflict
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
    memo: dict = field(default_factory=dict)  # models built once per context (attribute classifiers)
    pretrain_runs: Path | None = None  # where pretrained bases live (None: runs/pretrain beside the runs folder)

    @property
    def pretrain_root(self) -> Path:
        """The folder of pretrained bases (:func:`pretrained`), shared by every context that names it."""
        return Path(self.pretrain_runs) if self.pretrain_runs else self.layout.root.parent / "pretrain"


def context(profile: str, dataset: str | None = None, data_root: str | None = None, seed: int | None = None,
            sets: list[str] | None = None, runs: str | Path | None = None,
            pretrain_runs: str | Path | None = None) -> Context:
    """The resolved, validated config and the folders of one (profile, dataset): what every stage takes.

    ``sets`` are ``key.path=value`` overrides (the CLI's ``--set``); ``runs`` moves the runs folder;
    ``pretrain_runs`` the folder of pretrained bases (default: ``pretrain/`` beside the runs folder)."""
    overrides = {}
    if data_root:
        overrides["data"] = {"root": data_root}
    if seed is not None:
        overrides["seed"] = seed
    cfg = load_config(profile, dataset, overrides, sets)
    return Context(cfg, get_schema(cfg["dataset"]), layout_for(cfg, runs), FigureWriter(cfg["profile"], cfg["dataset"]),
                   pretrain_runs=Path(pretrain_runs) if pretrain_runs else None)


def dataset(ctx: Context, progress: bool = False) -> pd.DataFrame:
    """The dataset's records (generating the synthetic default first if needed), indexed once per context."""
    from fairdiff.prepare import ensure_dataset, load_records

    if ctx.records is None:
        ensure_dataset(ctx.cfg, progress=progress)
        ctx.records = load_records(ctx.cfg)
    return ctx.records


def pretrained(ctx: Context, progress: bool = False, max_steps: int | None = None) -> Path | None:
    """The pretrained pipeline (``pretrain.steps`` > 0; :mod:`fairdiff.pretrain`) in
    ``ctx.pretrain_root``: trained once on a synthetic pool and shared by every context with the same
    pretraining settings (every seed of a study), reused when complete, resumed when unfinished.
    ``max_steps`` stops its training early and returns None (tests)."""
    from fairdiff.pretrain import pretrain

    if not stage_keys.pretraining(ctx.cfg):
        raise ValueError("stages.pretrained: pretraining is off (pretrain.steps: 0)")
    return pretrain(ctx.cfg, ctx.pretrain_root, progress=progress, max_steps=max_steps)


def base(ctx: Context, progress: bool = False) -> dict:
    """The starting pipeline every method fine-tunes: a copy of the pretrained pipeline when
    ``pretrain.steps`` > 0, else the tiny default with its VAE trained here (or ``model.pretrained``)."""
    from fairdiff.prepare import ensure_dataset, prepare_base

    ensure_dataset(ctx.cfg, progress=progress)
    built = stage_keys.is_current(ctx.layout.base, stage_keys.base_stage(ctx.cfg))
    source = pretrained(ctx, progress) if stage_keys.pretraining(ctx.cfg) and not built else None
    with locks.folder_lock(ctx.layout.base, "preparing the base pipeline", enabled=not built):
        return prepare_base(ctx.cfg, ctx.layout.base, progress=progress, pretrained=source)


def _main_process():
    from accelerate import PartialState

    import torch

    return PartialState(cpu=not torch.cuda.is_available())


def trained(ctx: Context, method: str, progress: bool = False, *, resume: bool | str = True, restart: bool = False,
            retrain: bool = False, max_steps: int | None = None, out: str | Path | None = None) -> Path:
    """The run of ``method`` for this config: reused when complete, resumed from its newest checkpoint
    when unfinished, trained when absent. Works the same in a notebook, ``fairdiff train`` and
    ``accelerate launch -m fairdiff train`` (every process calls it).

    A run whose training settings differ from the config is never overwritten or deleted: a
    :class:`RunConflict` lists the differing keys. ``retrain`` moves such a run aside
    (``<method>.old-<timestamp>/``) and trains again; ``restart`` does the same for a run with the
    same settings (e.g. to start an unfinished one from step 0). ``resume`` may name a checkpoint."""
    from fairdiff.prepare import base_source
    from fairdiff.train import train

    run = Path(out) if out else ctx.layout.method(method)
    st = stage_keys.train_stage(ctx.cfg, method)
    stamp = stage_keys.read_stamp(run)
    if stamp is not None and stamp.get("stage") == "train" and stamp["key"] == st.key and stamp.get("complete") \
            and not restart:
        return run
    state = _main_process()
    tracking.require_tracker(ctx.cfg)  # a tracker that is not installed: refused before any work
    # One process per run folder (the main one under accelerate launch): a second refuses at once.
    with locks.folder_lock(run, "training", enabled=state.is_main_process):
        move = False
        if not stage_keys.is_empty(run):  # every process decides from the same files, before anyone writes
            if stamp is None or stamp.get("stage") != "train":
                raise RunConflict(f"{run}: exists and is not a fairdiff training run (no {stage_keys.STAMP} of "
                                  "ours); nothing was changed: move it away or train elsewhere (--runs/--out)")
            if stamp["key"] != st.key and not (retrain or restart):
                changes = "\n  ".join(stage_keys.differences(stamp, st))
                state_word = "finished" if stamp.get("complete") else "unfinished"
                raise RunConflict(
                    f"{run}: holds a {state_word} {stamp.get('method')} run trained with other settings; nothing was "
                    f"changed. Differences (run -> now):\n  {changes}\nTo proceed: --retrain moves the old run to "
                    f"{run.name}.old-<timestamp>/ and trains again, or point --runs (or --out) elsewhere; or put the "
                    "settings back.")
            move = restart or stamp["key"] != st.key
        if stage_keys.pretraining(ctx.cfg):
            pretrained(ctx, progress)  # every process: the pool's training loop is collective
        if state.is_main_process:
            if move:
                aside = stage_keys.move_aside(run)
                print(f"moved {run} aside to {aside}", flush=True)
            base(ctx, progress)
        state.wait_for_everyone()
        train(ctx.cfg, method, run, base_source(ctx.cfg, ctx.layout.base), ctx.layout.cache,
              resume=(resume if isinstance(resume, str) else ("latest" if resume else None)),
              max_steps=max_steps, progress=progress)
        return run


def sampled(ctx: Context, method: str, split: str = "test", progress: bool = False) -> pd.DataFrame:
    """Generated images of ``split`` for a trained method: reused when their key (the run's key and
    the ``sample`` settings) is unchanged, resumed when unfinished, regenerated when it changed."""
    run = trained(ctx, method, progress)
    out = ctx.layout.samples(method) / split
    st = _sample_stage(ctx, method, split)
    if not stage_keys.is_current(out, st):
        from fairdiff.reference import SPLIT
        from fairdiff.sample import sample_stage_run

        records = reference_records(ctx, progress) if split == SPLIT else None
        with locks.folder_lock(out, "sampling"):  # one process per samples folder
            sample_stage_run(run, out, st, ctx.cfg["sample"], split=split, progress=progress, records=records)
    return pd.read_csv(out / "manifest.csv", dtype={"id": str})


def _sample_stage(ctx: Context, method: str, split: str) -> stage_keys.Stage:
    """The sampling stage of ``split``; the reference split's key also covers its records."""
    from fairdiff.reference import SPLIT

    st = stage_keys.sample_stage(ctx.cfg, method, split)
    if split != SPLIT:
        return st
    return stage_keys.Stage(st.name, st.settings, st.inputs | {"reference": reference_stage(ctx).key}, st.identity)


def reference_stage(ctx: Context) -> stage_keys.Stage:
    """The key of the per-group reference records: ``evaluate.reference`` and the dataset's key."""
    return stage_keys.Stage("reference", stage_keys.flatten(ctx.cfg["evaluate"]["reference"], "evaluate.reference."),
                            {"data": stage_keys.stage("dataset", ctx.cfg).key})


def reference_records(ctx: Context, progress: bool = False) -> pd.DataFrame:
    """The per-group reference records of ``evaluate.reference`` (:mod:`fairdiff.reference`): a
    group-balanced synthetic pool beside the dataset, drawn once, or a subsample of the real test
    split; once per context."""
    from fairdiff.reference import reference_records as build

    if "reference_records" not in ctx.memo:
        ctx.memo["reference_records"] = build(ctx.cfg, dataset(ctx, progress), ctx.schema, progress)
    return ctx.memo["reference_records"]


def sample_preview(ctx: Context, methods, n: int = 4):
    """The same ``n`` test prompts and seeds drawn by every method's trained pipeline (the
    profile's sampler): a quick look before full sampling. Returns (uint8 images, the records)."""
    import torch

    from fairdiff.models import load_pipeline
    from fairdiff.sample import generate, image_seed, set_scheduler

    records = dataset(ctx)
    test = records[records["split"] == "test"].sort_values("id").head(n)
    s, images = ctx.cfg["sample"], []
    for method in methods:
        pipe = load_pipeline(trained(ctx, method) / "final", unet=s["unet"], dtype=getattr(torch, s["dtype"]))
        set_scheduler(pipe, s["scheduler"])
        seeds = [image_seed(ctx.cfg["seed"], i) for i in test["id"]]
        images += list(generate(pipe, list(test["prompt"]), seeds, s["steps"], s["guidance_scale"],
                                ctx.cfg["data"]["resolution"]))
    return images, test


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
    ds = ImageRecordDataset(test, ctx.schema, ctx.cfg["data"]["resolution"], cache=False,
                            preprocess=ctx.cfg["data"]["preprocess"])
    x = torch.stack([ds[i]["pixel_values"] for i in range(len(ds))])
    vae = load_pipeline(base_source(ctx.cfg, ctx.layout.base)).vae
    with torch.no_grad():
        recon = vae.decode(vae.encode(x).latent_dist.mean).sample
    real, rebuilt = to_uint8(x), to_uint8(recon)
    return real, rebuilt, float(np.mean((real / 255.0 - rebuilt / 255.0) ** 2))


# ----------------------------------------------------------------------------- evaluation stages
def _real_split(ctx: Context, records: pd.DataFrame, split: str | tuple[str, ...]):
    """(records, uint8 image rows read from a disk cache) of one split or several: never all in memory."""
    from fairdiff.imagesets import cached_real

    splits = (split,) if isinstance(split, str) else split
    frame = records[records["split"].isin(splits)].reset_index(drop=True)
    d = ctx.cfg["data"]
    return frame, cached_real(frame, ctx.schema, d["resolution"], ctx.layout.evaluation / "cache",
                              num_workers=d["num_workers"], preprocess=d["preprocess"])


def _generated_split(ctx: Context, method: str, split: str):
    """(sampling manifest, uint8 image rows decoded once into the evaluation cache) of a method's
    generated ``split``, drawn first if needed."""
    from fairdiff.imagesets import cached_generated

    manifest = sampled(ctx, method, split)
    return manifest, cached_generated(manifest, _sample_stage(ctx, method, split).key,
                                      ctx.layout.evaluation / "cache", num_workers=ctx.cfg["data"]["num_workers"])


def domain_encoder(ctx: Context):
    """The feature extractor: InceptionV3 if ``evaluate.inception_weights`` names a local file,
    else the domain encoder, trained once on the REAL train split only and reused (its key: the
    data, the seed, ``evaluate.encoder`` and the training ids)."""
    from fairdiff.evaluate.features import DomainEncoder, InceptionExtractor, train_domain_encoder

    e = ctx.cfg["evaluate"]
    if e["inception_weights"]:
        return InceptionExtractor(e["inception_weights"])
    records = dataset(ctx)
    st = stage_keys.stage("encoder", ctx.cfg, {"ids": stage_keys.digest(list(records["id"]))})
    folder = ctx.layout.evaluation / f"encoder-{st.key}"
    if stage_keys.is_current(folder, st) or (folder / "weights.pt").is_file():
        return DomainEncoder.load(folder)
    with locks.folder_lock(folder, "training the domain encoder"):
        frame, images = _real_split(ctx, records, "train")
        enc = e["encoder"]
        encoder = train_domain_encoder(images, frame, ctx.schema, epochs=enc["epochs"], seed=ctx.cfg["seed"],
                                       batch_size=enc["batch_size"], lr=enc["lr"], widths=tuple(enc["widths"]),
                                       in_res=ctx.cfg["data"]["resolution"])
        encoder.save(folder)
        stage_keys.write_stamp(folder, st, complete=True)
    return encoder


# What each evaluation table reads of the ``evaluate`` section (the rest cannot change it).
_NOT_READ_BY = {"generation": ("evaluate.classifiers", "evaluate.reference"),
                "fidelity": ("evaluate.encoder", "evaluate.inception_weights", "evaluate.is_splits", "evaluate.mifid_eps",
                             "evaluate.jackknife_blocks", "evaluate.kid_", "evaluate.prdc_k", "evaluate.size_matched",
                             "evaluate.copy_quantile", "evaluate.n_boot", "evaluate.reference"),
                "semantic": ("evaluate.encoder", "evaluate.inception_weights", "evaluate.is_splits",
                             "evaluate.mifid_eps", "evaluate.jackknife_blocks", "evaluate.kid_", "evaluate.prdc_k",
                             "evaluate.size_matched", "evaluate.copy_quantile", "evaluate.reference"),
                "group_reference": ("evaluate.classifiers", "evaluate.n_boot", "evaluate.min_group_size",
                                    "evaluate.size_matched", "evaluate.prdc_k", "evaluate.copy_quantile",
                                    "evaluate.is_splits", "evaluate.mifid_eps")}


def _table_stage(ctx: Context, table: str, inputs: dict, **identity) -> stage_keys.Stage:
    st = stage_keys.stage("evaluate", ctx.cfg, inputs, table=table, **identity)
    drop = _NOT_READ_BY[table]
    return stage_keys.Stage(st.name, {k: v for k, v in st.settings.items() if not k.startswith(drop)},
                            st.inputs, st.identity)


def _source_inputs(ctx: Context, source: str, split: str) -> dict:
    """The stage inputs of a table made from ``source`` images: the real dataset, or a method's
    generated ``split`` (sampled first, so the key names what exists)."""
    if source == "real":
        return {"source": "real", "data": stage_keys.stage("dataset", ctx.cfg).key}
    sampled(ctx, source, split)
    return {"samples": _sample_stage(ctx, source, split).key}


def _cached_table(path: Path, st: stage_keys.Stage, compute) -> pd.DataFrame:
    """A table regenerated only when its own key changes."""
    if not (path.is_file() and stage_keys.is_current(path, st)):
        with locks.folder_lock(path, f"computing {path.name}"):  # one process per table
            io.write_csv(path, compute(), float_format="%.6g")
            stage_keys.write_stamp(path, st, complete=True)
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def generation_table(ctx: Context, method: str) -> pd.DataFrame:
    """FID, MiFID and IS (overall and per group, bootstrap intervals) of a method's test images."""
    from fairdiff.evaluate.features import generation_metrics

    extractor = domain_encoder(ctx)
    e = ctx.cfg["evaluate"]
    st = _table_stage(ctx, "generation", _source_inputs(ctx, method, "test") | {"extractor": extractor.name},
                      method=method)

    def compute():
        records = dataset(ctx)
        real_meta, real = _real_split(ctx, records, "test")
        train_images = _real_split(ctx, records, ("train", "val"))[1]  # what the diffusion model trained on
        manifest, fake = _generated_split(ctx, method, "test")
        table = generation_metrics(
            real, fake, real_meta, manifest, ctx.schema, extractor, n_boot=e["n_boot"],
            min_group_size=e["min_group_size"], seed=ctx.cfg["seed"], splits=e["is_splits"], mifid_eps=e["mifid_eps"],
            train_images=train_images, kid_subset_size=e["kid_subset_size"], kid_subsets=e["kid_subsets"],
            prdc_k=e["prdc_k"], size_matched_floor=e["size_matched_floor"],
            size_matched_repeats=e["size_matched_repeats"], jackknife_blocks=e["jackknife_blocks"],
            copy_quantile=e["copy_quantile"], num_workers=ctx.cfg["data"]["num_workers"])
        return table.assign(method=method)

    return _cached_table(ctx.layout.evaluation / f"generation-{method}.csv", st, compute)


def convergence(ctx: Context, method: str = "baseline", progress: bool = False) -> pd.DataFrame:
    """The convergence figure's data (pretraining on): overall FID, with the evaluation's feature
    extractor against every real test image, of ``pretrain.curve_images`` test prompts drawn at
    every pretraining checkpoint (phase ``pretrain``) and every ``pretrain.curve_every`` fine-tuning
    steps of ``method`` (phase ``finetune``; step 0: the pretrained base itself), the same prompts
    and seeds at every point (:func:`fairdiff.pretrain.convergence_frame`). The fine-tuning is the
    method's run trained again into ``convergence/<method>/`` with a checkpoint at every point
    (checkpointing is in no key: the same run). Cached by its own key, like the tables."""
    import copy

    from fairdiff import pretrain
    from fairdiff.checkpoints import checkpoint_dirs, checkpoint_step
    from fairdiff.data.images import pipeline_kwargs

    if not stage_keys.pretraining(ctx.cfg):
        raise ValueError("stages.convergence: needs pretraining (pretrain.steps > 0)")
    p, cfg = ctx.cfg["pretrain"], copy.deepcopy(ctx.cfg)
    cfg["train"].update(checkpoint_every=p["curve_every"], keep_checkpoints=cfg["train"]["steps"] // p["curve_every"] + 1)
    dense = Context(cfg, ctx.schema, ctx.layout, ctx.figures, pretrain_runs=ctx.pretrain_runs)
    run = trained(dense, method, progress, out=ctx.layout.root / "convergence" / method)
    extractor = domain_encoder(ctx)
    curve = {k: p[k] for k in ("curve_every", "curve_images")}
    st = stage_keys.Stage("convergence", stage_keys.flatten(curve, "pretrain.") | stage_keys.flatten(
        ctx.cfg["sample"], "sample."), {"train": stage_keys.train_stage(ctx.cfg, method).key,
                                        "data": stage_keys.stage("dataset", ctx.cfg).key, "extractor": extractor.name},
        {"method": method})

    def compute():
        real_meta, real = _real_split(ctx, dataset(ctx), "test")
        pool_run = pretrain.folder(ctx.cfg, ctx.pretrain_root) / pretrain.RUN
        points = ([("pretrain", checkpoint_step(c), c) for c in checkpoint_dirs(pool_run)] + [("finetune", 0, None)]
                  + [("finetune", checkpoint_step(c), c) for c in checkpoint_dirs(run)])
        frame = pretrain.convergence_frame(
            points, ctx.layout.base, pretrain.curve_records(real_meta, p["curve_images"], ctx.cfg["seed"]),
            extractor.features(real, num_workers=ctx.cfg["data"]["num_workers"]).numpy(), extractor, ctx.cfg["sample"],
            seed=ctx.cfg["seed"], resolution=ctx.cfg["data"]["resolution"],
            rotate=pipeline_kwargs(ctx.schema, ctx.cfg["data"]["preprocess"])["rotate"], progress=progress)
        return frame.assign(method=method)

    return _cached_table(ctx.layout.evaluation / f"convergence-{method}.csv", st, compute)


def group_reference_table(ctx: Context, method: str) -> pd.DataFrame:
    """FID and KID of every group of ``evaluate.reference.attribute`` at matched n (``per_group``
    real reference and ``per_group`` generated images per group), and each group minus the
    majority group (the largest in training), with jackknife intervals
    (:mod:`fairdiff.evaluate.group_reference`). Needs the attribute set."""
    from fairdiff.evaluate.group_reference import group_reference_metrics
    from fairdiff.reference import SPLIT, majority_group, reference_settings

    attribute, per_group = reference_settings(ctx.cfg, ctx.schema, required=True)
    extractor, e = domain_encoder(ctx), ctx.cfg["evaluate"]
    st = _table_stage(ctx, "group_reference", _source_inputs(ctx, method, SPLIT) | {"extractor": extractor.name},
                      method=method)

    def compute():
        records = reference_records(ctx)
        real_meta, real = _real_split(ctx, records, SPLIT)
        manifest, fake = _generated_split(ctx, method, SPLIT)
        how = ("a seeded subsample of " if records.attrs.get("subsampled") else "") + records.attrs.get("source", "")
        majority = majority_group(dataset(ctx), ctx.schema, attribute)
        table = group_reference_metrics(
            real, fake, real_meta, manifest, ctx.schema, extractor, attribute, majority,
            jackknife_blocks=e["jackknife_blocks"], kid_subset_size=e["kid_subset_size"], kid_subsets=e["kid_subsets"],
            seed=ctx.cfg["seed"], num_workers=ctx.cfg["data"]["num_workers"],
            note=f"{per_group} real ({how}) and {per_group} generated images per group")
        table.insert(0, "method", method)
        return table

    return _cached_table(ctx.layout.evaluation / f"group_reference-{method}.csv", st, compute)


def semantic_table(ctx: Context, source: str) -> pd.DataFrame:
    """Classifiers trained on ``source`` images (``real`` or a method's generated train images),
    selected on real val, scored on real test, for every classifier task of the schema and every
    classifier of ``evaluate.classifiers``."""
    from fairdiff.evaluate.classifier import classifier_settings, semantic_evaluation, train_classifier

    e, workers = ctx.cfg["evaluate"], ctx.cfg["data"]["num_workers"]
    st = _table_stage(ctx, "semantic", _source_inputs(ctx, source, "train"), source=source)

    def compute():
        records = dataset(ctx)
        val_meta, val_x = _real_split(ctx, records, "val")
        test_meta, test_x = _real_split(ctx, records, "test")
        if source == "real":
            train_meta, train_x = _real_split(ctx, records, "train")
        else:
            train_meta, train_x = _generated_split(ctx, source, "train")
        tables = []
        for spec in e["classifiers"]:
            for task in ctx.schema.classifier_tasks:
                n_classes = ctx.schema.label(task).n_classes
                model, _ = train_classifier(train_x, train_meta[task].to_numpy(), val_x, val_meta[task].to_numpy(),
                                            n_classes, seed=ctx.cfg["seed"], num_workers=workers,
                                            **classifier_settings(spec, ctx.cfg["data"]["resolution"]))
                tables.append(semantic_evaluation(model, test_x, test_meta[task].to_numpy(), test_meta, ctx.schema,
                                                  task, n_boot=e["n_boot"], seed=ctx.cfg["seed"], num_workers=workers)
                              .assign(classifier=spec["arch"], init=model.init))
        return pd.concat(tables, ignore_index=True).assign(source=source)

    return _cached_table(ctx.layout.evaluation / f"semantic-{source}.csv", st, compute)


def _attribute_classifiers(ctx: Context) -> dict:
    """One classifier per sensitive attribute (the first of ``evaluate.classifiers``), trained on
    real training images, the epoch chosen on real validation images; once per context."""
    from fairdiff.evaluate.classifier import classifier_settings
    from fairdiff.evaluate.fidelity import train_attribute_classifiers

    if "attribute_classifiers" not in ctx.memo:
        spec, records = ctx.cfg["evaluate"]["classifiers"][0], dataset(ctx)
        train_meta, train_x = _real_split(ctx, records, "train")
        val_meta, val_x = _real_split(ctx, records, "val")
        ctx.memo["attribute_classifiers"] = train_attribute_classifiers(
            train_x, train_meta, val_x, val_meta, ctx.schema, seed=ctx.cfg["seed"],
            num_workers=ctx.cfg["data"]["num_workers"], **classifier_settings(spec, ctx.cfg["data"]["resolution"]))
    return ctx.memo["attribute_classifiers"]


def fidelity_table(ctx: Context, source: str) -> pd.DataFrame:
    """Attribute fidelity: does an image show the group it was made for? Accuracy of per-attribute
    classifiers trained on real images, on real test images (``source="real"``: the ceiling) or on a
    method's generated test images labelled with their prompted group."""
    from fairdiff.evaluate.fidelity import attribute_fidelity

    st = _table_stage(ctx, "fidelity", _source_inputs(ctx, source, "test"), source=source)

    def compute():
        if source == "real":
            meta, images = _real_split(ctx, dataset(ctx), "test")
        else:
            meta, images = _generated_split(ctx, source, "test")
        return attribute_fidelity(_attribute_classifiers(ctx), images, meta, ctx.schema, source)

    return _cached_table(ctx.layout.evaluation / f"fidelity-{source}.csv", st, compute)


def closest_pairs(ctx: Context, method: str, n: int = 6):
    """The ``n`` generated test images of ``method`` closest to a training image in the extractor's
    feature space: (generated uint8, training uint8, table with ids and distances)."""
    import numpy as np

    from fairdiff.evaluate.memorisation import closest_pairs as pairs

    extractor, records = domain_encoder(ctx), dataset(ctx)
    manifest, fake = _generated_split(ctx, method, "test")
    train_meta, train_rows = _real_split(ctx, records, ("train", "val"))
    table = pairs(extractor.features(fake).numpy(), extractor.features(train_rows).numpy(), n)
    table["fake_id"] = manifest["id"].to_numpy()[table["fake_index"]]
    table["train_id"] = train_meta["id"].to_numpy()[table["train_index"]]
    return np.asarray(fake[table["fake_index"].to_numpy()]), np.asarray(train_rows[table["train_index"].to_numpy()]), table
