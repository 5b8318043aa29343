"""The study's arms and seeds: what each run is, where it lives, and what a seed's runs share.

An **arm** is a method with a few settings changed (``study.arms``: name -> {method, set:
{key.path: value}}), e.g. ``fixed-0.5: {method: random, set: {fbp.sigma_init: 0.5}}``. Every arm
runs through the ordinary stages in its own runs folder; within a seed all arms train from the
seed's own base pipeline folder (hence the same initial weights, and one training cache per seed)
and are scored by the seed's feature extractor on its decoded real images (links to the seed's
folder). The W x r sweep is arms too (:func:`sweep_arms`).

Layout (``<p>`` the profile, ``<d>`` the dataset)::

    runs/study/<p>/seed-<k>/<d>-<p>/                      the seed's shared work: base/, evaluation/
    runs/study/<p>/seed-<k>/arms/<arm>/<d>-<p>/<method>/  one arm's run; its samples/ and
                                                          evaluation/ beside it (the encoder and
                                                          real-image cache links), base/ a link
    runs/study/<p>/pretrain/                              the pretrained base every seed shares
"""
from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairdiff.env import WORK_ROOT
from fairdiff.errors import ConfigError
from fairdiff.runs import RunLayout

ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# What an arm may change: how a run is trained and sampled. What every arm of a seed shares (the
# data, the base pipeline, the evaluation) stays the profile's, so the arms are paired.
ARM_SECTIONS = ("train", "fbp", "reweight", "resample", "groupdro", "sample")


@dataclass(frozen=True)
class Planted:
    """The planted group: an attribute and one of its groups, as the evaluation tables name them
    (``groups``: all of the attribute's groups)."""

    attribute: str
    group: str
    groups: tuple[str, ...] = field(default=(), compare=False)

    @property
    def column(self) -> str:
        """How training logs name the group (``race=Black``)."""
        return f"{self.attribute}={self.group}"


@dataclass(frozen=True)
class Arm:
    """One arm: its name (results and folders are named by it), method and changed settings."""

    name: str
    method: str
    sets: tuple[tuple[str, object], ...] = ()

    def __hash__(self) -> int:  # the values may be lists or mappings (unhashable); names are unique
        return hash((self.name, self.method))

    def set_strings(self) -> list[str]:
        """The changes as ``--set`` strings (values in JSON, which the YAML parser of ``--set`` reads)."""
        return [f"{key}={json.dumps(value)}" for key, value in self.sets]

    def describe(self) -> str:
        return "; ".join(self.set_strings())


def study_root(cfg: dict, root: str | Path | None = None) -> Path:
    """``runs/study/<profile>`` (``root`` replaces ``runs/study``)."""
    return Path(root or WORK_ROOT / "runs" / "study") / cfg["profile"]


def planted_group(cfg: dict, schema) -> Planted:
    """``study.planted`` checked against the dataset's attributes."""
    p = cfg["study"]["planted"]
    names = {a.name: a for a in schema.attributes}
    if p["attribute"] not in names:
        raise ConfigError(f"study.planted.attribute: {p['attribute']!r} is not an attribute of {cfg['dataset']}; "
                          f"expected one of {', '.join(names)}")
    groups = names[p["attribute"]].groups
    if p["group"] not in groups:
        raise ConfigError(f"study.planted.group: {p['group']!r} is not a group of {p['attribute']}; expected one of "
                          f"{', '.join(groups)}")
    return Planted(p["attribute"], p["group"], tuple(groups))


def check_fixed_data(cfg: dict) -> None:
    if cfg["data"].get("synthetic") and cfg["data"]["seed"] is None:
        raise ConfigError(f"profile {cfg['profile']}: data.seed: the study needs a fixed data seed (an integer), "
                          "so that every training seed sees the same subjects")


# ----------------------------------------------------------------------------- arms
def _arm(name, entry, methods) -> Arm:
    where = f"study.arms.{name}"
    if not isinstance(name, str) or not ARM_NAME.match(name):
        raise ConfigError(f"{where}: an arm's name names its folder and its rows: expected letters, digits, '.', "
                          f"'_' or '-' (not first), got {name!r}")
    if not isinstance(entry, dict) or set(entry) - {"method", "set"} or "method" not in entry:
        raise ConfigError(f"{where}: expected a mapping {{method: <method>, set: {{key.path: value}}}}, got {entry!r}")
    if entry["method"] not in methods:
        raise ConfigError(f"{where}.method: expected one of {', '.join(methods)}, got {entry['method']!r}")
    sets = entry.get("set") or {}
    if not isinstance(sets, dict):
        raise ConfigError(f"{where}.set: expected a mapping of key.path to value, got {sets!r}")
    for key in sets:
        if not isinstance(key, str) or key.split(".")[0] not in ARM_SECTIONS:
            raise ConfigError(f"{where}.set.{key}: an arm changes only how its run is trained or sampled, so "
                              f"that the arms of a seed stay paired; expected a key under {', '.join(ARM_SECTIONS)}")
    return Arm(name, entry["method"], tuple(sets.items()))


