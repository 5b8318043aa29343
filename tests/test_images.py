"""Preprocessing: min-max stretch, clockwise rotation without expanding, resize, crop, range."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fairdiff.data.images import (center_crop, load_image, minmax_stretch, pipeline_kwargs, prepare_uint8, preprocess,
                                  resize_short_side, rotate_clockwise, squash, to_anatomical, to_uint8)
from fairdiff.schema import CHEXPERT, FAIRGENMED, HAM10000


def gray_ramp(width: int, height: int) -> np.ndarray:
    """Distinct values 0..255 row by row, so the stretch is the identity and every pixel is findable."""
    values = np.linspace(0, 255, width * height).round().astype(np.uint8)
    return values.reshape(height, width)


def rgb(array2d: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(array2d[:, :, None], 3, axis=2))


def test_minmax_stretch_known_values():
    got = minmax_stretch(np.array([[10, 20], [30, 50]], dtype=np.uint8))
    # (x - 10) / 40 * 255 truncated: 0, 63.75, 127.5, 255
    np.testing.assert_array_equal(got, np.array([[0, 63], [127, 255]], dtype=np.uint8))
    assert got.dtype == np.uint8


def test_minmax_stretch_uses_one_range_for_all_channels():
    pixels = np.zeros((1, 2, 3), dtype=np.uint8)
    pixels[0, 0] = (100, 150, 200)
    pixels[0, 1] = (100, 100, 100)
    got = minmax_stretch(pixels)
    # global min 100, max 200: the green 150 lands in the middle, not at 255 as a per-channel stretch would put it
    np.testing.assert_array_equal(got[0, 0], [0, 127, 255])
    np.testing.assert_array_equal(got[0, 1], [0, 0, 0])


def test_minmax_stretch_table_for_uint8_equals_the_float_formula():
    pixels = np.random.default_rng(2).integers(17, 233, size=(40, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(minmax_stretch(pixels), minmax_stretch(pixels.astype(np.float64)))


def test_minmax_stretch_of_negative_floats():
    got = minmax_stretch(np.array([-2.0, 0.0, 2.0]))
    np.testing.assert_array_equal(got, [0, 127, 255])


def test_constant_image_becomes_zeros_then_minus_one_without_warnings():
    img = Image.new("RGB", (7, 5), (90, 90, 90))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(minmax_stretch(np.asarray(img)), np.zeros((5, 7, 3), np.uint8))
        x = preprocess(img, 4)
    assert torch.equal(x, torch.full((3, 4, 4), -1.0))


def test_rotation_is_clockwise_on_a_marked_corner():
    pixels = np.zeros((6, 6, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)  # red top-left corner
    pixels[5, 5] = (0, 0, 255)  # blue bottom-right, so the stretch keeps values
    x = preprocess(Image.fromarray(pixels), 6, rotate=True)
    # clockwise: top-left goes to top-right, bottom-right to bottom-left
    assert x[:, 0, 5].tolist() == [1.0, -1.0, -1.0]
    assert x[:, 5, 0].tolist() == [-1.0, -1.0, 1.0]
    assert (x[:, 0, 0] == -1).all()


@pytest.mark.parametrize("width,height", [(6, 10), (10, 6)])
def test_rotation_keeps_the_canvas_and_turns_the_central_square(width, height):
    a = gray_ramp(width, height) // 2 + 1  # no zeros inside, so the black bands are recognisable
    short, pad = min(width, height), abs(width - height) // 2
    got = np.asarray(rotate_clockwise(Image.fromarray(a)))
    assert got.shape == (height, width)  # canvas not expanded
    expected = np.zeros_like(a)
    if height > width:  # portrait: rows pad..pad+short hold the rotated central square, the rest is black
        expected[pad:pad + short, :] = np.rot90(a[pad:pad + short, :], k=-1)
    else:  # landscape: the same along columns
        expected[:, pad:pad + short] = np.rot90(a[:, pad:pad + short], k=-1)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("width,height", [(8, 12), (12, 8), (8, 8)])
def test_preprocess_at_native_short_side_is_the_rotated_central_square(width, height):
    a = gray_ramp(width, height)  # spans 0..255: the stretch is the identity
    short = min(width, height)
    top, left = (height - short) // 2, (width - short) // 2
    square = a[top:top + short, left:left + short]
    x = preprocess(rgb(a), short, rotate=True)
    expected = torch.from_numpy(np.rot90(square, k=-1).astype(np.float32) / 127.5 - 1.0)
    assert torch.equal(x, expected.expand(3, -1, -1))


def test_rotate_then_to_anatomical_is_identity_on_squares():
    a = gray_ramp(9, 9)
    rotated = preprocess(rgb(a), 9, rotate=True)
    plain = preprocess(rgb(a), 9, rotate=False)
    assert not torch.equal(rotated, plain)
    assert torch.equal(to_anatomical(rotated), plain)
    batch = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_anatomical(torch.rot90(batch, k=-1, dims=(-2, -1))), batch)
    img = rgb(a)
    assert np.array_equal(np.asarray(to_anatomical(rotate_clockwise(img))), np.asarray(img))


def test_to_anatomical_rejects_vectors():
    with pytest.raises(ValueError, match="H, W"):
        to_anatomical(torch.zeros(4))


def test_output_shape_dtype_and_range():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(30, 200, size=(37, 29, 3), dtype=np.uint8))
    x = preprocess(img, 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.max() > 0.5 and x.min() < -0.5  # stretched, not left at 30..200


def test_resize_truncates_the_long_side_and_crop_rounds_like_python():
    img = Image.new("RGB", (3, 10))
    assert resize_short_side(img, 2).size == (2, 6)  # int(2 * 10 / 3) = 6
    assert resize_short_side(Image.new("RGB", (10, 3)), 2).size == (6, 2)
    a = np.arange(9, dtype=np.uint8)[None, :].repeat(4, axis=0)
    # (9 - 4) / 2 = 2.5 rounds to 2 (half to even), so columns 2..5
    assert np.asarray(center_crop(Image.fromarray(a), 4))[0].tolist() == [2, 3, 4, 5]
    b = np.arange(7, dtype=np.uint8)[None, :].repeat(4, axis=0)
    # (7 - 4) / 2 = 1.5 rounds to 2
    assert np.asarray(center_crop(Image.fromarray(b), 4))[0].tolist() == [2, 3, 4, 5]


def test_grayscale_file_loads_as_rgb(tmp_path):
    path = tmp_path / "g.png"
    Image.fromarray(gray_ramp(5, 4)).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (5, 4)
    pixels = np.asarray(img)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_to_uint8_inverts_the_scaling():
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8))
    u8 = prepare_uint8(img, 8)
    shown = to_uint8(preprocess(img, 8))
    assert shown.shape == (8, 8, 3) and shown.dtype == np.uint8
    np.testing.assert_array_equal(shown, u8.permute(1, 2, 0).numpy())
    assert to_uint8(torch.stack([preprocess(img, 8)] * 2)).shape == (2, 8, 8, 3)
    assert to_uint8(torch.full((3, 2, 2), 3.0)).max() == 255  # out-of-range values are clipped


def test_preprocess_rejects_bad_resolution():
    with pytest.raises(ValueError, match="resolution"):
        preprocess(Image.new("RGB", (4, 4)), 0)


# ----------------------------------------------------------------------------- the authors' HAM10000 / CheXpert pipeline
def test_squash_matches_skimage_resize_known_values():
    """Expected values recorded from skimage.transform.resize (scikit-image 0.26.0, scipy 1.17.1) followed by
    (out * 255).astype(np.uint8), the authors' code; our scipy version gave the same bytes on 24 test images."""
    i, j, c = np.mgrid[0:5, 0:7, 0:3]
    shrunk = squash(Image.fromarray(((i * 37 + j * 11 + c * 80) % 256).astype(np.uint8)), 3)  # blurred, then resampled
    np.testing.assert_array_equal(np.asarray(shrunk), [
        [[21, 101, 181], [45, 125, 204], [69, 149, 200]],
        [[82, 162, 205], [107, 186, 15], [131, 210, 36]],
        [[144, 223, 48], [168, 113, 72], [192, 75, 96]]])
    grown = squash(rgb(np.array([[0, 60], [120, 180]], dtype=np.uint8)), 3)  # no blur when enlarging
    np.testing.assert_array_equal(np.asarray(grown)[..., 0], [[30, 50, 70], [70, 89, 110], [110, 130, 150]])


