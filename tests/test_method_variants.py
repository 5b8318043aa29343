"""Method variants, each a config value: baselines limited to some attributes, FBP's starting sigma
(fixed-sigma and oracle controls), a weight floor, input perturbation; and the stage keys of runs made
before any of them existed."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from conftest import tiny_config
from fairdiff import stage_keys
from fairdiff.config import METHODS, load_config, parse_sets
from fairdiff.errors import ConfigError
from fairdiff.fairness import FairBayesianPerturbation, balanced_sampling_weights, reweight_weights
from fairdiff.schema import get_schema

FAIRGENMED_GROUPS = [3, 2, 2]
OLD_METHODS = ("baseline", "random", "fairbo", "reweight", "resample")


def correlated_groups(n: int = 4000, seed: int = 0) -> torch.Tensor:
    """FairGenMed-like groups [n, 3]: rare races, gender tied to race, a few unknown ethnicities."""
    gen = torch.Generator().manual_seed(seed)
    race = torch.multinomial(torch.tensor([0.08, 0.12, 0.80]), n, replacement=True, generator=gen)
    female = torch.rand(n, generator=gen) < torch.where(race == 1, 0.75, 0.55)
    hispanic = torch.rand(n, generator=gen) < torch.where(race == 2, 0.05, 0.01)
    unknown = torch.rand(n, generator=gen) < 0.03
    return torch.stack([race, (~female).long(), torch.where(unknown, -1, hispanic.long())], dim=1)


# ------------------------------------------------------------------------------ targeted baselines
def test_null_attributes_give_the_weights_of_before_bit_for_bit():
    groups = correlated_groups()
    assert torch.equal(reweight_weights(groups, FAIRGENMED_GROUPS, None), reweight_weights(groups, FAIRGENMED_GROUPS))
    assert torch.equal(balanced_sampling_weights(groups, FAIRGENMED_GROUPS, attributes=None),
                       balanced_sampling_weights(groups, FAIRGENMED_GROUPS))
    # listing every attribute is the same balancing as null
    assert torch.equal(reweight_weights(groups, FAIRGENMED_GROUPS, [0, 1, 2]), reweight_weights(groups, FAIRGENMED_GROUPS))


def test_reweight_one_attribute_balances_it_exactly_and_leaves_the_others():
    groups = correlated_groups()
    race = groups[:, 0]
    w = reweight_weights(groups, FAIRGENMED_GROUPS, [0]).double()
    n = len(race)
    counts = torch.bincount(race, minlength=3).double()
    # known answer: N / (3 N_g), already mean 1 (no unknown race)
    assert torch.allclose(w, (n / (3 * counts))[race], rtol=1e-6)
    shares = torch.stack([w[race == g].sum() for g in range(3)]) / w.sum()
    assert torch.allclose(shares, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-6)
    for g in range(3):  # one weight per race group: gender and ethnicity are not reweighted
        assert torch.unique(w[race == g]).numel() == 1


def test_resample_one_attribute_balances_it_exactly_and_leaves_the_others():
    groups = correlated_groups()
    race = groups[:, 0]
    p = balanced_sampling_weights(groups, FAIRGENMED_GROUPS, attributes=[0])
    shares = torch.stack([p[race == g].sum() for g in range(3)])
    assert torch.allclose(shares, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-12)
    for g in range(3):  # uniform within a race group: gender keeps its within-race shares
        in_group = p[race == g]
        assert torch.allclose(in_group, torch.full_like(in_group, 1 / (3 * int((race == g).sum()))), rtol=1e-12)
    # gender is balanced by the default (every attribute) and not by race alone (it is tied to race)
    male = groups[:, 1] == 1
    assert p[male].sum().item() != pytest.approx(0.5, abs=1e-3)
    assert balanced_sampling_weights(groups, FAIRGENMED_GROUPS)[male].sum().item() == pytest.approx(0.5, abs=1e-8)


@pytest.mark.parametrize("attributes", [[], [3], [0, 0], [-1]])
def test_bad_attribute_selections_are_refused(attributes):
    groups = correlated_groups(50)
    with pytest.raises(ValueError, match="distinct attribute indices in 0..2"):
        reweight_weights(groups, FAIRGENMED_GROUPS, attributes)
    with pytest.raises(ValueError, match="distinct attribute indices in 0..2"):
        balanced_sampling_weights(groups, FAIRGENMED_GROUPS, attributes=attributes)


# ------------------------------------------------------------------------------ FBP's starting sigma
def test_random_keeps_a_fixed_sigma_and_its_weights_have_the_matching_spread():
    fbp = FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=0, bo=False, sigma_init=0.5)
    groups = torch.stack([torch.randint(0, n, (40_000,), generator=torch.Generator().manual_seed(a))
                          for a, n in enumerate(FAIRGENMED_GROUPS)], dim=1)
    spreads = []
    for _ in range(5):
        w = fbp.weights(groups).double()
        spreads.append(w.std().item())
        record = fbp.update(torch.rand(len(groups)), groups)
        assert record["sigma_used"] == [0.5] * 7 and record["sigma_next"] == [0.5] * 7
    # three known attributes at 0.5: var = 3 * 0.25, std 0.866 (5 standard errors of a std over 40,000)
    expected = math.sqrt(3 * 0.25)
    assert all(abs(s - expected) < 5 * expected / math.sqrt(2 * 40_000) for s in spreads)


def test_exploration_mix_drifts_any_sigma_to_about_half_in_60_steps():
    # docs/method.md §3.10: sigma_t = r^t sigma_0 + (1 - r) sum r^(t-1-s) u_s, so after 60 steps at r = 0.95
    # E[sigma] = 0.5 + 0.95^60 (sigma_0 - 0.5) (0.523 from 1, 0.477 from 0), per-group sd 0.046
    r, t = 0.95, 60
    sd = (1 - r) * math.sqrt(1 / 12 / (1 - r * r))
    for start in (0.0, 1.0):
        ends = []
        for seed in range(20):  # no BO event: the window is never full
            fbp = FairBayesianPerturbation(FAIRGENMED_GROUPS, seed=seed, window=10_000, sigma_init=start)
            for _ in range(t):
                fbp.update(torch.zeros(4), torch.tensor([[0, 0, 0], [1, 1, 1], [2, 0, 1], [0, 1, 0]]))
            ends.append(fbp.sigma)
        mean = torch.cat(ends).mean().item()
        expected = 0.5 + r ** t * (start - 0.5)
        assert abs(mean - expected) < 5 * sd / math.sqrt(140)
        assert abs(mean - 0.5) < 0.03


def test_sigma_groups_override_sigma_init_for_the_named_groups_only():
    from fairdiff.train import _make_perturbation, initial_sigma

    schema = get_schema("fairgenmed")
    planted = load_config("smoke", sets=["fbp.sigma_init=0", "fbp.sigma_groups={race=Black: 1.0}"])
    assert initial_sigma(planted, schema) == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    others = load_config("smoke", sets=["fbp.sigma_groups={race=Black: 0}"])
    assert initial_sigma(others, schema) == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    fbp = _make_perturbation(planted, "random", rank=0)
    assert fbp.sigma.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    groups = torch.tensor([[0, 0, 0], [2, 1, 1], [-1, 0, 1], [1, 0, 0]] * 5000)
    w = fbp.weights(groups)
    assert torch.equal(w[groups[:, 0] != 1], torch.ones(15_000))  # only Black subjects are perturbed
    assert abs(w[groups[:, 0] == 1].double().var().item() - 1.0) < 5 * math.sqrt(2 / 5000)


def test_a_mapping_can_be_set_from_the_command_line_and_bad_names_are_refused():
    assert parse_sets(["fbp.sigma_groups={race=Black: 1.0, 'gender=Male': 0.5}"]) == {
        "fbp": {"sigma_groups": {"race=Black": 1.0, "gender=Male": 0.5}}}
    cfg = load_config("smoke", sets=["fbp.sigma_init=0", "fbp.sigma_groups={race=Black: 1}"])
    assert cfg["fbp"]["sigma_groups"] == {"race=Black": 1.0} and cfg["fbp"]["sigma_init"] == 0.0
    assert isinstance(cfg["fbp"]["sigma_init"], float)  # 0 and 0.0: one setting, one stage key
    with pytest.raises(ConfigError, match=r"--set: fbp.sigma_groups.race=Blak: not a group of fairgenmed; "
                                          r"expected attribute=group, one of race=Asian, race=Black"):
        load_config("smoke", sets=["fbp.sigma_groups={race=Blak: 1.0}"])
    with pytest.raises(ConfigError, match=r"fbp.sigma_groups.race=Black: expected a number >= 0, got -1"):
        load_config("smoke", sets=["fbp.sigma_groups={race=Black: -1}"])
    with pytest.raises(ConfigError, match=r"fbp.sigma_groups: expected a mapping"):
        load_config("smoke", sets=["fbp.sigma_groups=1.0"])
    with pytest.raises(ConfigError, match=r"fbp.sigma_init: expected a value >= 0.0"):
        load_config("smoke", sets=["fbp.sigma_init=-0.5"])


def test_method_settings_are_checked_against_the_dataset():
    with pytest.raises(ConfigError, match=r"reweight.attributes: expected null \(every attribute\) or a list of "
                                          r"distinct attribute names of fairgenmed \(race, gender, ethnicity\)"):
        load_config("smoke", sets=["reweight.attributes=[rac]"])
    with pytest.raises(ConfigError, match=r"resample.attributes: expected a list or null, got 'race'"):
        load_config("smoke", sets=["resample.attributes=race"])
    with pytest.raises(ConfigError, match=r"groupdro.attribute: expected an attribute of fairgenmed"):
        load_config("smoke", sets=["groupdro.attribute=sex"])
    assert load_config("smoke", "ham10000")["groupdro"]["attribute"] == "age"  # HAM10000 has no race
    assert load_config("smoke", "chexpert")["groupdro"]["attribute"] == "race"
    assert load_config("smoke", sets=["resample.attributes=[race]"])["resample"]["attributes"] == ["race"]


# ------------------------------------------------------------------------------ weight floor
def _expected_floored(sigma: float, floor: float) -> float:
    """E[max(1 + sigma Z, floor)], Z ~ N(0, 1): floor P(X < floor) + E[X; X >= floor] for X ~ N(1, sigma^2)."""
    a = (floor - 1) / sigma
    cdf, pdf = 0.5 * math.erfc(-a / math.sqrt(2)), math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    return floor * cdf + (1 - cdf) + sigma * pdf


def test_weight_floor_known_answers():
    groups = torch.zeros(200_000, 1, dtype=torch.long)
    plain = FairBayesianPerturbation([2], seed=7).weights(groups)
    floored = FairBayesianPerturbation([2], seed=7, weight_floor=0.1).weights(groups)
    assert torch.equal(floored, plain.clamp(min=0.1))  # exactly max(w, floor) on the same noise, not rescaled
    expected = _expected_floored(1.0, 0.1)
    assert expected == pytest.approx(1.1004, abs=1e-4)  # 0.1 Phi(-0.9) + Phi(0.9) + phi(0.9)
    w = floored.double()
    assert abs(w.mean().item() - expected) < 5 * w.std().item() / math.sqrt(len(w))
    assert 1.0 < _expected_floored(0.5, 0.1) < expected  # the mean weight exceeds 1 and grows with sigma


def test_weight_floor_and_clamp_are_refused_together():
    with pytest.raises(ValueError, match="either a floor .* or clamp"):
        FairBayesianPerturbation([2], clamp=True, weight_floor=0.1)
    with pytest.raises(ConfigError, match=r"fbp.weight_floor: 0.1 cannot be combined with fbp.clamp: true"):
        load_config("smoke", sets=["fbp.weight_floor=0.1", "fbp.clamp=true"])


@pytest.mark.parametrize("setting, value", [("sigma_init", 0.5), ("weight_floor", 0.1)])
def test_fbp_state_saved_with_another_start_or_floor_is_refused(setting, value):
    saved = FairBayesianPerturbation([2, 2], seed=0).state_dict()
    with pytest.raises(ValueError, match=f"{setting}: saved"):
        FairBayesianPerturbation([2, 2], seed=0, **{setting: value}).load_state_dict(saved)


def test_fbp_state_saved_before_start_and_floor_existed_loads_at_their_defaults():
    state = FairBayesianPerturbation([2, 2], seed=0).state_dict()
    del state["settings"]["sigma_init"], state["settings"]["weight_floor"]
    FairBayesianPerturbation([2, 2], seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match=r"sigma_init: saved \[1.0, 1.0, 1.0, 1.0\], this object \[0.5"):
        FairBayesianPerturbation([2, 2], seed=0, sigma_init=0.5).load_state_dict(state)


# ------------------------------------------------------------------------------ input perturbation
class RecordingUNet:
    """Stands in for the UNet: keeps what it was given and predicts ``scale * input`` (0: zeros, so the
    loss is the target's mean square)."""

    def __init__(self, scale: float):
        self.scale, self.inputs, self.timesteps = scale, [], []

    def __call__(self, noisy, t, hidden):
        self.inputs.append(noisy.clone())
        self.timesteps.append(t.clone())
        return SimpleNamespace(sample=self.scale * noisy)


def _fake_cache(n: int = 6):
    from fairdiff.prepare import TrainingCache

    gen = torch.Generator().manual_seed(0)
    return TrainingCache(latent_mean=torch.randn(n, 4, 4, 4, generator=gen), latent_std=torch.rand(n, 4, 4, 4, generator=gen),
                         prompt_index=torch.arange(n) % 3, text=torch.randn(4, 5, 8, generator=gen),
                         groups=torch.zeros(n, 3, dtype=torch.long), ids=[str(i) for i in range(n)],
                         scaling_factor=0.18215)


def _loss_before_input_perturbation(unet, noise_scheduler, cache, idx, uncond_prob):
    """The per-sample loss as the trainer computed it before train.input_perturbation existed (reference)."""
    import torch.nn.functional as F

    mean, std = cache.latent_mean[idx], cache.latent_std[idx]
    latents = (mean + std * torch.randn_like(mean)) * cache.scaling_factor
    text_rows = cache.prompt_index[idx].clone()
    if uncond_prob > 0:
        text_rows[torch.rand(len(idx)) < uncond_prob] = cache.uncond_index
    noise = torch.randn_like(latents)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), dtype=torch.long)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    target = noise_scheduler.get_velocity(latents, noise, t) if noise_scheduler.config.prediction_type == \
        "v_prediction" else noise
    pred = unet(noisy, t, cache.text[text_rows]).sample
    return F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_input_perturbation_noises_the_input_not_the_target(prediction_type):
    from diffusers import DDPMScheduler

    from fairdiff.train import _per_sample_loss

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type=prediction_type)
    cache, idx = _fake_cache(), torch.tensor([0, 2, 3, 5])

    def run(unet, gamma=None):
        torch.manual_seed(11)
        if gamma is None:
            out = _loss_before_input_perturbation(unet, scheduler, cache, idx, 0.5)
        else:
            out = _per_sample_loss(unet, scheduler, cache, idx, 0.5, "cpu", gamma)[0]
        return out, torch.get_rng_state()

    # gamma 0: the loss of before, bit for bit, and no extra draw (the RNG ends where it ended)
    old, old_rng = run(RecordingUNet(0.5))
    zero, zero_rng = run(RecordingUNet(0.5), 0.0)
    assert torch.equal(zero, old) and torch.equal(zero_rng, old_rng)
    # gamma 0.1 with a UNet predicting zeros: the loss is the target's mean square, unchanged...
    plain, perturbed = RecordingUNet(0.0), RecordingUNet(0.0)
    target_sq, _ = run(plain, 0.0)
    same, _ = run(perturbed, 0.1)
    assert torch.equal(same, target_sq)
    # ...while the input moved by sqrt(1 - alpha_bar_t) * 0.1 * e', e' the one draw after the others
    torch.set_rng_state(zero_rng)
    extra = torch.randn_like(plain.inputs[0])
    t = plain.timesteps[0]
    assert torch.equal(perturbed.timesteps[0], t)
    scale = (1 - scheduler.alphas_cumprod[t]).sqrt().float()[:, None, None, None]
    assert not torch.equal(perturbed.inputs[0], plain.inputs[0])
    assert torch.allclose(perturbed.inputs[0] - plain.inputs[0], scale * 0.1 * extra, atol=1e-6)
    # and with a UNet that reads its input the loss changes
    assert not torch.equal(run(RecordingUNet(0.5), 0.1)[0], zero)


