"""The README's results are rendered from committed tables: the README must equal the rendering,
the committed tables must be the export's unedited files, and the renderer itself gives known
answers on hand-made tables. (That the committed tables' columns still match what the code writes
is checked on a fresh smoke run in tests/test_reproduce.py.)"""
from __future__ import annotations

import difflib
import json

import pandas as pd
import pytest

from fairdiff import report
from fairdiff.stage_keys import METHOD_SECTIONS, NOT_IN_KEYS, OMITTED_AT

ATTRS = ["race", "gender", "ethnicity"]


# ----------------------------------------------------------------------------- the repository
def test_readme_results_blocks_equal_the_rendering_of_the_committed_tables():
    text = report.README.read_text()
    rendered = report.render_readme(text, report.readme_blocks())
    if rendered != text:
        diff = "\n".join(difflib.unified_diff(text.splitlines(), rendered.splitlines(), "README.md", "rendered",
                                              lineterm="", n=1))
        pytest.fail("README results blocks differ from the committed tables; run `fairdiff results --readme`:\n"
                    + diff[:6000])


def test_committed_tables_are_the_exports_unedited_files():
    folder = report.COMMITTED.joinpath(*report.README_SET)
    record = report.read_provenance(folder)
    assert (record["profile"], record["dataset"]) == report.README_SET
    expected = {f"{n}.csv" for n in (*report.EVALUATION_TABLES, *report.NOTEBOOK_TABLES, report.RESOURCES)}
    assert set(record["sha256"]) == expected
    assert report.edited_tables(folder) == []
    assert record["commit"] and record["machine_at_export"]["cores"] >= 1
    size = sum(p.stat().st_size for p in report.COMMITTED.rglob("*") if p.is_file())
    assert size < 1_000_000, f"figures/tables holds {size} bytes: keep the committed tables small"
    assert not list(report.COMMITTED.rglob("*.png"))


def test_stage_keys_block_lists_every_setting_left_out():
    block = report.stage_keys_block()
    for key in NOT_IN_KEYS:
        assert f"`{key}`" in block
    for key, value in OMITTED_AT.items():
        assert f"`{key}` at `{'null' if value is None else value}`" in block
    for section, methods in METHOD_SECTIONS.items():
        assert f"`{section}.*` ({', '.join(f'`{m}`' for m in methods)})" in block


