"""What watching a run costs: ``train.report_to: tensorboard`` against no tracker, on the mini profile.

    python benchmarks/bench_tracking.py [--profile mini] [--method fairbo] [--steps 200] [--repeats 2]
                                        [--images-every 200]

Each repeat trains ``--steps`` steps three times, alternating, in one process with one intra-op
thread (on a busy 2-core machine two threads slow every step down several times over): without a
tracker (``off``), with TensorBoard at the profile's settings (``tensorboard``: every metrics row and
BO event, no images at the mini default ``validation_every: 0``), and with TensorBoard and a
validation grid every ``--images-every`` steps (``tensorboard+images``: at 200, the 4 grids of an
800-step mini run scaled to the steps run; the one-off cost of the first grid, loading the records
and the pipeline, is paid within these few steps, so its share is overstated).
Per run two figures:
- ``tracker_share``: the seconds spent inside the tracker (creating it, reading earlier event files,
  logging every row, drawing and logging the images, closing the writer) over the whole run
  without a tracker of the same repeat. Measured inside the run, so the machine's drifting speed
  (other work on a shared machine moves a run's time by several percent) does not blur it.
- ``end_to_end_overhead``: the run over the run without a tracker, minus one: the same cost seen
  from outside, with that drift in it.
Reported per repeat and as the median over the repeats (with the range). Writes
benchmarks/results/bench_tracking.csv.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

import fairdiff  # noqa: F401  (cache locations first)
from fairdiff import io, tracking
from fairdiff.config import load_config
from fairdiff.prepare import base_source, ensure_dataset, prepare_base, training_cache
from fairdiff.runs import layout_for
from fairdiff.train import train

RESULTS = Path(__file__).parent / "results"


@contextlib.contextmanager
def timed(cls, names: tuple[str, ...], seconds: list[float]):
    """Add the wall time of every call of ``cls.<name>`` to ``seconds[0]`` while the block runs."""
    originals = {name: getattr(cls, name) for name in names}

    def wrap(fn):
        def timed_call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[0] += time.perf_counter() - t0
        return timed_call

    for name, fn in originals.items():
        setattr(cls, name, wrap(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(cls, name, fn)


def one_run(cfg: dict, method: str, source: str, cache: Path, report_to: str | None, images_every: int) -> dict:
    from accelerate.tracking import TensorBoardTracker

    cfg = copy.deepcopy(cfg)
    cfg["train"].update(report_to=report_to, validation_every=images_every)
    inside, grids = [0.0], [0.0]
    with tempfile.TemporaryDirectory() as tmp, timed(tracking.RunTracker, ("__init__", "update"), inside), \
            timed(TensorBoardTracker, ("finish",), inside), \
            timed(tracking.RunTracker, ("_validation_images",), grids):
        t0 = time.perf_counter()
        train(cfg, method, Path(tmp) / method, source, cache, progress=False)
        total = time.perf_counter() - t0
        logs = Path(tmp) / method / "logs"
        events = sum(p.stat().st_size for p in logs.glob("events.out.tfevents.*")) if logs.is_dir() else 0
    return {"seconds": total, "tracker_seconds": inside[0], "grid_seconds": grids[0], "event_bytes": events}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--method", default="fairbo", help="fairbo: sigma and BO events are logged too")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images-every", type=int, default=200, help="validation_every of the run with images")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.profile)
    cfg["train"].update(steps=args.steps)
    ensure_dataset(cfg, progress=False)
    layout = layout_for(cfg)
    prepare_base(cfg, layout.base, progress=False)
    source = base_source(cfg, layout.base)
    training_cache(cfg, source, layout.cache, progress=False)  # built once, outside the timings

    variants = {"off": (None, 0), "tensorboard": ("tensorboard", cfg["train"]["validation_every"]),
                "tensorboard+images": ("tensorboard", args.images_every)}
    rows = []
    for repeat in range(args.repeats):
        off = None
        for name, (report_to, every) in variants.items():
            r = one_run(cfg, args.method, source, layout.cache, report_to, every)
            off = off or r
            rows.append({"variant": name, "repeat": repeat, "validation_every": every, "seconds": r["seconds"],
                         "tracker_seconds": r["tracker_seconds"], "grid_seconds": r["grid_seconds"],
                         "tracker_share": r["tracker_seconds"] / off["seconds"],
                         "end_to_end_overhead": r["seconds"] / off["seconds"] - 1, "event_bytes": r["event_bytes"],
                         "load_avg_1min": os.getloadavg()[0]})
            print(f"repeat {repeat + 1} {name:19s} {r['seconds']:6.1f} s, {r['tracker_seconds']:6.3f} s in the "
                  f"tracker ({100 * rows[-1]['tracker_share']:.2f} % of the run without), end to end "
                  f"{100 * rows[-1]['end_to_end_overhead']:+.1f} %", flush=True)
    frame = pd.DataFrame(rows)
    summary = frame.groupby("variant", sort=False).agg(
        validation_every=("validation_every", "first"), seconds=("seconds", "median"),
        tracker_seconds=("tracker_seconds", "median"), grid_seconds=("grid_seconds", "median"),
        tracker_share=("tracker_share", "median"), tracker_share_min=("tracker_share", "min"),
        tracker_share_max=("tracker_share", "max"), end_to_end_overhead=("end_to_end_overhead", "median"),
        end_to_end_overhead_min=("end_to_end_overhead", "min"), end_to_end_overhead_max=("end_to_end_overhead", "max"),
        event_bytes=("event_bytes", "median"), load_avg_1min=("load_avg_1min", "max")).reset_index()
    summary.insert(1, "repeat", "median")
    out = pd.concat([frame, summary], ignore_index=True)
    for key, value in (("log_every", cfg["train"]["log_every"]), ("steps", args.steps), ("method", args.method),
                       ("profile", args.profile)):
        out.insert(0, key, value)
    io.write_csv(RESULTS / "bench_tracking.csv", out, float_format="%.4g")
    for _, r in summary.iterrows():
        print(f"median {r['variant']:19s} tracker {100 * r['tracker_share']:.2f} % of the run "
              f"(range {100 * r['tracker_share_min']:.2f}-{100 * r['tracker_share_max']:.2f} %), end to end "
              f"{100 * r['end_to_end_overhead']:+.1f} %")
    print(f"written to {RESULTS / 'bench_tracking.csv'}")


if __name__ == "__main__":
    main()
