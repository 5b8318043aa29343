"""Tests for fairdiff.fairness: group gaps, FBP weights, the BO loop, its state, and the baselines.

Known answers are computed by hand in the comments; statistical checks use a fixed seed and a
tolerance of 5 standard errors, so they fail for a wrong formula, not by bad luck."""
from __future__ import annotations

import io
import math
import warnings
from functools import lru_cache
from pathlib import Path

import pytest
import torch

import fairdiff  # noqa: F401  (sets cache locations before torch/botorch read them)
from fairdiff import fairness
from fairdiff.fairness import (FairBayesianPerturbation, balanced_sampling_weights, group_gap, group_means,
                               reweight_weights, step_group_stats)

FAIRGENMED_GROUPS = [3, 2, 2]  # race, gender, ethnicity: K = 7


def t(rows):
    return torch.tensor(rows, dtype=torch.long)


# ------------------------------------------------------------------------------- group gap
def test_group_gap_all_groups_present():
    # attribute 0 (3 groups): means 1, (2+4)/2 = 3, 6 -> gap 5; attribute 1 (2 groups): means
    # (1+2)/2 = 1.5, (4+6)/2 = 5 -> gap 3.5; total 8.5
    losses = torch.tensor([1.0, 2.0, 4.0, 6.0])
    groups = t([[0, 0], [1, 0], [1, 1], [2, 1]])
    assert group_gap(losses, groups, [3, 2]) == pytest.approx(8.5)
    means = group_means(losses, groups, [3, 2])
    assert torch.allclose(means[0], torch.tensor([1.0, 3.0, 6.0], dtype=torch.float64))
    assert torch.allclose(means[1], torch.tensor([1.5, 5.0], dtype=torch.float64))


def test_group_gap_uses_present_groups_only():
    # group 1 is absent: gap over groups 0 (mean (1 + 3) / 2 = 2) and 2 (mean 5) = 3
    # (the paper's code set the whole attribute's gap to 0)
    losses = torch.tensor([1.0, 3.0, 5.0])
    groups = t([[0], [0], [2]])
    assert group_gap(losses, groups, [3]) == pytest.approx(3.0)
    means = group_means(losses, groups, [3])[0]
    assert math.isnan(means[1]) and means[0] == 2.0 and means[2] == 5.0


def test_group_gap_single_present_group_adds_nothing():
    # attribute 1 has only group 0 present -> 0; attribute 0 gap = 7 - 1 = 6
    losses = torch.tensor([1.0, 7.0])
    groups = t([[0, 0], [1, 0]])
    assert group_gap(losses, groups, [2, 2]) == pytest.approx(6.0)


def test_group_gap_ignores_unknown_entries():
    # the -1 sample (loss 100) must not enter attribute 1; it does enter attribute 0 (group 1)
    losses = torch.tensor([1.0, 3.0, 100.0])
    groups = t([[0, 0], [1, 1], [1, -1]])
    # attribute 0: 1 vs (3 + 100) / 2 = 51.5 -> 50.5; attribute 1: 1 vs 3 -> 2
    assert group_gap(losses, groups, [2, 2]) == pytest.approx(52.5)


def test_group_gap_empty_and_all_unknown_batches_are_zero():
    assert group_gap(torch.zeros(0), torch.zeros(0, 3, dtype=torch.long), FAIRGENMED_GROUPS) == 0.0
    assert group_gap(torch.ones(4), torch.full((4, 3), -1), FAIRGENMED_GROUPS) == 0.0


def test_group_gap_never_nan_on_random_sparse_batches():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        b = int(torch.randint(0, 6, (1,), generator=gen))
        groups = torch.stack([torch.randint(-1, n, (b,), generator=gen) for n in FAIRGENMED_GROUPS], dim=1)
        gap = group_gap(torch.rand(b, generator=gen), groups, FAIRGENMED_GROUPS)
        assert math.isfinite(gap) and gap >= 0


