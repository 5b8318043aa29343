"""The README's study blocks are rendered from the exported tables: known answers on hand-made
tables, the 'not run' text without an export, and the invocation log the wall time comes from."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from fairdiff.study import readme
from fairdiff.study.arms import Arm
from fairdiff.study.runner import log_invocation


def _write(folder, name, rows):
    pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)


@pytest.fixture
def export(tmp_path):
    """A two-arm, three-seed export with round numbers."""
    _write(tmp_path, "arms", [{"arm": "baseline", "method": "baseline"}, {"arm": "fairbo", "method": "fairbo"}])
    _write(tmp_path, "per_seed", [{"arm": a, "seed": s, "fid": 30.0} for a in ("baseline", "fairbo") for s in (0, 1, 2)])
    _write(tmp_path, "arm_means", [
        {"arm": "baseline", "metric": "endpoint", "n_seeds": 3, "mean": 12.0, "lo": 10.0, "hi": 14.0, "sd": 1.0},
        {"arm": "baseline", "metric": "fid", "n_seeds": 3, "mean": 30.0, "lo": 29.0, "hi": 31.0, "sd": 0.5}])
    _write(tmp_path, "primary", [
        {"arm": "fairbo", "against": "baseline", "family": "primary", "n_seeds": 3, "pct": -30.4, "pct_lo": -45.2,
         "pct_hi": -15.0, "p_tost": 0.6, "p_ttest": 0.0004, "p_holm": 0.0008, "verdict": "narrower", "mde_pct": 22.4}])
    _write(tmp_path, "noninferiority", [
        {"arm": "fairbo", "pct": 4.0, "pct_lo": 1.0, "pct_hi": 12.0, "verdict": "not shown"}])
    _write(tmp_path, "sigma_summary", [
        {"arm": "fairbo", "group": g, "planted": g == "race=Black", "n_seeds": 3, "final_sigma": v, "final_lo": v - 0.1,
         "final_hi": v + 0.1, "band_mean": 0.5, "band_lo": 0.4, "band_hi": 0.6, "share_outside_band": share}
        for g, v, share in (("race=Black", 0.7, 0.25), ("race=White", 0.45, 0.05), ("gender=Male", 0.5, 0.0))])
    _write(tmp_path, "bo_pooled", [{"arm": "fairbo", "n_runs": 3, "r2": 0.02, "null_mean": 0.01, "null_q95": 0.03,
                                    "share_p_below_0.05": 1 / 3, "snr": 0.25, "snr_noise": 0.2, "missing_planted": 0.25,
                                    "matched_noise_rel": 3.0}])
    _write(tmp_path, "bo_recovery", [{"noise_rel": n, "arm": a, "seed": 0, "final_distance": d}
                                     for n, a, d in ((0.0, "bo", 0.1), (0.0, "drift", 1.3), (1.0, "bo", 1.2),
                                                     (1.0, "drift", 1.3))])
    _write(tmp_path, "invocations", [
        {"wall_minutes": 25.0, "workers": 2, "cores": 2, "seeds": "0 1 2", "arms": "baseline fairbo", "jobs": 9,
         "jobs_that_worked": 9},
        {"wall_minutes": 0.5, "workers": 2, "cores": 2, "seeds": "0 1 2", "arms": "baseline fairbo", "jobs": 9,
         "jobs_that_worked": 0}])
    (tmp_path / "provenance.json").write_text(json.dumps({
        "made_by": "fairdiff study --profile study", "commit": "abcdef0123",
        "machine_at_export": {"cpu": "a CPU"}, "runs": {"work_minutes": 44.0, "load1_while_running": None}}))
    return tmp_path


def test_blocks_give_the_tables_numbers(export):
    b = readme.blocks(export)
    assert "2 arms x 3 seeds (0, 1, 2), every arm on every seed" in b["study-run"]
    assert "25 min of wall time in 1 invocation(s)" in b["study-run"]  # the cached rerun does not count
    assert "2 worker processes" in b["study-run"] and "`abcdef0`" in b["study-run"]
    assert "12 [10, 14] above the majority's" in b["study-primary"]
    row = next(line for line in b["study-primary"].splitlines() if line.startswith("| `fairbo` vs `baseline`"))
    assert row.split(" | ")[1:] == ["3", "-30 [-45, -15]", "0.600", "< 0.001", "< 0.001", "narrower", "22 |"]
    assert "| `fairbo` | +4 [+1, +12] | not shown |" in b["study-noninferiority"]
    sigma = b["study-sigma"]
    assert "Black 0.7 [0.6, 0.8] (planted); White 0.45 [0.35, 0.55]" in sigma and "Male" not in sigma
    assert "ends at 0.50 [0.40, 0.60]" in sigma and "5-25 %" in sigma
    bo = b["study-bo"]
    assert "R^2 = 0.020 of y, against 0.010" in bo and "in 33 % of runs" in bo and "noise of 3 times" in bo
    assert "absent from 25 % of the batches" in bo
    assert "0x: 0.10 vs 1.30, 1x: 1.20 vs 1.30" in bo


def test_the_speedup_sentence_reads_the_worker_benchmark(export, tmp_path_factory):
    bench = tmp_path_factory.mktemp("bench")
    _write(bench, "bench_study_workers", [
        {"workers": 1, "seeds": 2, "arms": "baseline fairbo", "wall_s": 480.0, "speedup": 1.0, "same_primary_table": True},
        {"workers": 2, "seeds": 2, "arms": "baseline fairbo", "wall_s": 240.0, "speedup": 2.0, "same_primary_table": True}])
    run = readme.blocks(export, bench)["study-run"]
    assert run.startswith(readme.blocks(export)["study-run"])
    assert ("Against 1 worker, 2 workers ran the same small study (2 seeds x baseline, fairbo, from nothing) "
            "2.00x as fast (8.0 -> 4.0 min), with identical primary tables") in run
    assert readme.speedup_sentence(tmp_path_factory.mktemp("empty")) == ""


def test_without_an_export_every_block_says_so(tmp_path):
    b = readme.blocks(tmp_path)
    assert set(b) == {"study-run", "study-primary", "study-noninferiority", "study-sigma", "study-bo"}
    assert all(text == readme.NOT_RUN for text in b.values())


def test_an_incomplete_export_names_the_missing_file(export):
    (export / "primary.csv").unlink()
    with pytest.raises(FileNotFoundError, match="primary.csv"):
        readme.blocks(export)


def test_invocations_are_appended_and_count_the_jobs_that_worked(tmp_path):
    arms = (Arm("baseline", "baseline"), Arm("fairbo", "fairbo"))
    worked = {"seed0": {"times": [{"seconds": 30.0}, {"seconds": 0.1}]}, "arm": {"times": [{"seconds": 0.5}]}}
    log_invocation(tmp_path, 0.0, [0, 1], arms, 2, worked)
    frame = log_invocation(tmp_path, 0.0, [0, 1], arms, 1, {"a": {"times": [{"seconds": 1.0}]}})
    assert list(frame["jobs"]) == [2, 1] and list(frame["jobs_that_worked"]) == [1, 0]
    assert list(frame["workers"]) == [2, 1] and frame["seeds"].iloc[0] == "0 1"
    assert frame["arms"].iloc[0] == "baseline fairbo"
    assert (tmp_path / "invocations.csv").is_file()


@pytest.mark.slow
def test_notebook_06_redraws_every_figure_from_committed_tables_alone(tmp_path, monkeypatch):
    """`fairdiff study --redraw`: notebook 06 on an export (the committed pilot), with no run folder,
    draws every figure but the samples, each from the exported numbers (the forest plot's CSV holds
    primary.csv's rows)."""
    from fairdiff.study import runner

    tables = runner.EXPORTS / "study-pilot"
    monkeypatch.setattr(runner, "WORK_ROOT", tmp_path)  # the executed notebook goes to tmp_path/reports
    out = runner.run_notebook("study", tables=tables, figures=tmp_path / "figures")
    assert (out / "06_study.ipynb").is_file() and (out / "06_study.html").is_file()
    assert out == tmp_path / "reports" / "study" / "study-redraw"
    figures = tmp_path / "figures" / "study-pilot" / "fairgenmed"
    for name in ("06_primary_forest", "06_dose_response", "06_sigma_trajectories", "06_bo_recovery", "06_convergence"):
        assert (figures / f"{name}.png").is_file(), name
    drawn = pd.read_csv(figures / "06_primary_forest.csv")
    exported = pd.read_csv(tables / "primary.csv")
    pd.testing.assert_frame_equal(drawn[list(exported.columns)], exported, check_dtype=False)
    assert not list(figures.glob("*samples*")) and not list(figures.glob("*groups_real*"))  # no run, no samples


@pytest.mark.parametrize("name", ["study", "study-pilot"])
def test_committed_study_exports_are_unedited_and_complete(name):
    """The tables the README's study blocks quote are the export's own files (checksums in their
    provenance.json), with every table the study writes, and stay small."""
    from fairdiff import report
    from fairdiff.study.runner import EXPORTS, RESULT_FILES

    folder = EXPORTS / name
    assert report.edited_tables(folder) == []
    assert {f"{n}.csv" for n in RESULT_FILES} <= set(report.read_provenance(folder)["sha256"])
    assert sum(p.stat().st_size for p in folder.glob("*.csv")) < 500_000


def test_readme_study_blocks_come_from_the_committed_study():
    from fairdiff import report

    assert report.STUDY_EXPORT == report.PROJECT_ROOT / "figures" / "study" / "study"
    assert readme.exported(report.STUDY_EXPORT)
    for name, text in readme.blocks(report.STUDY_EXPORT, report.BENCH_RESULTS).items():
        assert f"<!-- results:{name} -->\n{text}\n<!-- /results:{name} -->" in report.README.read_text()
