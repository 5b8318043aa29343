"""HAM10000 (dermoscopy) loader: the official release or the paper's preprocessed split.

Two on-disk layouts are read (``layout="auto"`` picks the preprocessed split when its CSVs exist,
since that is what the paper used, and the official metadata otherwise):

``official`` -- the Harvard Dataverse / ISIC / Kaggle release::

    <root>/HAM10000_metadata.csv   lesion_id, image_id, dx, dx_type, age, sex, localization
    <root>/HAM10000_images_part_1/<image_id>.jpg   (and _part_2; any letter case; also a merged
                                                    HAM10000_images/ folder as MEDFAIR makes)

  Labels: malignant = dx in {mel, akiec} (bcc counts as benign, as in MEDFAIR and the paper);
  age group 1 when age >= 60 (a blank age is unknown, -1); sex male/female, ``unknown`` or
  blank -> -1. The split is made here, at LESION level (all photographs of one lesion share a
  split), seeded: see :func:`split_by_group`.

``preprocessed`` -- MEDFAIR-style split CSVs (``new_train.csv``, ``new_val.csv``,
  ``new_test.csv``, or ``train.csv`` / ``val.csv`` / ``test.csv``; in ``<root>`` or
  ``<root>/split``; val is optional because the FairDiffusion authors had train and test only).
  Columns are read BY NAME: image path ``Path``, binary age ``Age_binary``, sex ``Sex``
  (M/F or male/female), label ``binaryLabel``; ``image_id``, ``lesion_id``, ``dx`` and ``age`` are
  kept when present. Only if a CSV has none of a field's names and at least 14 columns does the
  loader fall back to the positions the authors' code reads (9 path, 11 binary age, 12 sex,
  13 label, counting the unnamed index column), with a warning. The binary age is taken as
  written: MEDFAIR's files put age 60 in group 0 (their rule is "> 60"), so the two layouts can
  differ for patients aged exactly 60. Images are looked up at ``<root>/<Path>`` and, failing
  that, by file name in the official image folders. Pickled image caches are never read.

Safety and completeness (both layouts). A ``Path`` must stay inside ``root`` (checked on the
text: an absolute path or a ``..`` that climbs out is a rejection naming the CSV, row and field,
and nothing at that path is opened; a symlink placed under ``root`` is followed as usual). Every
image is decoded (see :func:`fairdiff.data.common.check_image`), so a truncated file is rejected
at load time. A row without its image is a rejection; so is, in the official layout, an image in
the image folders without a metadata row. A preprocessed split leaves images out on purpose
(MEDFAIR drops rows without age or sex), so there the images no row names are only counted, in
``attrs["unlisted_images"]``.

Validation: when the loaded frame has no validation rows (the authors' split has train and test
only), ``val_fraction`` of the training lesions are set aside as validation, seeded by ``seed``
(:func:`fairdiff.data.common.carve_validation`; ``attrs["val_carved"]`` records it).

The loader never writes into ``root``."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fairdiff.data.common import (IMAGE_SUFFIXES, carve_validation, find_duplicates, find_file, finish_frame,
                                   keep_readable, map_vocab, parse_age, path_inside, read_csv, reject_unlisted,
                                   require_dir, split_by_group)
from fairdiff.errors import DataError, Rejections
from fairdiff.schema import HAM10000

METADATA_FILE = "HAM10000_metadata.csv"
IMAGE_DIR_PATTERN = re.compile(r"^ham10000_images(_part_[12])?$", re.IGNORECASE)
DX_VOCAB = {dx: i for i, dx in enumerate(("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"))}
MALIGNANT_DX = frozenset({"mel", "akiec"})
SEX_VOCAB = {"male": 0, "m": 0, "female": 1, "f": 1, "unknown": -1, "": -1}
BINARY_VOCAB = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
AGE_THRESHOLD = 60

PREPROCESSED_NAMES = ({"train": "new_train.csv", "val": "new_val.csv", "test": "new_test.csv"},
                      {"train": "train.csv", "val": "val.csv", "test": "test.csv"})
PREPROCESSED_COLUMNS = {  # field -> (names, position in the authors' CSV)
    "path": (("Path", "path", "image_path"), 9),
    "age_binary": (("Age_binary", "age_binary"), 11),
    "sex": (("Sex", "sex"), 12),
    "label": (("binaryLabel", "binary_label"), 13),
}


def load_ham10000(root: str | Path, *, strict: bool = False, split_seed: int = 0,
                  split_fractions: Sequence[float] = (0.7, 0.1, 0.2), layout: str = "auto",
                  check_images: bool = True, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """Load HAM10000 as one row per image (columns per :mod:`fairdiff.schema`).

    Columns: id (image_id), split, image_path, prompt, sex, age, malignant, then lesion_id, dx,
    age_years (NaN when blank). ``layout``: ``auto`` | ``official`` | ``preprocessed``.
    ``split_seed`` and ``split_fractions`` apply to the official layout only (the preprocessed
    split is fixed by its files). A bad row is skipped and listed in ``attrs["rejections"]``
    (``strict=True`` raises instead); folder-level problems always raise a DataError.
    ``check_images`` decodes every image (a JPEG at 1/8 scale, on a few threads); turn it off only
    for trusted copies. ``val_fraction`` and ``seed``: the validation set carved from train when
    the frame has none (module docstring)."""
    root = require_dir(root, "the HAM10000 root")
    if layout not in ("auto", "official", "preprocessed"):
        raise ValueError(f"layout must be 'auto', 'official' or 'preprocessed'; got {layout!r}")
    split_files = _find_split_files(root) if layout != "official" else None
    if layout == "preprocessed" and split_files is None:
        raise DataError(root, None, "preprocessed split CSVs (new_train.csv + new_test.csv, or train.csv + test.csv, "
                        "in the root or split/)", "none found")
    images = _index_images(root, required=split_files is None)
    rejections = Rejections(strict)
    named: set[str] = set()  # the image ids the CSV rows name, rejected rows included
    if split_files is None:
        rows = _read_official(root, images, rejections, split_seed, split_fractions, named)
        chosen = "official"
    else:
        rows = _read_preprocessed(root, split_files, images, rejections, named)
        chosen = "preprocessed"
    rows = _drop_duplicates(rows, rejections)
    unlisted = _unlisted_images(images, named, rejections, root, chosen)
    if check_images:
        rows = keep_readable(rows, rejections)
    frame = finish_frame(rows, HAM10000, rejections, root, extras=("lesion_id", "dx", "age_years"), layout=chosen,
                         unlisted_images=unlisted)
    return carve_validation(frame, "lesion_id", val_fraction, seed)


def _unlisted_images(images: dict[str, Path], named: set[str], rejections: Rejections, root: Path,
                     layout: str) -> int:
    """Images in the official folders that no row names: rejections in the official layout (a file
    without its row), only counted in a preprocessed split, which leaves some out on purpose."""
    if layout == "official":
        return reject_unlisted(sorted(images.values()), [images[i] for i in named if i in images], rejections,
                               root / METADATA_FILE, "image_id")
    return sum(image_id not in named for image_id in images)


def _index_images(root: Path, required: bool) -> dict[str, Path]:
    """image_id -> path over the official image folders (one listing each; sorted, first wins)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and IMAGE_DIR_PATTERN.match(p.name))
    if required and not folders:
        raise DataError(root, "HAM10000_images_part_1", "an image folder HAM10000_images_part_1 / _part_2 "
                        "(or HAM10000_images)", "missing")
    index: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                index.setdefault(path.stem, Path(os.path.abspath(path)))
    return index


