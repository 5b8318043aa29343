"""Training step time: cached latents vs the authors' way (both encoders every step), and the
cost of Fair Bayesian Perturbation over the baseline with BO events amortised.

    python benchmarks/bench_train.py [--profile mini] [--steps 60]

Same tiny model, data, batch and threads for every variant; one process; the first steps are
warm-up. Writes benchmarks/results/train.csv.
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

import fairdiff  # noqa: F401
from fairdiff import io
from fairdiff.config import load_config
from fairdiff.fairness import FairBayesianPerturbation
from fairdiff.models import load_pipeline
from fairdiff.prepare import base_source, ensure_dataset, load_images, prepare_base, training_cache, training_records
from fairdiff.runs import layout_for
from fairdiff.schema import get_schema

OUT = Path(__file__).parent / "results" / "train.csv"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="mini")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(args.profile)
    ensure_dataset(cfg, progress=False)
    layout = layout_for(cfg)
    prepare_base(cfg, layout.base, progress=False)
    source = base_source(cfg, layout.base)
    schema = get_schema(cfg["dataset"])
    cache = training_cache(cfg, source, layout.cache, progress=False)
    pipe = load_pipeline(source)
    records = training_records(cfg)
    images = load_images(records, schema, cfg["data"]["resolution"], progress=False)
    B = cfg["train"]["batch_size"]
    sched = __import__("diffusers").DDPMScheduler.from_config(pipe.scheduler.config)

    def make_step(encode_every_step: bool, fbp: FairBayesianPerturbation | None):
        unet = type(pipe.unet).from_config(pipe.unet.config)
        unet.load_state_dict(pipe.unet.state_dict())
        unet.train()
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)

        def step():
            idx = torch.randint(len(records), (B,), generator=gen)
            if encode_every_step:  # the authors' loop: both frozen encoders run every step
                with torch.no_grad():
                    latents = pipe.vae.encode(images[idx]).latent_dist.sample() * pipe.vae.config.scaling_factor
                    ids = pipe.tokenizer([records["prompt"][int(i)] for i in idx], padding="max_length",
                                         truncation=True, max_length=pipe.tokenizer.model_max_length,
                                         return_tensors="pt").input_ids
                    hidden = pipe.text_encoder(ids)[0]
            else:
                mean, std = cache.latent_mean[idx], cache.latent_std[idx]
                latents = (mean + std * torch.randn_like(mean)) * cache.scaling_factor
                hidden = cache.text[cache.prompt_index[idx]]
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (B,))
            pred = unet(sched.add_noise(latents, noise, t), t, hidden).sample
            per = F.mse_loss(pred, sched.get_velocity(latents, noise, t), reduction="none").mean(dim=(1, 2, 3))
            groups = cache.groups[idx]
            w = fbp.weights(groups) if fbp is not None else torch.ones_like(per)
            (w * per).mean().backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if fbp is not None:
                fbp.update(per.detach(), groups)
        return step

    f = cfg["fbp"]
    variants = {
        "reference-style (encoders every step), baseline": lambda: make_step(True, None),
        "fairdiff (cached latents), baseline": lambda: make_step(False, None),
        "fairdiff (cached latents), fairbo": lambda: make_step(False, FairBayesianPerturbation(
            schema.n_groups, window=f["window"], exploitation=f["exploitation"], beta=f["beta"])),
    }
    rows = []
    for name, build in variants.items():
        step = build()
        for _ in range(args.warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        dt = (time.perf_counter() - t0) / args.steps
        rows.append({"variant": name, "profile": args.profile, "batch": B, "resolution": cfg["data"]["resolution"],
                     "steps": args.steps, "s_per_step": dt})
        print(f"{name:55s} {dt * 1000:8.1f} ms/step", flush=True)
    frame = pd.DataFrame(rows)
    ref = frame["s_per_step"].iloc[0]
    frame["speedup_vs_reference"] = ref / frame["s_per_step"]
    base_t = frame["s_per_step"].iloc[1]
    frame["overhead_vs_baseline"] = frame["s_per_step"] / base_t - 1
    frame["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    io.write_csv(OUT, frame, float_format="%.4g")
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
