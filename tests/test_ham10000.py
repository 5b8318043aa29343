"""HAM10000: synthetic generator -> loader round trip, layouts, bad input, splits, determinism."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fairdiff  # noqa: F401  (sets cache folders)
from fairdiff.data.ham10000 import load_ham10000, split_by_group
from fairdiff.data.synth.ham10000 import (DX_CLASSES, HAM_DX_COUNTS, METADATA_FILE, DermoscopySynthParams,
                                          generate_ham10000, render_dermoscopy, sample_metadata)
from fairdiff.errors import DataError
from fairdiff.schema import HAM10000

N = 30
SEED = 7


@pytest.fixture(scope="module")
def ham(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ham") / "HAM10000"
    generate_ham10000(out, N, seed=SEED, progress=False)
    return out


@pytest.fixture
def ham_copy(ham, tmp_path) -> Path:
    """A private copy a test may break."""
    return Path(shutil.copytree(ham, tmp_path / "copy"))


def edit_metadata(root: Path, edit) -> None:
    path = root / METADATA_FILE
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame = edit(frame)
    frame.to_csv(path, index=False)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------- round trip
def test_round_trip_preserves_every_label_and_group(ham):
    meta = pd.read_csv(ham / METADATA_FILE, dtype=str, keep_default_na=False)
    df = load_ham10000(ham)
    assert len(df.attrs["rejections"]) == 0
    assert sorted(df["id"]) == sorted(meta["image_id"])
    got = df.set_index("id")
    for rec in meta.to_dict("records"):
        row = got.loc[rec["image_id"]]
        assert row["sex"] == {"male": 0, "female": 1, "unknown": -1}[rec["sex"]]
        assert row["age"] == (-1 if rec["age"] == "" else int(float(rec["age"]) >= 60))
        assert row["malignant"] == int(rec["dx"] in ("mel", "akiec"))
        assert row["lesion_id"] == rec["lesion_id"] and row["dx"] == rec["dx"]
        assert Path(row["image_path"]).is_absolute() and Path(row["image_path"]).name == rec["image_id"] + ".jpg"
        assert row["prompt"] == HAM10000.prompt(sex=row["sex"], age=row["age"], malignant=row["malignant"])
    assert df.attrs["schema"] == "ham10000" and df.attrs["layout"] == "official"
    assert df.attrs["unknown"] == {"sex": int((got["sex"] == -1).sum()), "age": int((got["age"] == -1).sum())}
    assert list(df.columns[:7]) == ["id", "split", "image_path", "prompt", "sex", "age", "malignant"]


def test_generator_writes_the_official_layout(ham):
    meta = pd.read_csv(ham / METADATA_FILE, dtype=str, keep_default_na=False)
    assert list(meta.columns) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    part1 = sorted(p.stem for p in (ham / "HAM10000_images_part_1").glob("*.jpg"))
    part2 = sorted(p.stem for p in (ham / "HAM10000_images_part_2").glob("*.jpg"))
    assert part1 and part2 and sorted(part1 + part2) == sorted(meta["image_id"])
    from PIL import Image
    with Image.open(ham / "HAM10000_images_part_1" / f"{part1[0]}.jpg") as im:
        assert im.size == (600, 450) and im.mode == "RGB"
    assert (ham / "synth_params.json").is_file()


def test_loader_never_writes_into_the_dataset(ham):
    before = snapshot(ham)
    load_ham10000(ham)
    assert snapshot(ham) == before


# ----------------------------------------------------------------------------- prompts
def test_prompt_puts_sex_before_age():
    assert HAM10000.prompt(sex=1, age=1, malignant=1) == (
        "Dermoscopic image of a Female Age equal 60 or older patient with the following diagnostic category: malignant")
    assert HAM10000.prompt(sex=0, age=0, malignant=0) == (
        "Dermoscopic image of a Male Age under 60 patient with the following diagnostic category: benign")


def test_loader_prompts_match_hand_written_examples(ham_copy):
    first, second = pd.read_csv(ham_copy / METADATA_FILE, dtype=str)["image_id"][:2]
    edit_metadata(ham_copy, lambda f: f.assign(
        dx=np.where(f["image_id"] == first, "mel", "nv"), sex=np.where(f["image_id"] == first, "female", "male"),
        age=np.where(f["image_id"] == first, "60.0", "35.0")))
    df = load_ham10000(ham_copy).set_index("id")
    assert df.loc[first, "prompt"] == ("Dermoscopic image of a Female Age equal 60 or older patient with the "
                                       "following diagnostic category: malignant")
    assert df.loc[second, "prompt"] == ("Dermoscopic image of a Male Age under 60 patient with the following "
                                        "diagnostic category: benign")


def test_unknown_sex_and_blank_age_are_kept_and_counted(ham_copy):
    first = pd.read_csv(ham_copy / METADATA_FILE, dtype=str)["image_id"][0]
    edit_metadata(ham_copy, lambda f: f.assign(sex=np.where(f["image_id"] == first, "unknown", f["sex"]),
                                               age=np.where(f["image_id"] == first, "", "40.0")))
    df = load_ham10000(ham_copy)
    row = df.set_index("id").loc[first]
    assert row["sex"] == -1 and row["age"] == -1 and np.isnan(row["age_years"])
    assert df.attrs["unknown"] == {"sex": 1, "age": 1}
    assert "Male" not in row["prompt"] and "Female" not in row["prompt"] and "Age" not in row["prompt"]


# ----------------------------------------------------------------------------- splits
def test_split_by_group_keeps_groups_whole_and_cuts_exact_fractions():
    groups = [f"L{i // 3}" for i in range(300)] + [f"M{i}" for i in range(100)]  # 200 groups
    splits = split_by_group(groups, (0.7, 0.1, 0.2), seed=3)
    frame = pd.DataFrame({"g": groups, "s": splits})
    assert (frame.groupby("g")["s"].nunique() == 1).all()
    per_group = frame.drop_duplicates("g")["s"].value_counts()
    assert per_group.to_dict() == {"train": 140, "test": 40, "val": 20}
    # Order-free and seeded: shuffling the rows changes nothing, another seed changes the split.
    perm = np.random.default_rng(0).permutation(len(groups))
    shuffled = split_by_group(np.asarray(groups)[perm], (0.7, 0.1, 0.2), seed=3)
    assert (shuffled == splits[perm]).all()
    assert (split_by_group(groups, (0.7, 0.1, 0.2), seed=4) != splits).any()


def test_split_fractions_are_validated():
    with pytest.raises(ValueError, match="sum"):
        split_by_group(["a"], (0.5, 0.1, 0.1), seed=0)


def test_official_split_is_lesion_level_and_seeded(ham):
    df = load_ham10000(ham, split_fractions=(0.5, 0.25, 0.25), split_seed=1)
    assert (df.groupby("lesion_id")["split"].nunique() == 1).all()
    assert set(df["split"]) == {"train", "val", "test"}
    again = load_ham10000(ham, split_fractions=(0.5, 0.25, 0.25), split_seed=1)
    pd.testing.assert_series_equal(df["split"], again["split"])


# ----------------------------------------------------------------------------- preprocessed split
def write_medfair_split(root: Path, positional: bool = False, with_val: bool = True) -> pd.DataFrame:
    """MEDFAIR's split CSVs made from the official metadata (their rule: age binary is age > 60)."""
    meta = pd.read_csv(root / METADATA_FILE, dtype=str, keep_default_na=False)
    meta = meta[(meta["age"] != "") & (meta["sex"] != "unknown")].copy()
    meta.loc[meta.index[0], "age"] = "60.0"  # MEDFAIR puts exactly 60 in group 0
    age = meta["age"].astype(float)
    meta["dataset"] = "vidir_modern"
    meta["Path"] = "HAM10000_images/" + meta["image_id"] + ".jpg"  # MEDFAIR's merged folder, absent here
    meta["Age_multi"] = np.digitize(age, [20, 40, 60, 80])
    meta["Age_binary"] = (age > 60).astype(int)
    meta["Sex"] = meta["sex"].map({"male": "M", "female": "F"})
    meta["binaryLabel"] = meta["dx"].isin(["mel", "akiec"]).astype(int)
    # The column order the authors' code indexes: 9 path, 11 binary age, 12 sex, 13 label.
    meta = meta[["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset", "Path",
                 "Age_multi", "Age_binary", "Sex", "binaryLabel"]]
    if positional:
        meta.columns = [f"col{i}" for i in range(1, 14)]
    lesions = sorted(meta.iloc[:, 0].unique())
    split_of = {lesion: ("train", "val", "test")[i % 3 if with_val else 2 * (i % 2)] for i, lesion in enumerate(lesions)}
    (root / "split").mkdir()
    for split in ("train", "val", "test") if with_val else ("train", "test"):
        meta[meta.iloc[:, 0].map(split_of) == split].to_csv(root / "split" / f"new_{split}.csv")  # index written
    return meta.assign(split=meta.iloc[:, 0].map(split_of))


