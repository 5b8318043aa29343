"""Read a FairGenMed folder (SLO fundus photos, glaucoma) into one DataFrame row per subject.

On disk (docs/datasets.md §1; groups and prompts: docs/method.md §4.1)::

    <root>/data_summary.csv                (or <root>/ReadMe/data_summary.csv)
    <root>/<split>/data_<ID>.npz           demographics, glaucoma, an image copy ``slo_fundus``
    <root>/<split>/slo_fundus_<ID>.jpg     the photo used for training

``<split>`` is ``train|val|test`` or the release names ``Training|Validation|Test`` (any case).
The CSV's ``filename`` column (the npz name) joins it to the npz files.

Variants accepted, because released copies and relatives of the dataset differ:

- gender is the npz key ``male`` or ``gender`` (0 female, 1 male); ethnicity is ``hispanic`` or
  ``ethnicity`` (0 non-Hispanic, 1 Hispanic). When both spellings exist, ``male`` and
  ``hispanic`` (the FairGenMed names) win. -1 (or the word "unknown") means unknown.
- race is an int 0 Asian / 1 Black / 2 White, a string ('Asian', 'Black or African American',
  'White or Caucasian', or just 'Black', 'White'; any case), or an older raw code (2 Asian,
  3 Black, 7 White; 1, 4, 5, 6 are groups outside the schema and become unknown).
  The two integer codings share the value 2 (White in one, Asian in the other), so one rule
  decides for the whole load: **if any subject's integer race is 3 or 7, every integer race
  is read as a raw code**; otherwise as 0/1/2. In raw-code mode a 0 is an error (no such
  code), which exposes a folder that mixes both codings. ``df.attrs["race_coding"]`` says
  which rule was applied.
- refraction is the CSV column ``near_vision_refraction_stage`` (positive, neutral, negative)
  or the older ``se_status`` (hyperopia, emmetropia, myopia: the same three classes in the same
  order); if both exist the first wins. Either vocabulary is accepted in either column.

Subjects with unknown demographics are kept (their prompt leaves the word out) and counted in
``df.attrs["unknown"]``; the paper's code would crash on them or drop them.

Safety: only the needed npz keys are read (the image copy only up to its header), by a small
member reader that behaves like ``np.load(..., allow_pickle=False)`` at half its cost (10,000
subjects index in a few seconds, see benchmarks/bench_index_fairgenmed.py). A needed key stored
as a pickled object array is an error unless ``trust_pickle=True``, which warns and lets numpy
unpickle it. Nothing in the dataset folder is ever written or deleted.

Completeness: every subject's JPG is decoded (see :func:`fairdiff.data.common.check_image`), so
a truncated photo is rejected at load time with its path. That costs about 0.7 ms of CPU per
512 x 664 photo (spread over a few threads): the 800 synthetic subjects of the mini profile
index in 0.8 CPU s instead of 0.2 CPU s without it. A CSV row whose npz is in no split
folder (missing, or a dangling symlink) is a rejection naming the CSV row and the file; so is an
npz without a CSV row and a ``slo_fundus_<ID>.jpg`` without its npz. Rows are checked against
every split folder on disk when all three splits are loaded; when only some are, only rows whose
``use`` column names a loaded split are. Paths are never built from CSV text: ``filename`` is
matched by its base name against the files listed in the split folders.

Validation: when train and val are loaded and no validation subject remains (every one
rejected), ``val_fraction`` of the training subjects become validation, seeded by ``seed``
(:func:`fairdiff.data.common.carve_validation`; ``attrs["val_carved"]`` records it).
"""
from __future__ import annotations

import ast
import functools
import io
import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from fairdiff.data.common import carve_validation, find_file, image_errors, map_vocab, read_csv, require_dir
from fairdiff.errors import DataError, Rejections
from fairdiff.schema import FAIRGENMED, SPLITS

SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}
SUMMARY_CSV = "data_summary.csv"
SUMMARY_DIRS = ("", "ReadMe")
NPZ_NAME = re.compile(r"data_(\d+)\.npz")
JPG_NAME = re.compile(r"slo_fundus_(\d+)\.jpg")
IMAGE_KEY = "slo_fundus"

# npz key aliases per field, preferred spelling first
NPZ_KEYS = {"race": ("race",), "gender": ("male", "gender"), "ethnicity": ("hispanic", "ethnicity"),
            "glaucoma": ("glaucoma",)}
REFRACTION_COLUMNS = ("near_vision_refraction_stage", "se_status")


def _vocab(*words_per_class: Iterable[str]) -> dict[str, int]:
    """{word: class id} from one group of synonyms per class, lower-case."""
    return {w.lower(): i for i, words in enumerate(words_per_class) for w in words}


UNKNOWN_WORDS = {"", "-1", "unknown", "nan", "none"}
RACE_WORDS = _vocab(("asian",), ("black", "black or african american"), ("white", "white or caucasian"))
RACE_CODES = {0: 0, 1: 1, 2: 2}
LEGACY_RACE_CODES = {2: 0, 3: 1, 7: 2, 1: -1, 4: -1, 5: -1, 6: -1}  # 1,4,5,6: outside the schema
GENDER_WORDS = _vocab(("female", "f"), ("male", "m"))
ETHNICITY_WORDS = _vocab(("non-hispanic", "not hispanic", "non hispanic"), ("hispanic",))
GLAUCOMA_WORDS = _vocab(("no", "non-glaucoma"), ("yes", "glaucoma"))
BINARY_CODES = {0: 0, 1: 1}

MD_SEVERITY = _vocab(*[(c,) for c in FAIRGENMED.label("md_severity").classes])
CDR_STATUS = _vocab(*[(c,) for c in FAIRGENMED.label("cdr_status").classes])
REFRACTION = _vocab(("positive", "hyperopia"), ("neutral", "emmetropia"), ("negative", "myopia"))
RNFLT_STATUS = _vocab(("low",), ("medium",), ("high",))

COLUMNS = ["id", "split", "image_path", "npz_path", "prompt", *FAIRGENMED.attribute_names,
           *FAIRGENMED.label_names]
OPTIONAL_COLUMNS = ["md", "age", "rnflt_status"]


@dataclass(frozen=True)
class _Candidate:
    """One ``data_<ID>.npz`` found in a split folder."""

    id: str
    split: str
    npz_path: Path