def test_group_gap_matches_a_plain_python_loop():
    gen = torch.Generator().manual_seed(1)
    groups = torch.stack([torch.randint(-1, n, (40,), generator=gen) for n in FAIRGENMED_GROUPS], dim=1)
    losses = torch.rand(40, generator=gen, dtype=torch.float64)
    expected = 0.0
    for a, n in enumerate(FAIRGENMED_GROUPS):
        means = [losses[groups[:, a] == g].mean().item() for g in range(n) if (groups[:, a] == g).any()]
        expected += max(means) - min(means) if len(means) >= 2 else 0.0
    assert group_gap(losses, groups, FAIRGENMED_GROUPS) == pytest.approx(expected, rel=1e-12)


def _stats_one_step_as_before(losses, groups, n_groups):
    """The per-step computation the trainer ran for every metrics row before rows were built in
    bulk, kept here as the reference: bincount in float64, then a Python loop over attributes."""
    offsets = torch.tensor([sum(n_groups[:a]) for a in range(len(n_groups))])
    known = groups >= 0
    idx = (groups + offsets).clamp(min=0)
    values = losses.to(torch.float64)[:, None].expand(idx.shape)
    k = sum(n_groups)
    counts = torch.bincount(idx[known], minlength=k)
    means = torch.bincount(idx[known], weights=values[known], minlength=k) / counts
    gap = 0.0
    for m, c in zip(means.split(n_groups), counts.split(n_groups)):
        present = m[c > 0]
        if present.numel() >= 2:
            gap += float(present.max() - present.min())
    return means, gap


def test_step_group_stats_equal_each_step_computed_alone_bit_for_bit():
    # 30 steps of 6 float32 losses (as the trainer gathers them): groups are often absent or
    # unknown, and two steps hold a NaN or an infinite loss
    gen = torch.Generator().manual_seed(4)
    groups = torch.stack([torch.randint(-1, n, (30, 6), generator=gen) for n in FAIRGENMED_GROUPS], dim=2)
    losses = torch.rand(30, 6, generator=gen)
    losses[3, 2], losses[7, 0] = math.nan, math.inf
    means, gaps = step_group_stats(losses, groups, FAIRGENMED_GROUPS)
    assert means.shape == (30, 7) and gaps.shape == (30,)
    for s in range(30):
        expected_means, expected_gap = _stats_one_step_as_before(losses[s], groups[s], FAIRGENMED_GROUPS)
        torch.testing.assert_close(means[s], expected_means, rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(gaps[s], torch.tensor(expected_gap, dtype=torch.float64), rtol=0, atol=0,
                                   equal_nan=True)
        same_gap = group_gap(losses[s], groups[s], FAIRGENMED_GROUPS)
        assert same_gap == expected_gap or (math.isnan(same_gap) and math.isnan(expected_gap))
    assert math.isnan(gaps[3]) and math.isinf(gaps[7])  # the non-finite cases were exercised


def test_step_group_stats_reject_unbatched_input():
    with pytest.raises(ValueError, match="S steps"):
        step_group_stats(torch.zeros(4), t([[0, 0]] * 4), [3, 2])
    with pytest.raises(ValueError, match="shape"):
        step_group_stats(torch.zeros(1, 4), t([[0, 0]] * 4), [3, 2])


@pytest.mark.parametrize("groups, message", [
    (t([[0, 2]]), "groups\\[0, 1\\] = 2"),      # gender has groups 0..1
    (t([[-2, 0]]), "groups\\[0, 0\\] = -2"),
    (t([[0, 0, 0]]), "shape"),
])
def test_bad_groups_are_rejected_with_a_clear_message(groups, message):
    with pytest.raises(ValueError, match=message):
        group_gap(torch.zeros(groups.shape[0]), groups, [3, 2])


# ------------------------------------------------------------------------------------ weights
def random_groups(n: int, n_groups, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, k, (n,), generator=gen) for k in n_groups], dim=1)


