"""Run every benchmark in one go and gather their result CSVs into one table.

    python benchmarks/run_all.py [--skip-trained] [--gather-only]

Writes benchmarks/results/summary.md (the table the README shows). The sampling and training
benchmarks need the mini runs (``make reproduce``); ``--skip-trained`` leaves them out;
``--gather-only`` runs nothing and rebuilds the summary from the CSVs there (after one script was rerun).
Timings on a shared machine swing with other load: run on a quiet machine.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from fairdiff.report import markdown_table

HERE = Path(__file__).parent
RESULTS = HERE / "results"
STANDALONE = [["bench_synth_fairgenmed.py"], ["bench_synth_external.py"], ["bench_index_fairgenmed.py"],
              ["bench_fbp.py"], ["bench_eval_features.py"]]
NEEDS_RUNS = [["bench_train.py", "--repeats", "3"],
              # FBP's overhead shrinks as steps get longer: the same comparison at a ~1 s step
              ["bench_train.py", "--batch", "128", "--variants", "fairdiff", "fairdiff-fairbo"],
              ["bench_sample.py"]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-trained", action="store_true")
    ap.add_argument("--gather-only", action="store_true")
    args = ap.parse_args()
    scripts = [] if args.gather_only else STANDALONE + ([] if args.skip_trained else NEEDS_RUNS)
    for script, *script_args in scripts:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / script), *script_args], check=True)
        print(f"== {' '.join([script, *script_args])}: {time.perf_counter() - t0:.0f} s", flush=True)
    parts = []
    for csv in sorted(RESULTS.glob("*.csv")):
        frame = pd.read_csv(csv)
        parts.append(f"### {csv.stem}\n\n{markdown_table(frame)}\n")
    (RESULTS / "summary.md").write_text("\n".join(parts))
    print(f"wrote {RESULTS / 'summary.md'}")


if __name__ == "__main__":
    main()
