"""Training step time: this project's trainer against a loop written the way the authors' script
works, and the cost of Fair Bayesian Perturbation over the baseline with its BO events amortised.

    python benchmarks/bench_train.py [--profile mini] [--steps 90] [--batch N] [--variants ...]

Variants (same tiny model, data, batch, threads; one process; fp32; the first steps are warm-up):
- ``reference``: the authors' loop (docs/method.md §1.2): a DataLoader opens and
  preprocesses every image from disk (JPEG decode, min-max stretch, rotate, resize, crop), the
  tokenizer, CLIP text encoder and VAE run on every batch, then UNet, AdamW and EMA.
- ``reference-in-memory``: the same with the decoded images held in memory, which separates the
  cost of the encoders from the cost of reading images.
- ``fairdiff`` / ``fairdiff-fairbo``: ``fairdiff.train.train`` itself (cached latents and text
  embeddings, accelerate, EMA, metric logging), timed step to step through its ``on_step`` hook.
- ``fairdiff-auto-adamw`` (not run by default): the trainer with ``train.adamw_kernel: auto``, i.e.
  the foreach AdamW on the CPU that runs trained before the fused default used; it shows what the
  fused kernel saves.

Window 30 and 90 timed steps after 5 warm-up steps, so the fairbo timing holds exactly three BO
events. `--repeats N` alternates the variants N times and reports each one's median run; the ratios
(``speedup_vs_reference``, ``fairbo_overhead``, ``fbp_share_of_baseline_step``) are taken within each
repeat and reported as their median over the repeats, with their range (``_min``, ``_max``). The
fairbo run also times FBP's own calls (weights, update, BO events): ``fbp_share_of_baseline_step``
is that time over the baseline step, which the machine's drifting speed (step means of one variant
spread by 15 %) does not blur as it blurs ``fairbo_overhead``, the end-to-end ratio. Writes
benchmarks/results/train.csv (train-b<N>.csv with --batch).
"""
from __future__ import annotations

import argparse
import copy
import os
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

import fairdiff  # noqa: F401  (cache locations first)
from fairdiff import io
from fairdiff.config import load_config
from fairdiff.data.dataset import ImageRecordDataset
from fairdiff.models import load_pipeline
from fairdiff.prepare import base_source, ensure_dataset, prepare_base, training_cache, training_records
from fairdiff.runs import layout_for
from fairdiff.schema import get_schema
from fairdiff.train import train

RESULTS = Path(__file__).parent / "results"
DEFAULT_VARIANTS = ("reference", "reference-in-memory", "fairdiff", "fairdiff-fairbo")
VARIANTS = (*DEFAULT_VARIANTS, "fairdiff-auto-adamw")


