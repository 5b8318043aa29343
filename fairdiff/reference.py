"""The per-group evaluation reference (``evaluate.reference``): enough real images of every group
of one attribute to compare groups at the same, adequate size.

A test split drawn at the population's shares holds few images of a rare group (the study's
planted group: about 19), too few for FID to separate a real gap from noise. With
``evaluate.reference.attribute`` set, every group of that attribute gets exactly
``evaluate.reference.per_group`` real reference records (and, in the sampling stage, one generated
image each, from the record's own prompt):

- synthetic data with a pool generator (FairGenMed): a group-balanced pool drawn from the same
  population as the dataset (same generator, seed and ``data.synth`` knobs, planted differences
  included; only the group shares differ), numbered after the dataset's subjects so that no
  subject is shared with train, val or test, written in the real on-disk format in a folder
  beside the dataset (``<root>-reference-<attribute>-<per_group>``) and regenerated only when
  what it is drawn from changes;
- real data (or a synthetic dataset without a pool generator): the test split, ``per_group``
  records of each group chosen at random (seeded by the data seed); a group with fewer is an error
  naming it and its count.
"""
from __future__ import annotations

import importlib
import json
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from fairdiff.errors import ConfigError, DataError
from fairdiff.evaluate.groups import group_ids, group_names
from fairdiff.schema import Schema

SPLIT = "reference"  # the split name of the reference records (sampling folder, manifests)
POOL_GENERATORS = {"fairgenmed": "fairdiff.data.synth.fairgenmed"}  # modules with generate_group_pool


def reference_settings(cfg: dict, schema: Schema, required: bool = False) -> tuple[str, int] | None:
    """(attribute, per_group) of ``evaluate.reference``, or None when it is off (attribute null;
    ``required``: a ConfigError)."""
    ref = cfg["evaluate"]["reference"]
    if ref["attribute"] is None:
        if required:
            raise ConfigError(f"evaluate.reference.attribute: null (off), but the per-group reference was asked for; "
                              f"set it to an attribute of {cfg['dataset']} ({', '.join(schema.attribute_names)})")
        return None
    if ref["attribute"] not in schema.attribute_names:
        raise ConfigError(f"evaluate.reference.attribute: {ref['attribute']!r} is not an attribute of "
                          f"{cfg['dataset']}; expected one of {', '.join(schema.attribute_names)} (or null: off)")
    return ref["attribute"], int(ref["per_group"])


def data_seed(cfg: dict) -> int:
    """The seed the data are drawn with: ``data.seed``, else the run's seed."""
    return cfg["seed"] if cfg["data"]["seed"] is None else cfg["data"]["seed"]


def pool_folder(cfg: dict, attribute: str, per_group: int) -> Path:
    """Where the synthetic pool of a dataset lives: a folder beside the dataset's."""
    root = Path(cfg["data"]["root"])
    return root.with_name(f"{root.name}-reference-{attribute}-{per_group}")


def ensure_reference_pool(cfg: dict, attribute: str, per_group: int, progress: bool = False) -> Path:
    """The synthetic pool folder for this config, drawn (and written) unless an identical one exists.
    Processes that need it at once (parallel study arms) wait for the one drawing it."""
    from filelock import FileLock

    from fairdiff.data.synth.render import PARAMS_FILE
    from fairdiff.prepare import synth_params

    module = importlib.import_module(POOL_GENERATORS[cfg["dataset"]])
    folder, seed = pool_folder(cfg, attribute, per_group), data_seed(cfg)
    params = synth_params(cfg["dataset"], cfg["data"]["synth"])
    wanted = ({"seed": seed, "params": json.loads(json.dumps(asdict(params)))},
              {"attribute": attribute, "per_group": per_group, "first": cfg["data"]["n"] + 1})

    def current() -> bool:
        try:
            saved = json.loads((folder / PARAMS_FILE).read_text()), json.loads((folder / module.POOL_FILE).read_text())
        except (OSError, ValueError):
            return False
        return tuple({k: s.get(k) for k in w} for s, w in zip(saved, wanted)) == wanted

    if current():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.with_name(f".{folder.name}.draw.lock"))):
        if not current():  # not drawn meanwhile by the process we waited for
            module.generate_group_pool(folder, attribute, per_group, seed, params, first=cfg["data"]["n"] + 1,
                                       progress=progress, overwrite=folder.exists())
    return folder


def _stamp(folder: Path) -> str:
    """What identifies a drawn pool: its parameter files (``*.json``), which differ for a redrawn one."""
    return "".join(path.read_text() for path in sorted(folder.glob("*.json")))


@lru_cache(maxsize=4)
def _load_pool(dataset: str, folder: str, stamp: str) -> pd.DataFrame:
    """The pool's records, loaded (every image checked) once per process and pool: the study's
    arms run in a few worker processes and each arm asks for them."""
    from fairdiff.data import load_dataset

    return load_dataset(dataset, folder, strict=True, splits=("test",))


def reference_records(cfg: dict, records: pd.DataFrame, schema: Schema, progress: bool = False) -> pd.DataFrame:
    """Exactly ``per_group`` records of every group of the attribute, with split ``reference`` and
    the loaders' columns (id, image_path, prompt, group and label ids); see the module docstring.
    ``records``: the dataset's records (its test split is the real-data reference)."""
    attribute, per_group = reference_settings(cfg, schema, required=True)
    if cfg["data"].get("synthetic") and cfg["dataset"] in POOL_GENERATORS:
        folder = ensure_reference_pool(cfg, attribute, per_group, progress)
        frame = _load_pool(cfg["dataset"], str(folder), _stamp(folder)).copy()
        overlap = set(frame["id"]) & set(records["id"])
        if overlap:
            raise DataError(folder, "id", f"reference subjects that are not in {cfg['data']['root']}",
                            sorted(overlap)[:5])
        where, source = folder, f"the synthetic pool {folder.name}"
    else:
        frame = records[records["split"] == "test"]
        where, source = f"the test split of {cfg['data']['root']}", "the test split"
    ids = group_ids(frame, schema, attribute)
    rng = np.random.default_rng([data_seed(cfg), per_group])
    chosen = []
    for gid, group in enumerate(group_names(schema, attribute)):
        rows = np.flatnonzero(ids == gid)
        if len(rows) < per_group:
            raise DataError(where, attribute, f"at least {per_group} images of every {attribute} group for "
                            f"evaluate.reference.per_group (lower it, or set evaluate.reference.attribute: null)",
                            f"{len(rows)} of group {group}")
        chosen.append(np.sort(rng.choice(rows, per_group, replace=False)) if len(rows) > per_group else rows)
    out = frame.iloc[np.concatenate(chosen)].reset_index(drop=True)
    out["split"] = SPLIT
    out.attrs = {"source": source, "subsampled": bool((ids >= 0).sum() > len(out))}
    return out


def majority_group(records: pd.DataFrame, schema: Schema, attribute: str) -> str:
    """The attribute's largest group among the records the diffusion model trains on (train + val);
    a tie goes to the group listed first."""
    train = records[records["split"].isin(("train", "val"))]
    counts = np.bincount(group_ids(train, schema, attribute) + 1, minlength=len(group_names(schema, attribute)) + 1)
    return group_names(schema, attribute)[int(np.argmax(counts[1:]))]
