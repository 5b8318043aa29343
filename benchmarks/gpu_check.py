"""The paper profile's code path end to end on one GPU, at reduced length; ``--tiny`` runs the same
path on the CPU in seconds (tests/test_gpu_check.py).

    python benchmarks/gpu_check.py [--out DIR] [--steps 200] [--batch 16] [--subjects 400] [--samples 64]
    python benchmarks/gpu_check.py --tiny --out /tmp/check      # CPU, tiny models, seconds

Stages, each timed, each with its peak GPU memory, and each ending with a device synchronise so a
CUDA error surfaces in the stage that caused it (any error ends the run with exit status 1):
1. ``data``: synthetic FairGenMed (``--subjects``) in the real on-disk format.
2. ``base``: a pipeline with Stable Diffusion 2.1's shapes built from config (random weights;
   none can be downloaded): its UNet (block_out_channels 320/640/1280/1280, attention_head_dim
   5/10/20/20, cross_attention_dim 1024, linear projections, 4 latent channels, 64x64 latents at
   512 px), its VAE (128/256/512/512, two layers per block) and a CLIP text encoder of width
   1024 over 77 tokens (2 layers instead of 23: it runs once per prompt, the cache stores its
   output, and its size does not change the UNet's step), saved as a diffusers folder that
   ``model.pretrained`` points at.
3. ``cache``: the streamed latent and text cache (DataLoader workers, VAE in bf16 on the GPU).
4. ``train``: ``fairdiff.train.train`` with the paper profile (bf16, EMA, gradient
   checkpointing, fairbo with W = 30, so BO events at steps 30, 60, ...) for ``--steps`` steps.
5. ``sample``: ``--samples`` test prompts with DDIM (75 steps, guidance 7.5, fp16: the paper's).
6. ``evaluate``: EfficientNet-B1 at 200 px (the paper's classifier; random initialisation)
   trained on the real train images and scored on real test images (100 bootstrap resamples),
   and the domain encoder's FID/IS of the generated images; images are read per batch.
7. ``unet_step`` (GPU only): the UNet's training step alone (bf16 autocast, no checkpointing,
   AdamW), for the kernel-level MFU.

MFU = model FLOPs per step x steps per second / peak. FLOPs per step are counted once, on the
meta device, with ``torch.utils.flop_counter.FlopCounterMode`` over the UNet's forward and
backward at the training batch (recomputation by gradient checkpointing is not counted, as MFU
is defined). Peak: measured at the start of the same run (:func:`matmul_tflops`: an 8192^3 bf16
matmul on the GPU; a 256^3 float32 one on the CPU for ``--tiny``), or ``--peak-tflops`` to give
one; ``info["peak_source"]`` says which. The datasheet's dense bf16 peak of an H100/H200 SXM (989)
is printed beside it. No GPU run of this script has been made for this repository yet. Writes
``gpu_check.csv`` (one row per stage) and ``gpu_check.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATASHEET_TFLOPS = 989.0  # H100/H200 SXM dense bf16
# Stable Diffusion 2.1's shapes (its published unet/ and vae/ configs); the text encoder keeps
# SD 2.1's width and 77 tokens with 2 of its 23 layers.
SD21_MODEL = {
    "prediction_type": "v_prediction",
    "vae": {"block_out_channels": [128, 256, 512, 512], "latent_channels": 4, "layers_per_block": 2,
            "norm_num_groups": 32},
    "unet": {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "attention_head_dim": [5, 10, 20, 20],
             "norm_num_groups": 32, "use_linear_projection": True},
    "text": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 2, "num_attention_heads": 16,
             "max_length": 77},
}
TINY_MODEL = {
    "prediction_type": "v_prediction",
    "vae": {"block_out_channels": [16, 32, 32], "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 8},
    "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "attention_head_dim": 8, "norm_num_groups": 8,
             "use_linear_projection": True},
    "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "max_length": 77},
}
TINY_EFFICIENTNET = {"width_coefficient": 0.1, "depth_coefficient": 0.1, "hidden_dim": 128}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models at 32 px on whatever device there is (CPU test)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: <out>/gpu_check_work)")
    ap.add_argument("--subjects", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--sample-steps", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--classifier-epochs", type=int, default=None)
    ap.add_argument("--unet-steps", type=int, default=20)
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the peak MFU is computed against (default: measured by a matmul in this run)")
    args = ap.parse_args(argv)
    defaults = (dict(subjects=48, steps=4, batch=4, samples=4, sample_steps=2, workers=0, classifier_epochs=1)
                if args.tiny else
                dict(subjects=400, steps=200, batch=16, samples=64, sample_steps=75, workers=8, classifier_epochs=2))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


class Stages:
    """Times each stage, records its peak GPU memory and synchronises at its end, so an
    asynchronous CUDA error is reported by the stage that caused it."""

    def __init__(self, cuda: bool):
        self.cuda, self.rows = cuda, []

    @contextlib.contextmanager
    def __call__(self, name: str):
        print(f"[gpu_check] {name} ...", flush=True)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        row = {"stage": name}
        t0 = time.perf_counter()
        try:
            yield row
            if self.cuda:
                torch.cuda.synchronize()
        except BaseException:
            print(f"[gpu_check] FAILED in stage {name!r}:", flush=True)
            raise
        row["seconds"] = round(time.perf_counter() - t0, 2)
        row["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else 0.0
        self.rows.append(row)
        gc.collect()  # the stage's models go before the next stage measures its own peak
        if self.cuda:
            torch.cuda.empty_cache()
        print(f"[gpu_check] {name}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "stage"), flush=True)


def unet_flops_per_step(unet_config: dict, batch: int, tokens: int) -> float:
    """FLOPs of one UNet forward + backward at ``batch`` (counted on the meta device: no memory, no time)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
        size = unet_config["sample_size"]
        x = torch.randn(batch, unet_config["in_channels"], size, size)
        hidden = torch.randn(batch, tokens, unet_config["cross_attention_dim"])
        t = torch.randint(0, 1000, (batch,))
        with FlopCounterMode(display=False) as counter:
            unet(x, t, hidden).sample.float().pow(2).mean().backward()
    return float(counter.get_total_flops())