def test_preprocessed_split_is_read_by_column_name(ham_copy):
    expected = write_medfair_split(ham_copy)
    df = load_ham10000(ham_copy)
    assert df.attrs["layout"] == "preprocessed" and len(df.attrs["rejections"]) == 0
    got = df.set_index("id")
    assert sorted(got.index) == sorted(expected["image_id"])
    for rec in expected.to_dict("records"):
        row = got.loc[rec["image_id"]]
        assert (row["split"], row["sex"], row["age"], row["malignant"]) == (
            rec["split"], {"M": 0, "F": 1}[rec["Sex"]], rec["Age_binary"], rec["binaryLabel"])
        assert Path(row["image_path"]).is_file()  # found in the part folders by file name
    sixty = expected.iloc[0]["image_id"]
    assert got.loc[sixty, "age_years"] == 60 and got.loc[sixty, "age"] == 0  # taken as written


def test_preprocessed_positional_fallback_warns_and_reads_the_authors_columns(ham_copy):
    expected = write_medfair_split(ham_copy, positional=True, with_val=False)
    with pytest.warns(UserWarning, match="column 9"):
        df = load_ham10000(ham_copy, layout="preprocessed")
    assert set(df["split"]) == {"train", "val", "test"} and df.attrs["val_carved"]["by"] == "lesion_id"  # no val CSV
    got = df.set_index("id")
    for rec in expected.to_dict("records"):
        row = got.loc[Path(rec["col9"]).stem]
        assert (row["age"], row["sex"], row["malignant"]) == (rec["col11"], {"M": 0, "F": 1}[rec["col12"]], rec["col13"])


