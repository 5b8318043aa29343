"""Sampling speed: batched vs one image at a time (same steps), and the paper's DDIM-75 against
DPM-Solver++ with few steps, with the FID each reaches on the test split.

    python benchmarks/bench_sample.py [--profile mini] [--method baseline] [--n 160]

Needs a trained run (``make reproduce`` or ``fairdiff train``). Writes benchmarks/results/sample.csv.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import fairdiff  # noqa: F401
from fairdiff import io, stages
from fairdiff.evaluate.features import extract
from fairdiff.evaluate.metrics import fid_from_features
from fairdiff.imagesets import real_uint8, to_unit_tensor
from fairdiff.models import load_pipeline
from fairdiff.sample import _to_anatomical, generate, image_seed, set_scheduler

OUT = Path(__file__).parent / "results" / "sample.csv"


def timed(pipe, prompts, seeds, steps, guidance, res, batch):
    t0 = time.perf_counter()
    images = [generate(pipe, prompts[i:i + batch], seeds[i:i + batch], steps, guidance, res)
              for i in range(0, len(prompts), batch)]
    return np.concatenate(images), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--method", default="baseline")
    ap.add_argument("--n", type=int, default=160, help="test prompts for the FID comparison (mini: all 160)")
    args = ap.parse_args()
    ctx = stages.context(args.profile, "fairgenmed")
    cfg, schema = ctx.cfg, ctx.schema
    run = ctx.layout.method(args.method)
    if not (run / "final").is_dir():
        raise SystemExit(f"{run}: no trained run; run `make reproduce PROFILE={args.profile}` first")
    records = stages.dataset(ctx)
    test = records[records["split"] == "test"].sort_values("id")
    sub = test.head(args.n)
    prompts, seeds = list(sub["prompt"]), [image_seed(cfg["seed"], i) for i in sub["id"]]
    res, guidance = cfg["data"]["resolution"], cfg["sample"]["guidance_scale"]
    pipe = load_pipeline(run / "final", unet=cfg["sample"]["unet"], dtype=getattr(torch, cfg["sample"]["dtype"]))
    rows = []
    set_scheduler(pipe, "ddim")
    generate(pipe, prompts[:2], seeds[:2], 2, guidance, res)  # warm-up
    steps = cfg["sample"]["steps"]
    k = min(len(prompts), cfg["sample"]["batch_size"])  # the batch the reproduction samples with
    _, t_one = timed(pipe, prompts[:k], seeds[:k], steps, guidance, res, batch=1)
    _, t_batch = timed(pipe, prompts[:k], seeds[:k], steps, guidance, res, batch=k)
    rows += [{"variant": f"ddim {steps} steps, batch 1", "images": k, "seconds": t_one},
             {"variant": f"ddim {steps} steps, batch {k}", "images": k, "seconds": t_batch}]
    encoder = stages.domain_encoder(ctx)
    real_f = extract(encoder, to_unit_tensor(real_uint8(test, schema, res)))[0].double().numpy()
    for name, n_steps in (("ddim", 75), ("dpmsolver", cfg["sample"]["steps"])):
        set_scheduler(pipe, name)
        images, secs = timed(pipe, prompts, seeds, n_steps, guidance, res, batch=cfg["sample"]["batch_size"])
        fake_f = extract(encoder, to_unit_tensor(_to_anatomical(images, schema)))[0].double().numpy()
        rows.append({"variant": f"{name} {n_steps} steps, batch {cfg['sample']['batch_size']}", "images": len(images),
                     "seconds": secs, "fid_vs_test": fid_from_features(real_f, fake_f), "extractor": encoder.name})
    frame = pd.DataFrame(rows)
    frame["images_per_s"] = frame["images"] / frame["seconds"]
    frame["threads"] = torch.get_num_threads()
    io.write_csv(OUT, frame, float_format="%.4g")
    print(frame.to_string(index=False))
    print(f"batched / one-at-a-time speed-up: {t_one / t_batch:.1f}x")


if __name__ == "__main__":
    main()
