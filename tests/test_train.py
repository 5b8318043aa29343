"""The trainer: every method runs and saves a stock-diffusers pipeline; resume is exact; two
processes under accelerate really share one sigma and one gathered batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config, train_on_two_processes
from fairdiff.errors import RunConflict
from fairdiff.runs import METHODS
from fairdiff.train import BatchOrder, latest_checkpoint, train

pytestmark = pytest.mark.slow


def _unet_state(run: Path) -> dict:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(run / "final" / "unet").state_dict()


@pytest.mark.parametrize("method", METHODS)
def test_three_steps_of_each_method_give_a_pipeline_stock_diffusers_loads(method, prepared_base, tmp_path):
    from diffusers import StableDiffusionPipeline

    cfg, base = prepared_base
    run = train(cfg, method, tmp_path / method, str(base), base / "cache", progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["step"]) == [1, 2, 3]
    assert np.isfinite(metrics["loss_unweighted"]).all()
    if method in ("random", "fairbo"):
        assert any(c.startswith("sigma[") for c in metrics.columns)
    if method == "groupdro":  # q over the race groups, uniform at the first step
        assert metrics.loc[0, ["q[race=Asian]", "q[race=Black]", "q[race=White]"]].tolist() == pytest.approx([1 / 3] * 3)
    if method == "fairbo":
        trace = pd.read_csv(run / "bo_trace.csv")
        assert list(trace["step"]) == [2]  # window 2 -> one BO event in 3 steps
    pipe = StableDiffusionPipeline.from_pretrained(run / "final", safety_checker=None)
    image = pipe("SLO fundus image of a White Female Non-Hispanic patient", num_inference_steps=2, height=32,
                 width=32, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 32, 32, 3) and np.isfinite(image).all()
    assert (run / "final" / "unet_ema").is_dir()
    assert latest_checkpoint(run).name == "step-0000003"


def test_resume_continues_exactly(synthetic_fairgenmed, prepared_base, tmp_path):
    _, base = prepared_base
    cfg = tiny_config(synthetic_fairgenmed, steps=6, checkpoint_every=3, log_every=4)  # rows pending across a save
    straight = train(cfg, "fairbo", tmp_path / "straight", str(base), base / "cache", progress=False)
    split = tmp_path / "split"
    train(cfg, "fairbo", split, str(base), base / "cache", progress=False, max_steps=3)
    assert not (split / "final").exists() and latest_checkpoint(split).name == "step-0000003"
    with pytest.raises(RunConflict, match="unfinished run"):
        train(cfg, "fairbo", split, str(base), base / "cache", progress=False)  # no silent overwrite
    train(cfg, "fairbo", split, str(base), base / "cache", progress=False, resume="latest")
    a, b = _unet_state(straight), _unet_state(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = pd.read_csv(straight / "metrics.csv"), pd.read_csv(split / "metrics.csv")
    sigma_cols = [c for c in ma.columns if c.startswith("sigma[")]
    np.testing.assert_array_equal(ma[sigma_cols].to_numpy(), mb[sigma_cols].to_numpy())
    np.testing.assert_array_equal(ma["loss"].to_numpy(), mb["loss"].to_numpy())
    pd.testing.assert_frame_equal(pd.read_csv(straight / "bo_trace.csv"), pd.read_csv(split / "bo_trace.csv"))


def test_interrupted_checkpoint_is_never_picked(prepared_base, tmp_path):
    cfg, base = prepared_base
    run = train(cfg, "baseline", tmp_path / "run", str(base), base / "cache", progress=False)
    (run / "checkpoints" / ".tmp-step-0000009").mkdir()  # what a kill during a save leaves behind
    assert latest_checkpoint(run).name == "step-0000003"


def test_batch_order_is_a_function_of_step_and_covers_each_epoch():
    order = BatchOrder(n=10, global_batch=4, seed=1)
    first_epoch = torch.cat([order(k) for k in range(5)])[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert torch.equal(order(7), BatchOrder(n=10, global_batch=4, seed=1)(7))
    probs = torch.tensor([0.5, 0.5, 0.0])
    drawn = torch.cat([BatchOrder(3, 8, 0, probs)(k) for k in range(20)])
    assert set(drawn.tolist()) == {0, 1}


@pytest.mark.parametrize("with_sigma", [True, False])
def test_metrics_rows_built_in_bulk_equal_rows_built_step_by_step(with_sigma):
    """The trainer keeps each step's gathered tensors and builds metrics rows every
    train.log_every steps; the CSV must be what the step-by-step rows (the reference below, the
    trainer's code before) gave: same columns, same values, same bytes."""
    from fairdiff.fairness import group_gap, group_means
    from fairdiff.schema import get_schema
    from fairdiff.train import _group_columns, _metrics_rows

    schema = get_schema("fairgenmed")
    cols = _group_columns(schema)
    gen = torch.Generator().manual_seed(0)
    pending, expected = [], []
    for step in range(1, 13):  # batches of 8 leave some groups absent: NaN means
        losses = torch.rand(8, generator=gen)
        groups = torch.stack([torch.randint(-1, n, (8,), generator=gen) for n in schema.n_groups], dim=1)
        weighted = torch.rand(2, generator=gen)  # two micro-batches
        sigma = torch.rand(len(cols), dtype=torch.float64, generator=gen) if with_sigma else None
        pending.append((step, losses, groups, weighted, sigma))
        row = {"step": step, "loss": float(weighted.mean()), "loss_unweighted": float(losses.mean()),
               "gap": group_gap(losses, groups, schema.n_groups)}
        row["y"] = -row["gap"]
        means = torch.cat(group_means(losses, groups, schema.n_groups))
        row.update({f"loss[{c}]": float(v) for c, v in zip(cols, means)})
        if sigma is not None:
            row.update({f"sigma[{c}]": float(v) for c, v in zip(cols, sigma)})
        expected.append(row)
    rows = _metrics_rows(pending[:5], schema.n_groups, cols) + _metrics_rows(pending[5:], schema.n_groups, cols)
    assert pd.DataFrame(expected).isna().any().any()  # the absent-group case was exercised
    assert pd.DataFrame(rows).to_csv(index=False) == pd.DataFrame(expected).to_csv(index=False)
    assert _metrics_rows([], schema.n_groups, cols) == []


def test_adamw_kernels_fused_by_default_and_auto_equal_to_the_per_tensor_loop_on_the_cpu():
    """``auto`` (what runs trained before the fused default used) must repeat the per-tensor loop bit
    for bit on the CPU; ``fused`` follows the same update rule to float32 rounding."""
    from fairdiff.config import load_config
    from fairdiff.train import _adamw_kernel

    assert load_config("mini")["train"]["adamw_kernel"] == "fused"
    assert _adamw_kernel("auto", torch.device("cpu")) == {"foreach": True}
    assert _adamw_kernel("auto", torch.device("cuda", 0)) == {"fused": True}
    assert _adamw_kernel("fused", torch.device("cpu")) == {"fused": True}
    with pytest.raises(ValueError, match="train.adamw_kernel"):
        _adamw_kernel("foreach", torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(shape, generator=gen) for shape in [(16, 8), (16,), (3, 3, 4, 4), (1,)]]
    grads = [[torch.randn(p.shape, generator=gen) for p in start] for _ in range(4)]
    results = []
    for kernel in ({"foreach": False}, _adamw_kernel("auto", torch.device("cpu")),
                   _adamw_kernel("fused", torch.device("cpu"))):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8, **kernel)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach() for p in params])
    loop, auto, fused = results
    assert all(torch.equal(a, b) for a, b in zip(loop, auto))
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(loop, fused))
    assert any(not torch.equal(a, s) for a, s in zip(fused, start))  # it did move the weights


