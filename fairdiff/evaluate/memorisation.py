"""Memorisation audit: are generated images copies of training images?

A diffusion model fine-tuned on a few hundred images can reproduce some of them. For every
generated image we take the distance to its nearest TRAINING image in feature space and compare
it with the same distance for held-out real test images, which cannot be copies:

    d(y) = min_t |f(y) - f(t)|   over training images t,
    tau  = the q-quantile (default q = 0.01) of d(x) over real test images x,
    likely-copy share = 1/M sum_j 1[ d(y_j) < tau ].

A generator that copies nothing gives a share near q (about 1 % of honest images fall that close
by chance); planted exact copies have d = 0 and are all counted. The ratio of median distances
(generated over held-out real, per group) shows a milder pull towards the training set. The
threshold comes from all test images, not per group: a 1st percentile of 7 images is not one.

Caveat: the domain encoder is trained on the same training images, so its features may place
training images in tighter clusters than unseen ones; the comparison with held-out real images
(equally unseen) is what keeps the threshold honest.

MiFID's threshold ``cosine_eps`` (0.1 in torchmetrics, tuned for Inception features) is
calibrated the same way: the q-quantile of the test images' nearest-training cosine distances
(1 - |cos|, MiFID's own distance), see :func:`calibrated_mifid_eps`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fairdiff.evaluate.metrics import ArrayLike, _as_float64_2d
from fairdiff.evaluate.prdc import pairwise_distances

CHUNK_ROWS = 4096  # query rows per distance block: bounds memory for large reference sets


def cosine_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 - |cos(x_i, y_j)| for every pair of rows (MiFID's distance; zero rows give NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
    return 1.0 - np.abs(x @ y.T)


def nearest_neighbours(query: ArrayLike, reference: ArrayLike,
                       metric: str = "euclidean") -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query row's nearest reference row, ``euclidean`` or ``cosine``
    (a zero row has no cosine distance: NaN and index -1, and zero reference rows are skipped)."""
    query, reference = _as_float64_2d(query, "query features"), _as_float64_2d(reference, "reference features")
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric: expected 'euclidean' or 'cosine', got {metric!r}")
    distance = pairwise_distances if metric == "euclidean" else cosine_distances
    dist, index = [], []
    for start in range(0, len(query), CHUNK_ROWS):
        block = distance(query[start:start + CHUNK_ROWS], reference)
        undefined = np.isnan(block).all(axis=1)  # a zero row has no cosine distance
        block[undefined] = np.inf
        index.append(np.where(undefined, -1, np.nanargmin(block, axis=1)))
        dist.append(np.where(undefined, np.nan, np.nanmin(block, axis=1)))
    return np.concatenate(dist), np.concatenate(index)


def copy_threshold(test_to_train: ArrayLike, quantile: float = 0.01) -> float:
    """tau: the ``quantile`` of held-out real images' nearest-training distances."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"copy quantile: expected a value in (0, 1), got {quantile}")
    return float(np.nanquantile(np.asarray(test_to_train, dtype=np.float64), quantile))


def calibrated_mifid_eps(test: ArrayLike, train: ArrayLike, quantile: float = 0.01) -> float:
    """MiFID's ``cosine_eps`` from the data: the ``quantile`` of the cosine distances (1 - |cos|)
    from each real test image to its nearest training image (see the module docstring)."""
    return copy_threshold(nearest_neighbours(test, train, "cosine")[0], quantile)


def memorisation_audit(train: ArrayLike, test: ArrayLike, fake: ArrayLike,
                       fake_groups: dict[object, np.ndarray] | None = None,
                       test_groups: dict[object, np.ndarray] | None = None,
                       quantile: float = 0.01) -> pd.DataFrame:
    """Likely-copy share per group: with d(y) the distance from y to its nearest training image and
    tau the ``quantile`` of d over the real test images, share = 1/M sum_j 1[d(y_j) < tau].

    ``fake_groups`` / ``test_groups`` map a group key to boolean row masks of the generated and
    test sets (omitted: one group ``all``). One row per group: group, n_fake, n_copies, copy_share,
    threshold, median_fake (median nearest-training distance of the group's generated images),
    median_test (the same for its real test images) and nn_ratio = median_fake / median_test."""
    fake_nn = nearest_neighbours(fake, train)[0]
    test_nn = nearest_neighbours(test, train)[0]
    tau = copy_threshold(test_nn, quantile)
    fake_groups = fake_groups or {"all": np.ones(len(fake_nn), bool)}
    test_groups = test_groups or {key: np.ones(len(test_nn), bool) for key in fake_groups}
    rows = []
    for key, mask in fake_groups.items():
        group_fake, group_test = fake_nn[mask], test_nn[test_groups[key]]
        copies = int((group_fake < tau).sum())
        median_fake = float(np.median(group_fake)) if len(group_fake) else float("nan")
        median_test = float(np.median(group_test)) if len(group_test) else float("nan")
        rows.append({"group": key, "n_fake": len(group_fake), "n_copies": copies,
                     "copy_share": copies / len(group_fake) if len(group_fake) else float("nan"),
                     "threshold": tau, "median_fake": median_fake, "median_test": median_test,
                     "nn_ratio": median_fake / median_test if median_test > 0 else float("nan")})
    return pd.DataFrame(rows)


def closest_pairs(fake: ArrayLike, train: ArrayLike, n: int = 8) -> pd.DataFrame:
    """The ``n`` generated images closest to a training image: fake_index, train_index, distance
    (Euclidean), closest first; for showing the pairs side by side."""
    dist, index = nearest_neighbours(fake, train)
    order = np.argsort(dist, kind="stable")[:n]
    return pd.DataFrame({"fake_index": order, "train_index": index[order], "distance": dist[order]})
