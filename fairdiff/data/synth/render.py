"""Helpers shared by the procedural HAM10000 and CheXpert generators.

Speed comes from one split: smooth fields (skin, lesion colour, lungs, ribs) are painted with
numpy at a reduced resolution and upsampled by PIL, while thin structures (hair, vessels, tubes,
dots) are drawn at full resolution with ``PIL.ImageDraw``, which costs almost nothing. Film or
sensor grain comes from one cached noise tile cropped at a random offset, so no image pays for
a full-resolution random draw.

The second half holds the output-folder policy both generators share: never overwrite a folder
the generator did not make, and record every parameter next to the data."""
from __future__ import annotations

import json
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageChops

from fairdiff.errors import DataError

PARAMS_FILE = "synth_params.json"


# ----------------------------------------------------------------------------- drawing helpers
@lru_cache(maxsize=16)
def coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, origin at the image centre, the shorter side spanning [-1, 1].

    Cached and read-only: every image of a run reuses the same two arrays."""
    s = min(h, w) / 2.0
    x = ((np.arange(w, dtype=np.float32) + 0.5) - w / 2.0) / s
    y = ((np.arange(h, dtype=np.float32) + 0.5) - h / 2.0) / s
    xx, yy = np.meshgrid(x, y)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def to_pixels(x: float, y: float, size: tuple[int, int]) -> tuple[float, float]:
    """Map a point from :func:`coords` units to pixel coordinates of an image of ``size`` (w, h)."""
    w, h = size
    s = min(w, h) / 2.0
    return x * s + w / 2.0, y * s + h / 2.0


def soft(signed: np.ndarray, width: float) -> np.ndarray:
    """A soft inside-mask from a signed distance (positive inside): 0..1 across ``width``."""
    return np.clip(signed / width + 0.5, 0.0, 1.0)


def wave_params(rng: np.random.Generator, terms: int = 5, freq: float | Sequence[float] = 3.0) -> np.ndarray:
    """Draw the plane waves of :func:`fourier_noise` fields: rows of (kx, ky, phase).

    One field for a scalar ``freq`` (shape (terms, 3)); one per entry of a sequence (shape
    (len(freq), terms, 3)), drawn in one go because per-field draws cost more than the fields."""
    freqs = np.atleast_1d(np.asarray(freq, dtype=float))[:, None]
    shape = (freqs.shape[0], terms)
    angle = rng.uniform(0, np.pi, shape)
    k = freqs * rng.uniform(0.5, 1.5, shape)
    waves = np.stack([k * np.cos(angle), k * np.sin(angle), rng.uniform(0, 2 * np.pi, shape)], axis=-1)
    return waves[0] if np.ndim(freq) == 0 else waves


def fourier_noise(waves: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth random field (about zero mean, unit variance) evaluated at arbitrary coordinates.

    A sum of random plane waves (:func:`wave_params`): because it is a function of (u, v), the
    same draw rendered in rotated or zoomed coordinates gives the same pattern moved, which is
    how several photographs of one lesion stay consistent."""
    out = np.zeros(u.shape, dtype=np.float32)
    for kx, ky, phase in waves.tolist():  # Python floats keep the arithmetic in float32
        out += np.cos(u * kx + v * ky + phase)
    return out * np.float32(np.sqrt(2.0 / len(waves)))


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int = 4) -> np.ndarray:
    """A low-frequency random field of shape (h, w): a coarse normal grid upsampled bilinearly."""
    ch, cw = max(2, round(cells * h / min(h, w))), max(2, round(cells * w / min(h, w)))
    return upsample_field(rng.standard_normal((ch, cw)).astype(np.float32), h, w)


@lru_cache(maxsize=32)
def _lerp_plan(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of 1-D linear interpolation from n_in to n_out samples
    (pixel centres aligned, edges clamped)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def upsample_field(arr: np.ndarray, h: int, w: int, window: tuple[slice, slice] | None = None) -> np.ndarray:
    """Bilinear upsampling of a coarse float field (H, W) or (H, W, C) to (h, w[, C]).

    ``window`` (row and column slices of the (h, w) result) computes only that part. Gathers
    and blends along each axis: no BLAS call (tiny matrix products spawn threads that fight over
    a busy machine) and no PIL round trip."""
    rows, cols = window or (slice(None), slice(None))
    lo, hi, f = (a[rows] for a in _lerp_plan(h, arr.shape[0]))
    f = f.reshape((-1,) + (1,) * (arr.ndim - 1))
    arr = arr.astype(np.float32, copy=False)
    arr = arr[lo] * (1 - f) + arr[hi] * f
    lo, hi, f = (a[cols] for a in _lerp_plan(w, arr.shape[1]))
    f = f.reshape((1, -1) + (1,) * (arr.ndim - 2))
    return arr[:, lo] * (1 - f) + arr[:, hi] * f


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] to uint8 (clipped)."""
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@lru_cache(maxsize=4)
def _noise_tile(h: int, w: int) -> np.ndarray:
    # Fixed seed: a constant of the code; images take windows of it at their own random offsets.
    tile = np.random.default_rng(20250102).uniform(-0.5, 0.5, (h, 2 * w, 1)).astype(np.float32) * np.float32(12**0.5)
    tile.setflags(write=False)
    return tile


def pixel_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Unit-variance pixel noise (h, w, 1): a random window of a cached tile (drawing fresh noise
    for every image costs more than painting it)."""
    offset = int(rng.integers(w))
    return _noise_tile(h, w)[:, offset:offset + w]


