"""The pretraining stage: a base trained once on a synthetic pool without the planted phenotype,
cached by its key, resumed after an interruption, loadable as a stock diffusers pipeline, and the
weights every method's fine-tuning starts from; and the convergence figure's pieces."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from fairdiff import pretrain, stage_keys, stages
from fairdiff.config import load_config
from fairdiff.errors import ConfigError

STUDY_POOL_SYNTH = load_config("study")["pretrain"]["synth"]  # the pool the study pretrains on
PLANTED_KNOBS = ("race_pigment", "race_disc_scale", "race_difficulty")


def _profile(tmp_path: Path, data_root: Path, pretrain_steps: int = 4, **pretrain_over) -> Path:
    """The smoke profile shrunk to seconds, pretraining on a tiny pool with the study's pool knobs."""
    p = {"steps": pretrain_steps, "n": 40, "seed": 5, "synth": STUDY_POOL_SYNTH, "batch_size": 4,
         "checkpoint_every": 2, "curve_every": 1, "curve_images": 8, **pretrain_over}
    path = tmp_path / "tiny-pretrain.yaml"
    path.write_text(yaml.safe_dump({
        "inherit": "smoke", "data": {"root": str(data_root)}, "vae": {"steps": 3},
        "train": {"steps": 2, "checkpoint_every": 2, "batch_size": 4}, "fbp": {"window": 2}, "pretrain": p,
        "evaluate": {"encoder": {"epochs": 1}}, "sample": {"steps": 2}}))
    return path


def _ctx(profile: Path, tmp_path: Path, name: str = "runs", sets=()):
    return stages.context(profile, runs=tmp_path / name / "runs", pretrain_runs=tmp_path / name / "pretrain",
                          sets=list(sets))


