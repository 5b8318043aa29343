"""Sampling: an image does not depend on the batch it was drawn in, and a killed run resumes
without duplicates or recomputation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairdiff.data import load_fairgenmed
from fairdiff.models import load_pipeline
from fairdiff.sample import condition_grid, image_seed, sample_records, set_scheduler
from fairdiff.schema import FAIRGENMED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipe_and_records(prepared_base, synthetic_fairgenmed):
    _, base = prepared_base
    pipe = load_pipeline(base, dtype=torch.float64)  # as the CPU profiles sample (configs/mini.yaml)
    set_scheduler(pipe, "dpmsolver")
    records = load_fairgenmed(synthetic_fairgenmed)
    return pipe, records[records["split"] == "test"].head(4).reset_index(drop=True)


def _sample(pipe, records, out, batch_size, **kw):
    return sample_records(pipe, records, FAIRGENMED, out, seed=0, steps=3, guidance_scale=3.0, resolution=32,
                          batch_size=batch_size, unet_name="raw", scheduler="dpmsolver", progress=False, **kw)


def _pixels(manifest):
    return {i: np.asarray(Image.open(p)) for i, p in zip(manifest["id"], manifest["path"])}


def test_image_is_the_same_at_batch_sizes_1_and_4(pipe_and_records, tmp_path):
    pipe, records = pipe_and_records
    one = _pixels(_sample(pipe, records, tmp_path / "b1", batch_size=1))
    four = _pixels(_sample(pipe, records, tmp_path / "b4", batch_size=4))
    assert one.keys() == four.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], four[key])
    assert len({arr.tobytes() for arr in one.values()}) == len(one)  # different records, different images


def test_resume_skips_finished_images_and_writes_no_duplicates(pipe_and_records, tmp_path, monkeypatch):
    pipe, records = pipe_and_records
    out = tmp_path / "run"
    _sample(pipe, records.head(2), out, batch_size=2)  # "killed" after the first chunk of two
    done = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    calls = []
    import fairdiff.sample as sample_mod

    real_generate = sample_mod.generate
    monkeypatch.setattr(sample_mod, "generate", lambda pipe, prompts, *a, **k: calls.append(len(prompts)) or
                        real_generate(pipe, prompts, *a, **k))
    manifest = _sample(pipe, records, out, batch_size=2)
    assert calls == [2]  # only the chunk with missing images was drawn
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{i}.png" for i in records["id"])
    assert all((out / "images" / n).stat().st_mtime_ns == t for n, t in done.items())
    assert list(manifest["id"]) == list(records["id"]) and manifest["id"].is_unique
    on_disk = pd.read_csv(out / "manifest.csv", dtype={"id": str})
    assert list(on_disk["seed"]) == [image_seed(0, i) for i in records["id"]]
    assert set(on_disk["unet"]) == {"raw"}


def test_float32_resume_writes_the_same_bits_as_an_uninterrupted_run(prepared_base, pipe_and_records, tmp_path):
    """A kill inside a chunk: the resumed run redraws that whole chunk (same batch, same bits in
    float32) and writes only the image that was missing."""
    _, base = prepared_base
    pipe = load_pipeline(base, dtype=torch.float32)
    set_scheduler(pipe, "dpmsolver")
    _, records = pipe_and_records
    full = _sample(pipe, records, tmp_path / "full", batch_size=2)
    reference = _pixels(full)
    interrupted = tmp_path / "interrupted"
    _sample(pipe, records, interrupted, batch_size=2)
    lost = interrupted / "images" / f"{records['id'].iloc[2]}.png"
    kept = interrupted / "images" / f"{records['id'].iloc[3]}.png"
    lost.unlink()
    kept_time = kept.stat().st_mtime_ns
    resumed = _pixels(_sample(pipe, records, interrupted, batch_size=2))
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key])
    assert kept.stat().st_mtime_ns == kept_time  # the chunk-mate was redrawn but not rewritten


def test_generated_images_are_rotated_back_to_the_stored_frame(pipe_and_records, tmp_path, monkeypatch):
    pipe, records = pipe_and_records
    import fairdiff.sample as sample_mod

    marked = np.zeros((1, 32, 32, 3), np.uint8)
    marked[0, 0, -1] = 255  # top-right pixel in the training frame
    monkeypatch.setattr(sample_mod, "generate", lambda *a, **k: marked.copy())
    manifest = _sample(pipe, records.head(1), tmp_path / "rot", batch_size=1)
    img = np.asarray(Image.open(manifest["path"].iloc[0]))
    # training frame = stored frame turned 90 degrees clockwise, so top-right goes back to top-left
    assert img[0, 0].tolist() == [255, 255, 255] and img.sum() == 3 * 255


def test_condition_grid_changes_one_attribute_at_a_time(pipe_and_records):
    _, records = pipe_and_records
    grid = condition_grid(records, FAIRGENMED, per_group=2)
    assert len(grid) == 2 * sum(FAIRGENMED.n_groups)
    for attr in FAIRGENMED.attribute_names:
        rows = grid[grid["attribute"] == attr]
        others = [c for c in FAIRGENMED.attribute_names + FAIRGENMED.label_names if c != attr]
        assert len(rows[others].drop_duplicates()) == 1
        assert sorted(rows[attr].unique()) == list(range(FAIRGENMED.attribute(attr).n_groups))
