"""Start the notebook's training stage and kill this process with SIGKILL (no cleanup) at a given
step: ``python tests/kill_train.py PROFILE RUNS METHOD STEP``. Used by tests/test_stages.py."""
import os
import signal
import sys

import fairdiff  # noqa: F401 - caches inside the project, offline
from fairdiff import stages, train as train_mod

profile, runs, method, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
real_train = train_mod.train


def train_then_die(*args, **kwargs):
    def on_step(info):
        if info["step"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_train(*args, **kwargs, on_step=on_step)


train_mod.train = train_then_die
stages.trained(stages.context(profile, runs=runs), method)
sys.exit(3)  # not reached: the kill comes first
