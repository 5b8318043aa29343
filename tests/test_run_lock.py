"""One process per folder: a second process that would train, sample or compute into a folder in use
refuses at once, naming the folder and the holder's process id, and changes nothing; the lock dies
with its holder (also after kill -9); the ranks of one accelerate run share their main process's lock."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LAUNCH_ENV as ENV, LAUNCH_TWO, ROOT
from fairdiff import locks, stages
from fairdiff.errors import FolderInUse


def _hold_in_child(folder: Path, signals: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s lock until ``signals/go`` exists."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom fairdiff import locks\n"
            "folder, signals = Path(sys.argv[1]), Path(sys.argv[2])\n"
            "with locks.folder_lock(folder, 'sampling'):\n"
            "    (signals / 'ready').write_text('1')\n"
            "    while not (signals / 'go').exists():\n        time.sleep(0.05)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder), str(signals)], env=ENV)
    _wait_for(signals / "ready", proc)
    return proc


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the holder exited with {proc.returncode} before it was ready"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _fairdiff(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairdiff", *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=600)


def _fingerprint(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(proc: subprocess.CompletedProcess, folder: Path, pid: int) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(folder) in err and f"in use by process {pid} " in err, err


def test_another_process_is_refused_at_once_and_a_nested_lock_is_the_same(tmp_path):
    folder, signals = tmp_path / "out", tmp_path / "signals"
    signals.mkdir()
    holder = _hold_in_child(folder, signals)
    try:
        assert locks.holder(folder)["pid"] == holder.pid
        with pytest.raises(FolderInUse, match=rf"{folder}: in use by process {holder.pid} .*sampling"):
            with locks.folder_lock(folder, "sampling"):
                pass
        with pytest.raises(FolderInUse):
            locks.ensure_free(folder, "sampling from it")
        assert not folder.exists()  # refused before anything was made
    finally:
        (signals / "go").write_text("1")
        holder.wait(timeout=60)
    assert holder.returncode == 0 and locks.holder(folder) is None  # released, and its side file gone
    with locks.folder_lock(folder, "training"):
        with locks.folder_lock(folder, "training"):  # a stage calling a stage of the same folder
            assert locks.holder(folder)["pid"] == os.getpid()
        assert locks.holder(folder)["pid"] == os.getpid()  # the outer hold still stands
    assert locks.holder(folder) is None


def _profile(tmp_path: Path, data_root: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""inherit: smoke
data: {{root: {data_root}}}
vae: {{steps: 3}}
train: {{steps: 3, checkpoint_every: 3, batch_size: 4}}
sample: {{steps: 2, grid_per_group: 1}}
""")
    return path


@pytest.mark.slow
def test_a_run_in_training_refuses_a_second_train_and_sampling_and_a_killed_holder_frees_it(
        synthetic_fairgenmed, tmp_path):
    profile, runs, signals = _profile(tmp_path, synthetic_fairgenmed), tmp_path / "runs", tmp_path / "signals"
    signals.mkdir()
    ctx = stages.context(profile, runs=runs)
    run = ctx.layout.method("baseline")
    holder = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hold_train.py"), str(profile), str(runs),
                               "baseline", str(signals)], cwd=ROOT, env=ENV)
    try:
        _wait_for(signals / "ready", holder)  # trained step 1, holds the run
        assert locks.holder(run)["pid"] == holder.pid and locks.holder(run)["doing"] == "training"
        before = _fingerprint(ctx.layout.root)

        _refused(_fairdiff("train", "--config", profile, "--method", "baseline", "--runs", runs), run, holder.pid)
        _refused(_fairdiff("sample", "--config", profile, "--methods", "baseline", "--runs", runs), run, holder.pid)
        out = tmp_path / "elsewhere"
        _refused(_fairdiff("sample", "--run", run, "--out", out), run, holder.pid)
        with pytest.raises(FolderInUse, match=str(holder.pid)):  # the notebook's stage, in this process
            stages.trained(ctx, "baseline")
        assert _fingerprint(ctx.layout.root) == before and not out.exists()  # nothing changed
        assert not ctx.layout.samples("baseline").exists()
    finally:
        holder.kill()  # SIGKILL: no cleanup at all
        holder.wait(timeout=60)
    assert holder.returncode == -9
    assert locks.holder(run)["pid"] == holder.pid  # its side file outlives it ...
    locks.ensure_free(run, "training")  # ... but the lock died with it

    done = _fairdiff("train", "--config", profile, "--method", "baseline", "--runs", runs)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "final").is_dir() and locks.holder(run) is None


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_ranks_of_one_accelerate_run_share_one_lock(synthetic_fairgenmed, tmp_path):
    profile, runs = _profile(tmp_path, synthetic_fairgenmed), tmp_path / "runs"
    cmd = [*LAUNCH_TWO, "-m", "fairdiff", "train", "--config", str(profile), "--method", "fairbo", "--runs", str(runs)]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = stages.context(profile, runs=runs).layout.method("fairbo")
    assert (run / "final").is_dir() and "in use" not in proc.stderr
    assert sorted(p.name for p in (run / "checkpoints" / "step-0000003").glob("rank*.pt")) == ["rank0.pt", "rank1.pt"]
    assert locks.holder(run) is None
