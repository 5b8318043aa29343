"""Attribute fidelity: does a generated image show the group its prompt asked for?

Per-group FID compares a group's generated images with that group's real ones, but a method can
lower a group's FID while drawing its images like another group's. Here one classifier per
sensitive attribute (race, gender, ethnicity; sex, age; ...) is trained on REAL training images
only and applied to

- real test images, labelled with their true group: the ceiling, what the classifier can do;
- generated images, labelled with the group in their prompt:

    fidelity_g = 1/n_g sum_{i in g} 1[ classifier(x_i) = g ].

A generator that renders every group faithfully reaches the ceiling in every group; a fidelity
well below the ceiling for one group, with the ``share_predicted`` rows showing where its images
went, is the failure FID cannot see. Rows of unknown group (-1) are left out.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from fairdiff.errors import DataError
from fairdiff.evaluate.classifier import predict_proba, train_classifier
from fairdiff.evaluate.groups import group_ids, group_names
from fairdiff.evaluate.intervals import wilson_interval
from fairdiff.schema import Schema

FIDELITY_COLUMNS = ["source", "attribute", "group", "predicted", "n", "metric", "value", "boot_lo", "boot_hi",
                    "interval"]


def _rows(images, mask: np.ndarray):
    """The rows of an image source (tensor, uint8 array, Dataset) that ``mask`` selects."""
    if mask.all():
        return images
    if isinstance(images, torch.Tensor):
        return images[torch.from_numpy(mask)]
    if isinstance(images, Dataset):
        return Subset(images, np.flatnonzero(mask).tolist())
    return images[np.flatnonzero(mask)]


def train_attribute_classifiers(train_x, train_meta: pd.DataFrame, val_x,
                                val_meta: pd.DataFrame, schema: Schema, attributes: list[str] | None = None,
                                **classifier_kwargs) -> dict[str, nn.Module]:
    """One classifier per sensitive attribute, trained on real training images (any image source:
    tensor, uint8 array, Dataset), the epoch chosen on real validation images
    (:func:`fairdiff.evaluate.classifier.train_classifier`, whose keyword arguments pass through:
    epochs, seed, in_res, arch, device, ...).

    Refuses test rows (they are the ceiling's reference) and rows of unknown group are left out."""
    if "split" in train_meta.columns and (train_meta["split"] == "test").any():
        raise DataError("metadata", "split", "train (or val) rows only: the test split measures the ceiling",
                        int((train_meta["split"] == "test").sum()))
    classifiers = {}
    for attribute in attributes or schema.attribute_names:
        y_train, y_val = group_ids(train_meta, schema, attribute), group_ids(val_meta, schema, attribute)
        known_train, known_val = y_train >= 0, y_val >= 0
        model, _ = train_classifier(_rows(train_x, known_train), y_train[known_train], _rows(val_x, known_val),
                                    y_val[known_val], len(group_names(schema, attribute)), **classifier_kwargs)
        classifiers[attribute] = model
    return classifiers


def predict_groups(classifiers: dict[str, nn.Module], images, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The predicted group id of every image (any image source), per attribute."""
    return {attribute: predict_proba(model, images, batch_size).argmax(axis=1)
            for attribute, model in classifiers.items()}


def fidelity_table(predictions: dict[str, np.ndarray], meta: pd.DataFrame, schema: Schema, source: str,
                   ci: float = 0.95) -> pd.DataFrame:
    """Fidelity rows from predicted group ids and the metadata's group ids (the true group of a real
    image, the prompted group of a generated one); columns :data:`FIDELITY_COLUMNS`.

    Per attribute: ``accuracy`` over all known rows and per group (Wilson interval), ``balanced_accuracy``
    (the mean of the per-group accuracies over groups present, unmoved by group sizes), and
    ``share_predicted`` per (group, predicted group): where each group's images were put."""
    rows = []
    for attribute, predicted in predictions.items():
        names = group_names(schema, attribute)
        labels = group_ids(meta, schema, attribute)
        if len(labels) != len(predicted):
            raise ValueError(f"{attribute}: {len(predicted)} predictions but {len(labels)} metadata rows")
        known = labels >= 0
        per_group = []
        for gid, group in [(None, "all")] + list(enumerate(names)):
            mask = known if gid is None else labels == gid
            n, hits = int(mask.sum()), int((predicted[mask] == labels[mask]).sum())
            lo, hi = wilson_interval(hits, n, ci)
            rows.append({"source": source, "attribute": attribute, "group": group, "predicted": "", "n": n,
                         "metric": "accuracy", "value": hits / n if n else float("nan"), "boot_lo": lo,
                         "boot_hi": hi, "interval": "wilson"})
            if gid is None:
                continue
            if n:
                per_group.append(hits / n)
            for pid, predicted_group in enumerate(names):
                share = float((predicted[mask] == pid).mean()) if n else float("nan")
                rows.append({"source": source, "attribute": attribute, "group": group, "predicted": predicted_group,
                             "n": n, "metric": "share_predicted", "value": share, "boot_lo": float("nan"),
                             "boot_hi": float("nan"), "interval": ""})
        rows.append({"source": source, "attribute": attribute, "group": "all", "predicted": "", "n": int(known.sum()),
                     "metric": "balanced_accuracy", "value": float(np.mean(per_group)) if per_group else float("nan"),
                     "boot_lo": float("nan"), "boot_hi": float("nan"), "interval": ""})
    return pd.DataFrame(rows, columns=FIDELITY_COLUMNS)


def attribute_fidelity(classifiers: dict[str, nn.Module], images, meta: pd.DataFrame, schema: Schema,
                       source: str, batch_size: int = 256, ci: float = 0.95) -> pd.DataFrame:
    """Fidelity of one image set: per attribute and group g, 1/n_g sum_{i in g} 1[classifier(x_i) = g],
    the label g being a real test image's true group (the ceiling) or a generated image's prompted
    group (from its metadata); see :func:`fidelity_table` for the rows."""
    if len(images) != len(meta):
        raise ValueError(f"{source}: {len(images)} images but {len(meta)} metadata rows")
    return fidelity_table(predict_groups(classifiers, images, batch_size), meta, schema, source, ci)
