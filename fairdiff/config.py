"""Profiles (smoke, mini, paper, or a YAML file anywhere) resolved into one validated, nested dict.

``configs/mini.yaml`` declares every setting the code reads, with its default; the other profiles
inherit it and change values. A profile may ``inherit`` another (by name, from anywhere, or by
path) and carries per-dataset overrides under ``datasets``. ``--set key.path=value`` overrides
come last. Every source is checked before any work starts: an unknown key names the file, the key
path and the closest valid key; a wrong type or an impossible value names the key and what was
expected. The resolved config is saved next to every run, so a result names its settings.
"""
from __future__ import annotations

import copy
import difflib
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from fairdiff.env import PROJECT_ROOT, WORK_ROOT
from fairdiff.errors import ConfigError

CONFIG_DIR = PROJECT_ROOT / "configs"
PROFILES = ("smoke", "mini", "paper", "study", "study-smoke")
DEFAULTS = CONFIG_DIR / "mini.yaml"
DATASETS = ("fairgenmed", "ham10000", "chexpert")
METHODS = ("baseline", "random", "fairbo", "reweight", "resample", "groupdro")

# Passed whole to diffusers/transformers config constructors or the synthetic generator's parameter
# class, which check their own keys.
# fbp.sigma_groups ("attribute=group": sigma) is checked against the dataset's schema (check_schema_names).
# study.arms (name: {method, set}) is checked by fairdiff.study.arms, each arm through this validation.
OPEN_MAPPINGS = {"model.vae", "model.unet", "model.text", "data.synth", "fbp.sigma_groups", "study.arms",
                 "pretrain.synth"}
# Keys whose default is null: the type a value must have when it is set.
NULLABLE = {"data.root": str, "data.seed": int, "model.pretrained": str, "evaluate.inception_weights": str,
            "evaluate.classifiers[].image_size": int, "evaluate.classifiers[].weights": str,
            "fbp.weight_floor": float, "train.report_to": str, "reweight.attributes": list, "resample.attributes": list,
            "evaluate.reference.attribute": str}
CHOICES = {
    "dataset": DATASETS,
    "methods[]": METHODS,
    "data.preprocess": ("ours", "authors"),
    "model.prediction_type": ("v_prediction", "epsilon"),
    "train.mixed_precision": ("no", "fp16", "bf16"),
    "train.adamw_kernel": ("fused", "auto"),
    "train.report_to": ("tensorboard", "trackio", "wandb"),
    "fbp.gp_likelihood": ("closed_form", "gpytorch"),
    "sample.scheduler": ("ddim", "dpmsolver"),
    "sample.unet": ("ema", "raw"),
    "sample.dtype": ("float32", "float16", "bfloat16", "float64"),
    "evaluate.classifiers[].arch": ("small_cnn", "efficientnet_b1", "vit_b16"),
    "study.analysis.endpoint": ("fid_minus_majority", "kid_minus_majority"),
}
# (low, high, what): inclusive bounds; None is open.
RANGES = {
    "seed": (0, None), "data.n": (1, None), "data.resolution": (8, None), "data.val_fraction": (0.0, 0.9),
    "data.num_workers": (0, None),
    "vae.steps": (0, None), "vae.batch_size": (1, None), "vae.lr": (0.0, None), "vae.kl_weight": (0.0, None),
    "pretrain.steps": (0, None), "pretrain.n": (1, None), "pretrain.seed": (0, None), "pretrain.lr": (0.0, None),
    "pretrain.batch_size": (1, None), "pretrain.checkpoint_every": (1, None), "pretrain.curve_every": (1, None),
    "pretrain.curve_images": (2, None),
    "train.steps": (1, None), "train.batch_size": (1, None), "train.gradient_accumulation_steps": (1, None),
    "train.lr": (0.0, None), "train.adam_weight_decay": (0.0, None), "train.max_grad_norm": (0.0, None),
    "train.ema_decay": (0.0, 1.0), "train.uncond_prob": (0.0, 1.0), "train.checkpoint_every": (1, None),
    "train.keep_checkpoints": (1, None), "train.log_every": (1, None), "train.validation_every": (0, None),
    "fbp.window": (2, None), "fbp.exploitation": (0.0, 1.0), "fbp.beta": (0.0, None),
    "fbp.bo_restarts": (1, None), "fbp.bo_raw_samples": (1, None), "fbp.sigma_init": (0.0, None),
    "train.input_perturbation": (0.0, None), "groupdro.eta": (0.0, None),
    "sample.steps": (1, None), "sample.guidance_scale": (0.0, None), "sample.batch_size": (1, None),
    "sample.grid_per_group": (0, None),
    "evaluate.encoder.epochs": (1, None), "evaluate.encoder.lr": (0.0, None), "evaluate.encoder.batch_size": (1, None),
    "evaluate.classifiers[].image_size": (8, None), "evaluate.classifiers[].lr": (0.0, None),
    "evaluate.classifiers[].epochs": (1, None), "evaluate.classifiers[].batch_size": (1, None),
    "evaluate.n_boot": (1, None), "evaluate.min_group_size": (1, None), "evaluate.is_splits": (1, None),
    "evaluate.mifid_eps": (0.0, 2.0), "evaluate.jackknife_blocks": (0, None), "evaluate.size_matched_floor": (2, None),
    "evaluate.size_matched_repeats": (1, None), "evaluate.kid_subset_size": (2, None), "evaluate.kid_subsets": (1, None),
    "evaluate.prdc_k": (1, None), "evaluate.copy_quantile": (0.0, 1.0), "evaluate.reference.per_group": (2, None),
    "study.seeds[]": (0, None), "study.sweep_window[]": (2, None), "study.sweep_exploitation[]": (0.0, 1.0),
    "study.sweep_seeds[]": (0, None), "study.workers": (1, None), "study.analysis.confidence": (0.5, 0.999),
    "study.analysis.equivalence_margin": (0.0, None), "study.analysis.noninferiority_margin": (0.0, None),
    "study.analysis.power": (0.05, 0.999), "study.analysis.target_halfwidth": (0.0, None),
}
# Settings that take either a number (in RANGES) or one of these words.
NUMBER_OR_WORD = {"evaluate.mifid_eps": ("calibrated",)}
STRICTLY_POSITIVE = {"vae.lr", "train.lr", "pretrain.lr", "evaluate.encoder.lr", "evaluate.classifiers[].lr",
                     "study.analysis.equivalence_margin", "study.analysis.noninferiority_margin",
                     "study.analysis.target_halfwidth"}


