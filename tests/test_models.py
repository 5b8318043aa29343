"""The model helpers: the VAE trains the same from a streamed dataset as from stacked images, and
a base model that cannot be loaded is explained (what was tried, the withdrawn SD 2.1 id, the way out)."""
from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_config
from fairdiff.data.dataset import ImageRecordDataset
from fairdiff.models import PipelineNotFound, build_tiny_pipeline, load_pipeline, train_vae
from fairdiff.prepare import load_images, training_records
from fairdiff.schema import FAIRGENMED

pytestmark = pytest.mark.usefixtures("one_thread")


def test_vae_trained_from_a_streamed_dataset_equals_the_stacked_images(synthetic_fairgenmed):
    cfg = tiny_config(synthetic_fairgenmed)
    res = cfg["data"]["resolution"]
    frame = training_records(cfg)
    untrained = build_tiny_pipeline(cfg["model"], FAIRGENMED, res, seed=0).vae
    results = []
    for images, workers in ((load_images(frame, FAIRGENMED, res, progress=False), 0),
                            (ImageRecordDataset(frame, FAIRGENMED, res, cache=False), 0),
                            (ImageRecordDataset(frame, FAIRGENMED, res, cache=False), 1)):
        vae = copy.deepcopy(untrained)
        losses = train_vae(vae, images, steps=4, batch_size=6, lr=1e-3, kl_weight=1e-6, seed=5, progress=False,
                           num_workers=workers, scale_sample=20)
        results.append((losses, vae.state_dict(), vae.config.scaling_factor))
    (ref_losses, ref_state, ref_scale), *streamed = results
    assert len(ref_losses) == 4 and ref_scale != 1.0
    for losses, state, scale in streamed:
        assert losses == ref_losses and scale == ref_scale
        assert all(torch.equal(state[k], ref_state[k]) for k in ref_state)


@pytest.mark.parametrize("source, tried", [
    ("stabilityai/stable-diffusion-2-1", "hub id 'stabilityai/stable-diffusion-2-1'"),
    ("/nonexistent/sd21", "local folder /nonexistent/sd21, which does not exist"),
])
def test_a_missing_base_model_says_what_was_tried_and_how_to_get_sd21(source, tried, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PipelineNotFound) as err:
        load_pipeline(source)
    message = str(err.value)
    assert tried in message
    assert "'stabilityai/stable-diffusion-2-1', the paper's base model, was withdrawn" in message
    assert "save_pretrained" in message and "community mirror" in message and "model.pretrained" in message


def test_a_folder_that_is_not_a_pipeline_is_named(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(PipelineNotFound, match=r"exists but is not a complete diffusers pipeline.*model_index.json"):
        load_pipeline(tmp_path)
    assert issubclass(PipelineNotFound, OSError)  # callers that caught the loader's OSError still do