class _PickledKey(Exception):
    """A key holds an object array, which numpy refuses without allow_pickle."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def load_fairgenmed(root: str | Path, *, strict: bool = False, trust_pickle: bool = False,
                    splits: Iterable[str] = SPLITS, val_fraction: float = 0.1, seed: int = 0) -> pd.DataFrame:
    """One row per subject of a FairGenMed folder, sorted by split (train, val, test) then id.

    Columns: id, split, image_path, npz_path, prompt, race, gender, ethnicity (group ids, -1
    unknown), glaucoma, md_severity, cdr_status, refraction (class ids, see
    :data:`fairdiff.schema.FAIRGENMED`), and md, age, rnflt_status when the data has them.

    A broken subject is skipped and listed in ``df.attrs["rejections"]`` (columns id, file,
    field, reason); with ``strict=True`` the first one raises :class:`DataError`. Problems with
    the folder itself (no root, split folder, CSV or CSV column) always raise.
    ``df.attrs`` also holds ``unknown`` (attribute -> number of -1 values), ``root``,
    ``schema`` ("fairgenmed") and ``race_coding`` (see the module docstring).
    ``val_fraction`` and ``seed``: the validation set carved from train when none is left.
    """
    root = require_dir(root, "FairGenMed dataset root").resolve()
    split_dirs = find_split_dirs(root, splits)
    csv_path = find_file(root, [SUMMARY_CSV], SUMMARY_DIRS)
    summary = read_csv(csv_path, required=["filename", "md_severity", "cdr_status"], any_of=[REFRACTION_COLUMNS])
    rejections = Rejections(strict)
    rows_by_name, repeated = _index_summary(summary)
    refraction_column = next(c for c in REFRACTION_COLUMNS if c in summary.columns)
    pickle_notice = _PickleNotice()

    records = []
    for cand in _find_candidates(split_dirs, rejections, csv_path):
        try:
            row = _summary_row(cand, rows_by_name, repeated, csv_path)
            records.append((cand, _read_subject(cand, row, csv_path, refraction_column, trust_pickle, pickle_notice)))
        except DataError as err:
            _reject(rejections, cand, err)
    _reject_rows_without_npz(summary, root, split_dirs, csv_path, rejections)
    broken = image_errors([record["image_path"] for _, record in records], "slo_fundus jpg")
    for (cand, _), err in zip(records, broken):
        if err is not None:
            _reject(rejections, cand, err)
    records = [pair for pair, err in zip(records, broken) if err is None]

    legacy = _uses_legacy_race_codes(record["race"] for _, record in records)
    rows = []
    for cand, record in records:
        try:
            record["race"] = decode_code(record["race"], LEGACY_RACE_CODES if legacy else RACE_CODES,
                                         RACE_WORDS, cand.npz_path, "race")
        except DataError as err:
            if legacy:
                err.add_note("integer races are read as raw codes (2 Asian, 3 Black, 7 White) because "
                             "some subject of this folder has race 3 or 7")
            _reject(rejections, cand, err)
            continue
        record["prompt"] = FAIRGENMED.prompt(**{k: record[k] for k in (*FAIRGENMED.attribute_names,
                                                                        *FAIRGENMED.label_names)})
        rows.append(record)

    frame = _to_frame(rows)
    frame.attrs.update(
        rejections=rejections.frame(),
        unknown={a: int((frame[a] == -1).sum()) for a in FAIRGENMED.attribute_names},
        root=str(root), schema=FAIRGENMED.name,
        race_coding="raw codes 2 Asian / 3 Black / 7 White" if legacy else "0 Asian / 1 Black / 2 White",
    )
    if rejections.items:
        warnings.warn(f"{root}: skipped {len(rejections.items)} subject(s) or file(s) with problems; "
                      "see df.attrs['rejections'] (or pass strict=True to stop at the first)", stacklevel=2)
    if {"train", "val"} <= set(split_dirs):
        frame = carve_validation(frame, "id", val_fraction, seed)
    return frame


def find_split_dirs(root: Path, splits: Iterable[str]) -> dict[str, Path]:
    """Map each requested split to its folder, accepting train|val|test and Training|Validation|Test."""
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected some of {list(SPLITS)}")
    found = _split_folders(root)
    dirs = {}
    for split in splits:
        names = [n for n, s in SPLIT_FOLDERS.items() if s == split]
        folders = found.get(split, [])
        if not folders:
            raise DataError(root, None, f"a {split} split folder named one of {names} (any case)",
                            f"folders {sorted(p.name for p in root.iterdir() if p.is_dir())}")
        if len(folders) > 1:
            raise DataError(root, None, f"one {split} split folder", f"{[p.name for p in folders]}")
        dirs[split] = folders[0]
    return dirs


def _split_folders(root: Path) -> dict[str, list[Path]]:
    """Canonical split -> the folders of ``root`` whose name (any case) spells it."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        canonical = SPLIT_FOLDERS.get(entry.name.lower())
        if canonical and entry.is_dir():
            found.setdefault(canonical, []).append(Path(entry.path))
    return found


