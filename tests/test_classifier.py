"""Classifiers trained on (generated) images and scored on real ones: learning, determinism, the table."""
from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from fairlearn.metrics import demographic_parity_difference

import fairdiff  # noqa: F401
from fairdiff.evaluate import metrics as M
from fairdiff.evaluate.classifier import (SEMANTIC_COLUMNS, InputAdapter, build_classifier, predict_proba,
                                          semantic_evaluation, train_classifier)
from fairdiff.schema import FAIRGENMED

pytestmark = pytest.mark.usefixtures("one_thread")


FAST = {"epochs": 3, "batch_size": 32, "lr": 3e-3, "in_res": 16}


def brightness_task(n: int, n_classes: int, seed: int, res: int = 16) -> tuple[torch.Tensor, np.ndarray, pd.DataFrame]:
    """Images whose mean brightness encodes the class, plus noise; random FairGenMed demographics."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    noise = torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed)) * 0.4
    images = noise + torch.tensor(y / max(n_classes - 1, 1) * 0.6, dtype=torch.float32)[:, None, None, None]
    meta = pd.DataFrame({a.name: rng.integers(-1, a.n_groups, n) for a in FAIRGENMED.attributes})
    return images, y, meta


@pytest.fixture(scope="module")
def trained():
    x, y, _ = brightness_task(192, 3, seed=0)
    vx, vy, _ = brightness_task(96, 3, seed=1)
    return train_classifier(x, y, vx, vy, n_classes=3, seed=0, **FAST)


def test_classifier_beats_chance_on_held_out_data(trained):
    model, history = trained
    tx, ty, _ = brightness_task(120, 3, seed=2)
    proba = predict_proba(model, tx)
    assert M.auc(ty, proba, 3) > 0.9 and M.accuracy(ty, proba.argmax(1)) > 0.6  # chance: 0.5 and 1/3
    assert list(history.columns) == ["epoch", "train_loss", "val_auc", "val_acc", "selected"]
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_training_is_deterministic_and_keeps_the_best_val_epoch(trained):
    model, history = trained
    x, y, _ = brightness_task(192, 3, seed=0)
    vx, vy, _ = brightness_task(96, 3, seed=1)
    again, history2 = train_classifier(x, y, vx, vy, n_classes=3, seed=0, **FAST)
    pd.testing.assert_frame_equal(history, history2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    other, _ = train_classifier(x, y, vx, vy, n_classes=3, seed=1, **FAST)
    assert not np.allclose(predict_proba(other, vx[:8]), predict_proba(model, vx[:8]))
    best = history.loc[history["selected"]].iloc[0]
    assert history["selected"].sum() == 1 and best.val_auc == history["val_auc"].max()
    assert best.val_acc == history.loc[history["val_auc"] == best.val_auc, "val_acc"].max()  # ties: accuracy
    assert M.auc(vy, predict_proba(model, vx), 3) == pytest.approx(best.val_auc)  # the kept weights are that epoch's


def test_val_auc_ties_go_to_the_more_accurate_epoch():
    x, y, _ = brightness_task(192, 2, seed=0)
    vx, vy, _ = brightness_task(96, 2, seed=1)
    _, history = train_classifier(x, y, vx, vy, n_classes=2, seed=0, **FAST)
    best = history.loc[history["selected"]].iloc[0]
    tied = history[history["val_auc"] == best.val_auc]
    assert len(tied) > 1 and best.val_acc == tied["val_acc"].max() > tied["val_acc"].min()


def test_semantic_table_rows_values_and_intervals(trained):
    model, _ = trained
    tx, ty, meta = brightness_task(150, 3, seed=3)
    table = semantic_evaluation(model, tx, ty, meta, FAIRGENMED, "cdr_status", n_boot=30, seed=0)
    assert list(table.columns) == SEMANTIC_COLUMNS
    proba = predict_proba(model, tx)
    pred = proba.argmax(1)
    value = table.set_index(["attribute", "group", "metric"])["value"]
    assert value[("all", "", "auc")] == pytest.approx(M.auc(ty, proba, 3))
    race = meta["race"].to_numpy()
    group_aucs = [value[("race", name, "auc")] for name in ("Asian", "Black", "White")]
    assert group_aucs[1] == pytest.approx(M.auc(ty[race == 1], proba[race == 1], 3))
    assert value[("race", "", "es_auc")] == pytest.approx(M.equity_scaled(value[("all", "", "auc")], group_aucs, True))
    known = race >= 0
    assert value[("race", "", "dpd")] == pytest.approx(
        np.mean([demographic_parity_difference(ty[known] == c, pred[known] == c, sensitive_features=race[known])
                 for c in range(3)]))
    n = table.set_index(["attribute", "group", "metric"])["n"]
    assert n[("race", "Black", "auc")] == (race == 1).sum() and n[("race", "", "dpd")] == known.sum()
    for metric in ("auc", "acc"):  # smooth statistics: the interval holds the point estimate
        row = table[(table.attribute == "all") & (table.metric == metric)].iloc[0]
        assert row.boot_lo <= row.value <= row.boot_hi and row.n_valid == 30


def test_semantic_evaluation_is_seeded(trained):
    model, _ = trained
    tx, ty, meta = brightness_task(80, 3, seed=4)
    a = semantic_evaluation(model, tx, ty, meta, FAIRGENMED, "cdr_status", n_boot=5, seed=7)
    b = semantic_evaluation(model, tx, ty, meta, FAIRGENMED, "cdr_status", n_boot=5, seed=7)
    pd.testing.assert_frame_equal(a, b)


def test_input_adapter_treats_uint8_and_float_alike():
    x = torch.rand(2, 3, 20, 24)
    adapt = InputAdapter(8)
    assert adapt(x).shape == (2, 3, 8, 8)
    assert torch.allclose(adapt((x * 255).round().byte()), adapt((x * 255).round() / 255), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        adapt(torch.rand(3, 8, 8))


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_backbones_explain_the_missing_extra():
    with pytest.raises(ImportError, match=r"pip install 'fairdiff\[timm\]'"):
        build_classifier("efficientnet_b1", n_classes=2)
    with pytest.raises(ValueError, match="unknown classifier arch"):
        build_classifier("resnet50", n_classes=2)
