"""The training cache is built in batches onto disk and read by rows: it equals the in-memory
cache bit for bit, resumes after an interruption, holds one batch of images at a time, and
training from it equals training from memory."""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from conftest import tiny_config
from fairdiff import arrays, prepare
from fairdiff.arrays import NpyRows
from fairdiff.models import encode_images, encode_prompts, load_pipeline
from fairdiff.prepare import TrainingCache, training_cache, training_records
from fairdiff.schema import FAIRGENMED

pytestmark = pytest.mark.usefixtures("one_thread")
BATCH = 8


def in_memory_reference(cfg: dict, base) -> TrainingCache:
    """The cache as it was built before streaming: every image stacked, then encoded."""
    frame = training_records(cfg)
    pipe = load_pipeline(base)
    mean, std = encode_images(pipe.vae, prepare.load_images(frame, FAIRGENMED, cfg["data"]["resolution"], False),
                              batch_size=BATCH)
    prompts = sorted(set(frame["prompt"]))
    lookup = {p: i for i, p in enumerate(prompts)}
    return TrainingCache(latent_mean=mean, latent_std=std,
                         prompt_index=torch.tensor([lookup[p] for p in frame["prompt"]]),
                         text=encode_prompts(pipe.tokenizer, pipe.text_encoder, prompts + [""]),
                         groups=torch.tensor(frame[FAIRGENMED.attribute_names].to_numpy()), ids=list(frame["id"]),
                         scaling_factor=float(pipe.vae.config.scaling_factor))


def test_streamed_cache_equals_the_in_memory_cache_bit_for_bit(prepared_base, tmp_path):
    cfg, base = prepared_base
    cache = training_cache(cfg, str(base), tmp_path, progress=False, batch_size=BATCH)
    ref = in_memory_reference(cfg, str(base))
    assert isinstance(cache.latent_mean, NpyRows) and len(cache.latent_mean) == len(ref.ids) > 3 * BATCH
    for name in ("latent_mean", "latent_std", "prompt_index", "text", "groups"):
        assert torch.equal(getattr(cache, name)[:], getattr(ref, name)), name
    assert cache.ids == ref.ids and cache.scaling_factor == ref.scaling_factor
    assert cache.uncond_index == len(ref.text) - 1
    rows = torch.tensor([5, 0, 6, 7, 2])  # what the trainer does: index a batch of rows, get a tensor
    assert torch.equal(cache.latent_std[rows], ref.latent_std[rows])
    again = training_cache(cfg, str(base), tmp_path, progress=False, batch_size=BATCH)  # reopened, not rebuilt
    assert again.latent_mean.path == cache.latent_mean.path
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.latent_mean.path.parent.name]


class Interrupt(Exception):
    pass


def test_an_interrupted_build_continues_where_it_stopped(prepared_base, tmp_path, monkeypatch):
    cfg, base = prepared_base
    written = []
    real_write = arrays.write_rows

    def write_then_stop(path, start, rows, sync=False):
        if path.name == "latent_mean.npy" and len(written) == 2:
            raise Interrupt  # killed while encoding the third batch
        real_write(path, start, rows, sync)
        if path.name == "latent_std.npy":
            written.append(start)

    monkeypatch.setattr(arrays, "write_rows", write_then_stop)
    with pytest.raises(Interrupt):
        training_cache(cfg, str(base), tmp_path / "cache", progress=False, batch_size=BATCH)
    (partial,) = (tmp_path / "cache").iterdir()
    assert partial.name.startswith(".") and json.loads((partial / "progress.json").read_text())["done"] == 2 * BATCH
    monkeypatch.setattr(arrays, "write_rows", real_write)

    starts = []
    monkeypatch.setattr(arrays, "write_rows", lambda path, start, rows, sync=False: (
        starts.append(start) if path.name == "latent_mean.npy" else None, real_write(path, start, rows, sync)))
    resumed = training_cache(cfg, str(base), tmp_path / "cache", progress=False, batch_size=BATCH)
    assert starts[0] == 2 * BATCH and starts == list(range(2 * BATCH, len(resumed.ids), BATCH))
    straight = training_cache(cfg, str(base), tmp_path / "straight", progress=False, batch_size=BATCH)
    for name in ("latent_mean", "latent_std"):
        assert torch.equal(getattr(resumed, name)[:], getattr(straight, name)[:])