# ------------------------------------------------------------------------------ stage keys
def _config_before_the_variants() -> tuple[dict, dict]:
    """(the mini config now, the same without any key this change added)."""
    now = load_config("mini")
    before = copy.deepcopy(now)
    for section in ("reweight", "resample", "groupdro"):
        del before[section]
    for key in ("sigma_init", "sigma_groups", "weight_floor"):
        del before["fbp"][key]
    del before["train"]["input_perturbation"]
    return now, before


def test_old_methods_keep_their_train_keys_at_the_defaults():
    now, before = _config_before_the_variants()
    for method in OLD_METHODS:
        assert stage_keys.train_stage(now, method).key == stage_keys.train_stage(before, method).key, method
    assert METHODS == OLD_METHODS + ("groupdro",)


@pytest.mark.parametrize("setting, changes", [
    ("train.input_perturbation=0.1", set(METHODS)),
    ("fbp.sigma_init=0.5", {"random", "fairbo"}),
    ("fbp.sigma_groups={race=Black: 0.5}", {"random", "fairbo"}),
    ("fbp.weight_floor=0.1", {"random", "fairbo"}),
    ("reweight.attributes=[race]", {"reweight"}),
    ("resample.attributes=[race]", {"resample"}),
    ("groupdro.eta=0.5", {"groupdro"}),
    ("groupdro.balanced_batches=false", {"groupdro"}),
])
def test_each_variant_changes_the_keys_of_the_methods_that_read_it_only(setting, changes):
    now = load_config("mini")
    changed = load_config("mini", sets=[setting])
    moved = {m for m in METHODS if stage_keys.train_stage(changed, m).key != stage_keys.train_stage(now, m).key}
    assert moved == changes


