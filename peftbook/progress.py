"""Progress bars that read right wherever they are seen: live while someone watches, finished when read later.

Every long loop in peftbook (training, few-shot scoring, the benchmark grid, pretraining) makes its
bar with ``progress_bar``. What the bar does depends on ``PEFTBOOK_PROGRESS``:

- ``live`` (the default): ``tqdm.auto`` - a widget in Jupyter, a text bar on stderr in a terminal;
- ``final``: nothing while the loop runs, then one line with the bar's final state on stdout when it
  closes (``train: 100%|██████████| 600/600 [01:02<00:00, 9.6it/s, loss=0.0123]``). The notebook
  runner (``peftbook.notebooks.run_notebooks``) sets it, so a committed notebook records what the run
  did, not a widget whose saved text is its starting "0%" state, and no viewer needs widgets to read it;
- ``off``: no bars at all.

Model loading's own bars (``transformers``) follow the same switch: ``final`` and ``off`` turn them off.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys

from tqdm.std import tqdm

from peftbook.errors import ConfigError

MODES = ("live", "final", "off")
ENV = "PEFTBOOK_PROGRESS"


def progress_mode() -> str:
    """The mode ``PEFTBOOK_PROGRESS`` asks for (``live`` when unset); an unknown value raises naming the allowed ones."""
    mode = os.environ.get(ENV, "live").strip().lower() or "live"
    if mode not in MODES:
        raise ConfigError(f"{ENV}={mode!r} is not allowed; allowed: {', '.join(MODES)}")
    return mode


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", disable: bool = False, **kwargs):
    """A tqdm bar over ``iterable`` or ``total`` steps, drawn as ``PEFTBOOK_PROGRESS`` says (module docstring).

    ``disable=True`` (a caller's ``progress=False``) always wins. Other keyword arguments go to tqdm.
    """
    mode = progress_mode()
    if mode == "final" and not disable:
        return _FinalLine(iterable, total=total, desc=desc, **kwargs)
    from tqdm.auto import tqdm as auto_tqdm
    return auto_tqdm(iterable, total=total, desc=desc, disable=disable or mode == "off", **kwargs)


def quiet_library_bars() -> None:
    """Turn off transformers' own progress bars (weight loading) unless the mode is ``live``."""
    if progress_mode() != "live":
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()


# transformers modules that draw with tqdm.auto directly, not through their logging's switch
DIRECT_TQDM_MODULES = ("transformers.modeling_gguf_pytorch_utils",)


@contextlib.contextmanager
def library_bars_as_ours():
    """Inside the block, the ``DIRECT_TQDM_MODULES`` draw their bars with ``progress_bar`` (so a committed
    notebook records a finished line, not a widget); their own ``tqdm`` is put back after."""
    import importlib

    saved = []
    for name in DIRECT_TQDM_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # another transformers version: nothing to route
            continue
        if hasattr(module, "tqdm"):
            saved.append((module, module.tqdm))
            module.tqdm = progress_bar
    try:
        yield
    finally:
        for module, original in saved:
            module.tqdm = original


class _FinalLine(tqdm):
    """Draws into a sink while the loop runs; prints its final state once, on stdout, when closed."""

    def __init__(self, *args, **kwargs):
        for drawing in ("file", "dynamic_ncols", "ascii", "mininterval"):  # how it draws is this class's choice
            kwargs.pop(drawing, None)
        super().__init__(*args, file=io.StringIO(), mininterval=3600, ascii=False, **kwargs)

    def close(self):
        if self.disable:  # closed already (tqdm disables a bar when it closes)
            return
        line = self.format_meter(**{**self.format_dict, "ncols": 80})
        super().close()
        print(line, file=sys.stdout, flush=True)
