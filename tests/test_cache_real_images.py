"""Evaluation image sets stream: real and generated images are decoded once into a uint8 file built
in batches and read by rows (or decoded per batch), and features of either equal those of
the whole set held in memory."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairdiff.arrays import NpyRows
from fairdiff.data import load_dataset
from fairdiff.evaluate.features import DomainEncoder, extract
from fairdiff.imagesets import (GeneratedImages, RealImages, cached_generated, cached_real, generated_uint8, real_uint8,
                                to_unit_tensor)
from fairdiff.schema import FAIRGENMED

pytestmark = pytest.mark.usefixtures("one_thread")
RES = 24


@pytest.fixture(scope="module")
def test_split(synthetic_fairgenmed) -> pd.DataFrame:
    records = load_dataset("fairgenmed", synthetic_fairgenmed)
    return records[records["split"] != "train"].reset_index(drop=True)


def test_cached_real_is_built_in_batches_and_equals_the_decoded_set(test_split, tmp_path):
    whole = real_uint8(test_split, FAIRGENMED, RES)
    rows = cached_real(test_split, FAIRGENMED, RES, tmp_path, num_workers=1, batch_size=4)
    assert isinstance(rows, NpyRows) and rows.shape == whole.shape and len(whole) > 8
    np.testing.assert_array_equal(np.asarray(rows), whole)
    np.testing.assert_array_equal(rows[[7, 1, 2]], whole[[7, 1, 2]])
    np.testing.assert_array_equal(np.load(rows.path), whole)  # a plain .npy file
    built = rows.path.stat().st_mtime_ns
    again = cached_real(test_split, FAIRGENMED, RES, tmp_path)
    assert again.path == rows.path and again.path.stat().st_mtime_ns == built  # reused, not rebuilt
    assert torch.equal(RealImages(test_split, FAIRGENMED, RES)[3], torch.from_numpy(whole[3]).permute(2, 0, 1))


def test_generated_images_are_read_per_item_as_the_whole_set(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (RES, RES, 3), dtype=np.uint8)).save(paths[-1])
    manifest = pd.DataFrame({"id": range(5), "path": [str(p) for p in paths]})
    whole, items = generated_uint8(manifest), GeneratedImages(manifest)
    assert len(items) == 5 and items[2].dtype == torch.uint8
    assert all(torch.equal(items[i], torch.from_numpy(whole[i]).permute(2, 0, 1)) for i in range(5))


def test_cached_generated_equals_the_decoded_set_and_is_decoded_once(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (RES, RES + 4, 3), dtype=np.uint8)).save(paths[-1])
    manifest = pd.DataFrame({"id": range(7), "path": [str(p) for p in paths]})
    rows = cached_generated(manifest, "k1", tmp_path / "cache", batch_size=3)
    assert rows.path.name == "generated-k1.npy" and rows.shape == (7, RES, RES + 4, 3)
    np.testing.assert_array_equal(np.asarray(rows), generated_uint8(manifest))
    items = GeneratedImages(manifest)  # the rows feed image_batches exactly as the items did
    assert all(torch.equal(items[i], torch.from_numpy(rows[i]).permute(2, 0, 1)) for i in range(7))
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("decoded again"))
    again = cached_generated(manifest, "k1", tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(again), np.asarray(rows))
    with pytest.raises(pytest.fail.Exception, match="decoded again"):  # another key is another set: decoded
        cached_generated(manifest, "k2", tmp_path / "cache")


def test_features_of_streamed_sources_equal_those_of_the_set_in_memory(test_split, tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        encoder = DomainEncoder({"name": "t", "in_res": 16, "widths": [8, 16], "heads": {"joint": 3}}).eval()
    rows = cached_real(test_split, FAIRGENMED, RES, tmp_path)
    streamed = [extract(encoder, source, batch_size=5)
                for source in (rows, RealImages(test_split, FAIRGENMED, RES))]
    for a, b in zip(*streamed):  # the file and the image files give the same batches, bit for bit
        assert torch.equal(a, b)
    in_memory = extract(encoder, to_unit_tensor(real_uint8(test_split, FAIRGENMED, RES)), batch_size=64)
    for a, b in zip(streamed[0], in_memory):  # the old call: same values; another memory layout may round
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
