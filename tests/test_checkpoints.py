"""Checkpoints: every file carries a checksum, resume never trusts a damaged checkpoint, falls back to
the newest intact one out loud, and the resumed run still ends bit-identical to an uninterrupted one."""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config
from fairdiff.checkpoints import (MANIFEST, latest_checkpoint, latest_intact, load_checkpoint, require_intact,
                                  save_checkpoint, verify, write_manifest)
from fairdiff.errors import CheckpointError
from fairdiff.fairness import FairBayesianPerturbation
from fairdiff.train import TrainState, train


class OneProcess:
    """The part of accelerate's ``Accelerator`` that saving and loading use, for one plain process."""
    is_main_process, num_processes = True, 1

    def wait_for_everyone(self):
        pass

    def unwrap_model(self, model):
        return model


def _parts(fill: float = 0.0):
    """A model whose weights all equal ``fill`` (so a load shows which checkpoint it read), its
    optimiser after one step (non-empty state) and a perturbation after a few draws."""
    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(fill)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(2, 4)).sum().backward()
    opt.step()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(fill)
    fbp = FairBayesianPerturbation([3, 2], window=2, bo=False)
    fbp.weights(torch.tensor([[0, 1], [2, 0]]))
    return model, opt, fbp


def _log(steps) -> list[dict]:
    return [{"step": s, "loss": 1.0 / s, "sigma[race=0]": 0.5} for s in steps]


def _save(run: Path, step: int, keep: int = 10, metrics: list[dict] | None = None) -> Path:
    model, opt, fbp = _parts(float(step))
    state = TrainState(step=step, metrics=_log(range(1, step + 1)) if metrics is None else metrics,
                       bo_trace=[{"step": step, "acq_value": 0.25}])
    return save_checkpoint(run, state, OneProcess(), model, opt, None, fbp, 0, keep)


