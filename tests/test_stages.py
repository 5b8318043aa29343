"""The orchestrator never throws work away: stage keys cover exactly what a stage reads, finished
runs are reused or refused (never deleted), killed runs resume bit-identically, and a run trained
from the command line is the notebook stage's run."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairdiff import stage_keys, stages
from fairdiff.errors import RunConflict

ROOT = Path(__file__).resolve().parent.parent


def _profile(tmp_path, data_root, **train) -> Path:
    """A user profile outside configs/ (inherit by name), shrunk to a few steps."""
    steps = train.get("steps", 3)
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""inherit: smoke
data: {{root: {data_root}}}
vae: {{steps: 3}}
train: {{steps: {steps}, checkpoint_every: {train.get('checkpoint_every', steps)}, batch_size: 4}}
fbp: {{window: 2}}
""")
    return path


def _fingerprint(folder: Path) -> dict:
    """Content hash and mtime of every file below ``folder``."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _unet_state(run: Path) -> dict:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(run / "final", subfolder="unet").state_dict()


def test_keys_cover_exactly_what_a_stage_reads(synthetic_fairgenmed, tmp_path):
    ctx = stages.context(_profile(tmp_path, synthetic_fairgenmed))
    cfg = ctx.cfg
    base = stage_keys.train_stage(cfg, "baseline").key
    changed = stages.context(_profile(tmp_path, synthetic_fairgenmed), sets=[
        "evaluate.n_boot=7", "sample.steps=2", "train.checkpoint_every=1", "fbp.window=5"]).cfg
    assert stage_keys.train_stage(changed, "baseline").key == base  # fbp does not shape the baseline
    assert stage_keys.train_stage(changed, "fairbo").key != stage_keys.train_stage(cfg, "fairbo").key
    assert stage_keys.sample_stage(changed, "baseline", "test").key != stage_keys.sample_stage(cfg, "baseline", "test").key
    lr = stages.context(_profile(tmp_path, synthetic_fairgenmed), sets=["train.lr=0.002"]).cfg
    st = stage_keys.train_stage(lr, "baseline")
    assert st.key != base
    assert stage_keys.differences({"settings": stage_keys.train_stage(cfg, "baseline").settings}, st) == [
        "train.lr: 0.001 -> 0.002"]


def test_a_setting_added_later_keeps_older_runs_keys_at_the_value_they_ran_with(synthetic_fairgenmed, tmp_path):
    """A run stamped before train.adamw_kernel / fbp.gp_likelihood existed (its settings lack them) is
    current again when they are set to what it ran with; the new defaults make a different run."""
    import copy

    cfg = stages.context(_profile(tmp_path, synthetic_fairgenmed)).cfg
    older = copy.deepcopy(cfg)  # the config as it was before either setting existed
    del older["train"]["adamw_kernel"], older["fbp"]["gp_likelihood"]
    legacy = stages.context(_profile(tmp_path, synthetic_fairgenmed),
                            sets=["train.adamw_kernel=auto", "fbp.gp_likelihood=gpytorch"]).cfg
    for method in ("baseline", "fairbo"):
        assert stage_keys.train_stage(legacy, method).key == stage_keys.train_stage(older, method).key
        assert stage_keys.train_stage(cfg, method).key != stage_keys.train_stage(older, method).key
    assert "train.adamw_kernel" not in stage_keys.train_stage(legacy, "baseline").settings
    assert stage_keys.differences({"settings": stage_keys.train_stage(older, "fairbo").settings},
                                  stage_keys.train_stage(cfg, "fairbo")) == [
        "fbp.gp_likelihood: '(absent)' -> 'closed_form' (made before this setting existed, i.e. with 'gpytorch': "
        "--set fbp.gp_likelihood=gpytorch reuses it)",
        "train.adamw_kernel: '(absent)' -> 'fused' (made before this setting existed, i.e. with 'auto': "
        "--set train.adamw_kernel=auto reuses it)"]


def test_settings_changes_reuse_refuse_and_move_aside_but_never_delete(synthetic_fairgenmed, tmp_path, one_thread):
    profile, runs = _profile(tmp_path, synthetic_fairgenmed), tmp_path / "runs"
    ctx = stages.context(profile, runs=runs)
    run = stages.trained(ctx, "baseline")
    before = _fingerprint(run)
    base_before = _fingerprint(ctx.layout.base)
    assert stage_keys.is_current(ctx.layout.base, stage_keys.base_stage(ctx.cfg))
    stages.base(ctx)  # the base stage is reused too, not rebuilt
    assert _fingerprint(ctx.layout.base) == base_before
    assert not [p for p in ctx.layout.root.iterdir() if p.name.endswith(".stage.json")]

    # Evaluation- and sampling-only changes: the same run, untouched (content and mtime).
    again = stages.context(profile, runs=runs, sets=["evaluate.n_boot=7", "sample.guidance_scale=2.0"])
    assert stages.trained(again, "baseline") == run
    assert _fingerprint(run) == before

    # A training change: refused with the differing key, nothing deleted or rewritten.
    changed = stages.context(profile, runs=runs, sets=["train.lr=0.002"])
    with pytest.raises(RunConflict, match=r"(?s)train.lr: 0.001 -> 0.002.*--retrain"):
        stages.trained(changed, "baseline")
    assert _fingerprint(run) == before

    # --retrain moves the old run aside (byte for byte) and trains the new one in its place.
    stages.trained(changed, "baseline", retrain=True)
    aside = [p for p in run.parent.iterdir() if p.name.startswith("baseline.old-")]
    assert len(aside) == 1 and _fingerprint(aside[0]).keys() == before.keys()
    assert {k: v[0] for k, v in _fingerprint(aside[0]).items()} == {k: v[0] for k, v in before.items()}
    assert stage_keys.read_stamp(run)["settings"]["train.lr"] == 0.002


def test_a_foreign_folder_is_never_trained_into(synthetic_fairgenmed, tmp_path):
    runs = tmp_path / "runs"
    ctx = stages.context(_profile(tmp_path, synthetic_fairgenmed), runs=runs)
    foreign = ctx.layout.method("baseline")
    foreign.mkdir(parents=True)
    (foreign / "config.yaml").write_text("mine: true\n")
    with pytest.raises(RunConflict, match="not a fairdiff training run"):
        stages.trained(ctx, "baseline")
    assert (foreign / "config.yaml").read_text() == "mine: true\n"


ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # as the in-process run (one_thread)


def _run(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=ONE_THREAD)


def test_killed_training_resumes_bit_identically_and_the_cli_run_is_the_notebook_run(synthetic_fairgenmed, tmp_path,
                                                                                     one_thread):
    profile = _profile(tmp_path, synthetic_fairgenmed, steps=6, checkpoint_every=2)
    straight = stages.trained(stages.context(profile, runs=tmp_path / "straight"), "fairbo")

    runs = tmp_path / "runs"
    killed = _run(ROOT / "tests" / "kill_train.py", profile, runs, "fairbo", 5)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = stages.context(profile, runs=runs).layout.method("fairbo")
    assert not (run / "final").exists() and (run / "checkpoints").is_dir()
    config_before = (run / "config.yaml").read_bytes()

    resumed = _run("-m", "fairdiff", "train", "--config", profile, "--method", "fairbo", "--runs", runs)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "config.yaml").read_bytes() == config_before  # a resume never rewrites the config
    a, b = _unet_state(straight), _unet_state(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "metrics.csv").read_text() == (straight / "metrics.csv").read_text()

    # The notebook stage picks the CLI's run up as it is.
    before = _fingerprint(run)
    assert stages.trained(stages.context(profile, runs=runs), "fairbo") == run
    assert _fingerprint(run) == before