def test_weights_have_mean_one_and_variance_sum_of_squared_sigmas():
    fbp = FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=3)
    fbp.sigma = torch.tensor([0.2, 0.5, 0.9, 0.3, 0.7, 0.4, 0.8])
    groups = random_groups(60_000, FAIRGENMED_GROUPS, seed=4)
    w = fbp.weights(groups).double()
    sigma = fbp.sigma
    for r in range(3):
        for g in range(2):
            for e in range(2):
                sel = (groups == torch.tensor([r, g, e])).all(dim=1)
                n, ws = int(sel.sum()), w[sel]
                var = float(sigma[r] ** 2 + sigma[3 + g] ** 2 + sigma[5 + e] ** 2)
                assert abs(ws.mean().item() - 1) < 5 * math.sqrt(var / n)
                assert abs(ws.var().item() - var) < 5 * var * math.sqrt(2 / (n - 1))


def test_weights_are_float32_on_the_groups_device_and_reproducible():
    groups = random_groups(32, FAIRGENMED_GROUPS, seed=0)
    a, b = FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=5), FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=5)
    torch.manual_seed(0)
    wa = a.weights(groups)
    torch.manual_seed(1)  # the global RNG must not matter
    wb = b.weights(groups)
    assert wa.dtype == torch.float32 and wa.device == groups.device
    assert torch.equal(wa, wb)
    assert not torch.equal(a.weights(groups), wa)  # fresh noise every call


def test_ranks_draw_different_noise():
    groups = random_groups(32, FAIRGENMED_GROUPS, seed=0)
    w0 = FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=5, rank=0).weights(groups)
    w1 = FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=5, rank=1).weights(groups)
    assert not torch.equal(w0, w1)


def test_unknown_group_adds_no_term():
    fbp = FairBayesianPerturbation([3, 2], seed=0)
    fbp.sigma = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])  # only attribute 0 perturbs
    w = fbp.weights(t([[-1, 0], [-1, 1], [-1, -1]] * 10))
    assert torch.equal(w, torch.ones(30))
    # statistically: the known attribute 1 alone contributes, variance 0.6^2 = 0.36
    fbp.sigma = torch.tensor([5.0, 5.0, 5.0, 0.6, 0.6])
    w = fbp.weights(t([[-1, 1]] * 50_000)).double()
    assert abs(w.var().item() - 0.36) < 5 * 0.36 * math.sqrt(2 / 50_000)


def test_negative_weight_share_at_sigma_one_is_28_percent():
    # w = 1 + sqrt(3) Z < 0  <=>  Z < -1/sqrt(3): probability Phi(-0.577) = 0.2819
    p = 0.5 * math.erfc(1 / math.sqrt(3) / math.sqrt(2))
    w = FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=0).weights(random_groups(100_000, FAIRGENMED_GROUPS, 1))
    share = (w < 0).double().mean().item()
    assert p == pytest.approx(0.2819, abs=1e-4)
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / 100_000)


def test_clamped_weights_are_non_negative_with_mean_one():
    fbp = FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=0, clamp=True)
    for i in range(20):
        w = fbp.weights(random_groups(32, FAIRGENMED_GROUPS, seed=i))
        assert (w >= 0).all() and w.mean().item() == pytest.approx(1.0, abs=1e-6)
        assert (w == 0).any()  # unclamped, a batch of 32 has no negative weight with prob. 0.72^32
    # one sample: a positive weight rescales to 1, a clamped (all-zero) batch falls back to 1
    single = [fbp.weights(t([[0, 0, 0]])).item() for _ in range(40)]
    assert single == pytest.approx([1.0] * 40)
    assert fbp.weights(torch.zeros(0, 3, dtype=torch.long)).shape == (0,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_tensors_give_the_same_results_as_cpu():
    groups = random_groups(32, FAIRGENMED_GROUPS, seed=0)
    losses = torch.rand(32, generator=torch.Generator().manual_seed(0))
    cpu, gpu = FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=2), FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=2)
    w_gpu = gpu.weights(groups.cuda())
    assert w_gpu.is_cuda and torch.equal(w_gpu.cpu(), cpu.weights(groups))
    assert gpu.update(losses.cuda(), groups.cuda()) == cpu.update(losses, groups)
    assert group_gap(losses.cuda(), groups.cuda(), FAIRGENMED_GROUPS) == group_gap(losses, groups, FAIRGENMED_GROUPS)


