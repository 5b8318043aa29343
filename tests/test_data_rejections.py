"""The rejection table a CLI prints, the validation carving shared by every loader, and load_dataset's keywords."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairdiff.data import load_dataset, rejection_table
from fairdiff.data.common import carve_validation
from fairdiff.errors import DataError, Rejections
from test_fairgenmed_loader import build, truncated_jpeg


def frame_with(rejections) -> pd.DataFrame:
    frame = pd.DataFrame({"id": ["a"]})
    frame.attrs["rejections"] = rejections
    return frame


def test_rejection_table_splits_messages_and_counts_per_reason():
    collected = Rejections(strict=False)
    collected.add("1", DataError("/d/a.jpg", "image", "a readable image file", "OSError: image file is truncated"))
    collected.add("2", DataError("/d/b.jpg", "image", "a readable image file", "OSError: broken data stream"))
    collected.add("3", DataError("/d/s.csv", "filename", "for every row, its npz", "row 4: data_3.npz"))
    table = rejection_table(frame_with(collected.frame()))
    assert list(table.columns) == ["file", "field", "reason", "count", "id", "detail"]
    assert table.to_dict("records") == [
        {"file": "/d/a.jpg", "field": "image", "reason": "expected a readable image file", "count": 2, "id": "1",
         "detail": "'OSError: image file is truncated'"},
        {"file": "/d/b.jpg", "field": "image", "reason": "expected a readable image file", "count": 2, "id": "2",
         "detail": "'OSError: broken data stream'"},
        {"file": "/d/s.csv", "field": "filename", "reason": "expected for every row, its npz", "count": 1, "id": "3",
         "detail": "'row 4: data_3.npz'"}]


def test_rejection_table_of_a_clean_load_is_empty(tmp_path):
    table = rejection_table(load_dataset("fairgenmed", build(tmp_path / "fgm")))
    assert table.empty and list(table.columns) == ["file", "field", "reason", "count", "id", "detail"]
    assert rejection_table(pd.DataFrame()).empty  # no attrs at all


def test_rejection_table_of_a_damaged_folder(tmp_path):
    root = build(tmp_path / "fgm")
    for sid, split in (("00001", "train"), ("00005", "test")):
        (root / split / f"slo_fundus_{sid}.jpg").write_bytes(truncated_jpeg())
    (root / "train/data_00003.npz").unlink()  # its CSV row and its photo are left without it
    with pytest.warns(UserWarning, match="skipped"):
        frame = load_dataset("fairgenmed", root)
    table = rejection_table(frame)
    assert table["count"].tolist() == [2, 2, 1, 1]
    assert table["field"].tolist() == ["slo_fundus jpg", "slo_fundus jpg", "filename", "filename"]
    assert table["reason"][0] == "expected a readable image file that decodes completely"
    assert "truncated" in table["detail"][0]
    assert [Path(f).name for f in table["file"][:2]] == ["slo_fundus_00005.jpg", "slo_fundus_00001.jpg"]  # by path


# ----------------------------------------------------------------------------- carving
def toy(n_groups: int, rows_per_group: int = 2, with_val: bool = False) -> pd.DataFrame:
    groups = [f"L{g:02d}" for g in range(n_groups) for _ in range(rows_per_group)]
    frame = pd.DataFrame({"id": [f"{g}_{k}" for k, g in enumerate(groups)], "lesion": groups,
                          "split": ["train"] * len(groups)})
    frame.loc[frame.index[-rows_per_group:], "split"] = "val" if with_val else "test"
    frame.attrs = {"root": "/data/toy", "rejections": pd.DataFrame()}
    return frame


def test_carving_moves_whole_groups_of_train_only():
    frame = toy(21)  # 20 training groups of 2 rows, 1 test group
    out = carve_validation(frame, "lesion", 0.1, seed=0)
    assert (out.groupby("lesion")["split"].nunique() == 1).all()
    assert out.loc[out["split"] == "val", "lesion"].nunique() == 2 and (out["split"] == "val").sum() == 4
    assert out.loc[out["split"] == "test", "id"].tolist() == frame.loc[frame["split"] == "test", "id"].tolist()
    assert out.attrs["val_carved"] == {"fraction": 0.1, "seed": 0, "by": "lesion", "groups": 2, "rows": 4,
                                       "of_train_rows": 40}
    assert out.attrs["root"] == "/data/toy" and "val_carved" not in frame.attrs  # the input is not changed
    assert out["split"].tolist() == sorted(out["split"], key=["train", "val", "test"].index)


def test_carving_is_seeded_and_does_not_depend_on_row_order():
    frame = toy(21)
    first = carve_validation(frame, "lesion", 0.2, seed=5)
    shuffled = frame.sample(frac=1.0, random_state=1)
    shuffled.attrs = frame.attrs
    again = carve_validation(shuffled, "lesion", 0.2, seed=5)
    assert set(again.loc[again["split"] == "val", "lesion"]) == set(first.loc[first["split"] == "val", "lesion"])
    others = {frozenset(carve_validation(frame, "lesion", 0.2, seed=s).query("split == 'val'")["lesion"])
              for s in range(6)}
    assert len(others) > 1


def test_carving_leaves_a_frame_with_validation_alone_and_checks_its_input():
    frame = toy(5, with_val=True)
    assert carve_validation(frame, "lesion", 0.1, 0) is frame
    assert (carve_validation(toy(3), "lesion", 0.01, 0)["split"] == "val").sum() == 2  # at least one group
    for fraction in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            carve_validation(toy(5), "lesion", fraction, 0)
    with pytest.raises(DataError, match="two training groups"):
        carve_validation(toy(2), "lesion", 0.5, 0)  # one training group: nothing to carve from


def test_load_dataset_passes_strict_and_carving_settings(tmp_path):
    root = build(tmp_path / "fgm")
    (root / "val/slo_fundus_00002.jpg").write_bytes(truncated_jpeg())
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fairgenmed", root, strict=True)
    with pytest.warns(UserWarning, match="skipped"):
        frame = load_dataset("fairgenmed", root, val_fraction=0.5, seed=2)
    assert frame.attrs["val_carved"]["fraction"] == 0.5 and frame.attrs["val_carved"]["seed"] == 2
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist", root)
    assert np.isin(frame["split"], ["train", "val", "test"]).all()
