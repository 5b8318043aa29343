"""Synthetic FairGenMed: the real on-disk format, determinism, label rules, priors, safety, visibility."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fairdiff  # noqa: F401
from fairdiff.data.synth import fairgenmed as synth
from fairdiff.data.synth.fundus import DISC_RADIUS, HEIGHT, WIDTH, EyeLook, render_fundus
from fairdiff.errors import DataError

# Written out here, not imported: the test must fail if the module's constants drift from the real format.
REAL_COLUMNS = ["filename", "use", "age", "gender", "race", "ethnicity", "language", "maritalstatus", "md",
                "glaucoma", "md_severity", "cdr_status", "near_vision_refraction_stage", "rnflt_status"]
VOCAB = {
    "use": {"training", "validation", "test"},
    "gender": {"female", "male"},
    "race": {"asian", "black", "white"},
    "ethnicity": {"non-hispanic", "hispanic", "unknown"},
    "language": {"english", "spanish", "other"},
    "maritalstatus": {"married or partnered", "single", "divorced", "widowed", "legally separated", "unknown"},
    "glaucoma": {"yes", "no"},
    "md_severity": {"normal", "mild", "moderate", "severe"},
    "cdr_status": {"normal", "borderline", "abnormal"},
    "near_vision_refraction_stage": {"positive", "neutral", "negative"},
    "rnflt_status": {"low", "medium", "high"},
}
NPZ_INTS = ["glaucoma", "race", "male", "hispanic", "maritalstatus", "language"]
FOLDER_OF_USE = {"training": "train", "validation": "val", "test": "test"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("synth") / "fairgenmed"
    return out, synth.generate_fairgenmed(out, 20, seed=0, progress=False)


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


# ---------------------------------------------------------------------------------------------
# layout and formats

def test_layout_has_exactly_the_real_files(dataset):
    out, _ = dataset
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["data_summary.csv", "synth_params.json", "synth_subjects.csv", "train", "val", "test"])
    summary = _read_csv(out / "data_summary.csv")
    assert summary["filename"].tolist() == [f"data_{i:05d}.npz" for i in range(1, 21)]
    expected = set()
    for name, use in zip(summary["filename"], summary["use"]):
        ident = name[len("data_"):-len(".npz")]
        expected |= {f"{FOLDER_OF_USE[use]}/{name}", f"{FOLDER_OF_USE[use]}/slo_fundus_{ident}.jpg"}
    written = {str(p.relative_to(out)) for split in ("train", "val", "test") for p in (out / split).iterdir()}
    assert written == expected


def test_csv_columns_and_vocabularies(dataset):
    out, returned = dataset
    summary = _read_csv(out / "data_summary.csv")
    assert list(summary.columns) == REAL_COLUMNS
    for column, vocab in VOCAB.items():
        assert set(summary[column]) <= vocab, column
    for column in ("age", "md"):
        assert np.isfinite(summary[column].astype(float)).all()
    pd.testing.assert_frame_equal(pd.read_csv(out / "data_summary.csv"), returned.reset_index(drop=True),
                                  check_dtype=False)


def test_npz_keys_dtypes_and_agreement_with_csv(dataset):
    out, _ = dataset
    summary = _read_csv(out / "data_summary.csv")
    for row in summary.itertuples():
        with np.load(out / FOLDER_OF_USE[row.use] / row.filename, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        assert set(arrays) >= set(NPZ_INTS) | {"md", "age", "slo_fundus"}
        for key in NPZ_INTS:
            assert arrays[key].shape == () and arrays[key].dtype == np.int64, key
        for key in ("md", "age"):
            assert arrays[key].shape == () and arrays[key].dtype == np.float32, key
        assert arrays["slo_fundus"].shape == (200, 200, 3) and arrays["slo_fundus"].dtype == np.uint8
        assert arrays["slo_fundus"].std() > 5  # an image, not a constant
        assert ["asian", "black", "white"][int(arrays["race"])] == row.race
        assert ["female", "male"][int(arrays["male"])] == row.gender
        assert {0: "non-hispanic", 1: "hispanic", -1: "unknown"}[int(arrays["hispanic"])] == row.ethnicity
        assert ["english", "spanish", "other"][int(arrays["language"])] == row.language
        assert ("yes" if arrays["glaucoma"] == 1 else "no") == row.glaucoma
        assert arrays["md"] == pytest.approx(float(row.md), abs=1e-4)
        assert arrays["age"] == pytest.approx(float(row.age), abs=1e-3)


def test_jpgs_are_512_wide_664_high_rgb(dataset):
    out, _ = dataset
    for path in sorted((out / "train").glob("slo_fundus_*.jpg"))[:5]:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (512, 664) and im.mode == "RGB"
            pixels = np.asarray(im, dtype=np.int16)
        assert pixels.std() > 10
        # Near-grey with a faint warm tint: red >= blue, but only slightly.
        assert 0 <= (pixels[..., 0] - pixels[..., 2]).mean() < 12


def test_split_counts_are_exact(dataset):
    _, summary = dataset
    assert summary["use"].value_counts().to_dict() == {"training": 14, "validation": 2, "test": 4}
    counts = synth.draw_subjects(1000, seed=5)["split"].value_counts().to_dict()
    assert counts == {"train": 700, "val": 100, "test": 200}


def test_params_file_records_everything(dataset):
    out, _ = dataset
    saved = json.loads((out / "synth_params.json").read_text())
    assert saved["generator"] == synth.GENERATOR and saved["version"] == synth.GENERATOR_VERSION
    assert saved["seed"] == 0 and saved["n"] == 20
    assert synth.FundusSynthParams(**{k: tuple(v) if isinstance(v, list) else v
                                      for k, v in saved["params"].items()}) == synth.FundusSynthParams()


# ---------------------------------------------------------------------------------------------
# determinism

def _snapshot(root: Path) -> dict[str, object]:
    snap: dict[str, object] = {"csv": (root / "data_summary.csv").read_bytes()}
    for path in sorted(root.glob("*/*")):
        key = str(path.relative_to(root))
        if path.suffix == ".jpg":
            snap[key] = path.read_bytes()
        else:
            with np.load(path) as npz:
                snap[key] = {k: npz[k].tobytes() + str(npz[k].dtype).encode() for k in npz.files}
    return snap


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    runs = {name: synth.generate_fairgenmed(tmp_path / name, 6, seed=seed, progress=False)
            for name, seed in (("a", 7), ("b", 7), ("c", 8))}
    assert _snapshot(tmp_path / "a") == _snapshot(tmp_path / "b")
    pd.testing.assert_frame_equal(runs["a"], runs["b"])
    a, c = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "c")
    assert a["csv"] != c["csv"]
    jpgs_a = sorted(v for k, v in a.items() if k.endswith(".jpg"))
    jpgs_c = sorted(v for k, v in c.items() if k.endswith(".jpg"))
    assert not set(jpgs_a) & set(jpgs_c)


def test_a_subject_does_not_depend_on_n():
    small, large = synth.draw_subjects(5, seed=3), synth.draw_subjects(40, seed=3)
    drop = ["split", "use"]  # exact split counts depend on n by design
    pd.testing.assert_frame_equal(small.drop(columns=drop), large.head(5).drop(columns=drop))
    first = large.iloc[0].to_dict()
    assert np.array_equal(np.asarray(synth.render_subject(first, 3)),
                          np.asarray(synth.render_subject(small.iloc[0].to_dict(), 3)))


# ---------------------------------------------------------------------------------------------
# labels

@pytest.mark.parametrize("md, glaucoma, expected", [
    (0.5, 0, "normal"), (-0.9, 0, "normal"), (-3.1, 1, "mild"), (-5.99, 1, "mild"), (-6.0, 1, "moderate"),
    (-12.0, 1, "moderate"), (-12.01, 1, "severe"), (-30.0, 1, "severe")])
def test_md_severity_cut_offs(md, glaucoma, expected):
    assert synth.classify_md(md, glaucoma) == expected


@pytest.mark.parametrize("cdr, expected", [(0.2, "normal"), (0.49, "normal"), (0.5, "borderline"),
                                           (0.7, "borderline"), (0.71, "abnormal"), (0.9, "abnormal")])
def test_cdr_cut_offs(cdr, expected):
    assert synth.classify_cdr(cdr) == expected


@pytest.mark.parametrize("se, expected", [(-6.0, "negative"), (-0.75, "negative"), (-0.5, "neutral"),
                                          (0.0, "neutral"), (0.5, "neutral"), (0.75, "positive")])
def test_refraction_cut_offs(se, expected):
    assert synth.classify_refraction(se) == expected


@pytest.mark.parametrize("rnfl, expected", [(60.0, "low"), (79.9, "low"), (80.0, "medium"), (94.9, "medium"),
                                            (95.0, "high")])
def test_rnfl_cut_offs(rnfl, expected):
    assert synth.classify_rnfl(rnfl) == expected


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    return synth.draw_subjects(3000, seed=11)


def test_labels_follow_the_clinic(population):
    t = population
    glaucoma, healthy = t[t["glaucoma"] == 1], t[t["glaucoma"] == 0]
    assert (glaucoma["md"] < -3).all() and (healthy["md"] >= -1).all() and (t["md"] >= -32).all()
    assert glaucoma["md"].min() < -20  # the loss spreads towards -30 dB
    assert (healthy["md_severity"] == "normal").all()
    assert set(glaucoma["md_severity"]) == {"mild", "moderate", "severe"}
    for column, rule, source in (("md_severity", synth.classify_md, ["md", "glaucoma"]),
                                 ("cdr_status", synth.classify_cdr, ["cdr"]),
                                 ("near_vision_refraction_stage", synth.classify_refraction, ["se"]),
                                 ("rnflt_status", synth.classify_rnfl, ["rnfl"])):
        assert t[column].tolist() == [rule(*values) for values in t[source].itertuples(index=False)], column
    # Damage shows: bigger cups, thinner nerve fibres, mostly abnormal CDR in severe glaucoma.
    assert glaucoma["cdr"].mean() > healthy["cdr"].mean() + 0.15
    assert glaucoma["rnfl"].mean() < healthy["rnfl"].mean() - 15
    severe = t[t["md_severity"] == "severe"]
    assert (severe["cdr_status"] == "abnormal").mean() > 0.7
    assert (healthy["cdr_status"] == "normal").mean() > 0.8
    assert set(t["near_vision_refraction_stage"]) == {"positive", "neutral", "negative"}
    assert set(t["rnflt_status"]) == {"low", "medium", "high"}


def test_group_priors_are_respected(population):
    t, n = population, len(population)

    def close(share: float, p: float) -> bool:  # within 4 binomial standard deviations
        return abs(share - p) < 4 * np.sqrt(p * (1 - p) / n)

    for code, p in enumerate((0.08, 0.12, 0.80)):
        assert close((t["race"] == code).mean(), p)
    assert close((t["male"] == 0).mean(), 0.58)
    assert close((t["hispanic"] == 1).mean(), 0.04)
    assert close((t["hispanic"] == -1).mean(), 0.05)
    assert close((t["glaucoma"] == 1).mean(), 0.5)
    assert abs(t["age"].mean() - 59) < 1.5 and t["age"].between(12, 96).all()
    # Older patients and Black patients are more often glaucomatous.
    assert t.loc[t["age"] > 65, "glaucoma"].mean() > t.loc[t["age"] < 50, "glaucoma"].mean()
    assert t.loc[t["race"] == 1, "glaucoma"].mean() > t.loc[t["race"] == 2, "glaucoma"].mean()


def test_prevalence_knob_is_calibrated():
    params = synth.FundusSynthParams(glaucoma_prevalence=0.25)
    share = synth.draw_subjects(2000, seed=2, params=params)["glaucoma"].mean()
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 2000)


def _race_gap_z(t: pd.DataFrame, column: str, race: int) -> float:
    """How many standard errors the mean of ``column`` in ``race`` lies above that of White patients."""
    a, b = t.loc[t["race"] == race, column], t.loc[t["race"] == 2, column]
    return (a.mean() - b.mean()) / np.sqrt(a.var() / len(a) + b.var() / len(b) + 1e-12)


def test_inequality_knob_scales_group_differences(population):
    default = population
    assert default.groupby("race")["difficulty"].mean().tolist() == pytest.approx([0.3, 0.5, 0.0], abs=0.05)
    for column in ("pigment", "disc_scale", "noise", "blur"):
        assert _race_gap_z(default, column, 1) > 4, column  # Black vs White: visibly different images
    equal = synth.draw_subjects(3000, seed=11, params=synth.FundusSynthParams(inequality=0.0))
    assert (equal["difficulty"] == 0).all() and (equal["contrast"] == 1).all()
    for column in ("pigment", "disc_scale", "noise", "blur", "variability"):
        for race in (0, 1):
            assert abs(_race_gap_z(equal, column, race)) < 4, (column, race)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="race_prior"):
        synth.FundusSynthParams(race_prior=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="race_difficulty"):
        synth.FundusSynthParams(race_difficulty=(0.1, 0.2))
    with pytest.raises(ValueError, match="seed"):
        synth.draw_subjects(3, seed=-1)
    with pytest.raises(ValueError, match="n"):
        synth.generate_fairgenmed(tmp_path / "x", 0, progress=False)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# safety

def test_refuses_a_folder_it_did_not_make(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="non-empty"):
        synth.generate_fairgenmed(out, 2, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError, match="existing file"):
        synth.generate_fairgenmed(a_file, 2, progress=False)


def test_replaces_its_own_folder_only_with_overwrite(tmp_path):
    out = tmp_path / "synthetic"
    out.mkdir()  # an existing empty folder is fine
    synth.generate_fairgenmed(out, 2, seed=1, progress=False)
    with pytest.raises(DataError, match="overwrite"):
        synth.generate_fairgenmed(out, 3, seed=1, progress=False)
    assert len(_read_csv(out / "data_summary.csv")) == 2
    synth.generate_fairgenmed(out, 3, seed=1, progress=False, overwrite=True)
    assert len(_read_csv(out / "data_summary.csv")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic"]  # no temporary folders left


def test_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def fail_on_third(folder, row, seed):
        calls.append(row["number"])
        if len(calls) == 3:
            raise RuntimeError("killed")
        original(folder, row, seed)

    original = synth.write_subject
    monkeypatch.setattr(synth, "write_subject", fail_on_third)
    with pytest.raises(RuntimeError, match="killed"):
        synth.generate_fairgenmed(tmp_path / "out", 5, progress=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# orientation and what the image shows

def test_storage_rotation_is_90_degrees_counter_clockwise():
    anatomical = Image.fromarray(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))  # 3 wide, 2 high
    stored = synth.to_stored_frame(anatomical)
    assert np.asarray(stored).tolist() == [[3, 6], [2, 5], [1, 4]]  # the top row now runs up the left side
    assert np.array_equal(np.asarray(synth.to_anatomical_frame(stored)), np.asarray(anatomical))


def test_stored_jpg_rotated_clockwise_is_the_anatomical_render(dataset):
    out, summary = dataset
    subjects = pd.read_csv(out / "synth_subjects.csv").to_dict("records")
    row = subjects[0]
    with Image.open(out / row["split"] / f"slo_fundus_{row['number']:05d}.jpg") as im:
        back = np.asarray(synth.to_anatomical_frame(im.getchannel("R")).reduce(8), dtype=float)  # red = grey
    anatomical = synth.render_subject(row, 0, stored_frame=False)
    assert anatomical.size == (WIDTH, HEIGHT) == (664, 512)
    assert np.abs(back - np.asarray(anatomical.reduce(8), dtype=float)).mean() < 2.0


def _render(seed: int = 4, **look) -> np.ndarray:
    return np.asarray(render_fundus(EyeLook(**look), np.random.default_rng(seed)), dtype=float)


def test_the_cup_to_disc_ratio_can_be_measured_on_the_image():
    # variability 0 puts the disc at (0.56 W, 0.5 H); the same random draws make only the cup differ.
    small, large = _render(cdr=0.3, variability=0.0, noise=0.0), _render(cdr=0.8, variability=0.0, noise=0.0)
    brighter = (large - small) > 8
    cx, cy = int(0.56 * WIDTH), HEIGHT // 2
    assert not brighter[:, : cx - 80].any() and not brighter[:, cx + 80:].any()
    rows = np.flatnonzero(brighter[:, cx - 15:cx + 15].any(axis=1))
    # The brighter region spans the larger cup: 2 x 0.8 x the disc's vertical radius.
    assert rows.max() - rows.min() == pytest.approx(2 * 0.8 * DISC_RADIUS, abs=8)
    assert abs((rows.max() + rows.min()) / 2 - cy) < 4


def _coarse(a: np.ndarray) -> np.ndarray:
    return a.reshape(HEIGHT // 8, 8, WIDTH // 8, 8).mean(axis=(1, 3))


def test_contrast_scales_the_image_structure():
    typical, flat = _render(), _render(contrast=0.6)
    assert _coarse(flat).std() / _coarse(typical).std() == pytest.approx(0.6, abs=0.08)


def test_noise_adds_fine_grain_only():
    quiet, noisy = _render(noise=0.03), _render(noise=0.12)
    fine = [np.abs(a - np.kron(_coarse(a), np.ones((8, 8)))).mean() for a in (quiet, noisy)]
    assert fine[1] > 1.5 * fine[0]
    assert np.abs(_coarse(noisy) - _coarse(quiet)).mean() < 3  # the anatomy is unchanged


def test_the_project_loader_reads_it_strictly(dataset):
    loader = pytest.importorskip("fairdiff.data.fairgenmed")
    out, summary = dataset
    frame = loader.load_fairgenmed(out, strict=True)
    assert len(frame) == len(summary)
    by_id = frame.set_index("id")
    for row in summary.itertuples():
        ident = row.filename[len("data_"):-len(".npz")]
        assert by_id.loc[ident, "split"] == FOLDER_OF_USE[row.use]
        assert by_id.loc[ident, "glaucoma"] == (row.glaucoma == "yes")
