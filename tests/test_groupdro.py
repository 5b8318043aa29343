"""Group DRO (Sagawa et al. 2020): known answers of the q update and the weights, its state, and the
method in the training loop (q logged, exact resume, two processes sharing one q)."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config, train_on_two_processes
from fairdiff.fairness import GroupDRO

N_GROUPS = [3, 2]  # attribute 0 (3 groups) is the one group DRO covers unless a test says otherwise


def f64(values) -> torch.Tensor:
    """Losses in float64, so known answers hold to 1e-12 (the trainer passes float32 ones)."""
    return torch.tensor(values, dtype=torch.float64)


def batch(race: list[int], other: int = 0) -> torch.Tensor:
    """Groups [B, 2] with the given race ids and attribute 1 fixed."""
    return torch.tensor([[r, other] for r in race], dtype=torch.long)


# ------------------------------------------------------------------------------ the q update
def test_equal_group_losses_leave_q_uniform():
    dro = GroupDRO(N_GROUPS, attribute=0, eta=2.0)
    for step in range(20):
        record = dro.update(torch.full((6,), 0.1 + 0.01 * step, dtype=torch.float64), batch([0, 1, 2, 0, 1, 2]))
    assert torch.allclose(dro.q, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=1e-15)
    assert record["step"] == 20 and dro.step == 20


def test_a_group_whose_loss_stays_higher_gains_weight_geometrically():
    # group 1's mean loss is d above groups 0 and 2 at every step: q1 / q0 = exp(eta d t), q0 = q2,
    # so q1 = exp(eta d t) / (2 + exp(eta d t))
    eta, d = 1.5, 0.01
    dro = GroupDRO(N_GROUPS, attribute=0, eta=eta)
    races = batch([0, 1, 2, 1])
    for t in range(1, 101):
        base = 0.1 + 0.02 * math.sin(t)  # the common level moves; only the difference matters
        dro.update(f64([base, base + d, base, base + d]), races)
        q = dro.q
        assert float(q[1] / q[0]) == pytest.approx(math.exp(eta * d * t), rel=1e-12)
        assert float(q[2]) == pytest.approx(float(q[0]), rel=1e-12)
        assert float(q[1]) == pytest.approx(math.exp(eta * d * t) / (2 + math.exp(eta * d * t)), rel=1e-12)


def test_absent_groups_change_only_through_renormalisation():
    dro = GroupDRO(N_GROUPS, attribute=0, eta=3.0)
    dro.update(f64([0.3, 0.1, 0.2]), batch([0, 1, 2]))  # a non-uniform q to start from
    q = dro.q
    # group 2 absent; group 0 mean (0.2 + 0.4) / 2 = 0.3, group 1 mean 0.1; the -1 sample counts nowhere
    dro.update(f64([0.2, 0.4, 0.1, 5.0]), torch.tensor([[0, 0], [0, 1], [1, 1], [-1, 0]]))
    raw = torch.stack([q[0] * math.exp(3.0 * 0.3), q[1] * math.exp(3.0 * 0.1), q[2]])
    assert torch.allclose(dro.q, raw / raw.sum(), rtol=1e-12, atol=0)


def test_only_the_chosen_attribute_counts():
    # attribute 1 (2 groups): its groups' means 0.1 and 0.3; attribute 0's groups are irrelevant
    dro = GroupDRO(N_GROUPS, attribute=1, eta=1.0)
    groups = torch.tensor([[0, 0], [1, 1], [2, 1], [0, 0]])
    record = dro.update(f64([0.1, 0.2, 0.4, 0.1]), groups)
    assert record["group_means"] == pytest.approx([0.1, 0.3])
    assert float(dro.q[1] / dro.q[0]) == pytest.approx(math.exp(0.2), rel=1e-12)
    assert torch.equal(dro.weights(groups), (2 * dro.q[[0, 1, 1, 0]]).float())


def test_a_non_finite_group_mean_is_treated_as_absent():
    dro = GroupDRO(N_GROUPS, attribute=0, eta=1.0)
    dro.update(f64([0.1, math.inf, 0.2, math.nan]), batch([0, 1, 2, 2]))
    # group 1 (inf) and group 2 (mean NaN) unchanged, group 0 multiplied by exp(0.1)
    raw = torch.tensor([math.exp(0.1), 1.0, 1.0], dtype=torch.float64)
    assert torch.allclose(dro.q, raw / raw.sum(), rtol=1e-12, atol=0) and torch.isfinite(dro.log_q).all()


def test_record_reports_the_q_used_and_the_next():
    dro = GroupDRO(N_GROUPS, attribute=0, eta=1.0)
    first = dro.update(f64([0.1, 0.5]), batch([0, 1]))
    second = dro.update(f64([0.1, 0.5]), batch([0, 1]))
    assert first["q_used"] == pytest.approx([1 / 3] * 3) and second["q_used"] == first["q_next"]
    assert math.isnan(first["group_means"][2]) and first["group_means"][:2] == pytest.approx([0.1, 0.5])


def test_a_group_pushed_far_down_comes_back_without_underflowing():
    # log q of group 0 falls by 1000 (q = e^-1000 underflows to 0 in float64); reversing the gap
    # for as many steps brings q back to uniform, which a q held as plain probabilities could not
    dro = GroupDRO(N_GROUPS, attribute=0, eta=10.0)
    for losses in ([0.0, 1.0, 1.0],) * 100 + ([1.0, 0.0, 0.0],) * 100:
        dro.update(f64(losses), batch([0, 1, 2]))
        if dro.step == 100:
            assert float(dro.q[0]) == 0.0 and torch.isfinite(dro.log_q).all()
    assert torch.allclose(dro.q, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=1e-9, atol=0)


# ------------------------------------------------------------------------------ the weights
def test_weights_known_answers():
    dro = GroupDRO(N_GROUPS, attribute=0, eta=1.0)
    groups = torch.tensor([[0, 0], [1, 1], [2, 0], [-1, 1]])
    w = dro.weights(groups)
    assert w.dtype == torch.float32 and torch.equal(w, torch.ones(4))  # uniform q: every weight exactly 1
    dro.log_q = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    assert torch.allclose(dro.weights(groups), torch.tensor([1.5, 0.9, 0.6, 1.0]), rtol=1e-6)


def test_weights_average_one_over_a_balanced_batch_whatever_q():
    dro = GroupDRO(N_GROUPS, attribute=0, eta=4.0)
    gen = torch.Generator().manual_seed(0)
    balanced = batch([0, 1, 2] * 5)
    for _ in range(10):
        dro.update(torch.rand(15, generator=gen), balanced)
        assert not torch.allclose(dro.q, torch.full((3,), 1 / 3, dtype=torch.float64))
        assert dro.weights(balanced).double().mean().item() == pytest.approx(1.0, abs=1e-6)


def test_bad_settings_and_assignments_are_refused():
    with pytest.raises(ValueError, match="attribute: expected an attribute index in 0..1, got 2"):
        GroupDRO(N_GROUPS, attribute=2, eta=1.0)
    with pytest.raises(ValueError, match="eta: expected a finite step size >= 0"):
        GroupDRO(N_GROUPS, attribute=0, eta=-1.0)
    dro = GroupDRO(N_GROUPS, attribute=0, eta=1.0)
    with pytest.raises(ValueError, match="log_q: expected 3 finite values"):
        dro.log_q = torch.zeros(2)
    with pytest.raises(ValueError, match=r"groups\[0, 0\] = 3"):
        dro.weights(batch([3]))


# ------------------------------------------------------------------------------ state
def test_state_round_trip_continues_exactly():
    gen = torch.Generator().manual_seed(1)
    steps = [(torch.rand(8, generator=gen), torch.stack([torch.randint(-1, n, (8,), generator=gen) for n in N_GROUPS], 1))
             for _ in range(12)]
    straight = GroupDRO(N_GROUPS, attribute=0, eta=2.0)
    expected = [straight.update(*s) for s in steps]
    first = GroupDRO(N_GROUPS, attribute=0, eta=2.0)
    for s in steps[:5]:
        first.update(*s)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = GroupDRO(N_GROUPS, attribute=0, eta=2.0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.step == 5 and torch.equal(resumed.log_q, first.log_q)
    after = [resumed.update(*s) for s in steps[5:]]
    assert [(r["q_used"], r["q_next"]) for r in after] == [(r["q_used"], r["q_next"]) for r in expected[5:]]
    assert torch.equal(resumed.log_q, straight.log_q)


@pytest.mark.parametrize("setting, value", [("eta", 0.5), ("attribute", 1), ("n_groups", [3, 3])])
def test_state_saved_with_other_settings_is_refused_and_nothing_is_loaded(setting, value):
    saved = GroupDRO(N_GROUPS, attribute=0, eta=1.0)
    saved.update(f64([0.1, 0.5]), batch([0, 1]))
    other = GroupDRO(**{"n_groups": N_GROUPS, "attribute": 0, "eta": 1.0, setting: value})
    with pytest.raises(ValueError, match=f"{setting}: saved"):
        other.load_state_dict(saved.state_dict())
    assert other.step == 0


def test_checkpoint_files_carry_the_q_and_older_rank_files_still_load(tmp_path):
    from test_checkpoints import OneProcess, _parts

    from fairdiff.checkpoints import load_checkpoint, save_checkpoint, write_manifest
    from fairdiff.train import TrainState

    model, opt, fbp = _parts()
    dro = GroupDRO(N_GROUPS, attribute=0, eta=1.0)
    dro.update(f64([0.1, 0.5]), batch([0, 1]))
    state = TrainState(step=2, metrics=[{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}])
    ckpt = save_checkpoint(tmp_path / "run", state, OneProcess(), model, opt, None, dro, 0, 2)
    loaded = GroupDRO(N_GROUPS, attribute=0, eta=1.0)
    load_checkpoint(ckpt, tmp_path / "run", OneProcess(), model, opt, None, loaded, 0)
    assert torch.equal(loaded.log_q, dro.log_q) and loaded.step == 1
    # a rank file written before group DRO existed holds FBP's state under "fbp": still loaded
    ckpt = save_checkpoint(tmp_path / "old", state, OneProcess(), model, opt, None, fbp, 0, 2)
    rank = torch.load(ckpt / "rank0.pt", weights_only=True)
    torch.save({"torch_rng": rank["torch_rng"], "fbp": rank["method_state"]}, ckpt / "rank0.pt")
    write_manifest(ckpt)
    _, _, fresh = _parts()
    fresh.weights(torch.tensor([[0, 0]]))  # move its draw counter, which the load must restore
    load_checkpoint(ckpt, tmp_path / "old", OneProcess(), model, opt, None, fresh, 0)
    assert fresh.state_dict()["draws"] == fbp.state_dict()["draws"]


# ------------------------------------------------------------------------------ in the training loop
def _sampling_cfg(**groupdro):
    from fairdiff.config import load_config

    return load_config("smoke", sets=[f"groupdro.{k}={v}" for k, v in groupdro.items()])


def test_groupdro_draws_batches_balanced_over_its_attribute_only():
    from fairdiff.schema import get_schema
    from fairdiff.train import _sampling_probs

    schema = get_schema("fairgenmed")
    gen = torch.Generator().manual_seed(0)
    race = torch.multinomial(torch.tensor([0.1, 0.2, 0.7]), 3000, replacement=True, generator=gen)
    female = (torch.rand(3000, generator=gen) < torch.where(race == 1, 0.7, 0.5)).long()
    groups = torch.stack([race, female, torch.zeros(3000, dtype=torch.long)], dim=1)
    p = _sampling_probs(_sampling_cfg(), "groupdro", schema, groups)
    shares = torch.stack([p[race == g].sum() for g in range(3)])
    assert torch.allclose(shares, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-12)
    for g in range(3):  # within a race group every subject equally likely: gender is left as it is
        assert torch.allclose(p[race == g], p[race == g][0].expand(int((race == g).sum())), rtol=1e-12)
    assert _sampling_probs(_sampling_cfg(balanced_batches="false"), "groupdro", schema, groups) is None
    assert _sampling_probs(_sampling_cfg(), "baseline", schema, groups) is None


def _q_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("q[")]


@pytest.mark.slow
def test_trained_q_follows_the_logged_group_losses_and_resume_is_exact(synthetic_fairgenmed, prepared_base, tmp_path):
    from diffusers import UNet2DConditionModel

    from fairdiff.train import train

    _, base = prepared_base
    cfg = tiny_config(synthetic_fairgenmed, steps=6, checkpoint_every=3, log_every=4)
    cfg["groupdro"]["eta"] = 5.0  # a visible move in six steps
    seen = []
    straight = train(cfg, "groupdro", tmp_path / "straight", str(base), base / "cache", progress=False,
                     on_step=seen.append)
    metrics = pd.read_csv(straight / "metrics.csv")
    q_cols = _q_columns(metrics)
    assert q_cols == ["q[race=Asian]", "q[race=Black]", "q[race=White]"] and not any(
        c.startswith("sigma[") for c in metrics.columns)
    q = metrics[q_cols].to_numpy()
    np.testing.assert_allclose(q[0], [1 / 3] * 3, rtol=1e-12)
    # the q a step's weights used is the q before that step's update, and the update is the known
    # formula applied to that step's logged group means (the gathered batch's, as the update saw it)
    for s in range(len(metrics) - 1):
        means = metrics[[c.replace("q[", "loss[") for c in q_cols]].to_numpy()[s]
        raw = q[s] * np.exp(np.where(np.isfinite(means), cfg["groupdro"]["eta"] * np.nan_to_num(means), 0.0))
        np.testing.assert_allclose(q[s + 1], raw / raw.sum(), rtol=1e-9)
    assert [info["q_used"] for info in seen[1:]] == [info["q_next"] for info in seen[:-1]]
    assert np.abs(q[-1] - 1 / 3).max() > 1e-3  # q moved

    split = tmp_path / "split"
    train(cfg, "groupdro", split, str(base), base / "cache", progress=False, max_steps=3)
    train(cfg, "groupdro", split, str(base), base / "cache", progress=False, resume="latest")
    a, b = (UNet2DConditionModel.from_pretrained(r / "final" / "unet").state_dict() for r in (straight, split))
    assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(metrics, pd.read_csv(split / "metrics.csv"))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_share_one_q(prepared_base, tmp_path):
    cfg, base = prepared_base
    cfg = json.loads(json.dumps(cfg))
    cfg["groupdro"]["eta"] = 5.0
    logs = train_on_two_processes(cfg, base, tmp_path, "groupdro")
    assert len(logs[0]) == len(logs[1]) == cfg["train"]["steps"]
    for a, b in zip(logs[0], logs[1]):
        assert a["gathered_batch"] == 2 * a["local_batch"]
        assert a["q_used"] == b["q_used"] and a["q_next"] == b["q_next"]
    assert logs[0][0]["q_used"] != logs[0][-1]["q_next"]  # q moved, identically on both ranks
    q = pd.read_csv(tmp_path / "run" / "metrics.csv")[["q[race=Asian]", "q[race=Black]", "q[race=White]"]]
    np.testing.assert_allclose(q.to_numpy(), [e["q_used"] for e in logs[0]], rtol=1e-12)
