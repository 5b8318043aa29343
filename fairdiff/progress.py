"""Where long work is: stage, step and time left, wherever it runs.

Every long loop uses :class:`Progress`, a tqdm bar (the notebook's own bar in JupyterLab, text on a
terminal) that also writes its state, at most every few seconds, to the file named by
``FAIRDIFF_PROGRESS`` when that variable is set. ``fairdiff reproduce`` sets it for the papermill
kernels it starts and prints the file's changes on its own terminal, so a long notebook shows
``02_fair_finetuning · train fairbo · step 340/800 · 1.9 it/s · about 4 min left`` instead of
silence. :func:`announce` marks a stage that has no bar.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tqdm.auto import tqdm

ENV = "FAIRDIFF_PROGRESS"
EVERY_S = 2.0


def _write(state: dict) -> None:
    target = os.environ.get(ENV)
    if not target:
        return
    path = Path(target)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)
    except OSError:  # progress is best effort: never fail the work for it
        pass


def announce(stage: str, detail: str = "") -> None:
    """A stage without a bar (or before its bar starts)."""
    _write({"stage": stage, "detail": detail, "n": None, "total": None, "rate": None, "time": time.time()})


class Progress(tqdm):
    """tqdm that also reports to ``FAIRDIFF_PROGRESS`` (``desc`` is the stage name shown), also
    when the bar itself is disabled (a notebook stage called quietly still shows on the terminal
    of ``fairdiff reproduce``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._count = int(kwargs.get("initial") or 0)
        self._t0, self._n0, self._last_report = time.time(), self._count, 0.0
        self._label = str(kwargs.get("desc") or "")
        self._report(force=True)

    def _report(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_report < EVERY_S:
            return
        self._last_report = now
        done = self._count - self._n0
        rate = done / (now - self._t0) if done and now > self._t0 else None
        _write({"stage": self._label, "detail": "", "n": self._count, "total": self.total, "rate": rate, "time": now})

    def update(self, n=1):
        out = super().update(n)
        self._count += n
        self._report()
        return out

    def close(self):
        if hasattr(self, "_last_report"):
            self._report(force=True)
        return super().close()


def describe(state: dict) -> str:
    """One line for a terminal: stage, step x/y, rate and time left."""
    parts = [state.get("stage") or "", state.get("detail") or ""]
    n, total, rate = state.get("n"), state.get("total"), state.get("rate")
    if n is not None and total:
        parts.append(f"step {n}/{total}")
        if rate:
            parts.append(f"{rate:.2f} it/s" if rate < 10 else f"{rate:.0f} it/s")
            left = (total - n) / rate
            parts.append(f"about {left / 60:.1f} min left" if left >= 90 else f"about {left:.0f} s left")
    return " · ".join(p for p in parts if p)