# ----------------------------------------------------------------------------- reading profiles
def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_path(name_or_path: str | Path, base: Path = CONFIG_DIR) -> Path:
    """A profile name (``smoke``) is always a file of ``configs/``, wherever the including file
    lives; a ``.yaml`` path is taken as given, else relative to the including file."""
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        return CONFIG_DIR / f"{name_or_path}.yaml"
    if p.is_absolute() or p.exists():
        return p
    return base / p


def _load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (profiles in {CONFIG_DIR}: "
                          f"{', '.join(sorted(q.stem for q in CONFIG_DIR.glob('*.yaml')))})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'inherit' forms a cycle ({' -> '.join(map(str, seen + (path,)))})")
    data = _load_yaml(path)
    check_keys(data, str(path), profile_file=True)
    parent = data.pop("inherit", None)
    if parent:
        data = _merge(_read(_resolve_path(parent, path.parent), seen + (path,)), data)
    return data


@lru_cache(maxsize=1)
def _reference() -> dict:
    """The declared settings and their defaults: configs/mini.yaml without its per-dataset block."""
    data = _load_yaml(DEFAULTS)
    data.pop("datasets", None)
    data.pop("inherit", None)
    return data


# ----------------------------------------------------------------------------- validation
def _fail(origin: str, path: str, message: str) -> None:
    raise ConfigError(f"{origin}: {path}: {message}")


def _template_path(path: str) -> str:
    """``evaluate.classifiers.1.arch`` -> ``evaluate.classifiers[].arch`` (the rule's name)."""
    parts = path.split(".")
    out = []
    for part in parts:
        if part.isdigit():
            out[-1] += "[]"
        else:
            out.append(part)
    return ".".join(out)


