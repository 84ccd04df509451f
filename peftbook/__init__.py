"""peftbook: Parameter-Efficient Fine-Tuning from few-shot prompting to QLoRA, from scratch.

The public API (see README):
    load_model, apply, trainable_parameters, save_adapter, load_adapter, merge, unmerge,
    one config dataclass per method, track_memory, simulate_memory.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from peftbook.methods import (apply, load_adapter, make_config, merge, save_adapter,  # noqa: E402
                              trainable_parameters, unmerge)
from peftbook.models import get_architecture, load_model  # noqa: E402

# `train` and `evaluate` are also the names of submodules: importing a submodule binds the module to
# the package attribute, which would shadow a lazily resolved function, so these bind eagerly.
from peftbook.evaluate import evaluate  # noqa: E402
from peftbook.train import TrainConfig, train  # noqa: E402

# Names imported lazily, so `import peftbook` stays fast and a module still being built does not
# break the rest: name -> module.
_LAZY = {
    "PromptTuningConfig": "peftbook.methods.prompt_tuning",
    "PrefixTuningConfig": "peftbook.methods.prefix_tuning",
    "LlamaAdapterConfig": "peftbook.methods.llama_adapter",
    "LoRAConfig": "peftbook.methods.lora",
    "QLoRAConfig": "peftbook.methods.qlora",
    "FullFinetuneConfig": "peftbook.methods.full",
    "FewShotConfig": "peftbook.methods.few_shot",
    "track_memory": "peftbook.memory",
    "simulate_memory": "peftbook.memory",
    "estimate_memory": "peftbook.memory",
    "load_task": "peftbook.tasks",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'peftbook' has no attribute {name!r}")


__all__ = ["load_model", "get_architecture", "apply", "make_config", "trainable_parameters", "save_adapter",
           "load_adapter", "merge", "unmerge", "train", "TrainConfig", "evaluate", *_LAZY]
