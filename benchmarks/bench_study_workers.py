"""What running the study's independent (seed, arm) runs in parallel worker processes buys.

    python benchmarks/bench_study_workers.py [--profile study] [--seeds 100 101] [--arms baseline fairbo]
                                             [--workers 1 2]

For each worker count, the same small study (``--seeds`` x ``--arms`` of the profile, every job the
study runs for them: the seeds' shared work, the arms, the convergence curve and, with an FBP-type
arm, the BO-recovery simulation) is run from nothing in its own temporary folder, one intra-op
thread per worker as ``make study`` runs it. Only the pretrained base is shared: it is linked from
the study's own folder (``runs/study/<profile>/pretrain``, made by ``make study``) when it exists,
else trained once by the first run and linked for the next. Seeds outside the study's own keep the
study's runs untouched. Per worker count: the wall time, the summed stage time of the runs
(worker-seconds), the median time of one arm run, and the speed-up over the first worker count.
The results must not depend on the worker count (tests/test_study_parallel.py checks byte
identity on the smoke profile); this compares their primary tables too. Run on a quiet machine.
Writes benchmarks/results/bench_study_workers.csv.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

import fairdiff  # noqa: F401  (cache locations first)
from fairdiff import io, study
from fairdiff.config import load_config
from fairdiff.study.arms import study_root

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="study")
    ap.add_argument("--seeds", nargs="+", type=int, default=[100, 101])
    ap.add_argument("--arms", nargs="+", default=["baseline", "fairbo"])
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    cfg = load_config(args.profile)
    shared = study_root(cfg) / "pretrain"
    rows, primaries = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        for workers in args.workers:
            root = Path(tmp) / f"w{workers}"
            (root / cfg["profile"]).mkdir(parents=True)
            if shared.is_dir():
                (root / cfg["profile"] / "pretrain").symlink_to(shared.resolve(), target_is_directory=True)
            load0, t0 = os.getloadavg()[0], time.perf_counter()
            result = study.run_study(args.profile, seeds=args.seeds, arms=args.arms, root=root, workers=workers)
            wall = time.perf_counter() - t0
            if not shared.is_dir():  # the first run trained the base: the next ones reuse it
                shared = root / cfg["profile"] / "pretrain"
            times = result.run_times
            arm_runs = times[times["arm"] != "all"].groupby(["arm", "seed"])["seconds"].sum()
            primaries[workers] = result.primary
            rows.append({"profile": cfg["profile"], "seeds": len(args.seeds), "arms": " ".join(args.arms),
                         "workers": workers, "threads_per_worker": 1, "wall_s": round(wall, 1),
                         "stage_seconds": round(float(times["seconds"].sum()), 1),
                         "median_arm_run_s": round(float(arm_runs.median()), 1),
                         "load_avg_1min_before": round(load0, 2), "load_avg_1min_after": round(os.getloadavg()[0], 2),
                         "cores": os.cpu_count()})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    frame["speedup"] = (frame["wall_s"].iloc[0] / frame["wall_s"]).round(2)
    first = primaries[args.workers[0]]
    frame["same_primary_table"] = [primaries[w].equals(first) for w in args.workers]
    io.write_csv(RESULTS / "bench_study_workers.csv", frame)
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
