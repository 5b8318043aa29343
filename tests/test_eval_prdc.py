"""Precision, recall, density, coverage: constructed cases and an independent brute-force version."""
from __future__ import annotations

import numpy as np
import pytest

from fairdiff.evaluate import prdc


def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Naeem et al.'s definitions with plain loops: radius = distance to the k-th nearest other row."""
    def radius(rows, i):
        others = sorted(float(np.linalg.norm(rows[i] - rows[j])) for j in range(len(rows)) if j != i)
        return others[k - 1]

    r_real = [radius(real, i) for i in range(len(real))]
    r_fake = [radius(fake, j) for j in range(len(fake))]
    dist = [[float(np.linalg.norm(x - y)) for y in fake] for x in real]
    n, m = len(real), len(fake)
    precision = sum(any(dist[i][j] < r_real[i] for i in range(n)) for j in range(m)) / m
    recall = sum(any(dist[i][j] < r_fake[j] for j in range(m)) for i in range(n)) / n
    density = sum(dist[i][j] < r_real[i] for i in range(n) for j in range(m)) / (k * m)
    coverage = sum(min(dist[i]) < r_real[i] for i in range(n)) / n
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 3), (2, 5)])
def test_equals_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    real, fake = rng.normal(size=(40, 5)), rng.normal(size=(33, 5)) * 1.3 + 0.4
    ours, theirs = prdc(real, fake, k), brute_force_prdc(real, fake, k)
    assert ours == pytest.approx(theirs)
    assert 0 < ours["precision"] < 1 and 0 < ours["coverage"] < 1  # a case where the values say something


def test_identical_sets():
    x = np.random.default_rng(3).normal(size=(200, 8))
    values = prdc(x, x.copy(), k=5)
    assert values["precision"] == values["recall"] == values["coverage"] == 1.0
    assert values["density"] == pytest.approx(1.0, abs=0.2)


def test_far_disjoint_sets_score_zero():
    rng = np.random.default_rng(4)
    values = prdc(rng.normal(size=(50, 4)), rng.normal(size=(60, 4)) + 100.0, k=5)
    assert values == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_one_real_outlier_inflates_precision_not_density():
    """Naeem et al.'s motivating case: a far real outlier's k-NN ball swallows generated images that
    look like nothing real. Precision says 1; density counts one ball of k per image: 1 / k."""
    rng = np.random.default_rng(5)
    real = np.vstack([rng.normal(size=(100, 2)), [[50.0, 50.0]]])
    fake = rng.normal(size=(40, 2)) + 25.0
    values = prdc(real, fake, k=5)
    assert values["precision"] == 1.0 and values["density"] == pytest.approx(1 / 5)
    assert values["coverage"] == pytest.approx(1 / 101)  # only the outlier has a generated image in its ball


def test_k_is_capped_for_small_sets_and_bad_input_is_refused():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    assert prdc(real, fake, k=10) == pytest.approx(brute_force_prdc(real, fake, 3))
    with pytest.raises(ValueError, match="N >= 2"):
        prdc(real[:1], fake)
    with pytest.raises(ValueError, match="k must be >= 1"):
        prdc(real, fake, k=0)
