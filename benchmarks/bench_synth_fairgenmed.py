"""Speed of the synthetic FairGenMed generator on ONE core, full size, JPG and npz writing included.

Usage: .venv/bin/python benchmarks/bench_synth_fairgenmed.py [--n 300] [--batch 20] [--seed 0]

1. Times ``generate_fairgenmed`` end to end (wall clock and this process's CPU time).
2. Times ``write_subject`` (render + JPG + npz, written to disk) in batches and, from /proc/stat,
   measures how many cores OTHER processes used during each batch. On a shared machine the
   quiet batches (others < 0.15 cores) are the honest "one free core" figure; the table says how
   many batches were quiet.
3. Splits one batch into stages (subject table, render, tint + JPEG, npz copy), in memory.

Prints a table and writes benchmarks/results/bench_synth_fairgenmed.csv.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import io  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import fairdiff  # noqa: E402,F401  (sets cache folders)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fairdiff.data.synth import fairgenmed as synth  # noqa: E402
from fairdiff.data.synth.fundus import slo_rgb, slo_rgb_array  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_synth_fairgenmed.csv"
QUIET_CORES = 0.15
TICKS = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> tuple[int, int]:
    """(busy jiffies of the whole machine, jiffies of this process)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    with open("/proc/self/stat") as f:
        utime, stime = (int(v) for v in f.read().rsplit(")", 1)[1].split()[11:13])
    return user + nice + system + irq + softirq + steal, utime + stime


def timed(fn) -> dict:
    """Run ``fn`` once; wall seconds, CPU seconds of this process, and cores used by other processes."""
    busy0, self0 = _busy_ticks()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    busy1, self1 = _busy_ticks()
    others = max(0.0, ((busy1 - busy0) - (self1 - self0)) / TICKS / wall)
    return {"wall_s": wall, "cpu_s": cpu, "other_cores": others}


def row(stage: str, subjects: int, t: dict | list[dict]) -> dict:
    ts = t if isinstance(t, list) else [t]
    wall, cpu = sum(x["wall_s"] for x in ts), sum(x["cpu_s"] for x in ts)
    return {"stage": stage, "subjects": subjects, "wall_s": wall, "cpu_s": cpu,
            "ms_per_subject_cpu": 1e3 * cpu / subjects, "subjects_per_s_wall": subjects / wall,
            "subjects_per_s_cpu": subjects / cpu, "other_cores": float(np.mean([x["other_cores"] for x in ts]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    subjects = synth.draw_subjects(args.n, seed=args.seed).to_dict("records")

    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        tmp = Path(tmp)
        synth.generate_fairgenmed(tmp / "warmup", 3, seed=args.seed, progress=False)  # imports, caches
        rows.append(row("generate_fairgenmed, end to end", args.n, timed(
            lambda: synth.generate_fairgenmed(tmp / "data", args.n, seed=args.seed, progress=False))))
        folder = tmp / "batches"
        folder.mkdir()
        batches = []
        for start in range(0, args.n, args.batch):
            chunk = subjects[start:start + args.batch]
            batches.append((len(chunk), timed(lambda: [synth.write_subject(folder, s, args.seed) for s in chunk])))
        rows.append(row(f"write_subject, all {len(batches)} batches", sum(k for k, _ in batches),
                        [t for _, t in batches]))
        quiet = [(k, t) for k, t in batches if t["other_cores"] < QUIET_CORES]
        if quiet:
            rows.append(row(f"write_subject, {len(quiet)} quiet batches", sum(k for k, _ in quiet),
                            [t for _, t in quiet]))
        best_k, best_t = min(batches, key=lambda b: b[1]["cpu_s"] / b[0])
        rows.append(row("write_subject, fastest batch", best_k, best_t))

    chunk = subjects[:args.batch]
    grays = []
    rows.append(row("  stage: subject table", len(chunk), timed(lambda: synth.draw_subjects(len(chunk), args.seed))))
    rows.append(row("  stage: render (grey, stored frame)", len(chunk), timed(
        lambda: grays.extend(synth.render_subject(s, args.seed) for s in chunk))))
    rows.append(row("  stage: tint + JPEG encode", len(chunk), timed(
        lambda: [slo_rgb(g).save(io.BytesIO(), "JPEG", quality=synth.JPEG_QUALITY) for g in grays])))
    rows.append(row("  stage: 200x200 copy + npz", len(chunk), timed(
        lambda: [np.savez(io.BytesIO(), slo_fundus=slo_rgb_array(np.asarray(g.resize(synth.NPZ_SIZE, Image.BILINEAR))))
                 for g in grays])))

    table = pd.DataFrame(rows)
    table["load_avg_1min"] = os.getloadavg()[0]
    pd.set_option("display.width", 160)
    print(table.round(2).to_string(index=False))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table.round(4).to_csv(RESULTS, index=False)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