def arms_from_config(cfg: dict) -> list[Arm]:
    """The profile's arms in their order: ``study.arms``, or, when it is empty, one arm per method
    of ``methods`` with nothing changed. Names are checked (filename-safe, unique also ignoring
    case), methods too; the settings are checked by :func:`check_arms`."""
    from fairdiff.config import METHODS

    spec = cfg["study"]["arms"] or {m: {"method": m} for m in cfg["methods"]}
    arms = [_arm(name, entry, METHODS) for name, entry in spec.items()]
    seen = {}
    for arm in arms:
        if arm.name.lower() in seen:
            raise ConfigError(f"study.arms: {seen[arm.name.lower()]!r} and {arm.name!r} would share a folder on a "
                              "case-insensitive file system; rename one")
        seen[arm.name.lower()] = arm.name
    return arms


def sweep_arms(cfg: dict, arms: list[Arm]) -> dict[tuple[int, float], Arm]:
    """The fairbo arm of every (W, r) of ``study.sweep_window`` x ``study.sweep_exploitation``;
    the cell of the profile's own (W, r) is the study's plain ``fairbo`` arm when it has one."""
    s, f = cfg["study"], cfg["fbp"]
    plain = next((a for a in arms if a.method == "fairbo" and not a.sets), None)
    cells = {}
    for w in s["sweep_window"]:
        for r in s["sweep_exploitation"]:
            if plain is not None and (w, r) == (f["window"], f["exploitation"]):
                cells[(w, r)] = plain
            else:
                cells[(w, r)] = Arm(f"fairbo-W{w}-r{r:g}", "fairbo", (("fbp.window", w), ("fbp.exploitation", r)))
    return cells


def check_arms(profile: str, dataset: str | None, sets, arms: list[Arm], seed: int = 0) -> dict:
    """Resolve every arm's config through the config's own validation (a bad key or value names
    the arm) and check that the arms are distinct runs sharing the seed's base pipeline and
    feature extractor. Returns (the seed's own config, {arm name: resolved config}), all at ``seed``."""
    from fairdiff import stage_keys
    from fairdiff.config import load_config

    main = load_config(profile, dataset, overrides={"seed": seed}, sets=list(sets))
    shared = {name: stage_keys.stage(name, main).key for name in ("base", "encoder")}
    configs, runs = {}, {}
    for arm in arms:
        try:
            cfg = load_config(profile, dataset, overrides={"seed": seed}, sets=[*sets, *arm.set_strings()])
        except ConfigError as err:
            raise ConfigError(f"study.arms.{arm.name}.set: {err}") from None
        for name, key in shared.items():
            if stage_keys.stage(name, cfg).key != key:
                raise ConfigError(f"study.arms.{arm.name}.set: changes the seed's {name} stage, which every arm "
                                  "shares; an arm may change only how its run is trained or sampled")
        run = (stage_keys.train_stage(cfg, arm.method).key, stage_keys.sample_stage(cfg, arm.method, "test").key)
        if run in runs:
            raise ConfigError(f"study.arms: {runs[run]!r} and {arm.name!r} are the same run (same method, training "
                              "and sampling settings: a setting that its method does not read?); drop one")
        runs[run], configs[arm.name] = arm.name, cfg
    return main, configs


# ----------------------------------------------------------------------------- folders
def with_seed(cfg: dict, seed: int) -> dict:
    """A resolved config with the training seed replaced (the study reads its profiles once)."""
    out = copy.deepcopy(cfg)
    out["seed"] = int(seed)
    return out


@dataclass(frozen=True)
class ArmLayout(RunLayout):
    """An arm's run folder whose base pipeline (and so its training cache) is the seed's own folder,
    not a copy: every arm of a seed trains from the same path, so the cache, keyed by that path,
    is built once per seed (the arm's ``base/`` is also a link to it, for anyone browsing)."""

    shared_base: Path | None = None

    @property
    def base(self) -> Path:
        return self.shared_base


