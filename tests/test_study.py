"""The study's statistics on constructed numbers with known answers, the tables read from one
seed, and the runner's bookkeeping with the stages replaced by constructed tables (the real
end-to-end path runs in notebook 06 under nbval, on the study-smoke profile, and in
tests/test_study_parallel.py)."""
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
PLANTED = study.Planted("race", "Asian", ("Asian", "Black", "White"))


def _cfg(**study_overrides):
    """study-smoke with Asian as the planted group (the constructed tables below plant it there)."""
    cfg = load_config("study-smoke", sets=["study.planted.group=Asian"])
    cfg["study"].update(study_overrides)
    return cfg


def _gen(arm: str, per_group: dict, overall: float, kid: dict | None = None, matched: dict | None = None) -> list:
    rows = [{"method": arm, "attribute": "all", "group": "all", "metric": "fid", "value": overall,
             "n_real": 90, "n_fake": 90, "boot_lo": overall - 1, "boot_hi": overall + 1}]
    for metric, values in (("fid", per_group), ("kid", kid), ("fid_matched", matched)):
        if values and metric != "fid":
            rows.append({"method": arm, "attribute": "all", "group": "all", "metric": metric,
                         "value": float(np.mean(list(values.values()))), "n_real": 90, "n_fake": 90})
        for group, value in (values or {}).items():
            n = 10 if group == "Asian" else (60 if group == "White" else 20)
            rows.append({"method": arm, "attribute": "race", "group": group, "metric": metric, "value": value,
                         "n_real": n, "n_fake": n, "boot_lo": value - 2, "boot_hi": value + 2})
    rows.append({"method": arm, "attribute": "race", "group": "(equity-scaled)", "metric": "es_fid",
                 "value": 2 * overall, "n_real": 90, "n_fake": 90, "boot_lo": 0, "boot_hi": 1})
    return [dict(r, extractor="domain") for r in rows]


def _sem(arm: str, auc: float, es_auc: float) -> list:
    return [{"source": arm, "classifier": "small_cnn", "task": "glaucoma", "attribute": "all", "group": "",
             "metric": "auc", "value": auc, "boot_mean": auc, "boot_std": 0.02, "n_valid": 100},
            {"source": arm, "classifier": "small_cnn", "task": "glaucoma", "attribute": "race", "group": "",
             "metric": "es_auc", "value": es_auc, "boot_mean": es_auc, "boot_std": 0.03, "n_valid": 100},
            {"source": arm, "classifier": "small_cnn", "task": "md_severity", "attribute": "all", "group": "",
             "metric": "auc", "value": 0.5, "boot_mean": 0.5, "boot_std": 0.02, "n_valid": 100}]


def _ref(arm: str, planted_excess: float) -> list:
    """group_reference_metrics rows: every race group at matched n, minus the majority (White)."""
    rows = []
    for group, fid in (("Asian", 20 + planted_excess), ("Black", 21.0), ("White", 20.0)):
        rows += [{"method": arm, "attribute": "race", "group": group, "metric": "fid", "value": fid, "lo": fid - 1,
                  "hi": fid + 1, "n_real": 8, "n_fake": 8, "majority": "White"},
                 {"method": arm, "attribute": "race", "group": group, "metric": "fid_minus_majority",
                  "value": fid - 20, "lo": fid - 22, "hi": fid - 18, "n_real": 8, "n_fake": 8, "majority": "White"},
                 {"method": arm, "attribute": "race", "group": group, "metric": "kid_minus_majority",
                  "value": (fid - 20) / 100, "lo": 0, "hi": 1, "n_real": 8, "n_fake": 8, "majority": "White"}]
    return rows


