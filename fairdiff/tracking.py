"""Watching a run while it trains: accelerate's trackers (TensorBoard, trackio, wandb), main process only.

``train.report_to`` names the tracker (null: none). Every metrics row :mod:`fairdiff.train` builds
becomes scalars (``train/loss``, ``train/gap``, ``train/lr``, one curve per group for every
``name[attribute=group]`` column: ``loss/race/Black``, ``sigma/...``, ``q/...``), every BO event
of ``bo_trace.csv`` becomes ``bo/acq_value``, ``bo_candidate/<attribute>/<group>``..., and every
``train.validation_every`` steps (and at the last step) one image per group of each attribute is
drawn from fixed prompts and seeds (the condition grid of :mod:`fairdiff.sample`, with the run's
``sample`` settings) into ``validation/<attribute>``. TensorBoard writes into ``<run>/logs/``
(``tensorboard --logdir runs/``), wandb keeps its files there too, trackio uses its own store.

Rows reach the tracker in step order: a BO event or a validation image waits until the metrics
rows of its step are built (every ``train.log_every`` steps and at each checkpoint), so every
tracker sees steps that only grow.

A resumed run continues the same curves: it reads the event files already in ``<run>/logs/`` and
logs a (tag, step) only when that tag has nothing at that step yet and the step is not below the
last step the files hold. The steps a killed run logged after its last checkpoint are therefore
kept, not logged twice (a resumed run repeats them exactly, see :mod:`fairdiff.train`), and no
event is ever written out of order. We do not use TensorBoard's purge (``purge_step``), which
hides the old events from TensorBoard only: here every reader of the files sees one value per
step. Rows of the checkpoint a run resumes from that the files lack (``report_to`` switched on
for the resume) are logged then, so the board shows the run from step 1.

Nothing here touches the training's random streams: validation images are drawn under a forked
RNG, the EMA weights are swapped in and back exactly, so ``report_to`` never changes a result
(and is left out of the stage key).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from fairdiff.errors import MissingPackage

LOG_DIR = "logs"
PROJECT = "fairdiff"
# tracker -> (the package it needs, how to install it)
TRACKERS = {"tensorboard": ("tensorboard", "pip install tensorboard"),
            "trackio": ("trackio", "pip install 'fairdiff[trackio]'"),
            "wandb": ("wandb", "pip install 'fairdiff[wandb]'")}
_NOT_LOGGED = {"step", "y"}  # y is -gap (the BO objective): the gap is already on the board
_COLUMN = re.compile(r"(?P<name>[^\[\]]+)\[(?P<inner>[^\]]*)\]")


def require_tracker(cfg: dict) -> None:
    """Refuse, before any work, a ``train.report_to`` whose package is not installed (accelerate
    itself would drop the tracker silently)."""
    name = cfg["train"].get("report_to")
    if name is None:
        return
    from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

    if name not in TRACKERS:
        raise ValueError(f"train.report_to: expected one of {tuple(TRACKERS)} or null, got {name!r}")
    available = {"tensorboard": is_tensorboard_available, "trackio": is_trackio_available,
                 "wandb": is_wandb_available}[name]
    if not available():
        package, install = TRACKERS[name]
        raise MissingPackage(package, f"train.report_to={name}", install)


def accelerator_kwargs(cfg: dict, out_dir: str | Path) -> dict:
    """What ``Accelerator(...)`` takes to log with the configured tracker (nothing when none)."""
    name = cfg["train"].get("report_to")
    if name is None:
        return {}
    from accelerate.utils import ProjectConfiguration

    require_tracker(cfg)
    return {"log_with": name, "project_config": ProjectConfiguration(project_dir=str(out_dir),
                                                                     logging_dir=str(out_dir))}


def tag(column: str, section: str = "train") -> str:
    """The board's name of a metrics or BO column: ``loss`` -> ``train/loss``,
    ``sigma[race=Black]`` -> ``sigma/race/Black``, ``candidate[race=Black]`` (section ``bo``) ->
    ``bo_candidate/race/Black``. Characters TensorBoard does not accept in a tag become ``_``."""
    m = _COLUMN.fullmatch(column)
    if m:
        name = m["name"] if section == "train" else f"{section}_{m['name']}"
        out = f"{name}/{m['inner'].replace('=', '/', 1)}"
    else:
        out = f"{section}/{column}"
    return re.sub(r"[^-/\w.]", "_", out)


def scalars(row: dict, section: str = "train") -> dict[str, float]:
    """The finite numbers of one metrics (or BO) row, under their board tags."""
    out = {}
    for column, value in row.items():
        if column in _NOT_LOGGED or isinstance(value, (str, bool)) or value is None:
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[tag(column, section)] = value
    return out


def logged_steps(log_dir: str | Path) -> dict[str, int]:
    """The last step of every tag in the TensorBoard event files under ``log_dir`` (read with
    TensorBoard's own loader; a record cut short by a kill ends its file)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    last: dict[str, int] = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                last[value.tag] = max(last.get(value.tag, -1), int(event.step))
    return last


class RunTracker:
    """Feeds one run's rows to the accelerator's tracker; built and called on the main process."""

    def __init__(self, acc, cfg: dict, method: str, out_dir: str | Path, base: str, state, unet, ema, optimizer):
        self.acc, self.cfg, self.base, self.unet, self.ema, self.optimizer = acc, cfg, base, unet, ema, optimizer
        self.name = cfg["train"]["report_to"]
        self.every = cfg["train"]["validation_every"]
        self.final_step = cfg["train"]["steps"]
        out_dir = Path(out_dir)
        self.logged = logged_steps(out_dir / LOG_DIR) if self.name == "tensorboard" else {}
        self.floor = max(self.logged.values(), default=-1)
        run_name = f"{cfg['dataset']}-{cfg['profile']}/{method}"
        if self.name == "tensorboard":  # the writer's folder is logging_dir/<project name>: <run>/logs
            acc.init_trackers(LOG_DIR)
        else:
            from fairdiff.stage_keys import flatten

            kwargs = {"wandb": {"name": run_name, "dir": str(out_dir / LOG_DIR)}, "trackio": {"name": run_name}}
            (out_dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
            acc.init_trackers(PROJECT, config={k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                                               for k, v in flatten(cfg | {"method": method}).items()},
                              init_kwargs={self.name: kwargs[self.name]})
        self.metrics_seen, self.bo_seen = 0, 0
        self.images: list[tuple[int, dict]] = []  # drawn, waiting for the metrics rows of their step
        self.pipe = None
        from fairdiff.schema import get_schema

        self.image_tags = [tag(a, "validation") for a in get_schema(cfg["dataset"]).attribute_names]
        self.update(state, validate=False)

    # ----------------------------------------------------------------------------- scalars
    def _fresh(self, tag_: str, step: int) -> bool:
        return step >= self.floor and step > self.logged.get(tag_, -1)

    def _log(self, values: dict, step: int) -> None:
        values = {k: v for k, v in values.items() if self._fresh(k, step)}
        if not values:
            return
        for tracker in self.acc.trackers:
            if tracker.name == "tensorboard":
                # One event holding every value of the step, flushed once per update: accelerate's
                # log() writes an event per value and flushes per call, five times the time
                # (benchmarks/bench_tracking.py).
                from tensorboard.compat.proto.summary_pb2 import Summary

                tracker.writer.file_writer.add_summary(
                    Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()]), step)
            else:
                tracker.log(values, step=step)
        for k in values:
            self.logged[k] = step

    def update(self, state, validate: bool = True) -> None:
        """Log the rows built since the last call (after every step, main process)."""
        due = self.every and (state.step % self.every == 0 or state.step == self.final_step)
        if validate and due and any(self._fresh(t, state.step) for t in self.image_tags):  # a resume may have them
            self.images.append((state.step, self._validation_images()))
        new = state.metrics[self.metrics_seen:]
        if not new:
            return
        self.metrics_seen = len(state.metrics)
        upto = int(new[-1]["step"])
        by_step: dict[int, dict] = {}
        for row in new:
            by_step.setdefault(int(row["step"]), {}).update(scalars(row))
        while self.bo_seen < len(state.bo_trace) and int(state.bo_trace[self.bo_seen]["step"]) <= upto:
            row = state.bo_trace[self.bo_seen]
            by_step.setdefault(int(row["step"]), {}).update(scalars(row, "bo"))
            self.bo_seen += 1
        by_step[upto]["train/lr"] = float(self.optimizer.param_groups[0]["lr"])
        for step in sorted(by_step):
            self._log(by_step[step], step)
        ready = [item for item in self.images if item[0] <= upto]
        self.images = [item for item in self.images if item[0] > upto]
        for step, images in ready:
            self._log_images(images, step)
        for tracker in self.acc.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.flush()

    # ----------------------------------------------------------------------------- images
    def _log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        images = {k: v for k, v in images.items() if self._fresh(k, step)}
        if not images:
            return
        for tracker in self.acc.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images(images, step=step, dataformats="NHWC")
            elif tracker.name == "wandb":
                tracker.log_images({k: list(v) for k, v in images.items()}, step=step)
            # trackio: scalars only (accelerate's trackio tracker has no image logging)
        for k in images:
            self.logged[k] = step

    def _validation_prompts(self):
        """The condition grid's first prompt per group (``fairdiff sample``'s grid: the other
        attributes and labels at their most common value) and its fixed seeds."""
        from fairdiff.prepare import load_records
        from fairdiff.sample import condition_grid, image_seed
        from fairdiff.schema import get_schema

        grid = condition_grid(load_records(self.cfg), get_schema(self.cfg["dataset"]), per_group=1)
        return grid, [image_seed(self.cfg["seed"], i) for i in grid["id"]]

    def _validation_images(self) -> dict[str, np.ndarray]:
        """One image per group of every attribute from the model as it is now, drawn the way
        ``fairdiff sample`` draws (scheduler, steps, guidance, raw or EMA UNet; full precision,
        under the accelerator's autocast), turned to the frame of the files on disk."""
        import torch

        from fairdiff.data.images import pipeline_kwargs, to_anatomical
        from fairdiff.sample import generate, set_scheduler
        from fairdiff.schema import get_schema

        s, acc = self.cfg["sample"], self.acc
        unet = acc.unwrap_model(self.unet)
        if self.pipe is None:
            from diffusers import StableDiffusionPipeline

            self.pipe = StableDiffusionPipeline.from_pretrained(self.base, unet=unet, safety_checker=None,
                                                                requires_safety_checker=False)
            set_scheduler(self.pipe, s["scheduler"])
            self.pipe.set_progress_bar_config(disable=True)
            for module in (self.pipe.vae, self.pipe.text_encoder):
                module.eval().to(acc.device)
            self.grid, self.seeds = self._validation_prompts()
        params = list(unet.parameters())
        use_ema = s["unet"] == "ema" and self.ema is not None
        devices = [acc.device.index or 0] if acc.device.type == "cuda" else []
        was_training = unet.training
        unet.eval()
        if use_ema:
            self.ema.store(params)
            self.ema.copy_to(params)
        try:
            with torch.random.fork_rng(devices=devices), acc.autocast():
                images = generate(self.pipe, list(self.grid["prompt"]), self.seeds, s["steps"], s["guidance_scale"],
                                  self.cfg["data"]["resolution"])
        finally:
            if use_ema:
                self.ema.restore(params)
            unet.train(was_training)
        schema = get_schema(self.cfg["dataset"])
        if pipeline_kwargs(schema, self.cfg["data"].get("preprocess", "ours"))["rotate"]:
            images = to_anatomical(torch.from_numpy(images).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        attributes = self.grid["attribute"].to_numpy()
        return {tag(f"{a}", "validation"): np.ascontiguousarray(images[attributes == a])
                for a in dict.fromkeys(attributes)}


def start(acc, cfg: dict, method: str, out_dir: str | Path, base: str, state, unet, ema, optimizer):
    """The run's tracker on the main process when ``train.report_to`` is set, else None."""
    if cfg["train"].get("report_to") is None or not acc.is_main_process:
        return None
    return RunTracker(acc, cfg, method, out_dir, base, state, unet, ema, optimizer)
