"""The study's arms (validation, folders, the sweep as arms, the fixed-sigma table) and the drift
band of sigma without BO, checked against a simulation and the FBP object itself."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fairdiff import study
from fairdiff.config import load_config
from fairdiff.errors import ConfigError
from fairdiff.schema import get_schema

SCHEMA = get_schema("fairgenmed")


def _with_arms(arms: dict, profile: str = "study-smoke") -> dict:
    cfg = load_config(profile)
    cfg["study"]["arms"] = arms
    return cfg


def test_the_study_profile_lists_its_arms_in_order():
    arms = study.arms_from_config(load_config("study"))
    assert [a.name for a in arms] == ["baseline", "fairbo", "fixed-0.5", "random", "fairbo-compdiff", "reweight-race",
                                      "resample-race", "groupdro-race", "oracle-planted", "oracle-others"]
    by_name = {a.name: a for a in arms}
    assert by_name["fixed-0.5"].method == "random" and dict(by_name["fixed-0.5"].sets) == {"fbp.sigma_init": 0.5}
    assert dict(by_name["oracle-planted"].sets)["fbp.sigma_groups"] == {"race=Black": 1.0}
    main, configs = study.check_arms("study", None, (), arms)
    assert configs["fairbo-compdiff"]["fbp"]["weight_floor"] == 0.1
    assert configs["fairbo-compdiff"]["train"]["input_perturbation"] == 0.1
    assert configs["reweight-race"]["reweight"]["attributes"] == ["race"]
    assert configs["baseline"] == main  # an arm that changes nothing is the profile itself
    assert len({arm: arm.name for arm in arms}) == 10  # hashable, though some values are lists or mappings
    # no arms listed: one per method of `methods`, nothing changed
    plain = study.arms_from_config(_with_arms({}, "mini"))
    assert [(a.name, a.method, a.sets) for a in plain] == [(m, m, ()) for m in load_config("mini")["methods"]]


@pytest.mark.parametrize("arms, message", [
    ({"fair bo": {"method": "fairbo"}}, r"study.arms.fair bo: an arm's name names its folder"),
    ({"x": {"method": "magic"}}, r"study.arms.x.method: expected one of baseline, .*got 'magic'"),
    ({"x": {"methd": "fairbo"}}, r"study.arms.x: expected a mapping \{method"),
    ({"x": {"method": "fairbo", "set": [1]}}, r"study.arms.x.set: expected a mapping"),
    ({"x": {"method": "fairbo", "set": {"data.n": 5}}}, r"study.arms.x.set.data.n: an arm changes only"),
    ({"Fair": {"method": "fairbo"}, "fair": {"method": "fairbo", "set": {"fbp.window": 4}}},
     r"'Fair' and 'fair' would share a folder"),
])
def test_bad_arms_are_refused_with_their_name(arms, message):
    with pytest.raises(ConfigError, match=message):
        study.arms_from_config(_with_arms(arms))


def test_arm_settings_go_through_the_config_validation():
    bad = study.arms_from_config(_with_arms({"x": {"method": "fairbo", "set": {"fbp.windw": 4}}}))
    with pytest.raises(ConfigError, match=r"study.arms.x.set: --set: fbp.windw: unknown key; did you mean 'fbp.wind"):
        study.check_arms("study-smoke", None, (), bad)
    bad = study.arms_from_config(_with_arms({"x": {"method": "random", "set": {"fbp.sigma_init": -1}}}))
    with pytest.raises(ConfigError, match=r"study.arms.x.set: .*fbp.sigma_init: expected a value >= 0.0"):
        study.check_arms("study-smoke", None, (), bad)
    # a setting its method does not read makes an arm the same run as another
    same = study.arms_from_config(_with_arms({"baseline": {"method": "baseline"},
                                              "b2": {"method": "baseline", "set": {"fbp.sigma_init": 0.5}}}))
    with pytest.raises(ConfigError, match=r"'baseline' and 'b2' are the same run"):
        study.check_arms("study-smoke", None, (), same)


def test_sweep_cells_are_arms_and_reuse_the_plain_fairbo_arm():
    cfg = load_config("study-smoke")  # fbp.window 3, sweep W in [3, 6], r in [0.95]
    arms = study.arms_from_config(cfg)
    cells = study.sweep_arms(cfg, arms)
    assert cells[(3, 0.95)].name == "fairbo"  # the profile's own (W, r): the study's fairbo runs
    cell = cells[(6, 0.95)]
    assert cell.name == "fairbo-W6-r0.95" and cell.method == "fairbo"
    assert dict(cell.sets) == {"fbp.window": 6, "fbp.exploitation": 0.95}
    _, configs = study.check_arms("study-smoke", None, (), [cell])
    assert configs[cell.name]["fbp"]["window"] == 6


def test_seed_and_arm_folders_and_what_they_share(tmp_path):
    a = study.seed_context("study-smoke", 0, root=tmp_path)
    b = study.seed_context("study-smoke", 1, root=tmp_path)
    assert a.layout.root == tmp_path / "study-smoke" / "seed-0" / "fairgenmed-study-smoke"
    assert b.layout.root != a.layout.root and b.cfg["seed"] == 1
    assert a.cfg["data"]["root"] == b.cfg["data"]["root"]  # the same data for every seed
    assert a.pretrain_root == b.pretrain_root == tmp_path / "study-smoke" / "pretrain"  # one pretrained base
    arm = study.Arm("fixed-0.5", "random", (("fbp.sigma_init", 0.5),))
    ctx = study.arm_context("study-smoke", 1, arm, root=tmp_path)
    assert ctx.layout.root == tmp_path / "study-smoke" / "seed-1" / "arms" / "fixed-0.5" / "fairgenmed-study-smoke"
    assert ctx.cfg["fbp"]["sigma_init"] == 0.5 and ctx.cfg["seed"] == 1 and ctx.pretrain_root == b.pretrain_root
    (b.layout.base).mkdir(parents=True)
    (b.layout.base / "base.json").write_text("{}")
    (b.layout.evaluation / "encoder-abc").mkdir(parents=True)
    (b.layout.evaluation / "cache").mkdir()
    assert ctx.layout.base == b.layout.base  # trains from the seed's own base folder (one training cache)
    assert ctx.layout.cache == b.layout.cache
    study.share_seed_work(b, ctx)
    study.share_seed_work(b, ctx)  # idempotent
    assert (ctx.layout.root / "base").is_symlink() and (ctx.layout.root / "base" / "base.json").is_file()
    assert (ctx.layout.evaluation / "encoder-abc").resolve() == (b.layout.evaluation / "encoder-abc").resolve()
    assert (ctx.layout.evaluation / "cache").is_symlink()
    assert not ctx.layout.method("random").exists()  # the arm's own run stays its own


def test_fixed_sigmas_and_the_arms_table():
    cfg = load_config("study")
    arms = study.arms_from_config(cfg)
    _, configs = study.check_arms("study", None, (), arms)
    planted = study.planted_group(cfg, SCHEMA)
    table = study.arms_table(arms, configs, SCHEMA, planted).set_index("arm")
    assert tuple(table.loc["baseline", ["planted_sigma", "others_sigma"]]) == (0.0, 0.0)
    assert tuple(table.loc["random", ["planted_sigma", "others_sigma"]]) == (1.0, 1.0)
    assert tuple(table.loc["fixed-0.5", ["planted_sigma", "others_sigma"]]) == (0.5, 0.5)
    assert tuple(table.loc["oracle-planted", ["planted_sigma", "others_sigma"]]) == (1.0, 0.0)
    assert tuple(table.loc["oracle-others", ["planted_sigma", "others_sigma"]]) == (0.0, 1.0)
    assert np.isnan(table.loc["fairbo", "planted_sigma"]) and table.loc["groupdro-race", "planted_sigma"] == 0.0
    assert table.loc["oracle-planted", "set"] == 'fbp.sigma_init=0.0; fbp.sigma_groups={"race=Black": 1.0}'


# ----------------------------------------------------------------------------- the drift band
def test_drift_band_matches_a_simulation_of_the_mix():
    r, sigma0, steps = 0.95, 1.0, np.array([1, 2, 10, 60, 300])
    rng = np.random.default_rng(0)
    sigma = np.full(20_000, sigma0)
    used = {}
    for t in range(1, 301):  # the sigma used at step t, then the mix
        if t in steps:
            used[t] = sigma.copy()
        sigma = r * sigma + (1 - r) * rng.uniform(size=sigma.shape)
    band = study.drift_band(steps, sigma0, r).set_index("step")
    for t in steps:
        assert band.loc[t, "band_mean"] == pytest.approx(used[t].mean(), abs=2e-3)
        assert band.loc[t, "band_sd"] == pytest.approx(used[t].std(), abs=2e-3)
    inside = (used[300] >= band.loc[300, "band_lo"]) & (used[300] <= band.loc[300, "band_hi"])
    assert inside.mean() == pytest.approx(0.95, abs=0.01)
    assert band.loc[1, "band_mean"] == sigma0 and band.loc[1, "band_sd"] == 0  # nothing mixed yet
    assert study.drift_band([400], 0.0, 0.95)["band_mean"].iloc[0] == pytest.approx(0.5, abs=1e-8)


def test_fbp_without_a_bo_event_stays_in_the_drift_band():
    """The band describes the FBP object's own exploration mix: with the BO window longer than the
    run (no BO event), about 5 % of the sigma used falls outside it."""
    from fairdiff.fairness import FairBayesianPerturbation

    n_groups, steps, outside, total = (3, 2, 2), 200, 0, 0
    band = study.drift_band(np.arange(1, steps + 1), 1.0, 0.95)
    for seed in range(10):
        fbp = FairBayesianPerturbation(n_groups, window=10 * steps, exploitation=0.95, seed=seed)
        rng = np.random.default_rng(seed)
        for t in range(steps):
            sigma = fbp.sigma.numpy()
            outside += int(((sigma < band["band_lo"][t]) | (sigma > band["band_hi"][t])).sum())
            total += len(sigma)
            groups = torch.as_tensor(np.stack([rng.integers(0, n, 8) for n in n_groups], axis=1))
            fbp.update(torch.as_tensor(rng.uniform(size=8)), groups)
    assert 0.02 < outside / total < 0.08


def test_sigma_tables_against_the_band(tmp_path):
    steps = np.arange(1, 201)
    band = study.drift_band(steps, 1.0, 0.95)
    logs = {}
    for seed in (0, 1):  # Black jumps to 0.1 at step 100 (what BO would do); White follows the band mean
        logs[("fairbo", seed)] = pd.DataFrame({"step": steps,
                                               "race=Black": np.where(steps > 100, 0.1, band["band_mean"]),
                                               "race=White": band["band_mean"] + 0.001 * seed * (steps > 1)})
    traj, summary = study.sigma_tables(logs, {"fairbo": (1.0, {}, 0.95)}, study.Planted("race", "Black"),
                                       max_points=50)
    s = summary.set_index("group")
    assert s.loc["race=Black", "share_outside_band"] == pytest.approx(0.5, abs=0.01) and s.loc["race=Black", "planted"]
    assert s.loc["race=White", "share_outside_band"] == 0.0
    assert s.loc["race=Black", "final_sigma"] == pytest.approx(0.1)
    assert s.loc["race=White", "band_mean"] == pytest.approx(band["band_mean"].iloc[-1])
    assert traj["step"].nunique() <= 52 and {1, 200} <= set(traj["step"])
    white = traj[(traj["group"] == "race=White") & (traj["step"] == 200)].iloc[0]
    assert (white["min"], white["max"], white["n_seeds"]) == pytest.approx(
        (band["band_mean"].iloc[-1], band["band_mean"].iloc[-1] + 0.001, 2))
    # a group started elsewhere (fbp.sigma_groups) gets its own band
    _, own = study.sigma_tables(logs, {"fairbo": (1.0, {"race=Black": 0.0}, 0.95)}, study.Planted("race", "Black"))
    assert own.set_index("group").loc["race=Black", "sigma0"] == 0.0