def test_official_layout_can_be_forced_over_a_preprocessed_split(ham_copy):
    write_medfair_split(ham_copy)
    assert load_ham10000(ham_copy, layout="official").attrs["layout"] == "official"


def test_preprocessed_layout_requested_but_absent(ham):
    with pytest.raises(DataError, match="new_train.csv"):
        load_ham10000(ham, layout="preprocessed")


# ----------------------------------------------------------------------------- bad input
def test_missing_root(tmp_path):
    with pytest.raises(DataError) as err:
        load_ham10000(tmp_path / "nowhere")
    assert "nowhere" in err.value.file


def test_missing_metadata_csv(ham_copy):
    (ham_copy / METADATA_FILE).unlink()
    with pytest.raises(DataError, match=METADATA_FILE):
        load_ham10000(ham_copy)


def test_missing_image_folders(ham_copy):
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        shutil.rmtree(ham_copy / part)
    with pytest.raises(DataError) as err:
        load_ham10000(ham_copy)
    assert err.value.field == "HAM10000_images_part_1"


def test_missing_column(ham_copy):
    edit_metadata(ham_copy, lambda f: f.drop(columns=["dx"]))
    with pytest.raises(DataError) as err:
        load_ham10000(ham_copy)
    assert err.value.field == "dx" and err.value.file.endswith(METADATA_FILE)


