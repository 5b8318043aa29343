"""A prepared GPU check: train a Stable-Diffusion-2.1-sized UNet (built from its config, random
weights) at 512 px (64x64 latents) with bf16 autocast for a short timed run; report images per
second and model FLOP utilisation. Runs in well under 5 minutes on one modern GPU.

    python benchmarks/gpu_check.py [--batch 16] [--steps 30] [--peak-tflops 989]

``--peak-tflops`` is the device's dense bf16 peak (H100/H200 SXM: 989). FLOPs per step are counted
with torch.utils.flop_counter on one forward+backward. Writes benchmarks/results/gpu_check.csv.
Refuses to run without CUDA (this measures a GPU, nothing else).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results" / "gpu_check.csv"
# Stable Diffusion 2.1 (768-v) UNet, as in its published config.
SD21_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                 cross_attention_dim=1024, use_linear_projection=True,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; this check only measures a GPU")
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode


    dev = torch.device("cuda")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD21_UNET).to(dev)
    params = sum(p.numel() for p in unet.parameters())
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, prediction_type="v_prediction")
    B = args.batch
    latents = torch.randn(B, 4, 64, 64, device=dev)
    hidden = torch.randn(B, 77, 1024, device=dev)

    def step():
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (B,), device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = unet(sched.add_noise(latents, noise, t), t, hidden).sample
        loss = torch.nn.functional.mse_loss(pred.float(), sched.get_velocity(latents, noise, t))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    sched.alphas_cumprod = sched.alphas_cumprod.to(dev)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    mfu = flops / dt / (args.peak_tflops * 1e12)
    row = (f"device,params,batch,resolution,s_per_step,images_per_s,tflop_per_step,mfu,peak_mem_gib\n"
           f"{torch.cuda.get_device_name()},{params},{B},512,{dt:.4f},{B / dt:.1f},{flops / 1e12:.2f},{mfu:.3f},"
           f"{torch.cuda.max_memory_allocated() / 2**30:.1f}\n")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(row)
    print(row)


if __name__ == "__main__":
    main()
