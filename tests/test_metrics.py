"""Generation and fairness metrics: known answers, agreement with torchmetrics / sklearn / fairlearn,
group selection from metadata, the domain feature encoder and per-group generation metrics."""
from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference
from sklearn.metrics import roc_auc_score
from torch import nn

import fairdiff  # noqa: F401  (sets cache variables before torchmetrics is imported)
from fairdiff.errors import DataError
from fairdiff.evaluate import metrics as M
from fairdiff.evaluate.features import (ES_GROUP, GAP_GROUP, MATCHED_ALL, DomainEncoder, InceptionExtractor,
                                        equity_table, extract, generation_metrics, train_domain_encoder)
from fairdiff.evaluate.memorisation import calibrated_mifid_eps
from fairdiff.evaluate.groups import group_masks, reported_groupings
from fairdiff.schema import FAIRGENMED, HAM10000

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = {"in_res": 16, "widths": (8, 16), "batch_size": 32}  # a domain encoder that trains in a second


def toy_set(n: int, seed: int, res: int = 16, schema=FAIRGENMED) -> tuple[torch.Tensor, pd.DataFrame]:
    """Random metadata for every attribute and label; image brightness follows the first label."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"id": [f"s{seed}-{i}" for i in range(n)], "split": "train"})
    for a in schema.attributes:
        meta[a.name] = rng.integers(0, a.n_groups, n)
    for lab in schema.labels:
        meta[lab.name] = rng.integers(0, lab.n_classes, n)
    images = torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed)) * 0.5
    images += torch.tensor(meta[schema.labels[0].name].to_numpy(), dtype=torch.float32)[:, None, None, None] * 0.4
    return images.clamp(0, 1), meta


@pytest.fixture(scope="module")
def encoder() -> DomainEncoder:
    images, meta = toy_set(96, seed=0)
    return train_domain_encoder(images, meta, FAIRGENMED, epochs=2, seed=0, **SMALL)


def gaussian_with_exact_moments(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> np.ndarray:
    """Samples whose sample mean and (N-1) sample covariance equal ``mean`` and ``cov`` exactly."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whiten: sample cov = I
    return z @ np.linalg.cholesky(cov).T + mean


# ----------------------------------------------------------------------------- FID / MiFID / IS
def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 16))
    assert abs(M.fid_from_features(x, x)) < 1e-6


def test_fid_matches_closed_form_for_known_gaussians():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    x = gaussian_with_exact_moments(500, mu1, np.diag(a), seed=1)
    y = gaussian_with_exact_moments(400, mu2, np.diag(b), seed=2)
    expected = 5.0 + (1 + 1 + 4)
    assert M.fid_from_features(x, y) == pytest.approx(expected, rel=1e-9)
    assert M.fid_from_features(y, x) == pytest.approx(expected, rel=1e-9)


def test_fid_matches_eigenvalue_route_on_correlated_features():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 10)) @ rng.normal(size=(10, 10)), rng.normal(size=(150, 10)) + 0.5
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2)).real.sum()
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert M.fid_from_features(x, y) == pytest.approx(expected, rel=1e-8)


def test_fid_rejects_bad_shapes():
    with pytest.raises(ValueError, match="feature sizes differ"):
        M.fid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        M.fid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))


def test_memorization_distance_by_hand():
    real = np.array([[1.0, 0.0], [0.0, 1.0]])
    fake = np.array([[1.0, 0.0], [1.0, 1.0]])
    # real[0] matches fake[0] exactly (0); real[1] is nearest fake[1]: 1 - 1/sqrt(2)
    expected = (0.0 + 1 - 1 / np.sqrt(2)) / 2
    assert M.memorization_distance(real, fake, cosine_eps=0.5) == pytest.approx(expected)
    assert M.memorization_distance(real, fake, cosine_eps=0.1) == 1.0  # above eps: no penalty


class Flatten(nn.Module):
    """Pixels as features: a transparent feature module for torchmetrics cross-checks."""

    num_features = 48

    def forward(self, images):
        return images.double().flatten(1)


