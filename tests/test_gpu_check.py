"""The prepared GPU run (benchmarks/gpu_check.py) runs its whole path at tiny size on the CPU, with
the packages the GPU machine lacks (papermill, jupytext, fairlearn) made unimportable, and counts
the UNet's FLOPs as expected."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_tiny_run_goes_through_every_stage_without_the_missing_packages(tmp_path):
    blocked = "import sys; sys.modules.update(papermill=None, jupytext=None, fairlearn=None); "
    run = f"import runpy; sys.argv = ['gpu_check.py', '--tiny', '--out', {str(tmp_path)!r}]; " \
          f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", blocked + run], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stages = pd.read_csv(tmp_path / "gpu_check.csv").set_index("stage")
    assert list(stages.index) == ["data", "base", "cache", "train", "sample", "evaluate"]  # unet_step: GPU only
    assert stages.loc["train", "steps"] == 4 and stages.loc["train", "bo_events"] >= 1
    assert stages.loc["sample", "images"] == 4 and stages.loc["cache", "images"] > 0
    assert stages.loc["evaluate", "classifier"] == "efficientnet_b1@32px"
    info = json.loads((tmp_path / "gpu_check.json").read_text())
    assert info["unet_flop_per_step"] > 0 and "[gpu_check] OK" in proc.stdout
    assert info["peak_source"].startswith("measured in this run") and info["peak_tflops"] > 0


def test_without_cuda_the_full_run_refuses_with_a_reason(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device"):
        _script().main([])


@pytest.mark.slow
def test_sd21_unet_flops_per_image():
    """SD 2.1's UNet at 64x64 latents and 77 tokens: about 0.8 TFLOP forward per image, and a
    backward twice the forward (counted on the meta device, no memory)."""
    gpu_check = _script()
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        config = dict(UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).config)
    per_image = gpu_check.unet_flops_per_step(config, batch=2, tokens=77) / 2
    assert 2.2e12 < per_image < 2.6e12  # 3 x ~0.8 TFLOP
