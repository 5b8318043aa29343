"""The ``fairdiff`` command (also ``python -m fairdiff``): one subcommand per stage of the pipeline.

``prepare``, ``train``, ``sample``, ``evaluate`` and ``report`` call the same stage functions as
the notebooks, on the same folders (:mod:`fairdiff.stages`), so work done by either is reused by
the other. Expected problems (a bad config, a bad dataset, a run that would be overwritten) print
one line and exit with 2; a traceback is shown for real bugs, or for everything with ``--debug``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fairdiff.config import DATASETS, METHODS
from fairdiff.errors import require_optional_packages

EXIT_BAD_INPUT = 2


def _add_config(p: argparse.ArgumentParser, runs: bool = True) -> None:
    p.add_argument("--config", default="mini", help="profile name (smoke, mini, paper) or a YAML file anywhere")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="dataset (default: the profile's)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override one setting, validated like the profile (repeatable), e.g. --set fbp.window=10")
    if runs:
        p.add_argument("--runs", default=None, help="runs folder (default: runs/)")


def _context(args):
    from fairdiff.config import load_config

    load_config(args.config, args.dataset, sets=args.sets)  # refuse a bad config before the heavy imports
    from fairdiff import stages

    return stages.context(args.config, args.dataset, sets=args.sets, runs=getattr(args, "runs", None))


def _report_rejections(ctx, records) -> None:
    """Print the loader's rejections as a table and keep it beside the runs."""
    from fairdiff import io
    from fairdiff.data import rejection_table

    table = rejection_table(records)
    if len(table):
        print(f"{len(table)} rejected rows or files (data.strict=false skips them; --strict makes them errors):")
        print(table.to_string(index=False))
        io.write_csv(ctx.layout.root / "rejections.csv", table)
        print(f"rejection table written to {ctx.layout.root / 'rejections.csv'}")


def _cmd_synth(args) -> int:
    from fairdiff.prepare import synthesise

    synthesise(args.dataset, args.out, args.n, args.seed, overwrite=args.overwrite)
    print(f"wrote synthetic {args.dataset} ({args.n} subjects, seed {args.seed}) to {args.out}")
    return 0


def _data_flags(args) -> None:
    """--strict and --trust-pickle are the settings data.strict and data.trust_pickle."""
    if args.strict:
        args.sets.append("data.strict=true")
    if args.trust_pickle:
        args.sets.append("data.trust_pickle=true")


def _cmd_prepare(args) -> int:
    _data_flags(args)
    ctx = _context(args)
    from fairdiff import locks, stage_keys, stages
    from fairdiff.prepare import prepare_base

    _report_rejections(ctx, stages.dataset(ctx, progress=True))
    pretrained = stages.pretrained(ctx, progress=True) if stage_keys.pretraining(ctx.cfg) else None
    with locks.folder_lock(ctx.layout.base, "preparing the base pipeline"):
        print(prepare_base(ctx.cfg, ctx.layout.base, force=args.force, pretrained=pretrained))
    return 0


def _cmd_train(args) -> int:
    _data_flags(args)
    ctx = _context(args)
    require_optional_packages(ctx.cfg, evaluate=False)
    from fairdiff import stages

    state = stages._main_process()
    if state.is_main_process:
        _report_rejections(ctx, stages.dataset(ctx, progress=True))
    run = stages.trained(ctx, args.method, progress=True, resume=args.resume or True, restart=args.restart,
                         retrain=args.retrain, max_steps=args.max_steps, out=args.out)
    if state.is_main_process:
        print(f"run: {run}")
    return 0


def _cmd_sample(args) -> int:
    from fairdiff import stages

    if args.run:  # a run folder anywhere: its own config, these overrides
        from fairdiff import locks, stage_keys
        from fairdiff.errors import UsageError
        from fairdiff.sample import run_config, sample_stage_run

        if not args.out:
            raise UsageError("--run needs --out (the folder the images go to)")
        cfg = run_config(args.run)
        locks.ensure_free(args.run, "sampling from a run")  # not while it is being trained
        if not (Path(args.run) / "final").is_dir():
            raise FileNotFoundError(f"{Path(args.run) / 'final'}: the run has no final pipeline yet (training "
                                    "unfinished? `fairdiff train` with its settings resumes it)")
        sample = dict(cfg["sample"])
        for key, value in (("unet", args.unet), ("scheduler", args.scheduler), ("steps", args.steps),
                           ("batch_size", args.batch_size)):
            if value is not None:
                sample[key] = value
        stamp = stage_keys.read_stamp(args.run) or {}
        st = stage_keys.stage("sample", {"sample": sample}, {"train": stamp.get("key", str(Path(args.run).resolve()))},
                              method=cfg.get("method"), split=args.split)
        with locks.folder_lock(args.out, "sampling"):
            out = sample_stage_run(args.run, args.out, st, sample, split=args.split, progress=True)
    else:
        ctx = _context(args)
        require_optional_packages(ctx.cfg, evaluate=False)
        for method in args.methods or ctx.cfg["methods"]:
            stages.sampled(ctx, method, args.split, progress=True)
        out = ctx.layout.root / "samples"
    print(f"samples: {out}")
    return 0


