"""Checks shared by every dataset loader: each failure names the file, the field and what was expected."""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PureWindowsPath
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from fairdiff.errors import DataError, Rejections
from fairdiff.schema import SPLITS, Schema

log = logging.getLogger("fairdiff.data")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Threads for the image check: decoding releases the GIL, so they use several cores.
IMAGE_CHECK_WORKERS = max(1, min(8, os.cpu_count() or 1))


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


def path_inside(root: Path, base: Path, raw: object, file: Path, field: str, row: int) -> Path:
    """``base / raw`` (a path written in row ``row`` of ``file``) as an absolute path that lies
    inside ``root``; a DataError otherwise, before anything at that path is touched.

    The check is lexical (``..`` collapsed, symlinks not followed), so a symlink the user placed
    under the root stays allowed, while an absolute path, a drive letter or a ``..`` that climbs
    out of the root is refused. Row 1 is the first row after the header."""
    text = str(raw).strip()
    if not text:
        raise DataError(file, field, "a file path relative to the dataset folder", f"row {row}: an empty cell")
    posix = text.replace("\\", "/")
    windows = PureWindowsPath(text)
    if posix.startswith("/") or windows.drive or windows.root:
        raise DataError(file, field, "a path relative to the dataset folder (absolute paths are refused and "
                        "never opened)", f"row {row}: {text}")
    top = os.path.abspath(root)
    path = os.path.normpath(os.path.join(os.path.abspath(base), posix))
    if path == top or os.path.commonpath([path, top]) != top:
        raise DataError(file, field, f"a path that stays inside the dataset folder {top} ('..' that climbs out "
                        "is refused and never opened)", f"row {row}: {text}")
    return Path(path)


def check_image(path: Path, field: str = "image") -> None:
    """Fail unless ``path`` is an image that decodes completely, so a truncated or damaged file
    is rejected at load time with its path instead of failing later in training.

    A JPEG is decoded at 1/8 scale (libjpeg's DCT scaling): every byte of its compressed data is
    still read and entropy-decoded, so a cut file fails, at about half the cost of a full decode.
    Other formats are decoded fully."""
    if not path.is_file():
        got = f"a dangling symlink to {os.readlink(path)}" if path.is_symlink() else "missing"
        raise DataError(path, field, "an image file", got)
    try:
        with Image.open(path) as im:
            im.draft(im.mode, (1, 1))  # JPEG only; a no-op for other formats
            im.load()
    except Exception as exc:  # noqa: BLE001 - truncated data, bad headers, decompression bombs alike
        raise DataError(path, field, "a readable image file that decodes completely",
                        f"{type(exc).__name__}: {exc}") from exc