def test_squash_ignores_the_aspect_ratio_and_keeps_flat_images_flat():
    img = Image.new("RGB", (600, 450), (200, 100, 50))  # a HAM10000-sized photo
    out = squash(img)
    assert out.size == (200, 200) and out.mode == "RGB"
    assert np.array_equal(np.unique(np.asarray(out).reshape(-1, 3), axis=0), [[200, 100, 50]])
    already = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(squash(already)), np.asarray(already))  # the authors skip it at height 200


def test_authors_pipeline_is_squash_then_ours_rotated():
    rng = np.random.default_rng(4)
    img = Image.fromarray(rng.integers(0, 256, size=(45, 60, 3), dtype=np.uint8))  # W 60 x H 45, like HAM's 600 x 450
    theirs = prepare_uint8(img, 16, rotate=True, preprocess="authors")
    assert theirs.shape == (3, 16, 16) and theirs.dtype == torch.uint8
    assert torch.equal(theirs, prepare_uint8(squash(img), 16, rotate=True))
    assert not torch.equal(theirs, prepare_uint8(img, 16, rotate=True))  # ours keeps the central square instead
    assert torch.equal(preprocess(img, 16, True, "authors"), theirs.float() / 127.5 - 1)


def test_pipeline_kwargs_per_dataset():
    assert pipeline_kwargs(HAM10000) == {"rotate": False, "preprocess": "ours"}
    assert pipeline_kwargs(HAM10000, "authors") == {"rotate": True, "preprocess": "authors"}
    assert pipeline_kwargs(CHEXPERT, "authors") == {"rotate": True, "preprocess": "authors"}
    # the authors' FairGenMed pipeline is ours: rotated, not squashed
    assert pipeline_kwargs(FAIRGENMED, "authors") == pipeline_kwargs(FAIRGENMED) == {"rotate": True, "preprocess": "ours"}
    assert pipeline_kwargs(HAM10000, "authors", rotate=False)["rotate"] is False