@pytest.mark.parametrize("column,value", [("dx", "melanoma?"), ("sex", "robot"), ("age", "old")])
def test_value_outside_vocabulary(ham_copy, column, value):
    first = pd.read_csv(ham_copy / METADATA_FILE, dtype=str)["image_id"][0]
    edit_metadata(ham_copy, lambda f: f.assign(**{column: np.where(f["image_id"] == first, value, f[column])}))
    df = load_ham10000(ham_copy)
    rej = df.attrs["rejections"]
    assert rej["id"].tolist() == [first] and rej["field"].tolist() == [column]
    assert rej["file"].iloc[0].endswith(METADATA_FILE) and value in rej["reason"].iloc[0]
    assert first not in set(df["id"]) and len(df) == N - 1
    with pytest.raises(DataError) as err:
        load_ham10000(ham_copy, strict=True)
    assert err.value.field == column and err.value.file.endswith(METADATA_FILE)


def test_missing_image(ham_copy):
    victim = next((ham_copy / "HAM10000_images_part_2").glob("*.jpg"))
    victim.unlink()
    rej = load_ham10000(ham_copy).attrs["rejections"]
    assert rej["id"].tolist() == [victim.stem] and rej["field"].tolist() == ["image_id"]
    assert rej["file"].iloc[0].endswith(METADATA_FILE) and "missing" in rej["reason"].iloc[0]


def test_unreadable_image(ham_copy):
    victim = next((ham_copy / "HAM10000_images_part_1").glob("*.jpg"))
    victim.write_bytes(b"not a jpeg at all")
    rej = load_ham10000(ham_copy).attrs["rejections"]
    assert rej["id"].tolist() == [victim.stem] and rej["field"].tolist() == ["image"]
    assert rej["file"].iloc[0] == str(victim.resolve())
    with pytest.raises(DataError, match="readable image"):
        load_ham10000(ham_copy, strict=True)


def test_duplicate_image_id_rejects_every_copy(ham_copy):
    edit_metadata(ham_copy, lambda f: pd.concat([f, f.iloc[[3]]], ignore_index=True))
    dup = pd.read_csv(ham_copy / METADATA_FILE, dtype=str)["image_id"].iloc[3]
    df = load_ham10000(ham_copy)
    rej = df.attrs["rejections"]
    assert rej["id"].tolist() == [dup, dup] and set(rej["field"]) == {"image_id"}
    assert rej["file"].iloc[0].endswith(METADATA_FILE)
    assert dup not in set(df["id"]) and len(df) == N - 1


# ----------------------------------------------------------------------------- generator
def test_generator_is_deterministic_and_seed_sensitive(tmp_path):
    def files(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    generate_ham10000(tmp_path / "a", 5, seed=3, progress=False)
    generate_ham10000(tmp_path / "b", 5, seed=3, progress=False)
    generate_ham10000(tmp_path / "c", 5, seed=4, progress=False)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    assert a[METADATA_FILE] != c[METADATA_FILE]
    assert all(a[k] != c.get(k) for k in a if k.endswith(".jpg"))


def test_metadata_of_an_image_does_not_depend_on_n():
    small, large = sample_metadata(7, seed=2), sample_metadata(40, seed=2)
    pd.testing.assert_frame_equal(small.iloc[:6], large.iloc[:6])  # the 7th may be cut from its lesion


def test_refuses_to_overwrite_folders_it_did_not_make(tmp_path, ham):
    foreign = tmp_path / "real_data"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="not made by"):
        generate_ham10000(foreign, 2, progress=False)
    assert (foreign / "precious.txt").read_text() == "keep me"
    with pytest.raises(DataError, match="overwrite=True"):
        generate_ham10000(ham, 2, progress=False)
    mine = tmp_path / "mine"
    generate_ham10000(mine, 2, seed=0, progress=False)
    generate_ham10000(mine, 3, seed=1, progress=False, overwrite=True)
    assert len(pd.read_csv(mine / METADATA_FILE)) == 3


