"""CheXpert (chest X-ray) loader: the official CSVs joined with the demographics table, or the
authors' sample.

Two layouts (``layout="auto"`` picks ``sample`` when its CSVs are in ``root``, else ``official``).

``official``: the Stanford AIMI release (``root`` may be the folder that holds
``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/``, or that folder itself)::

    CheXpert-v1.0-small/train.csv, valid.csv   Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations
    CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_frontal.jpg
    chexpert_demo.csv                          PATIENT, GENDER, AGE_AT_CXR, PRIMARY_RACE, ETHNICITY

``Path`` is relative to the parent of the CSV's folder (``CheXpert-v1.0-small/train/...``);
a copy whose dataset folder was renamed still works, because the first component of ``Path``
is also tried relative to the CSV's own folder.

Demographics. Race exists only in the separate table, ``CHEXPERT DEMO.xlsx`` in the release,
read as it is (pandas with openpyxl) from ``root``, beside ``train.csv`` or from its parent
folder. A CSV copy (chexpert_demo.csv, CHEXPERT DEMO.csv or CHEXPERT_DEMO.csv, same columns) in
one of those places is read instead when present. A ``train.csv`` that already carries a ``PRIMARY_RACE``
column (a pre-merged copy) needs no table. Without any, loading fails, because race is one of
the two FairDiffusion attributes; ``require_demographics=False`` loads anyway with every race
unknown (-1). A patient missing from the table also gets race -1; all -1 are counted in
``attrs["unknown"]``.

Race mapping. ``PRIMARY_RACE`` is free text ("White, non-Hispanic", "Black or African
American", "Asian - Historical Conv", "Other", "Patient Refused", ...). A value maps to Asian,
Black or White when it names exactly one of them as a whole word (Black also as "African
American", White also as "Caucasian"); anything else is unknown (-1). Whole words matter:
the common substring rule reads "White or Caucasian" as Asian.

Labels: Pleural Effusion 1 is positive; 0, -1 (uncertain, the "U-zeros" policy of the paper)
and blank are negative. The raw value is kept in ``pleural_effusion_raw``. Sex comes from the
CSV's ``Sex`` (Male 0, Female 1, Unknown / blank -1; the table's GENDER fills an unknown).

Split rule: patients of ``train.csv`` are split into train / val / test by ``split_fractions``
(default 0.9 / 0.1 / 0, seeded, by patient: see :func:`fairdiff.data.ham10000.split_by_group`);
every ``valid.csv`` row is test (the official held-out set, labelled by radiologists). No patient
is in two splits: a ``train.csv`` patient who also appears in ``valid.csv`` is rejected.
Frontal films only by default (``frontal_only``), as in the paper's sample.

``sample``: the authors' cohort (docs/datasets.md, section 3.2)::

    chexpert_sample_train_6000.csv, chexpert_sample_val_1000.csv, chexpert_sample_test_3000.csv
    Chexpert_sample_512/<file name in column 24>

Any count in the names is accepted (``chexpert_sample_<train|val|test>_<N>.csv``); train and
test are required, val is optional. The CSVs have a header row and are read BY POSITION, as the
authors' code reads them (counting from 0, every column including an index column): 3 Sex
(Male 0, Female 1, Unknown / blank -1), 5 race (the rule below; the authors' files hold Asian,
Black, White), 6 ethnicity (kept as ``ethnicity_text``, not an attribute), 9-22 the 14
observations in the standard order (each 1, 0, -1 or blank; Pleural Effusion is column 19,
read as above), 24 the image file name under ``Chexpert_sample_512/``. A CSV with fewer than 25
columns is an error. Columns named ``Age`` or ``AP/PA`` in the header are kept when present.
Splits are the files' own; ``frontal_only`` does not filter this cohort; a patient found in
several splits is kept as the authors had it and counted in ``attrs["patients_in_several_splits"]``.

Both layouts: every image path must stay inside ``root`` (checked on the text: an absolute path
or a ``..`` that climbs out is a rejection naming the CSV, row and field, and nothing there is
opened; a symlink placed under ``root`` is followed as usual). Every image is decoded (see
:func:`fairdiff.data.common.check_image`), so a truncated file is rejected at load time. A row
without its image is a rejection, and so is an image under the image folders (``train/`` and
``valid/`` beside the CSVs, or ``Chexpert_sample_512/``) that no row names. When the frame has
no validation rows, ``val_fraction`` of the training patients are set aside as validation,
seeded by ``seed`` (:func:`fairdiff.data.common.carve_validation`; ``attrs["val_carved"]``).

The loader never writes into ``root``."""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Sequence

