"""Shared fixtures: one small synthetic FairGenMed and one prepared base pipeline per test session."""
from __future__ import annotations

import json
import os
import subprocess
import sys
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


ROOT = Path(__file__).resolve().parent.parent
# Two processes on the CPU through accelerate's launcher, as a multi-GPU run is launched.
LAUNCH_TWO = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
LAUNCH_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def train_on_two_processes(cfg: dict, base: Path, tmp_path: Path, *method: str) -> dict[int, list[dict]]:
    """tests/mp_train.py on two processes (run folder ``tmp_path/run``); each rank's per-step log."""
    cfg_path, log_dir = tmp_path / "cfg.json", tmp_path / "logs"
    cfg_path.write_text(json.dumps(cfg))
    cmd = [*LAUNCH_TWO, str(ROOT / "tests" / "mp_train.py"), str(cfg_path), str(base), str(tmp_path / "run"),
           str(log_dir), *method]
    proc = subprocess.run(cmd, env=LAUNCH_ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {r: [json.loads(line) for line in (log_dir / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)}
