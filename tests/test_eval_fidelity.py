"""Attribute fidelity: on real test images it is the classifier's real-test accuracy; generated
images drawn like another group lose it; the table by hand."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import fairdiff  # noqa: F401
from fairdiff.errors import DataError
from fairdiff.evaluate import attribute_fidelity, fidelity_table, train_attribute_classifiers
from fairdiff.evaluate import metrics as M
from fairdiff.evaluate.classifier import predict_proba
from fairdiff.schema import FAIRGENMED

pytestmark = pytest.mark.usefixtures("one_thread")
RES = 16


def images_showing(race: np.ndarray, seed: int) -> torch.Tensor:
    """Noise images whose bright channel says the race group (0, 1, 2; none for unknown -1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(race), 3, RES, RES, generator=g) * 0.3
    known = np.flatnonzero(race >= 0)
    x[known, race[known]] += 0.6
    return x.clamp(0, 1)


def meta_for(race: np.ndarray, seed: int, split: str = "train") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({"race": race, "gender": rng.integers(0, 2, len(race)),
                         "ethnicity": rng.integers(0, 2, len(race)), "split": split})
    for lab in FAIRGENMED.labels:
        meta[lab.name] = rng.integers(0, lab.n_classes, len(race))
    return meta


@pytest.fixture(scope="module")
def race_classifier():
    rng = np.random.default_rng(0)
    train_race, val_race = rng.integers(0, 3, 120), rng.integers(0, 3, 40)
    train_race[:5] = -1  # unknown race: left out of training
    return train_attribute_classifiers(images_showing(train_race, 1), meta_for(train_race, 1),
                                       images_showing(val_race, 2), meta_for(val_race, 2, "val"), FAIRGENMED,
                                       attributes=["race"], epochs=4, seed=0, in_res=RES, device="cpu")


def test_fidelity_on_real_test_images_equals_the_real_test_accuracy(race_classifier):
    race = np.random.default_rng(3).integers(0, 3, 60)
    race[0] = -1
    test_x, test_meta = images_showing(race, 3), meta_for(race, 3, "test")
    table = attribute_fidelity(race_classifier, test_x, test_meta, FAIRGENMED, "real")
    predicted = predict_proba(race_classifier["race"], test_x).argmax(axis=1)
    known = race >= 0
    acc = table[(table.metric == "accuracy") & (table.group == "all")].iloc[0]
    assert acc.value == pytest.approx(M.accuracy(race[known], predicted[known])) and acc.n == 59
    assert acc.value > 0.8  # the classifier learned the signal: the ceiling is high
    for gid, group in enumerate(FAIRGENMED.attribute("race").groups):
        row = table[(table.metric == "accuracy") & (table.group == group)].iloc[0]
        assert row.value == pytest.approx(M.accuracy(race[race == gid], predicted[race == gid]))
        assert row.boot_lo <= row.value <= row.boot_hi


def test_generated_images_that_look_like_another_group_lose_fidelity(race_classifier):
    """Prompts ask for Asian (0) but the images show White (2): fidelity of the Asian group near 0,
    and share_predicted says where they went."""
    prompted = np.zeros(30, dtype=int)
    table = attribute_fidelity(race_classifier, images_showing(np.full(30, 2), 4), meta_for(prompted, 4), FAIRGENMED,
                               "drifting method")
    asian = table[(table.group == "Asian")].set_index(["metric", "predicted"])["value"]
    assert asian[("accuracy", "")] < 0.2 and asian[("share_predicted", "White")] > 0.8
    assert set(table.source) == {"drifting method"}


def test_fidelity_table_by_hand():
    meta = pd.DataFrame({"gender": [0, 0, 0, 1, 1, -1]})
    table = fidelity_table({"gender": np.array([0, 0, 1, 1, 0, 1])}, meta, FAIRGENMED, "x")
    acc = table[table.metric == "accuracy"].set_index("group")["value"]
    assert acc["all"] == pytest.approx(3 / 5) and acc["Female"] == pytest.approx(2 / 3) and acc["Male"] == 0.5
    balanced = table[table.metric == "balanced_accuracy"].iloc[0]
    assert balanced.value == pytest.approx((2 / 3 + 0.5) / 2)
    shares = table[table.metric == "share_predicted"].groupby("group")["value"].sum()
    assert np.allclose(shares, 1.0)
    with pytest.raises(ValueError, match="4 predictions but 6 metadata rows"):
        fidelity_table({"gender": np.zeros(4, int)}, meta, FAIRGENMED, "x")


def test_training_refuses_test_rows():
    race = np.array([0, 1, 2, 0])
    with pytest.raises(DataError, match="split"):
        train_attribute_classifiers(images_showing(race, 0), meta_for(race, 0, "test"), images_showing(race, 0),
                                    meta_for(race, 0, "val"), FAIRGENMED, attributes=["race"], epochs=1)
