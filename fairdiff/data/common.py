"""Checks shared by every dataset loader: each failure names the file, the field and what was expected."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
from PIL import Image

from fairdiff.errors import DataError


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


def check_image(path: Path, field: str = "image") -> None:
    """Fail unless ``path`` is an image file PIL can identify (reads the header only: fast)."""
    if not path.is_file():
        raise DataError(path, field, "an image file", "missing")
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:  # noqa: BLE001
        raise DataError(path, field, "a readable image file", f"{type(exc).__name__}: {exc}") from exc
