"""The README's study section, written from the study's exported tables (``figures/study/<profile>/``).

Every number the README gives about the study comes from here, so the prose around these blocks
stays qualitative and a rerun plus ``fairdiff results --readme`` rewrites the numbers. Each
function takes the export folder and returns one block's markdown; when the study has not been
exported, every block says so instead of inventing a number.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fairdiff.report import markdown_table, project_path
from fairdiff.study.tables import format_ci

NOT_RUN = ("The study has not been exported yet: `make study` then `make study-export` write the tables this "
           "block is rendered from.")
FBP_ARMS = ("fairbo", "fairbo-compdiff")


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = folder / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; the study export is incomplete (make study-export)")
    return pd.read_csv(path)


def exported(folder: Path) -> bool:
    return (Path(folder) / "provenance.json").is_file()


def _pct(value: float, lo: float, hi: float) -> str:
    if pd.isna(value):
        return "-"
    return f"{value:+.0f}" + ("" if pd.isna(lo) else f" [{lo:+.0f}, {hi:+.0f}]")


def _p(p: float) -> str:
    return "-" if pd.isna(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def run_block(folder: Path) -> str:
    """What was run, where, and how long it took."""
    folder = Path(folder)
    prov = json.loads((folder / "provenance.json").read_text())
    arms, per_seed = _read(folder, "arms"), _read(folder, "per_seed")
    seeds = sorted(per_seed["seed"].unique())
    runs = per_seed.groupby("arm")["seed"].nunique()
    lines = [f"{len(arms)} arms x {len(seeds)} seeds ({', '.join(map(str, seeds))}), every arm on every seed"
             if (runs == len(seeds)).all() and len(runs) == len(arms) else
             f"{len(runs)} of {len(arms)} arms, {runs.min()}-{runs.max()} seeds each"]
    inv_path = folder / "invocations.csv"
    if inv_path.is_file():
        inv = pd.read_csv(inv_path)
        worked = inv[inv["jobs_that_worked"] > 0]
        lines.append(f"{worked['wall_minutes'].sum():.0f} min of wall time in {len(worked)} invocation(s) "
                     f"({' + '.join(f'{m:.0f}' for m in worked['wall_minutes'])} min: "
                     + "; ".join(f"{r.arms.count(' ') + 1} arms x {len(str(r.seeds).split())} seeds"
                                 for r in worked.itertuples()) + f") on {int(worked['workers'].max())} worker "
                     f"processes of one thread, {int(worked['cores'].max())} cores")
    load = prov["runs"].get("load1_while_running")
    m = prov["machine_at_export"]
    lines.append(f"{prov['runs']['work_minutes']:.0f} worker-minutes of measured stage work"
                 + (f"; 1-min load while running {load}" if load else ""))
    return (f"Made by `{prov['made_by']}` at commit `{(prov.get('commit') or 'unknown')[:7]}` on {m['cpu']}: "
            + "; ".join(lines) + f". Tables and `provenance.json` in `{project_path(folder)}`.")


def gap_sentence(folder: Path) -> str:
    """The planted gap the baseline leaves: the primary endpoint's reference value."""
    means = _read(folder, "arm_means").set_index(["arm", "metric"])
    ref = _read(folder, "primary")["against"].iloc[0]
    row = means.loc[(ref, "endpoint")]
    fid = means.loc[(ref, "fid")]
    return (f"The `{ref}` arm leaves the planted group's FID {format_ci(row['mean'], row['lo'], row['hi'])} above the "
            f"majority's at n = 400 (mean and 95 % interval over {int(row['n_seeds'])} seeds; overall FID "
            f"{format_ci(fid['mean'], fid['lo'], fid['hi'])}): the gap every change below is a percentage of.")


def primary_block(folder: Path) -> str:
    """Every comparison of the primary endpoint, primary family first."""
    primary = _read(folder, "primary")
    primary = pd.concat([primary[primary["family"] == "primary"], primary[primary["family"] != "primary"]])
    table = pd.DataFrame({
        "comparison": [f"`{a}` vs `{b}`" + (" (primary)" if f == "primary" else "")
                       for a, b, f in zip(primary["arm"], primary["against"], primary["family"])],
        "seeds": primary["n_seeds"].astype(int),
        "change of the gap, % (95 % CI)": [_pct(*v) for v in zip(primary["pct"], primary["pct_lo"], primary["pct_hi"])],
        "TOST p (+-20 %)": [_p(p) for p in primary["p_tost"]],
        "t-test p": [_p(p) for p in primary["p_ttest"]],
        "Holm p": [_p(p) for p in primary["p_holm"]],
        "verdict": primary["verdict"],
        "MDE, %": [f"{v:.0f}" if pd.notna(v) else "-" for v in primary["mde_pct"]],
    })
    return gap_sentence(folder) + "\n\n" + markdown_table(table) + "\n\n" + (
        "Negative: the arm narrows the gap. Verdicts as pre-registered: *narrower* / *wider* when the 95 % "
        "interval excludes 0, *equivalent* when TOST p < 0.05 (the 90 % interval inside +-20 %), else "
        "*inconclusive*. MDE: the change a paired t-test over these seeds detects with 80 % power. "
        "(`primary.csv`)")