def test_a_partial_build_of_other_settings_is_not_trusted(prepared_base, tmp_path):
    cfg, base = prepared_base
    cache = training_cache(cfg, str(base), tmp_path, progress=False, batch_size=BATCH)
    folder = cache.latent_mean.path.parent
    partial = folder.with_name(f".{folder.name}.partial")
    os.replace(folder, partial)
    arrays.write_rows(partial / "latent_mean.npy", 0, np.zeros((BATCH, *cache.latent_mean.shape[1:]), np.float32))
    (partial / "progress.json").write_text(json.dumps({"key": "another", "done": 3 * BATCH}))
    rebuilt = training_cache(cfg, str(base), tmp_path, progress=False, batch_size=BATCH)
    assert rebuilt.latent_mean[:BATCH].abs().sum() > 0  # the zeroed rows were encoded again
    assert not partial.exists()


def _peak_rss_while(fn) -> tuple[object, float]:
    """fn's result and the peak growth of this process's resident memory while it ran (MiB)."""
    proc, peak, done = psutil.Process(), [0], threading.Event()
    base = proc.memory_info().rss

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss - base)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = fn()
    finally:
        done.set()
        watcher.join()
    return result, peak[0] / 2**20


def test_caches_of_two_dataset_sizes_hold_one_batch_of_images_at_a_time(prepared_base, tmp_path, monkeypatch,
                                                                          record_property):
    """The VAE sees at most one batch of images per call and each image once; the growth of
    resident memory while building is reported (a figure, not asserted: it is noise at this size;
    benchmarks/bench_memory.py measures it at 500 and 5,000 images)."""
    from fairdiff.data.synth.fairgenmed import generate_fairgenmed

    cfg, base = prepared_base
    big_root = tmp_path / "big"
    generate_fairgenmed(big_root, 96, seed=4, progress=False)
    seen: list[int] = []
    real_load = prepare.load_pipeline

    def spy_load(*args, **kwargs):
        pipe = real_load(*args, **kwargs)
        encode = pipe.vae.encode
        pipe.vae.encode = lambda x: (seen.append(len(x)), encode(x))[1]
        return pipe

    monkeypatch.setattr(prepare, "load_pipeline", spy_load)
    for name, config in (("small", cfg), ("big", tiny_config(big_root))):
        seen.clear()
        cache, grew = _peak_rss_while(lambda: training_cache(config, str(base), tmp_path / name, progress=False,
                                                             batch_size=BATCH))
        n = len(cache.ids)
        assert max(seen) <= BATCH and sum(seen) == n
        record_property(f"cache_{name}_n", n)
        record_property(f"cache_{name}_rss_growth_mib", round(grew, 1))
        print(f"\ncache of {n} images ({cache.latent_mean.shape[1:]} latents): resident memory grew {grew:.1f} MiB "
              f"while building; latents on disk {2 * os.path.getsize(cache.latent_mean.path) / 2**20:.2f} MiB")


@pytest.mark.slow
def test_training_from_the_disk_cache_equals_training_from_memory(prepared_base, tmp_path, monkeypatch):
    from fairdiff import train as train_mod

    cfg, base = prepared_base
    disk = train_mod.train(cfg, "fairbo", tmp_path / "disk", str(base), tmp_path / "cache", progress=False)
    memory = training_cache(cfg, str(base), tmp_path / "cache", progress=False).in_memory()
    assert isinstance(memory.latent_mean, torch.Tensor)
    monkeypatch.setattr(train_mod, "training_cache", lambda *args, **kwargs: memory)
    mem = train_mod.train(cfg, "fairbo", tmp_path / "memory", str(base), tmp_path / "cache", progress=False)
    a, b = _unet_state(disk), _unet_state(mem)
    assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(disk / "metrics.csv"), pd.read_csv(mem / "metrics.csv"))


def _unet_state(run) -> dict:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(run / "final" / "unet").state_dict()
