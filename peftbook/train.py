"""One training loop for every method, built on Hugging Face Accelerate.

``train(model, tokenizer, task, TrainConfig(...))`` fine-tunes whatever parameters of ``model`` are
trainable (after ``peftbook.apply``), and returns a ``TrainResult`` with the loss per step, the
validation metrics every ``eval_every`` steps, timing and the peak memory of the first steps.

What it does, and why:

* **loss on the target only**: prompt tokens get label -100; generation targets end with eos so the
  model learns to stop. The loss is the sum over target tokens divided by the number of target
  tokens in the *global* batch (all micro-batches, all processes), so gradient accumulation and
  several processes give the same gradient as one big batch (the mean-of-means of a per-micro-batch
  mean would weight short examples more). ``peftbook.lm_loss.causal_lm_loss`` computes it;
  ``loss_chunk_tokens`` runs the LM head + cross-entropy in chunks (the full logits never exist).
* **data order** is a seeded permutation per epoch, so the data position is just the step number:
  a checkpoint needs no sampler state, and every process sees the same global batch and takes its
  slice of it (``torchrun --nproc_per_node 2`` or ``accelerate launch`` runs the same loop).
* **AdamW** (the paged 8-bit AdamW of QLoRA on CUDA, from ``peftbook.methods.qlora``; or another
  optimizer, ``TrainConfig.optimizer``: ``resolve_optimizer`` says which implementation runs), linear
  warmup then cosine or linear decay, gradient clipping, optional gradient checkpointing (every
  method, prefix tuning included).
* **precision** (``TrainConfig.dtype``): ``"auto"`` computes in the dtype the model was loaded in
  (``load_model(dtype="auto")``: bf16 on CUDA and on CPUs with native bf16, ``peftbook.precision``).
  On CUDA, bf16 autocast as before. On a CPU in bf16, mixed precision with fp32 master weights: the
  trainable parameters that are 16-bit (full fine-tuning's, an adapter built in the base's dtype)
  are kept in fp32 while the run lasts (their gradients and AdamW state too, so small updates do not
  round away) and the forward runs under bf16 autocast; the frozen weights stay bf16. The model
  leaves ``train`` in the dtypes it came in (the trained values rounded once, at the end).
* **checkpoints** every ``checkpoint_every`` steps: the trainable parameters, the optimizer and
  scheduler states, every process's RNG state, the step and the history; ``resume=True`` continues
  from the latest one and ends with the same weights as an uninterrupted run. Ctrl-C
  (KeyboardInterrupt) and SIGTERM (what ``timeout``, schedulers and CI send) save a checkpoint and
  the results so far and return them (``interrupted``, ``interrupted_by``).
* **files**: checkpoints, the adapter and ``history.json`` are written under a temporary name and
  renamed, so a crash leaves the old file or the new one, never half of one; a new run refuses an
  ``out_dir`` that holds an earlier run's results (``resume=True`` continues it, ``overwrite=True``
  replaces it), so checkpoints of two runs never mix.
* **memory**: the first ``memory_steps`` steps run under ``peftbook.memory.track_memory`` (the
  peak is reached once the optimizer state exists); the step time is taken from the other steps,
  so the tracker's overhead does not count.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from peftbook.batching import IGNORE_INDEX, encode_prompt, encode_target, pad_batch
from peftbook.errors import ConfigError, OutputError, replace_directory, strict_json, write_text_atomic
from peftbook.evaluate import evaluate
from peftbook.lm_loss import causal_lm_loss, check_chunk_tokens
from peftbook.memory import track_memory
from peftbook.memory.options import OPTIMIZERS, enable_gradient_checkpointing, training_optimizer
from peftbook.methods import save_adapter
from peftbook.precision import DTYPE_CHOICES, dtype_name, fp32_master_weights, model_dtype, precision_record
from peftbook.progress import progress_bar
from peftbook.surgery import applied_config, copy_state_checked

SCHEDULES = ("cosine", "linear", "constant")
# TrainConfig.optimizer: "auto" is the default (AdamW, or the method's own on CUDA: paged 8-bit AdamW for
# QLoRA); "adamw" is torch's AdamW as the device defaults it (multi-tensor "foreach" on CUDA, one tensor at a
# time on CPU); the others ask for one implementation (see make_optimizer).

@dataclass
class TrainConfig:
    steps: int = 100                  # optimizer steps
    batch_size: int = 8               # examples per micro-batch, over all processes together
    grad_accum: int = 1               # micro-batches per optimizer step
    lr: float = 1e-3                  # peak learning rate (prompt tuning wants ~1e-1, full FT ~1e-4)
    weight_decay: float = 0.0         # AdamW decoupled weight decay
    warmup: int = 0                   # linear warmup steps from 0 to lr
    schedule: str = "cosine"          # decay after warmup: cosine | linear (to 0) | constant
    max_grad_norm: float | None = 1.0  # global-norm clipping; None turns it off
    grad_checkpointing: bool = False  # recompute activations in backward (less memory, ~30% slower)
    grad_checkpointing_every: int = 1  # with grad_checkpointing: only every n-th decoder layer (less recompute)
    loss_chunk_tokens: int | None = None  # LM head + cross-entropy this many labelled tokens at a time (less memory)
    max_length: int = 256             # tokens per example; longer ones keep their end (the target)
    eval_every: int = 0               # validate every N steps (and at the end); 0 = only at the end
    eval_examples: int | None = 200   # validation examples per evaluation (None = all)
    final_eval: bool = True           # evaluate on validation after the last step
    keep_best: bool = False           # end with the trainable weights of the best validation score (needs eval_every)
    checkpoint_every: int = 0         # save a resumable checkpoint every N steps (needs out_dir)
    out_dir: str | None = None        # where checkpoints, history.json and the final adapter go
    save_adapter: bool = True         # write out_dir/adapter at the end (when a peftbook method is applied)
    resume: bool = False              # continue from the latest checkpoint in out_dir
    overwrite: bool = False           # replace an earlier run's results in out_dir (else it is refused)
    seed: int = 0                     # data order, dropout and any random init after this point
    optimizer: str = "auto"           # one of OPTIMIZERS; auto: paged 8-bit AdamW for QLoRA on CUDA, else AdamW
    dtype: str = "auto"               # compute dtype: auto (the model's own), fp32, or bf16 (autocast, fp32 masters)
    memory_steps: int = 2             # steps measured by track_memory (0 = no measurement)
    progress: bool = True             # tqdm.auto progress bar with the loss

    def validate(self) -> None:
        for name, minimum in (("steps", 1), ("batch_size", 1), ("grad_accum", 1), ("warmup", 0), ("max_length", 2),
                              ("eval_every", 0), ("checkpoint_every", 0), ("seed", 0), ("memory_steps", 0),
                              ("grad_checkpointing_every", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
            if value < minimum:
                raise ConfigError(f"{name} must be >= {minimum}, got {value}")
        if self.eval_examples is not None and (isinstance(self.eval_examples, bool)
                                               or not isinstance(self.eval_examples, int) or self.eval_examples < 1):
            raise ConfigError(f"eval_examples must be None (all) or an integer >= 1, got {self.eval_examples!r}")
        if not is_number(self.lr) or not 0 < self.lr < math.inf:
            raise ConfigError(f"learning rate must be > 0, got {self.lr!r}")
        if not is_number(self.weight_decay) or not 0 <= self.weight_decay < math.inf:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and (not is_number(self.max_grad_norm) or not self.max_grad_norm > 0):
            # <= 0 would zero every gradient (0) or flip its sign (< 0); None turns clipping off
            raise ConfigError(f"max_grad_norm must be > 0 or None (no clipping), got {self.max_grad_norm!r}")
        check_chunk_tokens(self.loss_chunk_tokens)
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} is not allowed; allowed: {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} is not allowed; allowed: {', '.join(OPTIMIZERS)}")
        if self.dtype not in DTYPE_CHOICES:
            raise ConfigError(f"dtype {self.dtype!r} is not allowed; allowed: {', '.join(DTYPE_CHOICES)}")
        if self.keep_best and not (self.eval_every and self.final_eval):
            raise ConfigError("keep_best needs eval_every >= 1 and final_eval=True: the best of which evaluations?")
        if self.keep_best and self.resume:
            raise ConfigError("keep_best cannot resume: the best weights so far are not in the checkpoint")
        if (self.checkpoint_every or self.resume) and not self.out_dir:
            raise ConfigError("checkpoint_every and resume need out_dir")
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite exclude each other: resume continues the run in out_dir, "
                              "overwrite replaces it")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


# What a resumed run must share with the run it continues (the rest, e.g. steps or eval_every, may change).
RESUME_FIXED = ("batch_size", "grad_accum", "lr", "weight_decay", "warmup", "schedule", "max_grad_norm",
                "max_length", "seed", "optimizer", "dtype")
OUTPUT_NAMES = ("checkpoints", "adapter", "history.json")  # what a run writes into out_dir


def check_out_dir(config: TrainConfig) -> None:
    """Refuse an ``out_dir`` that would mix with or overwrite something, before any training.

    A file, or a folder holding anything a new run did not write, is refused; an earlier run's results
    are refused unless ``resume`` (continue it) or ``overwrite`` (replace them: removed here).
    """
    if config.out_dir is None:
        return
    if not str(config.out_dir).strip():
        raise ConfigError("out_dir is empty; give a folder name")
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"out_dir {str(out)!r} is an existing file, not a folder")
    if config.resume or not out.exists():
        return
    present = sorted(p.name for p in out.iterdir())
    if not present:
        return
    if not config.overwrite:
        raise OutputError(f"out_dir {str(out)!r} already holds {', '.join(present[:5])}; resume the run there "
                          "(resume / --resume), choose an empty folder, or replace it (overwrite / --overwrite)")
    foreign = [name for name in present if name not in OUTPUT_NAMES and not name.startswith(".")]
    if foreign:
        raise OutputError(f"out_dir {str(out)!r} holds files a training run did not write "
                          f"({', '.join(foreign[:5])}); overwrite replaces only a run's results: choose another folder")
    for name in present:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interrupt so that it saves what Ctrl-C saves."""


