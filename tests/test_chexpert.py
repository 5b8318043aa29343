"""CheXpert: synthetic generator -> loader round trip, demographics, bad input, splits, determinism."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fairdiff  # noqa: F401  (sets cache folders)
from fairdiff.data.chexpert import OBSERVATIONS, load_chexpert, race_group
from fairdiff.data.synth.chexpert import (DATASET_DIR, DEMO_FILE, ChestXraySynthParams, generate_chexpert,
                                          render_chest, sample_metadata)
from fairdiff.errors import DataError
from fairdiff.schema import CHEXPERT

N = 40
SEED = 5


@pytest.fixture(scope="module")
def cxr(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("cxr") / "chexpert"
    meta = generate_chexpert(out, N, seed=SEED, progress=False)
    return out, meta


@pytest.fixture
def cxr_copy(cxr, tmp_path) -> Path:
    return Path(shutil.copytree(cxr[0], tmp_path / "copy"))


def edit_csv(path: Path, edit) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame).to_csv(path, index=False)


def train_csv(root: Path) -> Path:
    return root / DATASET_DIR / "train.csv"


# ----------------------------------------------------------------------------- round trip
def test_round_trip_preserves_every_label_and_group(cxr):
    root, meta = cxr
    df = load_chexpert(root, frontal_only=False)
    assert len(df.attrs["rejections"]) == 0 and len(df) == N
    got = df.set_index("id")
    for rec in meta.to_dict("records"):
        film = "_".join(Path(rec["Path"]).with_suffix("").parts[-3:])
        row = got.loc[film]
        assert row["sex"] == {"Male": 0, "Female": 1}[rec["Sex"]]
        assert row["race"] == rec["race_group"]  # the group the generator drew, not a re-parse of its text
        assert row["pleural_effusion"] == int(rec["Pleural Effusion"] == 1.0)
        assert row["patient"] == rec["PATIENT"] and row["race_text"] == rec["PRIMARY_RACE"]
        assert row["split"] == ("test" if rec["source"] == "valid" else row["split"])
        assert Path(row["image_path"]).is_file()
        assert row["prompt"] == CHEXPERT.prompt(sex=row["sex"], race=row["race"], pleural_effusion=row["pleural_effusion"])
    assert df.attrs["unknown"]["race"] == int((meta["race_group"] == -1).sum())
    assert list(df.columns[:7]) == ["id", "split", "image_path", "prompt", "sex", "race", "pleural_effusion"]


def test_frontal_only_by_default(cxr):
    root, meta = cxr
    df = load_chexpert(root)
    assert len(df) == int((meta["Frontal/Lateral"] == "Frontal").sum())
    assert all(v.endswith("frontal") for v in df["view"])
    assert df.attrs["lateral_skipped"] == int((meta["Frontal/Lateral"] == "Lateral").sum())


def test_uncertain_and_blank_effusion_are_negative(cxr):
    df = load_chexpert(cxr[0], frontal_only=False)
    raw = df["pleural_effusion_raw"]
    assert set(raw.dropna()) <= {1.0, 0.0, -1.0}
    assert (df["pleural_effusion"] == (raw == 1.0).astype(int)).all()
    assert raw.isna().any() and (raw == -1.0).any()  # both cases are exercised


def test_root_may_be_the_dataset_folder_or_a_renamed_copy(cxr_copy):
    whole = load_chexpert(cxr_copy)
    inner = load_chexpert(cxr_copy / DATASET_DIR)
    assert inner["id"].tolist() == whole["id"].tolist()
    assert inner["race"].tolist() == whole["race"].tolist()  # the demographics table found in the parent
    (cxr_copy / DATASET_DIR).rename(cxr_copy / "chexpert_renamed")
    renamed = load_chexpert(cxr_copy / "chexpert_renamed")
    assert len(renamed.attrs["rejections"]) == 0 and renamed["id"].tolist() == whole["id"].tolist()


def test_loader_never_writes_into_the_dataset(cxr):
    root = cxr[0]
    before = {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}
    load_chexpert(root)
    assert {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")} == before


# ----------------------------------------------------------------------------- prompts and race
def test_prompt_template():
    assert CHEXPERT.prompt(sex=1, race=1, pleural_effusion=1) == (
        "Chest Radiography image of a Female Black patient diagnosed with Pleural Effusion")
    assert CHEXPERT.prompt(sex=0, race=0, pleural_effusion=0) == (
        "Chest Radiography image of a Male Asian patient diagnosed with non Pleural Effusion")
    assert CHEXPERT.prompt(sex=0, race=-1, pleural_effusion=0) == (
        "Chest Radiography image of a Male patient diagnosed with non Pleural Effusion")


@pytest.mark.parametrize("text,group", [
    ("Asian", 0), ("Asian, non-Hispanic", 0), ("Asian - Historical Conv", 0),
    ("Black or African American", 1), ("Black, Hispanic", 1), ("African American", 1),
    ("White", 2), ("WHITE, NON-HISPANIC", 2), ("White or Caucasian", 2), ("Caucasian", 2),
    ("Other", -1), ("Unknown", -1), ("Patient Refused", -1), ("Native American, non-Hispanic", -1),
    ("Native Hawaiian or Other Pacific Islander", -1), ("White, Black", -1), ("", -1),
])
def test_race_strings_map_by_whole_words(text, group):
    assert race_group(text) == group


# ----------------------------------------------------------------------------- demographics variants
def test_missing_demographics_table_is_an_error_unless_allowed(cxr_copy):
    (cxr_copy / DEMO_FILE).unlink()
    with pytest.raises(DataError) as err:
        load_chexpert(cxr_copy)
    assert err.value.field == "PRIMARY_RACE" and "chexpert_demo.csv" in str(err.value)
    df = load_chexpert(cxr_copy, require_demographics=False)
    assert (df["race"] == -1).all() and df.attrs["unknown"]["race"] == len(df) > 0
    assert df.attrs["demographics"] is None


def write_xlsx(path: Path, frame: pd.DataFrame) -> None:
    """The demographics table as the release ships it: one sheet, a header row, text and numbers."""
    from openpyxl import Workbook
    book = Workbook()
    sheet = book.active
    sheet.append(list(frame.columns))
    for rec in frame.itertuples(index=False):
        sheet.append([int(v) if str(v).isdigit() else v for v in rec])  # ages as numbers, like Excel keeps them
    book.save(path)


def test_xlsx_demographics_are_read_directly(cxr_copy):
    expected = load_chexpert(cxr_copy)
    write_xlsx(cxr_copy / "CHEXPERT DEMO.xlsx", pd.read_csv(cxr_copy / DEMO_FILE, dtype=str, keep_default_na=False))
    (cxr_copy / DEMO_FILE).unlink()
    df = load_chexpert(cxr_copy)
    assert df.attrs["demographics"].endswith("CHEXPERT DEMO.xlsx")
    assert df["race"].tolist() == expected["race"].tolist() and df["race_text"].tolist() == expected["race_text"].tolist()
    assert df["ethnicity_text"].tolist() == expected["ethnicity_text"].tolist() and (df["ethnicity_text"] != "").all()


def test_damaged_xlsx_is_an_error_naming_it(cxr_copy):
    (cxr_copy / DEMO_FILE).unlink()
    (cxr_copy / "CHEXPERT DEMO.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    with pytest.raises(DataError, match="readable .xlsx") as err:
        load_chexpert(cxr_copy)
    assert err.value.file.endswith("CHEXPERT DEMO.xlsx")


def test_pre_merged_train_csv_needs_no_table(cxr_copy):
    demo = pd.read_csv(cxr_copy / DEMO_FILE, dtype=str)
    expected = load_chexpert(cxr_copy)
    for name in ("train.csv", "valid.csv"):
        path = cxr_copy / DATASET_DIR / name
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame["PATIENT"] = frame["Path"].str.extract(r"(patient\d+)", expand=False)
        frame.merge(demo[["PATIENT", "PRIMARY_RACE"]], on="PATIENT").drop(columns="PATIENT").to_csv(path, index=False)
    (cxr_copy / DEMO_FILE).unlink()
    df = load_chexpert(cxr_copy)
    assert df["race"].tolist() == expected["race"].tolist()
    assert "pre-merged" in df.attrs["demographics"]


def test_patient_missing_from_the_table_gets_unknown_race(cxr_copy):
    first = load_chexpert(cxr_copy)["patient"].iloc[0]
    edit_csv(cxr_copy / DEMO_FILE, lambda f: f[f["PATIENT"] != first])
    df = load_chexpert(cxr_copy)
    assert (df.loc[df["patient"] == first, "race"] == -1).all()
    assert len(df.attrs["rejections"]) == 0


def test_conflicting_demographics_reject_that_patient(cxr_copy):
    demo = pd.read_csv(cxr_copy / DEMO_FILE, dtype=str, keep_default_na=False)
    patient = load_chexpert(cxr_copy)["patient"].iloc[0]
    clash = demo[demo["PATIENT"] == patient].assign(PRIMARY_RACE="Black or African American")
    if race_group(demo.loc[demo["PATIENT"] == patient, "PRIMARY_RACE"].iloc[0]) == 1:
        clash = clash.assign(PRIMARY_RACE="White")
    pd.concat([demo, clash]).to_csv(cxr_copy / DEMO_FILE, index=False)
    df = load_chexpert(cxr_copy)
    rej = df.attrs["rejections"]
    assert patient not in set(df["patient"]) and set(rej["field"]) == {"PATIENT"}
    assert rej["file"].iloc[0].endswith(DEMO_FILE)


# ----------------------------------------------------------------------------- splits
def test_valid_csv_is_test_and_patients_never_straddle_splits(cxr):
    root, meta = cxr
    df = load_chexpert(root, frontal_only=False, split_fractions=(0.6, 0.2, 0.2), split_seed=3)
    assert (df.groupby("patient")["split"].nunique() == 1).all()
    valid_patients = set(meta.loc[meta["source"] == "valid", "PATIENT"])
    assert valid_patients and (df.loc[df["patient"].isin(valid_patients), "split"] == "test").all()
    assert set(df["split"]) == {"train", "val", "test"}
    default = load_chexpert(root, frontal_only=False)
    assert set(default.loc[default["split"] == "test", "patient"]) == valid_patients  # default: test = valid.csv


def test_patient_in_train_and_valid_is_rejected_from_train(cxr_copy):
    valid = pd.read_csv(cxr_copy / DATASET_DIR / "valid.csv", dtype=str, keep_default_na=False)
    train = pd.read_csv(train_csv(cxr_copy), dtype=str, keep_default_na=False)
    patient = train["Path"].str.extract(r"(patient\d+)", expand=False).iloc[0]
    leaked = train.iloc[[0]].assign(Path=lambda f: f["Path"].str.replace("/train/", "/valid/").str.replace(
        "study1", "study9"))
    src = cxr_copy / train.iloc[0]["Path"]
    dst = cxr_copy / leaked.iloc[0]["Path"]
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    pd.concat([valid, leaked]).to_csv(cxr_copy / DATASET_DIR / "valid.csv", index=False)
    df = load_chexpert(cxr_copy, frontal_only=False)
    assert set(df.loc[df["patient"] == patient, "split"]) == {"test"}
    rej = df.attrs["rejections"]
    assert len(rej) == int((train["Path"].str.contains(patient + "/")).sum())
    assert set(rej["field"]) == {"Path"} and rej["file"].iloc[0].endswith("train.csv")


# ----------------------------------------------------------------------------- bad input
def test_missing_root(tmp_path):
    with pytest.raises(DataError) as err:
        load_chexpert(tmp_path / "absent")
    assert "absent" in err.value.file


def test_missing_train_csv(cxr_copy):
    train_csv(cxr_copy).unlink()
    with pytest.raises(DataError, match="train.csv"):
        load_chexpert(cxr_copy)


def test_missing_column(cxr_copy):
    edit_csv(train_csv(cxr_copy), lambda f: f.drop(columns=["Pleural Effusion"]))
    with pytest.raises(DataError) as err:
        load_chexpert(cxr_copy)
    assert err.value.field == "Pleural Effusion" and err.value.file.endswith("train.csv")


@pytest.mark.parametrize("column,value", [("Sex", "Robot"), ("Pleural Effusion", "2.0"), ("Age", "old"),
                                          ("Frontal/Lateral", "Oblique"), ("Path", "somewhere/else.jpg")])
def test_value_outside_vocabulary(cxr_copy, column, value):
    film = pd.read_csv(train_csv(cxr_copy), dtype=str)["Path"].iloc[0]
    edit_csv(train_csv(cxr_copy), lambda f: f.assign(**{column: [value] + f[column].tolist()[1:]}))
    df = load_chexpert(cxr_copy, frontal_only=False)
    rej = df.attrs["rejections"]
    assert rej["field"].iloc[0] == column and rej["file"].iloc[0].endswith("train.csv")
    if column == "Path":  # the row no longer names its film: that file is now a file without a row
        assert len(rej) == 2 and rej["file"].iloc[1] == str(cxr_copy / film) and rej["field"].iloc[1] == "Path"
        assert "no row" in rej["reason"].iloc[1]
    else:
        assert len(rej) == 1
    assert len(df) == N - 1
    with pytest.raises(DataError) as err:
        load_chexpert(cxr_copy, strict=True)
    assert err.value.field == column


def test_missing_and_unreadable_images(cxr_copy):
    films = sorted((cxr_copy / DATASET_DIR / "train").rglob("*_frontal.jpg"))
    films[0].unlink()
    films[1].write_bytes(b"\xff\xd8 broken")
    rej = load_chexpert(cxr_copy).attrs["rejections"]
    assert len(rej) == 2 and set(rej["field"]) == {"image"}
    assert {Path(f).name for f in rej["file"]} == {films[0].name, films[1].name}
    assert any("missing" in r for r in rej["reason"]) and any("readable" in r for r in rej["reason"])


def test_duplicate_film_rejects_every_copy(cxr_copy):
    edit_csv(train_csv(cxr_copy), lambda f: pd.concat([f, f.iloc[[0]]]))
    df = load_chexpert(cxr_copy, frontal_only=False)
    rej = df.attrs["rejections"]
    assert len(rej) == 2 and rej["id"].nunique() == 1 and set(rej["field"]) == {"Path"}
    assert rej["id"].iloc[0] not in set(df["id"])


# ----------------------------------------------------------------------------- generator
def test_generator_is_deterministic_and_seed_sensitive(tmp_path):
    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        generate_chexpert(tmp_path / name, 8, seed=seed, progress=False)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a[f"{DATASET_DIR}/train.csv"] != c[f"{DATASET_DIR}/train.csv"]


def test_writes_the_release_layout(cxr):
    root, meta = cxr
    train = pd.read_csv(train_csv(root), dtype=str, keep_default_na=False)
    assert list(train.columns[:5]) == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] and len(train.columns) == 19
    assert all(p.startswith(f"{DATASET_DIR}/train/patient") for p in train["Path"])
    valid = pd.read_csv(root / DATASET_DIR / "valid.csv", dtype=str, keep_default_na=False)
    assert set(valid.iloc[:, 5:].stack()) <= {"0.0", "1.0"}  # consensus labels: no blanks, no -1
    demo = pd.read_csv(root / DEMO_FILE, dtype=str)
    assert list(demo.columns) == ["PATIENT", "GENDER", "AGE_AT_CXR", "PRIMARY_RACE", "ETHNICITY"]
    assert demo["PATIENT"].is_unique and set(demo["PATIENT"]) == set(meta["PATIENT"])
    from PIL import Image
    with Image.open(root / train["Path"].iloc[0]) as im:
        assert im.mode == "L" and im.size == (320, 384)


def test_refuses_to_overwrite_folders_it_did_not_make(tmp_path, cxr):
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "train.csv").write_text("Path\n")
    with pytest.raises(DataError):
        generate_chexpert(foreign, 2, progress=False)
    with pytest.raises(DataError, match="overwrite=True"):
        generate_chexpert(cxr[0], 2, progress=False)


def test_metadata_follows_the_chexpert_priors():
    meta = sample_metadata(4000, seed=0)
    patients = meta.drop_duplicates("PATIENT")
    assert abs((patients["Sex"] == "Male").mean() - 0.594) < 0.03
    known = patients.loc[patients["race_group"] >= 0, "race_group"].value_counts(normalize=True)
    assert abs(known[2] - 0.78) < 0.03 and abs(known[0] - 0.15) < 0.03 and abs(known[1] - 0.07) < 0.02
    assert all(race_group(t) == g for t, g in zip(patients["PRIMARY_RACE"], patients["race_group"]))
    frontal = meta[meta["Frontal/Lateral"] == "Frontal"]
    assert 0.82 < len(frontal) / len(meta) < 0.9
    train_frontal = frontal[frontal["source"] == "train"]
    assert abs((train_frontal["Pleural Effusion"] == 1.0).mean() - 0.403) < 0.04
    assert abs(meta.groupby("PATIENT").size().mean() - 2.2) < 0.5  # several films per patient
    assert ((meta["Pleural Effusion"] == 1.0) <= (meta["effusion_size"] > 0)).all()


def test_effusion_whitens_the_lung_base():
    params = ChestXraySynthParams(grain=0)
    def film(size, side):
        return np.asarray(render_chest(np.random.default_rng(4), True, False, False, 2, size, side, "", False, params),
                          dtype=float)
    clear, right = film(0.0, ""), film(0.6, "right")
    h, w = clear.shape
    base_right = (slice(int(0.55 * h), int(0.68 * h)), slice(int(0.08 * w), int(0.35 * w)))  # image left
    base_left = (slice(int(0.55 * h), int(0.68 * h)), slice(int(0.65 * w), int(0.92 * w)))
    assert right[base_right].mean() > clear[base_right].mean() + 20
    assert abs(right[base_left].mean() - clear[base_left].mean()) < 2


def test_difficulty_zero_removes_race_differences_from_the_images():
    def film(group, difficulty):
        params = ChestXraySynthParams(difficulty=difficulty)
        return np.asarray(render_chest(np.random.default_rng(9), True, True, False, group, params=params), dtype=float)
    assert np.array_equal(film(1, 0.0), film(2, 0.0))
    assert film(1, 1.0).mean() < film(2, 1.0).mean()  # the default shift darkens group Black a little


# ----------------------------------------------------------------------------- paths, stray and damaged films
def noisy_jpeg(path: Path, seed: int = 0) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64), dtype=np.uint8)).save(path, "JPEG")
    return path


@pytest.mark.parametrize("kind", ["absolute", "climbs out"])
def test_film_path_outside_the_root_is_rejected_and_never_opened(cxr_copy, tmp_path, opened, kind):
    outside = noisy_jpeg(tmp_path / "outside" / "patient99999" / "study1" / "view1_frontal.jpg")
    raw = str(outside) if kind == "absolute" else f"{DATASET_DIR}/../../outside/patient99999/study1/view1_frontal.jpg"
    train = pd.read_csv(train_csv(cxr_copy), dtype=str, keep_default_na=False)
    pd.concat([train, train.iloc[[0]].assign(Path=raw)]).to_csv(train_csv(cxr_copy), index=False)
    df = load_chexpert(cxr_copy, frontal_only=False)
    rej = df.attrs["rejections"]
    assert rej["id"].tolist() == ["patient99999_study1_view1_frontal"] and rej["field"].tolist() == ["Path"]
    assert rej["file"].iloc[0].endswith("train.csv") and f"row {len(train) + 1}: {raw}" in rej["reason"].iloc[0]
    assert len(df) == N and "patient99999" not in set(df["patient"])
    assert not any(p.startswith(str(outside.parents[2])) for p in opened)
    with pytest.raises(DataError, match=f"row {len(train) + 1}") as err:
        load_chexpert(cxr_copy, strict=True)
    assert err.value.field == "Path"


def test_symlinked_image_folder_under_the_root_is_allowed(cxr_copy, tmp_path):
    expected = load_chexpert(cxr_copy)
    shutil.move(cxr_copy / DATASET_DIR / "valid", tmp_path / "valid_elsewhere")
    (cxr_copy / DATASET_DIR / "valid").symlink_to(tmp_path / "valid_elsewhere", target_is_directory=True)
    df = load_chexpert(cxr_copy)
    assert len(df.attrs["rejections"]) == 0 and df["id"].tolist() == expected["id"].tolist()
    assert df["image_path"].tolist() == expected["image_path"].tolist()  # named under the root, as written


def test_film_without_a_row_is_rejected(cxr_copy):
    stray = noisy_jpeg(cxr_copy / DATASET_DIR / "train" / "patient88888" / "study1" / "view1_frontal.jpg")
    df = load_chexpert(cxr_copy)
    rej = df.attrs["rejections"]
    assert rej["id"].tolist() == ["patient88888_study1_view1_frontal"] and rej["file"].tolist() == [str(stray)]
    assert "train.csv" in rej["reason"].iloc[0] and "no row" in rej["reason"].iloc[0]
    with pytest.raises(DataError, match="no row"):
        load_chexpert(cxr_copy, strict=True)


def test_truncated_film_is_rejected_at_load_time(cxr_copy):
    film = sorted((cxr_copy / DATASET_DIR / "train").rglob("*_frontal.jpg"))[0]
    film.write_bytes(film.read_bytes()[: film.stat().st_size // 2])
    rej = load_chexpert(cxr_copy).attrs["rejections"]
    assert rej["file"].tolist() == [str(film)] and rej["field"].tolist() == ["image"]
    assert "truncated" in rej["reason"].iloc[0]


# ----------------------------------------------------------------------------- the authors' sample, read by position
RACE_WORDS = {0: "Asian", 1: "Black", 2: "White", -1: "Other"}
SAMPLE_HEADER = ["", "Path", "PATIENT", "Sex", "Age", "race", "ethnicity", "Frontal/Lateral", "AP/PA", *OBSERVATIONS,
                 "split", "file"]  # 25 columns: 3 Sex, 5 race, 6 ethnicity, 9-22 observations, 24 file


def write_authors_sample(cxr_root: Path, meta: pd.DataFrame, out: Path, splits=("train", "val", "test"),
                         header=SAMPLE_HEADER) -> pd.DataFrame:
    """The authors' layout made from the synthetic films: chexpert_sample_<split>_<N>.csv + Chexpert_sample_512/.
    Returns what each row should load as (id, split, sex, race, pleural_effusion, file)."""
    frontal = meta[meta["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)
    patients = sorted(frontal["PATIENT"].unique())
    split_of = {p: splits[i % len(splits)] for i, p in enumerate(patients)}
    (out / "Chexpert_sample_512").mkdir(parents=True)
    lines, expected = {s: [] for s in splits}, []
    for i, rec in frontal.iterrows():
        film = "_".join(Path(rec["Path"]).with_suffix("").parts[-3:])
        shutil.copy(cxr_root / rec["Path"], out / "Chexpert_sample_512" / f"{film}.jpg")
        labels = ["" if pd.isna(rec[o]) else f"{float(rec[o]):.1f}" for o in OBSERVATIONS]
        split = split_of[rec["PATIENT"]]
        lines[split].append([str(i), rec["Path"], rec["PATIENT"], rec["Sex"], str(rec["Age"]),
                             RACE_WORDS[rec["race_group"]], rec["ETHNICITY"], "Frontal", rec["AP/PA"], *labels,
                             split, f"{film}.jpg"])
        expected.append(dict(id=film, split=split, sex={"Male": 0, "Female": 1}[rec["Sex"]], race=rec["race_group"],
                             pleural_effusion=int(rec["Pleural Effusion"] == 1.0), patient=rec["PATIENT"],
                             age_years=float(rec["Age"]), ethnicity_text=rec["ETHNICITY"]))
    for split, rows in lines.items():
        with open(out / f"chexpert_sample_{split}_{len(rows)}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
    return pd.DataFrame(expected)


@pytest.fixture
def sample(cxr, tmp_path) -> tuple[Path, pd.DataFrame]:
    out = tmp_path / "Chexpert"
    return out, write_authors_sample(cxr[0], cxr[1], out)


def test_authors_sample_is_detected_and_read_by_position(sample):
    root, expected = sample
    df = load_chexpert(root)
    assert df.attrs["layout"] == "sample" and len(df.attrs["rejections"]) == 0
    got = df.set_index("id")
    assert sorted(got.index) == sorted(expected["id"])
    for rec in expected.to_dict("records"):
        row = got.loc[rec["id"]]
        assert (row["split"], row["sex"], row["race"], row["pleural_effusion"], row["patient"]) == (
            rec["split"], rec["sex"], rec["race"], rec["pleural_effusion"], rec["patient"])
        assert row["age_years"] == rec["age_years"] and row["ethnicity_text"] == rec["ethnicity_text"]
        assert Path(row["image_path"]) == root / "Chexpert_sample_512" / f"{rec['id']}.jpg"
    assert {"train", "val", "test"} == set(df["split"]) and "val_carved" not in df.attrs
    assert (df["race"] == -1).sum() == (expected["race"] == -1).sum()  # "Other" is unknown, kept


def test_authors_sample_positions_do_not_depend_on_header_names(cxr, tmp_path):
    header = [f"c{i}" for i in range(25)]  # nothing named: only positions say what a column is
    expected = write_authors_sample(cxr[0], cxr[1], tmp_path / "s", header=header)
    df = load_chexpert(tmp_path / "s", layout="sample").set_index("id").loc[expected["id"]]
    assert df["sex"].tolist() == expected["sex"].tolist() and df["race"].tolist() == expected["race"].tolist()
    assert df["age_years"].isna().all()  # no column named Age


def test_authors_sample_without_val_gets_a_patient_level_validation_set(cxr, tmp_path):
    expected = write_authors_sample(cxr[0], cxr[1], tmp_path / "s", splits=("train", "test"))
    df = load_chexpert(tmp_path / "s", val_fraction=0.3, seed=1)
    assert set(df["split"]) == {"train", "val", "test"} and df.attrs["val_carved"]["by"] == "patient"
    assert (df.groupby("patient")["split"].nunique() == 1).all()
    test_ids = set(expected.loc[expected["split"] == "test", "id"])
    assert set(df.loc[df["split"] == "test", "id"]) == test_ids


def edit_sample(root: Path, split: str, row: int, column: int, value: str) -> Path:
    path = next(root.glob(f"chexpert_sample_{split}_*.csv"))
    with open(path, newline="") as handle:
        lines = list(csv.reader(handle))
    lines[row][column] = value
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(lines)
    return path


@pytest.mark.parametrize("column,value,field,words", [
    (3, "Robot", "column 3 ('Sex')", "female"),
    (13, "2.0", "column 13 ('Lung Lesion')", "-1"),
    (19, "yes", "column 19 ('Pleural Effusion')", "-1"),
    (24, "../../elsewhere.jpg", "column 24 ('file')", "row 1"),
    (24, "/etc/hostname", "column 24 ('file')", "absolute"),
])
def test_authors_sample_bad_cell_is_rejected_naming_file_and_column(sample, opened, column, value, field, words):
    root, expected = sample
    path = edit_sample(root, "train", 1, column, value)
    df = load_chexpert(root)
    rej = df.attrs["rejections"]
    bad = rej[rej["file"] == str(path)]
    assert len(bad) == 1 and bad["field"].iloc[0] == field and words in bad["reason"].iloc[0]
    assert len(df) == len(expected) - 1
    assert not any("elsewhere" in p or "hostname" in p for p in opened)
    with pytest.raises(DataError) as err:
        load_chexpert(root, strict=True)
    assert err.value.field in (field, "column 24 ('file')")  # a changed file name also leaves its image without a row


def test_authors_sample_image_without_a_row_and_short_csv(sample):
    root, _ = sample
    stray = noisy_jpeg(root / "Chexpert_sample_512" / "patient77777_study1_view1_frontal.jpg")
    rej = load_chexpert(root).attrs["rejections"]
    assert rej["file"].tolist() == [str(stray)] and "no row" in rej["reason"].iloc[0]
    path = next(root.glob("chexpert_sample_test_*.csv"))
    pd.read_csv(path, dtype=str, header=None).iloc[:, :24].to_csv(path, index=False, header=False)
    with pytest.raises(DataError, match="25 columns") as err:
        load_chexpert(root)
    assert err.value.file == str(path)
