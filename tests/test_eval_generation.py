"""The generation table from features: every value equals its stand-alone function, the jackknife
equals the generic one, size matching and equity summaries by hand, the memorisation rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairdiff.evaluate import (calibrated_mifid_eps, equity_scaled, fid_from_features, kid_from_features, prdc,
                               two_sample_jackknife)
from fairdiff.evaluate import metrics as M
from fairdiff.evaluate.features import equity_table
from fairdiff.evaluate.generation import (ES_GROUP, GAP_GROUP, GENERATION_COLUMNS, MATCHED_ALL,
                                          generation_metrics_from_features)
from fairdiff.evaluate.groups import group_masks
from fairdiff.evaluate.kid import subset_orders
from fairdiff.schema import FAIRGENMED

ATTRIBUTES = ["race", "gender"]
N, D = 120, 12


def toy(seed: int = 0, n: int = N, shift: float = 0.3):
    """Real and generated features (non-negative, group-dependent) and their metadata (race 10/30/60 %)."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"race": rng.choice(3, n, p=[0.1, 0.3, 0.6]), "gender": rng.integers(0, 2, n)})
    offset = meta["race"].to_numpy()[:, None] * 0.5
    real = np.abs(rng.normal(size=(n, D)) + offset)
    fake = np.abs(rng.normal(size=(n, D)) * 1.2 + offset + shift)
    train = np.abs(rng.normal(size=(2 * n, D)) + rng.choice(3, 2 * n)[:, None] * 0.5)
    logits = rng.normal(size=(n, 5)) * 3
    return real, fake, logits, train, meta


def table_of(real, fake, logits, meta, train=None, **settings):
    masks = group_masks(meta, FAIRGENMED, ATTRIBUTES)
    settings = {"n_boot": 5, "min_group_size": 20, "seed": 3, **settings}
    return generation_metrics_from_features(real, fake, logits, masks, masks, "toy", train, **settings)


@pytest.fixture(scope="module")
def toy_table():
    real, fake, logits, train, meta = toy()
    table = table_of(real, fake, logits, meta, train, kid_subset_size=50, kid_subsets=4)
    return table, (real, fake, logits, train, meta)


def row(table, attribute, group, metric):
    found = table[(table.attribute == attribute) & (table.group == group) & (table.metric == metric)]
    assert len(found) == 1, (attribute, group, metric)
    return found.iloc[0]


def test_values_equal_the_stand_alone_functions(toy_table):
    table, (real, fake, logits, train, meta) = toy_table
    assert list(table.columns) == GENERATION_COLUMNS
    for attribute, group, sel in (("all", "all", np.ones(N, bool)), ("race", "Black", meta["race"].to_numpy() == 1)):
        r, f = real[sel], fake[sel]
        assert row(table, attribute, group, "fid").value == pytest.approx(fid_from_features(r, f), rel=1e-9)
        kid_mean, kid_std = kid_from_features(r, f, subset_size=50, n_subsets=4, seed=3)
        assert row(table, attribute, group, "kid").value == pytest.approx(kid_mean, rel=1e-9)
        assert row(table, attribute, group, "kid_std").value == pytest.approx(kid_std, rel=1e-9)
        for metric, value in prdc(r, f, k=5).items():
            assert row(table, attribute, group, metric).value == pytest.approx(value)
        eps = calibrated_mifid_eps(real, train, 0.01)
        assert row(table, attribute, group, "mifid").value == pytest.approx(M.mifid_from_features(r, f, eps), rel=1e-9)
        assert row(table, attribute, group, "is").value == pytest.approx(
            M.inception_score_from_logits(logits[sel], 10, 3)[0])


def test_jackknife_rows_equal_the_generic_jackknife_and_contain_their_estimate(toy_table):
    table, (real, fake, *_rest) = toy_table
    jk = two_sample_jackknife(fid_from_features, real, fake, n_blocks=20, seed=3)
    fid, debiased = row(table, "all", "all", "fid"), row(table, "all", "all", "fid_debiased")
    assert fid.boot_std == pytest.approx(jk.se, rel=1e-7) and debiased.value == pytest.approx(jk.debiased, rel=1e-7)
    assert (fid.boot_lo, fid.boot_hi) == pytest.approx(jk.interval(0.95), rel=1e-7)
    assert (debiased.boot_lo, debiased.boot_hi) == pytest.approx(jk.interval(0.95, debiased=True), rel=1e-7)
    assert fid.n_valid == 40 and fid.interval == "jackknife" and debiased.interval == "jackknife, bias-corrected"
    jackknifed = table[table.interval.str.startswith("jackknife") & table.value.notna()]
    assert len(jackknifed) > 50
    assert ((jackknifed.boot_lo <= jackknifed.value) & (jackknifed.value <= jackknifed.boot_hi)).all()
    assert (jackknifed.boot_mean == jackknifed.value).all()


