"""Datasets: loaders for the real on-disk formats and synthetic generators that write them.

Every loader returns a DataFrame with the columns described in :mod:`fairdiff.schema`."""
from __future__ import annotations

import importlib

_LAZY = {
    "load_fairgenmed": "fairdiff.data.fairgenmed",
    "load_ham10000": "fairdiff.data.ham10000",
    "load_chexpert": "fairdiff.data.chexpert",
    "ImageRecordDataset": "fairdiff.data.dataset",
}

LOADERS = {"fairgenmed": "load_fairgenmed", "ham10000": "load_ham10000", "chexpert": "load_chexpert"}


def __getattr__(name: str):
    # Lazy: importing fairdiff.data must not import torch or every loader.
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


def load_dataset(name: str, root, **kwargs):
    """Load any supported dataset by schema name (``fairgenmed``, ``ham10000``, ``chexpert``)."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(LOADERS)}")
    return __getattr__(LOADERS[name])(root, **kwargs)
