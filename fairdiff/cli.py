"""The ``fairdiff`` command (also ``python -m fairdiff``): one subcommand per stage of the paper."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DATASETS = ("fairgenmed", "ham10000", "chexpert")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="mini", help="profile name (smoke, mini, paper) or a YAML file")
    p.add_argument("--dataset", choices=DATASETS, default=None, help="dataset (default: the profile's)")


def _cmd_synth(args) -> int:
    from fairdiff.prepare import synthesise

    synthesise(args.dataset, args.out, args.n, args.seed, overwrite=args.overwrite)
    print(f"wrote synthetic {args.dataset} ({args.n} subjects, seed {args.seed}) to {args.out}")
    return 0


def _cmd_prepare(args) -> int:
    from fairdiff.config import load_config
    from fairdiff.prepare import ensure_dataset, prepare_base
    from fairdiff.runs import layout_for

    cfg = load_config(args.config, args.dataset)
    ensure_dataset(cfg)
    summary = prepare_base(cfg, layout_for(cfg, args.runs).base, force=args.force)
    print(summary)
    return 0


def _cmd_train(args) -> int:
    from fairdiff.config import load_config
    from fairdiff.prepare import base_source, ensure_dataset, prepare_base
    from fairdiff.runs import layout_for
    from fairdiff.train import train

    cfg = load_config(args.config, args.dataset)
    layout = layout_for(cfg, args.runs)
    from accelerate import PartialState

    state = PartialState(cpu=True) if not _cuda() else PartialState()
    if state.is_main_process:
        ensure_dataset(cfg)
        prepare_base(cfg, layout.base)
    state.wait_for_everyone()
    out = Path(args.out) if args.out else layout.method(args.method)
    train(cfg, args.method, out, base_source(cfg, layout.base), layout.cache, resume=args.resume,
          max_steps=args.max_steps)
    if state.is_main_process:
        print(f"run written to {out}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _cmd_sample(args) -> int:
    from fairdiff.sample import sample_run

    out = sample_run(args.run, split=args.split, out=args.out, unet=args.unet, scheduler=args.scheduler,
                     steps=args.steps, batch_size=args.batch_size)
    print(f"samples written to {out}")
    return 0


def _cmd_reproduce(args) -> int:
    from fairdiff.reproduce import reproduce

    return reproduce(profile=args.profile, datasets=args.datasets, force=args.force)


def _cmd_notebooks(args) -> int:
    from fairdiff.reproduce import refresh_committed_notebooks

    refresh_committed_notebooks(args.names or None)
    return 0


def _cmd_results(args) -> int:
    from fairdiff.report import results_markdown

    print(results_markdown(args.profile, args.dataset), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairdiff", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in the real on-disk format")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a synthetic folder this command made")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("prepare", help="data (synthetic default) and the starting pipeline (tiny: trains its VAE)")
    _add_config(p)
    p.add_argument("--runs", default=None, help="runs folder (default: runs/)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="fine-tune with a method; works under `accelerate launch`")
    _add_config(p)
    p.add_argument("--method", required=True, choices=("baseline", "random", "fairbo", "reweight", "resample"))
    p.add_argument("--out", default=None, help="run folder (default: runs/<dataset>-<profile>/<method>)")
    p.add_argument("--runs", default=None)
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder")
    p.add_argument("--max-steps", type=int, default=None, help="stop early (the schedule is unchanged)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("sample", help="one image per record of a split, plus the condition grid")
    p.add_argument("--run", required=True, help="a training run folder")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    p.add_argument("--unet", choices=("raw", "ema"), default=None, help="default: the profile's sample.unet")
    p.add_argument("--scheduler", choices=("ddim", "dpmsolver"), default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("reproduce", help="run every notebook with papermill; figures/ and reports/ regenerated")
    p.add_argument("--profile", default="mini", choices=("smoke", "mini", "paper"))
    p.add_argument("--datasets", nargs="+", default=["fairgenmed"], choices=DATASETS + ("all",))
    p.add_argument("--force", action="store_true", help="rerun every stage even if its inputs are unchanged")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("notebooks", help="re-execute notebooks/*.ipynb (smoke profile) from their .py sources")
    p.add_argument("names", nargs="*", help="notebook names without extension (default: all)")
    p.set_defaults(func=_cmd_notebooks)

    p = sub.add_parser("results", help="print the README's results tables from a reproduction's CSVs")
    p.add_argument("--profile", default="mini", choices=("smoke", "mini", "paper"))
    p.add_argument("--dataset", default="fairgenmed", choices=DATASETS)
    p.set_defaults(func=_cmd_results)
    return parser


def main(argv: list[str] | None = None) -> int:
    import fairdiff

    fairdiff.env.setup()  # cache folders inside the project, offline, before heavy imports
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