def test_size_matched_rows(toy_table):
    table, (real, fake, _, _, meta) = toy_table
    race = meta["race"].to_numpy()
    smallest_id = int(np.argmin(np.bincount(race)))
    m, smallest = int(np.bincount(race)[smallest_id]), FAIRGENMED.attribute("race").groups[smallest_id]
    matched = table[table.size_matched]
    assert set(matched.metric) == {"fid_matched", "kid_matched", "es_fid_matched", "es_kid_matched",
                                   "fid_matched_gap", "kid_matched_gap"}
    assert (matched[matched.attribute == "race"].n_real == m).all()
    # the smallest group is compared whole: its matched values are its plain ones
    assert row(table, "race", smallest, "fid_matched").value == pytest.approx(row(table, "race", smallest, "fid").value)
    sel = race == smallest_id
    assert row(table, "race", smallest, "kid_matched").value == pytest.approx(
        kid_from_features(real[sel], fake[sel], 10 ** 6, 1)[0])
    # the whole sets subsampled to m: the mean FID over the subsets drawn by the table's seeds
    orders_r, orders_f = subset_orders(N, N, 20, 3 + 1)  # seed + 1 + attribute index (race is first)
    expected = np.mean([fid_from_features(real[r[:m]], fake[f[:m]]) for r, f in zip(orders_r, orders_f)])
    assert row(table, "race", MATCHED_ALL, "fid_matched").value == pytest.approx(expected, rel=1e-8)


def test_floor_leaves_small_groups_out_of_matching():
    real, fake, logits, _, meta = toy(1)
    sizes = np.bincount(meta["race"])
    table = table_of(real, fake, logits, meta, size_matched_floor=int(sizes.min()) + 1)
    race_matched = table[(table.attribute == "race") & (table.metric == "fid_matched")]
    assert len(race_matched) == 1 + 2  # the whole sets and the two groups above the floor
    assert (race_matched.n_real == np.sort(sizes)[1]).all()


def test_equity_and_gap_rows_by_hand(toy_table):
    table, _ = toy_table
    for metric, overall_group in (("fid", "all"), ("kid", "all"), ("fid_matched", MATCHED_ALL),
                                  ("kid_matched", MATCHED_ALL)):
        overall = row(table, "race" if overall_group == MATCHED_ALL else "all", overall_group, metric).value
        groups = [row(table, "race", g, metric).value for g in FAIRGENMED.attribute("race").groups]
        assert row(table, "race", ES_GROUP, f"es_{metric}").value == pytest.approx(
            equity_scaled(overall, groups, higher_is_better=False))
        assert row(table, "race", GAP_GROUP, f"{metric}_gap").value == pytest.approx(max(groups) - min(groups))
    debiased = [row(table, "race", g, "fid_debiased").value for g in FAIRGENMED.attribute("race").groups]
    assert row(table, "race", ES_GROUP, "es_fid_debiased").value == pytest.approx(
        equity_scaled(row(table, "all", "all", "fid_debiased").value, debiased, higher_is_better=False))


def test_equity_table_reports_the_table_summaries(toy_table):
    table, _ = toy_table
    es = equity_table(table).set_index(["metric", "attribute"])
    for metric in ("es_fid", "es_fid_debiased", "es_kid", "es_fid_matched", "es_kid_matched"):
        source = row(table, "gender", ES_GROUP, metric)
        assert es.loc[(metric, "gender"), "value"] == pytest.approx(source.value)
        assert (es.loc[(metric, "gender"), "boot_lo"], es.loc[(metric, "gender"), "boot_hi"]) == pytest.approx(
            (source.boot_lo, source.boot_hi))
    assert es.loc[("es_fid_matched", "race"), "overall"] == row(table, "race", MATCHED_ALL, "fid_matched").value
    assert np.isnan(es.loc[("es_mifid", "race"), "boot_lo"])  # computed from the groups, no interval


def test_planted_copies_in_the_table():
    real, fake, logits, train, meta = toy(2)
    honest = table_of(real, fake, logits, meta, train)
    fake[:60] = train[:60]  # half of the generated images are training images
    table = table_of(real, fake, logits, meta, train)
    share = row(table, "all", "all", "copy_share")
    assert 0.5 <= share.value <= 0.5 + 0.03 and share.boot_lo < share.value < share.boot_hi
    assert row(honest, "all", "all", "copy_share").value <= 0.03
    assert row(table, "all", "all", "copy_threshold").value == pytest.approx(
        np.quantile(np.sqrt(((real[:, None] - train[None]) ** 2).sum(-1)).min(1), 0.01))
    assert row(table, "all", "all", "nn_train_ratio").value < row(honest, "all", "all", "nn_train_ratio").value


def test_mifid_eps_fixed_calibrated_or_missing_training_features():
    real, fake, logits, train, meta = toy(3)
    fixed = table_of(real, fake, logits, meta, train, mifid_eps=0.05)
    assert row(fixed, "all", "all", "mifid_eps").value == 0.05 and "fixed" in row(fixed, "all", "all", "mifid_eps").note
    calibrated = row(table_of(real, fake, logits, meta, train), "all", "all", "mifid_eps")
    assert calibrated.value == pytest.approx(calibrated_mifid_eps(real, train)) and "calibrated" in calibrated.note
    without = table_of(real, fake, logits, meta)
    assert "no training features" in row(without, "all", "all", "mifid_eps").note
    assert not without.metric.isin(["copy_share", "copy_threshold", "nn_train_ratio"]).any()
    with pytest.raises(ValueError, match="mifid_eps"):
        table_of(real, fake, logits, meta, mifid_eps="auto")
    with pytest.raises(ValueError, match="size_matched_floor"):
        table_of(real, fake, logits, meta, size_matched_floor=1)
    with pytest.raises(ValueError, match="feature sizes differ"):
        table_of(real, fake, logits, meta, train[:, :5])
    with pytest.raises(ValueError, match="logit rows"):
        table_of(real, fake, logits[:-1], meta)
    with pytest.raises(ValueError, match="real group masks must have 120 rows"):
        generation_metrics_from_features(real, fake, logits, {("race", "Asian"): np.ones(3, bool)}, {}, "toy")
