"""Real and generated image sets in one frame and format, for plotting and evaluation.

Real images go through the training preprocessing (paper: stretch, rotate, resize, crop) and are
then rotated back; generated images are saved already rotated back (:mod:`fairdiff.sample`). Both
therefore sit in the stored (anatomical) frame at the training resolution, as the authors' evaluation
compares them.

Evaluation streams: :class:`RealImages` and :class:`GeneratedImages` are Datasets that decode one
image file per item (uint8 [3, H, W]), and :func:`cached_real` decodes a real split once into a
uint8 ``.npy`` file, batch by batch, and hands back a reader of its rows (:func:`cached_generated`
does the same for a generated set). The evaluation
functions (:mod:`fairdiff.evaluate`) take any of them and read one batch at a time, so memory is
bounded by the batch. :func:`real_uint8` and :func:`generated_uint8` load a whole (small) set at
once, for figures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fairdiff import arrays, io
from fairdiff.arrays import NpyRows
from fairdiff.data.images import load_image, pipeline_kwargs, prepare_uint8, to_anatomical
from fairdiff.schema import Schema
from fairdiff.stage_keys import digest


def real_pixels(path: str | Path, schema: Schema, resolution: int, preprocess: str = "ours") -> torch.Tensor:
    """uint8 [3, R, R]: one real image through the training preprocessing (``data.preprocess``),
    back in the anatomical frame."""
    kwargs = pipeline_kwargs(schema, preprocess)
    x = prepare_uint8(load_image(path), resolution, **kwargs)
    return to_anatomical(x).contiguous() if kwargs["rotate"] else x


class RealImages(Dataset):
    """The real images of ``frame`` as uint8 [3, R, R] in the anatomical frame, decoded per item."""

    def __init__(self, frame: pd.DataFrame, schema: Schema, resolution: int, preprocess: str = "ours"):
        self.paths = frame["image_path"].astype(str).tolist()
        self.schema, self.resolution, self.preprocess = schema, int(resolution), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return real_pixels(self.paths[index], self.schema, self.resolution, self.preprocess)


class GeneratedImages(Dataset):
    """The generated images of a sampling manifest (``path`` column) as uint8 [3, H, W], decoded per item."""

    def __init__(self, manifest: pd.DataFrame):
        self.paths = manifest["path"].astype(str).tolist()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as im:
            return torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()


def real_uint8(frame: pd.DataFrame, schema: Schema, resolution: int, preprocess: str = "ours") -> np.ndarray:
    """uint8 [N, R, R, 3] real images in the anatomical frame, all in memory (figures, small sets)."""
    ds = RealImages(frame, schema, resolution, preprocess)
    out = [ds[i].permute(1, 2, 0).numpy() for i in range(len(ds))]
    return np.stack(out) if out else np.zeros((0, resolution, resolution, 3), np.uint8)


def generated_uint8(manifest: pd.DataFrame) -> np.ndarray:
    """uint8 [N, R, R, 3] generated images listed in a sampling manifest (``path`` column), all in memory."""
    ds = GeneratedImages(manifest)
    return np.stack([ds[i].permute(1, 2, 0).numpy() for i in range(len(ds))])


def to_unit_tensor(images) -> torch.Tensor:
    """float32 [N, 3, H, W] in [0, 1] from uint8 [N, H, W, 3] (an array or :class:`NpyRows`), all in
    memory. The evaluation functions take the uint8 images directly and convert per batch; this
    is for small sets and old call styles."""
    return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float().div(255.0)


def cached_real(frame: pd.DataFrame, schema: Schema, resolution: int, cache_dir: str | Path, num_workers: int = 0,
                batch_size: int = 64, preprocess: str = "ours") -> NpyRows:
    """Real images of ``frame``, decoded once per (ids, resolution, preprocessing) into
    ``real-<key>.npy`` (uint8 [N, R, R, 3], anatomical frame) and returned as a reader of its rows.

    The file is built in batches (``num_workers`` DataLoader workers decode) under a temporary
    name and renamed when complete; the reader fetches only the rows asked for, so neither step
    holds the set in memory. ``np.asarray(result)`` loads it whole."""
    path = Path(cache_dir) / f"real-{digest(list(frame['id'].astype(str)), resolution, preprocess)}.npy"
    return _decoded_once(RealImages(frame, schema, resolution, preprocess), path, num_workers, batch_size,
                         size=(resolution, resolution))


def cached_generated(manifest: pd.DataFrame, key: str, cache_dir: str | Path, num_workers: int = 0,
                     batch_size: int = 64) -> NpyRows:
    """The generated images of a sampling manifest, decoded once into ``generated-<key>.npy`` (uint8
    [N, H, W, 3]) and returned as a reader of its rows, as :func:`cached_real` does for real images.

    ``key`` names the image set (the sampling stage's key: it changes whenever the images are drawn
    anew). Classifiers read their training images every epoch, several classifiers per set, and the
    feature extractor reads the set again: decoding each PNG once instead of every time made the
    mini evaluation notebook about a fifth faster. The rows equal :class:`GeneratedImages`' items."""
    return _decoded_once(GeneratedImages(manifest), Path(cache_dir) / f"generated-{key}.npy", num_workers, batch_size)


def _decoded_once(images: Dataset, path: Path, num_workers: int, batch_size: int,
                  size: tuple[int, int] | None = None) -> NpyRows:
    """``images`` (items uint8 [3, H, W] of one ``size``; None: the first item's) written to ``path``
    as uint8 [N, H, W, 3] unless it is there already; built in batches under a temporary name,
    renamed when complete."""
    if not path.is_file():
        height, width = size if size is not None else tuple(images[0].shape[1:]) if len(images) else (0, 0)
        with io.atomic_path(path) as tmp:
            arrays.create(tmp, (len(images), height, width, 3), np.uint8)
            start = 0
            for batch in DataLoader(images, batch_size=batch_size, num_workers=num_workers):
                arrays.write_rows(tmp, start, batch.permute(0, 2, 3, 1))
                start += len(batch)
    return NpyRows(path)
