"""Profiles (smoke, mini, paper) as YAML files: every default in one visible place.

A profile may ``inherit`` another and carries per-dataset overrides under ``datasets``; the
resolved config is a plain nested dict, saved next to every run so a result names its settings."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from fairdiff.env import PROJECT_ROOT, WORK_ROOT

CONFIG_DIR = PROJECT_ROOT / "configs"
PROFILES = ("smoke", "mini", "paper")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found (profiles: {', '.join(PROFILES)})")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    parent = data.pop("inherit", None)
    if parent:
        data = _merge(_read(_resolve_path(parent, path.parent)), data)
    return data


def _resolve_path(name_or_path: str | Path, base: Path = CONFIG_DIR) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        return p if p.is_absolute() or p.exists() else base / p
    return base / f"{name_or_path}.yaml"


def load_config(profile: str | Path = "mini", dataset: str | None = None, overrides: dict | None = None) -> dict[str, Any]:
    """Resolve a profile name or YAML path, apply the dataset's overrides, then ``overrides``."""
    cfg = _read(_resolve_path(profile))
    dataset = dataset or cfg.get("dataset", "fairgenmed")
    per_dataset = cfg.pop("datasets", {}) or {}
    cfg = _merge(cfg, per_dataset.get(dataset, {}))
    cfg["dataset"] = dataset
    if overrides:
        cfg = _merge(cfg, overrides)
    if cfg["data"].get("root") is None:
        cfg["data"]["root"] = str(WORK_ROOT / "data" / "synthetic" / f"{dataset}-{cfg['profile']}")
        cfg["data"]["synthetic"] = True
    else:
        cfg["data"]["root"] = str((PROJECT_ROOT / cfg["data"]["root"]).resolve()) if not Path(cfg["data"]["root"]).is_absolute() else cfg["data"]["root"]
        cfg["data"].setdefault("synthetic", False)
    return cfg


def config_hash(cfg: dict, *sections: str) -> str:
    """A short, stable hash of (parts of) a config: names cached artefacts."""
    part = {k: cfg[k] for k in sections} if sections else cfg
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:12]


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=True)