def test_run_all_lists_every_benchmark_script(monkeypatch):
    """make bench's registry names every script in benchmarks/, rerun or with the reason it is not."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("run_all", report.PROJECT_ROOT / "benchmarks" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_all", run_all)  # its dataclass looks its module up
    spec.loader.exec_module(run_all)
    scripts = {p.name for p in (report.PROJECT_ROOT / "benchmarks").glob("*.py")} - {"run_all.py"}
    assert scripts == {b.script for b in run_all.BENCHMARKS}
    assert all(b.why_not for b in run_all.BENCHMARKS if b.rerun != "default")


def test_every_benchmark_result_has_provenance():
    """Each file in benchmarks/results/ says when, where and by what it was measured."""
    prov = pd.read_csv(report.BENCH_RESULTS / "provenance.csv", dtype=str, keep_default_na=False)
    files = {p.name for p in report.BENCH_RESULTS.iterdir()
             if p.suffix in (".csv", ".md") and p.name not in ("provenance.csv", "summary.md")}
    assert files <= set(prov["file"]), f"no provenance row for {sorted(files - set(prov['file']))}"
    assert (prov["commit"].str.len() == 40).all() and (prov["date_utc"].str.len() >= 19).all()
    assert prov["rerun_by_make_bench"].str.match(r"^(yes|no: .+)$").all()


# ----------------------------------------------------------------------------- markers
def test_render_replaces_only_the_marked_bodies_and_is_idempotent():
    text = ("intro 1.0\n<!-- results:a -->\nold a\n<!-- /results:a -->\nmiddle 2.0\n"
            "<!-- results:b -->\n<!-- /results:b -->\nend\n")
    out = report.render_readme(text, {"a": "new a", "b": "| x |\n"})
    assert out == ("intro 1.0\n<!-- results:a -->\nnew a\n<!-- /results:a -->\nmiddle 2.0\n"
                   "<!-- results:b -->\n| x |\n<!-- /results:b -->\nend\n")
    assert report.render_readme(out, {"a": "new a", "b": "| x |"}) == out
    assert report.readme_differences(text, {"a": "new a", "b": "| x |"}) == ["a", "b"]
    assert report.readme_differences(out, {"a": "new a", "b": "| x |"}) == []


def test_render_refuses_blocks_the_readme_and_the_renderer_do_not_share():
    text = "<!-- results:a -->\nx\n<!-- /results:a -->\n"
    with pytest.raises(ValueError, match=r"\['a'\] != rendered blocks \['a', 'b'\]"):
        report.render_readme(text, {"a": "1", "b": "2"})
    with pytest.raises(ValueError, match="not closed"):
        report.render_readme(text + "<!-- results:c -->\n", {"a": "1"})


def test_write_readme_rewrites_the_file_and_lists_the_changed_blocks(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("<!-- results:a -->\nold\n<!-- /results:a -->\n")
    assert report.write_readme(path, {"a": "new"}) == ["a"]
    assert path.read_text() == "<!-- results:a -->\nnew\n<!-- /results:a -->\n"
    assert report.write_readme(path, {"a": "new"}) == []


# ----------------------------------------------------------------------------- export and blocks
def _write(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / f"{name}.csv", index=False)


@pytest.fixture
def work(tmp_path):
    """A finished mini reproduction in miniature: the files the export copies, with known values."""
    tables = tmp_path / "runs" / "fairgenmed-mini" / "evaluation" / "tables"
    figures = tmp_path / "figures" / "mini" / "fairgenmed"
    gen, es, gap, sem, fid = [], [], [], [], []
    # (FID, its interval), (IS, its interval): random's FID and fairbo's IS separate from the baseline's
    values = {"baseline": ((18.0, 10.0, 26.0), (1.75, 1.67, 1.80)), "random": ((51.0, 31.0, 71.0), (1.70, 1.6, 1.9)),
              "fairbo": ((27.0, 14.0, 40.0), (1.57, 1.50, 1.60))}
    for method, ((f, flo, fhi), (i, ilo, ihi)) in values.items():
        for metric, (v, lo, hi) in (("fid", (f, flo, fhi)), ("is", (i, ilo, ihi)), ("kid", (0.005, 0.0, 0.01))):
            gen.append({"attribute": "all", "group": "all", "n_real": 160, "small_group": False,
                        "size_matched": False, "metric": metric, "value": v, "boot_lo": lo, "boot_hi": hi,
                        "method": method})
        for group, n in (("Asian", 17), ("Black", 30), ("White", 113)):
            gen.append({"attribute": "race", "group": group, "n_real": n, "small_group": n < 20,
                        "size_matched": False, "metric": "fid", "value": f + n / 10, "boot_lo": 0, "boot_hi": 99,
                        "method": method})
        for k, attr in enumerate(ATTRS):
            es_value = 30.0 + k if method == "baseline" else (41.0 + k if attr != "ethnicity" else 20.0)
            es.append({"attribute": attr, "metric": "es_fid", "value": es_value, "boot_lo": es_value - 5,
                       "boot_hi": es_value + 5, "method": method})
            gap.append({"method": method, "attribute": attr, "fid_gap": 5.0 + k + (method == "fairbo")})
            fid.append({"source": method, "attribute": attr, "group": "all", "metric": "accuracy", "value": 0.5})
    for source, auc in (("real", 0.99), ("baseline", 0.90), ("random", 0.89), ("fairbo", 0.92)):
        sem.append({"task": "glaucoma", "attribute": "all", "metric": "auc", "value": auc, "boot_lo": auc - 0.05,
                    "boot_hi": auc + 0.01, "source": source})
        sem.append({"task": "glaucoma", "attribute": "race", "metric": "es_auc", "value": auc - 0.1,
                    "boot_lo": auc - 0.2, "boot_hi": auc - 0.05, "source": source})
    for name, rows in (("generation_metrics", gen), ("equity_scaled_generation", es), ("fid_gap", gap),
                       ("semantic_metrics", sem), ("attribute_fidelity", fid)):
        _write(tables, name, rows)
    _write(figures, "02_loss_summary", [{"method": m, "first steps": 0.812, "last 20 %": 0.596, "last 20 % (s.e.)": 0.01}
                                        for m in values])
    _write(figures, "02_weight_summary", [{"method": "fairbo", "negative_share": 0.129, "mean": 1, "std": 0.7},
                                          {"method": "random", "negative_share": 0.279, "mean": 1, "std": 1.7}])
    _write(tmp_path / "reports" / "mini", "resources",
           [{"notebook": nb, "profile": "mini", "dataset": d, "seconds": s, "peak_rss_mib": 600.4}
            for nb, d, s in (("01_data_curation", "fairgenmed", 18), ("02_fair_finetuning", "fairgenmed", 348),
                             ("01_data_curation", "ham10000", 999))])
    return tmp_path


def test_export_copies_the_tables_with_their_provenance(work):
    dest = report.export_tables("mini", "fairgenmed", root=work, dest=work / "committed", note="load 3-9")
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted([f"{n}.csv" for n in (*report.EVALUATION_TABLES, *report.NOTEBOOK_TABLES)]
                           + ["resources.csv", "provenance.json"])
    source = work / "runs" / "fairgenmed-mini" / "evaluation" / "tables" / "fid_gap.csv"
    assert (dest / "fid_gap.csv").read_bytes() == source.read_bytes()
    assert pd.read_csv(dest / "resources.csv")["dataset"].tolist() == ["fairgenmed", "fairgenmed"]  # this dataset's
    record = json.loads((dest / "provenance.json").read_text())
    assert (record["profile"], record["dataset"]) == ("mini", "fairgenmed")
    assert {"cpu", "cores", "omp_num_threads", "load_avg_1_5_15min"} <= set(record["machine_at_export"])
    assert len(record["machine_at_export"]["load_avg_1_5_15min"]) == 3
    assert record["note"] == "load 3-9" and "; load 3-9. Tables" in report.provenance_block(dest, "x")
    assert report.edited_tables(dest) == []
    (dest / "fid_gap.csv").write_text((dest / "fid_gap.csv").read_text().replace("5.0", "4.0"))
    assert report.edited_tables(dest) == ["fid_gap.csv"]
    # a second export refreshes its own folder; a folder it did not make is refused
    report.export_tables("mini", "fairgenmed", root=work, dest=dest)
    assert report.edited_tables(dest) == []
    (work / "foreign").mkdir()
    (work / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="without provenance.json"):
        report.export_tables("mini", "fairgenmed", root=work, dest=work / "foreign")


def test_export_names_the_missing_file_and_the_command(work):
    (work / "figures" / "mini" / "fairgenmed" / "02_weight_summary.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"02_weight_summary.csv: not found.*make reproduce PROFILE=mini"):
        report.export_tables("mini", "fairgenmed", root=work, dest=work / "committed")


def test_blocks_written_from_the_values(work):
    dest = report.export_tables("mini", "fairgenmed", root=work, dest=work / "committed")
    learning = report.learning_block(dest)
    assert "falls from 0.81 (first steps) to 0.60" in learning
    assert "glaucoma AUC 0.89-0.92, against 0.99 for real images" in learning
    assert "negative 27.9 % of the time" in learning and "`fairbo` 12.9 %" in learning
    separation = report.separation_block(dest).splitlines()
    assert separation[1:-2] == ["- `random` FID 51.0 [31.0, 71.0] against 18.0 [10.0, 26.0]: worse",
                                "- `fairbo` IS 1.57 [1.50, 1.60] against 1.75 [1.67, 1.80]: worse"]
    assert separation[-1] == "Every other interval of these metrics overlaps the baseline's."
    fairbo = report.fairbo_block(dest, ATTRS)
    assert "higher (less equal) than the baseline's on 2 of 3 attributes (race, gender)" in fairbo
    assert "the intervals do not overlap on race, gender, ethnicity" in fairbo
    assert "over ethnicity 20.0 against 32.0" in fairbo and "over race 6.0 against 5.0" in fairbo
    assert "glaucoma ES-AUC over race: 0.820 [0.720, 0.870] against 0.800 [0.700, 0.850] (intervals overlap)" in fairbo
    assert report.small_groups_block(dest).endswith(": Asian (race, 17 images).")
    resources = report.resources_block(dest)
    assert "| 02_fair_finetuning | 5.8 | 600 |" in resources and "**6.1 min**" in resources


def test_separation_block_says_when_nothing_separates(work):
    tables = work / "runs" / "fairgenmed-mini" / "evaluation" / "tables"
    gen = pd.read_csv(tables / "generation_metrics.csv")
    gen.loc[gen["attribute"] == "all", ["boot_lo", "boot_hi"]] = [-1e9, 1e9]
    gen.to_csv(tables / "generation_metrics.csv", index=False)
    sem = pd.read_csv(tables / "semantic_metrics.csv").assign(boot_lo=0.0, boot_hi=1.0)
    sem.to_csv(tables / "semantic_metrics.csv", index=False)
    assert report.separation_block(tables).startswith(
        "On this synthetic data and at this scale, no method's overall FID, KID x1e3, IS, glaucoma AUC interval")


def test_column_mismatches_name_the_file_and_the_columns(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    _write(old, "a", [{"x": 1, "y": 2}])
    _write(old, "b", [{"x": 1}])
    _write(old, "c", [{"x": 1}])
    _write(new, "a", [{"x": 1, "y": 2}])
    _write(new, "b", [{"x": 1, "z": 3}])
    assert report.column_mismatches(old, new) == [
        "b.csv: committed columns ['x'] != fresh ['x', 'z']", "c.csv: not written by the fresh run"]
    assert report.column_mismatches(new, new) == []
