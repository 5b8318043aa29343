"""FairGenMed loader and the training Dataset, on small hand-made folders.

The fixture writer below builds the real on-disk format (npz + JPG + data_summary.csv) and its
variants; expected values are written out by hand from the schema, not taken from the loader."""
from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import fairdiff.data.dataset as dataset_module
from fairdiff.data.dataset import ImageRecordDataset
from fairdiff.data.fairgenmed import _NpzMembers, _PickledKey, load_fairgenmed
from fairdiff.data.images import load_image, preprocess
from fairdiff.errors import DataError
from fairdiff.schema import FAIRGENMED, HAM10000

# ---------------------------------------------------------------- fixture writer

STANDARD_FOLDERS = {"train": "train", "val": "val", "test": "test"}
REFRACTION_OLD_WORDS = {"positive": "hyperopia", "neutral": "emmetropia", "negative": "myopia"}

# id, split, npz fields, CSV labels (md_severity, cdr_status, refraction); deliberately not in id order
SUBJECTS = [
    ("00003", "train", dict(race="Black or African American", male=0, hispanic=1, glaucoma=1),
     ("severe", "abnormal", "negative")),
    ("00001", "train", dict(race=0, male=1, hispanic=0, glaucoma=0), ("normal", "normal", "positive")),
    ("00002", "val", dict(race=2, male=0, hispanic=-1, glaucoma=1), ("mild", "borderline", "neutral")),
    ("00005", "test", dict(race="White or Caucasian", male=1, hispanic=0, glaucoma=1),
     ("moderate", "borderline", "negative")),
    ("00004", "test", dict(race=1, male=-1, hispanic=0, glaucoma=0), ("normal", "normal", "positive")),
]

# expected rows, by hand from the schema (sorted by split then id)
EXPECTED = pd.DataFrame({
    "id": ["00001", "00003", "00002", "00004", "00005"],
    "split": ["train", "train", "val", "test", "test"],
    "race": [0, 1, 2, 1, 2],
    "gender": [1, 0, 0, -1, 1],
    "ethnicity": [0, 1, -1, 0, 0],
    "glaucoma": [0, 1, 1, 0, 1],
    "md_severity": [0, 3, 1, 0, 2],
    "cdr_status": [0, 2, 1, 0, 1],
    "refraction": [0, 2, 1, 0, 2],
    "prompt": [
        "SLO fundus image of a Asian Male Non-Hispanic patient with the following conditions: "
        "non-glaucoma, normal vision, normal cup-disc ratio, positive",
        "SLO fundus image of a Black Female Hispanic patient with the following conditions: "
        "glaucoma, severe vision loss, abnormal cup-disc ratio, negative",
        "SLO fundus image of a White Female patient with the following conditions: "
        "glaucoma, mild vision loss, borderline cup-disc ratio, neutral",
        "SLO fundus image of a Black Non-Hispanic patient with the following conditions: "
        "non-glaucoma, normal vision, normal cup-disc ratio, positive",
        "SLO fundus image of a White Male Non-Hispanic patient with the following conditions: "
        "glaucoma, moderate vision loss, borderline cup-disc ratio, negative",
    ],
})
CHECKED = ["id", "split", "race", "gender", "ethnicity", "glaucoma", "md_severity", "cdr_status", "refraction",
           "prompt"]
PLAIN = ("normal", "normal", "neutral")


