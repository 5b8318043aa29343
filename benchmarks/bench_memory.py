"""Peak resident memory of training and of feature extraction at two dataset sizes: memory bounded
by the batch, not by the number of images.

    python benchmarks/bench_memory.py [--sizes 500 5000] [--res 128] [--vae-steps 20] [--steps 20]

For each size N, synthetic CheXpert data of N subjects (the quickest synthetic format to write
and decode; frontal films only, so a few fewer records) is written once, then two fresh
processes each measure their own peak resident memory (the kernel's VmHWM, after each stage):
- ``train``: what ``fairdiff train`` does from scratch at ``--res`` px: build the tiny pipeline
  and train its VAE on the training images (streamed; ``--vae-steps`` steps), build the latent
  and text cache (streamed onto disk), then ``--steps`` steps of fairbo (BO window 10);
- ``features``: the real images decoded once into the uint8 cache (``cached_real``), N generated
  PNGs at ``--res`` px, and the features and logits of both through a domain encoder.
One process each, no DataLoader workers, so every byte counts once. Before streaming, the
images were held as float32 in memory: 4 * 3 * res^2 bytes per image (192 KiB at 128 px,
so about 940 MiB more at 5,000 than at 500 images); the ``stacked_mib`` column gives that.
Writes benchmarks/results/bench_memory.csv.
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DATASET = "chexpert"


def vm_hwm_mib() -> float:
    """This process's peak resident memory so far (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def bench_config(root: Path, res: int, vae_steps: int, steps: int) -> dict:
    from fairdiff.config import load_config

    overrides = {"data": {"root": str(root), "resolution": res, "num_workers": 0},
                 "vae": {"steps": vae_steps, "batch_size": 8},
                 "train": {"steps": steps, "checkpoint_every": steps, "batch_size": 8},
                 "fbp": {"window": 10}}
    cfg = load_config("smoke", DATASET, overrides)
    cfg["data"]["synthetic"] = False
    return cfg


def child_train(root: Path, work: Path, args) -> dict:
    """The train stage from scratch, streamed; peak memory after each part."""
    import torch

    from fairdiff.data.dataset import ImageRecordDataset
    from fairdiff.models import build_tiny_pipeline, train_vae
    from fairdiff.prepare import prepare_base, training_cache, training_records
    from fairdiff.schema import get_schema
    from fairdiff.train import train

    torch.set_num_threads(1)  # a busy shared machine: two spinning OpenMP threads can run 10x slower
    cfg = bench_config(root, args.res, args.vae_steps, args.steps)
    schema, out = get_schema(DATASET), {"imports_mib": vm_hwm_mib()}
    base = work / "base"
    t0 = time.perf_counter()
    if args.via_prepare_base:
        prepare_base(cfg, base, progress=False)
        n = len(training_records(cfg))
    else:  # the calls prepare_base makes with the streamed VAE input
        frame = training_records(cfg)
        n = len(frame)
        pipe = build_tiny_pipeline(cfg["model"], schema, args.res, seed=cfg["seed"])
        v = cfg["vae"]
        train_vae(pipe.vae, ImageRecordDataset(frame, schema, args.res, cache=False), v["steps"], v["batch_size"],
                  v["lr"], v["kl_weight"], seed=cfg["seed"], progress=False)
        pipe.save_pretrained(base)
        del pipe  # as when prepare_base returns
        gc.collect()
    out.update(n_images=n, base_s=time.perf_counter() - t0, base_mib=vm_hwm_mib())
    t0 = time.perf_counter()
    training_cache(cfg, str(base), work / "cache", progress=False)
    out.update(cache_s=time.perf_counter() - t0, cache_mib=vm_hwm_mib())
    t0 = time.perf_counter()
    train(cfg, "fairbo", work / "run", str(base), work / "cache", progress=False)
    out.update(train_s=time.perf_counter() - t0, train_mib=vm_hwm_mib())
    return out


