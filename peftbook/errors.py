"""The errors peftbook raises for a user's mistake, and the small helpers that keep files and JSON safe.

Every user error is a ``PeftbookError`` with a one-line message that names the bad value and what is
allowed; the CLI prints it as ``error: <message>`` and exits 2 (``--debug`` shows the traceback).
Anything else is a bug and keeps its traceback. The subclasses also derive from the built-in error
that was raised before they existed (``ValueError``, ``FileExistsError``), so ``except ValueError``
in existing code keeps working.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path


class PeftbookError(Exception):
    """Base class of every user error."""

    def _render_traceback_(self) -> list[str]:
        # IPython/Jupyter show this instead of the traceback: a user error is one line there too
        # (``%tb`` or ``--debug`` on the CLI still reach the full one)
        return [f"{type(self).__name__}: {one_line(self)}"]


class ConfigError(PeftbookError, ValueError):
    """A config field or command-line value out of range or of the wrong kind."""


class DataError(PeftbookError, ValueError):
    """A task file that cannot be read as the task format says (file and line named)."""


class AdapterError(PeftbookError, ValueError):
    """An adapter folder that is missing, corrupt or made for another model."""


class OutputError(PeftbookError, FileExistsError):
    """An output path that would overwrite something the user has (or is not a folder)."""


class FetchError(PeftbookError, FileNotFoundError):
    """A named model that is not in the cache and cannot be fetched, or a GGUF file that cannot be converted."""


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def finite(value):
    """``value`` with every NaN/Infinity float replaced by None, so that strict JSON parsers read it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def strict_json(value, **kwargs) -> str:
    """``json.dumps`` that never writes NaN or Infinity (they become null)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see old or new, never half."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def replace_directory(temporary: Path, final: Path) -> Path:
    """Move the finished folder ``temporary`` to ``final``, replacing an earlier ``final`` as a whole."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(temporary, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, final)
    return final