def context_of(cfg: dict, runs: str | Path, root: str | Path | None = None, base: str | Path | None = None):
    """The stage context of a resolved config in the runs folder ``runs`` (with ``base``: the base
    pipeline folder it shares); its pretrained base (when ``pretrain.steps`` > 0) is the study's
    one, ``runs/study/<profile>/pretrain/``, for every seed and arm."""
    from fairdiff import stages
    from fairdiff.plots import FigureWriter
    from fairdiff.runs import layout_for
    from fairdiff.schema import get_schema

    layout = layout_for(cfg, runs)
    if base is not None:
        layout = ArmLayout(layout.root, Path(base))
    return stages.Context(cfg, get_schema(cfg["dataset"]), layout, FigureWriter(cfg["profile"], cfg["dataset"]),
                          pretrain_runs=study_root(cfg, root) / "pretrain")


def seed_folder(cfg: dict, seed: int, root: str | Path | None = None) -> Path:
    return study_root(cfg, root) / f"seed-{seed}"


def arm_folder(cfg: dict, seed: int, arm: Arm, root: str | Path | None = None) -> Path:
    return seed_folder(cfg, seed, root) / "arms" / arm.name


def seed_base(cfg: dict, seed: int, root: str | Path | None = None) -> Path:
    """The seed's base pipeline folder, which every arm of the seed uses."""
    from fairdiff.runs import layout_for

    return layout_for(cfg, seed_folder(cfg, seed, root)).base


def seed_context(profile: str, seed: int, dataset: str | None = None, sets=(), root: str | Path | None = None):
    """The stage context of one training seed: the profile with ``seed`` set, in the seed's folder
    (its base pipeline and feature extractor are the ones every arm of the seed uses)."""
    from fairdiff.config import load_config

    cfg = load_config(profile, dataset, overrides={"seed": int(seed)}, sets=list(sets))
    return context_of(cfg, seed_folder(cfg, seed, root), root)


def arm_context(profile: str, seed: int, arm: Arm, dataset: str | None = None, sets=(),
                root: str | Path | None = None):
    """The stage context of one arm in one seed: the profile with ``seed`` and the arm's settings,
    in ``seed-<k>/arms/<arm>/`` (link its shared work first: :func:`share_seed_work`)."""
    from fairdiff.config import load_config

    cfg = load_config(profile, dataset, overrides={"seed": int(seed)}, sets=[*sets, *arm.set_strings()])
    return context_of(cfg, arm_folder(cfg, seed, arm, root), root, base=seed_base(cfg, seed, root))


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` (relative, so the study folder can move)."""
    if link.is_symlink() or link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)


def share_seed_work(main, ctx) -> None:
    """Point an arm's base/, feature extractor and decoded real images at the seed's (which must
    exist: the runner builds them before the seed's arms start), so the arm trains from the same
    weights and is scored in the same feature space instead of building identical copies."""
    if ctx.layout.root == main.layout.root:
        return
    _link(main.layout.base, ctx.layout.root / "base")
    for folder in [*main.layout.evaluation.glob("encoder-*"), main.layout.evaluation / "cache"]:
        if folder.exists():
            _link(folder, ctx.layout.evaluation / folder.name)


# ----------------------------------------------------------------------------- the arms table
def fixed_sigmas(cfg: dict, method: str, schema, planted: Planted) -> tuple[float, float]:
    """(sigma of the planted group, mean sigma of every other group) of an arm whose perturbation
    scales are fixed: 0 for the methods without perturbation, ``fbp.sigma_init`` overridden per
    group by ``fbp.sigma_groups`` for ``random``; NaN for fairbo (BO moves them)."""
    if method == "fairbo":
        return np.nan, np.nan
    if method != "random":
        return 0.0, 0.0
    f = cfg["fbp"]
    init, per_group = float(f.get("sigma_init", 1.0)), f.get("sigma_groups") or {}
    columns = [f"{a.name}={g}" for a in schema.attributes for g in a.groups]
    values = {c: float(per_group.get(c, init)) for c in columns}
    others = [v for c, v in values.items() if c != planted.column]
    return values[planted.column], float(np.mean(others))


def arms_table(arms: list[Arm], configs: dict, schema, planted: Planted) -> pd.DataFrame:
    """One row per arm: method, its changed settings and, for fixed-scale arms, the sigma of the
    planted group and of the others (the dose-response axis)."""
    rows = []
    for arm in arms:
        mine, others = fixed_sigmas(configs[arm.name], arm.method, schema, planted)
        rows.append({"arm": arm.name, "method": arm.method, "set": arm.describe(), "planted_sigma": mine,
                     "others_sigma": others})
    return pd.DataFrame(rows)