def _seed_tables(with_reference: bool = True) -> dict:
    from fairdiff.analysis import equity

    gen = pd.DataFrame(_gen("baseline", {"Asian": 30, "Black": 12, "White": 10}, 11,
                            kid={"Asian": 0.5, "Black": 0.1, "White": 0.05},
                            matched={"Asian": 28, "Black": 12, "White": 11})
                       + _gen("fairbo-x", {"Asian": 25, "Black": 13, "White": 11}, 12,
                              kid={"Asian": 0.3, "Black": 0.1, "White": 0.1},
                              matched={"Asian": 24, "Black": 13, "White": 12}))
    sem = pd.DataFrame(_sem("baseline", 0.85, 0.7) + _sem("fairbo-x", 0.83, 0.72))
    ref = pd.DataFrame(_ref("baseline", 9.0) + _ref("fairbo-x", 6.0)) if with_reference else None
    return {"generation_metrics": gen, "equity_scaled_generation": equity(gen, ["baseline", "fairbo-x"]),
            "semantic_metrics": sem, "group_reference_metrics": ref}


def test_seed_metrics_known_values():
    frame = study.seed_metrics(_seed_tables(), PLANTED, "glaucoma", ["baseline", "fairbo-x"], "fid_minus_majority")
    got = frame.set_index(["arm", "metric"])["value"]
    assert got[("baseline", "fid_gap")] == 20 and got[("fairbo-x", "fid_gap")] == 14
    assert got[("baseline", "worst_fid")] == 30 and got[("fairbo-x", "planted_fid")] == 25
    assert got[("baseline", "fid")] == 11 and got[("baseline", "auc")] == 0.85  # the first task, glaucoma
    assert got[("fairbo-x", "es_auc")] == 0.72
    assert got[("baseline", "kid_gap")] == pytest.approx(0.45) and got[("fairbo-x", "worst_kid")] == 0.3
    # the primary endpoint: the planted group's row of the group-sized evaluation
    assert got[("baseline", "endpoint")] == 9.0 and got[("fairbo-x", "endpoint")] == 6.0
    assert got[("fairbo-x", "kid_minus_majority")] == pytest.approx(0.06)
    assert set(frame["endpoint_source"]) == {"fid_minus_majority"}
    kid = study.seed_metrics(_seed_tables(), PLANTED, "glaucoma", ["baseline"], "kid_minus_majority")
    assert kid.set_index("metric").loc["endpoint", "value"] == pytest.approx(0.09)
    specs = study.metric_specs(PLANTED, "glaucoma", _seed_tables()["generation_metrics"],
                               _seed_tables()["group_reference_metrics"])
    assert {"kid_gap", "worst_kid", "fid_minus_majority", "kid_minus_majority"} <= set(specs["metric"])
    assert "fid_minus_majority" not in set(study.metric_specs(PLANTED, "glaucoma")["metric"])


def test_endpoint_falls_back_to_the_size_matched_fid_without_the_group_sized_evaluation():
    frame = study.seed_metrics(_seed_tables(with_reference=False), PLANTED, "glaucoma", ["baseline", "fairbo-x"],
                               "fid_minus_majority")
    got = frame.set_index(["arm", "metric"])["value"]
    # Asian minus the largest test group (White, n 60), size-matched FID
    assert got[("baseline", "endpoint")] == 28 - 11 and got[("fairbo-x", "endpoint")] == 24 - 12
    assert set(frame["endpoint_source"]) == {"fid_matched_minus_majority"}
    gen = _seed_tables()["generation_metrics"]
    plain = gen[gen["metric"] != "fid_matched"]
    assert study.tables.fallback_endpoint(plain, "baseline", PLANTED) == (30 - 10, "fid_minus_majority")


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
    with pytest.raises(ConfigError, match=r"study.workers: expected a value >= 1"):
        load_config("study-smoke", sets=["study.workers=0"])
    with pytest.raises(ConfigError, match=r"study.analysis.endpoint: expected one of fid_minus_majority"):
        load_config("study-smoke", sets=["study.analysis.endpoint=fid_gap"])
    with pytest.raises(ConfigError, match=r"study.analysis.equivalence_margin: expected a value > 0"):
        load_config("study-smoke", sets=["study.analysis.equivalence_margin=0"])
    with pytest.raises(ConfigError, match=r"study.arms: expected a mapping"):
        load_config("study-smoke", sets=["study.arms=[baseline]"])


