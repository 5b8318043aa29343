"""Real and generated image sets in one frame and format, for plotting and evaluation.

Real images go through the training preprocessing (paper: stretch, rotate, resize, crop) and are
then rotated back; generated images are saved already rotated back (:mod:`fairdiff.sample`). Both
therefore sit in the stored (anatomical) frame at the training resolution, as the authors' evaluation
compares them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fairdiff.data.images import load_image, prepare_uint8, to_anatomical
from fairdiff.schema import Schema


def real_uint8(frame: pd.DataFrame, schema: Schema, resolution: int) -> np.ndarray:
    """uint8 [N, R, R, 3] real images in the anatomical frame."""
    out = []
    for path in frame["image_path"]:
        x = prepare_uint8(load_image(path), resolution, rotate=schema.rotate)
        if schema.rotate:
            x = to_anatomical(x)
        out.append(x.permute(1, 2, 0).numpy())
    return np.stack(out) if out else np.zeros((0, resolution, resolution, 3), np.uint8)


def generated_uint8(manifest: pd.DataFrame) -> np.ndarray:
    """uint8 [N, R, R, 3] generated images listed in a sampling manifest (``path`` column)."""
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in manifest["path"]])


def to_unit_tensor(images: np.ndarray) -> torch.Tensor:
    """float32 [N, 3, H, W] in [0, 1]: the format the feature extractors take."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)


def cached_real(frame: pd.DataFrame, schema: Schema, resolution: int, cache_dir: str | Path) -> np.ndarray:
    """Real images of ``frame``, decoded once per (ids, resolution) and kept as a .npy file."""
    import hashlib

    from fairdiff import io

    key = hashlib.sha256(("|".join(frame["id"].astype(str)) + f"@{resolution}").encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"real-{key}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    images = real_uint8(frame, schema, resolution)
    with io.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, images, allow_pickle=False)
    return images
