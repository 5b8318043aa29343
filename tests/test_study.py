"""The study's statistics on constructed numbers with known answers, and the runner's bookkeeping
with the stages replaced by constructed tables (the real end-to-end path runs in notebook 06
under nbval, on the study-smoke profile)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fairdiff import study
from fairdiff.config import load_config
from fairdiff.errors import ConfigError, DataError
from fairdiff.schema import get_schema

# ----------------------------------------------------------------------------- statistics


def test_sign_flip_pvalue_by_hand():
    # 3 pairs -> 8 sign patterns. [1, 2, 3]: only +++ and --- reach |sum| = 6.
    assert study.sign_flip_pvalue([1, 2, 3]) == pytest.approx(2 / 8)
    # [3, -1, 1]: sums over the patterns are 5, 3, 3, 1, -1, -3, -3, -5; |sum| >= 3 for six of them.
    assert study.sign_flip_pvalue([3, -1, 1]) == pytest.approx(6 / 8)
    # a difference of exactly 0 on average: every pattern is at least as extreme
    assert study.sign_flip_pvalue([1, -1]) == 1.0
    # the floor with 5 seeds: all differences of one sign give 2 / 2^5
    assert study.sign_flip_pvalue([0.5, 1, 2, 3, 4]) == pytest.approx(0.0625)
    # ties count as at least as extreme: [1, 1] -> |2| for ++ and --, |0| for the others
    assert study.sign_flip_pvalue([1.0, 1.0]) == pytest.approx(0.5)
    assert math.isnan(study.sign_flip_pvalue([]))


def test_sign_flip_pvalue_random_patterns_beyond_exact():
    d = np.ones(25)  # 2^25 patterns: drawn at random, the observed one included
    p = study.sign_flip_pvalue(d, n_random=20_000, seed=1)
    assert 1 / 20_001 <= p < 1e-3
    assert study.sign_flip_pvalue(d, n_random=20_000, seed=1) == p  # seeded


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005, 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    adjusted = study.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    # NaN is left out of the family (m = 2) and stays NaN; values are capped at 1
    np.testing.assert_allclose(study.holm([0.01, np.nan, 0.02]), [0.02, np.nan, 0.02])
    np.testing.assert_allclose(study.holm([0.6, 0.7]), [1.0, 1.0])
    # Holm never lowers a p-value and keeps their order (ties may appear)
    p = np.array([0.2, 0.001, 0.04, 0.5, 0.03])
    adjusted = study.holm(p)
    assert (adjusted >= p).all()
    assert (np.diff(adjusted[np.argsort(p)]) >= 0).all()


def test_t_interval_by_hand():
    mean, lo, hi = study.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) x sd 1 / sqrt(3)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    mean, lo, hi = study.t_interval([5.0])
    assert mean == 5.0 and math.isnan(lo) and math.isnan(hi)
    assert study.t_interval([1.0, np.nan, 3.0])[0] == 2.0  # NaN seeds are left out


def test_paired_t_pvalue_by_hand():
    # d = [1, 2, 3]: t = 2 / (1 / sqrt 3) = sqrt 12, 2 df; the t(2) CDF is 1/2 + t / (2 sqrt(t^2 + 2))
    t = math.sqrt(12)
    expected = 2 * (0.5 - t / (2 * math.sqrt(t * t + 2)))
    assert study.paired_t_pvalue([1, 2, 3]) == pytest.approx(expected)
    assert math.isnan(study.paired_t_pvalue([2, 2, 2]))  # no spread: undefined


def test_bootstrap_t_test_shrinks_with_replicates():
    # Welch with equal sizes and spreads: t = 0.01 / sqrt(2 x 0.02^2 / n)
    p100 = study.bootstrap_t_test(0.80, 0.02, 100, 0.79, 0.02, 100)
    z = 0.01 / math.sqrt(2 * 0.02 ** 2 / 100)
    normal = math.erfc(z / math.sqrt(2))
    assert normal < p100 < 1.5 * normal  # t with 198 df: slightly above the normal tail
    # the same two classifiers look more "significant" with more replicates: the form's flaw
    assert study.bootstrap_t_test(0.80, 0.02, 1000, 0.79, 0.02, 1000) < p100 / 100
    assert study.bootstrap_t_test(0.8, 0.02, 100, 0.8, 0.02, 100) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- tables of one seed
SCHEMA = get_schema("fairgenmed")


def _cfg(**study_overrides):
    """study-smoke with Asian as the planted group (the constructed tables below plant it there)."""
    cfg = load_config("study-smoke", sets=["study.planted.group=Asian"])
    cfg["study"].update(study_overrides)
    return cfg


def _tables(fids: dict, es_fid: dict, auc: dict, es_auc: dict, overall: dict, kid: dict | None = None) -> dict:
    """Evaluation tables shaped like fairdiff.analysis.evaluate's, for race groups only."""
    gen, es, sem = [], [], []
    for method, per_group in fids.items():
        gen.append({"method": method, "attribute": "all", "group": "all", "metric": "fid", "value": overall[method],
                    "n_real": 90, "n_fake": 90, "boot_lo": overall[method] - 1, "boot_hi": overall[method] + 1})
        for group, value in per_group.items():
            n = 10 if group == "Asian" else 40
            gen.append({"method": method, "attribute": "race", "group": group, "metric": "fid", "value": value,
                        "n_real": n, "n_fake": n, "boot_lo": value - 2, "boot_hi": value + 2})
            if kid:
                gen.append({"method": method, "attribute": "race", "group": group, "metric": "kid",
                            "value": kid[method][group], "n_real": n, "n_fake": n, "boot_lo": 0, "boot_hi": 1})
        gen.append({"method": method, "attribute": "race", "group": "(equity-scaled)", "metric": "es_fid",
                    "value": es_fid[method], "n_real": 90, "n_fake": 90, "boot_lo": 0, "boot_hi": 1})
        es.append({"method": method, "attribute": "race", "metric": "es_fid", "value": es_fid[method]})
    for source in ["real", *fids]:
        a, e = auc.get(source, 0.9), es_auc.get(source, 0.8)
        sem += [{"source": source, "classifier": "small_cnn", "task": "glaucoma", "attribute": "all", "group": "",
                 "metric": "auc", "value": a, "boot_mean": a, "boot_std": 0.02, "n_valid": 100},
                {"source": source, "classifier": "small_cnn", "task": "glaucoma", "attribute": "race", "group": "",
                 "metric": "es_auc", "value": e, "boot_mean": e, "boot_std": 0.03, "n_valid": 100},
                {"source": source, "classifier": "small_cnn", "task": "md_severity", "attribute": "all", "group": "",
                 "metric": "auc", "value": 0.5, "boot_mean": 0.5, "boot_std": 0.02, "n_valid": 100}]
    return {"generation_metrics": pd.DataFrame(gen), "equity_scaled_generation": pd.DataFrame(es),
            "semantic_metrics": pd.DataFrame(sem)}