def write_subject(folder: Path, sid: str, *, jpg: bool | bytes = True, **npz) -> None:
    """``data_<sid>.npz`` (defaults overridden by ``npz``; a value None drops the key) and a tiny
    ``slo_fundus_<sid>.jpg`` (``jpg`` False: none, bytes: those bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = {"race": 2, "male": 0, "hispanic": 0, "glaucoma": 0, "md": -1.5,
              "slo_fundus": np.full((6, 5, 3), 7, np.uint8)}
    fields.update(npz)
    np.savez(folder / f"data_{sid}.npz", **{k: np.asarray(v) for k, v in fields.items() if v is not None})
    if jpg is True:
        rng = np.random.default_rng(int(sid))
        Image.fromarray(rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)).save(folder / f"slo_fundus_{sid}.jpg")
    elif isinstance(jpg, bytes):
        (folder / f"slo_fundus_{sid}.jpg").write_bytes(jpg)


def summary_row(sid: str, labels=("normal", "normal", "neutral"), **extra) -> dict:
    md, cdr, refraction = labels
    row = {"filename": f"data_{sid}.npz", "md_severity": md, "cdr_status": cdr,
           "near_vision_refraction_stage": refraction, "rnflt_status": "medium", "age": "60.5", "use": "training"}
    row.update(extra)
    return row


def write_summary(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def build(root: Path, *, folders=STANDARD_FOLDERS, csv_dir: str = "", se_status: bool = False,
          alias_keys: bool = False, race_case=None, subjects=SUBJECTS) -> Path:
    """The SUBJECTS folder in the standard layout, or in one of the released variants."""
    rows = []
    for sid, split, npz, labels in subjects:
        npz = dict(npz)
        if alias_keys:
            npz["gender"], npz["ethnicity"] = npz.pop("male"), npz.pop("hispanic")
            npz["male"] = npz["hispanic"] = None
        if race_case and isinstance(npz["race"], str):
            npz["race"] = race_case(npz["race"])
        write_subject(root / folders[split], sid, **npz)
        rows.append(summary_row(sid, labels))
    if se_status:
        for row in rows:
            row["se_status"] = REFRACTION_OLD_WORDS[row.pop("near_vision_refraction_stage")]
    write_summary(root / csv_dir / "data_summary.csv", rows)
    return root


def rewrite_summary(root: Path, change) -> None:
    path = root / "data_summary.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    change(frame).to_csv(path, index=False)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def quiet_load(root: Path, **kwargs) -> pd.DataFrame:
    """Lenient load that expects the 'skipped subjects' warning."""
    with pytest.warns(UserWarning, match="skipped"):
        return load_fairgenmed(root, **kwargs)


# ---------------------------------------------------------------- the standard folder

def test_standard_folder_known_values(tmp_path):
    root = build(tmp_path / "fgm")
    frame = load_fairgenmed(root)
    pd.testing.assert_frame_equal(frame[CHECKED], EXPECTED, check_dtype=False)
    assert list(frame.columns[:12]) == ["id", "split", "image_path", "npz_path", "prompt", "race", "gender",
                                        "ethnicity", "glaucoma", "md_severity", "cdr_status", "refraction"]
    for _, row in frame.iterrows():
        image, npz = Path(row.image_path), Path(row.npz_path)
        assert image.is_absolute() and image.is_file() and image.name == f"slo_fundus_{row.id}.jpg"
        assert npz.parent == image.parent and npz.name == f"data_{row.id}.npz"
        assert image.parent.name == row.split
    assert frame.attrs["schema"] == "fairgenmed"
    assert frame.attrs["root"] == str(root.resolve())
    assert frame.attrs["unknown"] == {"race": 0, "gender": 1, "ethnicity": 1}
    rejections = frame.attrs["rejections"]
    assert list(rejections.columns) == ["id", "file", "field", "reason"] and rejections.empty


def test_prompts_agree_with_the_schema(tmp_path):
    frame = load_fairgenmed(build(tmp_path / "fgm"))
    for _, row in frame.iterrows():
        ids = {name: row[name] for name in FAIRGENMED.attribute_names + FAIRGENMED.label_names}
        assert row.prompt == FAIRGENMED.prompt(**ids)


def test_optional_columns_when_present(tmp_path):
    frame = load_fairgenmed(build(tmp_path / "fgm"))
    assert frame["md"].tolist() == [-1.5] * 5  # npz md
    assert frame["age"].tolist() == [60.5] * 5
    assert frame["rnflt_status"].tolist() == [1] * 5  # medium


def test_optional_columns_absent_or_from_csv(tmp_path):
    bare = [(sid, split, {**npz, "md": None}, labels) for sid, split, npz, labels in SUBJECTS]
    root = build(tmp_path / "fgm", subjects=bare)
    rewrite_summary(root, lambda f: f.drop(columns=["age", "rnflt_status"]))
    frame = load_fairgenmed(root)
    assert not {"md", "age", "rnflt_status"} & set(frame.columns)
    rewrite_summary(root, lambda f: f.assign(md=["-7.25"] * len(f)))
    assert load_fairgenmed(root)["md"].tolist() == [-7.25] * 5


def test_split_selection(tmp_path):
    root = build(tmp_path / "fgm")
    assert load_fairgenmed(root, splits=("test",))["id"].tolist() == ["00004", "00005"]
    assert load_fairgenmed(root, splits="val")["id"].tolist() == ["00002"]
    with pytest.raises(ValueError, match="dev"):
        load_fairgenmed(root, splits=("dev",))


# ---------------------------------------------------------------- variants give the same table

VARIANTS = {
    "release folder names": dict(folders={"train": "Training", "val": "Validation", "test": "Test"}),
    "folder names in other case": dict(folders={"train": "TRAIN", "val": "validation", "test": "tEsT"}),
    "csv in ReadMe": dict(csv_dir="ReadMe"),
    "se_status column": dict(se_status=True),
    "gender/ethnicity keys": dict(alias_keys=True),
    "race text in upper case": dict(race_case=str.upper),
    "race text in lower case": dict(race_case=str.lower),
    "all at once": dict(folders={"train": "Training", "val": "Validation", "test": "Test"}, csv_dir="ReadMe",
                        se_status=True, alias_keys=True, race_case=str.lower),
}


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_variants_give_the_same_table(tmp_path, variant):
    frame = load_fairgenmed(build(tmp_path / "fgm", **VARIANTS[variant]))
    pd.testing.assert_frame_equal(frame[CHECKED], EXPECTED, check_dtype=False)


def test_short_race_words_and_text_codes(tmp_path):
    subjects = [("00001", "train", dict(race="white", male="Male", hispanic="Hispanic"), PLAIN),
                ("00002", "val", dict(race=" Black ", male="female", hispanic="unknown"), PLAIN),
                ("00003", "test", dict(race="asian", male=np.float64(1.0), hispanic="Non-Hispanic"), PLAIN)]
    frame = load_fairgenmed(build(tmp_path / "fgm", subjects=subjects))
    assert frame["race"].tolist() == [2, 1, 0]
    assert frame["gender"].tolist() == [1, 0, 1]
    assert frame["ethnicity"].tolist() == [1, -1, 0]


def test_fairgenmed_key_names_win_over_their_aliases(tmp_path):
    subjects = [("00001", "train", dict(male=1, gender=0, hispanic=0, ethnicity=1), PLAIN),
                ("00002", "val", {}, PLAIN), ("00003", "test", {}, PLAIN)]
    frame = load_fairgenmed(build(tmp_path / "fgm", subjects=subjects))
    assert (frame["gender"][0], frame["ethnicity"][0]) == (1, 0)  # from male and hispanic


# ---------------------------------------------------------------- legacy race codes

def legacy_subjects(codes):
    splits = ["train", "train", "val", "test", "test"]
    return [(f"0000{i + 1}", splits[i], dict(race=code), PLAIN) for i, code in enumerate(codes)]


def test_legacy_race_codes_are_detected_per_folder(tmp_path):
    frame = load_fairgenmed(build(tmp_path / "a", subjects=legacy_subjects([2, 3, 7, 7, 2])))
    assert frame["race"].tolist() == [0, 1, 2, 2, 0]  # 2 Asian, 3 Black, 7 White
    assert "raw codes" in frame.attrs["race_coding"]
    plain = load_fairgenmed(build(tmp_path / "b", subjects=legacy_subjects([2, 1, 0, 2, 2])))
    assert plain["race"].tolist() == [2, 1, 0, 2, 2]  # no 3 or 7 anywhere: 2 means White
    assert "raw codes" not in plain.attrs["race_coding"]


def test_legacy_codes_outside_the_schema_are_unknown(tmp_path):
    frame = load_fairgenmed(build(tmp_path / "fgm", subjects=legacy_subjects([3, 5, -1, 7, 2])))
    assert frame["race"].tolist() == [1, -1, -1, 2, 0]
    assert frame.attrs["unknown"]["race"] == 2
    assert frame["prompt"][1].startswith("SLO fundus image of a Female Non-Hispanic patient")


def test_mixed_codings_reject_the_impossible_value(tmp_path):
    frame = quiet_load(build(tmp_path / "fgm", subjects=legacy_subjects([3, 0, 7, 2, 2])))
    assert frame["id"].tolist() == ["00001", "00003", "00004", "00005"]
    rejected = frame.attrs["rejections"]
    assert rejected[["id", "field"]].values.tolist() == [["00002", "race"]]


# ---------------------------------------------------------------- pickled npz content

def pickled_race(root: Path) -> Path:
    build(root)
    write_subject(root / "train", "00001", race=np.array("Asian", dtype=object), male=1)
    return root


def test_pickled_key_is_refused_by_default(tmp_path):
    root = pickled_race(tmp_path / "fgm")
    frame = quiet_load(root)
    assert "00001" not in frame["id"].tolist()
    rejected = frame.attrs["rejections"].iloc[0]
    assert (rejected.id, rejected.field, Path(rejected.file).name) == ("00001", "race", "data_00001.npz")
    assert "trust_pickle" in rejected.reason
    with pytest.raises(DataError, match="pickled") as info:
        load_fairgenmed(root, strict=True)
    assert info.value.field == "race" and info.value.file.endswith("data_00001.npz")


def test_trust_pickle_loads_with_a_warning(tmp_path):
    root = pickled_race(tmp_path / "fgm")
    write_subject(root / "val", "00002", race=2, male=0, hispanic=-1, glaucoma=1,
                  slo_fundus=np.array([np.zeros((3, 3))], dtype=object))
    with pytest.warns(UserWarning, match="trust"):
        frame = load_fairgenmed(root, trust_pickle=True)
    pd.testing.assert_frame_equal(frame[CHECKED], EXPECTED, check_dtype=False)
    assert frame.attrs["rejections"].empty


def test_trust_pickle_is_a_setting_of_the_pipeline(tmp_path):
    """data.trust_pickle (--trust-pickle) reaches the loader; it is left out of every stage key."""
    from fairdiff.config import load_config
    from fairdiff.prepare import load_records
    from fairdiff.stage_keys import base_stage

    root = pickled_race(tmp_path / "fgm")
    cfg = load_config("smoke", "fairgenmed", {"data": {"root": str(root)}})
    with pytest.warns(UserWarning, match="skipped"):
        assert "00001" not in load_records(cfg)["id"].tolist()
    trusted = load_config("smoke", "fairgenmed", {"data": {"root": str(root)}}, sets=["data.trust_pickle=true"])
    with pytest.warns(UserWarning, match="trust"):
        assert "00001" in load_records(trusted)["id"].tolist()
    assert base_stage(trusted).key == base_stage(cfg).key


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_member_reader_matches_numpy(tmp_path, version, compression):
    arrays = {"int": np.array(7), "big_endian": np.array(-2.5, dtype=">f4"), "text": np.array("Wörld"),
              "bytes": np.array(b"xy"), "flag": np.array(True), "vector": np.array([3, 1, 2], dtype=np.int16),
              "fortran": np.asfortranarray(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)), "empty": np.zeros((0, 5))}
    path = tmp_path / "a.npz"
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for key, array in arrays.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, array, version=version)
    with np.load(path) as reference, _NpzMembers(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(reference.files)
        for key in arrays:
            expected, got = reference[key], npz.array(key)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
            assert npz.header(key) == (expected.shape, key == "fortran", expected.dtype)
        assert npz.scalar("text") == "Wörld" and npz.scalar("int") == 7 and npz.scalar("flag") is True
        with pytest.raises(DataError, match="single value"):
            npz.scalar("vector")


def test_npz_member_reader_unpickles_only_when_allowed(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, obj=np.array({"a": 1}, dtype=object))
    with _NpzMembers(path, allow_pickle=False) as npz, pytest.raises(_PickledKey):
        npz.array("obj")
    with _NpzMembers(path, allow_pickle=True) as npz:
        assert npz.scalar("obj") == {"a": 1}


# ---------------------------------------------------------------- one broken subject

def drop_file(name):
    return lambda root: (root / name).unlink()


def rewrite_npz(split, sid, **npz):
    return lambda root: write_subject(root / split, sid, jpg=False, **npz)


def change_csv(change):
    return lambda root: rewrite_summary(root, change)


def set_cell(sid, column, value):
    def change(frame):
        frame.loc[frame["filename"] == f"data_{sid}.npz", column] = value
        return frame
    return change_csv(change)


# name: (damage, rejected ids, file name of the error, field of the error)
BROKEN = {
    "label outside vocabulary": (set_cell("00003", "md_severity", "sever"), ["00003"], "data_summary.csv",
                                 "md_severity"),
    "refraction outside vocabulary": (set_cell("00003", "near_vision_refraction_stage", "up"), ["00003"],
                                      "data_summary.csv", "near_vision_refraction_stage"),
    "age not a number": (set_cell("00003", "age", "sixty"), ["00003"], "data_summary.csv", "age"),
    "missing jpg": (drop_file("train/slo_fundus_00003.jpg"), ["00003"], "slo_fundus_00003.jpg", "slo_fundus jpg"),
    "unreadable jpg": (lambda r: (r / "train/slo_fundus_00003.jpg").write_bytes(b"not a jpeg"), ["00003"],
                       "slo_fundus_00003.jpg", "slo_fundus jpg"),
    "npz without glaucoma": (rewrite_npz("train", "00003", glaucoma=None), ["00003"], "data_00003.npz", "glaucoma"),
    "npz without gender": (rewrite_npz("train", "00003", male=None), ["00003"], "data_00003.npz", "male | gender"),
    "npz without slo_fundus": (rewrite_npz("train", "00003", slo_fundus=None), ["00003"], "data_00003.npz",
                               "slo_fundus"),
    "empty slo_fundus": (rewrite_npz("train", "00003", slo_fundus=np.zeros((0, 5))), ["00003"], "data_00003.npz",
                         "slo_fundus"),
    "glaucoma not one value": (rewrite_npz("train", "00003", glaucoma=[0, 1]), ["00003"], "data_00003.npz", "glaucoma"),
    "glaucoma unknown": (rewrite_npz("train", "00003", glaucoma=-1), ["00003"], "data_00003.npz", "glaucoma"),
    "race outside vocabulary": (rewrite_npz("train", "00003", race=9), ["00003"], "data_00003.npz", "race"),
    "race text outside vocabulary": (rewrite_npz("train", "00003", race="Martian"), ["00003"], "data_00003.npz",
                                     "race"),
    "gender outside vocabulary": (rewrite_npz("train", "00003", male=5), ["00003"], "data_00003.npz", "male"),
    "corrupt npz": (lambda r: (r / "train/data_00003.npz").write_bytes(b"garbage"), ["00003"], "data_00003.npz", None),
    "npz not in csv": (lambda r: write_subject(r / "train", "00009"), ["00009"], "data_summary.csv", "filename"),
    "npz twice in csv": (change_csv(lambda f: pd.concat([f, f[f["filename"] == "data_00003.npz"]])), ["00003"],
                         "data_summary.csv", "filename"),
    "id in two splits": (lambda r: shutil.copy(r / "train/data_00003.npz", r / "val/data_00003.npz"),
                         ["00003", "00003"], "data_00003.npz", "id"),
    "npz badly named": (lambda r: shutil.copy(r / "train/data_00003.npz", r / "train/data_12a.npz"),
                        ["data_12a.npz"], "data_12a.npz", "filename"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_subject_is_skipped_or_raises(tmp_path, case):
    damage, rejected_ids, file_name, field = BROKEN[case]
    root = build(tmp_path / "fgm")
    damage(root)
    frame = quiet_load(root)
    rejected = frame.attrs["rejections"]
    assert sorted(rejected["id"]) == sorted(rejected_ids)
    assert all(Path(f).name == file_name for f in rejected["file"])
    assert all(f == (field or "") for f in rejected["field"])
    kept = EXPECTED[~EXPECTED["id"].isin(rejected_ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(frame[CHECKED], kept, check_dtype=False)

    with pytest.raises(DataError) as info:
        load_fairgenmed(root, strict=True)
    assert Path(info.value.file).name == file_name and info.value.field == field
    assert "expected" in str(info.value)


# ---------------------------------------------------------------- broken folder: always raises

def two_train_folders(root):
    shutil.copytree(root / "train", root / "Training")


# name: (damage, field of the error, a word of the message)
BROKEN_FOLDER = {
    "no root": (lambda r: shutil.rmtree(r), None, "missing"),
    "no val folder": (lambda r: shutil.rmtree(r / "val"), None, "val"),
    "two train folders": (two_train_folders, None, "Training"),
    "no csv": (drop_file("data_summary.csv"), None, "data_summary.csv"),
    "csv without cdr_status": (change_csv(lambda f: f.drop(columns=["cdr_status"])), "cdr_status", "cdr_status"),
    "csv without refraction": (change_csv(lambda f: f.drop(columns=["near_vision_refraction_stage"])),
                               "near_vision_refraction_stage | se_status", "se_status"),
    "split folder without npz": (lambda r: [p.unlink() for p in (r / "val").glob("*.npz")], None, "npz"),
}


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("case", BROKEN_FOLDER, ids=list(BROKEN_FOLDER))
def test_broken_folder_always_raises(tmp_path, case, strict):
    damage, field, word = BROKEN_FOLDER[case]
    root = build(tmp_path / "fgm")
    damage(root)
    with pytest.raises(DataError, match=word) as info:
        load_fairgenmed(root, strict=strict)
    assert info.value.field == field


# ---------------------------------------------------------------- the dataset folder is never touched

def test_loading_leaves_the_folder_byte_identical(tmp_path):
    root = pickled_race(tmp_path / "fgm")
    (root / "test/slo_fundus_00004.jpg").write_bytes(b"broken")  # a rejected subject too
    before = snapshot(tmp_path)
    quiet_load(root)
    with pytest.warns(UserWarning):
        load_fairgenmed(root, trust_pickle=True)
    with pytest.warns(UserWarning, match="trust"):
        frame = load_fairgenmed(root, trust_pickle=True, splits=("train",))
    ds = ImageRecordDataset(frame, FAIRGENMED, resolution=4)
    ds[0]
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- the training Dataset

def test_dataset_items_match_the_frame(tmp_path):
    frame = load_fairgenmed(build(tmp_path / "fgm"))
    ds = ImageRecordDataset(frame, FAIRGENMED, resolution=8)
    assert len(ds) == 5
    item = ds[1]  # 00003: Black Female Hispanic, glaucoma, severe, abnormal, negative
    assert item["index"] == 1 and item["prompt"] == EXPECTED["prompt"][1]
    assert item["groups"].tolist() == [1, 0, 1] and item["groups"].dtype == torch.long
    assert item["labels"].tolist() == [1, 3, 2, 2] and item["labels"].dtype == torch.long
    x = item["pixel_values"]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    # rotate=None follows the schema: FairGenMed is rotated
    assert torch.equal(x, preprocess(load_image(frame.image_path[1]), 8, rotate=True))
    assert ds[3]["groups"].tolist() == [1, -1, 0]  # unknown gender stays -1
    assert ds[-1]["index"] == 4
    with pytest.raises(IndexError):
        ds[5]
    upright = ImageRecordDataset(frame, FAIRGENMED, resolution=8, rotate=False)[1]["pixel_values"]
    assert torch.equal(upright, preprocess(load_image(frame.image_path[1]), 8, rotate=False))
    assert not torch.equal(upright, x)


def test_dataset_cache_reads_each_image_once(tmp_path, monkeypatch):
    frame = load_fairgenmed(build(tmp_path / "fgm"))
    calls = []

    def counting_load(path):
        calls.append(path)
        return load_image(path)

    monkeypatch.setattr(dataset_module, "load_image", counting_load)
    cached = ImageRecordDataset(frame, FAIRGENMED, resolution=8)
    first, second = cached[2]["pixel_values"], cached[2]["pixel_values"]
    assert len(calls) == 1 and torch.equal(first, second)
    uncached = ImageRecordDataset(frame, FAIRGENMED, resolution=8, cache=False)
    again = [uncached[2]["pixel_values"] for _ in range(2)]
    assert len(calls) == 3 and torch.equal(again[0], first) and torch.equal(again[1], first)


def test_dataset_works_for_another_schema(tmp_path):
    path = tmp_path / "ISIC_0000001.jpg"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (9, 12, 3), dtype=np.uint8)).save(path)
    frame = pd.DataFrame({"id": ["ISIC_0000001"], "split": ["train"], "image_path": [str(path)],
                          "prompt": ["Dermoscopic image of a Female Age under 60 patient with the following "
                                     "diagnostic category: malignant"],
                          "sex": [1], "age": [0], "malignant": [1]})
    item = ImageRecordDataset(frame, HAM10000, resolution=6)[0]
    assert item["groups"].tolist() == [1, 0] and item["labels"].tolist() == [1]
    assert torch.equal(item["pixel_values"], preprocess(load_image(path), 6, rotate=False))  # HAM is not rotated


def test_dataset_names_missing_columns(tmp_path):
    frame = load_fairgenmed(build(tmp_path / "fgm")).drop(columns=["ethnicity"])
    with pytest.raises(ValueError, match="ethnicity"):
        ImageRecordDataset(frame, FAIRGENMED, resolution=8)


# ---------------------------------------------------------------- rows without files, files without rows, damaged photos

def truncated_jpeg(seed: int = 0) -> bytes:
    """A noisy 64 x 48 JPEG cut in half: the header is intact, half the compressed data is gone."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[:len(data) // 2]


