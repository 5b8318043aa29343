"""Rerun the benchmarks and gather their results into one summary, each file with where and when
it was measured.

    python benchmarks/run_all.py [--skip-trained] [--heavy] [--gather-only] [--only SCRIPT ...]
    python benchmarks/run_all.py --record FILE ... --command "how it was run"

``BENCHMARKS`` lists every script in benchmarks/. ``make bench`` (this script without options)
reruns the ones marked ``default``; the training and sampling ones need the mini runs
(``make reproduce``; ``--skip-trained`` leaves them out); ``--heavy`` adds bench_memory (about
7 min of 5,000-image data); bench_generation_metrics, profile_train and gpu_check are never rerun
here (the reason is in the table). Each run records one row of ``results/provenance.csv`` per file
it wrote: the command, the commit (and whether the tree had uncommitted changes), the date, the
cores, the threads the script computes with, and the 1-minute load average before and after. A
file no one reran keeps its earlier row, so ``results/summary.md`` says for every table when and
at which commit it was measured and whether ``make bench`` reruns it. ``--gather-only`` runs
nothing and rebuilds the summary; ``--only SCRIPT`` reruns just that script; ``--record FILE
--command "..."`` records the provenance of a file a benchmark just wrote when run by hand.
Timings on a shared machine swing with other load: run on a quiet machine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fairdiff import io
from fairdiff.report import code_state, markdown_table

HERE = Path(__file__).parent
RESULTS = HERE / "results"
PROVENANCE = RESULTS / "provenance.csv"
COLUMNS = ["file", "command", "commit", "uncommitted_changes", "date_utc", "cores", "threads", "load_avg_1min_before",
           "load_avg_1min_after", "rerun_by_make_bench", "note"]


@dataclass
class Benchmark:
    script: str
    args: list[str]
    outputs: list[str]  # files under results/
    threads: str  # the intra-op threads the script computes with (set inside the script)
    needs_runs: bool = False
    rerun: str = "default"  # default | heavy | never
    why_not: str = ""  # for heavy / never
    extra: dict = field(default_factory=dict)

    @property
    def command(self) -> str:
        return " ".join(["benchmarks/" + self.script, *self.args])


BENCHMARKS = [
    Benchmark("bench_synth_fairgenmed.py", [], ["bench_synth_fairgenmed.csv"], "1"),
    Benchmark("bench_synth_external.py", [], ["bench_synth_external.csv"], "1"),
    Benchmark("bench_index_fairgenmed.py", [], ["index_fairgenmed.csv"], "1 (the loader is single-threaded)"),
    Benchmark("bench_fbp.py", [], ["bench_fbp.csv", "bo_replay.md"], "1 for a BO event (as shipped), 2 elsewhere"),
    Benchmark("bench_eval_features.py", [], ["bench_eval_features.csv"], "1"),
    Benchmark("bench_train.py", ["--repeats", "3"], ["train.csv"], "2", needs_runs=True),
    # FBP's overhead shrinks as steps get longer: the same comparison at a ~0.3 s step
    Benchmark("bench_train.py", ["--batch", "128", "--variants", "fairdiff", "fairdiff-fairbo", "--repeats", "3"],
              ["train-b128.csv"], "2", needs_runs=True),
    Benchmark("bench_sample.py", [], ["sample.csv"], "2", needs_runs=True),
    Benchmark("bench_tracking.py", [], ["bench_tracking.csv"], "2"),
    Benchmark("bench_memory.py", [], ["bench_memory.csv"], "1", rerun="heavy",
              why_not="heavy (5,000-subject data, about 7 min): only with --heavy"),
    Benchmark("bench_study_workers.py", [], ["bench_study_workers.csv"], "1 per worker", rerun="heavy",
              why_not="heavy (two small studies from scratch, about 10 min; it reuses the study's pretrained base "
                      "from make study, else trains one, about 14 min): only with --heavy"),
    Benchmark("bench_generation_metrics.py", [], ["bench_generation_metrics.csv"], "1", rerun="never",
              why_not="its 'before' row times the package at commit e07540f (git archive on PYTHONPATH); "
                      "rerun by hand with --label"),
    Benchmark("profile_train.py", [], ["profile_train.md"], "1", rerun="never",
              why_not="its reading is kept by hand in benchmarks/results/profile_train.md"),
    Benchmark("gpu_check.py", [], [], "GPU", rerun="never",
              why_not="needs a CUDA GPU (bash benchmarks/gpu_check.sh); never run for this repository"),
]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run(bench: Benchmark) -> list[dict]:
    """Run one benchmark; its provenance rows."""
    before, t0 = _load(), time.perf_counter()
    subprocess.run([sys.executable, str(HERE / bench.script), *bench.args], check=True)
    print(f"== {bench.command}: {time.perf_counter() - t0:.0f} s", flush=True)
    state = code_state()
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return [{"file": out, "command": bench.command, "commit": state["commit"],
             "uncommitted_changes": len(state["uncommitted_changes"] or []), "date_utc": now, "cores": os.cpu_count(),
             "threads": bench.threads, "load_avg_1min_before": before, "load_avg_1min_after": _load(),
             "rerun_by_make_bench": "yes" if bench.rerun == "default" else f"no: {bench.why_not}",
             "note": f"run_all.py, {time.perf_counter() - t0:.0f} s"} for out in bench.outputs]


def record(files: list[str], command: str) -> list[dict]:
    """Provenance rows for result files a benchmark wrote when run by hand (``--record``): the
    commit and uncommitted changes now, the file's modification time as its date."""
    state = code_state()
    rows = []
    for name in files:
        bench = next((b for b in BENCHMARKS if name in b.outputs), None)
        if bench is None or not (RESULTS / name).is_file():
            raise SystemExit(f"run_all.py --record: {name} is not a result file of a benchmark in BENCHMARKS")
        written = dt.datetime.fromtimestamp((RESULTS / name).stat().st_mtime, dt.timezone.utc)
        columns = pd.read_csv(RESULTS / name, nrows=0).columns if name.endswith(".csv") else []
        rows.append({"file": name, "command": command or bench.command, "commit": state["commit"],
                     "uncommitted_changes": len(state["uncommitted_changes"] or []),
                     "date_utc": written.isoformat(timespec="seconds"), "cores": os.cpu_count(),
                     "threads": bench.threads, "load_avg_1min_before": "", "load_avg_1min_after": "",
                     "rerun_by_make_bench": "yes" if bench.rerun == "default" else f"no: {bench.why_not}",
                     "note": "run by hand, recorded with run_all.py --record"
                             + ("; load: the table's own column" if "load_avg_1min" in columns else
                                "; load not recorded")})
    return rows


