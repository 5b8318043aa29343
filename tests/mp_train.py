"""Run by tests/test_train.py under `accelerate launch --multi_gpu --num_processes 2` (gloo on CPU):
trains a method (fairbo unless a fifth argument names another) and logs, per process and step, what
the process saw."""
import json
import sys
from pathlib import Path

import fairdiff  # noqa: F401
from fairdiff.train import train

cfg_path, base, out, log_dir = sys.argv[1:5]
method = sys.argv[5] if len(sys.argv) > 5 else "fairbo"
cfg = json.loads(Path(cfg_path).read_text())
Path(log_dir).mkdir(parents=True, exist_ok=True)


def log(info):
    with open(Path(log_dir) / f"rank{info['rank']}.jsonl", "a") as fh:
        fh.write(json.dumps(info) + "\n")


train(cfg, method, out, base, Path(base) / "cache", progress=False, on_step=log)
