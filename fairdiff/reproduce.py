"""The reproduction: notebooks 01-04 per dataset, in order, and 05 across several datasets, with papermill.

Each executed notebook goes to ``reports/<profile>/<dataset>/`` with an HTML rendering. A notebook
is skipped when a stamp shows it already ran on the same inputs: its source, the resolved
profile, the package code and the stamps of the notebooks before it (the stages inside also
reuse their own results, see :mod:`fairdiff.stages`). ``force`` reruns everything.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from fairdiff import io
from fairdiff.stage_keys import digest
from fairdiff.config import load_config
from fairdiff.errors import require_optional_packages
from fairdiff.env import PROJECT_ROOT, WORK_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
PER_DATASET = ("01_data_curation", "02_fair_finetuning", "03_sampling", "04_analysis")
ACROSS_DATASETS = ("05_external_datasets",)
ALL_DATASETS = ("fairgenmed", "ham10000", "chexpert")


def code_version() -> str:
    """Hash of the package sources and configs: a code change invalidates cached notebook runs."""
    h = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "fairdiff").rglob("*.py")) + sorted((PROJECT_ROOT / "configs").glob("*.yaml")):
        h.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


@contextmanager
def peak_rss(interval: float = 0.25):
    """Track the peak resident memory of this process plus its children (the notebook kernel
    papermill starts) while the block runs; yields a dict whose ``mib`` is filled in on exit.
    Sampled every ``interval`` seconds, so a spike shorter than that can be missed."""
    import psutil

    me, result, done = psutil.Process(), {"mib": 0.0}, threading.Event()

    def sample():
        while True:
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # a child that just exited
                    pass
            result["mib"] = max(result["mib"], total / 2**20)
            if done.wait(interval):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()


@contextmanager
def watch_progress(label: str, interval: float = 5.0):
    """Print where the notebook's work is (stage, step, time left) while the block runs: the
    package's bars write ``FAIRDIFF_PROGRESS`` (:mod:`fairdiff.progress`), the kernel inherits the
    variable, and this thread prints each new state on the runner's terminal."""
    from fairdiff.progress import ENV, describe

    fd, path = tempfile.mkstemp(prefix="fairdiff-progress-", suffix=".json")
    os.close(fd)
    before, done = os.environ.get(ENV), threading.Event()
    os.environ[ENV] = path

    def watch():
        last = ""
        while not done.wait(interval):
            try:
                line = describe(json.loads(Path(path).read_text() or "{}"))
            except (OSError, ValueError):
                continue
            if line and line != last:
                print(f"  {label} · {line}", flush=True)
                last = line

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before
        Path(path).unlink(missing_ok=True)


def kernel_options() -> dict:
    """papermill keyword arguments for a quiet, private notebook kernel, and the folders it needs.

    The folders the Makefile points IPython and Jupyter at are created first (IPython otherwise
    warns, in this process and in the kernel, that it falls back to a temporary folder). The kernel's
    sockets are encrypted with CurveZMQ keys the kernel manager provisions for kernels that declare
    support (ipykernel does): without them ipykernel warns, rightly, that code and outputs travel
    in plain text over TCP. Where pyzmq lacks CurveZMQ, that warning stays: it is then true."""
    import zmq
    from traitlets.config import Config

    for var in ("IPYTHONDIR", "JUPYTER_DATA_DIR"):
        if os.environ.get(var):
            Path(os.environ[var]).mkdir(parents=True, exist_ok=True)
    if not zmq.has("curve"):
        return {}
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def check_notebook_names(names) -> None:
    """Refuse names that are not notebooks of ``notebooks/`` (listing those that are)."""
    known = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise FileNotFoundError(f"{NOTEBOOK_DIR}: no notebook {', '.join(map(repr, unknown))}; "
                                f"expected names among {', '.join(known)}")


def run_notebook(name: str, parameters: dict, out_dir: Path, upstream: str, force: bool = False) -> tuple[str, bool]:
    """Execute ``notebooks/<name>.py`` into ``out_dir``; returns (stamp, ran)."""
    kernel = kernel_options()
    import jupytext
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    source = NOTEBOOK_DIR / f"{name}.py"
    stamp = digest(source.read_text(), parameters, code_version(), upstream)
    out_nb, stamp_file = out_dir / f"{name}.ipynb", out_dir / f"{name}.stamp"
    if not force and out_nb.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return stamp, False
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{name}: running (parameters {parameters})", flush=True)
    running, failed = out_dir / f"{name}.running.ipynb", out_dir / f"{name}.failed.ipynb"
    with tempfile.TemporaryDirectory() as tmp:
        nb_in = Path(tmp) / f"{name}.ipynb"
        nbformat.write(jupytext.read(source), nb_in)
        t0 = time.perf_counter()
        try:
            with peak_rss() as rss, watch_progress(name):
                pm.execute_notebook(str(nb_in), str(running), parameters=parameters, kernel_name="python3",
                                    cwd=str(NOTEBOOK_DIR), progress_bar=False, **kernel)
        except Exception:
            if running.exists():
                os.replace(running, failed)  # keep the traceback where the user will look
            print(f"{name} failed; the executed notebook with its traceback is {failed}", flush=True)
            raise
    os.replace(running, out_nb)
    failed.unlink(missing_ok=True)
    html, _ = HTMLExporter().from_filename(str(out_nb))
    io.write_text(out_dir / f"{name}.html", html)
    io.write_text(out_dir / f"{name}.resources.json", json.dumps(
        {"notebook": name, **parameters, "seconds": round(time.perf_counter() - t0, 1),
         "peak_rss_mib": round(rss["mib"], 1)}, sort_keys=True))
    io.write_text(stamp_file, stamp)
    return stamp, True