def test_row_whose_npz_is_missing_is_rejected_naming_the_row_and_the_file(tmp_path):
    root = build(tmp_path / "fgm")
    (root / "train/data_00003.npz").unlink()  # its photo stays: a photo without its npz, rejected too
    frame = quiet_load(root)
    rejected = frame.attrs["rejections"].sort_values("file").reset_index(drop=True)
    assert rejected["id"].tolist() == ["00003", "00003"] and set(rejected["field"]) == {"filename"}
    assert [Path(f).name for f in rejected["file"]] == ["data_summary.csv", "slo_fundus_00003.jpg"]
    assert "row 1: data_00003.npz is in none of" in rejected["reason"][0]  # 00003 is the CSV's first row
    assert "no data_00003.npz" in rejected["reason"][1]
    assert "00003" not in frame["id"].tolist() and len(frame) == 4
    with pytest.raises(DataError, match="data_00003.npz") as info:
        load_fairgenmed(root, strict=True)
    assert info.value.field == "filename"


def test_dangling_symlink_npz_is_rejected_not_dropped(tmp_path):
    root = build(tmp_path / "fgm")
    link = root / "test/data_00004.npz"
    link.unlink()
    link.symlink_to(tmp_path / "gone.npz")
    frame = quiet_load(root)
    rejected = frame.attrs["rejections"]
    assert rejected[["id", "field"]].values.tolist() == [["00004", "filename"]]
    assert rejected["file"][0] == str(link) and "dangling symlink" in rejected["reason"][0]
    assert frame["id"].tolist() == ["00001", "00003", "00002", "00005"]
    with pytest.raises(DataError, match="dangling"):
        load_fairgenmed(root, strict=True)