# ----------------------------------------------------------------------------- across seeds
def _per_seed() -> pd.DataFrame:
    rows = []
    for seed, (b_gap, f_gap, b_auc, f_auc) in enumerate([(10, 8, 0.8, 0.7), (12, 11, 0.8, 0.75), (14, 11, 0.8, 0.8)]):
        rows += [{"seed": seed, "arm": "baseline", "metric": "fid_gap", "value": b_gap},
                 {"seed": seed, "arm": "fairbo", "metric": "fid_gap", "value": f_gap},
                 {"seed": seed, "arm": "baseline", "metric": "auc", "value": b_auc},
                 {"seed": seed, "arm": "fairbo", "metric": "auc", "value": f_auc}]
    return pd.DataFrame(rows)


SPECS = pd.DataFrame([("fid_gap", "FID gap (race)", True, "generation"), ("auc", "glaucoma AUC", False, "classifier")],
                     columns=["metric", "label", "lower_is_better", "family"])


def test_secondary_effects_known_answers():
    effects = study.secondary_effects(_per_seed(), SPECS).set_index("metric")
    gap = effects.loc["fid_gap"]  # differences -2, -1, -3
    assert gap["diff"] == pytest.approx(-2.0) and gap["better"] and gap["n_better"] == 3
    half = 4.302652729911275 * 1.0 / math.sqrt(3)
    assert (gap["lo"], gap["hi"]) == pytest.approx((-2 - half, -2 + half))
    assert gap["p_signflip"] == pytest.approx(0.25) and gap["family"] == "secondary"
    auc = effects.loc["auc"]  # differences -0.1, -0.05, 0: higher is better, so worse
    assert auc["diff"] == pytest.approx(-0.05) and not auc["better"] and auc["n_better"] == 0
    assert auc["p_signflip"] == pytest.approx(0.5)  # 0 gets either sign: |sum| >= 0.15 in 4 of 8 patterns
    assert "p_holm" not in effects.columns  # secondary metrics are not adjusted: Holm is for the primary family


def test_arm_means_and_planted_summary():
    means = study.arm_means(_per_seed()).set_index(["arm", "metric"])
    assert means.loc[("baseline", "fid_gap"), "mean"] == 12 and means.loc[("baseline", "fid_gap"), "sd"] == 2
    assert means.loc[("fairbo", "fid_gap"), "n_seeds"] == 3
    gen = _seed_tables()["generation_metrics"]
    closer = pd.DataFrame(_gen("baseline", {"Asian": 15, "Black": 12, "White": 10}, 11))
    planted = pd.concat([study.planted_rows(gen, PLANTED).assign(seed=0),
                         study.planted_rows(closer, PLANTED).assign(seed=1)])
    summary = study.planted_summary(planted[planted["metric"] == "fid"]).set_index("seed")
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


def test_per_seed_round_trips_through_its_wide_file():
    frame = study.seed_metrics(_seed_tables(), PLANTED, "glaucoma", ["baseline", "fairbo-x"], "fid_minus_majority")
    long = pd.concat([frame.assign(seed=0), frame.assign(seed=1, value=frame["value"] + 1)], ignore_index=True)
    wide = study.tables.wide_per_seed(long)
    assert len(wide) == 4 and {"endpoint", "fid_gap", "endpoint_source"} <= set(wide.columns)
    back = study.tables.long_per_seed(wide)
    key = ["arm", "seed", "metric"]
    pd.testing.assert_frame_equal(back.sort_values(key).reset_index(drop=True)[long.columns],
                                  long.sort_values(key).reset_index(drop=True), check_dtype=False)