@pytest.mark.parametrize("memorised", [False, True])
def test_mifid_agrees_with_torchmetrics(memorised):
    from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance

    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 4, 4, generator=g, dtype=torch.float64)
    fake = real + 1e-3 * torch.rand(64, 3, 4, 4, generator=g) if memorised else torch.rand(64, 3, 4, 4, generator=g)
    metric = MemorizationInformedFrechetInceptionDistance(feature=Flatten(), normalize=True)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    ours = M.mifid_from_features(real.flatten(1).numpy(), fake.flatten(1).numpy())
    assert ours == pytest.approx(metric.compute().item(), rel=1e-6)
    fid = M.fid_from_features(real.flatten(1).numpy(), fake.flatten(1).numpy())
    assert (ours > 10 * fid) if memorised else ours == pytest.approx(fid)


def test_inception_score_known_answers():
    assert M.inception_score_from_logits(np.zeros((20, 7)), splits=1)[0] == pytest.approx(1.0)
    confident = 50.0 * np.eye(5)[np.arange(40) % 5]  # sure of one class, every class used equally
    assert M.inception_score_from_logits(confident, splits=1)[0] == pytest.approx(5.0, rel=1e-6)
    mean, std = M.inception_score_from_logits(confident, splits=4, shuffle_seed=None)  # chunks: 10 rows, all classes
    assert mean == pytest.approx(5.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


class Logits(nn.Module):
    """Wrap an extractor so torchmetrics' InceptionScore sees its logits."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, images):
        return 20.0 * self.extractor.embed(images)[1].double()  # sharpened, in float64: an IS well above 1


def test_inception_score_agrees_with_torchmetrics_on_uint8_input(encoder):
    from torchmetrics.image.inception import InceptionScore

    images, _ = toy_set(50, seed=5)
    with pytest.warns(UserWarning, match="save all extracted features"):
        metric = InceptionScore(feature=Logits(encoder), splits=4, normalize=True)  # feeds uint8 to the module
    metric.update(images)
    torch.manual_seed(123)
    theirs = metric.compute()
    torch.manual_seed(123)
    order = torch.randperm(50)  # the permutation torchmetrics drew
    logits = 20.0 * extract(encoder, (images * 255).byte())[1].double()[order]
    mean, std = M.inception_score_from_logits(logits, splits=4, shuffle_seed=None)
    assert mean > 1.01 and mean == pytest.approx(theirs[0].item(), rel=1e-9)
    assert std == pytest.approx(theirs[1].item(), rel=1e-6)


def test_fid_on_extracted_features_agrees_with_torchmetrics(encoder):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, _ = toy_set(80, seed=6)
    fake, _ = toy_set(70, seed=7)
    metric = FrechetInceptionDistance(feature=encoder, normalize=True, input_img_size=(3, 16, 16))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    ours = M.fid_from_features(extract(encoder, real)[0].double().numpy(), extract(encoder, fake)[0].double().numpy())
    assert ours == pytest.approx(metric.compute().item(), rel=1e-4, abs=1e-6)


# ----------------------------------------------------------------------------- equity, disparity
def test_equity_scaled_by_hand():
    assert M.equity_scaled(0.8, [0.7, 0.9], higher_is_better=True) == pytest.approx(0.8 / 1.2)
    assert M.equity_scaled(0.8, {"a": 0.7, "b": 0.9}, higher_is_better=True, alpha=0.5) == pytest.approx(0.8 / 1.1)
    assert M.equity_scaled(10.0, [8.0, 14.0], higher_is_better=False) == pytest.approx(16.0)
    assert M.equity_scaled(10.0, [8.0, 14.0], higher_is_better=False, alpha=0.5) == pytest.approx(13.0)
    assert M.equity_scaled(3.0, [3.0, 3.0, 3.0], higher_is_better=False) == 3.0  # equal groups: no penalty


def test_between_group_disparity_by_hand():
    std, spread = M.between_group_disparity(0.8, [0.7, 0.9])
    assert std == pytest.approx(0.125) and spread == pytest.approx(0.25)


# ----------------------------------------------------------------------------- predictions
def test_auc_binary_and_multiclass_match_sklearn():
    rng = np.random.default_rng(0)
    y2, s2 = rng.integers(0, 2, 100), rng.integers(0, 10, 100) / 10  # many ties
    assert M.auc(y2, s2, 2) == pytest.approx(roc_auc_score(y2, s2))
    assert M.auc(y2, np.stack([1 - s2, s2], 1), 2) == pytest.approx(roc_auc_score(y2, s2))
    y4 = rng.integers(0, 4, 200)
    p4 = torch.softmax(torch.tensor(rng.normal(size=(200, 4)) + 2 * np.eye(4)[y4]), 1).numpy()
    assert M.auc(y4, p4, 4) == pytest.approx(roc_auc_score(y4, p4, multi_class="ovr", average="macro"))


def test_auc_undefined_or_missing_class():
    assert np.isnan(M.auc([1, 1, 1], [0.2, 0.5, 0.9], 2))
    y = np.array([0, 0, 1, 1])  # class 2 absent: mean over the two present classes
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0], [0.6, 0.4, 0.0]])
    expected = np.mean([roc_auc_score(y == 0, scores[:, 0]), roc_auc_score(y == 1, scores[:, 1])])
    assert M.auc(y, scores, 3) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(4))
def test_dpd_eod_equal_fairlearn_and_ignore_unknown_groups(seed):
    rng = np.random.default_rng(seed)
    y, p, g = rng.integers(0, 2, 60), rng.integers(0, 2, 60), rng.integers(-1, 4, 60)
    y[g == 3] = 0  # a group without positives: its TPR is 0 in fairlearn
    known = g >= 0
    assert M.dpd(y, p, g) == pytest.approx(
        demographic_parity_difference(y[known], p[known], sensitive_features=g[known]))
    assert M.eod(y, p, g) == pytest.approx(equalized_odds_difference(y[known], p[known], sensitive_features=g[known]))
    y3, p3 = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
    for ours, theirs in ((M.dpd, demographic_parity_difference), (M.eod, equalized_odds_difference)):
        one_vs_rest = [theirs(y3[known] == c, p3[known] == c, sensitive_features=g[known]) for c in range(3)]
        assert ours(y3, p3, g, n_classes=3) == pytest.approx(np.mean(one_vs_rest))


def test_dpd_uses_predictions_not_labels():
    # labels differ by group (base rates 1.0 vs 0.0), predictions do not: DPD must be 0.
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([1, 0, 1, 1, 0, 1])
    g = np.array([0, 0, 0, 1, 1, 1])
    assert M.dpd(y, p, g) == 0.0
    assert demographic_parity_difference(p, y, sensitive_features=g) == 1.0  # the authors' swapped call


def test_multiclass_dpd_is_one_vs_rest_mean_by_hand():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.array([0, 0, 2, 1, 1, 2])
    g = np.array([0, 0, 0, 1, 1, 1])
    # P(pred = c | g): class 0: 2/3 vs 0; class 1: 0 vs 2/3; class 2: 1/3 vs 1/3
    assert M.dpd(y, p, g, n_classes=3) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    swapped = M.dpd(p, y, g, n_classes=3)  # labels are balanced per group: 0
    assert swapped == pytest.approx(0.0)


# ----------------------------------------------------------------------------- bootstrap
def test_bootstrap_interval_contains_point_and_is_seeded():
    x = np.random.default_rng(0).normal(size=200)
    r = M.bootstrap(np.mean, x, n=200, seed=3)
    assert r["lo"] <= r["point"] <= r["hi"] and r["point"] == pytest.approx(x.mean())
    assert r["hi"] - r["lo"] == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.3)  # ~ normal theory width
    assert r["std"] == pytest.approx(x.std(ddof=1) / np.sqrt(200), rel=0.2)  # the std over resamples: the se
    assert r == M.bootstrap(np.mean, x, n=200, seed=3)
    assert r["mean"] != M.bootstrap(np.mean, x, n=200, seed=4)["mean"]


def test_bootstrap_paired_keeps_rows_together():
    a = np.arange(50.0)
    diff = lambda u, v: float(np.mean(u - v))  # noqa: E731
    paired = M.bootstrap(diff, a, a.copy(), n=30)
    unpaired = M.bootstrap(diff, a, a.copy(), n=30, paired=False)
    assert paired["lo"] == paired["hi"] == 0.0
    assert unpaired["hi"] - unpaired["lo"] > 1.0
    with pytest.raises(ValueError, match="equal length"):
        M.bootstrap(diff, a, a[:10], n=3)


def test_bootstrap_vector_statistic_and_undefined_resamples():
    y = np.array([0] * 3 + [1] * 27)
    s = np.linspace(0, 1, 30)
    r = M.bootstrap(lambda yy, ss: np.array([M.auc(yy, ss, 2), yy.mean()]), y, s, n=100, seed=0)
    assert r["point"].shape == (2,) and r["n_valid"][1] == 100
    assert 0 < r["n_valid"][0] < 100  # some resamples draw no negative (P = 0.9^30 = 4 %): AUC undefined, left out
    assert np.isnan(M.bootstrap(np.mean, y, n=0)["lo"])


def test_mid_ranks_equal_scipys_rankdata_with_ties():
    import scipy.stats

    rng = np.random.default_rng(7)
    for n in (1, 2, 9, 300):
        for _ in range(20):
            x = np.round(rng.normal(size=n), 1)  # many ties
            np.testing.assert_array_equal(M._mid_ranks(x), scipy.stats.rankdata(x))
    assert np.isnan(M.auc([0, 1, 1], [0.1, np.nan, 0.3], 2))  # as rankdata's NaN propagation gave


def _looped_bootstrap_replicates(statistic, arrays, n, seed, paired):
    """The resamples as the bootstrap drew them before it drew in blocks: one after another."""
    rng, out = np.random.default_rng(seed), []
    for _ in range(n):
        if paired:
            rows = rng.integers(0, len(arrays[0]), len(arrays[0]))
            out.append(statistic(*[a[rows] for a in arrays]))
        else:
            out.append(statistic(*[a[rng.integers(0, len(a), len(a))] for a in arrays]))
    return np.array(out)


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("block_elements", [1, 50, 10 ** 6])
def test_bootstrap_in_blocks_and_batched_gives_the_resamples_of_a_loop(paired, block_elements):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=23), rng.normal(size=23 if paired else 31)
    stat = lambda u, v: float(u.max() - np.median(v))  # noqa: E731
    batched = lambda u, v: u.max(axis=1) - np.median(v, axis=1)  # noqa: E731  (a mean over an axis may round otherwise)
    expected = _looped_bootstrap_replicates(stat, (a, b), 37, 9, paired)
    tail = np.nanpercentile(expected, [2.5, 97.5], axis=0)
    for kwargs in ({}, {"batched": batched}):
        r = M.bootstrap(stat, a, b, n=37, seed=9, paired=paired, block_elements=block_elements, **kwargs)
        assert r["mean"] == expected.mean() and r["std"] == expected.std(ddof=1)  # the same resamples, bit for bit
        assert [r["lo"], r["hi"]] == tail.tolist()


def test_inception_scores_of_many_sets_equal_each_set_alone():
    rng = np.random.default_rng(2)
    for n in (1, 4, 23):
        sets = rng.normal(size=(5, n, 6)) * 3
        means, stds = M.inception_scores(sets, splits=4, shuffle_seed=1)
        alone = [M.inception_score_from_logits(x, splits=4, shuffle_seed=1) for x in sets]
        assert means.tolist() == [m for m, _ in alone]
        np.testing.assert_array_equal(stds, [sd for _, sd in alone])  # NaN (one chunk) where alone is NaN
    with pytest.raises(ValueError, match=r"\[R, N, C\]"):
        M.inception_scores(np.zeros((3, 4)))


# ----------------------------------------------------------------------------- groups
def test_fairgenmed_has_19_groups_from_metadata():
    _, meta = toy_set(60, seed=1)
    masks = group_masks(meta, FAIRGENMED)
    assert len(masks) == 19 and reported_groupings(FAIRGENMED)[:3] == ["race", "gender", "ethnicity"]
    for name in reported_groupings(FAIRGENMED):  # each grouping partitions the known rows
        total = sum(m.astype(int) for (attr, _), m in masks.items() if attr == name)
        assert (total == 1).all()


def test_hispanic_and_non_hispanic_stay_apart_and_prompts_are_ignored():
    meta = pd.DataFrame({"ethnicity": [0, 1, 1, -1], "prompt": ["a Hispanic patient"] * 4})
    masks = group_masks(meta, FAIRGENMED, ["ethnicity"])
    assert masks[("ethnicity", "Non-Hispanic")].tolist() == [True, False, False, False]
    assert masks[("ethnicity", "Hispanic")].tolist() == [False, True, True, False]  # unknown (-1): no group


def test_group_errors_name_the_field():
    with pytest.raises(DataError, match="'race'"):
        group_masks(pd.DataFrame({"gender": [0]}), FAIRGENMED, ["race"])
    with pytest.raises(DataError, match=r"ids in -1\.\.1"):
        group_masks(pd.DataFrame({"sex": [0, 2]}), HAM10000, ["sex"])
    with pytest.raises(ValueError, match="no attribute or label named 'colour'"):
        group_masks(pd.DataFrame({"colour": [0]}), FAIRGENMED, ["colour"])


# ----------------------------------------------------------------------------- extractors
def test_domain_encoder_is_deterministic_and_round_trips(tmp_path, encoder):
    images, meta = toy_set(96, seed=0)
    again = train_domain_encoder(images, meta, FAIRGENMED, epochs=2, seed=0, **SMALL)
    assert again.name == encoder.name and encoder.name.startswith("domain-cnn-")
    probe = toy_set(10, seed=9)[0]
    feats, logits = extract(encoder, probe)
    assert torch.equal(extract(again, probe)[0], feats)
    assert feats.shape == (10, 16) and logits.shape[1] == len(encoder.config["joint_classes"])
    loaded = DomainEncoder.load(encoder.save(tmp_path / "enc"))
    assert loaded.name == encoder.name and torch.equal(extract(loaded, probe)[1], logits)
    as_bytes = (probe * 255).byte()
    assert torch.equal(extract(encoder, as_bytes)[0], extract(encoder, as_bytes.float() / 255)[0])


def test_domain_encoder_name_follows_its_training_data():
    images, meta = toy_set(40, seed=0)
    other = meta.assign(id=[f"x{i}" for i in range(40)])
    a = train_domain_encoder(images, meta, FAIRGENMED, epochs=1, seed=0, **SMALL)
    b = train_domain_encoder(images, other, FAIRGENMED, epochs=1, seed=0, **SMALL)
    assert a.name != b.name


def test_domain_encoder_refuses_test_rows_and_missing_files(tmp_path):
    images, meta = toy_set(20, seed=0)
    with pytest.raises(DataError, match="split"):
        train_domain_encoder(images, meta.assign(split="test"), FAIRGENMED, epochs=1, **SMALL)
    with pytest.raises(DataError, match="config.json"):
        DomainEncoder.load(tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed")
def test_inception_extractor_explains_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="weights-inception-2015-12-05"):
        InceptionExtractor(tmp_path / "nope.pth")
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"")
    with pytest.raises(ImportError, match=r"fairdiff\[inception\]"):
        InceptionExtractor(weights)


# ----------------------------------------------------------------------------- generation metrics
def test_generation_metrics_slices_one_extraction(encoder):
    real, real_meta = toy_set(120, seed=11)
    fake, fake_meta = toy_set(100, seed=12)
    train, train_meta = toy_set(80, seed=13)
    table = generation_metrics(real, fake, real_meta, fake_meta, FAIRGENMED, encoder, n_boot=3, min_group_size=30,
                               train_images=train, size_matched_repeats=5)
    per_group = table[~table.group.isin([ES_GROUP, GAP_GROUP, MATCHED_ALL]) & ~table.size_matched]
    per_group = per_group[~per_group.metric.isin(["mifid_eps", "copy_threshold"])]
    attributes = list(dict.fromkeys(per_group.loc[per_group.attribute != "all", "attribute"]))
    metrics = ["fid", "fid_debiased", "mifid", "kid", "kid_std", "precision", "recall", "density", "coverage", "is",
               "is_std", "copy_share", "nn_train_ratio"]
    assert len(per_group) == (1 + 19) * len(metrics) and set(table["extractor"]) == {encoder.name}
    assert list(dict.fromkeys(table.loc[table.group == ES_GROUP, "attribute"])) == attributes
    real_f, fake_f = extract(encoder, real)[0].double().numpy(), extract(encoder, fake)[0].double().numpy()
    row = table[(table.attribute == "race") & (table.group == "Black") & (table.metric == "fid")].iloc[0]
    real_sel, fake_sel = real_meta["race"].to_numpy() == 1, fake_meta["race"].to_numpy() == 1
    assert (row.n_real, row.n_fake) == (real_sel.sum(), fake_sel.sum())
    assert row.value == pytest.approx(M.fid_from_features(real_f[real_sel], fake_f[fake_sel]), rel=1e-6)
    overall = table[(table.attribute == "all") & (table.metric == "fid")].iloc[0]
    assert overall.value == pytest.approx(M.fid_from_features(real_f, fake_f), rel=1e-6) and not overall.small_group
    sizes = table[table.metric == "fid"]
    assert (sizes.small_group == (sizes[["n_real", "n_fake"]].min(axis=1) < 30)).all()
    assert (table[table.metric == "is"].n_valid == 3).all() and (table[table.metric == "is"].boot_std > 0).any()
    assert (overall.n_valid == 40) and overall.interval == "jackknife"
    train_f = extract(encoder, train)[0].double().numpy()
    eps = table[table.metric == "mifid_eps"].iloc[0]
    assert eps.value == pytest.approx(calibrated_mifid_eps(real_f, train_f)) and "calibrated" in eps.note


def test_es_fid_interval_comes_from_a_joint_jackknife_of_the_same_statistic(encoder):
    """The ES-FID row's point value is ES over the table's own group FIDs, its interval contains it
    and has spread, and equity_table reports that interval next to its ES-FID."""
    real, real_meta = toy_set(120, seed=21)
    fake, fake_meta = toy_set(100, seed=22)
    table = generation_metrics(real, fake, real_meta, fake_meta, FAIRGENMED, encoder, n_boot=3, min_group_size=30,
                               attributes=["race", "gender"])
    es = equity_table(table).set_index(["metric", "attribute"])
    for attr in ("race", "gender"):
        row = table[(table.group == ES_GROUP) & (table.attribute == attr) & (table.metric == "es_fid")].iloc[0]
        fids = table[(table.attribute == attr) & (table.metric == "fid")]["value"].dropna()
        overall = table[(table.attribute == "all") & (table.metric == "fid")]["value"].iloc[0]
        assert row.value == pytest.approx(M.equity_scaled(overall, fids.to_numpy(), higher_is_better=False))
        assert es.loc[("es_fid", attr), "value"] == pytest.approx(row.value)
        assert row.boot_lo < row.value < row.boot_hi and row.n_valid == 40
        assert (es.loc[("es_fid", attr), "boot_lo"], es.loc[("es_fid", attr), "boot_hi"]) == (row.boot_lo, row.boot_hi)
    assert es.xs("es_mifid")["boot_lo"].isna().all()  # ES-MiFID has no joint interval


def test_equity_table_by_hand():
    rows = [("all", "all", 10.0), ("race", "a", 8.0), ("race", "b", 14.0), ("race", "c", np.nan)]
    frame = pd.DataFrame([{"extractor": "e", "attribute": a, "group": g, "metric": m, "value": v}
                          for a, g, v in rows for m in ("fid", "is")])
    table = equity_table(frame).set_index("metric")
    assert table.loc["es_fid", "value"] == pytest.approx(16.0) and table.loc["es_fid", "n_groups"] == 2
    assert table.loc["es_is", "value"] == pytest.approx(10.0 / 7.0)
