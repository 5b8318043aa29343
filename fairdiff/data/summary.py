"""Tables that describe a curated dataset: who is in it and how labels spread across groups."""
from __future__ import annotations

import pandas as pd

from fairdiff.schema import Schema

UNKNOWN = "unknown"


def group_sizes(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Subjects per (split, attribute, group); unknown (-1) is its own row, apart from the known groups."""
    rows = []
    for attr in schema.attributes:
        names = dict(enumerate(attr.groups)) | {-1: UNKNOWN}
        for split in ("train", "val", "test"):
            counts = frame.loc[frame["split"] == split, attr.name].value_counts()
            for gid, name in names.items():
                if gid >= 0 or counts.get(gid, 0):
                    rows.append({"attribute": attr.name, "group": name, "split": split, "count": int(counts.get(gid, 0))})
    out = pd.DataFrame(rows)
    total = out.groupby(["attribute", "group"], sort=False)["count"].sum().reset_index().assign(split="all")
    out = pd.concat([out, total], ignore_index=True)
    out["share"] = out["count"] / out.groupby(["attribute", "split"])["count"].transform("sum")
    return out


def intersections(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Counts of every combination of the attributes (the race x gender x ethnicity table)."""
    named = frame[schema.attribute_names].copy()
    for attr in schema.attributes:
        named[attr.name] = named[attr.name].map(dict(enumerate(attr.groups)) | {-1: UNKNOWN})
    return named.value_counts().rename("count").reset_index().sort_values(schema.attribute_names, ignore_index=True)


def label_shares(frame: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Share of each clinical class within each group (rows sum to 1 per attribute, group and label)."""
    rows = []
    for attr in schema.attributes:
        for gid, gname in enumerate(attr.groups):
            sub = frame[frame[attr.name] == gid]
            for lab in schema.labels:
                counts = sub[lab.name].value_counts()
                for cid, cname in enumerate(lab.classes):
                    rows.append({"attribute": attr.name, "group": gname, "label": lab.name, "class": cname,
                                 "n_group": len(sub), "share": counts.get(cid, 0) / max(len(sub), 1)})
    return pd.DataFrame(rows)


def first_per_group(frame: pd.DataFrame, column: str, k: int) -> pd.DataFrame:
    """The first ``k`` subjects (by id) of every value of ``column``: a stable choice for image grids."""
    known = frame[frame[column] >= 0].sort_values("id")
    return known.groupby(column, sort=True).head(k).sort_values([column, "id"])
