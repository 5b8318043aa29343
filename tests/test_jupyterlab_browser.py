"""Notebook 01 opens and runs in JupyterLab in a real browser.

nbval proves the notebooks execute under a kernel; this proves a reader gets the same in the
application they will use: JupyterLab on loopback, Debian's Chromium driven by Playwright, the
"Run All Cells" menu item, then the notebook saved by the browser and read back. The test fails if
any cell raised or never ran (FAIRDIFF_BROWSER_SELFTEST=1 plants a raising cell to show that it
does). A screenshot is kept in ``artifacts/`` (ignored by git).

Chromium comes from Debian (`apt-get install chromium`); `.ci/run` installs it and sets
FAIRDIFF_REQUIRE_BROWSER=1, which turns a missing browser into a failure instead of a skip.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from fairdiff.env import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path(os.environ.get("FAIRDIFF_CHROMIUM", "/usr/bin/chromium"))
NOTEBOOK = "01_data_curation.ipynb"
ARTIFACTS = PROJECT_ROOT / "artifacts"
# Without the background-networking flags Chromium keeps dialling Google on a closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _requirements_or_skip():
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        why = "browser test needs " + " and ".join(missing)
        if os.environ.get("FAIRDIFF_REQUIRE_BROWSER") == "1":
            pytest.fail(why + " (FAIRDIFF_REQUIRE_BROWSER=1)")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url} in {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on loopback serving a copy of the notebooks (autosave never touches
    the committed files), with its kernel writing runs and figures under tmp_path."""
    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.read(PROJECT_ROOT / "notebooks" / NOTEBOOK, as_version=4)
    for cell in nb.cells:  # start blank, so a prompt number can only come from this run
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    if os.environ.get("FAIRDIFF_BROWSER_SELFTEST") == "1":  # prove the test catches a failing cell
        nb.cells.insert(4, nbformat.v4.new_code_cell("raise ValueError('planted')"))
    nbformat.write(nb, root / NOTEBOOK)
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # Render every cell (no windowing) so the page can be checked whole; no autosave mid-run.
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    for plugin, value in {"docmanager-extension/plugin": {"autosave": False},
                          "apputils-extension/notification": {"fetchNews": "false"}}.items():
        path = tmp_path / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port, token = _free_port(), "fairdiff-browser-test"
    env = {**os.environ, "FAIRDIFF_WORKDIR": str(tmp_path / "work"), "OMP_NUM_THREADS": "1",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime")}
    log = tmp_path / "jupyterlab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--LabApp.extension_manager=readonly",
           f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", "--LabApp.news_url=",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", proc, log)
        yield {"url": f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}",
               "notebook": root / NOTEBOOK, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_notebook_01_runs_in_jupyterlab_in_chromium(jupyterlab):
    _requirements_or_skip()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "jupyterlab-notebook-01.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(jupyterlab["url"], wait_until="domcontentloaded", timeout=120_000)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
            # The kernel must be connected, not just the page drawn, or "Run All" runs nothing.
            page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=120_000)

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            page.locator(".jp-CodeCell .jp-InputPrompt", has_text="[1]").wait_for(timeout=60_000)

            code_prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
            n_code = code_prompts.count()
            assert n_code > 5, f"only {n_code} code cells rendered"
            # Done when nothing is queued ([*]) and the kernel is idle; after an error JupyterLab
            # unqueues the remaining cells, so a failure ends the wait too.
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                    const busy = prompts.some(p => p.textContent.includes('[*]'));
                    const idle = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                        .some(e => e.textContent.includes('| Idle'));
                    return !busy && idle;
                }""", timeout=600_000, polling=1000)
            page.screenshot(path=str(shot), full_page=True)

            page.keyboard.press("Control+s")  # the browser writes what it received from the kernel
            page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=60_000)
        except Exception:
            page.screenshot(path=str(shot), full_page=True)
            raise
        finally:
            browser.close()

    nb = nbformat.read(jupyterlab["notebook"], as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"cell raised in JupyterLab: {errors[0].ename}: {errors[0].evalue} (screenshot {shot})"
    assert len(code) == n_code
    assert all(c.execution_count for c in code), f"a code cell never ran (screenshot {shot})"
    assert shot.stat().st_size > 10_000
    # The notebook really ran against the synthetic data: its first code cell prints the subject count.
    printed = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "subjects from synthetic fairgenmed data" in printed