def _cmd_evaluate(args) -> int:
    from fairdiff.analysis import evaluate, tables_dir

    ctx = _context(args)
    require_optional_packages(ctx.cfg)
    evaluate(ctx, args.methods or None, progress=True)
    print(f"tables: {tables_dir(ctx)}")
    return 0


def _cmd_results(args) -> int:
    from fairdiff import report

    runs = getattr(args, "runs", None)
    if args.export:
        dest = report.export_tables(args.config, args.dataset, runs=runs, sets=args.sets, note=args.note)
        print(f"tables and provenance written to {dest}")
    if args.readme or args.check:
        text = report.README.read_text()
        changed = report.readme_differences(text, report.readme_blocks())
        if args.check:
            print("README results blocks differ from the committed tables: " + ", ".join(changed) if changed
                  else "README results blocks match the committed tables")
            return 1 if changed else 0
        report.write_readme()
        print(f"README blocks rewritten: {', '.join(changed) or 'none (already up to date)'}")
    if not (args.export or args.readme):
        print(report.results_markdown(args.config, args.dataset, runs=runs, sets=args.sets), end="")
    return 0


def _cmd_reproduce(args) -> int:
    from fairdiff.reproduce import reproduce

    return reproduce(profile=args.profile, datasets=args.datasets, force=args.force, sets=args.sets)


def _cmd_notebooks(args) -> int:
    from fairdiff.reproduce import refresh_committed_notebooks

    refresh_committed_notebooks(args.names or None)
    return 0


