"""Training checkpoints: written complete or not at all, checked before they are trusted.

A checkpoint is ``<run>/checkpoints/step-NNNNNNN/``: ``model.pt`` (UNet, optimiser, EMA),
``rankR.pt`` per process (RNG and the method's state: FBP's sigma and BO buffer, group DRO's q),
``state.json`` (step, world size, log lengths), the logs so far (``metrics.csv``, ``bo_trace.csv``)
and ``manifest.json``, the size and sha256 of every other file. The folder is filled under a
temporary name, the manifest is written last and the folder is then renamed into place, so a
killed run leaves no checkpoint at all.
A checkpoint damaged later (a truncated copy, a full disk, one flipped bit) fails :func:`verify`;
``resume="latest"`` then falls back to the newest intact one (:func:`latest_intact`) and says so.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch

from fairdiff import io
from fairdiff.errors import CheckpointError

CHECKPOINT_PREFIX = "step-"
MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
REQUIRED = ("model.pt", "state.json", "metrics.csv", "bo_trace.csv")
_NAME = re.compile(rf"{CHECKPOINT_PREFIX}(\d{{7,}})")


def checkpoint_name(step: int) -> str:
    """Zero-padded so names sort like steps (up to 10 million)."""
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def checkpoint_step(path: str | Path) -> int | None:
    """The step a checkpoint folder name stands for; None for any name we never write."""
    m = _NAME.fullmatch(Path(path).name)
    return int(m.group(1)) if m and Path(path).name == checkpoint_name(int(m.group(1))) else None


def checkpoint_dirs(run_dir: str | Path, warn: bool = True) -> list[Path]:
    """Checkpoint folders of a run, oldest first. Anything else under ``checkpoints/`` is left
    alone, with a warning if ``warn`` (our own half-written ``.tmp-*`` folders silently)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and checkpoint_step(p) is not None:
            found.append(p)
        elif warn and not (p.name.startswith(TMP_PREFIX) and checkpoint_step(p.name[len(TMP_PREFIX):]) is not None):
            warnings.warn(f"{p}: not a checkpoint (expected a folder named like {checkpoint_name(1200)}); "
                          "ignored", stacklevel=3)
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint folder by step, not verified (resume uses :func:`latest_intact`)."""
    ckpts = checkpoint_dirs(run_dir)
    return ckpts[-1] if ckpts else None


def latest_intact(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that passes :func:`verify`, warning about each newer one skipped and
    naming its problems; None when there is nothing to resume from."""
    for ckpt in reversed(checkpoint_dirs(run_dir)):
        problems = verify(ckpt)
        if not problems:
            return ckpt
        warnings.warn(f"skipping damaged checkpoint {ckpt}: " + "; ".join(problems), stacklevel=2)
    return None


def require_intact(ckpt: str | Path) -> Path:
    """An explicitly named checkpoint must be intact: no silent fallback to another one."""
    problems = verify(ckpt)
    if problems:
        raise CheckpointError(ckpt, problems)
    return Path(ckpt)


def file_sha256(path: str | Path) -> str:
    """Streaming sha256: constant memory for a multi-GB ``model.pt``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---------------------------------------------------------------- verification

def verify(ckpt: str | Path) -> list[str]:
    """Every problem that makes ``ckpt`` unsafe to resume from, each naming its file; empty if intact.

    Checks the manifest (sizes first, then sha256), then that ``state.json`` and the logs agree
    with each other, so even a checkpoint written with a short log is refused."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        return [f"{ckpt}: not a folder"]
    files, problems = _read_manifest(ckpt)
    if problems:
        return problems
    for name in REQUIRED:
        if name not in files:
            problems.append(f"{ckpt / MANIFEST}: does not list {name}")
    for name, entry in files.items():
        problems += _check_file(ckpt / name, entry)
    if problems:
        return problems
    return _check_contents(ckpt, files)


