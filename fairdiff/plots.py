"""Figures from data frames: each notebook cell is one call, each figure is saved with its data.

Every figure lands in ``figures/<profile>/<dataset>/<name>.png`` next to ``<name>.csv`` holding
the numbers drawn, so a reader can check a plot or redraw it. PNGs carry no timestamp or version
metadata and CSVs use a fixed float format, so an unchanged run rewrites identical files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from fairdiff import io
from fairdiff.env import WORK_ROOT

sns.set_theme(style="whitegrid", context="notebook")
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "svg.hashsalt": "fairdiff"})


class FigureWriter:
    """Writes figures and their data under one folder."""

    def __init__(self, profile: str, dataset: str, root: str | Path | None = None):
        self.dir = Path(root or WORK_ROOT / "figures") / profile / dataset
        self.dir.mkdir(parents=True, exist_ok=True)

    def table(self, frame: pd.DataFrame, name: str, index: bool = False) -> Path:
        path = self.dir / f"{name}.csv"
        io.write_csv(path, frame, index=index, float_format="%.6g")
        return path

    def figure(self, fig, name: str, data: pd.DataFrame | None = None) -> Path:
        path = self.dir / f"{name}.png"
        with io.atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight", metadata={"Software": None})
        if data is not None:
            self.table(data, name)
        return path


def counts_bar(frame: pd.DataFrame, x: str, hue: str | None = None, title: str = ""):
    """Bar chart of a long table with a ``count`` column."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.barplot(data=frame, x=x, y="count", hue=hue, ax=ax)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    return fig


def share_heatmap(frame: pd.DataFrame, title: str = ""):
    """Heat map of a wide table of shares (rows: groups, columns: classes)."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * frame.shape[1], 0.6 + 0.45 * frame.shape[0]))
    sns.heatmap(frame, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, cbar=False, ax=ax)
    ax.set_title(title)
    return fig


def image_grid(images: Sequence[np.ndarray], row_labels: Sequence[str], ncols: int, title: str = "",
               col_labels: Sequence[str] | None = None, size: float = 1.3):
    """Images (uint8 HxWx3 or HxW; None leaves a blank) in rows of ``ncols``; one label per row."""
    nrows = int(np.ceil(len(images) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + 1.2, size * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if k < len(images) and images[k] is not None:
            img = images[k]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
    for r, label in enumerate(row_labels[:nrows]):
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if col_labels:
        for c, label in enumerate(col_labels[:ncols]):
            axes[0, c].set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def curves(frame: pd.DataFrame, x: str, y: str, hue: str | None = None, title: str = "", ylabel: str | None = None,
           smooth: int = 1, logy: bool = False):
    """Line plot of a long table, optionally smoothed with a centred rolling mean per hue."""
    data = frame.copy()
    if smooth > 1:
        keys = [hue] if hue else []
        data[y] = (data.groupby(keys)[y].transform(lambda s: s.rolling(smooth, min_periods=1, center=True).mean())
                   if keys else data[y].rolling(smooth, min_periods=1, center=True).mean())
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    sns.lineplot(data=data, x=x, y=y, hue=hue, ax=ax, errorbar=None)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel(ylabel or y)
    return fig


def bars_with_ci(frame: pd.DataFrame, x: str, y: str, lo: str, hi: str, hue: str | None = None, title: str = "",
                 ylabel: str | None = None):
    """Grouped bars with error bars from precomputed interval columns (bootstrap lo/hi)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * frame[x].nunique() * max(1, frame[hue].nunique() if hue else 1)), 3.4))
    xs = list(dict.fromkeys(frame[x]))
    hues = list(dict.fromkeys(frame[hue])) if hue else [None]
    width = 0.8 / len(hues)
    palette = sns.color_palette(n_colors=len(hues))
    for j, h in enumerate(hues):
        sub = frame if h is None else frame[frame[hue] == h]
        sub = sub.set_index(x).reindex(xs)
        pos = np.arange(len(xs)) + (j - (len(hues) - 1) / 2) * width
        err = np.vstack([(sub[y] - sub[lo]).clip(lower=0), (sub[hi] - sub[y]).clip(lower=0)])
        ax.bar(pos, sub[y], width=width, color=palette[j], label=h, yerr=err, capsize=2)
    ax.set_xticks(np.arange(len(xs)), xs, rotation=30, ha="right")
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    if hue:
        ax.legend(fontsize=8, ncols=min(len(hues), 5))
    return fig


def grouped_grid(images: Sequence[np.ndarray], keys: Sequence, names: Sequence[str], per_row: int, title: str = ""):
    """One row per distinct key (in sorted order) with up to ``per_row`` of its images, padded with blanks."""
    cells, labels = [], []
    for key in sorted(set(keys)):
        mine = [img for img, k in zip(images, keys) if k == key][:per_row]
        cells += mine + [None] * (per_row - len(mine))
        labels.append(names[key])
    return image_grid(cells, labels, ncols=per_row, title=title)
