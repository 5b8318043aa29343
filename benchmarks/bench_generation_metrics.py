"""Time ``generation_metrics`` on features the size of the mini run (notebook 04's per-method table).

Mini run: 160 real test and 160 generated images, 560 real training images, d = 128 (the domain
encoder), 19 groups over 7 groupings with the hospital's proportions (race 8/12/80 %, 4 %
Hispanic), 100 resamples, ``min_group_size`` 20. Feature extraction is left out: a stub extractor
returns precomputed features (non-negative, low effective rank plus noise, like pooled ReLU
features), so only the metric arithmetic is timed, the part this table adds per method.

    .venv/bin/python benchmarks/bench_generation_metrics.py [--repeats 3] [--n-boot 100] [--label after]

Runs against whatever ``generation_metrics`` is imported (the table's new inputs, the training
features, are passed only when its signature takes them), so the same script times the code
before and after the small-n metrics (KID, PRDC, memorisation, size matching, jackknife) were
added; the "before" row came from the package at commit e07540f, exported with ``git archive``
and put first on PYTHONPATH. Prints the best wall and CPU time of ``--repeats`` runs (one BLAS /
torch thread, as the table runs at d = 128) and replaces the row of ``--label`` in
benchmarks/results/bench_generation_metrics.csv, keeping the others. On the shared machine wall
time swings with other load; compare CPU seconds.
"""
from __future__ import annotations

import argparse
import inspect
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

import fairdiff  # noqa: F401  (cache locations first)
from fairdiff.evaluate.features import FeatureExtractor, generation_metrics
from fairdiff.io import write_csv
from fairdiff.schema import FAIRGENMED

RESULTS = Path(__file__).resolve().parent / "results" / "bench_generation_metrics.csv"


class Lookup(FeatureExtractor):
    """An 'extractor' whose images are row numbers into a precomputed feature table."""

    def __init__(self, features: np.ndarray, logits: np.ndarray):
        super().__init__()
        self.name, self.num_features = "lookup", features.shape[1]
        self.table_f, self.table_l = torch.from_numpy(features), torch.from_numpy(logits)

    def embed(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table_f[rows], self.table_l[rows]


def meta_like_fairgenmed(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Metadata with the hospital's proportions (80/12/8 % race, 58 % female, 4 % Hispanic)."""
    return pd.DataFrame({
        "race": rng.choice(3, n, p=[0.08, 0.12, 0.80]), "gender": (rng.random(n) > 0.58).astype(int),
        "ethnicity": (rng.random(n) < 0.04).astype(int),
        **{lab.name: rng.integers(0, lab.n_classes, n) for lab in FAIRGENMED.labels}})


def pooled_features(n: int, d: int, shift: float, rng: np.random.Generator, mixing: np.ndarray) -> np.ndarray:
    """Non-negative features of low effective rank (16 latent factors) plus noise."""
    z = rng.normal(size=(n, mixing.shape[0])) + shift
    return np.maximum(z @ mixing, 0.0) + 0.05 * rng.random((n, d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=560)
    parser.add_argument("--n-test", type=int, default=160)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--n-boot", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--label", default="after", help="the row to write (e.g. before, after)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(16, args.dim)) / 4
    n_tr, n_te = args.n_train, args.n_test
    features = np.concatenate([pooled_features(n_te, args.dim, 0.0, rng, mixing),   # real test
                               pooled_features(n_te, args.dim, 0.2, rng, mixing),   # generated
                               pooled_features(n_tr, args.dim, 0.0, rng, mixing)])  # real train
    logits = rng.normal(size=(len(features), 24)) * 3
    extractor = Lookup(features, logits)
    real_meta = meta_like_fairgenmed(n_te, rng)
    fake_meta = real_meta.copy()  # one generated image per real test prompt, as in the run
    real, fake = torch.arange(n_te), torch.arange(n_te, 2 * n_te)
    kwargs = {"n_boot": args.n_boot, "min_group_size": 20, "seed": 0}
    with_train = "train_images" in inspect.signature(generation_metrics).parameters
    if with_train:
        kwargs["train_images"] = torch.arange(2 * n_te, 2 * n_te + n_tr)

    walls, cpus = [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(args.repeats):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            table = generation_metrics(real, fake, real_meta, fake_meta, FAIRGENMED, extractor, **kwargs)
            walls.append(time.perf_counter() - start_wall)
            cpus.append(time.process_time() - start_cpu)
    row = {"label": args.label, "n_train": n_tr if with_train else 0, "n_real": n_te, "n_fake": n_te, "dim": args.dim,
           "n_boot": args.n_boot, "rows": len(table), "metrics": table["metric"].nunique(),
           "wall_s": min(walls), "cpu_s": min(cpus), "repeats": args.repeats, "threads": 1,
           "load_avg_1min": os.getloadavg()[0]}
    print(pd.DataFrame([row]).to_string(index=False, float_format="%.2f"))
    old = pd.read_csv(RESULTS) if RESULTS.is_file() else pd.DataFrame(columns=list(row))
    old = old[old["label"] != args.label] if "label" in old else old.iloc[:0]
    write_csv(RESULTS, pd.concat([old, pd.DataFrame([row])], ignore_index=True))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
