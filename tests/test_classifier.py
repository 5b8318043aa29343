"""Classifiers trained on (generated) images and scored on real ones: learning, determinism, the table."""
from __future__ import annotations

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
    assert list(history.columns) == ["epoch", "train_loss", "val_auc", "val_acc", "selected", "arch", "init"]
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


TINY = {"efficientnet_b1": {"width_coefficient": 0.1, "depth_coefficient": 0.1, "hidden_dim": 128},
        "vit_b16": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                    "patch_size": 8}}


def quantised(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 [N, 3, H, W], the same images as float [0, 1], contiguous like the streamed batches)."""
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return u8, u8.float().div(255.0)


class ImageList(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i]}


def test_streamed_uint8_sources_train_the_same_model_as_a_float_tensor(tmp_path):
    from fairdiff import arrays

    x, y, _ = brightness_task(96, 3, seed=0)
    vx, vy, _ = brightness_task(48, 3, seed=1)
    (u8, as_float), (vu8, v_float) = quantised(x), quantised(vx)
    arrays.create(tmp_path / "train.npy", (96, 16, 16, 3), np.uint8)
    arrays.write_rows(tmp_path / "train.npy", 0, u8.permute(0, 2, 3, 1))
    ref, ref_hist = train_classifier(as_float, y, v_float, vy, n_classes=3, seed=0, **FAST)
    for source, val in ((arrays.NpyRows(tmp_path / "train.npy"), vu8), (ImageList(u8), ImageList(vu8))):
        model, hist = train_classifier(source, y, val, vy, n_classes=3, seed=0, **FAST)
        pd.testing.assert_frame_equal(hist, ref_hist)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    # Predictions do not depend on the batch size, up to float32 rounding: on some CPUs oneDNN picks its
    # convolution kernel by batch size (seen here: 1e-7 apart at batch 7 against one batch of 48).
    np.testing.assert_allclose(predict_proba(ref, ImageList(vu8), batch_size=7), predict_proba(ref, v_float),
                               rtol=1e-5, atol=1e-7)


def test_boot_mean_and_std_are_the_authors_mean_and_std_over_resamples(trained):
    model, _ = trained
    tx, ty, meta = brightness_task(90, 3, seed=5)
    table = semantic_evaluation(model, tx, ty, meta, FAIRGENMED, "cdr_status", n_boot=25, seed=3)
    proba = predict_proba(model, tx)
    rng = np.random.default_rng(3)  # the bootstrap's resamples: n rows with replacement, seeded
    accs = []
    for _ in range(25):
        rows = rng.integers(0, len(ty), len(ty))
        accs.append(M.accuracy(ty[rows], proba[rows].argmax(1)))
    row = table[(table.attribute == "all") & (table.metric == "acc")].iloc[0]
    assert row.boot_mean == pytest.approx(np.mean(accs)) and row.boot_std == pytest.approx(np.std(accs))
    assert row.boot_std > 0


@pytest.mark.parametrize("arch", ["efficientnet_b1", "vit_b16"])
def test_paper_backbones_build_train_and_predict_at_tiny_size(arch):
    x, y, _ = brightness_task(24, 2, seed=0, res=32)
    model, history = train_classifier(x, y, x[:12], y[:12], n_classes=2, epochs=1, batch_size=12, lr=1e-3, seed=0,
                                      arch=arch, in_res=32, config_overrides=TINY[arch])
    assert history["init"].iloc[0].startswith("random initialisation") and history["arch"].iloc[0] == arch
    proba = predict_proba(model, (x[:5] * 255).byte())  # uint8 input of another size is resized inside
    assert proba.shape == (5, 2) and np.allclose(proba.sum(1), 1.0)


def test_real_sized_backbones_have_the_papers_sizes():
    """EfficientNet-B1 (7.8 M parameters with its 1000-class head, 6.5 M without) and ViT-B/16 (86 M)."""
    from fairdiff.models import count_parameters

    b1 = build_classifier("efficientnet_b1", n_classes=1000, in_res=200)
    assert 7.7e6 < count_parameters(b1) < 7.9e6
    vit = build_classifier("vit_b16", n_classes=1000, in_res=224)
    assert 86.4e6 < count_parameters(vit) < 86.7e6


@pytest.mark.parametrize("arch", ["efficientnet_b1", "vit_b16"])
def test_local_weights_load_and_only_the_head_is_new(arch, tmp_path):
    from fairdiff.evaluate.classifier import HFBackbone

    saved = build_classifier(arch, n_classes=5, in_res=32, config_overrides=TINY[arch])
    net = next(m for m in saved.modules() if isinstance(m, HFBackbone)).net
    net.save_pretrained(tmp_path / "folder")
    for weights in (tmp_path / "folder", tmp_path / "folder" / "model.safetensors"):
        loaded = build_classifier(arch, n_classes=2, in_res=32, weights_path=weights, config_overrides=TINY[arch])
        assert str(tmp_path / "folder") in loaded.init
        mine, theirs = loaded.state_dict(), saved.state_dict()
        head = [k for k in mine if mine[k].shape != theirs[k].shape]
        assert head and all("classifier" in k for k in head)  # the 5-class head is replaced by a 2-class one
        assert all(torch.equal(mine[k], theirs[k]) for k in mine if k not in head)


def test_missing_weights_name_the_file_and_how_to_get_them(tmp_path):
    from fairdiff.errors import DataError

    with pytest.raises(DataError, match=r"weights/b1.*google/efficientnet-b1.*save_pretrained.*missing"):
        build_classifier("efficientnet_b1", n_classes=2, weights_path="weights/b1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"google/vit-base-patch16-224.*without a config.json"):
        build_classifier("vit_b16", n_classes=2, weights_path=tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown classifier arch"):
        build_classifier("resnet50", n_classes=2)


def test_classifier_settings_from_a_config_entry():
    from fairdiff.errors import ConfigError
    from fairdiff.evaluate.classifier import classifier_settings

    entry = {"arch": "efficientnet_b1", "image_size": None, "lr": 1e-3, "epochs": 10, "batch_size": 16,
             "weights": "weights/efficientnet-b1"}
    assert classifier_settings(entry, resolution=64) == {
        "arch": "efficientnet_b1", "in_res": 64, "lr": 1e-3, "epochs": 10, "batch_size": 16,
        "weights_path": "weights/efficientnet-b1"}
    assert classifier_settings(entry | {"image_size": 200}, 64)["in_res"] == 200
    with pytest.raises(ConfigError, match="unknown keys.*'depth'"):
        classifier_settings(entry | {"depth": 3}, 64)
    with pytest.raises(ConfigError, match="arch"):
        classifier_settings(entry | {"arch": "resnet"}, 64)
