"""The parallel runner gives the serial runner's results bit for bit: the study-smoke profile run
from scratch twice, once in this process (1 worker) and once on 2 spawned worker processes (its
pretrained base and convergence curve included, when the profile pretrains)."""
from __future__ import annotations

import pytest

from fairdiff import study

pytestmark = pytest.mark.slow

ARMS = ["baseline", "fairbo"]


def test_two_workers_reproduce_one_worker_bit_for_bit(tmp_path, capsys):
    results = {}
    for workers in (1, 2):
        results[workers] = study.run_study("study-smoke", arms=ARMS, root=tmp_path / f"w{workers}", workers=workers)
    out = capsys.readouterr().out
    assert "on 2 worker(s)" in out and "study · fairbo seed 1 · " in out
    serial, parallel = (tmp_path / f"w{w}" / "study-smoke" for w in (1, 2))
    for name in study.RESULT_FILES:
        if name == "run_times":  # seconds and worker ids differ, by design
            continue
        mine, theirs = parallel / "results" / f"{name}.csv", serial / "results" / f"{name}.csv"
        assert mine.read_bytes() == theirs.read_bytes(), name
    for seed in (0, 1):  # every arm's own evaluation table, too
        for arm, method in (("baseline", "baseline"), ("fairbo", "fairbo")):
            table = f"seed-{seed}/arms/{arm}/fairgenmed-study-smoke/evaluation/generation-{method}.csv"
            assert (parallel / table).read_bytes() == (serial / table).read_bytes(), table
    times = results[2].run_times
    assert times["pid"].nunique() == 2  # the work really was shared by two processes
    assert results[1].run_times["pid"].nunique() == 1