@contextlib.contextmanager
def signal_handlers(handler, signums):
    """``handler`` for the signals ``signums`` inside the block, the previous handlers after it (main thread
    only: elsewhere Python cannot set handlers, and the block runs with them as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def sigterm_interrupts():
    """While training, SIGTERM raises ``Terminated`` (a KeyboardInterrupt) in the main thread."""
    def interrupt(signum, frame):
        raise Terminated(f"signal {signal.Signals(signum).name}")

    return signal_handlers(interrupt, (signal.SIGTERM,))


@contextlib.contextmanager
def signals_held():
    """While the run's files are written: Ctrl-C and SIGTERM are noted, not acted on, so a second
    signal cannot stop a save half-way. Yields the list of signal names received meanwhile."""
    received: list[str] = []
    with signal_handlers(lambda signum, frame: received.append(signal.Signals(signum).name),
                         (signal.SIGINT, signal.SIGTERM)):
        yield received


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # {"step", "loss", "lr", "grad_norm", "tokens"}
    evals: list[dict] = field(default_factory=list)    # {"step", "metric", "value", ...} on validation
    memory: dict | None = None                         # {"peak_bytes", "by_category"} of the first steps
    step_time_s: float | None = None                  # median seconds per optimizer step
    tokens_per_s: float | None = None                  # non-padding tokens per second (all processes)
    steps_done: int = 0
    interrupted: bool = False
    interrupted_by: str | None = None                 # "SIGINT" (Ctrl-C) or "SIGTERM"
    signals_while_saving: list[str] = field(default_factory=list)  # signals that waited for the files
    num_processes: int = 1
    out_dir: str | None = None
    precision: dict | None = None                      # {"dtype", "device", ...}: peftbook.precision.precision_record
    best: dict | None = None                           # keep_best: {"step", "value"} of the evaluation kept

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- data

def encode_example(tokenizer, task, example, max_length: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of prompt + target, keeping the last ``max_length`` tokens (the target);
    labels are -100 on the prompt."""
    prompt = encode_prompt(tokenizer, task.prompt(example))
    target = encode_target(tokenizer, task.target(example))
    if task.kind == "generation":
        target = target + [tokenizer.eos_token_id]  # learn to stop
    ids = (prompt + target)[-max_length:]
    labels = ([IGNORE_INDEX] * len(prompt) + target)[-max_length:]
    return ids, labels