def read_provenance() -> pd.DataFrame:
    return pd.read_csv(PROVENANCE, dtype=str, keep_default_na=False) if PROVENANCE.is_file() \
        else pd.DataFrame(columns=COLUMNS)


def summary(provenance: pd.DataFrame) -> str:
    """The summary: which benchmarks ``make bench`` reruns, then every table with its provenance."""
    by_file = provenance.set_index("file")
    lines = ["# Benchmark results", "",
             "Written by `benchmarks/run_all.py` (`make bench`) from the files in this folder; each table says where "
             "and when it was measured (`provenance.csv`). Rerun by `make bench`: "
             + ", ".join(f"`{b.command}`" for b in BENCHMARKS if b.rerun == "default") + ". Not rerun: "
             + "; ".join(f"`{b.script}` ({b.why_not})" for b in BENCHMARKS if b.rerun != "default") + ".", ""]
    tables = [p for p in sorted(RESULTS.glob("*.csv")) if p != PROVENANCE]
    others = [p for p in sorted(RESULTS.glob("*.md")) if p.name != "summary.md"]
    for csv in tables + others:
        lines.append(f"### {csv.stem if csv.suffix == '.csv' else csv.name}\n")
        if csv.name in by_file.index:
            p = by_file.loc[csv.name]
            lines.append(f"`{p['command']}` at commit `{p['commit'][:7]}`"
                         + (f" (+{p['uncommitted_changes']} uncommitted files)" if p["uncommitted_changes"] not in
                            ("", "0") else "")
                         + f", {p['date_utc'][:16].replace('T', ' ')} UTC, {p['cores']} cores, threads "
                         f"{p['threads']}, " + (f"load {p['load_avg_1min_before']} -> {p['load_avg_1min_after']}"
                                               if p["load_avg_1min_before"] else "load in the note") + "; rerun by "
                         f"`make bench`: {p['rerun_by_make_bench']}" + (f". {p['note']}" if p["note"] else "") + "\n")
        else:
            lines.append("No provenance recorded for this file.\n")
        lines.append(markdown_table(pd.read_csv(csv)) + "\n" if csv.suffix == ".csv" else "(see the file)\n")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-trained", action="store_true", help="leave out the benchmarks that need the mini runs")
    ap.add_argument("--heavy", action="store_true", help="also rerun bench_memory (about 7 min)")
    ap.add_argument("--gather-only", action="store_true", help="run nothing; rebuild results/summary.md")
    ap.add_argument("--only", nargs="+", default=None, metavar="SCRIPT", help="rerun just these scripts")
    ap.add_argument("--record", nargs="+", default=None, metavar="FILE",
                    help="run nothing; record the provenance of these results/ files, just written by a benchmark "
                         "run by hand (with --command, how it was run)")
    ap.add_argument("--command", default="", help="with --record: the command that wrote the files")
    args = ap.parse_args()
    wanted = {"default", "heavy"} if args.heavy else {"default"}
    chosen = [] if args.gather_only or args.record else [
        b for b in BENCHMARKS if (b.script in args.only if args.only else b.rerun in wanted)
        and b.rerun != "never" and not (args.skip_trained and b.needs_runs)]
    provenance = read_provenance()
    batches = [lambda: record(args.record, args.command)] if args.record else [lambda b=b: run(b) for b in chosen]
    for batch in batches:
        rows = pd.DataFrame(batch(), columns=COLUMNS).astype(str)
        provenance = pd.concat([provenance[~provenance["file"].isin(rows["file"])], rows], ignore_index=True)
        io.write_csv(PROVENANCE, provenance.sort_values("file"))
    io.write_text(RESULTS / "summary.md", summary(provenance))
    print(f"wrote {RESULTS / 'summary.md'}")


if __name__ == "__main__":
    main()
