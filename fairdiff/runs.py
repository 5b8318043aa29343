"""Where every stage reads and writes: the run directory is the contract between notebooks.

runs/<dataset>-<profile>/
  base/                  the starting pipeline (tiny: VAE trained here) shared by every method
  base/cache/            VAE latents and text embeddings of the training images (frozen encoders)
  <method>/              one training run: stage.json (our stamp: key, settings, run id),
                         checkpoints/, final/ (pipeline, unet + unet_ema), metrics.csv,
                         bo_trace.csv, config.yaml (written once, at creation)
  samples/<method>/<split>/  generated images + manifest.csv + stage.json
  evaluation/            feature extractor, per-method tables (each with its .stage.json)
  evaluation/tables/     every analysis table (fairdiff evaluate, notebook 04), read by fairdiff report
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fairdiff.config import METHODS  # noqa: F401 - re-exported: the methods a run folder can hold
from fairdiff.env import WORK_ROOT


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def cache(self) -> Path:
        return self.base / "cache"

    def method(self, method: str) -> Path:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        return self.root / method

    def samples(self, method: str) -> Path:
        return self.root / "samples" / method

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"


def layout_for(cfg: dict, runs_dir: str | Path | None = None) -> RunLayout:
    runs_dir = Path(runs_dir) if runs_dir else WORK_ROOT / "runs"
    return RunLayout(runs_dir / f"{cfg['dataset']}-{cfg['profile']}")
