"""Keep the committed notebooks from opening "modified" in JupyterLab.

When a notebook's kernel session starts, JupyterLab writes the running kernel's spec into
``metadata.kernelspec`` (exactly ``name``, ``display_name``, ``language``) and the kernel's
``language_info`` into ``metadata.language_info``. If either differs from what the file holds, the
document is dirty at once, and a reader who only looked is asked to save.

Our notebooks were generated with the old kernelspec ``{"display_name": "Python 3", ...}``;
ipykernel 6+ (which we require) installs ``python3`` as ``"Python 3 (ipykernel)"``. papermill and
nbclient launch the kernel by name and never rewrite ``kernelspec``, so every render kept the stale
name and JupyterLab flagged every notebook. ``language_info`` is fine: nbclient writes it from the
kernel on each render. Checked in a real JupyterLab with ``scripts/check_jupyterlab.py``.
"""
from __future__ import annotations

import copy

# What JupyterLab writes for the ``python3`` kernel that ipykernel>=6 installs.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# The keys of the ``language_info`` that ipykernel reports (JupyterLab adds it when it is missing).
LANGUAGE_INFO_KEYS = ("codemirror_mode", "file_extension", "mimetype", "name", "nbconvert_exporter",
                      "pygments_lexer", "version")


def jupyterlab_dirty_causes(nb: dict) -> list[str]:
    """Why notebook JSON ``nb`` would open as modified in JupyterLab (an empty list if it would not).

    Static: it cannot see the reader's Python, so a ``language_info.version`` from another Python
    (which JupyterLab also rewrites) is not reported.
    """
    metadata = nb.get("metadata", {})
    causes = []
    kernelspec = metadata.get("kernelspec")
    if kernelspec is None:
        causes.append(f"metadata.kernelspec is missing; JupyterLab adds {KERNELSPEC}")
    elif kernelspec != KERNELSPEC:
        changed = sorted(key for key in set(kernelspec) | set(KERNELSPEC) if kernelspec.get(key) != KERNELSPEC.get(key))
        causes.append("metadata.kernelspec differs from what JupyterLab writes for the python3 kernel: "
                      + ", ".join(f"{key} {kernelspec.get(key)!r} -> {KERNELSPEC.get(key)!r}" for key in changed))
    language_info = metadata.get("language_info")
    if language_info is None:
        causes.append("metadata.language_info is missing; JupyterLab adds the kernel's")
    else:
        missing = [key for key in LANGUAGE_INFO_KEYS if key not in language_info]
        if missing:
            causes.append(f"metadata.language_info lacks {', '.join(missing)}; JupyterLab writes the kernel's")
    return causes


def normalize_for_jupyterlab(nb: dict) -> dict:
    """A copy of notebook JSON ``nb`` with the ``kernelspec`` JupyterLab writes, so it opens unmodified.

    Only ``metadata.kernelspec`` changes (cells, outputs and widget state are untouched);
    ``language_info`` is left to the kernel that renders the notebook.
    """
    normalized = copy.deepcopy(nb)
    normalized.setdefault("metadata", {})["kernelspec"] = dict(KERNELSPEC)
    return normalized