import pandas as pd

from fairdiff.data.common import (carve_validation, find_duplicates, find_file, finish_frame, image_files,
                                   keep_readable, map_vocab, parse_age, path_inside, read_csv, reject_unlisted,
                                   require_dir, split_by_group)
from fairdiff.errors import DataError, Rejections
from fairdiff.schema import CHEXPERT

DATASET_DIRS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
DEMO_NAMES = ("chexpert_demo.csv", "CHEXPERT DEMO.csv", "CHEXPERT_DEMO.csv")
DEMO_XLSX = "CHEXPERT DEMO.xlsx"
REQUIRED = ("Path", "Sex", "Age", "Frontal/Lateral", "Pleural Effusion")
SEX_VOCAB = {"male": 0, "female": 1, "unknown": -1, "": -1}
VIEW_VOCAB = {"frontal": 0, "lateral": 1}
EFFUSION_VOCAB = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": 0, "-1.0": 0, "": 0}
RACE_WORDS = ((0, ("asian",)), (1, ("black", "african american")), (2, ("white", "caucasian")))
PATH_PATTERN = re.compile(r"(patient\d+)/(study\d+)/([^/]+)\.(?:jpg|jpeg|png)$", re.IGNORECASE)
LAYOUTS = ("auto", "official", "sample")
EXTRAS = ("patient", "study", "view", "ap_pa", "age_years", "pleural_effusion_raw", "race_text", "ethnicity_text")

OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices")
SAMPLE_DIR = "Chexpert_sample_512"
SAMPLE_CSV = re.compile(r"chexpert_sample_(train|val|valid|test)_\d+\.csv", re.IGNORECASE)
SAMPLE_SPLITS = {"train": "train", "val": "val", "valid": "val", "test": "test"}
# Positions the authors' code reads (0-based, every column counted): line[3], line[5], ...
SAMPLE_SEX, SAMPLE_RACE, SAMPLE_ETHNICITY, SAMPLE_FILE = 3, 5, 6, 24
SAMPLE_OBSERVATIONS = range(9, 9 + len(OBSERVATIONS))
SAMPLE_EFFUSION = 9 + OBSERVATIONS.index("Pleural Effusion")  # column 19


def race_group(text: str) -> int:
    """Asian 0, Black 1, White 2 when ``text`` names exactly one of them as whole words; else -1."""
    lowered = str(text).lower()
    hits = {group for group, words in RACE_WORDS
            if any(re.search(rf"\b{re.escape(w)}\b", lowered) for w in words)}
    return hits.pop() if len(hits) == 1 else -1