def _read_manifest(ckpt: Path) -> tuple[dict, list[str]]:
    path = ckpt / MANIFEST
    if not path.is_file():
        return {}, [f"{path}: missing (a checkpoint without checksums cannot be verified)"]
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        return {}, [f"{path}: unreadable, expected JSON with a 'files' table ({type(e).__name__}: {e})"]
    if not isinstance(files, dict):
        return {}, [f"{path}: field 'files' must map file names to size and sha256"]
    problems = []
    for name, entry in files.items():
        if name in ("", ".", "..") or "/" in name or "\\" in name or name == MANIFEST:
            problems.append(f"{path}: file name {name!r} is not a plain file of this checkpoint")
        elif not (isinstance(entry, dict) and isinstance(entry.get("size"), int)
                  and isinstance(entry.get("sha256"), str)):
            problems.append(f"{path}: entry {name!r} must hold an integer 'size' and a string 'sha256'")
    return files, problems


def _check_file(path: Path, entry: dict) -> list[str]:
    if not path.is_file():
        return [f"{path}: missing"]
    size = path.stat().st_size
    if size != entry["size"]:
        return [f"{path}: {size} bytes, {MANIFEST} says {entry['size']} (truncated or replaced)"]
    if file_sha256(path) != entry["sha256"]:
        return [f"{path}: sha256 differs from {MANIFEST} (contents damaged)"]
    return []


def _check_contents(ckpt: Path, files: dict) -> list[str]:
    """The files are what was written; check that what was written is a complete checkpoint."""
    try:
        meta = _read_state(ckpt)
    except CheckpointError as e:
        return e.problems
    problems = [f"{ckpt / MANIFEST}: does not list rank{r}.pt (saved by {meta['world_size']} processes)"
                for r in range(meta["world_size"]) if f"rank{r}.pt" not in files]
    if checkpoint_step(ckpt) not in (None, meta["step"]):
        problems.append(f"{ckpt / 'state.json'}: step {meta['step']} does not match the folder name {ckpt.name}")
    for name, key in (("metrics.csv", "metrics_rows"), ("bo_trace.csv", "bo_rows")):
        try:
            rows = _read_log(ckpt / name)
        except CheckpointError as e:
            problems += e.problems
            continue
        if len(rows) != meta[key]:
            problems.append(f"{ckpt / name}: {len(rows)} rows, state.json says {meta[key]}")
        elif name == "metrics.csv" and meta["step"] > 0 and not rows:
            problems.append(f"{ckpt / name}: no rows at step {meta['step']}; resuming would lose the log "
                            "of every step so far")
    return problems


def _read_state(ckpt: Path) -> dict:
    path = ckpt / "state.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(ckpt, [f"{path}: unreadable ({type(e).__name__}: {e})"]) from None
    expected = {"step": 0, "world_size": 1, "metrics_rows": 0, "bo_rows": 0}
    bad = [k for k, low in expected.items()
           if not isinstance(meta, dict) or not isinstance(meta.get(k), int) or meta[k] < low]
    if bad:
        raise CheckpointError(ckpt, [f"{path}: field {k!r} must be an integer >= {expected[k]}" for k in bad])
    return meta


def _read_log(path: Path) -> list[dict]:
    """A log CSV as records; an empty frame is written as a bare newline."""
    try:
        if path.stat().st_size <= 1:
            return []
        return pd.read_csv(path).to_dict("records")
    except (OSError, ValueError) as e:  # pandas' parser errors are ValueErrors
        raise CheckpointError(path.parent, [f"{path}: unreadable CSV ({type(e).__name__}: {e})"]) from None


# ---------------------------------------------------------------- saving and loading

def save_checkpoint(out_dir: Path, state, acc, unet, optimizer, ema, method_state, rank: int, keep: int) -> Path:
    """Every rank writes its own RNG and method state (``method_state``: the method's object with
    ``state_dict``, FBP or group DRO, or None) into a temporary folder; the main process adds the
    model, optimiser, EMA, logs and finally the manifest, then renames the folder."""
    ckpt_root = Path(out_dir) / "checkpoints"
    final = ckpt_root / checkpoint_name(state.step)
    tmp = ckpt_root / f"{TMP_PREFIX}{final.name}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    torch.save({"torch_rng": torch.get_rng_state(),
                "method_state": method_state.state_dict() if method_state is not None else {}}, tmp / f"rank{rank}.pt")
    if acc.is_main_process:
        torch.save({"unet": acc.unwrap_model(unet).state_dict(), "optimizer": optimizer.state_dict(),
                    "ema": ema.state_dict() if ema is not None else {}}, tmp / "model.pt")
        (tmp / "state.json").write_text(json.dumps({"step": state.step, "world_size": acc.num_processes,
                                                    "metrics_rows": len(state.metrics),
                                                    "bo_rows": len(state.bo_trace)}))
        pd.DataFrame(state.metrics).to_csv(tmp / "metrics.csv", index=False)
        pd.DataFrame(state.bo_trace).to_csv(tmp / "bo_trace.csv", index=False)
    acc.wait_for_everyone()  # every rank's file is complete before it is hashed
    if acc.is_main_process:
        write_manifest(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        # Only checkpoints up to this step are pruned: the one just written always survives.
        for old in [p for p in checkpoint_dirs(out_dir, warn=False) if checkpoint_step(p) <= state.step][:-keep]:
            shutil.rmtree(old)
        write_logs(out_dir, state.metrics, state.bo_trace)
    acc.wait_for_everyone()
    return final


def write_manifest(folder: Path) -> None:
    """Size and sha256 of every file in ``folder``; written last, so its presence means complete."""
    files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}
    io.write_text(folder / MANIFEST, json.dumps({"format": 1, "files": files}, indent=1))


