"""Keep every cache inside the project and every run offline.

Matplotlib, torch and Hugging Face write under the home folder by default and the hub tries the
network; call :func:`setup` before importing them (the package does it on import)."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_ROOT = Path(os.environ.get("FAIRDIFF_CACHE", PROJECT_ROOT / ".cache"))
# Where generated things go (data/synthetic, runs, figures, reports): the checkout by default;
# FAIRDIFF_WORKDIR moves them, e.g. to compare two reproductions from scratch.
WORK_ROOT = Path(os.environ.get("FAIRDIFF_WORKDIR", PROJECT_ROOT))


def setup() -> None:
    """Point caches inside the project (unless the user already chose) and go offline."""
    for var, sub in (("MPLCONFIGDIR", "matplotlib"), ("TORCH_HOME", "torch"),
                     ("XDG_CACHE_HOME", "xdg"), ("HF_HOME", "huggingface")):
        if var not in os.environ:
            os.environ[var] = str(CACHE_ROOT / sub)
            Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers announces at import that torchvision is absent (we do not need it).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