# ----------------------------------------------------------------------------- the runner
def _arm_of(ctx) -> str:
    return ctx.layout.root.parent.name  # runs/.../seed-<k>/arms/<arm>/<dataset>-<profile>


ENDPOINTS = {"baseline": [10.0, 12.0], "fairbo": [8.0, 9.0], "fixed-0.5": [11.0, 12.0]}


def _stub_stages(monkeypatch, calls: list) -> None:
    """The stages replaced by constructed tables: per arm and seed a known endpoint; fairbo's
    trained run gets a metrics.csv with a sigma trace."""
    from fairdiff import prepare, stages
    from fairdiff.study import diagnostics

    for name in ("dataset", "reference_records", "pretrained", "domain_encoder"):
        monkeypatch.setattr(stages, name, lambda ctx, progress=False: None)
    monkeypatch.setattr(stages, "base", lambda ctx, progress=False: calls.append(("base", ctx.cfg["seed"])))
    monkeypatch.setattr(prepare, "training_cache", lambda *a, **k: None)

    def trained(ctx, method, progress=False):
        calls.append(("train", ctx.cfg["seed"], _arm_of(ctx), method))
        run = ctx.layout.method(method)
        if method == "fairbo":
            run.mkdir(parents=True, exist_ok=True)
            steps = np.arange(1, 10)
            rng = np.random.default_rng(ctx.cfg["seed"])
            log = {"step": steps, "loss": 0.5, "y": rng.normal(size=9), "loss[race=Asian]": 0.4,
                   "loss[race=Black]": np.where(steps % 3 == 0, np.nan, 0.5)}
            log.update({f"sigma[race={g}]": rng.uniform(size=9) for g in ("Asian", "Black", "White")})
            pd.DataFrame(log).to_csv(run / "metrics.csv", index=False)
        return run

    monkeypatch.setattr(stages, "trained", trained)
    monkeypatch.setattr(stages, "sampled", lambda ctx, m, split, progress=False: calls.append(
        (split, ctx.cfg["seed"], _arm_of(ctx))))
    seed_shift = {0: 0.0, 1: 1.0}
    monkeypatch.setattr(stages, "generation_table", lambda ctx, m: pd.DataFrame(
        _gen(m, {"Asian": 30 + seed_shift[ctx.cfg["seed"]], "Black": 12, "White": 10}, 11)))
    monkeypatch.setattr(stages, "semantic_table", lambda ctx, m: pd.DataFrame(_sem(m, 0.8, 0.7)))
    monkeypatch.setattr(stages, "group_reference_table", lambda ctx, m: pd.DataFrame(
        _ref(m, ENDPOINTS[_arm_of(ctx)][ctx.cfg["seed"]])))
    monkeypatch.setattr(stages, "convergence", lambda ctx, method, progress=False: pd.DataFrame(
        {"phase": ["pretrain", "finetune", "finetune"], "step": [5, 0, 6], "fid": [3.0, 2.0, 1.5], "method": method}))
    monkeypatch.setattr(diagnostics, "recovery_curve", lambda **kw: pd.DataFrame(
        {"noise_rel": [0.0, 0.1, 1.0] * 2, "arm": ["bo"] * 3 + ["drift"] * 3, "y_r2": [0.9, 0.5, 0.1] * 2,
         "final_distance": 0.5, "steps": kw["steps"]}))


