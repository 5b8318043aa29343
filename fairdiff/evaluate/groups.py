"""Subgroups for evaluation, read from metadata ints.

The authors picked a group's images by substring match on the prompt text, which needs a leading
space to keep "Hispanic" out of "Non-Hispanic" and breaks whenever the wording changes. We read
the group id from the metadata column the loaders write (see :mod:`fairdiff.schema`): the id is
the group, the prompt is only text. An unknown id (-1) belongs to no group.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from fairdiff.errors import DataError
from fairdiff.schema import Attribute, Label, Schema

META = "metadata"  # the "file" named in errors: metadata frames live in memory


def reported_groupings(schema: Schema) -> list[str]:
    """The groupings the paper reports: every sensitive attribute, then every clinical label.

    FairGenMed: race, gender, ethnicity, glaucoma, md_severity, cdr_status, refraction
    (3+2+2+2+4+3+3 = 19 groups)."""
    return schema.attribute_names + schema.label_names


def group_names(schema: Schema, name: str) -> tuple[str, ...]:
    """Readable group names of an attribute (its prompt words) or a label (its class names), in id order."""
    item = _lookup(schema, name)
    return item.groups if isinstance(item, Attribute) else item.classes


def group_ids(meta: pd.DataFrame, schema: Schema, name: str) -> np.ndarray:
    """The int group id of every row for one attribute or label; -1 marks unknown.

    Raises DataError when the column is missing or holds an id the schema does not know."""
    n_groups = len(group_names(schema, name))
    if name not in meta.columns:
        raise DataError(META, name, f"an int column {name!r} ({schema.name} schema)", f"columns {list(meta.columns)}")
    column = meta[name]
    if not pd.api.types.is_integer_dtype(column):
        raise DataError(META, name, "integer group ids", str(column.dtype))
    ids = column.to_numpy(dtype=np.int64)
    bad = (ids < -1) | (ids >= n_groups)
    if bad.any():
        raise DataError(META, name, f"ids in -1..{n_groups - 1}", sorted(set(ids[bad].tolist())))
    return ids


def group_masks(meta: pd.DataFrame, schema: Schema,
                attributes: Iterable[str] | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Boolean row masks keyed by (attribute or label name, group name), in schema order.

    ``attributes`` defaults to :func:`reported_groupings`; it may mix attribute and label names.
    Every group of the schema gets a key, even when no row belongs to it (an all-False mask), so
    tables have the same rows for every generator."""
    names = reported_groupings(schema) if attributes is None else list(attributes)
    masks: dict[tuple[str, str], np.ndarray] = {}
    for name in names:
        ids = group_ids(meta, schema, name)
        for gid, group in enumerate(group_names(schema, name)):
            masks[(name, group)] = ids == gid
    return masks


def _lookup(schema: Schema, name: str) -> Attribute | Label:
    for item in (*schema.attributes, *schema.labels):
        if item.name == name:
            return item
    raise ValueError(f"{schema.name}: no attribute or label named {name!r}; "
                     f"expected one of {reported_groupings(schema)}")