def child_features(root: Path, work: Path, args) -> dict:
    """Real images cached and read by rows, generated PNGs decoded per batch, features of both."""
    import pandas as pd
    import torch

    from fairdiff.evaluate.features import DomainEncoder, extract
    from fairdiff.imagesets import GeneratedImages, cached_real
    from fairdiff.prepare import load_records
    from fairdiff.schema import get_schema

    torch.set_num_threads(1)  # a busy shared machine: two spinning OpenMP threads can run 10x slower
    cfg = bench_config(root, args.res, args.vae_steps, args.steps)
    out = {"imports_mib": vm_hwm_mib()}
    frame = load_records(cfg)
    manifest = pd.read_csv(work.parent / "generated.csv")
    t0 = time.perf_counter()
    real = cached_real(frame, get_schema(DATASET), args.res, work / "eval")
    out.update(n_images=len(real), real_cache_s=time.perf_counter() - t0, real_cache_mib=vm_hwm_mib())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = DomainEncoder({"name": "bench", "in_res": args.res, "widths": [16, 32, 64, 128],
                                 "heads": {"joint": 4}}).eval()
    t0 = time.perf_counter()
    real_f, _ = extract(encoder, real, batch_size=64)
    fake_f, fake_l = extract(encoder, GeneratedImages(manifest), batch_size=64)
    out.update(n_generated=len(manifest), extract_s=time.perf_counter() - t0, extract_mib=vm_hwm_mib(),
               feature_rows=len(real_f) + len(fake_f))
    return out


def write_generated(folder: Path, n: int, res: int) -> Path:
    """n random PNGs at res px and their manifest (content does not matter for memory)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    manifest = folder.parent / "generated.csv"
    pd.DataFrame({"id": range(n), "path": paths}).to_csv(manifest, index=False)
    return manifest


def run_child(kind: str, root: Path, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--root", str(root), "--work", str(work),
           "--res", str(args.res), "--vae-steps", str(args.vae_steps), "--steps", str(args.steps)]
    if args.via_prepare_base:
        cmd.append("--via-prepare-base")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result | {"wall_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--vae-steps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--via-prepare-base", action="store_true",
                    help="build the base with fairdiff.prepare.prepare_base instead of its streamed calls")
    ap.add_argument("--child", choices=["train", "features"])
    ap.add_argument("--root", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_memory.csv")
    args = ap.parse_args()
    import fairdiff  # noqa: F401  (cache locations, offline)

    if args.child:
        fn = child_train if args.child == "train" else child_features
        print(json.dumps(fn(args.root, args.work, args)))
        return

    import pandas as pd

    from fairdiff import io
    from fairdiff.data.synth.chexpert import generate_chexpert

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for n in args.sizes:
            root, t0 = Path(tmp) / f"data-{n}", time.perf_counter()
            generate_chexpert(root, n, seed=0, progress=False)
            write_generated(Path(tmp) / f"gen-{n}" / "images", n, args.res)
            print(f"N={n}: data written in {time.perf_counter() - t0:.0f} s", flush=True)
            for kind in ("train", "features"):
                r = run_child(kind, root, Path(tmp) / f"gen-{n}" / kind, args)
                peak = max(v for k, v in r.items() if k.endswith("_mib"))
                rows.append({"stage": kind, "subjects": n, "n_images": r["n_images"], "res": args.res,
                             "peak_mib": round(peak, 1), **{k: round(v, 1) for k, v in r.items() if k != "n_images"},
                             "stacked_mib": round(r["n_images"] * (2 if kind == "features" else 1) * 3 * args.res**2
                                                  * 4 / 2**20, 1)})
                print(f"  {kind}: {r['n_images']} images, peak {peak:.0f} MiB, {r['wall_s']:.0f} s", flush=True)
    frame = pd.DataFrame(rows)
    for kind, part in frame.groupby("stage", sort=False):
        small, big = part.iloc[0], part.iloc[-1]
        print(f"{kind}: peak {big.peak_mib:.0f} MiB at {big.n_images} images vs {small.peak_mib:.0f} MiB at "
              f"{small.n_images}: ratio {big.peak_mib / small.peak_mib:.3f} (target <= 1.15; images stacked as "
              f"float32 would add {big.stacked_mib - small.stacked_mib:.0f} MiB)")
    io.write_csv(args.out, frame)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