# ------------------------------------------------------------------------------------- BO loop
TARGET = torch.tensor([0.15, 0.85, 0.15, 0.85], dtype=torch.float64)
PLANTED_GROUPS = t([[0, 0], [1, 0], [0, 1], [1, 1]])


def planted_losses(sigma: torch.Tensor) -> torch.Tensor:
    """Losses whose group gap is ||sigma - TARGET||^2 (so y is maximal at sigma = TARGET):
    attribute 0 has group means 0 and d, attribute 1 has both group means d / 2 (gap 0)."""
    d = float(((sigma - TARGET) ** 2).sum())
    return torch.tensor([0.0, d, 0.0, d])


def run_planted(fbp: FairBayesianPerturbation, steps: int) -> list[dict]:
    """Training-like steps: draw the weights, then update; each record also holds the weights."""
    records = []
    for _ in range(steps):
        weights = fbp.weights(PLANTED_GROUPS).tolist()
        records.append({**fbp.update(planted_losses(fbp.sigma), PLANTED_GROUPS), "weights": weights})
    return records


PLANTED = dict(n_groups=[2, 2], window=5, exploitation=0.85, seed=0)  # more exploration: 4 windows suffice


@lru_cache(maxsize=None)
def reference_run() -> dict:
    """Four windows of five steps on the planted objective, uninterrupted (shared by several tests:
    each BO event costs about a second)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        global_rng = torch.get_rng_state()
        fbp = FairBayesianPerturbation(**PLANTED)
        records = run_planted(fbp, 20)
        untouched = torch.equal(torch.get_rng_state(), global_rng)
    return {"records": records, "history": fbp.history, "global_rng_untouched": untouched}


@lru_cache(maxsize=None)
def interrupted_run() -> dict:
    """The same run stopped after 12 steps (2.4 windows: 2 points in the buffer), saved with
    torch.save, loaded into a new object with weights_only=True and continued to step 20."""
    first = FairBayesianPerturbation(**PLANTED)
    before = run_planted(first, 12)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = FairBayesianPerturbation(**PLANTED)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    loaded = {"step": resumed.step, "sigma_equal": torch.equal(resumed.sigma, first.sigma)}
    after = run_planted(resumed, 8)
    return {"before": before, "after": after, "loaded": loaded, "history": resumed.history}


def test_update_record_matches_the_step():
    records = reference_run()["records"]
    first = records[0]
    assert first["step"] == 1 and first["sigma_used"] == [1.0] * 4 and first["bo"] is None
    assert first["y"] == pytest.approx(-float(((torch.ones(4) - TARGET) ** 2).sum()))
    # first step's mixing: 0.85 * 1 + 0.15 * u with u in [0, 1)
    assert all(0.85 <= s <= 1.0 for s in first["sigma_next"])
    assert [r["step"] for r in records if r["bo"]] == [5, 10, 15, 20]
    for before, after in zip(records, records[1:]):
        assert after["sigma_used"] == before["sigma_next"]
    # each BO step: sigma_next = 0.85 * candidate + 0.15 * u, so it is within 0.15 of the candidate
    for r in records:
        if r["bo"]:
            gap = torch.tensor(r["sigma_next"]) - torch.tensor(r["bo"]["candidate"])
            assert (gap.abs() <= 0.15 + 1e-12).all()


def test_bo_candidates_lie_in_the_unit_cube_and_approach_the_planted_optimum():
    history = reference_run()["history"]
    assert len(history) == 4 and all(e["skipped"] is None for e in history)
    distances = []
    for event in history:
        c = torch.tensor(event["candidate"], dtype=torch.float64)
        assert c.shape == (4,) and (c >= 0).all() and (c <= 1).all()
        assert event["n_points"] == 5 and math.isfinite(event["acq_value"])
        distances.append(float((c - TARGET).norm()))
    start = float((torch.ones(4) - TARGET).norm())                # 1.22
    mixing_only = float((torch.full((4,), 0.5) - TARGET).norm())  # 0.70: where pure mixing drifts
    assert distances[-1] < 0.45 < mixing_only < start
    assert distances[-1] < distances[0]


@pytest.mark.parametrize("gp_likelihood", ["closed_form", "gpytorch"])
def test_recorded_bo_events_are_replayed_exactly(gp_likelihood):
    # the first BO events of a real fairbo run (benchmarks/results/fbp_trace_mini.csv.gz) through the
    # method's BO step: the candidates it recorded come back, with the fit's likelihood in closed form
    # or through gpytorch (the run was recorded before either the UCB or the fit was computed in closed form)
    import pandas as pd

    trace = pd.read_csv(Path(__file__).parents[1] / "benchmarks" / "results" / "fbp_trace_mini.csv.gz")
    sigma = [c for c in trace.columns if c.startswith("sigma[")]
    fbp = FairBayesianPerturbation(FAIRGENMED_GROUPS, window=30, seed=int(trace["seed"].iloc[0]),
                                   gp_likelihood=gp_likelihood)
    for end in (30, 60, 90, 120):
        part = trace.iloc[end - 30:end]
        fbp._buffer_x = list(torch.tensor(part[sigma].to_numpy(), dtype=torch.float64))
        fbp._buffer_y = [float(v) for v in part["y"]]
        fbp._step = int(part["step"].iloc[-1])
        event = fbp._bo_step()
        recorded = torch.tensor(part[[c.replace("sigma", "candidate") for c in sigma]].iloc[-1].to_numpy(dtype=float))
        assert torch.allclose(torch.tensor(event["candidate"], dtype=torch.float64), recorded, rtol=0, atol=1e-6), end


def test_same_seed_same_sequence_and_different_seed_differs():
    # a second object with the same seed repeats the first 12 steps exactly (two BO events)
    assert interrupted_run()["before"] == reference_run()["records"][:12]
    other = FairBayesianPerturbation(**{**PLANTED, "seed": 1})
    assert run_planted(other, 1)[0]["sigma_next"] != reference_run()["records"][0]["sigma_next"]


def test_state_round_trip_continues_exactly():
    reference, interrupted = reference_run(), interrupted_run()
    assert interrupted["loaded"] == {"step": 12, "sigma_equal": True}
    assert interrupted["after"] == reference["records"][12:]  # every sigma, y, weight and BO event
    assert interrupted["history"] == reference["history"]


def test_load_state_dict_rejects_other_group_layouts():
    state = FairBayesianPerturbation([2, 2]).state_dict()
    with pytest.raises(ValueError, match="n_groups"):
        FairBayesianPerturbation([3, 2, 2]).load_state_dict(state)


@pytest.mark.parametrize("setting, value", [
    ("seed", 1), ("window", 6), ("exploitation", 0.9), ("beta", 0.2), ("clamp", True), ("bo", False),
    ("rank", 1), ("num_restarts", 3), ("raw_samples", 10), ("warm_start", True), ("gp_likelihood", "gpytorch")])
def test_state_saved_with_other_settings_is_refused_and_nothing_is_loaded(setting, value):
    saved = FairBayesianPerturbation(**PLANTED)
    run_planted(saved, 3)  # no BO event yet: cheap
    other = FairBayesianPerturbation(**{**PLANTED, setting: value})
    with pytest.raises(ValueError, match=f"{setting}: saved {PLANTED.get(setting, saved.settings()[setting])!r}, "
                                         f"this object {value!r}"):
        other.load_state_dict(saved.state_dict())
    assert other.step == 0 and torch.equal(other.sigma, torch.ones(4, dtype=torch.float64))


def test_state_saved_before_gp_likelihood_existed_continues_with_the_gpytorch_fit():
    # a checkpoint of a run made before the setting existed ran the fit through gpytorch: it loads into
    # an object built with gp_likelihood="gpytorch" (what `fbp.gp_likelihood: gpytorch` builds) and no other
    state = FairBayesianPerturbation(**PLANTED, gp_likelihood="gpytorch").state_dict()
    del state["settings"]["gp_likelihood"]
    FairBayesianPerturbation(**PLANTED, gp_likelihood="gpytorch").load_state_dict(state)
    with pytest.raises(ValueError, match="gp_likelihood: saved 'gpytorch', this object 'closed_form'"):
        FairBayesianPerturbation(**PLANTED).load_state_dict(state)


def test_state_without_settings_is_refused():
    state = FairBayesianPerturbation(**PLANTED).state_dict()
    del state["settings"]
    with pytest.raises(ValueError, match="older fairdiff"):
        FairBayesianPerturbation(**PLANTED).load_state_dict(state)


def test_bad_bo_settings_are_rejected():
    with pytest.raises(ValueError, match="num_restarts=0"):
        FairBayesianPerturbation([2, 2], num_restarts=0)
    with pytest.raises(ValueError, match="raw_samples=0"):
        FairBayesianPerturbation([2, 2], raw_samples=0)
    with pytest.raises(ValueError, match="gp_likelihood: expected one of"):
        FairBayesianPerturbation([2, 2], gp_likelihood="exact")


WARM = {**PLANTED, "warm_start": True}


@lru_cache(maxsize=None)
def warm_runs() -> dict:
    """With warm starts: four windows straight, and the same stopped after 12 steps (two fits
    done, so the next fit starts from the saved hyperparameters), saved, loaded into a new object
    and continued. Every fit records the hyperparameters it started from."""
    starts = []
    real = fairness.fit_and_maximise

    def spy(x, y, beta, num_restarts, raw_samples, init, gp_likelihood):
        out = real(x, y, beta, num_restarts, raw_samples, init, gp_likelihood)
        starts.append((init, out[2]))
        return out
    fairness.fit_and_maximise = spy
    try:
        straight = FairBayesianPerturbation(**WARM)
        records = run_planted(straight, 20)
        straight_starts = list(starts)
        first = FairBayesianPerturbation(**WARM)
        before = run_planted(first, 12)
        buffer = io.BytesIO()
        torch.save(first.state_dict(), buffer)
        buffer.seek(0)
        resumed = FairBayesianPerturbation(**WARM)
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
        after = run_planted(resumed, 8)
    finally:
        fairness.fit_and_maximise = real
    return {"records": records, "history": straight.history, "starts": straight_starts,
            "resumed": before + after, "resumed_history": resumed.history}


def test_warm_start_fits_start_from_the_previous_fit():
    starts = warm_runs()["starts"]
    assert len(starts) == 4 and starts[0][0] is None  # the first fit of a run starts cold
    for (_, fitted), (init, _) in zip(starts, starts[1:]):
        assert init.keys() == fitted.keys() and all(torch.equal(init[k], fitted[k]) for k in init)


def test_warm_start_resume_continues_exactly():
    runs = warm_runs()
    assert runs["resumed"] == runs["records"] and runs["resumed_history"] == runs["history"]
    candidates = [e["candidate"] for e in runs["history"]]
    assert all(c is not None for c in candidates)


def test_cold_start_is_the_default_and_passes_no_initial_values(monkeypatch):
    inits = []
    real = fairness.fit_and_maximise
    monkeypatch.setattr(fairness, "fit_and_maximise", lambda *a: inits.append(a[5]) or real(*a))
    run_planted(FairBayesianPerturbation(**PLANTED), 10)
    assert inits == [None, None]


def test_bo_leaves_the_global_rng_alone():
    assert reference_run()["global_rng_untouched"]


def test_constant_objective_skips_the_move_without_crashing():
    fbp = FairBayesianPerturbation([2, 2], window=4, seed=0)
    for _ in range(4):
        record = fbp.update(torch.ones(4), PLANTED_GROUPS)  # every gap 0: y constant
    event = record["bo"]
    assert event["candidate"] is None and "constant" in event["skipped"]
    # sigma only saw the exploration mixes, never a BO jump: same as a run whose window never ends
    no_bo = FairBayesianPerturbation([2, 2], window=1000, seed=0)
    for _ in range(4):
        last = no_bo.update(torch.ones(4), PLANTED_GROUPS)
    assert record["sigma_next"] == last["sigma_next"]
    empty = fbp.update(torch.zeros(0), torch.zeros(0, 2, dtype=torch.long))
    assert empty["y"] == 0.0


def test_failed_gp_fit_is_recorded_and_training_goes_on(monkeypatch):
    from fairdiff import gaussian_process

    def broken_fit(*args, **kwargs):
        raise fairness.ModelFittingError("planted failure")
    monkeypatch.setattr(gaussian_process, "fit_gpytorch_mll", broken_fit)
    fbp = FairBayesianPerturbation([2, 2], window=3, seed=0)
    records = run_planted(fbp, 3)
    assert "planted failure" in records[-1]["bo"]["skipped"]
    assert records[-1]["bo"]["candidate"] is None


def test_non_finite_losses_are_dropped_from_the_window():
    fbp = FairBayesianPerturbation([2, 2], window=3, seed=0)
    fbp.update(torch.tensor([0.0, math.nan, 0.0, 1.0]), PLANTED_GROUPS)
    fbp.update(torch.tensor([0.0, 0.5, 0.0, 0.5]), PLANTED_GROUPS)
    event = fbp.update(torch.tensor([0.0, math.inf, 0.0, 1.0]), PLANTED_GROUPS)["bo"]
    assert event["n_points"] == 1 and "fewer than 2" in event["skipped"]


def test_random_ablation_keeps_sigma_at_one():
    fbp = FairBayesianPerturbation([2, 2], window=2, seed=0, bo=False)
    records = run_planted(fbp, 7)
    assert all(r["sigma_next"] == [1.0] * 4 and r["bo"] is None for r in records)
    assert fbp.history == [] and torch.equal(fbp.sigma, torch.ones(4, dtype=torch.float64))
    assert records[0]["y"] < 0  # still logged


def test_sigma_setter_is_the_validating_broadcast_hook():
    fbp = FairBayesianPerturbation(FAIRGENMED_GROUPS)
    fbp.sigma = torch.full((7,), 0.5, dtype=torch.float32)
    assert fbp.sigma.dtype == torch.float64 and torch.equal(fbp.sigma, torch.full((7,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="7 finite values"):
        fbp.sigma = torch.ones(6)
    with pytest.raises(ValueError, match="7 finite values"):
        fbp.sigma = torch.tensor([math.nan] * 7)


# ------------------------------------------------------------------------------------ baselines
def test_reweight_single_attribute_known_answer():
    # N = 4, groups 0,0,0,1: 4 / (2 * 3) = 2/3 and 4 / (2 * 1) = 2; mean already 1
    w = reweight_weights(t([[0], [0], [0], [1]]), [2])
    assert torch.allclose(w, torch.tensor([2 / 3, 2 / 3, 2 / 3, 2.0]))


def test_reweight_two_attributes_with_unknown_known_answer():
    groups = t([[0, 0], [0, 1], [1, 1], [0, -1]])
    # attribute 0: N=4, counts (3, 1) -> 4/6 = 2/3, 4/2 = 2
    # attribute 1: known N=3, counts (1, 2) -> 3/2 = 1.5, 3/4 = 0.75
    # raw: (2/3 + 1.5)/2 = 13/12, (2/3 + 0.75)/2 = 17/24, (2 + 0.75)/2 = 11/8, 2/3 (attr 1 unknown)
    raw = torch.tensor([13 / 12, 17 / 24, 11 / 8, 2 / 3], dtype=torch.float64)
    w = reweight_weights(groups, [2, 2])
    assert torch.allclose(w.double(), raw / raw.mean(), atol=1e-6)
    assert w.mean().item() == pytest.approx(1.0)


def test_reweight_all_unknown_sample_gets_neutral_weight():
    w = reweight_weights(t([[0], [0], [-1]]), [2])
    # group 0 alone present: term 2 / (1 * 2) = 1; unknown -> 1; all equal
    assert torch.allclose(w, torch.ones(3))


def test_reweight_half_balances_independent_attributes():
    # independent attributes: cell counts race_r * sex_s / 10 for marginals race (10, 30, 60) %
    # and sex (20, 80) %, N = 1000
    race, sex = torch.tensor([10, 30, 60]), torch.tensor([20, 80])
    cells = [(r, s, int(race[r] * sex[s] / 10)) for r in range(3) for s in range(2)]
    groups = t([[r, s] for r, s, n in cells for _ in range(n)])
    w = reweight_weights(groups, [3, 2]).double()
    n = groups.shape[0]
    for a, (n_a, counts) in enumerate([(3, race), (2, sex)]):
        for g in range(n_a):
            share = w[groups[:, a] == g].sum().item() / n
            expected = (1 / n_a + (counts[g] / counts.sum()).item()) / 2  # (1/n_a + (A-1) N_g/N) / A
            assert share == pytest.approx(expected, rel=1e-6)


def test_balanced_sampling_single_attribute_known_answer():
    p = balanced_sampling_weights(t([[0], [0], [0], [1]]), [2])
    assert torch.allclose(p, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2], dtype=torch.float64))


def test_balanced_sampling_equals_inverse_marginal_product_when_independent():
    race, sex = [1, 3, 6], [2, 8]
    groups = t([[r, s] for r in range(3) for s in range(2) for _ in range(race[r] * sex[s])])
    p = balanced_sampling_weights(groups, [3, 2])
    inv = torch.tensor([1 / (race[r] * sex[s]) for r, s in groups.tolist()], dtype=torch.float64)
    assert torch.allclose(p, inv / inv.sum(), rtol=1e-9)


def test_balanced_sampling_balances_correlated_imbalanced_attributes():
    # FairGenMed-like shares with correlation (Hispanic more often White, Black more often female)
    gen = torch.Generator().manual_seed(0)
    n = 4000
    race = torch.multinomial(torch.tensor([0.08, 0.12, 0.80]), n, replacement=True, generator=gen)
    female = torch.rand(n, generator=gen) < torch.where(race == 1, 0.75, 0.55)
    hispanic = torch.rand(n, generator=gen) < torch.where(race == 2, 0.05, 0.01)
    unknown = torch.rand(n, generator=gen) < 0.03
    groups = torch.stack([race, (~female).long(), torch.where(unknown, -1, hispanic.long())], dim=1)
    p = balanced_sampling_weights(groups, FAIRGENMED_GROUPS)
    assert p.sum().item() == pytest.approx(1.0) and (p > 0).all()
    for a, k in enumerate(FAIRGENMED_GROUPS):
        known = groups[:, a] >= 0
        shares = torch.stack([p[groups[:, a] == g].sum() for g in range(k)]) / p[known].sum()
        assert torch.allclose(shares, torch.full((k,), 1 / k, dtype=torch.float64), atol=1e-8)
    # and the real sampler draws about that often: Asian share 1/3 (5 standard errors)
    draws = torch.tensor(list(torch.utils.data.WeightedRandomSampler(
        p, 30_000, replacement=True, generator=torch.Generator().manual_seed(1))))
    asian = (groups[draws, 0] == 0).double().mean().item()
    assert abs(asian - 1 / 3) < 5 * math.sqrt(2 / 9 / 30_000)


def test_balanced_sampling_warns_when_no_balance_exists():
    # attribute 0 group 0 always comes with attribute 1 group 0, so both can't be 1/2 and 1/3
    groups = t([[0, 0], [1, 1], [1, 2]])
    with pytest.warns(UserWarning, match="cannot all be balanced"):
        balanced_sampling_weights(groups, [2, 3], max_sweeps=50)


def test_baselines_on_an_empty_set():
    empty = torch.zeros(0, 2, dtype=torch.long)
    assert reweight_weights(empty, [2, 2]).shape == (0,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert balanced_sampling_weights(empty, [2, 2]).shape == (0,)
