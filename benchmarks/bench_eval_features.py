"""Per-group generation metrics: extract features once and slice, or re-extract per group?

The authors copied each group's real/generated images to folders and ran fresh torchmetrics
FID, MiFID and IS objects on them: every group re-extracts its images, once per metric.
Over FairGenMed's 19 groups (+ overall) that is 20 real and 30 generated passes per image in
all; slicing one extraction needs 1 + 1. Same extractor for all three ways (a DomainEncoder
at its default 64 px size, trained briefly: the weights do not change the cost), no bootstrap,
no file I/O (which would only widen the gap):

- ``once + slice``: our metric functions on the features of one extraction, sliced per group;
- ``per group``: the same functions, features re-extracted for each group (shared by the
  three metrics): isolates the cost of extraction;
- ``per group, per metric``: the authors' procedure with torchmetrics metric objects;
- ``once + slice, every metric``: ``fairdiff.evaluate.features.generation_metrics`` itself, which
  adds KID, precision/recall/density/coverage, jackknife intervals and size-matched repeats to the
  three: what the evaluation costs in full, not a like-for-like comparison.

    .venv/bin/python benchmarks/bench_eval_features.py [--n 400] [--res 64] [--repeats 2] [--threads 1]

Prints a table and writes benchmarks/results/bench_eval_features.csv. On a shared machine wall
time swings several-fold with other processes, so the speed-up is taken on this process's CPU
time (one torch thread by default, so CPU time is work done, not spinning); both are the best of
``--repeats`` and the load average is recorded.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

import fairdiff  # noqa: F401  (cache locations first)
from fairdiff.evaluate import metrics as M
from fairdiff.evaluate.features import extract, generation_metrics, train_domain_encoder
from fairdiff.evaluate.groups import group_masks
from fairdiff.io import write_csv
from fairdiff.schema import FAIRGENMED

RESULTS = Path(__file__).resolve().parent / "results" / "bench_eval_features.csv"
BATCH = 100  # the authors' metric batch size


def fairgenmed_like(n: int, res: int, seed: int) -> tuple[torch.Tensor, pd.DataFrame]:
    """Images and metadata with the hospital's proportions (80/12/8 % race, 58 % female, 4 % Hispanic)."""
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame({
        "id": [f"{seed}-{i}" for i in range(n)],
        "race": rng.choice(3, n, p=[0.08, 0.12, 0.80]), "gender": (rng.random(n) > 0.58).astype(int),
        "ethnicity": (rng.random(n) < 0.04).astype(int),
        **{lab.name: rng.integers(0, lab.n_classes, n) for lab in FAIRGENMED.labels}})
    images = torch.rand(n, 3, res, res, generator=torch.Generator().manual_seed(seed))
    return images, meta


def selections(real_meta: pd.DataFrame, fake_meta: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    real, fake = group_masks(real_meta, FAIRGENMED), group_masks(fake_meta, FAIRGENMED)
    everything = (np.ones(len(real_meta), bool), np.ones(len(fake_meta), bool))
    return [everything] + [(real[key], fake[key]) for key in real]


def per_group(extractor, real, fake, real_meta, fake_meta, reextract: bool = True) -> None:
    """Our metric functions (FID, MiFID, IS) per selection, on features extracted for each group
    (``reextract``) or once for the whole sets and sliced."""
    if not reextract:
        real_all = extract(extractor, real)[0].double().numpy()
        fake_all, logits_all = (t.double().numpy() for t in extract(extractor, fake))
    for real_sel, fake_sel in selections(real_meta, fake_meta):
        if reextract:
            real_f = extract(extractor, real[torch.from_numpy(real_sel)])[0].double().numpy()
            fake_f, fake_l = (t.double().numpy() for t in extract(extractor, fake[torch.from_numpy(fake_sel)]))
        else:
            real_f, fake_f, fake_l = real_all[real_sel], fake_all[fake_sel], logits_all[fake_sel]
        if min(len(real_f), len(fake_f)) >= 2:
            M.mifid_from_features(real_f, fake_f)
            M.fid_from_features(real_f, fake_f)
        M.inception_score_from_logits(fake_l)


class Logits(torch.nn.Module):
    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, images):
        return self.extractor.embed(images)[1]