def _seed_tables(shift: float = 0.0, kid: bool = False) -> dict:
    fids = {"baseline": {"Asian": 30 + shift, "Black": 12, "White": 10},
            "fairbo": {"Asian": 25 + shift, "Black": 13, "White": 11}}
    kids = {"baseline": {"Asian": 0.5, "Black": 0.1, "White": 0.05},
            "fairbo": {"Asian": 0.3, "Black": 0.1, "White": 0.1}} if kid else None
    return _tables(fids, es_fid={"baseline": 40, "fairbo": 35}, auc={"baseline": 0.85, "fairbo": 0.83},
                   es_auc={"baseline": 0.7, "fairbo": 0.72}, overall={"baseline": 11, "fairbo": 12}, kid=kids)


def test_seed_metrics_known_values():
    cfg = _cfg()
    frame = study.seed_metrics(_seed_tables(kid=True), cfg, SCHEMA, ["baseline", "fairbo"])
    got = frame.set_index(["method", "metric"])["value"]
    assert got[("baseline", "fid_gap")] == 20 and got[("fairbo", "fid_gap")] == 14
    assert got[("baseline", "worst_fid")] == 30 and got[("fairbo", "planted_fid")] == 25
    assert got[("baseline", "fid")] == 11 and got[("fairbo", "es_fid")] == 35
    assert got[("baseline", "auc")] == 0.85 and got[("fairbo", "es_auc")] == 0.72  # the first task, glaucoma
    assert got[("baseline", "kid_gap")] == pytest.approx(0.45) and got[("fairbo", "worst_kid")] == 0.3
    specs = study.metric_specs(cfg, SCHEMA, _seed_tables(kid=True)["generation_metrics"])
    assert {"kid_gap", "worst_kid"} <= set(specs["metric"])
    assert "kid_gap" not in set(study.metric_specs(cfg, SCHEMA, _seed_tables()["generation_metrics"])["metric"])


