"""Watching a run with TensorBoard: what TensorBoard's own reader finds in a smoke run's event files
(the metrics.csv values under their tags, sigma and BO events, validation images), one value per
step after a kill and a resume, and the same training with the board on as off."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fairdiff import stages, tracking
from fairdiff.schema import get_schema

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_columns_become_tags_tensorboard_accepts():
    assert tracking.tag("loss") == "train/loss"
    assert tracking.tag("loss[race=Black]") == "loss/race/Black"
    assert tracking.tag("sigma[ethnicity=Non-Hispanic]") == "sigma/ethnicity/Non-Hispanic"
    assert tracking.tag("q[language=Other language]") == "q/language/Other_language"
    assert tracking.tag("candidate[race=Asian]", "bo") == "bo_candidate/race/Asian"
    assert tracking.tag("acq_value", "bo") == "bo/acq_value"
    row = {"step": 3, "loss": 0.5, "y": -0.1, "gap": 0.1, "loss[race=Asian]": float("nan"), "skipped": "window",
           "n_points": np.int64(4), "acq_value": None}
    assert tracking.scalars(row) == {"train/loss": 0.5, "train/gap": 0.1, "train/n_points": 4.0}


def test_a_tracker_that_is_not_installed_is_named(monkeypatch):
    from fairdiff.errors import MissingPackage

    monkeypatch.setattr("accelerate.utils.is_wandb_available", lambda: False)
    with pytest.raises(MissingPackage, match=r"train.report_to=wandb needs the package 'wandb'.*fairdiff\[wandb\]"):
        tracking.require_tracker({"train": {"report_to": "wandb"}})
    tracking.require_tracker({"train": {"report_to": None}})  # nothing asked, nothing needed


def _profile(tmp_path: Path, data_root: Path, report_to: str) -> Path:
    path = tmp_path / f"board-{report_to}.yaml"
    path.write_text(f"""inherit: smoke
data: {{root: {data_root}}}
vae: {{steps: 3}}
train: {{steps: 6, checkpoint_every: 3, log_every: 1, batch_size: 4, report_to: {report_to}, validation_every: 2}}
fbp: {{window: 2}}
sample: {{steps: 2}}
""")
    return path


def _board(run: Path):
    """TensorBoard's reader over the run's logs, keeping every event (no sampling, no purging)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run / "logs"), size_guidance={"scalars": 0, "images": 0, "tensors": 0},
                             purge_orphaned_data=False)
    board.Reload()
    return board


@pytest.mark.slow
def test_a_killed_and_resumed_smoke_run_draws_one_curve_of_its_metrics_and_images(synthetic_fairgenmed, tmp_path,
                                                                                  one_thread):
    off = stages.trained(stages.context(_profile(tmp_path, synthetic_fairgenmed, "null"), runs=tmp_path / "off"),
                         "fairbo")
    assert not (off / "logs").exists()

    profile, runs = _profile(tmp_path, synthetic_fairgenmed, "tensorboard"), tmp_path / "runs"
    run = stages.context(profile, runs=runs).layout.method("fairbo")
    # Killed in step 5: steps 1-4 (and the images of steps 2 and 4) are on the board, the newest
    # checkpoint is step 3, so the resumed run trains step 4 again.
    killed = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_train.py"), str(profile), str(runs), "fairbo",
                             "5"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert tracking.logged_steps(run / "logs")["train/loss"] == 4
    resumed = subprocess.run([sys.executable, "-m", "fairdiff", "train", "--config", str(profile), "--method",
                              "fairbo", "--runs", str(runs)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(list((run / "logs").glob("events.out.tfevents.*"))) == 2  # both processes wrote here

    # The board on changes nothing of the training.
    assert (run / "metrics.csv").read_text() == (off / "metrics.csv").read_text()
    from diffusers import UNet2DConditionModel

    a, b = (UNet2DConditionModel.from_pretrained(r / "final", subfolder="unet").state_dict() for r in (off, run))
    assert all(torch.equal(a[k], b[k]) for k in a)

    board, metrics = _board(run), pd.read_csv(run / "metrics.csv")
    bo = pd.read_csv(run / "bo_trace.csv")
    scalars = set(board.Tags()["scalars"])
    for column in metrics.columns.drop(["step", "y"]):  # every column with a value, at every step it has one
        expected = metrics[["step", column]].dropna()
        events = board.Scalars(tracking.tag(column))
        assert [e.step for e in events] == expected["step"].tolist(), column  # one per step, in order
        assert np.allclose([e.value for e in events], expected[column], rtol=1e-6), column  # float32 on the board
    schema = get_schema("fairgenmed")
    assert {f"sigma/{a.name}/{g}" for a in schema.attributes for g in a.groups} <= scalars
    assert [e.step for e in board.Scalars("train/lr")] == [1, 2, 3, 4, 5, 6]
    assert [e.value for e in board.Scalars("train/lr")] == pytest.approx([1e-3] * 6)
    events = bo[bo["acq_value"].notna()]
    assert len(events) and [e.step for e in board.Scalars("bo/acq_value")] == events["step"].tolist()
    assert {f"bo_candidate/{a.name}/{g}" for a in schema.attributes for g in a.groups} <= scalars

    assert set(board.Tags()["images"]) == {f"validation/{a}" for a in schema.attribute_names}
    for attribute in schema.attributes:
        images = board.Images(f"validation/{attribute.name}")
        assert [i.step for i in images] == [2, 4, 6]  # every validation_every steps, once each
        from io import BytesIO

        from PIL import Image

        grid = np.asarray(Image.open(BytesIO(images[-1].encoded_image_string)))
        # one 32 px image per group, side by side (TensorBoard's grid), drawn by a model that learned something
        assert grid.shape[0] >= 32 and grid.shape[1] >= 32 * len(attribute.groups) and grid.std() > 1
    assert not math.isnan(board.Scalars("train/loss")[-1].value)
