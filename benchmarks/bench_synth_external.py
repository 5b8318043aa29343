"""Speed of the synthetic HAM10000 and CheXpert generators and of their loaders, on one core.

Run: ``.venv/bin/python benchmarks/bench_synth_external.py [--n 300]``. Prints a table and writes
``benchmarks/results/bench_synth_external.csv``. Target: at least 100 images per second per
generator, JPEG writing included. Both wall-clock and process CPU time are reported: on a shared
machine the CPU rate is the better estimate of what one quiet core does. ``reference_cpu_s`` is the
CPU time of a fixed pure-Python loop (``sum(range(10**7))``) run just before: compare it across
machines to see how loaded or slow this one was."""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, set before numpy loads

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

import fairdiff  # noqa: E402,F401
from fairdiff.data.chexpert import load_chexpert  # noqa: E402
from fairdiff.data.ham10000 import load_ham10000  # noqa: E402
from fairdiff.data.synth.chexpert import generate_chexpert  # noqa: E402
from fairdiff.data.synth.ham10000 import generate_ham10000  # noqa: E402
from fairdiff.io import write_csv  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_synth_external.csv"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def reference_seconds() -> float:
    """CPU seconds of a fixed pure-Python loop: a yardstick for how fast this core was today."""
    cpu = time.process_time()
    sum(range(10**7))
    return time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="images per dataset")
    args = parser.parse_args()
    generate_ham10000(Path(tempfile.mkdtemp()) / "warmup", 2, progress=False)  # imports, caches
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, generate, load in (("ham10000", generate_ham10000, load_ham10000),
                                     ("chexpert", generate_chexpert, lambda r: load_chexpert(r, frontal_only=False))):
            root = Path(tmp) / name
            _, wall, cpu = timed(lambda: generate(root, args.n, seed=0, progress=False))
            rows.append(dict(step=f"generate {name}", n=args.n, wall_s=wall, cpu_s=cpu,
                             per_s_wall=args.n / wall, per_s_cpu=args.n / cpu))
            frame, wall, cpu = timed(lambda: load(root))
            rows.append(dict(step=f"load {name}", n=len(frame), wall_s=wall, cpu_s=cpu,
                             per_s_wall=len(frame) / wall, per_s_cpu=len(frame) / cpu))
    table = pd.DataFrame(rows)
    table["reference_cpu_s"] = reference_seconds()
    table["machine"] = f"{platform.processor() or platform.machine()} x{os.cpu_count()}"
    print(table.drop(columns=["machine", "reference_cpu_s"]).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"reference loop: {table['reference_cpu_s'].iloc[0]:.3f} CPU s (lower = faster or quieter core)")
    write_csv(RESULTS, table, float_format="%.3f")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
