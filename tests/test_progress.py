"""Long work shows where it is: bars report their state to a file that the reproduction runner
prints, also when the bar itself is disabled (a quiet notebook stage under papermill)."""
from __future__ import annotations

import json
import time

from fairdiff import progress


def test_a_disabled_bar_still_reports_stage_step_and_time_left(tmp_path, monkeypatch):
    target = tmp_path / "progress.json"
    monkeypatch.setenv(progress.ENV, str(target))
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    bar = progress.Progress(total=10, initial=2, desc="train fairbo", disable=True)
    for _ in range(3):
        time.sleep(0.01)
        bar.update(1)
    state = json.loads(target.read_text())
    assert (state["stage"], state["n"], state["total"]) == ("train fairbo", 5, 10)
    assert 0 < state["rate"] < 1000  # 3 steps over about 30 ms, not counting the 2 resumed ones
    line = progress.describe(state)
    assert line.startswith("train fairbo · step 5/10 · ") and "left" in line
    bar.close()


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    bar = progress.Progress(total=3, disable=True)
    bar.update(3)
    bar.close()
    progress.announce("evaluate", "tables")
    assert list(tmp_path.iterdir()) == []


def test_the_runner_prints_what_the_kernel_reports(capsys):
    from fairdiff.reproduce import watch_progress

    with watch_progress("02_fair_finetuning", interval=0.05):
        progress.announce("evaluate", "generation metrics")  # what a child process would write
        time.sleep(0.3)
    out = capsys.readouterr().out
    assert "02_fair_finetuning · evaluate · generation metrics" in out