def test_run_study_bookkeeping(tmp_path, monkeypatch, capsys):
    """Two seeds, three arms, the stages replaced by constructed tables: the seed's shared work
    runs before its arms, every (seed, arm) goes through train, sample and evaluate once in its own
    folder, progress is printed per run, and the results written are the pre-registered statistics
    of the constructed numbers."""
    calls = []
    _stub_stages(monkeypatch, calls)
    sets = ["study.planted.group=Asian", "pretrain.steps=5"]  # pretraining on: the convergence curve is drawn
    result = study.run_study("study-smoke", sets=sets, arms=["baseline", "fairbo", "fixed-0.5"], root=tmp_path,
                             workers=1)
    trains = [c for c in calls if c[0] == "train" and len(c) == 4]  # (sampling the train split: 3 entries)
    assert sorted(trains) == sorted(("train", s, a, m) for s in (0, 1) for a, m in
                                    (("baseline", "baseline"), ("fairbo", "fairbo"), ("fixed-0.5", "random")))
    assert calls.index(("base", 1)) < calls.index(("train", 1, "baseline", "baseline"))
    assert sorted(c for c in calls if c[0] == "test") == sorted(("test", s, a) for s in (0, 1)
                                                                 for a in ("baseline", "fairbo", "fixed-0.5"))
    out = capsys.readouterr().out
    assert "study · fairbo seed 1 · " in out and " done · " in out and "min left" in out
    # the seed's base and feature extractor are the arms' (links)
    arm_root = tmp_path / "study-smoke" / "seed-1" / "arms" / "fairbo" / "fairgenmed-study-smoke"
    assert (arm_root / "base").is_symlink()
    assert (arm_root / "base").resolve() == (tmp_path / "study-smoke" / "seed-1" / "fairgenmed-study-smoke" / "base")
    # primary: fairbo - baseline = -2, -3 over a gap of 11 on average; Holm over the two primary pairs
    primary = result.primary.set_index(["arm", "against"])
    fb = primary.loc[("fairbo", "baseline")]
    assert fb["pct"] == pytest.approx(100 * -2.5 / 11) and fb["family"] == "primary"
    assert primary.loc[("fairbo", "fixed-0.5"), "family"] == "primary"
    assert primary.loc[("fixed-0.5", "baseline"), "family"] == "other arms"
    assert set(result.per_seed["endpoint_source"]) == {"fid_minus_majority"}
    assert "primary · fairbo vs baseline (primary): -22.7 [" in out
    # the BO diagnostics and sigma tables of the fairbo runs; the recovery curve with the measured sd of y
    assert list(result.bo_runs["arm"]) == ["fairbo", "fairbo"] and "missing[race=Black]" in result.bo_runs
    assert result.bo_runs["missing_planted"].tolist() == [0.0, 0.0]  # Asian is never missing here
    assert set(result.sigma_summary["group"]) == {"race=Asian", "race=Black", "race=White"}
    assert "trace_range_equiv" in result.bo_recovery and "matched_noise_rel" in result.bo_pooled
    assert set(result.arms["arm"]) == {"baseline", "fairbo", "fixed-0.5"}
    fixed = result.arms.set_index("arm").loc["fixed-0.5"]
    assert (fixed["planted_sigma"], fixed["others_sigma"]) == (0.5, 0.5)
    for name in study.RESULT_FILES:
        assert (tmp_path / "study-smoke" / "results" / f"{name}.csv").is_file()
    assert {"base", "encoder", "caches", "train", "sample", "evaluate", "reference",
            "convergence"} <= set(result.run_times["stage"])
    assert result.convergence["seed"].tolist() == [0, 0, 0] and set(result.convergence["method"]) == {"baseline"}
    again = study.load_results("study-smoke", sets=sets, root=tmp_path)
    pd.testing.assert_frame_equal(again.primary, pd.read_csv(tmp_path / "study-smoke" / "results" / "primary.csv"))
    text = study.plain_tables(again)
    assert "fairbo vs baseline" in text and "non-inferiority" in text and "Secondary metrics" in text
    assert "-22.7 [" in text


def test_run_study_needs_the_reference_arm(tmp_path, monkeypatch):
    _stub_stages(monkeypatch, [])
    with pytest.raises(ConfigError, match=r"study.analysis.reference: 'baseline' is not among the arms run"):
        study.run_study("study-smoke", arms=["fairbo"], root=tmp_path)
    with pytest.raises(ConfigError, match=r"arms nope: not in study.arms"):
        study.run_study("study-smoke", arms=["baseline", "nope"], root=tmp_path)
    with pytest.raises(ConfigError, match=r"workers: expected at least 1"):
        study.run_study("study-smoke", arms=["baseline"], root=tmp_path, workers=0)


