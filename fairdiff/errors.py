"""Errors and rejection records for bad input.

Every message names the file, the field and what was expected, so a user with a broken
dataset folder can fix it without reading our code."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class DataError(ValueError):
    """A problem with one file (or one field of one file) of a dataset."""

    def __init__(self, file: str | Path, field: str | None, expected: str, got: object = None):
        self.file, self.field, self.expected, self.got = str(file), field, expected, got
        where = f"{self.file}" + (f", field {field!r}" if field else "")
        tail = "" if got is None else f"; got {got!r}"
        super().__init__(f"{where}: expected {expected}{tail}")


@dataclass
class Rejection:
    id: str
    file: str
    field: str
    reason: str


class Rejections:
    """Collects skipped subjects in lenient mode; raises the first one in strict mode."""

    columns = ["id", "file", "field", "reason"]

    def __init__(self, strict: bool):
        self.strict = strict
        self.items: list[Rejection] = []

    def add(self, subject_id: str, err: DataError) -> None:
        if self.strict:
            raise err
        self.items.append(Rejection(str(subject_id), err.file, err.field or "", str(err)))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([vars(r) for r in self.items], columns=self.columns)
