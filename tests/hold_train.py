"""Start the notebook's training stage and hold it after its first step until told to go on:
``python tests/hold_train.py PROFILE RUNS METHOD SIGNALS``. After step 1 it writes SIGNALS/ready
and waits for SIGNALS/go (tests/test_run_lock.py starts other processes meanwhile, or kills it)."""
import sys
import time
from pathlib import Path

import fairdiff  # noqa: F401 - caches inside the project, offline
from fairdiff import stages, train as train_mod

profile, runs, method, signals = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
real_train = train_mod.train


def train_and_hold(*args, **kwargs):
    def on_step(info):
        if info["step"] == 1:
            (signals / "ready").write_text("1")
            deadline = time.monotonic() + 300
            while not (signals / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    return real_train(*args, **kwargs, on_step=on_step)


train_mod.train = train_and_hold
stages.trained(stages.context(profile, runs=runs), method)