def _fingerprint(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _unet(path: Path, subfolder: str = "unet") -> dict:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(path, subfolder=subfolder).state_dict()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keys_leave_pretraining_out_when_off_and_cover_it_when_on(synthetic_fairgenmed, tmp_path):
    profile = _profile(tmp_path, synthetic_fairgenmed, pretrain_steps=0)
    off = _ctx(profile, tmp_path).cfg
    older = copy.deepcopy(off)
    del older["pretrain"]  # a config from before the section existed
    for make in (stage_keys.base_stage, lambda c: stage_keys.train_stage(c, "fairbo")):
        assert make(off).key == make(older).key
        assert make(_ctx(profile, tmp_path, sets=["pretrain.n=99"]).cfg).key == make(older).key  # off: not read

    on = _ctx(profile, tmp_path, sets=["pretrain.steps=4"]).cfg
    assert stage_keys.base_stage(on).key != stage_keys.base_stage(off).key
    assert stage_keys.base_stage(on).inputs == {"pretrain": stage_keys.pretrain_stage(on).key}
    lr = _ctx(profile, tmp_path, sets=["pretrain.steps=4", "pretrain.lr=0.002"]).cfg
    for make in (stage_keys.pretrain_stage, stage_keys.base_stage, lambda c: stage_keys.train_stage(c, "baseline")):
        assert make(lr).key != make(on).key
    assert stage_keys.differences({"settings": stage_keys.train_stage(on, "baseline").settings},
                                  stage_keys.train_stage(lr, "baseline")) == ["pretrain.lr: 0.001 -> 0.002"]
    # How often to checkpoint or draw the curve, the fine-tuning, the training seed and the dataset's own
    # data do not change the pretrained base: every seed and arm of a study shares one.
    same = _ctx(profile, tmp_path, sets=["pretrain.steps=4", "pretrain.checkpoint_every=1", "pretrain.curve_every=7",
                                         "pretrain.curve_images=5", "train.lr=0.5", "seed=9", "data.n=77"]).cfg
    assert stage_keys.pretrain_stage(same).key == stage_keys.pretrain_stage(on).key
    assert stage_keys.base_stage(same).key == stage_keys.base_stage(on).key
    assert stage_keys.train_stage(same, "baseline").key != stage_keys.train_stage(on, "baseline").key


def test_pretraining_with_a_real_checkpoint_is_refused(synthetic_fairgenmed, tmp_path):
    ctx = _ctx(_profile(tmp_path, synthetic_fairgenmed), tmp_path, sets=["model.pretrained=models/sd21"])
    with pytest.raises(ConfigError, match="model.pretrained is set"):
        stages.pretrained(ctx)


def test_the_pool_has_no_planted_phenotype(synthetic_fairgenmed, tmp_path, one_thread):
    study = load_config("study")
    planted = {k: study["data"]["synth"][k] for k in ("race_pigment", "race_disc_scale")}
    assert all(any(v != 0 for v in values) for values in planted.values())  # the study does plant something
    ctx = _ctx(_profile(tmp_path, synthetic_fairgenmed, pretrain_steps=2), tmp_path)
    stages.pretrained(ctx)
    pool = pretrain.folder(ctx.cfg, ctx.pretrain_root) / pretrain.POOL
    written = json.loads((pool / "synth_params.json").read_text())
    assert written["n"] == 40 and written["seed"] == 5
    for knob in PLANTED_KNOBS:
        assert written["params"][knob] == [0.0, 0.0, 0.0], knob
    assert written["params"]["ethnicity_difficulty"] == [0.0, 0.0]


def test_pretraining_is_cached_loads_as_a_pipeline_and_is_where_fine_tuning_starts(synthetic_fairgenmed, tmp_path,
                                                                                  one_thread, monkeypatch):
    from diffusers import StableDiffusionPipeline

    from fairdiff.models import build_tiny_pipeline, load_pipeline

    profile = _profile(tmp_path, synthetic_fairgenmed)
    ctx = _ctx(profile, tmp_path, sets=["train.lr=1e-12", "train.steps=1", "train.checkpoint_every=1"])
    out = stages.pretrained(ctx)
    where = pretrain.folder(ctx.cfg, ctx.pretrain_root)
    assert out == where / "pipeline" and stage_keys.is_current(where, stage_keys.pretrain_stage(ctx.cfg))
    assert sorted(p.name for p in (where / "baseline" / "checkpoints").iterdir()) == ["step-0000002", "step-0000004"]
    assert json.loads((where / "pretrain.json").read_text())["steps"] == 4

    # A stock diffusers folder whose unet is the pool run's EMA UNet.
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None, requires_safety_checker=False)
    assert _same(pipe.unet.state_dict(), _unet(where / "baseline" / "final", "unet_ema"))
    assert not _same(pipe.unet.state_dict(), _unet(where / "baseline" / "final", "unet"))
    assert _same(load_pipeline(out).unet.state_dict(), pipe.unet.state_dict())

    # A second call, from another context with the same pretraining, is a hit: no training, nothing rewritten.
    before = _fingerprint(where)
    monkeypatch.setattr("fairdiff.train.train", lambda *a, **k: pytest.fail("pretraining ran again"))
    other = stages.context(profile, runs=tmp_path / "other", pretrain_runs=ctx.pretrain_root, sets=["seed=3"])
    assert stages.pretrained(other) == out
    assert _fingerprint(where) == before
    monkeypatch.undo()

    # The base stage is the pretrained pipeline, and a method's fine-tuning starts from its weights: after
    # one step at lr 1e-12 the arm's UNet is the pretrained EMA UNet up to 1e-9, far from a fresh one.
    run = stages.trained(ctx, "baseline")
    assert _same(_unet(ctx.layout.base), pipe.unet.state_dict())
    assert json.loads((ctx.layout.base / "base.json").read_text())["pretrained"] == str(out)
    tuned = _unet(run / "final")
    fresh = build_tiny_pipeline(ctx.cfg["model"], ctx.schema, ctx.cfg["data"]["resolution"], seed=ctx.cfg["seed"])
    start = pipe.unet.state_dict()
    assert max((tuned[k] - start[k]).abs().max().item() for k in start) < 1e-9
    assert max((fresh.unet.state_dict()[k] - start[k]).abs().max().item() for k in start) > 1e-2
    assert _fingerprint(where) == before  # fine-tuning never writes into the pretraining


