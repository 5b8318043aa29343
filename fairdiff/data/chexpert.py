"""CheXpert (chest X-ray) loader: the official CSVs joined with the demographics table.

Layout read (the Stanford AIMI release; ``root`` may be the folder that holds
``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/``, or that folder itself)::

    CheXpert-v1.0-small/train.csv, valid.csv   Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations
    CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_frontal.jpg
    chexpert_demo.csv                          PATIENT, GENDER, AGE_AT_CXR, PRIMARY_RACE, ETHNICITY

``Path`` is relative to the parent of the CSV's folder (``CheXpert-v1.0-small/train/...``);
a copy whose dataset folder was renamed still works, because the first component of ``Path``
is also tried relative to the CSV's own folder.

Demographics. Race exists only in the separate table (``CHEXPERT DEMO.xlsx`` in the release).
Reading .xlsx needs openpyxl, which is not a dependency: convert it once to CSV, e.g.
``pd.read_excel("CHEXPERT DEMO.xlsx").to_csv("chexpert_demo.csv", index=False)``, and put it in
``root``, beside ``train.csv`` or in its parent folder (names tried: chexpert_demo.csv,
CHEXPERT DEMO.csv, CHEXPERT_DEMO.csv). A ``train.csv`` that already carries a ``PRIMARY_RACE``
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

The loader never writes into ``root``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from fairdiff.data.common import (find_duplicates, find_file, finish_frame, keep_readable, map_vocab, parse_age,
                                   read_csv, require_dir, split_by_group)
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


def race_group(text: str) -> int:
    """Asian 0, Black 1, White 2 when ``text`` names exactly one of them as whole words; else -1."""
    lowered = str(text).lower()
    hits = {group for group, words in RACE_WORDS
            if any(re.search(rf"\b{re.escape(w)}\b", lowered) for w in words)}
    return hits.pop() if len(hits) == 1 else -1


def load_chexpert(root: str | Path, *, strict: bool = False, split_seed: int = 0,
                  split_fractions: Sequence[float] = (0.9, 0.1, 0.0), frontal_only: bool = True,
                  require_demographics: bool = True, check_images: bool = True) -> pd.DataFrame:
    """Load CheXpert as one row per film (columns per :mod:`fairdiff.schema`).

    Columns: id (``patientNNNNN_studyN_viewN_frontal``), split, image_path, prompt, sex, race,
    pleural_effusion, then patient, study, view, ap_pa, age_years, pleural_effusion_raw,
    race_text. A bad row is skipped and listed in ``attrs["rejections"]`` (``strict=True``
    raises instead); folder-level problems always raise a DataError."""
    root = require_dir(root, "the CheXpert root")
    train_csv = find_file(root, ["train.csv"], subdirs=("", *DATASET_DIRS))
    csv_dir = train_csv.parent
    valid_csv = csv_dir / "valid.csv"
    rejections = Rejections(strict)

    tables = {"train": read_csv(train_csv, required=REQUIRED)}
    if valid_csv.is_file():
        tables["valid"] = read_csv(valid_csv, required=REQUIRED)
    demo, demo_source = _demographics(root, csv_dir, tables["train"], require_demographics)

    rows = []
    for source, table in tables.items():
        file = train_csv if source == "train" else valid_csv
        for rec in table.to_dict("records"):
            row = _parse_row(rec, file, csv_dir, demo, rejections)
            if row is not None:
                row["_source"] = source
                rows.append(row)

    rows = _assign_splits(rows, train_csv, split_fractions, split_seed, rejections)
    dup = find_duplicates([r["id"] for r in rows])
    for r in rows:
        if r["id"] in dup:
            rejections.add(r["id"], DataError(r["_file"], "Path", "each film once", f"{r['id']} repeated"))
    rows = [r for r in rows if r["id"] not in dup]
    n_lateral = sum(r["view_type"] == "lateral" for r in rows)
    if frontal_only:
        rows = [r for r in rows if r["view_type"] == "frontal"]
    if check_images:
        rows = keep_readable(rows, rejections)
    return finish_frame(rows, CHEXPERT, rejections, root,
                        extras=("patient", "study", "view", "ap_pa", "age_years", "pleural_effusion_raw", "race_text"),
                        demographics=demo_source, lateral_skipped=n_lateral if frontal_only else 0)


def _demographics(root: Path, csv_dir: Path, train: pd.DataFrame, required: bool) -> tuple[dict | None, str | None]:
    """PATIENT -> (race id, race text, GENDER) from the table, or from a pre-merged train.csv."""
    if "PRIMARY_RACE" in train.columns:
        return None, "train.csv (pre-merged PRIMARY_RACE)"
    places = list(dict.fromkeys([root, csv_dir, csv_dir.parent]))
    path = next((p / n for p in places for n in DEMO_NAMES if (p / n).is_file()), None)
    if path is None:
        xlsx = next((p / DEMO_XLSX for p in places if (p / DEMO_XLSX).is_file()), None)
        if xlsx is not None:
            table = _read_xlsx(xlsx)
        elif required:
            raise DataError(root, "PRIMARY_RACE", f"the demographics table ({' or '.join(DEMO_NAMES)}, with PATIENT and "
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
        entry = (race_group(rec["PRIMARY_RACE"]), rec["PRIMARY_RACE"].strip(), rec.get("GENDER", "").strip())
        if patient in demo and demo[patient][:2] != entry[:2]:
            conflicting.add(patient)
        demo.setdefault(patient, entry)
    for patient in conflicting:
        demo[patient] = DataError(path, "PATIENT", f"one PRIMARY_RACE per patient ({patient} has several)", patient)
    return demo, str(path)


def _read_xlsx(path: Path) -> pd.DataFrame:
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        raise DataError(path, None, "a CSV copy named chexpert_demo.csv (reading .xlsx needs openpyxl, which is not a "
                        "dependency): pd.read_excel(...).to_csv('chexpert_demo.csv', index=False) on a machine with "
                        "openpyxl", "only the .xlsx") from None
    table = pd.read_excel(path, dtype=str).fillna("")
    for col in ("PATIENT", "PRIMARY_RACE"):
        if col not in table.columns:
            raise DataError(path, col, f"a column named {col!r}", f"columns {list(table.columns)}")
    return table


def _parse_row(rec: dict, file: Path, csv_dir: Path, demo: dict | None, rejections: Rejections) -> dict | None:
    raw_path = rec["Path"].strip()
    match = PATH_PATTERN.search(raw_path.replace("\\", "/"))
    row_id = "_".join(match.groups()) if match else raw_path
    try:
        if match is None:
            raise DataError(file, "Path", "a path like CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
                            rec["Path"])
        patient, study, view = match.groups()
        view_type = ("frontal", "lateral")[map_vocab(rec["Frontal/Lateral"], VIEW_VOCAB, file, "Frontal/Lateral")]
        sex = map_vocab(rec["Sex"], SEX_VOCAB, file, "Sex")
        age_years = parse_age(rec["Age"], file, "Age")
        effusion = map_vocab(rec["Pleural Effusion"], EFFUSION_VOCAB, file, "Pleural Effusion")
        raw_effusion = float(rec["Pleural Effusion"]) if rec["Pleural Effusion"].strip() else float("nan")
        if demo is None:
            race_text = rec.get("PRIMARY_RACE", "").strip()
            race, gender = (race_group(race_text) if race_text else -1), ""
        else:
            entry = demo.get(patient, (-1, "", ""))
            if isinstance(entry, DataError):
                raise entry
            race, race_text, gender = entry
        if sex == -1 and gender:
            sex = SEX_VOCAB.get(gender.lower(), -1)
    except DataError as err:
        rejections.add(row_id, err)
        return None
    return dict(id=row_id, _file=file, image_path=str(_image_path(raw_path, csv_dir)), sex=sex, race=race,
                pleural_effusion=effusion, patient=patient, study=study, view=view, view_type=view_type,
                ap_pa=rec.get("AP/PA", "").strip(), age_years=age_years, pleural_effusion_raw=raw_effusion,
                race_text=race_text)


def _image_path(raw: str, csv_dir: Path) -> Path:
    """``Path`` is relative to the CSV folder's parent; a renamed dataset folder is tolerated."""
    rel = Path(raw.replace("\\", "/"))
    first = csv_dir.parent / rel
    if first.is_file() or len(rel.parts) < 2:
        return first.resolve()
    second = csv_dir.joinpath(*rel.parts[1:])
    return (second if second.is_file() else first).resolve()


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
