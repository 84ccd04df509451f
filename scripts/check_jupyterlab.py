"""Browser check: does each notebook open in JupyterLab without being marked modified?

Starts a JupyterLab server on temporary copies of the notebooks (the originals are never opened),
opens each copy in headless Chromium, waits until it is loaded and its kernel is idle (JupyterLab
rewrites the notebook's kernelspec and language_info when the kernel session starts), then reads the
dirty mark (the ``jp-mod-dirty`` class of the notebook's tab). Prints "clean" or "marked modified"
per notebook, with what JupyterLab changed; exits 1 if any notebook is marked modified, 2 if one
could not be checked. The static version of this check is ``peftbook.nbclean.jupyterlab_dirty_causes``.

Dependencies (none of them are the package's; nothing imports this script):
    apt-get install -y chromium                           # Debian's browser: /usr/bin/chromium
    python3 -m venv /tmp/pw-venv && /tmp/pw-venv/bin/pip install playwright
        # the Python client only (any Python will do); do NOT run `playwright install`
    JupyterLab and ipykernel: the project's .venv (``make`` installs them); the script runs
        .venv/bin/jupyter, else the ``jupyter`` on PATH

Run from the repository root (default: notebooks/*.ipynb):
    /tmp/pw-venv/bin/python scripts/check_jupyterlab.py [NOTEBOOK.ipynb ...] [--settle 8] [--chromium PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# In the page: the open notebook's document context is loaded and its kernel is idle.
READY_JS = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(w && w.context && w.context.isReady && w.content && w.content.widgets.length && k && k.status === 'idle'); }"""
DIRTY_JS = "() => document.querySelectorAll('.lm-DockPanel .lm-TabBar-tab.jp-mod-dirty').length > 0"
MODEL_JS = "() => JSON.stringify(window.jupyterapp.shell.currentWidget.context.model.toJSON())"
SHUTDOWN_JS = """async () => { const s = window.jupyterapp.serviceManager.sessions; await s.refreshRunning();
  for (const m of Array.from(s.running())) await s.shutdown(m.id); }"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def jupyter_command() -> list[str]:
    """The project's ``jupyter`` (``.venv/bin/jupyter``), else the one on PATH."""
    local = ROOT / ".venv" / "bin" / "jupyter"
    found = str(local) if local.exists() else shutil.which("jupyter")
    if not found:
        sys.exit("no `jupyter` found: install the project (.venv) or put JupyterLab on PATH")
    return [found]


def start_jupyterlab(root_dir: Path, port: int, log) -> subprocess.Popen:
    """JupyterLab on ``root_dir``, no token, fresh settings and workspaces, the app exposed to the page."""
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(root_dir.parent / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root_dir.parent / "workspaces"))
    command = jupyter_command() + [
        "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1", "--ServerApp.token=",
        "--ServerApp.password=", f"--ServerApp.root_dir={root_dir}", "--LabApp.expose_app_in_browser=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 90
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {server.returncode}; see its log above")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("JupyterLab did not answer within 90 s")


def _joined(value):
    """Notebook JSON with multiline strings joined and ints/floats compared as JavaScript does."""
    if isinstance(value, dict):
        return {k: _joined(v) for k, v in value.items() if k != "trusted"}  # trusted: UI state, never saved
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    if isinstance(value, list):
        return [_joined(v) for v in value]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def changes(before, after, path: str = "") -> list[str]:
    """What differs between the file's notebook JSON and JupyterLab's model of it, one line each."""
    if isinstance(before, dict) and isinstance(after, dict):
        lines = []
        for key in sorted(set(before) | set(after)):
            where = f"{path}.{key}" if path else key
            if key not in after:
                lines.append(f"{where} removed")
            elif key not in before:
                lines.append(f"{where} added: {json.dumps(after[key])[:120]}")
            else:
                lines += changes(before[key], after[key], where)
        return lines
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [line for i, (b, a) in enumerate(zip(before, after)) for line in changes(b, a, f"{path}[{i}]")]
    return [] if before == after else [f"{path}: {json.dumps(before)[:120]} -> {json.dumps(after)[:120]}"]


def check(page, base: str, name: str, original: dict, settle: float) -> tuple[bool, list[str]]:
    """Open notebook ``name`` in a fresh workspace; (marked modified?, what JupyterLab changed)."""
    page.goto(f"{base}/lab/workspaces/check-{int(time.time() * 1000)}/tree/{name}?reset")
    page.wait_for_function(READY_JS, timeout=120_000, polling=250)
    dirty = False
    deadline = time.time() + settle  # a late rewrite (e.g. language_info after kernel_info) still counts
    while time.time() < deadline and not dirty:
        dirty = page.evaluate(DIRTY_JS)
        time.sleep(0.25)
    changed = changes(_joined(original), _joined(json.loads(page.evaluate(MODEL_JS))))
    page.evaluate(SHUTDOWN_JS)
    return dirty, changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook files (default: notebooks/*.ipynb)")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds to watch after the kernel is idle")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("needs playwright: pip install playwright (see the top of this script)")
    paths = [Path(p) for p in args.notebooks] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    with tempfile.TemporaryDirectory(prefix="check-jupyterlab-") as tmp:
        copies = Path(tmp) / "notebooks"
        copies.mkdir()
        names = {}
        for i, path in enumerate(paths):
            name = path.name if path.name not in names.values() else f"{i}_{path.name}"
            shutil.copyfile(path, copies / name)
            names[path] = name
        port = free_port()
        log_path = Path(tmp) / "jupyterlab.log"
        with open(log_path, "w") as log:
            server = start_jupyterlab(copies, port, log)
            results = {}
            try:
                with sync_playwright() as pw:
                    browser = pw.chromium.launch_persistent_context(
                        str(Path(tmp) / "chromium-profile"), executable_path=args.chromium, headless=True,
                        args=CHROMIUM_ARGS)
                    page = browser.new_page()
                    for path, name in names.items():
                        try:
                            results[path] = check(page, f"http://127.0.0.1:{port}", name,
                                                  json.loads(path.read_text()), args.settle)
                        except Exception as error:  # one notebook that cannot be checked: report, go on
                            results[path] = (None, [f"{type(error).__name__}: {str(error).splitlines()[0]}"])
                        dirty, changed = results[path]
                        verdict = {False: "clean", True: "marked modified", None: "NOT CHECKED"}[dirty]
                        print(f"{path}: {verdict}", flush=True)
                        for line in changed:
                            print(f"    {line}", flush=True)
                    browser.close()
            finally:
                server.terminate()
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
        if any(dirty is None for dirty, _ in results.values()):
            print(log_path.read_text()[-3000:], file=sys.stderr)
    dirty_count = sum(dirty is True for dirty, _ in results.values())
    print(f"{dirty_count} of {len(results)} marked modified on open")
    return 2 if any(dirty is None for dirty, _ in results.values()) else int(dirty_count > 0)


if __name__ == "__main__":
    sys.exit(main())