def upsample(arr: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Float image in [0, 1], (h, w) or (h, w, 3), to a PIL image of ``size`` (w, h).

    Bilinear to half of ``size``, then pixel doubling: on a smooth field the 2 x 2 steps are
    invisible (and sharp details are drawn afterwards at full size), while a full-size bilinear
    resize would cost as much as everything else in an image."""
    img = Image.fromarray(to_uint8(arr))
    w, h = size
    half = (w // 2, h // 2)
    if img.size == size:
        return img
    if 2 * half[0] != w or 2 * half[1] != h or img.width > half[0] or img.height > half[1]:
        return img.resize(size, Image.BILINEAR)
    return img.resize(half, Image.BILINEAR).resize(size, Image.NEAREST)


GRAIN_VARIANTS = 8


@lru_cache(maxsize=4)
def _grain_images(size: tuple[int, int], sigma: float, mode: str) -> tuple[Image.Image, ...]:
    # A few fixed grain images (fixed seed: a constant of the code), centred on 128; each image
    # picks one with its own rng. Cropping or drawing fresh noise per image would cost more than
    # the rest of the rendering.
    rng = np.random.default_rng(20250101)
    out = []
    for _ in range(GRAIN_VARIANTS):
        noise = np.clip(128 + rng.standard_normal((size[1], size[0])) * sigma, 0, 255).astype(np.uint8)
        tile = Image.fromarray(noise, mode="L")
        out.append(tile if mode == "L" else Image.merge(mode, [tile] * len(mode)))
    return tuple(out)


def add_grain(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    """Add luminance grain of standard deviation ``sigma`` (0..255 units), same on every channel."""
    if sigma <= 0:
        return img
    grain = _grain_images(img.size, float(sigma), img.mode)[int(rng.integers(GRAIN_VARIANTS))]
    return ImageChops.add(img, grain, scale=1.0, offset=-128)


def bezier(p0, p1, p2, steps: int = 12) -> list[tuple[float, float]]:
    """Points of the quadratic Bezier curve p0 -> p2 pulled towards p1 (for hairs, tubes, wires).

    Plain Python: for a dozen points it is several times faster than numpy."""
    (x0, y0), (x1, y1), (x2, y2) = p0, p1, p2
    out = []
    for k in range(steps):
        t = k / (steps - 1)
        a, b, c = (1 - t) * (1 - t), 2 * (1 - t) * t, t * t
        out.append((a * x0 + b * x1 + c * x2, a * y0 + b * y1 + c * y2))
    return out


def rgb255(colour) -> tuple[int, int, int]:
    """A float RGB colour in [0, 1] as the int triple ImageDraw wants."""
    return tuple(int(np.clip(c, 0, 1) * 255 + 0.5) for c in colour)


# ----------------------------------------------------------------------- output-folder policy
def check_output_dir(out: str | Path, generator: str, overwrite: bool) -> Path:
    """Refuse to replace a folder this generator did not make, or any folder without ``overwrite``.

    A missing or empty folder is fine. A non-empty one must hold ``synth_params.json`` naming
    ``generator`` and the caller must pass ``overwrite=True``: a typo in ``out`` must never
    delete somebody's real dataset."""
    out = Path(out)
    if not out.exists():
        return out
    if not out.is_dir():
        raise DataError(out, None, "a folder to write the synthetic dataset into", "an existing file")
    if not any(out.iterdir()):
        return out
    made_by = None
    try:
        made_by = json.loads((out / PARAMS_FILE).read_text()).get("generator")
    except (OSError, ValueError, AttributeError):
        pass
    if made_by != generator:
        raise DataError(out, PARAMS_FILE, f"an empty or missing folder, or one made by {generator} "
                                          "(choose another folder)", f"a non-empty folder not made by {generator}")
    if not overwrite:
        raise DataError(out, PARAMS_FILE, "overwrite=True to replace a synthetic dataset made earlier",
                        f"an existing dataset made by {generator}")
    return out


def params_json(generator: str, version: int, seed: int, n: int, params) -> str:
    """Everything needed to regenerate a dataset, as stable JSON (sorted keys)."""
    record = {"generator": generator, "version": version, "seed": seed, "n": n, "params": asdict(params)}
    return json.dumps(record, indent=2, sort_keys=True) + "\n"
