"""How much does Fair Bayesian Perturbation add to a training step?

FairGenMed sizes (K = 7 scales, global batch 32, window 30): the per-step cost of weights() +
update(), the cost of one BO event (GP fit + UCB optimisation), and the amortised cost per step.
The BO event is timed both as shipped (single-threaded, see fairness._one_thread) and with
torch's default thread count, the measurement behind that choice.

    .venv/bin/python benchmarks/bench_fbp.py [--windows 3] [--events 5]

Prints a table and writes benchmarks/results/bench_fbp.csv. The machine's load average is
recorded too: on a shared machine, timings are only comparable at similar load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import pandas as pd
import torch

import fairdiff  # noqa: F401  (cache locations first)
from fairdiff import fairness
from fairdiff.io import write_csv
from fairdiff.schema import FAIRGENMED

RESULTS = Path(__file__).resolve().parent / "results" / "bench_fbp.csv"
BATCH, WINDOW = 32, 30


def synthetic_batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A FairGenMed-like global batch: 80/12/8 % race, 58 % female, 4 % Hispanic; losses with a
    small group effect on top of timestep-like noise."""
    race = torch.multinomial(torch.tensor([0.08, 0.12, 0.80]), BATCH, replacement=True, generator=gen)
    male = (torch.rand(BATCH, generator=gen) > 0.58).long()
    hispanic = (torch.rand(BATCH, generator=gen) < 0.04).long()
    groups = torch.stack([race, male, hispanic], dim=1)
    losses = 0.1 + 0.01 * race + 0.05 * torch.rand(BATCH, generator=gen)
    return losses, groups


def ms(seconds: list[float]) -> tuple[float, float]:
    return 1e3 * statistics.median(seconds), 1e3 * statistics.fmean(seconds)


def time_training_steps(windows: int) -> list[dict]:
    fbp = fairness.FairBayesianPerturbation(FAIRGENMED.n_groups, window=WINDOW, seed=0)
    gen = torch.Generator().manual_seed(0)
    plain, bo, every = [], [], []
    for _ in range(windows * WINDOW):
        losses, groups = synthetic_batch(gen)
        start = time.perf_counter()
        fbp.weights(groups)
        record = fbp.update(losses, groups)
        elapsed = time.perf_counter() - start
        every.append(elapsed)
        (bo if record["bo"] else plain).append(elapsed)
    return [
        {"what": "weights+update, step without BO", "n": len(plain), **dict(zip(("median_ms", "mean_ms"), ms(plain)))},
        {"what": "weights+update, step with BO", "n": len(bo), **dict(zip(("median_ms", "mean_ms"), ms(bo)))},
        {"what": f"amortised per step (window {WINDOW})", "n": len(every),
         "median_ms": float("nan"), "mean_ms": 1e3 * statistics.fmean(every)},
    ]


def time_bo_events(events: int, threads: str) -> dict:
    """propose_sigma alone on a full window of 30 points (K = 7)."""
    gen = torch.Generator().manual_seed(1)
    k = sum(FAIRGENMED.n_groups)
    x = torch.rand(WINDOW, k, generator=gen, dtype=torch.float64)
    y = -((x - 0.3) ** 2).sum(1, keepdim=True) + 0.05 * torch.randn(WINDOW, 1, generator=gen, dtype=torch.float64)
    patch = mock.patch.object(fairness, "_one_thread", nullcontext) if threads == "default" else nullcontext()
    times = []
    with patch:
        for i in range(events):
            torch.manual_seed(i)
            start = time.perf_counter()
            fairness.propose_sigma(x, y)
            times.append(time.perf_counter() - start)
    label = "one BO event (as shipped: 1 thread)" if threads == "one" else \
        f"one BO event ({torch.get_num_threads()} threads, torch default)"
    median, mean = ms(times)
    return {"what": label, "n": events, "median_ms": median, "mean_ms": mean}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=3, help="training windows of 30 steps to time")
    parser.add_argument("--events", type=int, default=5, help="stand-alone BO events to time")
    args = parser.parse_args()
    k = sum(FAIRGENMED.n_groups)
    rows = time_training_steps(args.windows)
    rows += [time_bo_events(args.events, "one"), time_bo_events(args.events, "default")]
    load = os.getloadavg()[0]
    table = pd.DataFrame(rows).assign(K=k, batch=BATCH, window=WINDOW, torch_threads=torch.get_num_threads(),
                                      load_avg_1min=round(load, 2))
    print(table[["what", "n", "median_ms", "mean_ms"]].to_string(index=False, float_format="%.2f"))
    print(f"K={k}, batch={BATCH}, window={WINDOW}, torch threads={torch.get_num_threads()}, "
          f"load average {load:.2f} on {os.cpu_count()} cores")
    write_csv(RESULTS, table, float_format="%.3f")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