def test_planted_group_is_checked_against_the_schema():
    assert study.planted_group(_cfg(), SCHEMA) == study.Planted("race", "Asian")
    with pytest.raises(ConfigError, match=r"study.planted.group: 'Martian' is not a group of race"):
        study.planted_group(_cfg(planted={"attribute": "race", "group": "Martian"}), SCHEMA)
    with pytest.raises(ConfigError, match=r"study.planted.attribute: 'age'"):
        study.planted_group(_cfg(planted={"attribute": "age", "group": "Asian"}), SCHEMA)


def test_study_keys_are_validated():
    with pytest.raises(ConfigError, match=r"study.sweep_exploitation.0: expected a value in \[0.0, 1.0\]"):
        load_config("study-smoke", sets=["study.sweep_exploitation=[1.5]"])
    with pytest.raises(ConfigError, match=r"study.seedz: unknown key; did you mean 'study.seeds'"):
        load_config("study-smoke", sets=["study.seedz=[1]"])


# ----------------------------------------------------------------------------- across seeds
def _per_seed() -> pd.DataFrame:
    rows = []
    for seed, (b_gap, f_gap, b_auc, f_auc) in enumerate([(10, 8, 0.8, 0.7), (12, 11, 0.8, 0.75), (14, 11, 0.8, 0.8)]):
        rows += [{"seed": seed, "method": "baseline", "metric": "fid_gap", "value": b_gap},
                 {"seed": seed, "method": "fairbo", "metric": "fid_gap", "value": f_gap},
                 {"seed": seed, "method": "baseline", "metric": "auc", "value": b_auc},
                 {"seed": seed, "method": "fairbo", "metric": "auc", "value": f_auc}]
    return pd.DataFrame(rows)


SPECS = pd.DataFrame([("fid_gap", "FID gap (race)", True, "generation"), ("auc", "glaucoma AUC", False, "classifier")],
                     columns=["metric", "label", "lower_is_better", "family"])


def test_paired_effects_known_answers():
    effects = study.paired_effects(_per_seed(), SPECS).set_index("metric")
    gap = effects.loc["fid_gap"]  # differences -2, -1, -3
    assert gap["diff"] == pytest.approx(-2.0) and gap["better"] and gap["n_better"] == 3
    half = 4.302652729911275 * 1.0 / math.sqrt(3)
    assert (gap["lo"], gap["hi"]) == pytest.approx((-2 - half, -2 + half))
    assert gap["p_signflip"] == pytest.approx(0.25)
    auc = effects.loc["auc"]  # differences -0.1, -0.05, 0: higher is better, so worse
    assert auc["diff"] == pytest.approx(-0.05) and not auc["better"] and auc["n_better"] == 0
    assert auc["p_signflip"] == pytest.approx(0.5)  # 0 gets either sign: |sum| >= 0.15 in 4 of 8 patterns
    # Holm across the method's two metrics: 2 x 0.25 = 0.5, then max(0.5, 1 x 0.5)
    assert (gap["p_holm"], auc["p_holm"]) == pytest.approx((0.5, 0.5))


