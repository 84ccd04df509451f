"""peftbook: Parameter-Efficient Fine-Tuning from few-shot prompting to QLoRA, from scratch.

The public API (see README): load_model, apply, trainable_parameters, save_adapter, load_adapter,
merge, unmerge, one config dataclass per method, train, evaluate, load_task, track_memory,
simulate_memory, estimate_memory.
"""
from __future__ import annotations

from peftbook.environment import VERSION as __version__
from peftbook.environment import silence_known_noise

silence_known_noise()  # before anything below imports bitsandbytes
from peftbook.evaluate import evaluate
from peftbook.memory import estimate_memory, simulate_memory, track_memory
from peftbook.methods import (apply, load_adapter, make_config, merge, save_adapter, trainable_parameters,
                              unmerge)
from peftbook.methods.few_shot import FewShotConfig
from peftbook.methods.full import FullFinetuneConfig
from peftbook.methods.llama_adapter import LlamaAdapterConfig
from peftbook.methods.lora import LoRAConfig
from peftbook.methods.prefix_tuning import PrefixTuningConfig
from peftbook.methods.prompt_tuning import PromptTuningConfig
from peftbook.methods.qlora import QLoRAConfig
from peftbook.models import get_architecture, load_model
from peftbook.tasks import load_task
from peftbook.train import TrainConfig, train

__all__ = ["__version__", "load_model", "get_architecture", "apply", "make_config", "trainable_parameters",
           "save_adapter", "load_adapter", "merge", "unmerge", "train", "TrainConfig", "evaluate", "load_task",
           "track_memory", "simulate_memory", "estimate_memory", "FewShotConfig", "PromptTuningConfig",
           "PrefixTuningConfig", "LlamaAdapterConfig", "LoRAConfig", "QLoRAConfig", "FullFinetuneConfig"]
