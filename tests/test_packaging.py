"""The two dependency lists (pyproject.toml, environment.yml) agree, and torch stays pinned."""
from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.unit


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])


def _environment_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    return {re.sub(r"^\s*-\s*", "", line).strip() for line in lines[start + 1:]
            if line.strip().startswith("- ")}


def test_environment_matches_pyproject():
    assert _environment_requirements() == _pyproject_requirements()


def test_torch_is_pinned_to_one_release():
    assert "torch==2.13.0" in _pyproject_requirements()


def test_required_packages_are_listed():
    names = {re.split(r"[<>=!~ ]", r)[0].lower() for r in _pyproject_requirements()}
    for name in ("torch", "transformers", "bitsandbytes", "jupyterlab", "matplotlib", "papermill", "ipywidgets",
                 "accelerate", "safetensors", "tokenizers", "ipykernel", "tqdm", "sacrebleu", "rouge-score",
                 "pytest", "peft"):
        assert name in names, name


def test_ci_runs_make_test():
    script = (ROOT / ".ci" / "run").read_text()
    assert "make test" in script and "set -euo pipefail" in script


def test_package_version_matches_pyproject():
    from peftbook.environment import VERSION

    assert VERSION == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_the_wheel_lists_every_package():
    """pyproject.toml lists the packages by hand (``packages.find`` cannot see the mapped data/)."""
    from setuptools import find_packages

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(listed) == sorted(find_packages(str(ROOT), include=["peftbook*"]) + ["peftbook.data"])


INSTALLED_CHECK = """
import json, sys
import peftbook
from peftbook.models import TINY_DIR, load_model
from peftbook.tasks import TASKS_DIR, load_task
model, tokenizer = load_model("tiny", device="cpu")
task = load_task("sentiment")
print(json.dumps({"package": peftbook.__file__, "tiny": str(TINY_DIR), "tasks": str(TASKS_DIR),
                  "layers": model.config.num_hidden_layers, "train": len(task.examples("train"))}))
"""


@pytest.mark.integration
def test_an_installed_wheel_has_its_model_and_tasks(tmp_path):
    """Build the wheel, install it into a folder and use it from outside the repository."""
    import shutil
    import subprocess
    import sys
    import sysconfig
    import zipfile

    source = tmp_path / "source"  # a copy, so the build leaves nothing in the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "peftbook", source / "peftbook", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", source / "data", ignore=shutil.ignore_patterns("tiny_build"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("peftbook-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"peftbook/data/tiny/model.safetensors", "peftbook/data/tasks/sentiment/train.jsonl"} <= names
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    # the dependencies come from this environment, after the installed wheel
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]])}
    done = subprocess.run([sys.executable, "-c", INSTALLED_CHECK], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("package", "tiny", "tasks"):
        assert found[key].startswith(str(site)), (key, found[key])
    assert found["layers"] > 0 and found["train"] > 0