def reference_loop(cfg: dict, source: str, in_memory: bool):
    """One step of the authors' training loop, as a closure (encoders and image decoding inside)."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    schema, tc = get_schema(cfg["dataset"]), cfg["train"]
    pipe = load_pipeline(source)
    torch.manual_seed(cfg["seed"])
    unet = pipe.unet
    unet.train()
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    opt = torch.optim.AdamW(unet.parameters(), lr=tc["lr"], weight_decay=tc["adam_weight_decay"])
    ema = EMAModel(unet.parameters(), decay=tc["ema_decay"])
    data = ImageRecordDataset(training_records(cfg), schema, cfg["data"]["resolution"], cache=in_memory)
    if in_memory:
        for i in range(len(data)):
            data.pixels_uint8(i)
    loader = torch.utils.data.DataLoader(data, batch_size=tc["batch_size"], shuffle=True, drop_last=True,
                                         num_workers=0, generator=torch.Generator().manual_seed(cfg["seed"]))
    batches = iter(())

    def step():
        nonlocal batches
        batch = next(batches, None)
        if batch is None:
            batches = iter(loader)
            batch = next(batches)
        with torch.no_grad():
            ids = pipe.tokenizer(batch["prompt"], padding="max_length", truncation=True,
                                 max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
            hidden = pipe.text_encoder(ids)[0]
            latents = pipe.vae.encode(batch["pixel_values"]).latent_dist.sample() * pipe.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],))
        pred = unet(sched.add_noise(latents, noise, t), t, hidden).sample
        per_sample = F.mse_loss(pred.float(), sched.get_velocity(latents, noise, t).float(),
                                reduction="none").mean(dim=(1, 2, 3))
        per_sample.mean().backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), tc["max_grad_norm"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
    return step


def time_reference(step, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def time_trainer(cfg: dict, method: str, source: str, cache_dir: Path, warmup: int, steps: int,
                 adamw_kernel: str | None = None) -> tuple[list[float], float]:
    """Step-to-step times of the real trainer, warm-up steps and the final save left out, and the
    seconds spent inside Fair Bayesian Perturbation (weights, update and BO events) in those steps."""
    from profile_train import Timers  # benchmarks/ is this script's folder

    from fairdiff.fairness import FairBayesianPerturbation

    cfg = copy.deepcopy(cfg)
    cfg["train"].update(steps=warmup + steps, checkpoint_every=10**9)
    if adamw_kernel is not None:
        cfg["train"]["adamw_kernel"] = adamw_kernel
    stamps, timers = [], Timers()

    def on_step(info):
        stamps.append(time.perf_counter())
        timers.active = warmup <= info["step"] < warmup + steps  # FBP calls of steps warmup+1 .. warmup+steps

    with tempfile.TemporaryDirectory() as tmp, timers.wrap(FairBayesianPerturbation, "weights", "fbp"), \
            timers.wrap(FairBayesianPerturbation, "update", "fbp"):
        train(cfg, method, Path(tmp) / method, source, cache_dir, progress=False, on_step=on_step)
    return [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])], timers.seconds["fbp"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--steps", type=int, default=90)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=None, help="override the profile's batch size")
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS)
    ap.add_argument("--repeats", type=int, default=1,
                    help="time every variant this many times, alternating, and report the median run: on a "
                         "shared machine one run's mean swings by 20 %%, more than the FBP overhead itself")
    args = ap.parse_args()
    torch.set_num_threads(2)
    overrides = {"train": {"batch_size": args.batch}} if args.batch else None
    cfg = load_config(args.profile, overrides=overrides)
    ensure_dataset(cfg, progress=False)
    layout = layout_for(cfg)
    prepare_base(cfg, layout.base, progress=False)
    source = base_source(cfg, layout.base)
    training_cache(cfg, source, layout.cache, progress=False)  # built once, outside the timings

    runs = []
    for repeat in range(args.repeats):
        for name in args.variants:
            fbp_s = 0.0
            if name.startswith("reference"):
                step = reference_loop(cfg, source, in_memory=name.endswith("in-memory"))
                times = time_reference(step, args.warmup, args.steps)
            else:
                method = "fairbo" if name.endswith("fairbo") else "baseline"
                times, fbp_s = time_trainer(cfg, method, source, layout.cache, args.warmup, args.steps,
                                            adamw_kernel="auto" if name.endswith("auto-adamw") else None)
            t = torch.tensor(times)
            runs.append({"variant": name, "repeat": repeat, "ms_per_step_mean": 1000 * float(t.mean()),
                         "ms_per_step_median": 1000 * float(t.median()), "fbp_ms_per_step": 1000 * fbp_s / len(times),
                         "load_avg_1min": os.getloadavg()[0]})
            print(f"{name:22s} {runs[-1]['ms_per_step_mean']:8.1f} ms/step (mean of {len(times)}, run {repeat + 1})",
                  flush=True)
    # per variant, the run whose mean is the median over the repeats
    runs = pd.DataFrame(runs)
    frame = runs.groupby("variant", sort=False).agg(
        repeats=("repeat", "size"), ms_per_step_mean=("ms_per_step_mean", "median"),
        ms_per_step_median=("ms_per_step_median", "median"), fbp_ms_per_step=("fbp_ms_per_step", "median"),
        load_avg_1min=("load_avg_1min", "max"))
    frame.insert(0, "steps", args.steps)
    frame.insert(0, "resolution", cfg["data"]["resolution"])
    frame.insert(0, "batch", cfg["train"]["batch_size"])
    frame.insert(0, "profile", args.profile)
    # Ratios within each repeat (runs minutes apart, so a drift of the machine's speed cancels more than
    # between medians), then their median and range over the repeats.
    mean = runs.pivot(index="repeat", columns="variant", values="ms_per_step_mean")
    fbp_ms = runs.pivot(index="repeat", columns="variant", values="fbp_ms_per_step")
    ratios = {}
    if "reference" in mean:
        ratios["speedup_vs_reference"] = {v: mean["reference"] / mean[v] for v in mean}
    if {"fairdiff", "fairdiff-fairbo"} <= set(mean):
        # end to end (swings with the machine's speed), and FBP's own work over the baseline step (robust)
        ratios["fairbo_overhead"] = {"fairdiff-fairbo": mean["fairdiff-fairbo"] / mean["fairdiff"] - 1}
        ratios["fbp_share_of_baseline_step"] = {"fairdiff-fairbo": fbp_ms["fairdiff-fairbo"] / mean["fairdiff"]}
    for column, per_variant in ratios.items():
        for variant, values in per_variant.items():
            frame.loc[variant, column] = values.median()
            if args.repeats > 1:
                frame.loc[variant, f"{column}_min"], frame.loc[variant, f"{column}_max"] = values.min(), values.max()
    frame["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = RESULTS / ("train.csv" if args.batch is None else f"train-b{args.batch}.csv")
    io.write_csv(out, frame.reset_index(), float_format="%.4g")
    print(frame.to_string())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