def _reject_rows_without_npz(summary: pd.DataFrame, root: Path, split_dirs: Mapping[str, Path], csv_path: Path,
                             rejections: Rejections) -> None:
    """Reject each CSV row whose npz is in no split folder on disk (a dangling symlink counts as
    present here: it is rejected as a file). A row is checked when all splits are loaded, or
    when its ``use`` names a loaded split (module docstring)."""
    present = {e.name for folders in _split_folders(root).values() for folder in folders
               for e in os.scandir(folder) if e.name.endswith(".npz")}
    uses = summary["use"] if "use" in summary.columns else pd.Series([""] * len(summary))
    everything = set(split_dirs) == set(SPLITS)
    for number, (raw, use) in enumerate(zip(summary["filename"], uses), start=1):
        name = os.path.basename(raw.strip())
        row_split = SPLIT_FOLDERS.get(str(use).strip().lower())
        if name in present or not (row_split in split_dirs if row_split else everything):
            continue
        match = NPZ_NAME.fullmatch(name)
        rejections.add(match.group(1) if match else name, DataError(
            csv_path, "filename", "for every row, its data_<ID>.npz in a split folder",
            f"row {number}: {name} is in none of {sorted(p.name for p in split_dirs.values())}"))


def decode_code(value: object, codes: Mapping[int, int], words: Mapping[str, int],
                file: str | Path, field: str) -> int:
    """A stored code (number or word) as a schema id; -1 or 'unknown' give -1.

    ``codes`` maps stored integers to ids and ``words`` maps lower-case words to ids."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        key = value.strip().lower()
        if key in words:
            return words[key]
        if key in UNKNOWN_WORDS:
            return -1
        try:
            value = float(key)
        except ValueError:
            raise DataError(file, field, f"a code in {sorted(codes)}, -1, or one of {sorted(words)}", value) from None
    if isinstance(value, (int, float, np.number)) and float(value).is_integer():
        code = int(value)
        if code == -1:
            return -1
        if code in codes:
            return codes[code]
    raise DataError(file, field, f"a code in {sorted(codes)} or -1 (unknown)", value)


def _uses_legacy_race_codes(values: Iterable[object]) -> bool:
    """True when any integer race is 3 or 7, which only the raw coding uses (module docstring)."""
    return any(isinstance(v, (int, float, np.number)) and v in (3, 7) for v in values)


def _index_summary(summary: pd.DataFrame) -> tuple[dict[str, dict], dict[str, int]]:
    """CSV rows by npz name, and the names that occur more than once (with their counts)."""
    names = summary["filename"].map(lambda s: os.path.basename(s.strip()))
    counts = names.value_counts()
    repeated = {n: int(c) for n, c in counts.items() if c > 1}
    rows = dict(zip(names, summary.to_dict("records")))
    return rows, repeated


def _find_candidates(split_dirs: Mapping[str, Path], rejections: Rejections, csv_path: Path) -> list[_Candidate]:
    """Every data_<ID>.npz of the splits, sorted; badly named files, IDs found in two splits,
    dangling symlinks and photos without their npz are rejected."""
    candidates = []
    for split, folder in split_dirs.items():
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
        names = [e.name for e in entries if e.name.endswith(".npz") and e.is_file()]
        dangling = [e.name for e in entries if e.name.endswith(".npz") and e.is_symlink() and not e.is_file()]
        if not names and not dangling:
            raise DataError(folder, None, "data_<ID>.npz files", "none")
        for name in dangling:
            match = NPZ_NAME.fullmatch(name)
            rejections.add(match.group(1) if match else name, DataError(
                folder / name, "filename", f"a readable npz file (its row in {csv_path.name} needs it)",
                f"a dangling symlink to {os.readlink(folder / name)}"))
        ids = {m.group(1) for m in map(NPZ_NAME.fullmatch, names + dangling) if m}
        for entry in entries:
            match = JPG_NAME.fullmatch(entry.name)
            if match and match.group(1) not in ids:
                rejections.add(match.group(1), DataError(
                    folder / entry.name, "filename", f"data_<ID>.npz beside the photo and its row in {csv_path.name}",
                    f"no data_{match.group(1)}.npz in {folder.name}"))
        for name in names:
            match = NPZ_NAME.fullmatch(name)
            if match is None:
                rejections.add(name, DataError(folder / name, "filename", "a name data_<digits>.npz", name))
                continue
            candidates.append(_Candidate(match.group(1), split, folder / name))
    by_id: dict[str, list[_Candidate]] = {}
    for cand in candidates:
        by_id.setdefault(cand.id, []).append(cand)
    kept = []
    for cand in candidates:
        copies = by_id[cand.id]
        if len(copies) == 1:
            kept.append(cand)
            continue
        others = [str(c.npz_path) for c in copies if c is not cand]
        _reject(rejections, cand, DataError(cand.npz_path, "id", "an ID used by one subject only", f"also {others}"))
    return sorted(kept, key=lambda c: (SPLITS.index(c.split), c.id))


def _summary_row(cand: _Candidate, rows: Mapping[str, dict], repeated: Mapping[str, int], csv_path: Path) -> dict:
    name = cand.npz_path.name
    if name in repeated:
        raise DataError(csv_path, "filename", f"one row for {name}", f"{repeated[name]} rows")
    if name not in rows:
        raise DataError(csv_path, "filename", "a row for every data_<ID>.npz of the split folders",
                        f"no row for {name} (in {cand.npz_path.parent})")
    return rows[name]


def _read_subject(cand: _Candidate, row: Mapping[str, str], csv_path: Path, refraction_column: str,
                  trust_pickle: bool, pickle_notice: "_PickleNotice") -> dict:
    """Everything about one subject except the race decoding, which needs the whole folder."""
    record: dict[str, object] = {
        "id": cand.id, "split": cand.split,
        "md_severity": map_vocab(row["md_severity"], MD_SEVERITY, csv_path, "md_severity"),
        "cdr_status": map_vocab(row["cdr_status"], CDR_STATUS, csv_path, "cdr_status"),
        "refraction": map_vocab(row[refraction_column], REFRACTION, csv_path, refraction_column),
        "age": _csv_number(row, "age", csv_path),
        "rnflt_status": _csv_optional_class(row, "rnflt_status", RNFLT_STATUS, csv_path),
    }
    fields = _read_npz(cand.npz_path, trust_pickle, pickle_notice)
    record["race"] = fields["race"]  # decoded later, once the coding of the whole folder is known
    record["gender"] = decode_code(fields["gender"], BINARY_CODES, GENDER_WORDS, cand.npz_path, fields["gender_key"])
    record["ethnicity"] = decode_code(fields["ethnicity"], BINARY_CODES, ETHNICITY_WORDS, cand.npz_path,
                                      fields["ethnicity_key"])
    record["glaucoma"] = decode_code(fields["glaucoma"], BINARY_CODES, GLAUCOMA_WORDS, cand.npz_path, "glaucoma")
    if record["glaucoma"] == -1:
        raise DataError(cand.npz_path, "glaucoma", "0 (no) or 1 (yes); the label cannot be unknown", fields["glaucoma"])
    record["md"] = fields["md"] if "md" in fields else _csv_number(row, "md", csv_path)

    image = cand.npz_path.with_name(f"slo_fundus_{cand.id}.jpg")  # decoded by the caller, all photos at once
    record["image_path"], record["npz_path"] = str(image), str(cand.npz_path)
    return record


class _PickleNotice:
    """Warn once per load that pickled npz content is being trusted."""

    def __init__(self):
        self.done = False

    def __call__(self, path: Path, key: str) -> None:
        if not self.done:
            warnings.warn(f"{path}: key {key!r} is a pickled object array; loading it (and any like it in this "
                          "folder) with allow_pickle=True because trust_pickle=True. Unpickling runs code: "
                          "only do this for data you trust.", stacklevel=5)
            self.done = True


def _read_npz(path: Path, trust_pickle: bool, pickle_notice: _PickleNotice) -> dict[str, object]:
    """The needed npz values (raw), reading pickled keys only when trusted."""
    try:
        return _read_npz_fields(path, allow_pickle=False)
    except _PickledKey as pickled:
        if not trust_pickle:
            raise DataError(path, pickled.key, "a plain array (pass trust_pickle=True only for data you trust)",
                            "a pickled object array") from None
        pickle_notice(path, pickled.key)
        return _read_npz_fields(path, allow_pickle=True)


def _read_npz_fields(path: Path, allow_pickle: bool) -> dict[str, object]:
    with _NpzMembers(path, allow_pickle) as npz:
        fields: dict[str, object] = {}
        for field, aliases in NPZ_KEYS.items():
            key = next((k for k in aliases if k in npz.files), None)
            if key is None:
                raise DataError(path, " | ".join(aliases), f"a key named one of {list(aliases)}",
                                f"keys {sorted(npz.files)}")
            fields[field], fields[f"{field}_key"] = npz.scalar(key), key
        if "md" in npz.files:
            md = npz.scalar("md")
            try:
                fields["md"] = float(md)
            except (TypeError, ValueError):
                raise DataError(path, "md", "a number (dB)", md) from None
        _check_image_array(npz)
    return fields


def _check_image_array(npz: "_NpzMembers") -> None:
    """``slo_fundus`` must exist and be a non-empty 2-D or 3-D array (the authors drop files
    without it). Only the array header is read: the pixels are not needed."""
    if IMAGE_KEY not in npz.files:
        raise DataError(npz.path, IMAGE_KEY, f"a key named {IMAGE_KEY!r}", f"keys {sorted(npz.files)}")
    shape, _, dtype = npz.header(IMAGE_KEY)
    if dtype.hasobject:
        shape = npz.array(IMAGE_KEY).shape  # refused unless pickles are trusted
    if len(shape) not in (2, 3) or math.prod(shape) == 0:
        raise DataError(npz.path, IMAGE_KEY, "a non-empty 2-D or 3-D image array", f"shape {tuple(shape)}")


class _NpzMembers:
    """Single arrays of an .npz archive, each read with one call.

    Same result as ``np.load(path, allow_pickle=...)[key]`` at half the cost on small files
    (numpy reads every .npy header in several small reads and re-parses it; identical headers
    are parsed once here), and a header can be read without the data. Object arrays (pickles)
    are refused with :class:`_PickledKey` unless ``allow_pickle``; only then does numpy
    unpickle them."""

    HEAD_BYTES = 4096  # enough for any plain array's header (numpy pads them to 64-128 bytes)

    def __init__(self, path: Path, allow_pickle: bool):
        self.path, self.allow_pickle = path, allow_pickle
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise DataError(path, None, "a readable .npz file", f"{type(exc).__name__}: {exc}") from exc
        self.files = [name[:-4] for name in self._zip.namelist() if name.endswith(".npy")]

    def __enter__(self) -> "_NpzMembers":
        return self

    def __exit__(self, *exc_info) -> None:
        self._zip.close()

    def header(self, key: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        """(shape, fortran_order, dtype) of one member, without reading its data."""
        raw = self._read(key, self.HEAD_BYTES)
        if self._guard(key, lambda: _npy_header_end(raw)) > len(raw):
            raw = self._read(key, _npy_header_end(raw))
        return self._guard(key, lambda: _parse_npy(raw))[:3]

    def array(self, key: str) -> np.ndarray:
        raw = self._read(key)
        shape, fortran_order, dtype, offset = self._guard(key, lambda: _parse_npy(raw))
        if dtype.hasobject:
            if not self.allow_pickle:
                raise _PickledKey(key)
            return self._guard(key, lambda: np.lib.format.read_array(io.BytesIO(raw), allow_pickle=True))
        count = math.prod(shape)
        if len(raw) - offset != count * dtype.itemsize:
            raise DataError(self.path, key, f"{count * dtype.itemsize} bytes of array data", f"{len(raw) - offset}")
        return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(
            shape, order="F" if fortran_order else "C")

    def scalar(self, key: str) -> object:
        """A member that holds one value (0-d, or any shape of size 1), as a Python object."""
        array = self.array(key)
        if array.size != 1:
            raise DataError(self.path, key, "a single value", f"an array of shape {array.shape}")
        return array.reshape(()).item()

    def _read(self, key: str, size: int = -1) -> bytes:
        def read() -> bytes:
            with self._zip.open(f"{key}.npy") as member:
                return member.read(size)
        return self._guard(key, read)

    def _guard(self, key: str, action):
        """Run a read; any failure of a corrupt archive becomes a DataError naming the member."""
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - zip, CRC and header errors alike
            raise DataError(self.path, key, "a readable .npy array", f"{type(exc).__name__}: {exc}") from exc


def _npy_header_end(raw: bytes) -> int:
    """Where the header of a .npy byte string ends (its data starts)."""
    if len(raw) < 12 or raw[:6] != b"\x93NUMPY" or raw[6] not in (1, 2, 3):
        raise ValueError(f"no .npy header (starts with {raw[:8]!r})")
    width = 2 if raw[6] == 1 else 4
    return 8 + width + int.from_bytes(raw[8:8 + width], "little")


def _parse_npy(raw: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of a .npy byte string."""
    end = _npy_header_end(raw)
    if len(raw) < end:
        raise ValueError(f"header of {end} bytes cut short at {len(raw)}")
    start = 10 if raw[6] == 1 else 12
    return (*_parse_npy_header(raw[start:end], raw[6]), end)