def test_a_run_from_before_the_floor_says_how_to_reuse_it():
    now, before = _config_before_the_variants()
    floored = load_config("mini", sets=["fbp.weight_floor=0.1"])
    lines = stage_keys.differences({"settings": stage_keys.train_stage(before, "fairbo").settings},
                                   stage_keys.train_stage(floored, "fairbo"))
    assert lines == ["fbp.weight_floor: '(absent)' -> 0.1 (made before this setting existed, i.e. with None: "
                     "--set fbp.weight_floor=null reuses it)"]
    assert load_config("mini", sets=["fbp.weight_floor=null"])["fbp"]["weight_floor"] is None


def test_the_command_line_accepts_groupdro():
    from fairdiff.cli import build_parser

    assert build_parser().parse_args(["train", "--method", "groupdro"]).method == "groupdro"
    assert build_parser().parse_args(["evaluate", "--methods", "baseline", "groupdro"]).methods == [
        "baseline", "groupdro"]


# ------------------------------------------------------------------------------ in the training loop
@pytest.mark.slow
def test_the_oracle_control_trains_with_its_sigma_fixed(synthetic_fairgenmed, prepared_base, tmp_path):
    from fairdiff.train import train

    _, base = prepared_base
    cfg = tiny_config(synthetic_fairgenmed)
    cfg["fbp"].update(sigma_init=0.0, sigma_groups={"race=Black": 1.0})
    run = train(cfg, "random", tmp_path / "oracle", str(base), base / "cache", progress=False)
    metrics = pd.read_csv(run / "metrics.csv")
    sigma = metrics[[c for c in metrics.columns if c.startswith("sigma[")]]
    assert (sigma["sigma[race=Black]"] == 1.0).all() and (sigma.drop(columns="sigma[race=Black]") == 0.0).all().all()


@pytest.mark.slow
def test_input_perturbation_reaches_the_training_step(synthetic_fairgenmed, prepared_base, tmp_path):
    from fairdiff.train import train

    _, base = prepared_base
    losses = {}
    for gamma in (0.0, 0.5):
        cfg = tiny_config(synthetic_fairgenmed, steps=1, checkpoint_every=1, input_perturbation=gamma)
        run = train(cfg, "baseline", tmp_path / f"gamma{gamma}", str(base), base / "cache", progress=False)
        losses[gamma] = pd.read_csv(run / "metrics.csv")["loss"].item()
    assert losses[0.0] != losses[0.5]