def image_errors(paths: Sequence[str | Path], field: str = "image") -> list[DataError | None]:
    """:func:`check_image` of each path (in order; None when fine), on a few threads."""
    def one(path):
        try:
            check_image(Path(path), field)
        except DataError as err:
            return err
        return None

    workers = min(IMAGE_CHECK_WORKERS, len(paths))
    if workers <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths, chunksize=16))


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (any depth, symlinked folders followed once each, dangling
    symlinks included), as lexical absolute paths, sorted."""
    found, seen = [], set()
    for top, dirs, files in os.walk(os.path.abspath(folder), followlinks=True):
        stat = os.stat(top)
        if (stat.st_dev, stat.st_ino) in seen:  # a symlink loop or a folder linked twice
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        found += [Path(top, name) for name in files if name.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found)


def reject_unlisted(files: Iterable[Path], listed: Iterable[str | Path], rejections: Rejections,
                    table: Path | str, field: str, id_of=lambda path: Path(path).stem) -> int:
    """Reject every file that no row of ``table`` names (``listed``: the paths the rows name, the
    rejected rows' included); ``id_of`` gives the subject id a file would have. Returns the count."""
    named = {os.path.normpath(os.path.abspath(p)) for p in listed}
    count = 0
    for path in files:
        if os.path.normpath(os.path.abspath(path)) not in named:
            rejections.add(id_of(path), DataError(path, field, f"a row in {table} for this file", "no row names it"))
            count += 1
    return count


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
    """The rows whose ``image_path`` is an image that decodes completely; the rest rejected."""
    kept = []
    for row, err in zip(rows, image_errors([row["image_path"] for row in rows])):
        if err is None:
            kept.append(row)
        else:
            rejections.add(row["id"], err)
    return kept


def carve_validation(frame: pd.DataFrame, by: str, fraction: float, seed: int) -> pd.DataFrame:
    """``frame`` with a share ``fraction`` of its training groups (``by``: lesion, patient, ...)
    moved to ``val`` when it has no validation rows, so no model is ever selected without them.

    Whole groups move (seeded, by :func:`split_by_group`; at least one group); the frame comes
    back sorted like a loader's, with ``attrs["val_carved"]`` saying what was done, and a
    warning is logged. A frame with validation rows, or without training rows, is returned as is."""
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive); got {fraction}")
    train = (frame["split"] == "train").to_numpy()
    if (frame["split"] == "val").any() or not train.any():
        return frame
    groups = frame.loc[train, by].astype(str).to_numpy()
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise DataError(frame.attrs.get("root", "dataset"), "split", "validation rows, or at least two training "
                        f"groups ({by}) to set some aside as validation", f"{n_groups} training group")
    share = max(fraction, 1.0 / n_groups)  # at least one group, even in a tiny dataset
    split = split_by_group(groups, (1.0 - share, share, 0.0), seed)
    out = frame.copy()
    out.loc[train, "split"] = split
    out["split"] = pd.Categorical(out["split"], categories=list(SPLITS), ordered=True)
    out = out.sort_values(["split", "id"], kind="stable").reset_index(drop=True)
    out["split"] = out["split"].astype(str)
    carved = {"fraction": float(fraction), "seed": int(seed), "by": by, "groups": int(np.unique(groups[split == "val"]).size),
              "rows": int((split == "val").sum()), "of_train_rows": int(train.sum())}
    out.attrs = {**frame.attrs, "val_carved": carved}
    log.warning("%s: no validation rows; set aside %d of %d training rows (%d %s groups, fraction %.3g, seed %d) "
                "as validation", out.attrs.get("root", "dataset"), carved["rows"], carved["of_train_rows"],
                carved["groups"], by, fraction, seed)
    return out


def rejection_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The rejections of a loaded frame (``frame.attrs["rejections"]``) as a table to print or save.

    Columns: ``file``, ``field``, ``reason`` (what was expected), ``count`` (rejections with the
    same field and reason), ``id`` and ``detail`` (what was found). Sorted by count (largest
    first), reason, file. Empty, with these columns, when nothing was rejected."""
    columns = ["file", "field", "reason", "count", "id", "detail"]
    raw = frame.attrs.get("rejections")
    if raw is None or len(raw) == 0:
        return pd.DataFrame(columns=columns)
    rows = []
    for rec in pd.DataFrame(raw).to_dict("records"):
        reason, detail = _split_reason(str(rec["reason"]), str(rec["file"]), rec.get("field") or "")
        rows.append({"file": rec["file"], "field": rec.get("field") or "", "reason": reason, "id": rec["id"],
                     "detail": detail})
    table = pd.DataFrame(rows)
    table["count"] = table.groupby(["field", "reason"])["reason"].transform("size").astype("int64")
    table = table.sort_values(["count", "reason", "file"], ascending=[False, True, True], kind="stable")
    return table[columns].reset_index(drop=True)


def _split_reason(message: str, file: str, field: str) -> tuple[str, str]:
    """A DataError message without its ``file, field`` prefix, cut into (expected ..., got ...)."""
    prefix = file + (f", field {field!r}" if field else "") + ": "
    if message.startswith(prefix):
        message = message[len(prefix):]
    expected, sep, got = message.partition("; got ")
    return expected, got if sep else ""


# ----------------------------------------------------------------------------- loader