def test_method_means_and_planted_summary():
    means = study.method_means(_per_seed()).set_index(["method", "metric"])
    assert means.loc[("baseline", "fid_gap"), "mean"] == 12 and means.loc[("baseline", "fid_gap"), "sd"] == 2
    assert means.loc[("fairbo", "fid_gap"), "n_seeds"] == 3
    group = study.planted_group(_cfg(), SCHEMA)
    planted = pd.concat([study.planted_rows(_seed_tables(shift)["generation_metrics"], group).assign(seed=seed)
                         for seed, shift in enumerate([0.0, -15.0])])
    summary = study.planted_summary(planted).set_index("seed")
    # seed 0: Asian 30 vs worst other 12, intervals (+-2) apart; seed 1: Asian 15, above 12 but overlapping
    assert summary.loc[0, "excess"] == 18 and summary.loc[0, "is_worst"] and summary.loc[0, "separated"]
    assert summary.loc[1, "excess"] == 3 and summary.loc[1, "is_worst"] and not summary.loc[1, "separated"]


def test_sweep_cells_known_answers():
    per_seed = pd.DataFrame({"metric": "fid", "window": [10, 10, 30, 30], "exploitation": 0.95, "seed": [0, 1, 0, 1],
                             "gap_baseline": [10.0, 12.0, 10.0, 12.0], "gap_fairbo": [8.0, 8.0, 11.0, 12.0],
                             "overall_baseline": 20.0, "overall_fairbo": [21.0, 23.0, 20.0, 20.0]})
    per_seed["reduction"] = per_seed["gap_baseline"] - per_seed["gap_fairbo"]
    cells = study.sweep_cells(per_seed).set_index("window")
    assert cells.loc[10, "reduction"] == 3 and cells.loc[30, "reduction"] == -0.5
    assert cells.loc[10, "overall_change"] == 2 and cells.loc[10, "p_signflip"] == pytest.approx(0.5)
    assert np.isfinite(cells.loc[10, "lo"]) and cells.loc[10, "n_seeds"] == 2


# ----------------------------------------------------------------------------- folders and the runner
def test_seed_and_sweep_folders(tmp_path):
    a = study.seed_context("study-smoke", 0, root=tmp_path)
    b = study.seed_context("study-smoke", 1, root=tmp_path)
    assert a.layout.root == tmp_path / "study-smoke" / "seed-0" / "fairgenmed-study-smoke"
    assert b.layout.root != a.layout.root and b.cfg["seed"] == 1
    assert a.cfg["data"]["root"] == b.cfg["data"]["root"]  # the same data for every seed
    same = study.seed_context("study-smoke", 0, root=tmp_path, sweep=(a.cfg["fbp"]["window"], 0.95))
    assert same.layout.root == a.layout.root  # the profile's own (W, r) is the main fairbo run
    cell = study.seed_context("study-smoke", 0, root=tmp_path, sweep=(6, 0.8))
    assert cell.layout.root == tmp_path / "study-smoke" / "sweep" / "W6-r0.8" / "seed-0" / "fairgenmed-study-smoke"
    assert (cell.cfg["fbp"]["window"], cell.cfg["fbp"]["exploitation"]) == (6, 0.8)


