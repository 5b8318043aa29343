"""Checks shared by every dataset loader: each failure names the file, the field and what was expected."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from fairdiff.errors import DataError, Rejections
from fairdiff.schema import SPLITS, Schema


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, None, f"a folder ({what})", "missing" if not path.exists() else "not a folder")
    return path


def find_file(root: Path, names: Iterable[str], subdirs: Iterable[str] = ("",)) -> Path:
    """The first existing ``root/subdir/name``; an error listing every place looked at otherwise."""
    tried = []
    for sub in subdirs:
        for name in names:
            p = root / sub / name if sub else root / name
            tried.append(str(p))
            if p.is_file():
                return p
    raise DataError(root, None, "one of the files " + ", ".join(tried), "none exists")


def read_csv(path: Path, required: Iterable[str] = (), any_of: Iterable[Iterable[str]] = ()) -> pd.DataFrame:
    """Read a CSV and check its columns: all of ``required`` and at least one of each ``any_of`` set."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure becomes a clear message
        raise DataError(path, None, "a readable CSV file", f"{type(exc).__name__}: {exc}") from exc
    for col in required:
        if col not in frame.columns:
            raise DataError(path, col, f"a column named {col!r}", f"columns {list(frame.columns)}")
    for options in any_of:
        options = list(options)
        if not any(c in frame.columns for c in options):
            raise DataError(path, " | ".join(options), f"one of the columns {options}", f"columns {list(frame.columns)}")
    return frame


def map_vocab(value: object, vocab: Mapping[str, int], file: str | Path, field: str) -> int:
    """Map a text value to its class id, case- and whitespace-insensitively."""
    key = str(value).strip().lower()
    if key not in vocab:
        raise DataError(file, field, f"one of {sorted(vocab)}", value)
    return vocab[key]


def parse_age(value: object, file: str | Path, field: str, blanks: Iterable[str] = ("",)) -> float:
    """Age in years; a value in ``blanks`` (lower-cased) is unknown (NaN); anything else that is not a
    number in 0..120 is an error naming the file and field."""
    text = str(value).strip()
    if text.lower() in blanks:
        return float("nan")
    try:
        age = float(text)
    except ValueError:
        raise DataError(file, field, "an age in years (0-120) or blank", value) from None
    if not 0 <= age <= 120:
        raise DataError(file, field, "an age in years (0-120) or blank", value)
    return age


def check_image(path: Path, field: str = "image") -> None:
    """Fail unless ``path`` is an image file PIL can identify (reads the header only: fast)."""
    if not path.is_file():
        raise DataError(path, field, "an image file", "missing")
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:  # noqa: BLE001
        raise DataError(path, field, "a readable image file", f"{type(exc).__name__}: {exc}") from exc


def split_by_group(groups: Sequence[str], fractions: Sequence[float], seed: int) -> np.ndarray:
    """Assign each item to train / val / test so that items of one group share a split.

    The sorted unique groups are permuted with ``default_rng(seed)`` and cut at the cumulative
    ``fractions`` (rounded to whole groups), so the result depends only on the set of groups and
    the seed, never on row order."""
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1; got {fractions.tolist()}")
    groups = np.asarray(groups, dtype=str)
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(unique.size)
    cuts = np.round(np.cumsum(fractions)[:2] * unique.size).astype(int)
    split_of = np.empty(unique.size, dtype=object)
    split_of[order[:cuts[0]]] = "train"
    split_of[order[cuts[0]:cuts[1]]] = "val"
    split_of[order[cuts[1]:]] = "test"
    return split_of[np.searchsorted(unique, groups)] if groups.size else np.empty(0, dtype=object)


def finish_frame(rows: list[dict], schema: Schema, rejections: Rejections, root: Path,
                 extras: Sequence[str], **attrs) -> pd.DataFrame:
    """Build a loader's DataFrame: schema columns in their conventional order, prompts, attrs.

    Rows hold ``id``, ``split``, ``image_path``, one id per attribute and label, and ``extras``;
    other keys (bookkeeping such as the source file) are dropped.
    Sorted by split (train, val, test) then id, so the order never depends on the file system."""
    columns = ["id", "split", "image_path", *schema.attribute_names, *schema.label_names]
    frame = pd.DataFrame(rows, columns=[*columns, *extras])
    for col in (*schema.attribute_names, *schema.label_names):
        frame[col] = frame[col].astype("int64")
    frame.insert(3, "prompt", [schema.prompt(**ids) for ids in
                               frame[[*schema.attribute_names, *schema.label_names]].to_dict("records")])
    frame["split"] = pd.Categorical(frame["split"], categories=list(SPLITS), ordered=True)
    frame = frame.sort_values(["split", "id"], kind="stable").reset_index(drop=True)
    frame["split"] = frame["split"].astype(str)
    frame.attrs.update(schema=schema.name, root=str(root), rejections=rejections.frame(),
                       unknown={a: int((frame[a] == -1).sum()) for a in schema.attribute_names}, **attrs)
    return frame


def find_duplicates(ids: Sequence[str]) -> set[str]:
    """The ids that occur more than once."""
    seen, dup = set(), set()
    for i in ids:
        (dup if i in seen else seen).add(i)
    return dup


def keep_readable(rows: list[dict], rejections: Rejections) -> list[dict]:
    """The rows whose ``image_path`` is an image PIL can identify (header only); the rest rejected."""
    kept = []
    for row in rows:
        try:
            check_image(Path(row["image_path"]))
            kept.append(row)
        except DataError as err:
            rejections.add(row["id"], err)
    return kept


# ----------------------------------------------------------------------------- loader
