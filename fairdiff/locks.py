"""One process per folder: a run being trained, a samples folder being drawn, an evaluation being computed.

Two processes writing one run folder (the same run started twice from the command line, or from a
notebook and the command line) would both write checkpoints, logs and the final model, and leave
whichever finished last. :func:`folder_lock` holds an operating-system lock (``filelock``'s
``FileLock``: ``flock`` on Unix) on ``.<folder name>.lock`` beside the folder for as long as the
work runs; a second process refuses at once with :class:`~fairdiff.errors.FolderInUse`, which
names the folder and the process holding it (its id is kept in ``.<folder name>.lock.pid``), and
changes nothing. The operating system drops the lock with the process that held it, however it
ends (an exception, Ctrl-C, ``kill -9``), so a lock is never left stale; a holder file left by a
killed process is simply overwritten.

The lock sits beside the folder, not in it, so a folder's contents stay what the stages expect
(an empty folder stays empty) and moving a run aside (``--retrain``) leaves the lock in place.
Under ``accelerate launch`` only the main process locks (the other ranks are the same run).
A process may take the lock of a folder it already holds (a stage calling another stage).
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fairdiff import io
from fairdiff.errors import FolderInUse


def lock_path(folder: str | Path) -> Path:
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}.lock"


def holder_path(folder: str | Path) -> Path:
    """The side file naming the lock's holder (process id, host, what it does, since when)."""
    return lock_path(folder).with_name(lock_path(folder).name + ".pid")


def holder(folder: str | Path) -> dict | None:
    """What the holder file says, or None (no holder file, or one being written)."""
    try:
        return json.loads(holder_path(folder).read_text())
    except (OSError, ValueError):
        return None


def _refusal(folder: Path, doing: str) -> FolderInUse:
    who = holder(folder)
    if who is None:
        by = "another process (its id is not written yet)"
    else:
        by = f"process {who.get('pid')} on {who.get('host')} ({who.get('doing')}, since {who.get('since')})"
    return FolderInUse(f"{folder}: in use by {by}; nothing was changed. Wait for it to finish or stop it, then "
                       f"run this again ({doing} needs the folder to itself)")


def _acquire(folder: Path, doing: str):
    from filelock import FileLock, Timeout

    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One lock object per path in this process, counting re-entries: a second object on the same
    # path would take a second OS lock and refuse its own process.
    lock = FileLock(str(path), timeout=0, is_singleton=True, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise _refusal(folder, doing) from None
    return lock


def ensure_free(folder: str | Path, doing: str) -> None:
    """Raise :class:`FolderInUse` at once when another live process holds ``folder``'s lock (e.g.
    sampling a run that is still training); takes the lock only for the check."""
    _acquire(Path(folder).absolute(), doing).release()


@contextmanager
def folder_lock(folder: str | Path, doing: str, enabled: bool = True) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs, or raise :class:`FolderInUse` at once when a
    live process holds it. ``doing`` says what the holder does (shown to whoever is refused);
    ``enabled=False`` (the other ranks of a multi-process run) makes this a no-op."""
    if not enabled:
        yield
        return
    folder = Path(folder).absolute()
    lock = _acquire(folder, doing)
    first = lock.lock_counter == 1
    try:
        if first:
            io.write_text(holder_path(folder), json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(), "doing": doing,
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        yield
    finally:
        if lock.lock_counter == 1:
            holder_path(folder).unlink(missing_ok=True)
        lock.release()
