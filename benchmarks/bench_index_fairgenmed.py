"""How fast does load_fairgenmed index a full-size (10,000 subject) FairGenMed folder?

Target: under 10 s on one core (the loader is single-threaded; CPU time is the number to compare,
wall time also counts waiting for other processes). Writes a temporary folder in the real layout (70/10/20 splits,
one tiny JPG and one small npz per subject), times the loader a few times on a warm file cache,
prints a table and writes benchmarks/results/index_fairgenmed.csv.

    .venv/bin/python benchmarks/bench_index_fairgenmed.py [--subjects 10000] [--repeats 3]

The npz image copy is small here; the loader reads only its header, so its size does not matter.
"""
from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import fairdiff  # noqa: F401  (sets cache folders before anything else)
import numpy as np
import pandas as pd
from PIL import Image

from fairdiff.data.fairgenmed import load_fairgenmed
from fairdiff.io import write_csv

RESULTS = Path(__file__).resolve().parent / "results" / "index_fairgenmed.csv"


def write_folder(root: Path, n: int, seed: int = 0) -> None:
    """n subjects in the FairGenMed layout, with random demographics and labels."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    jpg_bytes = buffer.getvalue()
    splits = rng.choice(["train", "val", "test"], size=n, p=[0.7, 0.1, 0.2])
    rows = []
    for i, split in enumerate(splits, start=1):
        sid, folder = f"{i:05d}", root / split
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"data_{sid}.npz", race=np.array(rng.integers(0, 3)), male=np.array(rng.integers(0, 2)),
                 hispanic=np.array(rng.integers(-1, 2)), glaucoma=np.array(rng.integers(0, 2)),
                 md=np.array(rng.normal(-3, 4)), slo_fundus=np.zeros((8, 8, 3), np.uint8))
        (folder / f"slo_fundus_{sid}.jpg").write_bytes(jpg_bytes)
        rows.append({"filename": f"data_{sid}.npz",
                     "md_severity": rng.choice(["normal", "mild", "moderate", "severe"]),
                     "cdr_status": rng.choice(["normal", "borderline", "abnormal"]),
                     "near_vision_refraction_stage": rng.choice(["positive", "neutral", "negative"]),
                     "rnflt_status": rng.choice(["low", "medium", "high"]), "age": f"{rng.normal(59, 16):.1f}"})
    pd.DataFrame(rows).to_csv(root / "data_summary.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_fairgenmed_") as tmp:
        root = Path(tmp) / "FairGenMed"
        start = time.perf_counter()
        write_folder(root, args.subjects)
        print(f"wrote {args.subjects} subjects in {time.perf_counter() - start:.1f} s")
        results = []
        for repeat in range(1, args.repeats + 1):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            frame = load_fairgenmed(root, strict=True)
            wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
            assert len(frame) == args.subjects
            results.append({"repeat": repeat, "subjects": len(frame), "wall_s": round(wall, 3),
                            "cpu_s": round(cpu, 3), "subjects_per_cpu_s": round(len(frame) / cpu, 1),
                            "load_avg_1min": round(os.getloadavg()[0], 2), "cores": os.cpu_count()})
    table = pd.DataFrame(results)
    print(table.to_string(index=False))
    best = table["cpu_s"].min()
    print(f"best: {best:.2f} CPU s for {args.subjects} subjects on one core "
          f"({'within' if best < 10 else 'OVER'} the 10 s target); a load average above the core count "
          "means other processes shared the machine and inflated both times")
    write_csv(RESULTS, table)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