def _read_official(root: Path, images: dict[str, Path], rejections: Rejections, seed: int,
                   fractions: Sequence[float], named: set[str]) -> list[dict]:
    meta_path = find_file(root, [METADATA_FILE, METADATA_FILE.lower()])
    meta = read_csv(meta_path, required=("lesion_id", "image_id", "dx", "age", "sex"))
    rows = []
    for number, rec in enumerate(meta.to_dict("records"), start=1):
        image_id = rec["image_id"].strip()
        named.add(image_id)
        try:
            if not image_id:
                raise DataError(meta_path, "image_id", "a non-empty image id", rec["image_id"])
            lesion = rec["lesion_id"].strip()
            if not lesion:
                raise DataError(meta_path, "lesion_id", f"a lesion id for image {image_id}", rec["lesion_id"])
            dx = rec["dx"].strip().lower()
            map_vocab(dx, DX_VOCAB, meta_path, "dx")
            age_years = parse_age(rec["age"], meta_path, "age", blanks=("", "nan", "unknown"))
            if image_id not in images:
                raise DataError(meta_path, "image_id", "an image <image_id>.jpg in HAM10000_images_part_1 or _part_2",
                                f"row {number}: {image_id}.jpg missing")
            rows.append(dict(id=image_id, _file=meta_path, image_path=str(images[image_id]),
                             sex=map_vocab(rec["sex"], SEX_VOCAB, meta_path, "sex"),
                             age=-1 if np.isnan(age_years) else int(age_years >= AGE_THRESHOLD),
                             malignant=int(dx in MALIGNANT_DX), lesion_id=lesion, dx=dx, age_years=age_years))
        except DataError as err:
            rejections.add(image_id, err)
    splits = split_by_group([r["lesion_id"] for r in rows], fractions, seed)
    for row, split in zip(rows, splits):
        row["split"] = split
    return rows



