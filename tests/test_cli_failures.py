"""Every failure a user can cause ends, per subcommand, in one line on stderr and exit status 2
(``--debug`` shows the traceback): real ``fairdiff`` processes given bad inputs."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fairdiff(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAIRDIFF_WORKDIR": str(tmp_path / "work")}
    return subprocess.run([sys.executable, "-m", "fairdiff", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_line(proc: subprocess.CompletedProcess, command: str, *names: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"fairdiff {command}: error: "), err
    for name in names:
        assert name in err, (name, err)
    return err


def _a_run_without_final(tmp_path: Path) -> Path:
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "config.yaml").write_text("method: baseline\nsample: {unet: ema, scheduler: ddim, steps: 2, "
                                     "batch_size: 4, guidance_scale: 3.0}\n")
    return run


CASES = {
    "sample, a run folder that does not exist": (
        lambda t: ("sample", "--run", t / "nope", "--out", t / "out"), ("nope/config.yaml", "not a training run")),
    "sample, --run without --out": (lambda t: ("sample", "--run", t / "nope"), ("--run needs --out",)),
    "sample, a run that has not finished": (
        lambda t: ("sample", "--run", _a_run_without_final(t), "--out", t / "out"),
        ("unfinished/final", "no final pipeline yet")),
    "train, a profile file that does not exist": (
        lambda t: ("train", "--config", t / "mine.yaml", "--method", "baseline", "--runs", t / "runs"),
        ("mine.yaml: config file not found",)),
    "prepare, a data folder that does not exist": (
        lambda t: ("prepare", "--config", "smoke", "--runs", t / "runs", "--set", f"data.root={t / 'no-data'}"),
        ("no-data", "data.root")),
    "results, before any evaluation": (
        lambda t: ("results", "--config", "smoke", "--runs", t / "runs"), ("generation_metrics.csv", "not found")),
    "notebooks, a name that is not a notebook": (
        lambda t: ("notebooks", "07_nothing"), ("'07_nothing'", "01_data_curation")),
    "reproduce, a profile that does not exist": (
        lambda t: ("reproduce", "--profile", "nothing"), ("nothing.yaml: config file not found",)),
}


@pytest.mark.parametrize("case", CASES)
def test_a_user_error_is_one_line_and_status_2(case, tmp_path):
    args, names = CASES[case]
    args = args(tmp_path)
    _one_line(_fairdiff(tmp_path, *args), args[0], *names)
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs" / "fairgenmed-smoke" / "samples").exists()


def test_debug_shows_the_traceback(tmp_path):
    proc = _fairdiff(tmp_path, "--debug", "sample", "--run", tmp_path / "nope", "--out", tmp_path / "out")
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "FileNotFoundError" in proc.stderr


def _nothing_made(tmp_path: Path) -> bool:
    """Neither a run nor the synthetic dataset: the refusal came before any work."""
    return not (tmp_path / "runs").exists() and not (tmp_path / "work" / "data").exists()


@pytest.mark.slow
@pytest.mark.parametrize("tracker, command", [("wandb", ("train", "--method", "baseline")), ("wandb", ("sample",)),
                                              ("wandb", ("evaluate",)), ("trackio", ("train", "--method", "fairbo"))])
def test_a_tracker_that_is_not_installed_is_refused_before_any_work(tracker, command, tmp_path):
    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    proc = _fairdiff(tmp_path, *command, "--config", "smoke", "--runs", tmp_path / "runs",
                     "--set", f"train.report_to={tracker}")
    _one_line(proc, command[0], f"train.report_to={tracker} needs the package '{tracker}'", f"fairdiff[{tracker}]")
    assert _nothing_made(tmp_path)


@pytest.mark.slow
def test_reproduce_refuses_a_missing_tracker_before_the_first_notebook(tmp_path):
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    proc = _fairdiff(tmp_path, "reproduce", "--profile", "smoke", "--set", "train.report_to=wandb")
    _one_line(proc, "reproduce", "package 'wandb'")
    assert not (tmp_path / "work" / "reports").exists() and _nothing_made(tmp_path)


@pytest.mark.slow
def test_inception_weights_without_torch_fidelity_are_refused_before_any_work(tmp_path):
    if importlib.util.find_spec("torch_fidelity") is not None:
        pytest.skip("torch-fidelity is installed here")
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"stand-in: never read")
    proc = _fairdiff(tmp_path, "evaluate", "--config", "smoke", "--runs", tmp_path / "runs",
                     "--set", f"evaluate.inception_weights={weights}")
    _one_line(proc, "evaluate", "evaluate.inception_weights", "'torch-fidelity'", "fairdiff[inception]")
    assert _nothing_made(tmp_path)