def collate(encoded: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids, attention_mask, labels (-100 on prompt and padding).

    The first token is never labelled (only a prompt-tuning virtual token could predict it), so every
    method learns from the same tokens and the loss is divided by the same count.
    """
    batch = pad_batch([ids for ids, _ in encoded], pad_token_id, labels=[labels for _, labels in encoded])
    batch["labels"][:, 0] = IGNORE_INDEX
    return batch


def example_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


def step_indices(num_examples: int, seed: int, step: int, per_step: int) -> list[int]:
    """Example indices of optimizer step ``step`` (0-based): a function of the step only."""
    indices = []
    for position in range(step * per_step, (step + 1) * per_step):
        epoch, offset = divmod(position, num_examples)
        indices.append(example_order(num_examples, seed, epoch)[offset])
    return indices


def lr_lambda(config: TrainConfig):
    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / (config.warmup + 1)
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        if config.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return factor


resolve_optimizer = training_optimizer  # what TrainConfig.optimizer runs: peftbook.memory.options decides


def make_optimizer(model, config: TrainConfig, device: torch.device):
    """The optimizer ``config.optimizer`` asks for, over the trainable parameters (``resolve_optimizer``).

    ``auto`` and ``adamw`` build ``torch.optim.AdamW`` with the device's default implementation (as train
    always has); ``adamw_foreach`` / ``adamw_fused`` force torch's multi-tensor / fused kernels (both run on
    CPU too); ``adamw_8bit`` and ``paged_adamw_8bit`` are bitsandbytes' (8-bit moments, block-wise
    quantized; tensors under 4096 values keep 32-bit moments). bitsandbytes 0.50 runs both on CPU, but
    paging needs CUDA unified memory: on CPU the paged one is the plain 8-bit one (bitsandbytes warns).
    ``sgd`` is plain SGD (no momentum: no optimizer state at all).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters; apply a method first (peftbook.apply)")
    applied = applied_config(model)
    method = applied.method if applied is not None else None
    implementation = resolve_optimizer(config.optimizer, method, device.type)
    lr, weight_decay = config.lr, config.weight_decay
    if config.optimizer == "auto" and implementation == "paged_adamw_8bit":
        from peftbook.methods.qlora import qlora_optimizer
        return qlora_optimizer(params, lr)  # the method's own, as the QLoRA paper trains
    if implementation in ("adamw_8bit", "paged_adamw_8bit"):
        import bitsandbytes as bnb
        cls = bnb.optim.AdamW8bit if implementation == "adamw_8bit" else bnb.optim.PagedAdamW8bit
        return cls(params, lr=lr, weight_decay=weight_decay)  # bnb's default weight decay is 0.01, not ours
    if implementation == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if config.optimizer in ("auto", "adamw"):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)  # the device's default path
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=implementation == "adamw_foreach",
                             fused=implementation == "adamw_fused" or None)


