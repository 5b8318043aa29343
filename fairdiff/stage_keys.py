"""The one cache rule of the pipeline: what each stage's key covers, the stamp its output carries,
and whether existing work is reused, resumed, regenerated or refused.

The stage graph (every entry point, notebooks, CLI, ``accelerate launch`` and ``make reproduce``,
walks the same one)::

    dataset -> base -> train(method) -> sample(method, split) -> evaluate -> report

A stage's key is a hash of exactly the config sections it reads plus the keys of the stages it
consumes, so it is a pure function of the config: changing how images are scored
(``evaluate.*``) or drawn (``sample.*``) never touches a trained run. Settings that cannot change a
result (how often to checkpoint, how many loader workers) are left out of every key.

Every output carries a stamp (``stage.json`` in a folder, ``<file>.stage.json`` beside a file)
written when the work starts: the stage, its key, the settings it covers (flattened, so a
mismatch can be listed key by key), a run id and whether the work is complete. A folder without
our stamp is not ours and is never written into.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fairdiff import io

STAMP = "stage.json"
SECTIONS = {
    "dataset": ("dataset", "data", "seed"),
    "base": ("dataset", "data", "model", "vae", "seed", "pretrain"),
    "train": ("dataset", "data", "model", "vae", "train", "fbp", "reweight", "resample", "groupdro", "seed",
              "pretrain"),
    # the pool's own data (pretrain.n, seed, synth) and training settings replace the dataset's and train.*
    "pretrain": ("dataset", "data.resolution", "data.preprocess", "data.val_fraction", "model", "vae", "pretrain"),
    "sample": ("sample",),
    "encoder": ("dataset", "data", "seed", "evaluate.encoder", "evaluate.inception_weights"),
    "evaluate": ("evaluate",),
}
# Settings that change how work is done, never what it produces.
NOT_IN_KEYS = {"data.num_workers", "data.strict", "data.trust_pickle", "train.checkpoint_every",
               "train.keep_checkpoints", "train.log_every", "train.report_to", "train.validation_every",
               "pretrain.checkpoint_every", "pretrain.curve_every", "pretrain.curve_images"}
# Settings added after runs were trained with the behaviour this value selects: at this value they
# are left out of the key, so those runs keep their keys and continue (or are reused) when it is set.
OMITTED_AT = {"train.adamw_kernel": "auto", "fbp.gp_likelihood": "gpytorch", "train.input_perturbation": 0.0,
              "fbp.sigma_init": 1.0, "fbp.weight_floor": None, "reweight.attributes": None,
              "resample.attributes": None}
# fbp only shapes the methods that perturb the loss.
FBP_METHODS = ("random", "fairbo")
# Sections read by some methods only: in the train key of those methods alone (fbp.sigma_groups at {}
# flattens to nothing, so it needs no OMITTED_AT entry).
METHOD_SECTIONS = {"fbp": FBP_METHODS, "reweight": ("reweight",), "resample": ("resample",), "groupdro": ("groupdro",)}


def digest(*parts) -> str:
    """The one content hash of the project (16 hex digits of a sha256 of canonical JSON)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


_ABSENT = object()


def _section(cfg: dict, path: str):
    node = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


@dataclass(frozen=True)
class Stage:
    """One stage instance: its name, identity (method, split), settings, inputs and key."""

    name: str
    settings: dict  # flattened key path -> value
    inputs: dict = field(default_factory=dict)  # stage name -> key of a consumed stage
    identity: dict = field(default_factory=dict)  # e.g. {"method": "fairbo", "split": "test"}

    @property
    def key(self) -> str:
        return digest(self.name, self.identity, self.settings, self.inputs)


def stage(name: str, cfg: dict, inputs: dict | None = None, **identity) -> Stage:
    """The stage ``name`` of this config (``identity``: method, split, source...)."""
    settings = {}
    for section in SECTIONS[name]:
        if name == "train" and section in METHOD_SECTIONS and identity.get("method") not in METHOD_SECTIONS[section]:
            continue
        if section == "pretrain" and name != "pretrain" and not pretraining(cfg):
            continue  # pretraining off (pretrain.steps 0): keys as before the section existed
        value = _section(cfg, section)
        if value is _ABSENT:  # a config made before the section existed: it ran as the section's default
            continue
        settings.update(flatten(value, f"{section}.") if isinstance(value, dict) else {section: value})
    settings = {k: v for k, v in settings.items()
                if k not in NOT_IN_KEYS and not (k in OMITTED_AT and v == OMITTED_AT[k])}
    return Stage(name, settings, dict(inputs or {}), identity)


