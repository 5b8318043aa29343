"""Shared fixtures: one small synthetic FairGenMed and one prepared base pipeline per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import fairdiff  # noqa: F401 - caches inside the project, offline

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="module")
def one_thread():
    """The models here are tiny: a second intra-op thread only adds synchronisation (and on a
    shared machine, waiting for a busy core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every path PIL opens during the test (loaders must never open a file outside the dataset)."""
    from PIL import Image
    paths, real_open = [], Image.open

    def spy(fp, *args, **kwargs):
        paths.append(str(fp))
        return real_open(fp, *args, **kwargs)
    monkeypatch.setattr(Image, "open", spy)
    return paths


@pytest.fixture(scope="session")
def synthetic_fairgenmed(tmp_path_factory) -> Path:
    from fairdiff.data.synth.fairgenmed import generate_fairgenmed

    root = tmp_path_factory.mktemp("data") / "fairgenmed"
    generate_fairgenmed(root, 48, seed=3, progress=False)
    return root


def tiny_config(root: Path, **train) -> dict:
    """The smoke profile shrunk further, on a given data folder."""
    from fairdiff.config import load_config

    overrides = {"data": {"root": str(root)}, "vae": {"steps": 3},
                 "train": {"steps": 3, "checkpoint_every": 3, "batch_size": 4, **train}, "fbp": {"window": 2}}
    cfg = load_config("smoke", "fairgenmed", overrides)
    cfg["data"]["synthetic"] = False
    return cfg


@pytest.fixture(scope="session")
def prepared_base(synthetic_fairgenmed, tmp_path_factory) -> tuple[dict, Path]:
    from fairdiff.prepare import prepare_base

    cfg = tiny_config(synthetic_fairgenmed)
    base = tmp_path_factory.mktemp("runs") / "base"
    prepare_base(cfg, base, progress=False)
    return cfg, base