def _load(ckpt: Path, run: Path) -> tuple[dict, torch.nn.Module]:
    model, opt, fbp = _parts(-1.0)
    return load_checkpoint(ckpt, run, OneProcess(), model, opt, None, fbp, 0), model


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_round_trip_restores_everything_and_the_manifest_hashes_every_file(tmp_path):
    run = tmp_path / "run"
    torch.manual_seed(123)
    ckpt = _save(run, 3)
    rng_at_save = torch.get_rng_state()
    files = json.loads((ckpt / MANIFEST).read_text())["files"]
    assert sorted(files) == ["bo_trace.csv", "metrics.csv", "model.pt", "rank0.pt", "state.json"]
    for name, entry in files.items():  # checked against an independent hash of the bytes on disk
        data = (ckpt / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert verify(ckpt) == [] and latest_intact(run) == ckpt

    torch.manual_seed(999)
    state, model = _load(ckpt, run)
    assert torch.equal(torch.get_rng_state(), rng_at_save)
    assert all(torch.equal(p, torch.full_like(p, 3.0)) for p in model.parameters())
    assert state["step"] == 3 and [r["step"] for r in state["metrics"]] == [1, 2, 3]
    assert state["bo_trace"] == [{"step": 3, "acq_value": 0.25}]
    assert pd.read_csv(run / "metrics.csv")["step"].tolist() == [1, 2, 3]


DAMAGE = {
    "truncated model.pt": ("model.pt", _truncate, "bytes"),
    "truncated state.json": ("state.json", _truncate, "bytes"),
    "empty rank0.pt": ("rank0.pt", lambda p: p.write_bytes(b""), "0 bytes"),
    "one flipped byte in model.pt": ("model.pt", _flip_one_byte, "sha256"),
    "emptied metrics.csv": ("metrics.csv", lambda p: p.write_text("\n"), "bytes"),
    "no manifest": (MANIFEST, lambda p: p.unlink(), "missing"),
    "manifest not JSON": (MANIFEST, lambda p: p.write_text('{"files": {'), "unreadable"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_checkpoint_is_skipped_naming_its_file_and_resume_falls_back(case, tmp_path):
    name, damage, says = DAMAGE[case]
    run = tmp_path / "run"
    older, newer = _save(run, 2), _save(run, 4)
    damage(newer / name)

    problems = verify(newer)
    assert len(problems) == 1 and str(newer / name) in problems[0] and says in problems[0]
    with pytest.warns(UserWarning, match=f"skipping damaged checkpoint .*{name}"):
        assert latest_intact(run) == older
    with pytest.raises(CheckpointError, match=name) as err:
        require_intact(newer)  # named explicitly: an error, never a silent switch to another one
    assert err.value.problems == problems
    with pytest.warns(UserWarning, match=r"metrics.csv: dropping 2 row\(s\) after step 2"):
        state, model = _load(older, run)
    assert state["step"] == 2 and all(torch.equal(p, torch.full_like(p, 2.0)) for p in model.parameters())


def test_a_checkpoint_saved_with_a_short_or_empty_log_is_damaged(tmp_path):
    run = tmp_path / "run"
    empty = _save(run, 3, metrics=[])  # the log of steps 1..3 would be lost on resume
    assert any("metrics.csv: no rows at step 3" in p for p in verify(empty))
    short = _save(run, 5)
    pd.DataFrame(_log([2, 3, 4, 5])).to_csv(short / "metrics.csv", index=False)
    write_manifest(short)  # checksums agree with the short log: the contents check still refuses it
    assert verify(short) == [f"{short / 'metrics.csv'}: 4 rows, state.json says 5"]
    with pytest.warns(UserWarning):
        assert latest_intact(run) is None


def test_unknown_entries_under_checkpoints_are_ignored_with_a_warning_and_never_pruned(tmp_path):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    for stray in ("step-backup", "step-3", "step-0-notes"):
        (ckpts / stray).mkdir(parents=True)
        (ckpts / stray / "model.pt").write_text("mine")
    (ckpts / "notes.txt").write_text("mine")
    (ckpts / ".tmp-step-0000009").mkdir()  # what a kill during a save leaves: ours, ignored quietly
    first = _save(run, 2, keep=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert latest_intact(run) == first and latest_checkpoint(run) == first
    warned = {Path(str(w.message).split(":")[0]).name for w in caught}
    assert warned == {"step-backup", "step-3", "step-0-notes", "notes.txt"}
    _save(run, 4, keep=1)
    assert sorted(p.name for p in ckpts.iterdir()) == [
        ".tmp-step-0000009", "notes.txt", "step-0-notes", "step-0000004", "step-3", "step-backup"]


def test_pruning_keeps_the_checkpoint_just_written_when_a_newer_one_is_damaged(tmp_path):
    run = tmp_path / "run"
    older, newer = _save(run, 2, keep=1), _save(run, 4, keep=2)
    _truncate(newer / "model.pt")
    with pytest.warns(UserWarning, match="skipping damaged"):
        assert latest_intact(run) == older
    resumed = _save(run, 3, keep=1)  # the run repeats step 3 after falling back to step 2
    assert verify(resumed) == [] and not older.exists()
    with pytest.warns(UserWarning, match="skipping damaged"):
        assert latest_intact(run) == resumed


def test_nothing_to_resume_is_none(tmp_path):
    assert latest_intact(tmp_path / "never-trained") is None
    ckpt = _save(tmp_path / "run", 2)
    (ckpt / "model.pt").write_bytes(b"")
    with pytest.warns(UserWarning, match="model.pt"):
        assert latest_intact(tmp_path / "run") is None


def test_a_manifest_never_makes_verify_read_outside_the_checkpoint(tmp_path):
    ckpt = _save(tmp_path / "run", 2)
    outside = tmp_path / "run" / "secret.txt"
    outside.write_text("not ours")
    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"]["../../secret.txt"] = {"size": 8, "sha256": hashlib.sha256(b"not ours").hexdigest()}
    (ckpt / MANIFEST).write_text(json.dumps(manifest))
    assert verify(ckpt) == [f"{ckpt / MANIFEST}: file name '../../secret.txt' is not a plain file of this checkpoint"]


def test_loading_into_another_world_size_or_model_names_the_file(tmp_path):
    run = tmp_path / "run"
    ckpt = _save(run, 2)
    model, opt, fbp = _parts()
    two = type("TwoProcesses", (OneProcess,), {"num_processes": 2})()
    with pytest.raises(CheckpointError, match="state.json: saved by 1 processes, resumed by 2"):
        load_checkpoint(ckpt, run, two, model, opt, None, fbp, 0)
    wider = torch.nn.Linear(4, 5)
    with pytest.raises(CheckpointError, match="model.pt: does not fit this run"):
        load_checkpoint(ckpt, run, OneProcess(), wider, torch.optim.AdamW(wider.parameters()), None, fbp, 0)


def test_resume_rebuilds_the_run_log_from_its_checkpoint_and_says_what_it_drops(tmp_path):
    run = tmp_path / "run"
    older, newer = _save(run, 2), _save(run, 4)
    assert pd.read_csv(run / "metrics.csv")["step"].tolist() == [1, 2, 3, 4]
    _flip_one_byte(newer / "model.pt")
    with pytest.warns(UserWarning, match="skipping damaged"):
        ckpt = latest_intact(run)
    with pytest.warns(UserWarning, match=r"metrics.csv: dropping 2 row\(s\) after step 2 \(up to step 4\)"):
        _load(ckpt, run)
    assert pd.read_csv(run / "metrics.csv")["step"].tolist() == [1, 2]


@pytest.mark.slow
def test_fallback_to_an_older_checkpoint_still_ends_bit_identical(synthetic_fairgenmed, prepared_base, tmp_path):
    _, base = prepared_base
    cfg = tiny_config(synthetic_fairgenmed, steps=4, checkpoint_every=2, keep_checkpoints=3)
    straight = train(cfg, "fairbo", tmp_path / "straight", str(base), base / "cache", progress=False)
    split = tmp_path / "split"
    train(cfg, "fairbo", split, str(base), base / "cache", progress=False, max_steps=3)
    assert [p.name for p in sorted((split / "checkpoints").iterdir())] == ["step-0000002", "step-0000003"]
    _flip_one_byte(split / "checkpoints" / "step-0000003" / "model.pt")  # loaded silently before checksums
    with pytest.warns(UserWarning) as caught:
        train(cfg, "fairbo", split, str(base), base / "cache", progress=False, resume="latest")
    said = " | ".join(str(w.message) for w in caught)
    assert "step-0000003/model.pt: sha256 differs" in said and "metrics.csv: dropping 1 row(s) after step 2" in said
    from diffusers import UNet2DConditionModel

    a, b = (UNet2DConditionModel.from_pretrained(r / "final" / "unet").state_dict() for r in (straight, split))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = pd.read_csv(straight / "metrics.csv"), pd.read_csv(split / "metrics.csv")
    assert mb["step"].tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(ma.to_numpy(), mb.to_numpy())
    pd.testing.assert_frame_equal(pd.read_csv(straight / "bo_trace.csv"), pd.read_csv(split / "bo_trace.csv"))