def _cmd_study(args) -> int:
    from fairdiff import study

    if args.redraw is not None:
        from fairdiff import stages

        tables = args.redraw or str(study.EXPORTS / stages.context(args.profile, args.dataset, sets=args.sets).cfg["profile"])
        out = study.run_notebook(args.profile, args.dataset, args.sets, tables=tables)
        print(f"notebook 06 redrew the study's figures from {tables}: {out}")
        return 0
    if args.table or args.export is not None:
        if args.table:
            print(study.plain_tables(study.load_results(args.profile, args.dataset, args.sets)), end="")
        if args.export is not None:
            dest = study.export(args.profile, args.dataset, args.sets, dest=args.export or None)
            print(f"study tables and provenance written to {dest}")
        return 0
    if args.sweep:
        study.run_sweep(args.profile, args.dataset, args.sets, workers=args.workers)
    else:
        study.run_study(args.profile, args.dataset, args.sets, seeds=args.seeds, arms=args.arms, workers=args.workers)
    if not args.no_notebook:
        study.run_notebook(args.profile, args.dataset, args.sets, sweep=args.sweep, seeds=args.seeds, arms=args.arms,
                           workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairdiff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show a traceback for every error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in the real on-disk format")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a synthetic folder this command made")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("prepare", help="stage dataset + base: data (synthetic default) and the starting pipeline")
    _add_config(p)
    p.add_argument("--strict", action="store_true", help="a bad row or file is an error (data.strict=true)")
    p.add_argument("--trust-pickle", action="store_true", help="load FairGenMed npz files that hold pickled "
                   "objects (unpickling runs code: only for data you trust; data.trust_pickle=true)")
    p.add_argument("--force", action="store_true", help="rebuild the base pipeline even if its key is unchanged")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="stage train: fine-tune with a method (resumes by default; works under "
                                     "`accelerate launch`)")
    _add_config(p)
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", default=None, help="run folder (default: runs/<dataset>-<profile>/<method>)")
    p.add_argument("--resume", default=None, help="a checkpoint folder to resume from (default: the newest intact one)")
    p.add_argument("--restart", action="store_true", help="move the run aside and start again from step 0")
    p.add_argument("--retrain", action="store_true",
                   help="a run trained with other settings is moved to <method>.old-<timestamp>/ and trained again")
    p.add_argument("--max-steps", type=int, default=None, help="stop early (the schedule is unchanged)")
    p.add_argument("--strict", action="store_true", help="a bad row or file is an error (data.strict=true)")
    p.add_argument("--trust-pickle", action="store_true", help="load FairGenMed npz files that hold pickled "
                   "objects (unpickling runs code: only for data you trust; data.trust_pickle=true)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="stage sample: one image per record of a split (+ the condition grid)")
    _add_config(p)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="default: the profile's methods")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--run", default=None, help="instead of --config: a training run folder anywhere")
    p.add_argument("--out", default=None, help="with --run: the output folder")
    p.add_argument("--unet", choices=("raw", "ema"), default=None, help="with --run: override sample.unet")
    p.add_argument("--scheduler", choices=("ddim", "dpmsolver"), default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("evaluate", help="stage evaluate: every table of notebook 04 (trains/samples what is missing)")
    _add_config(p)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None, help="default: the profile's methods")
    p.set_defaults(func=_cmd_evaluate)

    for name in ("report", "results"):
        p = sub.add_parser(name, help="stage report: print the README's results tables from the evaluation tables")
        _add_config(p)
        p.add_argument("--export", action="store_true", help="copy the tables the README quotes into the tracked "
                       "figures/tables/<profile>/<dataset>/ with provenance.json (after make reproduce)")
        p.add_argument("--readme", action="store_true", help="rewrite the README's results blocks from the "
                       "committed tables (figures/tables/mini/fairgenmed, benchmarks/results)")
        p.add_argument("--check", action="store_true", help="exit 1 if a README results block differs from "
                       "what --readme would write")
        p.add_argument("--note", default="", help="with --export: the run's conditions as you saw them (e.g. the "
                       "load while it ran), kept in provenance.json and printed with the results")
        p.set_defaults(func=_cmd_results)

    p = sub.add_parser("reproduce", help="run notebooks 01-04 per dataset (and 05 across several) with papermill; "
                                         "figures/ and reports/ regenerated")
    p.add_argument("--profile", default="mini", help="profile name or YAML file")
    p.add_argument("--datasets", nargs="+", default=["fairgenmed"], choices=DATASETS + ("all",))
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE")
    p.add_argument("--force", action="store_true", help="re-execute every notebook (stages still reuse their work)")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("study", help="the controlled multi-seed study (every arm of study.arms x study.seeds, the "
                                     "pre-registered statistics of study.analysis, notebook 06); resumable")
    p.add_argument("--profile", default="study", help="profile name or YAML file (default: study)")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="dataset (default: the profile's)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE")
    p.add_argument("--sweep", action="store_true", help="the fairbo sweep over study.sweep_window x "
                                                        "study.sweep_exploitation instead of the main comparison")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="only these seeds (default: study.seeds)")
    p.add_argument("--arms", nargs="+", default=None, help="only these arms of study.arms (e.g. a pilot: baseline "
                                                          "fairbo); the reference arm must be among them")
    p.add_argument("--workers", type=int, default=None, help="runs at a time, one process and one thread each "
                                                             "(default: study.workers); results do not depend on it")
    p.add_argument("--table", action="store_true", help="only print the study's tables from its CSVs")
    p.add_argument("--export", nargs="?", const="", default=None, metavar="DIR",
                   help="only copy the study's result tables to DIR/<profile>/ (default: the project's "
                        "figures/study/, tracked by git) with provenance.json")
    p.add_argument("--no-notebook", action="store_true", help="do not execute notebook 06 afterwards")
    p.add_argument("--redraw", nargs="?", const="", default=None, metavar="DIR",
                   help="only execute notebook 06 on the result tables in DIR (default: the committed "
                        "figures/study/<profile>/), training and sampling nothing: every figure but the samples")
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("notebooks", help="re-execute notebooks/*.ipynb (smoke profile) from their .py sources")
    p.add_argument("names", nargs="*", help="notebook names without extension (default: all)")
    p.set_defaults(func=_cmd_notebooks)
    return parser


def main(argv: list[str] | None = None) -> int:
    import fairdiff
    from fairdiff.errors import USER_ERRORS

    fairdiff.env.setup()  # cache folders inside the project, offline, before heavy imports
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"fairdiff {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"fairdiff {args.command}: interrupted (a run resumes from its last checkpoint)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