def test_metadata_follows_the_ham_priors():
    meta = sample_metadata(4000, seed=0)
    dx_share = meta.drop_duplicates("lesion_id")["dx"].value_counts(normalize=True)
    for dx, count in zip(DX_CLASSES, HAM_DX_COUNTS):
        assert abs(dx_share.get(dx, 0) - count / sum(HAM_DX_COUNTS)) < 0.03, dx
    assert abs((meta["sex"] == "female").mean() - 0.455) < 0.04
    assert 1.2 < len(meta) / meta["lesion_id"].nunique() < 1.45  # HAM: 10,015 images of ~7,470 lesions
    old = (meta["age"] >= 60).mean()
    assert 0.2 < old < 0.5
    assert meta.loc[meta["dx"].isin(["mel", "akiec"]), "age"].mean() > meta.loc[meta["dx"] == "nv", "age"].mean()
    assert set(meta["age"].dropna() % 5) == {0.0}  # HAM's 5-year steps


def test_difficulty_zero_removes_group_differences_from_the_images():
    def render(old, male, difficulty):
        params = DermoscopySynthParams(difficulty=difficulty, image_size=(120, 90), render_scale=2, p_vignette=0)
        return np.asarray(render_dermoscopy(np.random.default_rng(1), np.random.default_rng(2), "nv", 1,
                                            male, old, params), dtype=float)
    assert np.array_equal(render(True, True, 0.0), render(False, False, 0.0))
    young, old = render(False, False, 1.0), render(True, False, 1.0)
    assert not np.array_equal(young, old)
    # Older skin: lower lesion contrast, so the darkest pixels of the lesion are lighter.
    assert np.percentile(old.mean(-1), 5) > np.percentile(young.mean(-1), 5)


def test_params_are_validated():
    with pytest.raises(ValueError, match="dx_prior"):
        DermoscopySynthParams(dx_prior=(1.0, 0, 0, 0, 0, 0, 0.5))


# ----------------------------------------------------------------------------- paths from the CSV stay inside the root
def noisy_jpeg(path: Path, seed: int = 0) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def point_first_train_row_at(root: Path, target: str) -> str:
    """Rewrite the Path cell of new_train.csv's first row; returns that row's image id."""
    path = root / "split" / "new_train.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=0)
    frame.iloc[0, frame.columns.get_loc("Path")] = target
    frame.to_csv(path)
    return frame["image_id"].iloc[0]


@pytest.mark.parametrize("kind", ["absolute", "climbs out"])
def test_image_path_outside_the_root_is_rejected_and_never_opened(ham_copy, tmp_path, opened, kind):
    write_medfair_split(ham_copy)
    outside = noisy_jpeg(tmp_path / "outside" / "secret.jpg")  # a real image: the old loader trained on it
    target = str(outside) if kind == "absolute" else "../outside/secret.jpg"
    image_id = point_first_train_row_at(ham_copy, target)
    df = load_ham10000(ham_copy)
    rej = df.attrs["rejections"]
    assert rej["id"].tolist() == [image_id] and rej["field"].tolist() == ["Path"]
    assert rej["file"].iloc[0].endswith("new_train.csv") and f"row 1: {target}" in rej["reason"].iloc[0]
    assert image_id not in set(df["id"]) and not any("secret" in p for p in df["image_path"])
    assert not any("secret" in p for p in opened)
    with pytest.raises(DataError, match="row 1") as err:
        load_ham10000(ham_copy, strict=True)
    assert err.value.field == "Path" and err.value.file.endswith("new_train.csv")