def _find_split_files(root: Path) -> dict[str, Path] | None:
    """The preprocessed split CSVs, or None when the folder has no (train + test) pair."""
    for sub in ("", "split"):
        for names in PREPROCESSED_NAMES:
            folder = root / sub if sub else root
            found = {split: folder / name for split, name in names.items() if (folder / name).is_file()}
            if "train" in found and "test" in found:
                return found
    return None


def _resolve_columns(frame: pd.DataFrame, file: Path) -> dict[str, str]:
    """Column name per field: by name first, by the authors' positions only as a fallback."""
    chosen, by_position = {}, []
    for field, (names, position) in PREPROCESSED_COLUMNS.items():
        name = next((n for n in names if n in frame.columns), None)
        if name is None:
            if frame.shape[1] <= 13:
                raise DataError(file, " | ".join(names), f"a column named one of {list(names)}",
                                f"columns {list(frame.columns)}")
            name = frame.columns[position]
            by_position.append(f"{field} from column {position} ({name!r})")
        chosen[field] = name
    if by_position:
        warnings.warn(f"{file}: expected columns not found by name; reading " + ", ".join(by_position)
                      + " as the FairDiffusion code does", stacklevel=3)
    return chosen


def _read_preprocessed(root: Path, files: dict[str, Path], images: dict[str, Path],
                       rejections: Rejections, named: set[str]) -> list[dict]:
    rows = []
    for split, path in files.items():
        frame = read_csv(path)
        cols = _resolve_columns(frame, path)
        for number, rec in enumerate(frame.to_dict("records"), start=1):
            rel = rec[cols["path"]].strip()
            image_id = rec.get("image_id", "").strip() or Path(rel.replace("\\", "/")).stem
            named.add(Path(rel.replace("\\", "/")).stem)
            try:
                image = path_inside(root, root, rel, path, cols["path"], number)
                if not image.is_file():
                    image = images.get(image.stem, image)
                age_years = parse_age(rec["age"], path, "age", blanks=("", "nan", "unknown")) if "age" in frame.columns else float("nan")
                rows.append(dict(id=image_id, _file=path, split=split, image_path=str(image),
                                 sex=map_vocab(rec[cols["sex"]], SEX_VOCAB, path, cols["sex"]),
                                 age=map_vocab(rec[cols["age_binary"]], BINARY_VOCAB, path, cols["age_binary"]),
                                 malignant=map_vocab(rec[cols["label"]], BINARY_VOCAB, path, cols["label"]),
                                 lesion_id=rec.get("lesion_id", "").strip() or image_id,
                                 dx=rec.get("dx", "").strip().lower(), age_years=age_years))
            except DataError as err:
                rejections.add(image_id, err)
    return rows


def _drop_duplicates(rows: list[dict], rejections: Rejections) -> list[dict]:
    """Every row of an id that occurs twice is rejected: which copy is right cannot be known."""
    dup = find_duplicates([r["id"] for r in rows])
    for r in rows:
        if r["id"] in dup:
            rejections.add(r["id"], DataError(r["_file"], "image_id", "each image id once", f"{r['id']} repeated"))
    return [r for r in rows if r["id"] not in dup]