def pretraining(cfg: dict) -> bool:
    """Whether the base is a UNet pretrained on a synthetic pool (``pretrain.steps`` > 0)."""
    return bool((cfg.get("pretrain") or {}).get("steps"))


def pretrain_stage(cfg: dict) -> Stage:
    """The pretrained pipeline (:mod:`fairdiff.pretrain`): its key names neither the dataset's data
    nor a training seed, so every seed of a study shares one."""
    return stage("pretrain", cfg)


def base_stage(cfg: dict) -> Stage:
    if not pretraining(cfg):
        return stage("base", cfg)
    pre = pretrain_stage(cfg)  # the base is then a copy of the pretrained pipeline: it reads nothing else
    return Stage("base", pre.settings, {"pretrain": pre.key})


def train_stage(cfg: dict, method: str) -> Stage:
    return stage("train", cfg, {"base": base_stage(cfg).key}, method=method)


def sample_stage(cfg: dict, method: str, split: str, train_key: str | None = None) -> Stage:
    return stage("sample", cfg, {"train": train_key or train_stage(cfg, method).key}, method=method, split=split)


# ----------------------------------------------------------------------------- stamps
def stamp_path(target: str | Path) -> Path:
    """``<folder>/stage.json`` for a folder (an existing one, or a name without a suffix), else
    ``<file>.stage.json`` beside the file."""
    target = Path(target)
    return target / STAMP if target.is_dir() or target.suffix == "" else target.with_name(target.name + ".stage.json")


def read_stamp(target: str | Path) -> dict | None:
    """The stamp of a stage output, or None (absent, or not one of ours)."""
    path = stamp_path(target)
    if not path.is_file():
        return None
    try:
        stamp = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return stamp if isinstance(stamp, dict) and "stage" in stamp and "key" in stamp else None


def write_stamp(target: str | Path, st: Stage, complete: bool = False, **extra) -> dict:
    """Write (or update) the stamp; a run id and creation time survive updates of the same key."""
    old = read_stamp(target) or {}
    same = old.get("key") == st.key
    stamp = {"stage": st.name, "key": st.key, **st.identity, "settings": st.settings, "inputs": st.inputs,
             "run_id": old.get("run_id") if same else uuid.uuid4().hex[:12],
             "created": old.get("created") if same else _dt.datetime.now().isoformat(timespec="seconds"),
             "complete": complete, **extra}
    io.write_text(stamp_path(target), json.dumps(stamp, indent=1, sort_keys=True, default=str))
    return stamp


def is_current(target: str | Path, st: Stage) -> bool:
    """Complete work of exactly this stage and key."""
    stamp = read_stamp(target)
    return bool(stamp and stamp["key"] == st.key and stamp.get("complete"))


def differences(stamp: dict, st: Stage) -> list[str]:
    """What changed between the stamped settings and the current ones, one ``key: old -> new`` each."""
    old, new = stamp.get("settings", {}), st.settings
    lines = [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" + _made_before(k, old, new)
             for k in sorted(set(old) | set(new)) if old.get(k, "(absent)") != new.get(k, "(absent)")]
    for k in sorted(set(stamp.get("inputs", {})) | set(st.inputs)):
        if stamp.get("inputs", {}).get(k) != st.inputs.get(k) and not lines:
            lines.append(f"input {k}: {stamp.get('inputs', {}).get(k)} -> {st.inputs.get(k)}")
    for k in sorted(set(st.identity)):
        if k in stamp and stamp[k] != st.identity[k]:
            lines.insert(0, f"{k}: {stamp.get(k)!r} -> {st.identity[k]!r}")
    return lines


def _made_before(key: str, old: dict, new: dict) -> str:
    """How to reuse work stamped before the setting ``key`` existed, if that is what the difference is."""
    if key in OMITTED_AT and key not in old and key in new:
        value = "null" if OMITTED_AT[key] is None else OMITTED_AT[key]
        return (f" (made before this setting existed, i.e. with {OMITTED_AT[key]!r}: "
                f"--set {key}={value} reuses it)")
    return ""


def move_aside(folder: str | Path) -> Path:
    """Rename ``folder`` to ``<name>.old-<timestamp>`` beside it (never deleted)."""
    folder = Path(folder)
    when = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.old-{when}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.old-{when}-{n}")
    os.replace(folder, target)
    return target


def is_empty(folder: str | Path) -> bool:
    folder = Path(folder)
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))