@pytest.mark.parametrize("call", [
    lambda: prepare_uint8(Image.new("RGB", (4, 4)), 4, preprocess="theirs"),
    lambda: pipeline_kwargs(HAM10000, "Authors"),
])
def test_unknown_preprocess_names_the_allowed_values(call):
    with pytest.raises(ValueError, match=r"\['ours', 'authors'\]"):
        call()


def test_dataset_applies_the_chosen_pipeline(tmp_path):
    import pandas as pd

    from fairdiff.data.dataset import ImageRecordDataset
    path = tmp_path / "ISIC_0000001.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (45, 60, 3), dtype=np.uint8)).save(path)
    frame = pd.DataFrame({"id": ["ISIC_0000001"], "split": ["train"], "image_path": [str(path)], "prompt": ["p"],
                          "sex": [0], "age": [1], "malignant": [0]})
    theirs = ImageRecordDataset(frame, HAM10000, 8, preprocess="authors")[0]["pixel_values"]
    assert torch.equal(theirs, preprocess(squash(load_image(path)), 8, rotate=True))
    ours = ImageRecordDataset(frame, HAM10000, 8)[0]["pixel_values"]
    assert torch.equal(ours, preprocess(load_image(path), 8, rotate=False))
    with pytest.raises(ValueError, match="preprocess"):
        ImageRecordDataset(frame, HAM10000, 8, preprocess="paper")