def paper_config(args, data_root: Path, base: Path) -> dict:
    """The paper profile at reduced length (tiny: its small sizes and 32 px on the CPU)."""
    from fairdiff.config import load_config

    overrides = {
        "data": {"root": str(data_root), "num_workers": args.workers},
        "model": {"pretrained": str(base)},
        "train": {"steps": args.steps, "checkpoint_every": args.steps, "batch_size": args.batch,
                  "mixed_precision": "no" if args.tiny else "bf16"},
        "evaluate": {"classifiers": [{"arch": "efficientnet_b1", "image_size": 32 if args.tiny else 200, "lr": 1e-3,
                                      "epochs": args.classifier_epochs, "batch_size": 16, "weights": None}],
                     "n_boot": 10 if args.tiny else 100},
    }
    if args.tiny:
        overrides["data"]["resolution"] = 32
        overrides["fbp"] = {"window": 2}
        overrides["train"]["gradient_checkpointing"] = False
    cfg = load_config("paper", "fairgenmed", overrides)
    cfg["data"]["synthetic"] = False
    return cfg


def matmul_tflops(device: torch.device, n: int, dtype: torch.dtype, repeats: int = 10) -> float:
    """The TFLOP/s an n x n x n matmul reaches on ``device``: the practical peak MFU is taken against."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def main(argv=None) -> dict:
    args = parse_args(argv)
    import fairdiff  # noqa: F401  (caches inside the project, offline)

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        raise SystemExit("gpu_check: no CUDA device (torch.cuda.is_available() is False); --tiny runs on the CPU")
    device = torch.device("cuda" if cuda else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "gpu_check_work"
    stage = Stages(cuda)
    if args.peak_tflops is None:
        n, dtype = (8192, torch.bfloat16) if cuda else (256, torch.float32)
        args.peak_tflops = matmul_tflops(device, n, dtype)
        source = f"measured in this run: {n}^3 {str(dtype).removeprefix('torch.')} matmul"
    else:
        source = "--peak-tflops"
    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "tiny": args.tiny,
            "peak_tflops": round(args.peak_tflops, 3), "peak_source": source, "batch": args.batch, "steps": args.steps}
    print(f"[gpu_check] {info}", flush=True)
    try:
        info |= run(args, work, device, stage)
    finally:
        _write(args.out, info, stage.rows)
    _summary(info, stage.rows)
    return info | {"stages": stage.rows}


def run(args, work: Path, device: torch.device, stage: Stages) -> dict:
    import numpy as np
    import pandas as pd

    from fairdiff.data import load_dataset
    from fairdiff.data.synth.fairgenmed import generate_fairgenmed
    from fairdiff.evaluate.classifier import classifier_settings, semantic_evaluation, train_classifier
    from fairdiff.evaluate.features import generation_metrics, train_domain_encoder
    from fairdiff.imagesets import GeneratedImages, cached_real
    from fairdiff.models import build_tiny_pipeline, load_pipeline
    from fairdiff.prepare import training_cache
    from fairdiff.sample import sample_records, set_scheduler
    from fairdiff.schema import FAIRGENMED
    from fairdiff.train import train

    cuda, out = device.type == "cuda", {}
    data_root, base = work / "data", work / "base"
    with stage("data") as row:
        if not data_root.is_dir():
            generate_fairgenmed(data_root, args.subjects, seed=0, progress=False)
        row["subjects"] = args.subjects
    res, model_cfg = (32, TINY_MODEL) if args.tiny else (512, SD21_MODEL)

    with stage("base") as row:
        with torch.device(device):  # random init straight on the accelerator: seconds, not minutes
            pipe = build_tiny_pipeline(model_cfg, FAIRGENMED, res, seed=0)
        pipe.save_pretrained(base)
        unet_config = dict(pipe.unet.config)
        row["unet_params_m"] = round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 1)
        row["tokens"] = tokens = pipe.tokenizer.model_max_length
        del pipe
    cfg = paper_config(args, data_root, base)
    if cfg["data"]["resolution"] != res:
        raise RuntimeError(f"the profile trains at {cfg['data']['resolution']} px, the base was built for {res}")
    flops = unet_flops_per_step(unet_config, args.batch, tokens)
    out["unet_flop_per_step"], out["unet_tflop_per_step"] = flops, round(flops / 1e12, 3)

    with stage("cache") as row:
        t0 = time.perf_counter()
        cache = training_cache(cfg, str(base), work / "cache", progress=False)
        meta = json.loads((cache.latent_mean.path.parent / "meta.json").read_text())
        if cuda and meta["device"] != "cuda":
            raise RuntimeError(f"the cache was encoded on {meta['device']}, not on the GPU")
        row["images"] = len(cache.ids)
        row["images_per_s"] = round(len(cache.ids) / (time.perf_counter() - t0), 1)
        row["dtype"] = meta["dtype"]

    step_times: list[float] = []
    with stage("train") as row:
        run_dir = work / "run-fairbo"
        train(cfg, "fairbo", run_dir, str(base), work / "cache", progress=False,
              on_step=lambda _: step_times.append(time.perf_counter()))
        metrics, trace = pd.read_csv(run_dir / "metrics.csv"), pd.read_csv(run_dir / "bo_trace.csv")
        if len(metrics) != args.steps or not np.isfinite(metrics["loss_unweighted"]).all():
            raise RuntimeError(f"training logged {len(metrics)} steps, non-finite losses: "
                               f"{int((~np.isfinite(metrics['loss_unweighted'])).sum())}")
        if trace.empty:
            raise RuntimeError("fairbo ran no BO event")
        if cuda and torch.cuda.max_memory_allocated() < 2**30:
            raise RuntimeError("training allocated under 1 GiB on the GPU: the UNet did not train there")
        skip = min(10, len(step_times) // 2)  # warm-up steps
        steps_per_s = (len(step_times) - 1 - skip) / (step_times[-1] - step_times[skip])
        row.update(steps=len(metrics), bo_events=len(trace), steps_per_s=round(steps_per_s, 3),
                   images_per_s=round(steps_per_s * args.batch, 1),
                   mfu=round(flops * steps_per_s / (args.peak_tflops * 1e12), 4),
                   loss_first=round(float(metrics["loss_unweighted"].iloc[0]), 4),
                   loss_last=round(float(metrics["loss_unweighted"].iloc[-1]), 4))

    records = load_dataset("fairgenmed", data_root)
    test = records[records["split"] == "test"].reset_index(drop=True)
    with stage("sample") as row:
        s = cfg["sample"]
        pipe = load_pipeline(run_dir / "final", unet=s["unet"], device=device,
                             dtype=getattr(torch, s["dtype"]) if cuda else torch.float32)
        set_scheduler(pipe, s["scheduler"])
        chosen = test.head(args.samples)
        t0 = time.perf_counter()
        manifest = sample_records(pipe, chosen, FAIRGENMED, work / "samples", seed=cfg["seed"],
                                  steps=args.sample_steps, guidance_scale=s["guidance_scale"], resolution=res,
                                  batch_size=s["batch_size"], unet_name=s["unet"], scheduler=s["scheduler"],
                                  progress=False)
        row.update(images=len(manifest), scheduler=s["scheduler"], denoising_steps=args.sample_steps,
                   dtype=s["dtype"] if cuda else "float32",
                   images_per_s=round(len(manifest) / (time.perf_counter() - t0), 2))
        del pipe

    with stage("evaluate") as row:
        cache_dir, workers = work / "eval-cache", args.workers
        splits = {name: records[records["split"] == name].reset_index(drop=True) for name in ("train", "val", "test")}
        real = {name: cached_real(frame, FAIRGENMED, res, cache_dir, num_workers=workers)
                for name, frame in splits.items()}
        entry = cfg["evaluate"]["classifiers"][0]
        t0 = time.perf_counter()
        model, history = train_classifier(real["train"], splits["train"]["glaucoma"], real["val"],
                                          splits["val"]["glaucoma"], n_classes=2, seed=cfg["seed"],
                                          num_workers=workers, config_overrides=TINY_EFFICIENTNET if args.tiny else None,
                                          **classifier_settings(entry, res))
        train_s = time.perf_counter() - t0
        if next(model.parameters()).device.type != device.type:
            raise RuntimeError(f"the classifier trained on {next(model.parameters()).device}, not {device}")
        table = semantic_evaluation(model, real["test"], splits["test"]["glaucoma"], splits["test"], FAIRGENMED,
                                    "glaucoma", n_boot=cfg["evaluate"]["n_boot"], seed=cfg["seed"],
                                    num_workers=workers)
        auc = table[(table.attribute == "all") & (table.metric == "auc")].iloc[0]
        encoder = train_domain_encoder(real["train"], splits["train"], FAIRGENMED, epochs=1, seed=cfg["seed"],
                                       in_res=min(res, 128), device=device, num_workers=workers)
        generation = generation_metrics(real["test"], GeneratedImages(manifest), test, manifest, FAIRGENMED, encoder,
                                        n_boot=10, min_group_size=5, seed=cfg["seed"])
        fid = generation[(generation.attribute == "all") & (generation.metric == "fid")]["value"].iloc[0]
        row.update(classifier=f"{entry['arch']}@{classifier_settings(entry, res)['in_res']}px",
                   init=history["init"].iloc[0], train_images=len(splits["train"]),
                   classifier_images_per_s=round(len(splits["train"]) * len(history) / train_s, 1),
                   test_auc=round(float(auc.value), 3), auc_boot_mean=round(float(auc.boot_mean), 3),
                   auc_boot_std=round(float(auc.boot_std), 3), fid_domain=round(float(fid), 2))

    if cuda and not args.tiny:
        with stage("unet_step") as row:
            row.update(_unet_step(unet_config, args, flops, device))
    return out


def _unet_step(unet_config: dict, args, flops: float, device: torch.device) -> dict:
    """The UNet's training step alone at the training batch: bf16 autocast, AdamW, no checkpointing."""
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        unet = UNet2DConditionModel.from_config(unet_config)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    size, tokens = unet_config["sample_size"], 77
    latents = torch.randn(args.batch, unet_config["in_channels"], size, size, device=device)
    hidden = torch.randn(args.batch, tokens, unet_config["cross_attention_dim"], device=device)

    def step():
        t = torch.randint(0, 1000, (args.batch,), device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = unet(latents, t, hidden).sample
        torch.nn.functional.mse_loss(pred.float(), latents).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.unet_steps):
        step()
    torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / args.unet_steps
    return {"s_per_step": round(per_step, 4), "images_per_s": round(args.batch / per_step, 1),
            "mfu": round(flops / per_step / (args.peak_tflops * 1e12), 4),
            "mfu_vs_datasheet": round(flops / per_step / (DATASHEET_TFLOPS * 1e12), 4)}


