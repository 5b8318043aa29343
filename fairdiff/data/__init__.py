"""Datasets: loaders for the real on-disk formats and synthetic generators that write them.

Every loader returns a DataFrame with the columns described in :mod:`fairdiff.schema`."""
from __future__ import annotations

import importlib

_LAZY = {
    "load_fairgenmed": "fairdiff.data.fairgenmed",
    "load_ham10000": "fairdiff.data.ham10000",
    "load_chexpert": "fairdiff.data.chexpert",
    "ImageRecordDataset": "fairdiff.data.dataset",
    "rejection_table": "fairdiff.data.common",
}

LOADERS = {"fairgenmed": "load_fairgenmed", "ham10000": "load_ham10000", "chexpert": "load_chexpert"}


def __getattr__(name: str):
    # Lazy: importing fairdiff.data must not import torch or every loader.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


def load_dataset(name: str, root, *, strict: bool = False, val_fraction: float = 0.1, seed: int = 0, **kwargs):
    """Load any supported dataset by schema name (``fairgenmed``, ``ham10000``, ``chexpert``).

    ``strict``: raise at the first bad row or file instead of listing it in
    ``frame.attrs["rejections"]`` (see :func:`rejection_table`). ``val_fraction`` and ``seed``:
    when the loaded frame has no validation rows, that share of the training lesions / patients /
    subjects becomes validation, seeded (``frame.attrs["val_carved"]`` records it). Other keyword
    arguments go to the loader (e.g. ``layout``, ``split_seed``, ``check_images``)."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(LOADERS)}")
    return __getattr__(LOADERS[name])(root, strict=strict, val_fraction=val_fraction, seed=seed, **kwargs)