def per_group_per_metric(extractor, real, fake, real_meta, fake_meta) -> None:
    """The authors' procedure: fresh torchmetrics objects per group, each extracting its own features."""
    import warnings

    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance

    extractor.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for real_sel, fake_sel in selections(real_meta, fake_meta):
            real_g, fake_g = real[torch.from_numpy(real_sel)], fake[torch.from_numpy(fake_sel)]
            metrics = [FrechetInceptionDistance(feature=extractor, normalize=True),
                       MemorizationInformedFrechetInceptionDistance(feature=extractor, normalize=True)]
            if min(len(real_g), len(fake_g)) >= 2:
                for metric in metrics:
                    for batch in real_g.split(BATCH):
                        metric.update(batch, real=True)
                    for batch in fake_g.split(BATCH):
                        metric.update(batch, real=False)
                    metric.compute()
            inception = InceptionScore(feature=Logits(extractor), normalize=True)
            for batch in fake_g.split(BATCH):
                inception.update(batch)
            inception.compute()


def best_of(repeats: int, fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process), each the best of ``repeats`` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="real and generated images each")
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op and BLAS threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, train_meta = fairgenmed_like(args.n, args.res, seed=0)
    real, real_meta = fairgenmed_like(args.n, args.res, seed=1)
    fake, fake_meta = fairgenmed_like(args.n, args.res, seed=2)
    encoder = train_domain_encoder(train, train_meta, FAIRGENMED, epochs=1, seed=0)
    n_sel = len(selections(real_meta, fake_meta))
    group_passes = sum(int(r.sum()) for r, _ in selections(real_meta, fake_meta))  # 8 n: 7 groupings + overall

    ways = [
        ("once + slice", 2 * args.n, lambda: per_group(encoder, real, fake, real_meta, fake_meta, reextract=False)),
        ("per group", 2 * group_passes, lambda: per_group(encoder, real, fake, real_meta, fake_meta)),
        ("per group, per metric (authors)", 5 * group_passes,
         lambda: per_group_per_metric(encoder, real, fake, real_meta, fake_meta)),
        ("once + slice, every metric of generation_metrics", 2 * args.n,
         lambda: generation_metrics(real, fake, real_meta, fake_meta, FAIRGENMED, encoder, n_boot=0)),
    ]
    rows = []
    with threadpool_limits(limits=args.threads, user_api="blas"):  # the same BLAS threads for every way
        for name, passes, fn in ways:
            wall, cpu = best_of(args.repeats, fn)
            rows.append({"way": name, "image_passes": passes, "wall_s": wall, "cpu_s": cpu})
    table = pd.DataFrame(rows)
    table["speedup_cpu"] = table["cpu_s"] / table["cpu_s"].iloc[0]
    table["speedup_wall"] = table["wall_s"] / table["wall_s"].iloc[0]
    table["n_real"] = table["n_fake"] = args.n
    table["res"], table["selections"], table["feature_dim"] = args.res, n_sel, encoder.num_features
    table["torch_threads"], table["load_avg_1min"] = torch.get_num_threads(), os.getloadavg()[0]
    print(f"{n_sel} selections (overall + 19 groups), {args.n} real + {args.n} generated images at {args.res} px, "
          f"{args.threads} torch thread(s), best of {args.repeats}, load average {os.getloadavg()[0]:.1f}")
    print(table[["way", "image_passes", "wall_s", "cpu_s", "speedup_cpu", "speedup_wall"]].to_string(
        index=False, float_format="%.2f"))
    write_csv(RESULTS, table)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