def _write(out: Path, info: dict, rows: list[dict]) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_csv(out / "gpu_check.csv", index=False)
    (out / "gpu_check.json").write_text(json.dumps(info | {"stages": rows}, indent=1, default=str))


def _summary(info: dict, rows: list[dict]) -> None:
    """The figures the check exists for, in one block."""
    by = {row["stage"]: row for row in rows}
    lines = [f"[gpu_check] OK on {info['device']} (torch {info['torch']})",
             f"  UNet forward+backward: {info['unet_tflop_per_step']} TFLOP per step at batch {info['batch']}; "
             f"MFU against {info['peak_tflops']:.0f} TFLOP/s ({info['peak_source']}; datasheet "
             f"dense bf16 {DATASHEET_TFLOPS:.0f})",
             f"  cache: {by['cache']['images_per_s']} images/s ({by['cache']['dtype']})",
             f"  training (fairdiff.train, {by['train']['bo_events']} BO events): {by['train']['steps_per_s']} steps/s, "
             f"{by['train']['images_per_s']} images/s, MFU {by['train']['mfu']:.1%}",
             f"  sampling ({by['sample']['scheduler']}, {by['sample']['denoising_steps']} steps, "
             f"{by['sample']['dtype']}): {by['sample']['images_per_s']} images/s",
             f"  evaluation: {by['evaluate']['classifier']} {by['evaluate']['classifier_images_per_s']} training "
             f"images/s, test AUC {by['evaluate']['test_auc']} (bootstrap {by['evaluate']['auc_boot_mean']} "
             f"+- {by['evaluate']['auc_boot_std']})"]
    if "unet_step" in by:
        u = by["unet_step"]
        lines.append(f"  UNet step alone (bf16, no checkpointing): {u['s_per_step']} s, {u['images_per_s']} images/s, "
                     f"MFU {u['mfu']:.1%} ({u['mfu_vs_datasheet']:.1%} of the datasheet peak)")
    lines.append("  peak GPU memory (GiB): " + ", ".join(f"{r['stage']} {r['peak_gpu_gib']}" for r in rows))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