def noninferiority_block(folder: Path) -> str:
    ni = _read(folder, "noninferiority")
    table = pd.DataFrame({
        "arm": [f"`{a}`" for a in ni["arm"]],
        "overall FID change, % of the baseline's (95 % CI)": [_pct(*v) for v in zip(ni["pct"], ni["pct_lo"],
                                                                                      ni["pct_hi"])],
        "verdict (margin +10 %)": ni["verdict"]})
    return markdown_table(table) + "\n\n(`noninferiority.csv`)"


def sigma_block(folder: Path) -> str:
    """Where the FBP-type arms' sigma ended, against the band the exploration step alone gives."""
    s = _read(folder, "sigma_summary")
    s = s[s["arm"].isin(FBP_ARMS)]
    if s.empty:
        return "No FBP-type arm was run."
    attribute = s.loc[s["planted"].astype(bool), "group"].iloc[0].split("=")[0]
    s = s[s["group"].str.startswith(attribute + "=")]  # the planted attribute's groups only
    lines = []
    for arm, part in s.groupby("arm", sort=False):
        band = part.iloc[0]
        groups = "; ".join(f"{g.split('=')[-1]} {format_ci(v, lo, hi)}" + (" (planted)" if p else "")
                           for g, v, lo, hi, p in zip(part["group"], part["final_sigma"], part["final_lo"],
                                                      part["final_hi"], part["planted"]))
        outside = part["share_outside_band"]
        lines.append(f"- `{arm}`: final sigma {groups} (mean and 95 % interval over {int(band['n_seeds'])} seeds); "
                     f"the exploration step alone, without BO, ends at {band['band_mean']:.2f} "
                     f"[{band['band_lo']:.2f}, {band['band_hi']:.2f}]; {100 * outside.min():.0f}-"
                     f"{100 * outside.max():.0f} % of the (seed, step) points per group lie outside that band.")
    return "\n".join(lines) + "\n\n(`sigma_summary.csv`)"


def bo_block(folder: Path) -> str:
    """Does BO's objective depend on sigma in the study's runs, and what the simulation says of it."""
    pooled = _read(folder, "bo_pooled")
    if pooled.empty:
        return "No FBP-type arm was run."
    curve = _read(folder, "bo_recovery")
    lines = []
    for _, r in pooled.iterrows():
        matched = r.get("matched_noise_rel", float("nan"))
        lines.append(
            f"- `{r['arm']}` ({int(r['n_runs'])} runs): sigma explains R^2 = {r['r2']:.3f} of y, against "
            f"{r['null_mean']:.3f} with sigma shuffled (95th percentile {r['null_q95']:.3f}); the permutation p is "
            f"below 0.05 in {100 * r['share_p_below_0.05']:.0f} % of runs. Window means of y spread {r['snr']:.2f} "
            f"times as much as y within a window (pure noise: {r['snr_noise']:.2f}); the planted group is absent "
            f"from {100 * r['missing_planted']:.0f} % of the batches."
            + (f" On the simulated curve this R^2 sits at a noise of {matched:.2g} times the objective's range."
               if pd.notna(matched) else ""))
    if len(curve):
        end = curve.groupby(["noise_rel", "arm"])["final_distance"].mean().unstack("arm")
        cells = ", ".join(f"{n:g}x: {row.iloc[0]:.2f} vs {row.iloc[1]:.2f}" for n, row in end.iterrows())
        lines.append(f"- BO-recovery simulation ({' vs '.join(end.columns)}: distance to a known optimum at the end, "
                     f"by noise level): {cells}.")
    return "\n".join(lines) + "\n\n(`bo_pooled.csv`, `bo_recovery.csv`)"


def speedup_sentence(bench: Path) -> str:
    """The parallel runner's measured speed-up (benchmarks/bench_study_workers.py), when measured."""
    path = Path(bench) / "bench_study_workers.csv"
    if not path.is_file():
        return ""
    b = pd.read_csv(path)
    one, rest = b.iloc[0], b.iloc[1:]
    same = "identical" if b["same_primary_table"].all() else "DIFFERENT"
    return " ".join(
        f"Against {int(one['workers'])} worker, {int(r.workers)} workers ran the same small study "
        f"({int(r.seeds)} seeds x {r.arms.replace(' ', ', ')}, from nothing) {r.speedup:.2f}x as fast "
        f"({one['wall_s'] / 60:.1f} -> {r.wall_s / 60:.1f} min), with {same} primary tables "
        f"(`benchmarks/results/bench_study_workers.csv`)." for r in rest.itertuples())


def blocks(folder: Path, bench: Path | None = None) -> dict[str, str]:
    """Every study block of the README, from the export in ``folder`` (and the worker benchmark
    in ``bench``, when given)."""
    names = ("study-run", "study-primary", "study-noninferiority", "study-sigma", "study-bo")
    folder = Path(folder)
    if not exported(folder):
        return {n: NOT_RUN for n in names}
    speedup = speedup_sentence(bench) if bench is not None else ""
    return dict(zip(names, (run_block(folder) + (" " + speedup if speedup else ""), primary_block(folder),
                            noninferiority_block(folder), sigma_block(folder), bo_block(folder))))