def test_rows_of_unloaded_splits_are_checked_only_through_their_use_column(tmp_path):
    root = build(tmp_path / "fgm")
    (root / "train/data_00003.npz").unlink()
    (root / "train/slo_fundus_00003.jpg").unlink()
    assert load_fairgenmed(root, splits=("test",))["id"].tolist() == ["00004", "00005"]  # use: training, not loaded
    rewrite_summary(root, lambda f: f.assign(use="test"))
    frame = quiet_load(root, splits=("test",))
    assert frame.attrs["rejections"]["id"].tolist() == ["00003"]


def test_photo_without_npz_is_rejected(tmp_path):
    root = build(tmp_path / "fgm")
    shutil.copy(root / "test/slo_fundus_00004.jpg", root / "test/slo_fundus_00009.jpg")
    frame = quiet_load(root)
    rejected = frame.attrs["rejections"]
    assert rejected[["id", "field"]].values.tolist() == [["00009", "filename"]]
    assert Path(rejected["file"][0]).name == "slo_fundus_00009.jpg" and "data_summary.csv" in rejected["reason"][0]
    pd.testing.assert_frame_equal(frame[CHECKED], EXPECTED, check_dtype=False)


def test_truncated_photo_is_rejected_at_load_time_with_its_path(tmp_path):
    root = build(tmp_path / "fgm")
    photo = root / "train/slo_fundus_00003.jpg"
    photo.write_bytes(truncated_jpeg())
    frame = quiet_load(root)
    rejected = frame.attrs["rejections"]
    assert rejected[["id", "field"]].values.tolist() == [["00003", "slo_fundus jpg"]]
    assert rejected["file"][0] == str(photo) and "truncated" in rejected["reason"][0]
    with pytest.raises(DataError, match="truncated") as info:
        load_fairgenmed(root, strict=True)
    assert info.value.file == str(photo)