def check_keys(tree: dict, origin: str, ref: dict | None = None, prefix: str = "", profile_file: bool = False) -> None:
    """Every key of ``tree`` must be declared in the reference (configs/mini.yaml)."""
    ref = _reference() if ref is None else ref
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if profile_file and not prefix and key == "inherit":
            continue
        if profile_file and not prefix and key == "datasets":
            if not isinstance(value, dict):
                _fail(origin, path, "expected a mapping of dataset name to overrides")
            for name, sub in value.items():
                if name not in DATASETS:
                    _fail(origin, f"datasets.{name}", f"unknown dataset; expected one of {', '.join(DATASETS)}")
                if not isinstance(sub, dict):
                    _fail(origin, f"datasets.{name}", "expected a mapping of overrides")
                check_keys(sub, origin, ref, "")
            continue
        if key not in ref:
            close = difflib.get_close_matches(str(key), [str(k) for k in ref], n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys here: {', '.join(map(str, ref))}"
            _fail(origin, path, "unknown key" + hint)
        expected = ref[key]
        if path in OPEN_MAPPINGS:
            if not isinstance(value, dict):
                _fail(origin, path, f"expected a mapping, got {value!r}")
        elif isinstance(expected, dict):
            if not isinstance(value, dict):
                _fail(origin, path, f"expected a mapping of {', '.join(map(str, expected))}, got {value!r}")
            check_keys(value, origin, expected, f"{path}.")
        elif isinstance(expected, list) and expected and isinstance(expected[0], dict):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                _fail(origin, path, f"expected a list of mappings, got {value!r}")
            for i, item in enumerate(value):
                check_keys(item, origin, expected[0], f"{path}.{i}.")


def _check_leaf(origin: str, path: str, value: Any, default: Any) -> None:
    rule = _template_path(path)
    if rule in NUMBER_OR_WORD:
        if isinstance(value, str) and value in NUMBER_OR_WORD[rule]:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(origin, path, f"expected a number or one of {', '.join(NUMBER_OR_WORD[rule])}, got {value!r}")
        default = 0.0
    if default is None:
        kind = NULLABLE.get(rule)
        if value is None or kind is None:
            return
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            _fail(origin, path, f"expected an integer or null, got {value!r}")
        if kind is str and not isinstance(value, str):
            _fail(origin, path, f"expected a string (a path or name) or null, got {value!r}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            _fail(origin, path, f"expected a number or null, got {value!r}")
        if kind is list and not isinstance(value, list):
            _fail(origin, path, f"expected a list or null, got {value!r}")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            _fail(origin, path, f"expected true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(origin, path, f"expected an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(origin, path, f"expected a number, got {value!r}")
    elif isinstance(default, str):
        if not isinstance(value, str):
            _fail(origin, path, f"expected a string, got {value!r}")
    if rule in CHOICES and value not in CHOICES[rule]:
        _fail(origin, path, f"expected one of {', '.join(CHOICES[rule])}, got {value!r}")
    if rule in RANGES and value is not None:
        low, high = RANGES[rule]
        if (low is not None and value < low) or (high is not None and value > high) or \
                (rule in STRICTLY_POSITIVE and value <= 0):
            bounds = ("> 0" if rule in STRICTLY_POSITIVE else f">= {low}") if high is None else f"in [{low}, {high}]"
            _fail(origin, path, f"expected a value {bounds}, got {value!r}")


def check_values(cfg: dict, origin: str, ref: dict | None = None, prefix: str = "", partial: bool = False) -> None:
    """Types and bounds of every declared setting of a resolved config (``partial``: of the
    settings an override names)."""
    ref = _reference() if ref is None else ref
    for key, default in ref.items():
        path = f"{prefix}{key}"
        if partial and key not in cfg:
            continue
        if key not in cfg:
            _fail(origin, path, "missing (every profile inherits it from configs/mini.yaml: is 'inherit' missing?)")
        value = cfg[key]
        if path in OPEN_MAPPINGS:
            continue
        if isinstance(default, dict):
            check_values(value, origin, default, f"{path}.", partial)
        elif isinstance(default, list):
            if not isinstance(value, list):
                _fail(origin, path, f"expected a list, got {value!r}")
            if default and isinstance(default[0], dict):
                if not value:
                    _fail(origin, path, "expected at least one entry")
                for i, item in enumerate(value):
                    missing = [k for k in default[0] if k not in item]
                    if missing:
                        _fail(origin, f"{path}.{i}", f"missing {', '.join(missing)}")
                    check_values(item, origin, default[0], f"{path}.{i}.")
            else:
                for i, item in enumerate(value):
                    _check_leaf(origin, f"{path}.{i}", item, default[0] if default else item)
        else:
            _check_leaf(origin, path, value, default)


# ----------------------------------------------------------------------------- --set overrides
def parse_sets(items: list[str] | tuple[str, ...] | None) -> dict:
    """``["fbp.window=10", "train.lr=2e-5"]`` -> nested overrides; values are parsed as YAML."""
    out: dict = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key.path=value (e.g. --set train.steps=200)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads 2e-5 (no dot) as a string
            except ValueError:
                pass
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is set twice, as a value and as a section")
        node[parts[-1]] = value
    return out


def load_config(profile: str | Path = "mini", dataset: str | None = None, overrides: dict | None = None,
                sets: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Resolve a profile name or YAML path, apply the dataset's overrides, then ``overrides``
    (a nested dict, for code) and ``sets`` (``key.path=value`` strings, for the command line);
    validate the result. Raises :class:`ConfigError` before any work starts."""
    path = _resolve_path(profile)
    cfg = _read(path)
    dataset = dataset or cfg.get("dataset", "fairgenmed")
    if dataset not in DATASETS:
        raise ConfigError(f"{path}: dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")
    per_dataset = cfg.pop("datasets", {}) or {}
    cfg = _merge(cfg, per_dataset.get(dataset, {}))
    cfg["dataset"] = dataset
    for origin, extra in (("overrides", overrides), ("--set", parse_sets(sets))):
        if extra:
            check_keys(extra, origin)
            check_values(extra, origin, partial=True)
            cfg = _merge(cfg, extra)
    check_values(cfg, str(path))
    check_schema_names(cfg, " + ".join([str(path)] + [name for name, extra in (("overrides", overrides), ("--set", sets))
                                                      if extra]))
    for section, key in (("fbp", "sigma_init"), ("fbp", "weight_floor"), ("train", "input_perturbation"),
                         ("groupdro", "eta")):  # numbers added with group DRO: 0 and 0.0 are one setting, one key
        cfg[section][key] = None if cfg[section][key] is None else float(cfg[section][key])
    cfg["fbp"]["sigma_groups"] = {name: float(v) for name, v in cfg["fbp"]["sigma_groups"].items()}
    e = cfg["evaluate"]  # local weight files, like data.root, are relative to the project
    e["inception_weights"] = _project_path(e["inception_weights"])
    for spec in e["classifiers"]:
        spec["weights"] = _project_path(spec["weights"])
    if cfg["data"].get("root") is None:
        cfg["data"]["root"] = str(WORK_ROOT / "data" / "synthetic" / f"{dataset}-{cfg['profile']}")
        cfg["data"]["synthetic"] = True
    else:
        root = Path(cfg["data"]["root"])
        cfg["data"]["root"] = str(root if root.is_absolute() else (PROJECT_ROOT / root).resolve())
        cfg["data"].setdefault("synthetic", False)
    return cfg


def check_schema_names(cfg: dict, origin: str) -> None:
    """Settings that name the dataset's attributes and groups (the methods' targets) must name real
    ones; also the one combination of method settings that contradicts itself."""
    from fairdiff.schema import get_schema

    schema = get_schema(cfg["dataset"])
    names = schema.attribute_names
    for key in ("reweight.attributes", "resample.attributes"):
        section, field = key.split(".")
        value = cfg[section][field]
        if value is not None and (not value or not all(isinstance(v, str) and v in names for v in value)
                                  or len(set(value)) != len(value)):
            _fail(origin, key, f"expected null (every attribute) or a list of distinct attribute names of "
                               f"{cfg['dataset']} ({', '.join(names)}), got {value!r}")
    if cfg["groupdro"]["attribute"] not in names:
        _fail(origin, "groupdro.attribute", f"expected an attribute of {cfg['dataset']} ({', '.join(names)}), "
                                            f"got {cfg['groupdro']['attribute']!r}")
    groups = [f"{a.name}={g}" for a in schema.attributes for g in a.groups]
    for name, value in cfg["fbp"]["sigma_groups"].items():
        if name not in groups:
            _fail(origin, f"fbp.sigma_groups.{name}", f"not a group of {cfg['dataset']}; expected attribute=group, "
                                                      f"one of {', '.join(groups)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            _fail(origin, f"fbp.sigma_groups.{name}", f"expected a number >= 0, got {value!r}")
    if cfg["fbp"]["weight_floor"] is not None and cfg["fbp"]["clamp"]:
        _fail(origin, "fbp.weight_floor", f"{cfg['fbp']['weight_floor']!r} cannot be combined with fbp.clamp: true "
                                          "(a floor keeps the weights' scale, clamp rescales them to mean 1); "
                                          "set one of them")


def _project_path(value: str | None) -> str | None:
    if value is None or Path(value).is_absolute():
        return value
    return str((PROJECT_ROOT / value).resolve())


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=True)