def load_checkpoint(ckpt: Path, out_dir: Path, acc, unet, optimizer, ema, method_state, rank: int) -> dict:
    """Restore everything saved in ``ckpt`` (call :func:`latest_intact` or :func:`require_intact`
    first) and rebuild the run's logs from it; returns step, metrics and bo_trace.

    Any file that cannot be loaded into this run raises :class:`CheckpointError` naming it."""
    ckpt = Path(ckpt)
    meta = _read_state(ckpt)
    if meta["world_size"] != acc.num_processes:
        raise CheckpointError(ckpt, [f"{ckpt / 'state.json'}: saved by {meta['world_size']} processes, "
                                     f"resumed by {acc.num_processes}; resume with the same number"])
    model, mine = _torch_load(ckpt / "model.pt"), _torch_load(ckpt / f"rank{rank}.pt")
    with _does_not_fit(ckpt / "model.pt"):
        acc.unwrap_model(unet).load_state_dict(model["unet"])
        optimizer.load_state_dict(model["optimizer"])
        if ema is not None:
            ema.load_state_dict(model["ema"])
    with _does_not_fit(ckpt / f"rank{rank}.pt"):
        torch.set_rng_state(mine["torch_rng"])
        if method_state is not None:  # checkpoints written before group DRO existed name it "fbp"
            method_state.load_state_dict(mine["method_state"] if "method_state" in mine else mine["fbp"])
    metrics, bo_trace = _read_log(ckpt / "metrics.csv"), _read_log(ckpt / "bo_trace.csv")
    if acc.is_main_process:
        _rebuild_logs(Path(out_dir), ckpt, meta["step"], metrics, bo_trace)
    return {"step": meta["step"], "metrics": metrics, "bo_trace": bo_trace}


@contextmanager
def _does_not_fit(path: Path) -> Iterator[None]:
    """State that loads but does not fit this run's model or method: an error naming the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(path.parent, [f"{path}: does not fit this run ({_first_line(e)})"]) from None


def _first_line(e: Exception) -> str:
    lines = str(e).splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # torch raises many types for a bad archive; all mean the same here
        raise CheckpointError(path.parent, [f"{path}: cannot be loaded ({_first_line(e)})"]) from None


def _rebuild_logs(out_dir: Path, ckpt: Path, step: int, metrics: list[dict], bo_trace: list[dict]) -> None:
    """The run's logs restart from the checkpoint's; rows written after it are dropped out loud."""
    path = out_dir / "metrics.csv"
    try:
        later = [r for r in _read_log(path) if r.get("step", 0) > step] if path.is_file() else []
    except CheckpointError:
        warnings.warn(f"{path}: unreadable; rebuilt from {ckpt}", stacklevel=3)
        later = []
    if later:
        warnings.warn(f"{path}: dropping {len(later)} row(s) after step {step} (up to step {later[-1]['step']}), "
                      f"logged after {ckpt}, the checkpoint this run resumes from; they are written again "
                      "as training repeats those steps", stacklevel=3)
    write_logs(out_dir, metrics, bo_trace)


def write_logs(out_dir: Path, metrics: list[dict], bo_trace: list[dict]) -> None:
    io.write_csv(Path(out_dir) / "metrics.csv", pd.DataFrame(metrics))
    io.write_csv(Path(out_dir) / "bo_trace.csv", pd.DataFrame(bo_trace))