def resources_table(reports: Path):
    """Run time and peak memory of the last real run of every notebook under ``reports``."""
    import pandas as pd

    rows = [json.loads(p.read_text()) for p in sorted(reports.rglob("*.resources.json"))]
    return pd.DataFrame(rows, columns=["notebook", "profile", "dataset", "seconds", "peak_rss_mib"])


def _peak(out_dir: Path, name: str) -> float:
    return json.loads((out_dir / f"{name}.resources.json").read_text())["peak_rss_mib"]


def reproduce(profile: str = "mini", datasets=("fairgenmed",), force: bool = False, sets=()) -> int:
    """Run notebooks 01-04 per dataset (and 05 across datasets); ``sets`` are ``key.path=value``
    overrides passed to every notebook (validated first)."""
    datasets = ALL_DATASETS if "all" in datasets else tuple(datasets)
    extra = {"sets": list(sets)} if sets else {}
    reports = WORK_ROOT / "reports" / profile
    t_all = time.perf_counter()
    stamps = []
    for dataset in datasets:  # fail early on a broken profile or override, or a package a setting needs
        require_optional_packages(load_config(profile, dataset, sets=sets))
        upstream = ""
        for name in PER_DATASET:
            t0 = time.perf_counter()
            upstream, ran = run_notebook(name, {"profile": profile, "dataset": dataset, **extra}, reports / dataset,
                                         upstream, force)
            print(f"[{profile}/{dataset}] {name}: {'ran' if ran else 'cached'} in {time.perf_counter() - t0:.1f} s"
                  + (f", peak RSS {_peak(reports / dataset, name):.0f} MiB" if ran else ""), flush=True)
        stamps.append(upstream)
    if len(datasets) > 1:
        for name in ACROSS_DATASETS:
            t0 = time.perf_counter()
            _, ran = run_notebook(name, {"profile": profile, "datasets": list(datasets)}, reports / "all",
                                  "".join(stamps), force)
            print(f"[{profile}/all] {name}: {'ran' if ran else 'cached'} in {time.perf_counter() - t0:.1f} s", flush=True)
    io.write_csv(reports / "resources.csv", resources_table(reports))
    print(f"reproduction ({profile}; {', '.join(datasets)}) finished in {time.perf_counter() - t_all:.1f} s; "
          f"executed notebooks in {reports}, figures in {WORK_ROOT / 'figures' / profile}")
    return 0


def refresh_committed_notebooks(names=None) -> None:
    """Regenerate ``notebooks/*.ipynb`` from their ``.py`` sources, executed with the parameters cell's
    defaults (the smoke profile), without papermill's timing metadata or figure pixels: what CI
    re-runs with nbval."""
    kernel = kernel_options()
    import jupytext
    import nbformat
    import papermill as pm

    check_notebook_names(names or [])
    names = names or [p.stem for p in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))]
    for name in names:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            nb_in, nb_out = Path(tmp) / "in.ipynb", Path(tmp) / "out.ipynb"
            nbformat.write(jupytext.read(NOTEBOOK_DIR / f"{name}.py"), nb_in)
            pm.execute_notebook(str(nb_in), str(nb_out), kernel_name="python3", cwd=str(NOTEBOOK_DIR),
                                progress_bar=False, **kernel)
            nb = nbformat.read(nb_out, as_version=4)
        nb.metadata.pop("papermill", None)
        for index, cell in enumerate(nb.cells):
            # Stable ids (nbformat draws random ones), so a refresh only shows real changes in git.
            cell.id = hashlib.sha256(f"{name}:{index}:{cell.source}".encode()).hexdigest()[:8]
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
            for output in cell.get("outputs", []):
                # Figures live in figures/ (and the HTML reports); nbval compares text only. Keeping the
                # PNGs would put megabytes of smoke-profile pixels into git.
                output.get("data", {}).pop("image/png", None)
        nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
        with io.atomic_path(NOTEBOOK_DIR / f"{name}.ipynb") as tmp_path:
            nbformat.write(nb, tmp_path)
        print(f"{name}.ipynb refreshed in {time.perf_counter() - t0:.1f} s", flush=True)