def test_refuses_to_train_into_a_foreign_folder(prepared_base, tmp_path):
    cfg, base = prepared_base
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(RunConflict, match="not a fairdiff training run"):
        train(cfg, "baseline", foreign, str(base), base / "cache", progress=False)
    assert (foreign / "thesis.tex").read_text() == "precious"
    (foreign / "config.yaml").write_text("a: 1\n")  # a config.yaml alone does not make a folder ours
    with pytest.raises(RunConflict, match="not a fairdiff training run"):
        train(cfg, "baseline", foreign, str(base), base / "cache", progress=False, resume="latest")
    assert (foreign / "config.yaml").read_text() == "a: 1\n"


def test_resume_into_a_run_of_another_method_is_refused_and_names_it(prepared_base, tmp_path):
    cfg, base = prepared_base
    run = train(cfg, "baseline", tmp_path / "run", str(base), base / "cache", progress=False, max_steps=1)
    config = (run / "config.yaml").read_bytes()
    with pytest.raises(RunConflict, match=r"method: 'baseline' -> 'fairbo'"):
        train(cfg, "fairbo", run, str(base), base / "cache", progress=False, resume="latest")
    assert (run / "config.yaml").read_bytes() == config


@pytest.mark.multiprocess
def test_two_processes_share_sigma_and_gather_both_batches(prepared_base, tmp_path):
    cfg, base = prepared_base
    logs = train_on_two_processes(cfg, base, tmp_path)
    assert len(logs[0]) == len(logs[1]) == cfg["train"]["steps"]
    for a, b in zip(logs[0], logs[1]):
        assert a["world"] == b["world"] == 2
        assert a["gathered_batch"] == 2 * a["local_batch"]
        assert a["sigma_used"] == b["sigma_used"] and a["sigma_next"] == b["sigma_next"]
    assert logs[0][0]["sigma_used"] != logs[0][-1]["sigma_next"]  # sigma moved, identically on both ranks
    assert (tmp_path / "run" / "final" / "unet").is_dir()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "step-0000003").glob("rank*.pt")) == [
        "rank0.pt", "rank1.pt"]