# ---------------------------------------------------------------- checkpoints

def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def latest_checkpoint(out_dir) -> Path | None:
    root = Path(out_dir) / "checkpoints"
    steps = sorted((int(p.name.split("-")[1]), p) for p in root.glob("step-*") if (p / "state.json").exists())
    return steps[-1][1] if steps else None


def save_checkpoint(accelerator, model, optimizer, scheduler, result: TrainResult, config: TrainConfig) -> Path:
    """Write a resumable checkpoint for the current step (every process writes its RNG state)."""
    from safetensors.torch import save_file

    final = Path(config.out_dir) / "checkpoints" / f"step-{result.steps_done}"
    directory = final.with_name(f".{final.name}.tmp")  # renamed to step-N once complete
    if accelerator.is_main_process and directory.exists():
        shutil.rmtree(directory)  # a crash's leftover
    accelerator.wait_for_everyone()
    directory.mkdir(parents=True, exist_ok=True)
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    torch.save(rng, directory / f"rng-{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        save_file(trainable_state(model), str(directory / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   directory / "optimizer.pt")
        if applied_config(model) is not None:  # a usable adapter too (eval --adapter <checkpoint>/adapter)
            save_adapter(model, directory / "adapter")
        state = {"step": result.steps_done, "history": result.history, "evals": result.evals,
                 "memory": result.memory, "config": asdict(config), "num_processes": accelerator.num_processes}
        (directory / "state.json").write_text(strict_json(state, indent=1, default=str))  # written last: complete
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_directory(directory, final)
    accelerator.wait_for_everyone()
    return final


def check_resume(config: TrainConfig) -> None:
    """Raise unless ``out_dir`` holds a checkpoint whose settings are ``config``'s (a changed learning rate
    would otherwise be ignored without a word: the optimizer's state carries the old one)."""
    directory = latest_checkpoint(config.out_dir)
    if directory is None:
        raise FileNotFoundError(f"resume=True but {config.out_dir} holds no checkpoint")
    saved = json.loads((directory / "state.json").read_text())["config"]
    changed = [f"{name} {getattr(config, name)!r} (the checkpoint has {saved[name]!r})"
               for name in RESUME_FIXED if name in saved and saved[name] != getattr(config, name)]
    if changed:
        raise ConfigError(f"resume continues the run in {config.out_dir} with its own settings, but "
                          f"{'; '.join(changed)}: drop the change, or start a new run in another folder")


def load_checkpoint(directory: Path, accelerator, model, optimizer, scheduler, result: TrainResult) -> None:
    from safetensors.torch import load_file

    state = json.loads((directory / "state.json").read_text())
    if state["num_processes"] != accelerator.num_processes:
        raise ValueError(f"checkpoint {directory} was written by {state['num_processes']} process(es); "
                         f"resume it with the same number, not {accelerator.num_processes}")
    device = next(model.parameters()).device
    target = {name: p for name, p in model.named_parameters() if p.requires_grad}
    saved = {k: v.to(device) for k, v in load_file(str(directory / "trainable.safetensors")).items()}
    copy_state_checked({k: p.data for k, p in target.items()}, saved, f"checkpoint {directory}")
    states = torch.load(directory / "optimizer.pt", map_location=device, weights_only=True)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    rng = torch.load(directory / f"rng-{accelerator.process_index}.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    result.steps_done = state["step"]
    result.history = state["history"]
    result.evals = state["evals"]
    result.memory = state["memory"]


# ---------------------------------------------------------------- the loop

def compute_dtype(model, config: TrainConfig) -> torch.dtype:
    """The dtype a run computes in: the model's own (``dtype="auto"``), or the one ``config.dtype`` forces."""
    own = model_dtype(model)
    if config.dtype == "auto":
        return own
    if config.dtype == "fp32" and own != torch.float32:
        raise ConfigError(f"dtype='fp32' needs a model loaded in fp32, and this one computes in {dtype_name(own)}: "
                          "load it with load_model(..., dtype='fp32'), or train with dtype='auto'")
    return torch.float32 if config.dtype == "fp32" else torch.bfloat16


def train_step(wrapped, accelerator, micro_batches: list[dict], trainable: list, config: TrainConfig,
               optimizer, scheduler, mark=None, autocast=None) -> tuple[float, float | None, int]:
    """One optimizer step over the micro-batches of a global batch: (loss, grad norm, tokens).

    Each process takes its slice of every micro-batch; the loss is summed over target tokens and
    divided by the global count, so accumulation and processes give one big batch's gradient.
    ``mark`` (a memory tracker's) labels the phases: gradients exist before ``zero_grad`` frees them.
    ``autocast``: a context manager factory for the forward and loss (bf16 on a CPU); None: Accelerate's own.
    """
    world = accelerator.num_processes
    per_process = config.batch_size // world
    global_targets = sum(int((m["labels"][:, 1:] != IGNORE_INDEX).sum()) for m in micro_batches)
    rank_slice = slice(accelerator.process_index * per_process, (accelerator.process_index + 1) * per_process)
    loss_sum = torch.zeros((), device=accelerator.device)
    tokens = 0
    for k, batch in enumerate(micro_batches):
        batch = {name: t[rank_slice].to(accelerator.device) for name, t in batch.items()}
        tokens += int(batch["attention_mask"].sum())
        sync = k == len(micro_batches) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(wrapped):
            if autocast is not None:
                precision = autocast()
            else:  # the chunked head runs outside the model's forward: under the same mixed precision
                precision = accelerator.autocast() if config.loss_chunk_tokens else contextlib.nullcontext()
            with precision:
                summed = causal_lm_loss(wrapped, batch["input_ids"], batch["labels"], batch["attention_mask"],
                                        chunk_tokens=config.loss_chunk_tokens, reduction="sum")
            # DDP averages gradients over processes, hence the factor `world`
            accelerator.backward(summed * world / max(global_targets, 1))
        loss_sum += summed.detach()
    grad_norm = None
    if config.max_grad_norm is not None:
        grad_norm = float(accelerator.clip_grad_norm_(trainable, config.max_grad_norm))
    if mark is not None:
        mark("backward")
    optimizer.step()
    scheduler.step()
    if mark is not None:
        mark("optimizer step")
    optimizer.zero_grad(set_to_none=True)
    loss = float(accelerator.reduce(loss_sum, reduction="sum")) / max(global_targets, 1)
    tokens = int(accelerator.reduce(torch.tensor(tokens, device=accelerator.device), reduction="sum"))
    return loss, grad_norm, tokens


def train(model, tokenizer, task, config: TrainConfig | None = None, *, callbacks=()) -> TrainResult:
    """Fine-tune the trainable parameters of ``model`` on ``task``'s train split.

    Args:
        model: a causal LM, usually after ``peftbook.apply(model, method_config)``.
        tokenizer: its tokenizer (needs a pad token; eos is used as pad if missing).
        task: a ``peftbook.tasks.Task``; validation is used for evaluation, never test.
        config: a ``TrainConfig``.
        callbacks: callables ``cb(step, result)`` run after each optimizer step; raising
            ``KeyboardInterrupt`` from one behaves like Ctrl-C.

    Returns:
        a ``TrainResult`` (also written to ``out_dir/history.json`` when ``out_dir`` is set).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    config.validate()
    if isinstance(task, str):  # a task name or folder, as load_task takes it
        from peftbook.tasks import load_task
        task = load_task(task)
    check_out_dir(config)
    if config.resume:
        check_resume(config)
    train_examples = task.examples("train")
    if not train_examples:
        raise ValueError(f"task {task.name!r} has no training examples")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    device_type = next(model.parameters()).device.type
    dtype = compute_dtype(model, config)
    # CUDA: Accelerate's bf16 autocast, as before (fp32 when asked). CPU: our own autocast, since Accelerate's
    # precision is fixed once per process and a notebook may train in fp32 and in bf16
    cuda_precision = "no" if config.dtype == "fp32" else "bf16"
    accelerator = Accelerator(cpu=device_type == "cpu", mixed_precision=cuda_precision if device_type == "cuda" else "no")
    cpu_bf16 = device_type == "cpu" and dtype != torch.float32
    autocast = (lambda: torch.autocast("cpu", dtype=dtype)) if cpu_bf16 else None
    world = accelerator.num_processes
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes ({world})")
    set_seed(config.seed)

    if config.grad_checkpointing:
        enable_gradient_checkpointing(model, config.grad_checkpointing_every)
    masters = contextlib.ExitStack()  # fp32 master weights of 16-bit trainable parameters on a CPU in bf16
    if cpu_bf16:
        masters.enter_context(fp32_master_weights([p for p in model.parameters() if p.requires_grad]))
    try:  # (the loop's own try below hands the masters back however it ends; this one covers the set-up)
        model.train()
        optimizer = make_optimizer(model, config, accelerator.device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
        # The scheduler stays unprepared: Accelerate's wrapper steps it once per process.
        raw_optimizer = optimizer
        wrapped, optimizer = accelerator.prepare(model, optimizer)
        result = TrainResult(num_processes=world, out_dir=config.out_dir,
                             precision=precision_record(model, accelerator.device, dtype))
        if config.resume:
            load_checkpoint(latest_checkpoint(config.out_dir), accelerator, model, optimizer, scheduler, result)
    except BaseException:
        masters.close()
        raise

    encoded = [encode_example(tokenizer, task, e, config.max_length) for e in train_examples]
    per_step = config.batch_size * config.grad_accum
    trainable = [p for p in model.parameters() if p.requires_grad]
    step_times: list[float] = []
    step_tokens: list[int] = []
    best_weights: list[torch.Tensor] = []  # keep_best: the trainable tensors (fp32 masters included) at the best score
    measuring = contextlib.ExitStack()  # holds the memory tracker while the first steps run
    tracker = None
    bar = progress_bar(total=config.steps, initial=result.steps_done, desc="train", dynamic_ncols=True,
               disable=not (config.progress and accelerator.is_main_process))

    def stop_measuring() -> None:
        nonlocal tracker
        measuring.close()
        result.memory = tracker.report.peak_summary()
        tracker = None

    def run_eval(step: int) -> None:
        if accelerator.is_main_process:
            with autocast() if autocast is not None else contextlib.nullcontext():  # as the run computes
                metrics = evaluate(model, tokenizer, task, "validation", max_examples=config.eval_examples,
                                   latency_examples=0)
            metrics.pop("predictions")
            result.evals.append({"step": step, **metrics})
            if config.keep_best and (result.best is None or metrics["value"] > result.best["value"]):
                result.best = {"step": step, "value": metrics["value"]}  # ties keep the earlier, shorter run
                best_weights[:] = [p.detach().clone() for p in trainable]
            model.train()
        accelerator.wait_for_everyone()

    interrupts = contextlib.ExitStack()  # SIGTERM acts as Ctrl-C until training is over
    interrupts.enter_context(sigterm_interrupts())
    try:
        while result.steps_done < config.steps:
            step = result.steps_done
            if step < config.memory_steps and tracker is None and result.memory is None:
                tracker = measuring.enter_context(track_memory(accelerator.device.type, model=model,
                                                               optimizer=raw_optimizer))
            start = time.perf_counter()
            batch_ids = step_indices(len(encoded), config.seed, step, per_step)
            micro = [collate([encoded[i] for i in batch_ids[k * config.batch_size:(k + 1) * config.batch_size]],
                             tokenizer.pad_token_id) for k in range(config.grad_accum)]
            loss, grad_norm, tokens = train_step(wrapped, accelerator, micro, trainable, config, optimizer, scheduler,
                                                 mark=tracker.mark if tracker is not None else None,
                                                 autocast=autocast)
            elapsed = time.perf_counter() - start
            result.steps_done = step + 1
            result.history.append({"step": step + 1, "loss": loss, "lr": scheduler.get_last_lr()[0],
                                   "grad_norm": grad_norm, "tokens": tokens})
            if tracker is not None and result.steps_done >= config.memory_steps:
                stop_measuring()
            elif tracker is None:
                step_times.append(elapsed)
                step_tokens.append(tokens)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if config.eval_every and result.steps_done % config.eval_every == 0 and result.steps_done < config.steps:
                run_eval(result.steps_done)
            if config.checkpoint_every and result.steps_done % config.checkpoint_every == 0:
                save_checkpoint(accelerator, model, optimizer, scheduler, result, config)
            for callback in callbacks:
                callback(result.steps_done, result)
        if config.final_eval:
            run_eval(result.steps_done)
        if best_weights:
            with torch.no_grad():
                for parameter, kept in zip(trainable, best_weights):
                    parameter.copy_(kept)
            best_weights.clear()
    except KeyboardInterrupt as interrupt:
        result.interrupted = True
        result.interrupted_by = "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"
        if tracker is not None:
            stop_measuring()
        if config.out_dir:
            with signals_held() as late:  # a second Ctrl-C / SIGTERM waits for the checkpoint
                save_checkpoint(accelerator, model, optimizer, scheduler, result, config)
            result.signals_while_saving += late
    finally:
        interrupts.close()
        measuring.close()
        bar.close()
        model.train(False)
        accelerator.unwrap_model(wrapped, keep_fp32_wrapper=False)
        masters.close()  # the trained parameters back in the model's own dtype

    if step_times:
        result.step_time_s = statistics.median(step_times)
        result.tokens_per_s = sum(step_tokens) / sum(step_times)
    if config.out_dir and accelerator.is_main_process:
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with signals_held() as late:  # the adapter and history are written whole, whatever arrives
            if config.save_adapter and applied_config(model) is not None:
                save_adapter(model, out / "adapter")
            result.signals_while_saving += late  # those that came while the adapter was written
            write_text_atomic(out / "history.json", strict_json(result.to_dict(), indent=1, default=str))
    return result
