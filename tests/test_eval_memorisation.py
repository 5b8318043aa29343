"""Memorisation audit: planted copies of training images are found at their true rate, honest
images at the chosen quantile; closest pairs; MiFID's eps calibrated from real distances."""
from __future__ import annotations

import numpy as np
import pytest

from fairdiff.evaluate import calibrated_mifid_eps, closest_pairs, memorisation_audit, nearest_neighbours
from fairdiff.evaluate import metrics as M


def planted(n_train=400, n_test=300, n_fake=200, n_copies=40, d=16, seed=0):
    """Training, test and generated features from one distribution; ``n_copies`` generated rows (at
    random places) are exact copies of random training rows."""
    rng = np.random.default_rng(seed)
    train, test, fake = (rng.normal(size=(n, d)) for n in (n_train, n_test, n_fake))
    rows = rng.choice(n_fake, n_copies, replace=False)
    sources = rng.choice(n_train, n_copies, replace=False)
    fake[rows] = train[sources]
    return train, test, fake, rows, sources


def test_planted_copies_are_found_at_their_true_rate():
    train, test, fake, rows, _ = planted()
    audit = memorisation_audit(train, test, fake).iloc[0]
    # all 40 copies (distance 0) plus honest images below the 1 % quantile: about 1 % of the other 160
    assert audit.n_copies >= 40 and 0.2 <= audit.copy_share <= 0.2 + 0.03
    assert audit.threshold == pytest.approx(np.quantile(nearest_neighbours(test, train)[0], 0.01))


def test_planted_copies_per_group():
    train, test, fake, rows, _ = planted(n_fake=300, n_copies=30)
    copied = np.zeros(300, bool)
    copied[rows] = True
    groups = {"memorising": copied | (np.arange(300) < 30), "honest": ~copied & (np.arange(300) >= 30)}
    audit = memorisation_audit(train, test, fake, groups, {g: np.ones(300, bool) for g in groups}).set_index("group")
    memorising = groups["memorising"]
    assert audit.loc["memorising", "copy_share"] >= copied[memorising].mean()
    assert audit.loc["honest", "copy_share"] <= 0.04
    assert audit.loc["memorising", "nn_ratio"] < audit.loc["honest", "nn_ratio"]


def test_honest_images_are_flagged_at_about_the_quantile():
    """Fresh real images (none copied) against the threshold from other real images: about q."""
    rng = np.random.default_rng(1)
    train, test, fresh = rng.normal(size=(300, 8)), rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    share = memorisation_audit(train, test, fresh, quantile=0.05).iloc[0].copy_share
    assert share == pytest.approx(0.05, abs=0.02)


def test_closest_pairs_are_the_planted_ones_first():
    train, _, fake, rows, sources = planted()
    pairs = closest_pairs(fake, train, n=40)
    assert set(zip(pairs.fake_index, pairs.train_index)) == set(zip(rows.tolist(), sources.tolist()))
    assert (pairs.distance < 1e-6).all()
    assert closest_pairs(fake, train, n=41).distance.iloc[-1] > 0.1  # the 41st is an honest image


def test_nearest_neighbours_euclidean_and_cosine_by_hand():
    reference = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    query = np.array([[0.9, 0.1], [0.0, 0.0], [-1.0, 0.5]])
    dist, index = nearest_neighbours(query, reference)
    assert index.tolist() == [0, 2, 2] and dist[0] == pytest.approx(np.hypot(0.1, 0.1))
    dist, index = nearest_neighbours(query, reference, "cosine")  # 1 - |cos|; zero rows have no angle
    assert index.tolist() == [0, -1, 0] and np.isnan(dist[1])
    assert dist[2] == pytest.approx(1 - 1 / np.sqrt(1.25))
    with pytest.raises(ValueError, match="'euclidean' or 'cosine'"):
        nearest_neighbours(query, reference, "manhattan")


def test_calibrated_mifid_eps_is_the_quantile_of_real_cosine_distances():
    rng = np.random.default_rng(2)
    train, test = rng.random((100, 6)), rng.random((80, 6))
    eps = calibrated_mifid_eps(test, train, quantile=0.1)
    cos = 1 - np.abs((test / np.linalg.norm(test, axis=1, keepdims=True))
                     @ (train / np.linalg.norm(train, axis=1, keepdims=True)).T)
    assert eps == pytest.approx(np.quantile(cos.min(axis=1), 0.1))
    # a generated set of copies of the test images has memorisation distance 0 < eps: MiFID penalises it
    assert M.memorization_distance(test, test[::-1].copy(), cosine_eps=eps) < eps
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        calibrated_mifid_eps(test, train, quantile=1.0)
