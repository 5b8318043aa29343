"""KID: equal to torchmetrics' KernelInceptionDistance on the same features and subsets; about 0 and
unbiased for a set against itself or its own distribution."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import fairdiff  # noqa: F401  (cache locations before torchmetrics)
from fairdiff.evaluate import kid, kid_from_features
from fairdiff.evaluate.kid import mmd2_of_subsets, polynomial_kernel, subset_orders


def features(seed: int, n: int, d: int = 12, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, d)) + shift


def test_equals_torchmetrics_kid_on_its_own_subsets():
    """The metric object with an identity 'extractor' (no torch-fidelity needed); its random subsets
    replayed from the same torch seed and fed to our computation."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = features(0, 60), features(1, 45, shift=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
        metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=7, subset_size=30)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    torch.manual_seed(5)
    theirs_mean, theirs_std = metric.compute()
    torch.manual_seed(5)
    rows = [(torch.randperm(60)[:30].numpy(), torch.randperm(45)[:30].numpy()) for _ in range(7)]  # as compute() draws
    ours = mmd2_of_subsets(polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake),
                           np.stack([r for r, _ in rows]), np.stack([f for _, f in rows]))
    assert ours.mean() == pytest.approx(theirs_mean.item(), abs=1e-6, rel=1e-9)
    assert ours.std() == pytest.approx(theirs_std.item(), abs=1e-6, rel=1e-9)


def test_kid_from_features_equals_torchmetrics_poly_mmd_on_our_subsets():
    from torchmetrics.image.kid import poly_mmd

    real, fake = features(2, 50), features(3, 40, shift=0.1)
    mean, std = kid_from_features(real, fake, subset_size=25, n_subsets=9, seed=4)
    orders_r, orders_f = subset_orders(50, 40, 9, 4)
    theirs = [poly_mmd(torch.from_numpy(real[r[:25]]), torch.from_numpy(fake[f[:25]])).item()
              for r, f in zip(orders_r, orders_f)]
    assert mean == pytest.approx(np.mean(theirs), abs=1e-6, rel=1e-9)
    assert std == pytest.approx(np.std(theirs), abs=1e-6, rel=1e-9)


def test_subset_size_is_capped_and_whole_sets_need_one_evaluation():
    real, fake = features(4, 30), features(5, 30, shift=0.1)
    capped = kid_from_features(real, fake, subset_size=1000, n_subsets=50)
    assert capped[1] == 0.0  # every subset is the whole set
    assert capped == kid_from_features(real, fake, subset_size=30, n_subsets=1)
    smaller = kid_from_features(real, features(6, 20), subset_size=1000, n_subsets=20)
    assert smaller[1] > 0.0  # 20 of 30 real rows per subset: the subsets differ


def test_kid_of_a_set_with_itself_is_about_zero():
    """Against itself the cross term holds the k(x, x) diagonal, so KID is slightly negative:
    -2 (mean diagonal - mean off-diagonal) / m, about 0 next to the KID of a shifted set."""
    x = features(7, 200)
    value = kid_from_features(x, x, subset_size=200, n_subsets=1)[0]
    k = polynomial_kernel(x, x)
    off_diagonal = (k.sum() - np.trace(k)) / (200 * 199)
    assert value == pytest.approx(-2 * (np.trace(k) / 200 - off_diagonal) / 200, rel=1e-9)
    assert -0.1 * kid_from_features(x, x + 0.1, subset_size=200, n_subsets=1)[0] < value < 0


def test_kid_is_unbiased_for_two_samples_of_one_distribution():
    """200 independent pairs of 40 rows from the same distribution: the mean KID is not
    significantly above 0 (within 3 standard errors), as an unbiased estimator of MMD^2 = 0 must be."""
    rng = np.random.default_rng(8)
    values = np.array([kid_from_features(rng.random((40, 6)), rng.random((40, 6)), 40, 1)[0] for _ in range(200)])
    assert values.mean() < 3 * values.std(ddof=1) / np.sqrt(len(values))
    assert (values < 0).any() and (values > 0).any()


def test_kid_rejects_bad_input():
    with pytest.raises(ValueError, match="feature sizes differ"):
        kid_from_features(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="subset_size >= 2"):
        kid_from_features(np.zeros((5, 3)), np.zeros((5, 3)), subset_size=1)


@pytest.mark.parametrize("m_r, m_f", [(9, 9), (3, 12), (12, 2)])
def test_counted_and_gathered_subset_sums_agree(m_r, m_f):
    # the two ways mmd2_of_subsets takes a subset's kernel sums, on subsets with and without repeated rows
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(12, 5)), rng.normal(size=(14, 5))
    k = (kid.polynomial_kernel(real, real), kid.polynomial_kernel(fake, fake), kid.polynomial_kernel(real, fake))
    orders_r, orders_f = kid.subset_orders(12, 14, 6, seed=1)
    for rows_r, rows_f in ((orders_r[:, :m_r], orders_f[:, :m_f]),  # without replacement (KID, jackknife)
                           (rng.integers(0, 12, (6, m_r)), rng.integers(0, 14, (6, m_f)))):  # with repeats
        counted = kid._counted_sums(*k, rows_r, rows_f)
        gathered = kid._gathered_sums(*k, rows_r, rows_f)
        for a, b in zip(counted, gathered):
            np.testing.assert_allclose(a, b, rtol=1e-12)
    # the public function picks one way by size and returns the same values either way
    np.testing.assert_allclose(kid.mmd2_of_subsets(*k, orders_r[:, :9], orders_f[:, :9]),
                               [(ar - dr) / 72 + (af - df) / 72 - 2 * c / 81
                                for ar, dr, af, df, c in zip(*kid._gathered_sums(*k, orders_r[:, :9], orders_f[:, :9]))],
                               rtol=1e-12)
