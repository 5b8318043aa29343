"""Where a training step's time goes: the real trainer (``fairdiff.train.train``) with a timer on
every part of its loop, and optionally cProfile's view of the same steps.

    python benchmarks/profile_train.py [--profile mini] [--method baseline] [--steps 80] [--cprofile]

Each part is timed by wrapping the function the loop calls (the UNet's forward, the backward pass,
AdamW, the EMA update, gathers, the perturbation, the metrics rows, the progress bar, ...) with a
``perf_counter`` pair, so the overhead is two clock reads per call, not cProfile's per Python call.
The first ``--warmup`` steps (default 5) and the final save are left out. One process, 2 threads,
fp32, no checkpoints. Prints a table (ms per step and share of the step) and the process's peak
RSS; ``--cprofile`` adds cProfile's 25 most expensive functions by own time. The reading of a run is kept by hand in
benchmarks/results/profile_train.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import functools
import io as stdio
import pstats
import resource
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch

import fairdiff  # noqa: F401  (cache locations first)
from fairdiff import train as train_mod
from fairdiff.config import load_config
from fairdiff.prepare import base_source, ensure_dataset, prepare_base, training_cache
from fairdiff.runs import layout_for


class Timers:
    """Seconds spent in each wrapped function, counted only while ``active``."""

    def __init__(self):
        self.active = False
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, owner, attr: str, label: str) -> contextlib.AbstractContextManager:
        """Patch ``owner.attr`` with a timed version for the duration of the returned context."""
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if not self.active:
                return original(*args, **kwargs)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1
        return _patched(owner, attr, timed)


@contextlib.contextmanager
def _patched(owner, attr, value):
    """Set ``owner.attr`` for the block; afterwards restore it, or remove it where it was inherited."""
    own = vars(owner).get(attr, _MISSING)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        if own is _MISSING:
            delattr(owner, attr)
        else:
            setattr(owner, attr, own)


_MISSING = object()


def targets() -> list[tuple[object, str, str]]:
    """(owner, attribute, label) of every part of the loop that is timed. Nested parts (the UNet's
    forward inside the per-sample loss) are listed separately and subtracted in the table."""
    from accelerate import Accelerator
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from fairdiff.fairness import FairBayesianPerturbation

    return [
        (train_mod, "_per_sample_loss", "per-sample loss (incl. UNet forward)"),
        (UNet2DConditionModel, "forward", "UNet forward"),
        (Accelerator, "backward", "backward"),
        (Accelerator, "clip_grad_norm_", "clip grad norm"),
        (torch.optim.AdamW, "step", "AdamW step"),
        (torch.optim.AdamW, "zero_grad", "zero grad"),
        (EMAModel, "step", "EMA update"),
        (Accelerator, "gather", "gather"),
        (train_mod.BatchOrder, "__call__", "batch order"),
        (FairBayesianPerturbation, "weights", "FBP weights"),
        (FairBayesianPerturbation, "update", "FBP update (incl. BO events)"),
        (FairBayesianPerturbation, "_bo_step", "BO event"),
        (train_mod, "_metrics_row", "metrics row"),
        (train_mod, "_metrics_rows", "metrics rows (bulk)"),
        (train_mod, "_bo_row", "BO row"),
        (tqdm, "update", "progress bar"),
        (tqdm, "set_postfix", "progress bar"),
    ]


NESTED = {"per-sample loss (incl. UNet forward)": "UNet forward", "FBP update (incl. BO events)": "BO event"}


def profile(cfg: dict, method: str, source: str, cache_dir: Path, warmup: int, steps: int,
            use_cprofile: bool) -> tuple[pd.DataFrame, str]:
    """Run ``warmup + steps`` steps of the real trainer; return the per-part table and cProfile text."""
    cfg = copy.deepcopy(cfg)
    cfg["train"].update(steps=warmup + steps, checkpoint_every=10**9)
    timers, stamps = Timers(), []
    prof = cProfile.Profile() if use_cprofile else None

    def on_step(info):
        stamps.append(time.perf_counter())
        if info["step"] == warmup:
            timers.active = True
            if prof is not None:
                prof.enable()
        elif info["step"] == warmup + steps and prof is not None:
            prof.disable()
        if info["step"] == warmup + steps:
            timers.active = False

    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        for owner, attr, label in targets():
            if hasattr(owner, attr):
                stack.enter_context(timers.wrap(owner, attr, label))
        train_mod.train(cfg, method, Path(tmp) / method, source, cache_dir, progress=True, on_step=on_step)
    step_s = stamps[-1] - stamps[warmup - 1]
    seconds = dict(timers.seconds)
    for outer, inner in NESTED.items():
        if outer in seconds:
            seconds[outer] -= seconds.get(inner, 0.0)
    rows = [{"part": k.replace(" (incl. UNet forward)", " (excl. UNet forward)")
             .replace(" (incl. BO events)", " (excl. BO events)"),
             "calls": timers.calls[k], "ms_per_step": 1e3 * v / steps, "share": v / step_s}
            for k, v in seconds.items()]
    rows.sort(key=lambda r: -r["ms_per_step"])
    rest = step_s - sum(seconds.values())
    rows += [{"part": "rest of the loop (untimed)", "calls": steps, "ms_per_step": 1e3 * rest / steps,
              "share": rest / step_s},
             {"part": "whole step", "calls": steps, "ms_per_step": 1e3 * step_s / steps, "share": 1.0}]
    text = ""
    if prof is not None:
        buf = stdio.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        text = buf.getvalue()
    return pd.DataFrame(rows), text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--method", default="baseline")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cprofile", action="store_true", help="also print cProfile's top functions")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile)
    ensure_dataset(cfg, progress=False)
    layout = layout_for(cfg)
    prepare_base(cfg, layout.base, progress=False)
    source = base_source(cfg, layout.base)
    training_cache(cfg, source, layout.cache, progress=False)
    table, text = profile(cfg, args.method, source, layout.cache, args.warmup, args.steps, args.cprofile)
    print(f"\n{args.profile} {args.method}, batch {cfg['train']['batch_size']}, {args.steps} steps after "
          f"{args.warmup} warm-up, {args.threads} threads")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if text:
        print(text)


if __name__ == "__main__":
    main()