def load_chexpert(root: str | Path, *, strict: bool = False, split_seed: int = 0,
                  split_fractions: Sequence[float] = (0.9, 0.1, 0.0), frontal_only: bool = True,
                  require_demographics: bool = True, check_images: bool = True, layout: str = "auto",
                  val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Load CheXpert as one row per film (columns per :mod:`fairdiff.schema`).

    Columns: id (``patientNNNNN_studyN_viewN_frontal``), split, image_path, prompt, sex, race,
    pleural_effusion, then patient, study, view, ap_pa, age_years, pleural_effusion_raw,
    race_text, ethnicity_text. ``layout``: ``auto`` | ``official`` | ``sample`` (module
    docstring); ``split_seed``, ``split_fractions``, ``frontal_only`` and
    ``require_demographics`` apply to the official layout. A bad row is skipped and listed in
    ``attrs["rejections"]`` (``strict=True`` raises instead); folder-level problems always raise
    a DataError. ``check_images`` decodes every image (a JPEG at 1/8 scale, on a few threads).
    ``val_fraction`` and ``seed``: the validation set carved from train when the frame has none."""
    root = require_dir(root, "the CheXpert root")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}; got {layout!r}")
    sample_files = _find_sample_files(root) if layout != "official" else None
    if layout == "sample" and sample_files is None:
        raise DataError(root, None, "the authors' sample CSVs chexpert_sample_train_<N>.csv and "
                        "chexpert_sample_test_<N>.csv (val optional) in the root", "none found")
    rejections = Rejections(strict)
    if sample_files is None:
        rows, attrs = _read_official(root, rejections, split_seed, split_fractions, frontal_only, require_demographics)
    else:
        rows, attrs = _read_sample(root, sample_files, rejections)
    if check_images:
        rows = keep_readable(rows, rejections)
    frame = finish_frame(rows, CHEXPERT, rejections, root, extras=EXTRAS, **attrs)
    return carve_validation(frame, "patient", val_fraction, seed)


def _read_official(root: Path, rejections: Rejections, split_seed: int, split_fractions: Sequence[float],
                   frontal_only: bool, require_demographics: bool) -> tuple[list[dict], dict]:
    """Rows of train.csv / valid.csv (split, deduplicated, frontal only if asked) and frame attrs."""
    train_csv = find_file(root, ["train.csv"], subdirs=("", *DATASET_DIRS))
    csv_dir = train_csv.parent
    valid_csv = csv_dir / "valid.csv"

    tables = {"train": read_csv(train_csv, required=REQUIRED)}
    if valid_csv.is_file():
        tables["valid"] = read_csv(valid_csv, required=REQUIRED)
    demo, demo_source = _demographics(root, csv_dir, tables["train"], require_demographics)

    rows, named = [], set()
    for source, table in tables.items():
        file = train_csv if source == "train" else valid_csv
        for number, rec in enumerate(table.to_dict("records"), start=1):
            row = _parse_row(rec, file, number, root, csv_dir, demo, rejections, named)
            if row is not None:
                row["_source"] = source
                rows.append(row)
    for source in tables:  # films under train/ and valid/ that no row names
        folder = csv_dir / source
        if folder.is_dir():
            reject_unlisted(image_files(folder), named, rejections, csv_dir / f"{source}.csv", "Path", _film_id)

    rows = _drop_duplicate_films(_assign_splits(rows, train_csv, split_fractions, split_seed, rejections), rejections)
    n_lateral = sum(r["view_type"] == "lateral" for r in rows)
    if frontal_only:
        rows = [r for r in rows if r["view_type"] == "frontal"]
    return rows, {"layout": "official", "demographics": demo_source,
                  "lateral_skipped": n_lateral if frontal_only else 0}


def _drop_duplicate_films(rows: list[dict], rejections: Rejections) -> list[dict]:
    """Every row of a film that occurs twice is rejected: which copy is right cannot be known."""
    dup = find_duplicates([r["id"] for r in rows])
    for r in rows:
        if r["id"] in dup:
            rejections.add(r["id"], DataError(r["_file"], "Path", "each film once", f"{r['id']} repeated"))
    return [r for r in rows if r["id"] not in dup]


# ----------------------------------------------------------------------------- the authors' sample
def _find_sample_files(root: Path) -> dict[str, Path] | None:
    """split -> the authors' sample CSV in ``root``; None without a train + test pair."""
    found: dict[str, list[Path]] = {}
    for path in sorted(root.iterdir()):
        match = SAMPLE_CSV.fullmatch(path.name)
        if match and path.is_file():
            found.setdefault(SAMPLE_SPLITS[match.group(1).lower()], []).append(path)
    if "train" not in found or "test" not in found:
        return None
    for split, paths in found.items():
        if len(paths) > 1:
            raise DataError(root, None, f"one sample CSV for the {split} split", f"{[p.name for p in paths]}")
    return {split: paths[0] for split, paths in found.items()}


def _read_sample_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a sample CSV, every cell as text, with at least 25 columns."""
    try:
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure becomes a clear message
        raise DataError(path, None, "a readable CSV file", f"{type(exc).__name__}: {exc}") from exc
    if table.shape[1] <= SAMPLE_FILE or table.shape[0] == 0:
        raise DataError(path, None, f"a header row and at least {SAMPLE_FILE + 1} columns (the authors' layout: "
                        "3 Sex, 5 race, 6 ethnicity, 9-22 the 14 observations, 24 the file name)",
                        f"{table.shape[0]} rows of {table.shape[1]} columns")
    cells = table.fillna("").to_numpy(dtype=str).tolist()
    return cells[0], cells[1:]


def _column(header: list[str], position: int) -> str:
    """How an error names a sample CSV column: its position and its header text."""
    return f"column {position} ({header[position].strip()!r})"


def _read_sample(root: Path, files: dict[str, Path], rejections: Rejections) -> tuple[list[dict], dict]:
    """Rows of the authors' sample CSVs (by position) and frame attrs; unlisted images rejected."""
    image_dir = require_dir(root / SAMPLE_DIR, "the authors' CheXpert images")
    rows, named = [], set()
    for split, file in files.items():
        header, records = _read_sample_csv(file)
        for number, values in enumerate(records, start=1):
            row = _parse_sample_row(values, header, file, number, root, image_dir, rejections, named)
            if row is not None:
                row["split"] = split
                rows.append(row)
    reject_unlisted(image_files(image_dir), named, rejections, " / ".join(p.name for p in files.values()),
                    _column(header, SAMPLE_FILE), _film_id)
    rows = _drop_duplicate_films(rows, rejections)
    splits = pd.DataFrame(rows, columns=["patient", "split"]).groupby("patient")["split"].nunique()
    return rows, {"layout": "sample", "demographics": f"sample CSVs, column {SAMPLE_RACE}",
                  "lateral_skipped": 0, "patients_in_several_splits": int((splits > 1).sum())}


def _parse_sample_row(values: list[str], header: list[str], file: Path, number: int, root: Path, image_dir: Path,
                      rejections: Rejections, named: set) -> dict | None:
    """One row of a sample CSV, read by position; its image goes into ``named`` even if rejected."""
    raw_file = values[SAMPLE_FILE].strip()
    rel = raw_file.replace("\\", "/")
    match = PATH_PATTERN.search(rel)
    row_id = _film_id(rel) or f"{file.name} row {number}"
    names = {h.strip().lower(): i for i, h in enumerate(header)}  # optional named extras: Age, AP/PA
    try:
        image = path_inside(root, image_dir, raw_file, file, _column(header, SAMPLE_FILE), number)
        named.add(str(image))
        sex = map_vocab(values[SAMPLE_SEX], SEX_VOCAB, file, _column(header, SAMPLE_SEX))
        for position in SAMPLE_OBSERVATIONS:
            map_vocab(values[position], EFFUSION_VOCAB, file, _column(header, position))  # 1, 0, -1 or blank
        effusion = map_vocab(values[SAMPLE_EFFUSION], EFFUSION_VOCAB, file, _column(header, SAMPLE_EFFUSION))
        age_years = (parse_age(values[names["age"]], file, _column(header, names["age"])) if "age" in names
                     else float("nan"))
    except DataError as err:
        err.add_note(f"row {number} of {file}")
        rejections.add(row_id, err)
        return None
    patient = match.group(1) if match else _patient_in(rel) or row_id
    raw_effusion = values[SAMPLE_EFFUSION].strip()
    return dict(id=row_id, _file=file, image_path=str(image), sex=sex, race=race_group(values[SAMPLE_RACE]),
                pleural_effusion=effusion, patient=patient, study=match.group(2) if match else "",
                view=match.group(3) if match else "", view_type="frontal",
                ap_pa=values[names["ap/pa"]].strip() if "ap/pa" in names else "", age_years=age_years,
                pleural_effusion_raw=float(raw_effusion) if raw_effusion else float("nan"),
                race_text=values[SAMPLE_RACE].strip(), ethnicity_text=values[SAMPLE_ETHNICITY].strip())


def _film_id(path: str | Path) -> str:
    """A film's id from its path: ``patientNNNNN_studyN_viewN_frontal``, or the file name's stem."""
    match = PATH_PATTERN.search(Path(path).as_posix())
    return "_".join(match.groups()) if match else Path(path).stem


def _patient_in(text: str) -> str:
    """The ``patientNNNNN`` named in a file name, or ''."""
    found = re.search(r"patient\d+", text, re.IGNORECASE)
    return found.group(0) if found else ""


# ----------------------------------------------------------------------------- the official release
def _demographics(root: Path, csv_dir: Path, train: pd.DataFrame, required: bool) -> tuple[dict | None, str | None]:
    """PATIENT -> (race id, race text, GENDER, ETHNICITY) from the table, or from a pre-merged train.csv."""
    if "PRIMARY_RACE" in train.columns:
        return None, "train.csv (pre-merged PRIMARY_RACE)"
    places = list(dict.fromkeys([root, csv_dir, csv_dir.parent]))
    path = next((p / n for p in places for n in DEMO_NAMES if (p / n).is_file()), None)
    if path is None:
        xlsx = next((p / DEMO_XLSX for p in places if (p / DEMO_XLSX).is_file()), None)
        if xlsx is not None:
            table = _read_xlsx(xlsx)
        elif required:
            raise DataError(root, "PRIMARY_RACE", f"the demographics table ({DEMO_XLSX}, or a CSV copy "
                            f"{' or '.join(DEMO_NAMES)}, with PATIENT and "
                            "PRIMARY_RACE) in the root, beside train.csv or in its parent; or pass "
                            "require_demographics=False to load with race unknown (-1)", "not found")
        else:
            return None, None
    else:
        table = read_csv(path, required=("PATIENT", "PRIMARY_RACE"))
    path = path or xlsx
    demo: dict[str, tuple] = {}
    conflicting = set()
    for rec in table.to_dict("records"):
        patient = rec["PATIENT"].strip()
        entry = (race_group(rec["PRIMARY_RACE"]), rec["PRIMARY_RACE"].strip(), rec.get("GENDER", "").strip(),
                 rec.get("ETHNICITY", "").strip())
        if patient in demo and demo[patient][:2] != entry[:2]:
            conflicting.add(patient)
        demo.setdefault(patient, entry)
    for patient in conflicting:
        demo[patient] = DataError(path, "PATIENT", f"one PRIMARY_RACE per patient ({patient} has several)", patient)
    return demo, str(path)


def _read_xlsx(path: Path) -> pd.DataFrame:
    """The demographics workbook's first sheet, every cell as text (blank cells empty)."""
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        raise DataError(path, None, "openpyxl to read the workbook (a pinned dependency: pip install -r "
                        "requirements.txt), or a CSV copy named chexpert_demo.csv beside it", "only the .xlsx") from None
    try:
        table = pd.read_excel(path, dtype=str).fillna("")
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file becomes a clear message
        raise DataError(path, None, "a readable .xlsx workbook", f"{type(exc).__name__}: {exc}") from exc
    table.columns = [str(c).strip() for c in table.columns]
    for col in ("PATIENT", "PRIMARY_RACE"):
        if col not in table.columns:
            raise DataError(path, col, f"a column named {col!r}", f"columns {list(table.columns)}")
    return table


def _parse_row(rec: dict, file: Path, number: int, root: Path, csv_dir: Path, demo: dict | None,
               rejections: Rejections, named: set) -> dict | None:
    """One train.csv / valid.csv row; its image path goes into ``named`` even if the row is rejected."""
    raw_path = rec["Path"].strip()
    match = PATH_PATTERN.search(raw_path.replace("\\", "/"))
    row_id = "_".join(match.groups()) if match else raw_path
    try:
        if match is None:
            raise DataError(file, "Path", "a path like CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
                            rec["Path"])
        image = _image_path(raw_path, csv_dir, root, file, number)
        named.add(str(image))
        patient, study, view = match.groups()
        view_type = ("frontal", "lateral")[map_vocab(rec["Frontal/Lateral"], VIEW_VOCAB, file, "Frontal/Lateral")]
        sex = map_vocab(rec["Sex"], SEX_VOCAB, file, "Sex")
        age_years = parse_age(rec["Age"], file, "Age")
        effusion = map_vocab(rec["Pleural Effusion"], EFFUSION_VOCAB, file, "Pleural Effusion")
        raw_effusion = float(rec["Pleural Effusion"]) if rec["Pleural Effusion"].strip() else float("nan")
        if demo is None:
            race_text, ethnicity_text = rec.get("PRIMARY_RACE", "").strip(), rec.get("ETHNICITY", "").strip()
            race, gender = (race_group(race_text) if race_text else -1), ""
        else:
            entry = demo.get(patient, (-1, "", "", ""))
            if isinstance(entry, DataError):
                raise entry
            race, race_text, gender, ethnicity_text = entry
        if sex == -1 and gender:
            sex = SEX_VOCAB.get(gender.lower(), -1)
    except DataError as err:
        rejections.add(row_id, err)
        return None
    return dict(id=row_id, _file=file, image_path=str(image), sex=sex, race=race,
                pleural_effusion=effusion, patient=patient, study=study, view=view, view_type=view_type,
                ap_pa=rec.get("AP/PA", "").strip(), age_years=age_years, pleural_effusion_raw=raw_effusion,
                race_text=race_text, ethnicity_text=ethnicity_text)


def _image_path(raw: str, csv_dir: Path, root: Path, file: Path, number: int) -> Path:
    """``Path`` is relative to the CSV folder's parent; a renamed dataset folder is tolerated (the
    rest of ``Path`` is tried under the CSV's own folder). Only places inside ``root`` are tried:
    an absolute path or a ``..`` that climbs out of ``root`` is refused before any is touched."""
    path_inside(root, root, raw, file, "Path", number)  # refuses absolute paths and escapes, whatever the base
    rel = PurePosixPath(raw.replace("\\", "/"))
    tries = [(csv_dir.parent, str(rel))]
    if len(rel.parts) > 1:
        tries.append((csv_dir, str(PurePosixPath(*rel.parts[1:]))))
    places = []
    for base, text in tries:
        try:
            places.append(path_inside(root, base, text, file, "Path", number))
        except DataError:
            continue  # e.g. root is the dataset folder itself: its parent lies outside
    if not places:
        raise DataError(file, "Path", f"a path that names a place inside the dataset folder {root}",
                        f"row {number}: {raw}")
    return next((p for p in places if p.is_file()), places[0])


def _assign_splits(rows: list[dict], train_csv: Path, fractions: Sequence[float], seed: int,
                   rejections: Rejections) -> list[dict]:
    """valid.csv -> test; train.csv patients -> train/val/test by ``fractions``; overlap rejected."""
    held_out = {r["patient"] for r in rows if r["_source"] == "valid"}
    kept = []
    for r in rows:
        if r["_source"] == "train" and r["patient"] in held_out:
            rejections.add(r["id"], DataError(train_csv, "Path", "patients disjoint from valid.csv's",
                                              f"{r['patient']} in both"))
        else:
            kept.append(r)
    train_rows = [r for r in kept if r["_source"] == "train"]
    for r, split in zip(train_rows, split_by_group([r["patient"] for r in train_rows], fractions, seed)):
        r["split"] = split
    for r in kept:
        if r["_source"] == "valid":
            r["split"] = "test"
    return kept