def test_symlinks_placed_under_the_root_are_followed(tmp_path):
    root = build(tmp_path / "fgm")
    elsewhere = tmp_path / "elsewhere"
    shutil.move(root / "test", elsewhere)
    (root / "test").symlink_to(elsewhere, target_is_directory=True)  # a split folder on another disk
    shutil.move(root / "train/slo_fundus_00001.jpg", elsewhere.parent / "photo.jpg")
    (root / "train/slo_fundus_00001.jpg").symlink_to(elsewhere.parent / "photo.jpg")
    frame = load_fairgenmed(root)
    pd.testing.assert_frame_equal(frame[CHECKED], EXPECTED, check_dtype=False)
    assert frame.attrs["rejections"].empty


def test_validation_is_carved_when_every_val_subject_is_rejected(tmp_path, caplog):
    root = build(tmp_path / "fgm")
    (root / "val/slo_fundus_00002.jpg").write_bytes(truncated_jpeg())
    with caplog.at_level("WARNING", logger="fairdiff.data"):
        frame = quiet_load(root, val_fraction=0.5, seed=0)
    assert sorted(frame.loc[frame["split"] != "test", "id"]) == ["00001", "00003"]
    assert frame["split"].value_counts().to_dict() == {"train": 1, "val": 1, "test": 2}
    assert frame.attrs["val_carved"] == {"fraction": 0.5, "seed": 0, "by": "id", "groups": 1, "rows": 1,
                                         "of_train_rows": 2}
    assert "set aside 1 of 2 training rows" in caplog.text
