"""Image preprocessing for diffusion training, in the order the authors' FairGenMed code uses.

    load (RGB) -> min-max stretch to 0..255 -> rotate 90 deg clockwise, canvas kept
    -> resize short side to R (bilinear) -> centre crop R x R -> scale to [-1, 1]

The reference pipeline is torchvision on PIL images; torchvision is not installed here, so each
step calls the same PIL operation torchvision calls, and the results match it exactly:

- ``rotate(img, -90)`` in torchvision is ``PIL.Image.rotate(-90, NEAREST, expand=False,
  fillcolor=0)``: the image turns about its centre on an unchanged W x H canvas. For a
  non-square image the rotated picture is H wide and W high, so it is clipped along one axis
  and leaves black bands along the other. Example, a 512 x 664 (W x H) SLO photo: the output
  is still 512 x 664; rows 76..587 hold the central 512 x 512 square of the photo turned
  clockwise, the 76 rows above and below are black. The resize and the centre crop that follow
  then keep exactly that rotated central square at R = 512 (the paper's setting). At a smaller
  R the downscaling filter reaches into the black bands, so an edge row comes out darker
  (measured on a flat 512 x 664 photo: R = 256, first and last rows at 88 %; R = 64, last row
  at 50 %; R = 32, first row at 33 %). That is what the paper's order gives; it is kept.
- ``Resize(R)`` sets the short side to R and the long side to ``int(R * long / short)``.
- ``CenterCrop(R)`` starts at ``round((size - R) / 2)`` (Python rounding).

Every step before the last works on uint8 pixels, so :func:`prepare_uint8` is the whole
pipeline in 8 bits and :func:`preprocess` only adds the scaling; a cache can store the uint8
result (4x smaller) and reproduce the float tensor bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as an RGB PIL image (grayscale files get three equal channels)."""
    with Image.open(path) as im:
        return im.convert("RGB")


def minmax_stretch(pixels: np.ndarray) -> np.ndarray:
    """Stretch an image's values to 0..255 with one global min and max over all channels.

    Truncates to uint8 as ``astype(np.uint8)`` does in the reference. A constant image has no
    range to stretch and becomes all zeros (the reference divides by zero there)."""
    values = np.asarray(pixels)
    lo, hi = values.min(), values.max()
    if hi == lo:
        return np.zeros(values.shape, dtype=np.uint8)
    if values.dtype == np.uint8:  # same formula through a 256-entry table: 4x faster on a 512 x 664 photo
        lo, hi = int(lo), int(hi)
        table = np.zeros(256, dtype=np.uint8)
        table[lo:hi + 1] = _stretch(np.arange(lo, hi + 1, dtype=np.float64), lo, hi)
        return table[values]
    return _stretch(values.astype(np.float64), float(lo), float(hi))


def _stretch(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return ((values - lo) / (hi - lo) * 255.0).astype(np.uint8)


def rotate_clockwise(img: Image.Image) -> Image.Image:
    """Rotate 90 degrees clockwise about the centre without expanding the canvas (see module doc)."""
    return img.rotate(-90, resample=Image.Resampling.NEAREST, expand=False, fillcolor=0)


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """Bilinear resize so the short side is ``size``; the long side is truncated like torchvision."""
    w, h = img.size
    if min(w, h) == size:
        return img
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return img.resize(new, Image.Resampling.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Crop the central ``size`` x ``size`` square (offsets rounded as torchvision does)."""
    w, h = img.size
    if w < size or h < size:
        raise ValueError(f"cannot centre-crop {size}x{size} from an image of {w}x{h}")
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def prepare_uint8(img: Image.Image, resolution: int, rotate: bool = True) -> torch.Tensor:
    """The paper's preprocessing up to, not including, the scaling: uint8 tensor [3, R, R]."""
    if resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels; got {resolution}")
    stretched = Image.fromarray(minmax_stretch(np.asarray(img.convert("RGB"))))
    if rotate:
        stretched = rotate_clockwise(stretched)
    square = center_crop(resize_short_side(stretched, resolution), resolution)
    return torch.from_numpy(np.array(square, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def uint8_to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to floats in [-1, 1] (the model's input range)."""
    return pixels.to(torch.float32).div(127.5).sub(1.0)


def preprocess(img: Image.Image, resolution: int, rotate: bool = True) -> torch.Tensor:
    """The paper's preprocessing: a float tensor [3, R, R] in [-1, 1] (see module doc)."""
    return uint8_to_unit(prepare_uint8(img, resolution, rotate))


def to_anatomical(x: torch.Tensor | Image.Image) -> torch.Tensor | Image.Image:
    """Undo the training rotation: turn 90 degrees counter-clockwise.

    This takes an image from the frame the model is trained and samples in back to the frame of
    the image files on disk; the paper rotates generated images this way before comparing them
    with real ones. Tensors are rotated over their last two axes ([..., H, W]); PIL images are
    transposed, which swaps width and height of a non-square image instead of clipping it
    (generated and preprocessed images are square, where both agree)."""
    if isinstance(x, Image.Image):
        return x.transpose(Image.Transpose.ROTATE_90)
    if x.ndim < 2:
        raise ValueError(f"expected a tensor [..., H, W]; got shape {tuple(x.shape)}")
    return torch.rot90(x, k=1, dims=(-2, -1))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """A [-1, 1] tensor [..., 3, H, W] as uint8 pixels [..., H, W, 3], for display or saving."""
    if x.ndim < 3:
        raise ValueError(f"expected a tensor [..., C, H, W]; got shape {tuple(x.shape)}")
    pixels = ((x.detach().to(torch.float32).cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return pixels.to(torch.uint8).movedim(-3, -1).numpy()
