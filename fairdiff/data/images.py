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

Two pipelines, chosen by ``preprocess`` (docs/method.md, section 4.2):

- ``"ours"`` (the default): the steps above. FairGenMed is rotated, HAM10000 and CheXpert are not
  (``Schema.rotate``).
- ``"authors"``: what the authors' HAM10000 and CheXpert code does. Before the steps above it
  squashes the photo to 200 x 200 (aspect ratio not kept) with ``skimage.transform.resize``'s
  defaults: pixels as floats in [0, 1], a Gaussian blur of sigma (factor - 1) / 2 along each
  shrunk axis, bilinear resampling (``scipy.ndimage.zoom``, grid mode, mirrored edges), clipped to
  the input's range, then times 255 and cast to uint8 (truncation); and every dataset is rotated.
  :func:`squash` does this with scipy, the library skimage calls. Not reproduced: the lossy JPEG
  copies the authors wrote of the 200 px images (CheXpert through PIL at quality 75; HAM10000
  through OpenCV at quality 95, which also rounds instead of truncating and swaps the red and
  blue channels, a bug). For FairGenMed the authors' pipeline is ours, so ``"authors"`` changes
  nothing there. :func:`pipeline_kwargs` says, per dataset, which arguments of
  :func:`prepare_uint8` a choice means.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

PREPROCESS = ("ours", "authors")
AUTHORS_SQUASH = 200  # px: the authors' HAM10000 / CheXpert copies are 200 x 200
AUTHORS_SQUASHED = frozenset({"ham10000", "chexpert"})  # datasets whose authors' pipeline squashes


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


def check_preprocess(preprocess: str) -> str:
    """``preprocess`` itself, or a ValueError naming the allowed values."""
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {list(PREPROCESS)}; got {preprocess!r}")
    return preprocess


def pipeline_kwargs(schema, preprocess: str = "ours", rotate: bool | None = None) -> dict:
    """The ``rotate`` and ``preprocess`` arguments of :func:`prepare_uint8` that ``preprocess``
    means for the dataset of ``schema``: ``"ours"`` rotates as ``schema.rotate`` says; the
    authors rotated every dataset and squashed only HAM10000 and CheXpert (module docstring).
    An explicit ``rotate`` wins."""
    check_preprocess(preprocess)
    authors = preprocess == "authors"
    return {"rotate": (authors or schema.rotate) if rotate is None else bool(rotate),
            "preprocess": "authors" if authors and schema.name in AUTHORS_SQUASHED else "ours"}


def squash(img: Image.Image, size: int = AUTHORS_SQUASH) -> Image.Image:
    """Resize to ``size`` x ``size`` as ``skimage.transform.resize(img, (size, size))`` then
    ``(out * 255).astype(np.uint8)`` do (the authors' HAM10000 / CheXpert step; module docstring).

    The anti-aliasing blur and the resampling are the scipy.ndimage calls skimage makes, with its
    defaults, so the result matches skimage's without depending on it. Like the authors' code,
    which resizes only when the height differs from ``size``, an image already ``size`` high is
    returned unchanged (as RGB)."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels; got {size}")
    if img.height == size:
        return img.convert("RGB")
    source = np.multiply(np.asarray(img.convert("RGB")), 1.0 / 255, dtype=np.float64)  # as skimage's img_as_float
    factors = np.array([source.shape[0] / size, source.shape[1] / size, 1.0])
    blurred = source
    if (factors > 1).any():  # skimage blurs only when some axis shrinks, and only along those
        blurred = ndimage.gaussian_filter(source, np.maximum(0.0, (factors - 1) / 2), mode="mirror")
    out = ndimage.zoom(blurred, 1 / factors, order=1, mode="mirror", grid_mode=True)
    np.clip(out, source.min(), source.max(), out=out)
    return Image.fromarray((out * 255).astype(np.uint8))


def prepare_uint8(img: Image.Image, resolution: int, rotate: bool = True, preprocess: str = "ours") -> torch.Tensor:
    """The paper's preprocessing up to, not including, the scaling: uint8 tensor [3, R, R].

    ``preprocess="authors"`` first squashes the photo to 200 x 200 (:func:`squash`); which
    datasets that applies to, and their rotation, is :func:`pipeline_kwargs`'s business."""
    if resolution < 1:
        raise ValueError(f"resolution must be a positive number of pixels; got {resolution}")
    if check_preprocess(preprocess) == "authors":
        img = squash(img)
    stretched = Image.fromarray(minmax_stretch(np.asarray(img.convert("RGB"))))
    if rotate:
        stretched = rotate_clockwise(stretched)
    square = center_crop(resize_short_side(stretched, resolution), resolution)
    return torch.from_numpy(np.array(square, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def uint8_to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to floats in [-1, 1] (the model's input range)."""
    return pixels.to(torch.float32).div(127.5).sub(1.0)


def preprocess(img: Image.Image, resolution: int, rotate: bool = True, preprocess: str = "ours") -> torch.Tensor:
    """The paper's preprocessing: a float tensor [3, R, R] in [-1, 1] (see module doc)."""
    return uint8_to_unit(prepare_uint8(img, resolution, rotate, preprocess))


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