def test_run_study_bookkeeping(tmp_path, monkeypatch, capsys):
    """Two seeds, two methods, the stages replaced by constructed tables: every (seed, method) goes
    through train, sample and evaluate once, progress is printed per run, and the results written
    are the paired statistics of the constructed numbers."""
    from fairdiff import analysis, stages

    calls = []
    monkeypatch.setattr(stages, "base", lambda ctx, progress=False: None)
    monkeypatch.setattr(stages, "trained", lambda ctx, m, progress=False: calls.append(("train", ctx.cfg["seed"], m)))
    monkeypatch.setattr(stages, "sampled",
                        lambda ctx, m, split, progress=False: calls.append((split, ctx.cfg["seed"], m)))
    monkeypatch.setattr(stages, "generation_table", lambda ctx, m: None)
    monkeypatch.setattr(stages, "semantic_table", lambda ctx, m: None)
    monkeypatch.setattr(analysis, "evaluate", lambda ctx, methods: _seed_tables(shift=ctx.cfg["seed"]))
    result = study.run_study("study-smoke", sets=["study.planted.group=Asian"], root=tmp_path)
    assert sorted(calls) == sorted((s, seed, m) for s in ("train", "test", "train") for seed in (0, 1)
                                   for m in ("baseline", "fairbo"))
    out = capsys.readouterr().out
    assert "seed 1/2 (seed=0) · baseline" in out and "seed 2/2 (seed=1) · fairbo" in out
    # Asian minus the worst other group: 30 - 12 and 31 - 12
    assert "planted gap check (fid, baseline): Asian minus the worst other race group +18.5 [" in out
    gap = result.paired_effects.set_index("metric").loc["fid_gap"]
    assert gap["diff"] == pytest.approx(-6.0) and gap["n_seeds"] == 2 and gap["p_signflip"] == pytest.approx(0.5)
    for name in study.RESULT_FILES:
        assert (tmp_path / "study-smoke" / "results" / f"{name}.csv").is_file()
    assert set(result.run_times["stage"]) == {"base", "train", "sample", "evaluate"}
    again = study.load_results("study-smoke", sets=["study.planted.group=Asian"], root=tmp_path)
    pd.testing.assert_frame_equal(again.paired_effects, pd.read_csv(tmp_path / "study-smoke" / "results" /
                                                                    "paired_effects.csv"))
    table = study.readme_table(again)
    assert "| FID gap (race) (lower is better) |" in table and "fairbo − baseline" in table
    assert "-6 [" in table  # the paired difference with its interval
    text = study.reading(again)
    assert "Planted gap" in text and "Does fairbo narrow the gap?" in text
    cells = pd.DataFrame({"metric": "fid", "window": [10, 30], "exploitation": 0.95, "n_seeds": 3,
                          "reduction": [2.0, -1.0], "lo": [0.5, -3.0], "hi": [3.5, 1.0], "p_signflip": 0.25,
                          "overall_change": [1.0, 0.0], "overall_change_lo": 0.0, "overall_change_hi": 2.0})
    with_sweep = study.readme_table(again, cells)
    assert "| W | r = 0.95 |" in with_sweep and "| 10 | +2 [0.5, 3.5]; overall FID +1 |" in with_sweep
    assert "largest mean reduction is +2 [0.5, 3.5] at W = 10, r = 0.95; 1 of 2 cells" in study.reading(again, cells)


def test_load_results_says_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="run the study first"):
        study.load_results("study-smoke", root=tmp_path)


def test_final_sigmas_average_the_end_of_training(tmp_path):
    steps = np.arange(1, 21)
    pd.DataFrame({"step": steps, "loss": 0.5, "sigma[race=Black]": np.where(steps > 18, 0.2, 1.0),
                  "sigma[race=White]": np.where(steps > 19, 0.4, 0.6)}).to_csv(tmp_path / "metrics.csv", index=False)
    got = study.final_sigmas(tmp_path).set_index("group")["sigma"]  # the last 10 %: steps 19 and 20
    assert got["race=Black"] == pytest.approx(0.2) and got["race=White"] == pytest.approx(0.5)
    assert study.final_sigmas(tmp_path / "missing").empty
