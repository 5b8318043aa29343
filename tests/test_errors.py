"""Loader errors and rejection tables."""
import pandas as pd

from fairdiff.errors import DataError, Rejections


def test_data_error_names_file_field_and_expectation():
    err = DataError("/d/data_00001.npz", "race", "one of 0, 1, 2", 9)
    assert str(err) == "/d/data_00001.npz, field 'race': expected one of 0, 1, 2; got 9"


def test_frames_carrying_rejections_still_concatenate():
    rej = Rejections(strict=False)
    rej.add("00001", DataError("a.npz", "race", "0..2", 9))
    frame = pd.DataFrame({"split": ["train", "val", "test"], "x": [1, 2, 3]})
    frame.attrs["rejections"] = rej.frame()
    both = pd.concat([frame[frame["split"] == "train"], frame[frame["split"] == "val"]])
    assert list(both["x"]) == [1, 2]
    table = both.attrs["rejections"]
    assert list(table["field"]) == ["race"] and "a.npz" in table["reason"].iloc[0]
    assert (table["id"] == "00001").all()  # column comparisons keep their element-wise meaning