def test_paper_profile_loads_and_its_first_steps_run_on_a_stand_in(synthetic_fairgenmed, prepared_base, tmp_path):
    """The paper profile is the authors' setting; here a tiny pipeline stands in for SD 2.1 (no weights
    offline), the synthetic folder for FairGenMed and full precision for fp16 (no GPU)."""
    from fairdiff.config import load_config
    from fairdiff.prepare import base_source, prepare_base

    _, base = prepared_base
    cfg = load_config("paper")
    assert cfg["model"]["pretrained"] == "stabilityai/stable-diffusion-2-1"
    assert (cfg["train"]["lr"], cfg["train"]["steps"], cfg["data"]["resolution"]) == (1e-5, 100000, 512)
    assert (cfg["fbp"]["window"], cfg["fbp"]["exploitation"], cfg["fbp"]["beta"]) == (30, 0.95, 0.1)
    assert (cfg["sample"]["scheduler"], cfg["sample"]["steps"], cfg["sample"]["guidance_scale"]) == ("ddim", 75, 7.5)
    cfg["model"]["pretrained"] = str(base)
    cfg["data"].update(root=str(synthetic_fairgenmed), resolution=32)
    cfg["train"].update(mixed_precision="no", batch_size=4, checkpoint_every=2)
    assert prepare_base(cfg, tmp_path / "base", progress=False)["vae_trained"] is False  # a pretrained VAE is used
    run = train(cfg, "fairbo", tmp_path / "run", base_source(cfg, tmp_path / "base"), tmp_path / "cache",
                progress=False, max_steps=2)
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["step"]) == [1, 2] and np.isfinite(metrics["loss"]).all()
    assert latest_checkpoint(run).name == "step-0000002"