def test_symlink_placed_under_the_root_is_allowed(ham_copy, tmp_path):
    write_medfair_split(ham_copy)
    shutil.move(ham_copy / "HAM10000_images_part_1", tmp_path / "images_elsewhere")
    (ham_copy / "HAM10000_images").symlink_to(tmp_path / "images_elsewhere", target_is_directory=True)
    df = load_ham10000(ham_copy)
    assert len(df.attrs["rejections"]) == 0
    linked = df[df["image_path"].str.contains("/HAM10000_images/")]
    assert len(linked) > 0 and all(Path(p).is_file() for p in linked["image_path"])


# ----------------------------------------------------------------------------- files without rows, damaged images
def test_image_without_a_metadata_row_is_rejected(ham_copy):
    stray = noisy_jpeg(ham_copy / "HAM10000_images_part_2" / "ISIC_9999999.jpg")
    df = load_ham10000(ham_copy)
    rej = df.attrs["rejections"]
    assert rej["id"].tolist() == ["ISIC_9999999"] and rej["file"].tolist() == [str(stray)]
    assert rej["field"].tolist() == ["image_id"] and METADATA_FILE in rej["reason"].iloc[0]
    assert len(df) == N
    with pytest.raises(DataError, match="no row"):
        load_ham10000(ham_copy, strict=True)


def test_images_a_preprocessed_split_leaves_out_are_counted_not_rejected(ham_copy):
    expected = write_medfair_split(ham_copy)  # drops rows without age or sex, as MEDFAIR does
    df = load_ham10000(ham_copy)
    assert len(df.attrs["rejections"]) == 0 and df.attrs["unlisted_images"] == N - len(expected)


def test_truncated_jpeg_is_rejected_at_load_time(ham_copy):
    victim = next((ham_copy / "HAM10000_images_part_1").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    rej = load_ham10000(ham_copy).attrs["rejections"]
    assert rej["id"].tolist() == [victim.stem] and rej["file"].tolist() == [str(victim)]
    assert "truncated" in rej["reason"].iloc[0]
    with pytest.raises(DataError, match="truncated"):
        load_ham10000(ham_copy, strict=True)


# ----------------------------------------------------------------------------- train / test only: validation carved
def test_train_test_only_split_gets_a_seeded_lesion_level_validation_set(ham_copy, caplog):
    expected = write_medfair_split(ham_copy, with_val=False)
    with caplog.at_level("WARNING", logger="fairdiff.data"):
        df = load_ham10000(ham_copy, val_fraction=0.25, seed=3)
    assert set(df["split"]) == {"train", "val", "test"}
    shipped = expected.set_index("image_id")["split"]
    assert (df.loc[df["split"] == "val", "id"].map(shipped) == "train").all()  # carved from train only
    assert (df.loc[df["split"] == "test", "id"].map(shipped) == "test").all()
    assert (df.groupby("lesion_id")["split"].nunique() == 1).all()  # whole lesions
    n_train_lesions = expected.loc[expected["split"] == "train", "lesion_id"].nunique()
    carved = df.attrs["val_carved"]
    assert carved["by"] == "lesion_id" and (carved["fraction"], carved["seed"]) == (0.25, 3)
    assert carved["groups"] == df.loc[df["split"] == "val", "lesion_id"].nunique() == round(0.25 * n_train_lesions)
    assert carved["rows"] == int((df["split"] == "val").sum())
    assert "no validation rows" in caplog.text and "lesion_id" in caplog.text
    again = load_ham10000(ham_copy, val_fraction=0.25, seed=3)
    pd.testing.assert_series_equal(again["split"], df["split"])


def test_a_shipped_validation_split_is_kept(ham_copy):
    write_medfair_split(ham_copy, with_val=True)
    assert "val_carved" not in load_ham10000(ham_copy).attrs