def test_interrupted_pretraining_resumes_to_the_same_weights(synthetic_fairgenmed, tmp_path, one_thread):
    profile = _profile(tmp_path, synthetic_fairgenmed)
    straight = stages.pretrained(_ctx(profile, tmp_path, "straight"))

    ctx = _ctx(profile, tmp_path, "resumed")
    assert stages.pretrained(ctx, max_steps=2) is None
    where = pretrain.folder(ctx.cfg, ctx.pretrain_root)
    assert not (where / "pipeline").exists() and not stage_keys.is_current(where, stage_keys.pretrain_stage(ctx.cfg))
    assert [p.name for p in (where / "baseline" / "checkpoints").iterdir()] == ["step-0000002"]
    resumed = stages.pretrained(ctx)
    assert _same(_unet(resumed), _unet(straight))
    metrics = [(folder / "baseline" / "metrics.csv").read_text() for folder in (where, straight.parent)]
    assert metrics[0] == metrics[1]


def test_a_foreign_folder_is_never_pretrained_into(synthetic_fairgenmed, tmp_path):
    from fairdiff.errors import RunConflict

    ctx = _ctx(_profile(tmp_path, synthetic_fairgenmed), tmp_path)
    where = pretrain.folder(ctx.cfg, ctx.pretrain_root)
    where.mkdir(parents=True)
    (where / "notes.txt").write_text("mine\n")
    with pytest.raises(RunConflict, match="not a fairdiff pretraining"):
        stages.pretrained(ctx)
    assert sorted(p.name for p in where.iterdir()) == ["notes.txt"]


def test_flattening_step_known_answers():
    curve = pd.DataFrame({"step": [0, 50, 100, 150, 200, 250], "fid": [100.0, 50.0, 30.0, 21.0, 20.0, 20.5]})
    assert pretrain.flattening_step(curve, 0.1) == 150  # 21 / 20 <= 1.1, while 30 / 20 is not
    assert pretrain.flattening_step(curve, 0.01) == 250  # 20.5 / 20 > 1.01: only the last point is "flat"
    assert pretrain.flattening_step(curve.sample(frac=1, random_state=0), 0.1) == 150  # order of rows is irrelevant
    assert pretrain.flattening_step(curve.assign(fid=[5.0, 9.0, 9.5, 9.0, 9.2, 9.1]), 0.1) == 50  # rising, then flat


def test_convergence_curve_and_figure(synthetic_fairgenmed, tmp_path, one_thread):
    from fairdiff.plots import FigureWriter

    ctx = _ctx(_profile(tmp_path, synthetic_fairgenmed), tmp_path)
    frame = stages.convergence(ctx, "baseline")
    # pretraining checkpoints 2 and 4; fine-tuning step 0 (the pretrained base) and its checkpoints 1 and 2
    assert list(zip(frame["phase"], frame["step"])) == [("pretrain", 2), ("pretrain", 4), ("finetune", 0),
                                                         ("finetune", 1), ("finetune", 2)]
    assert frame["fid"].gt(0).all() and frame["n_fake"].eq(8).all() and frame["n_real"].gt(8).all()
    # the pretrained base is the last pretraining checkpoint's EMA UNet: the same images, the same FID
    assert frame["fid"].iloc[1] == pytest.approx(frame["fid"].iloc[2], rel=1e-6)
    assert (ctx.layout.root / "convergence" / "baseline" / "final").is_dir()
    path = ctx.layout.evaluation / "convergence-baseline.csv"
    mtime = path.stat().st_mtime_ns
    assert stages.convergence(ctx, "baseline").equals(frame) and path.stat().st_mtime_ns == mtime  # cached

    writer = FigureWriter("test", "fairgenmed", root=tmp_path / "figures")
    png = writer.figure(pretrain.convergence_figure(frame), "convergence", data=frame)
    assert png.is_file()
    assert pd.read_csv(png.with_suffix(".csv"))["fid"].round(3).tolist() == frame["fid"].round(3).tolist()