@functools.lru_cache(maxsize=256)
def _parse_npy_header(text: bytes, major_version: int) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from a .npy header dict; cached, headers repeat across files."""
    header = ast.literal_eval(text.decode("utf-8" if major_version >= 3 else "latin1"))
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f"unexpected .npy header {header!r}")
    shape = tuple(int(n) for n in header["shape"])
    return shape, bool(header["fortran_order"]), np.lib.format.descr_to_dtype(header["descr"])


def _csv_number(row: Mapping[str, str], column: str, csv_path: Path) -> float:
    """An optional numeric CSV column; NaN when the column or the value is absent."""
    text = str(row.get(column, "")).strip()
    if text == "":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise DataError(csv_path, column, "a number or an empty cell", text) from None


def _csv_optional_class(row: Mapping[str, str], column: str, vocab: Mapping[str, int], csv_path: Path) -> int:
    """An optional class column; -1 when the column or the value is absent."""
    text = str(row.get(column, "")).strip()
    return -1 if text == "" else map_vocab(text, vocab, csv_path, column)


def _reject(rejections: Rejections, cand: _Candidate, err: DataError) -> None:
    err.add_note(f"while reading subject {cand.id} of split {cand.split} ({cand.npz_path})")
    rejections.add(cand.id, err)


def _to_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as a typed frame; optional columns only when some subject has a value."""
    frame = pd.DataFrame(rows, columns=COLUMNS + OPTIONAL_COLUMNS)
    int_columns = FAIRGENMED.attribute_names + FAIRGENMED.label_names + ["rnflt_status"]
    frame[int_columns] = frame[int_columns].astype("int64")
    frame[["md", "age"]] = frame[["md", "age"]].astype("float64")
    for column in ("id", "split", "image_path", "npz_path", "prompt"):
        frame[column] = frame[column].astype(str)
    present = [c for c in ("md", "age") if frame[c].notna().any()]
    present += ["rnflt_status"] if (frame["rnflt_status"] != -1).any() else []
    return frame[COLUMNS + present].reset_index(drop=True)
