"""The reproduction is deterministic: two smoke runs from scratch (separate work folders, nothing
shared but the code) write byte-identical CSV tables; and an unchanged rerun is a cache hit."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fairdiff.report import (COMMITTED, README_SET, column_mismatches, edited_tables, export_tables,
                             results_markdown)
from fairdiff.reproduce import PER_DATASET, peak_rss

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _reproduce(workdir: Path) -> float:
    env = os.environ | {"FAIRDIFF_WORKDIR": str(workdir)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fairdiff", "reproduce", "--profile", "smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return time.perf_counter() - t0


def test_two_smoke_runs_from_scratch_write_identical_tables(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _reproduce(a)
    _reproduce(b)
    tables_a = sorted(p.relative_to(a) for p in (a / "figures").rglob("*.csv"))
    tables_b = sorted(p.relative_to(b) for p in (b / "figures").rglob("*.csv"))
    assert tables_a == tables_b and len(tables_a) > 40
    differing = [str(p) for p in tables_a if (a / p).read_bytes() != (b / p).read_bytes()]
    assert not differing, f"tables differ between two identical runs: {differing}"
    assert (a / "reports" / "smoke" / "fairgenmed" / "04_analysis.html").is_file()
    resources = pd.read_csv(a / "reports" / "smoke" / "resources.csv")
    assert list(resources["notebook"]) == list(PER_DATASET)
    assert (resources["seconds"] > 0).all() and (resources["peak_rss_mib"] > 100).all()
    # the README's tables print from these files
    gen = pd.read_csv(a / "figures" / "smoke" / "fairgenmed" / "04_generation_metrics.csv")
    fid = gen[(gen.method == "baseline") & (gen.attribute == "all") & (gen.metric == "fid")]["value"].iloc[0]
    assert f"| baseline | {fid:.1f} [" in results_markdown("smoke", "fairgenmed", root=a)
    # the committed tables the README is rendered from still have the columns the code writes
    fresh = export_tables("smoke", "fairgenmed", root=a, dest=tmp_path / "export")
    assert not edited_tables(fresh)
    assert column_mismatches(COMMITTED.joinpath(*README_SET), fresh) == []
    # nothing changed: every notebook is reused
    assert _reproduce(a) < 60


def test_peak_rss_sees_the_memory_of_a_child_process():
    """The notebook kernel is a child of the runner: its memory must count."""
    hold = "import time; block = b'x' * (400 * 2**20); time.sleep(1.0)"
    with peak_rss(interval=0.05) as rss:
        subprocess.run([sys.executable, "-c", hold], check=True)
    assert rss["mib"] > 400
    with peak_rss(interval=0.05) as idle:
        time.sleep(0.2)
    assert idle["mib"] < rss["mib"] - 300