def test_load_results_says_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="run the study first"):
        study.load_results("study-smoke", root=tmp_path)


def test_export_copies_the_tables_with_their_provenance(tmp_path, monkeypatch):
    import json

    _stub_stages(monkeypatch, [])
    sets = ["study.planted.group=Asian"]
    study.run_study("study-smoke", sets=sets, arms=["baseline", "fairbo"], root=tmp_path / "runs", workers=1)
    out = study.export("study-smoke", sets=sets, root=tmp_path / "runs", dest=tmp_path / "figures")
    assert out == tmp_path / "figures" / "study-smoke"
    record = json.loads((out / "provenance.json").read_text())
    assert record["profile"] == "study-smoke" and record["overrides"] == sets
    assert {"commit", "exported_utc", "machine_at_export", "runs", "sha256"} <= set(record)
    assert record["runs"]["threads_per_worker"] == 1
    for name in study.RESULT_FILES:
        assert (out / f"{name}.csv").read_bytes() == (tmp_path / "runs" / "study-smoke" / "results" /
                                                      f"{name}.csv").read_bytes()
    figures = tmp_path / "fresh" / "study-smoke" / "fairgenmed"  # notebook 06 drew its figures there first
    figures.mkdir(parents=True)
    (figures / "06_primary_forest.png").write_bytes(b"png")
    assert study.export("study-smoke", sets=sets, root=tmp_path / "runs", dest=tmp_path / "fresh").is_dir()
    assert (figures / "06_primary_forest.png").read_bytes() == b"png"
    stranger = tmp_path / "other" / "study-smoke"
    stranger.mkdir(parents=True)
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="without provenance.json"):
        study.export("study-smoke", sets=sets, root=tmp_path / "runs", dest=tmp_path / "other")


def test_a_failed_job_is_raised_in_the_main_process(monkeypatch, capsys):
    """A job's exception comes back picklable (its own class when it round-trips, else a
    RuntimeError naming it) and :func:`execute` raises it after printing the worker's traceback."""
    from fairdiff.study import runner

    def refuse(plan, job):
        raise ConfigError("study.arms.x: refused")

    def broken(plan, job):
        raise DataError("somewhere.csv", "id", "an id", "nothing")  # its __init__ does not take one message

    monkeypatch.setitem(runner.RUNNERS, "seed", refuse)
    monkeypatch.setitem(runner.RUNNERS, "recovery", broken)
    out = runner.run_job(None, runner.Job("seed", 0))
    assert isinstance(out["error"], ConfigError) and "refuse" in out["traceback"]
    out = runner.run_job(None, runner.Job("recovery"))
    assert type(out["error"]) is RuntimeError and "DataError: somewhere.csv" in str(out["error"])
    with pytest.raises(ConfigError, match="refused"):
        runner.execute(None, [runner.Job("seed", 0), runner.Job("arm", 0, study.Arm("a", "baseline"))], workers=1)
    assert "study: seed 0 shared work failed:" in capsys.readouterr().out


def test_measured_noise_level_interpolates_in_log_noise():
    curve = pd.DataFrame({"noise_rel": [0.0, 0.1, 1.0, 0.1, 1.0], "arm": ["bo", "bo", "bo", "drift", "drift"],
                          "y_r2": [0.9, 0.5, 0.1, 0.0, 0.0]})
    assert study.tables.measured_noise_level(curve, 0.3) == pytest.approx(math.sqrt(0.1))  # halfway in log noise
    assert study.tables.measured_noise_level(curve, 0.5) == pytest.approx(0.1)
    assert np.isnan(study.tables.measured_noise_level(curve, 0.05))  # below the curve: outside its range
