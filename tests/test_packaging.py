"""The two dependency lists (pyproject.toml, environment.yml) agree, and torch stays pinned."""
from __future__ import annotations

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
