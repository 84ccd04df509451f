"""Measure the memory of a block of PyTorch code, broken down by what the bytes are for.

One tracker serves both the measurement (real tensors, CPU or CUDA) and the simulation (fake
tensors, see ``simulate.py``): a ``TorchDispatchMode`` sees the output of every operator, so it
sees every new tensor storage the moment it is allocated; a weak reference on the storage tells it
the moment the storage is freed. Live bytes over time give the peak and a timeline.

What a storage *is* (a weight, a gradient, optimizer state) is known by identity: at each
``mark()`` and on exit the tracker compares the live storages with the model's parameters,
buffers and 4-bit quantization states, their ``.grad`` and the optimizer's state. Storages that
are none of these and were allocated inside the block are activations and temporaries; storages
that existed before the block and are none of these (passed in ``extra``) are ``other``.

On CUDA the peak comes from the caching allocator itself (``torch.cuda.max_memory_allocated``),
which also sees what the dispatch mode cannot (allocator rounding, cuBLAS workspace, scratch space
inside fused kernels); the difference goes to ``other``. On CPU the peak is the tracker's count,
which is exact for storages made by PyTorch operators, but cannot see scratch memory allocated
inside a kernel (e.g. inside a bitsandbytes 4-bit matmul) or memory outside PyTorch.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CATEGORIES = ("weights", "gradients", "optimizer", "activations", "other")
CUDA_BLOCK_BYTES = 512  # the CUDA caching allocator rounds every block up to a multiple of 512 bytes


@dataclass
class MemoryReport:
    """Peak memory of one block of code, split into ``CATEGORIES`` (they sum to ``peak_bytes``)."""

    device: str
    peak_bytes: int = 0
    by_category: dict = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    timeline: list = field(default_factory=list)  # live bytes after each allocation/free
    markers: list = field(default_factory=list)  # (timeline index, label), e.g. "backward"
    peak_index: int = 0  # where in the timeline the peak is
    reserved_bytes: int | None = None  # CUDA only: peak reserved by the caching allocator
    simulated: bool = False
    notes: list = field(default_factory=list)

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / 1e9

    def peak_summary(self) -> dict:
        """``{"peak_bytes", "by_category"}``: what a results record keeps of a report."""
        return {"peak_bytes": int(self.peak_bytes), "by_category": {k: int(v) for k, v in self.by_category.items()}}

    def to_dict(self, timeline: bool = False) -> dict:
        data = {"device": self.device, "peak_bytes": int(self.peak_bytes),
                "by_category": {k: int(v) for k, v in self.by_category.items()},
                "reserved_bytes": self.reserved_bytes, "simulated": self.simulated, "notes": list(self.notes)}
        if timeline:
            data.update(timeline=list(self.timeline), markers=list(self.markers), peak_index=self.peak_index)
        return data


class _Record:
    __slots__ = ("nbytes", "ref", "category", "seeded")

    def __init__(self, nbytes, ref, category, seeded):
        self.nbytes, self.ref, self.category, self.seeded = nbytes, ref, category, seeded


class StorageTracker(TorchDispatchMode):
    """A dispatch mode that keeps the live set of tensor storages (real or fake) and their bytes."""

    def __init__(self, block_bytes: int = 1):
        super().__init__()
        self.block_bytes = block_bytes
        self.records: list[_Record] = []
        self.live: dict[int, int] = {}  # id(storage) -> record index
        self.live_bytes = 0
        self.peak_bytes = 0
        self.peak_event = 0  # number of events at the peak
        self.events: list[int] = []  # +index for an allocation, ~index for a free
        self.timeline: list[int] = []
        self.markers: list[tuple[int, str]] = []
        self.active = True

    def _round(self, nbytes: int) -> int:
        block = self.block_bytes
        return nbytes if block <= 1 else max(block, -(-nbytes // block) * block)

    def add(self, tensor: torch.Tensor, category: str | None = None, seeded: bool = False) -> None:
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError, TypeError):  # sparse, nested, ...: not counted
            return
        key = id(storage)
        if key in self.live:
            if category is not None and self.records[self.live[key]].category is None:
                self.records[self.live[key]].category = category
            return
        index = len(self.records)
        nbytes = self._round(storage.nbytes())
        ref = weakref.ref(storage, lambda _ref, key=key, index=index: self._free(key, index))
        self.records.append(_Record(nbytes, ref, category, seeded))
        self.live[key] = index
        self.live_bytes += nbytes
        if not seeded:
            self.events.append(index)
            self.timeline.append(self.live_bytes)
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes, self.peak_event = self.live_bytes, len(self.events)

    def _free(self, key: int, index: int) -> None:
        if not self.active or self.live.get(key) != index:
            return
        del self.live[key]
        self.live_bytes -= self.records[index].nbytes
        self.events.append(~index)
        self.timeline.append(self.live_bytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.add(value)
        return out

    def label_live(self, identities: dict[int, str]) -> None:
        """Give every live, not yet labelled storage its category from ``id(storage) -> category``."""
        for key, index in self.live.items():
            record = self.records[index]
            if record.category is None and key in identities:
                record.category = identities[key]

    def live_at_peak(self) -> list[_Record]:
        alive = {i for i, r in enumerate(self.records) if r.seeded}
        for event in self.events[:self.peak_event]:
            if event >= 0:
                alive.add(event)
            else:
                alive.discard(~event)
        return [self.records[i] for i in alive]


def model_tensors(model) -> list[torch.Tensor]:
    """Parameters, buffers and the tensors of 4-bit quantization states (they are weights too)."""
    tensors = list(model.parameters()) + list(model.buffers())
    for parameter in model.parameters():
        state = getattr(parameter, "quant_state", None)
        while state is not None:  # bitsandbytes QuantState; nested (double quantization) via state2
            tensors += [t for t in (state.absmax, state.code, getattr(state, "offset", None)) if torch.is_tensor(t)]
            state = getattr(state, "state2", None)
    return tensors


def optimizer_tensors(optimizer) -> list[torch.Tensor]:
    if optimizer is None:
        return []
    return [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]


def _storage_id(tensor: torch.Tensor) -> int | None:
    try:
        return id(tensor.untyped_storage())
    except (NotImplementedError, RuntimeError, TypeError):
        return None


class track_memory:  # noqa: N801 (used as a function: ``with track_memory(...) as mem``)
    """Context manager: the peak memory of the block, by category, and a timeline.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None (CUDA when available, else CPU).
        model: the model whose parameters/buffers are ``weights`` and whose ``.grad`` are ``gradients``.
        optimizer: the optimizer whose state is ``optimizer``.
        extra: other tensors alive before the block that should count (as ``other``).
        snapshot: CUDA only, a path: record the allocator history and write a snapshot that
            https://pytorch.org/memory_viz opens.
        simulated: set by ``simulate_memory`` (fake tensors; the device is the one being simulated).

    Use ``mem.mark("backward")`` between phases: it labels the timeline and, before gradients are
    freed by ``zero_grad``, records which storages are gradients. After the block, ``mem.report``
    (also ``mem.peak_bytes``, ``mem.by_category``) holds the result.
    """

    def __init__(self, device=None, *, model=None, optimizer=None, extra=(), snapshot=None,
                 simulated: bool = False, block_bytes: int | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"device {str(device)!r} is not supported; allowed: cpu, cuda")
        if device.type == "cuda" and not simulated and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but CUDA is not available here; use 'cpu'")
        if snapshot is not None and (device.type != "cuda" or simulated):
            raise ValueError("snapshot= needs a real CUDA device (the PyTorch memory viewer reads CUDA snapshots)")
        self.device, self.model, self.optimizer, self.extra = device, model, optimizer, tuple(extra)
        self.snapshot, self.simulated = snapshot, simulated
        if block_bytes is None:
            block_bytes = CUDA_BLOCK_BYTES if device.type == "cuda" else 1
        self.tracker = StorageTracker(block_bytes)
        self.report = MemoryReport(device=str(device), simulated=simulated)

    # -- identities --------------------------------------------------------------------------
    def _identities(self) -> dict[int, str]:
        identities: dict[int, str] = {}
        groups = []
        if self.model is not None:
            groups.append(("weights", model_tensors(self.model)))
            groups.append(("gradients", [p.grad for p in self.model.parameters() if p.grad is not None]))
        if self.optimizer is not None:
            groups.append(("gradients", [p.grad for g in self.optimizer.param_groups for p in g["params"]
                                         if p.grad is not None]))
            groups.append(("optimizer", optimizer_tensors(self.optimizer)))
        for category, tensors in groups:
            for tensor in tensors:
                key = _storage_id(tensor)
                if key is not None:
                    identities.setdefault(key, category)
        return identities

    def mark(self, label: str) -> None:
        """Label this point of the timeline and record which live storages are grads/optimizer state."""
        self.tracker.markers.append((len(self.tracker.timeline), label))
        self.tracker.label_live(self._identities())

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self):
        if self.device.type == "cuda" and not self.simulated:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            if self.snapshot is not None:
                torch.cuda.memory._record_memory_history(max_entries=200_000)
        identities = self._identities()
        seed = [*(model_tensors(self.model) if self.model is not None else []),
                *optimizer_tensors(self.optimizer), *self.extra]
        if self.model is not None:
            seed += [p.grad for p in self.model.parameters() if p.grad is not None]
        for tensor in seed:
            key = _storage_id(tensor)
            self.tracker.add(tensor, identities.get(key, "other"), seeded=True)
        self.seeded_bytes = self.tracker.live_bytes
        self.tracker.__enter__()
        return self

    def __exit__(self, *exc):
        self.tracker.__exit__(*exc)
        self.tracker.label_live(self._identities())
        self.tracker.active = False
        report = self.report
        totals = dict.fromkeys(CATEGORIES, 0)
        for record in self.tracker.live_at_peak():
            totals[record.category or "activations"] += record.nbytes
        report.by_category = totals
        report.peak_bytes = self.tracker.peak_bytes
        # timeline[k] = live bytes after k allocations/frees; timeline[0] is what existed on entry
        report.timeline = [self.seeded_bytes, *self.tracker.timeline]
        report.markers = self.tracker.markers
        report.peak_index = self.tracker.peak_event
        if self.device.type == "cuda" and not self.simulated:
            torch.cuda.synchronize(self.device)
            cuda_peak = torch.cuda.max_memory_allocated(self.device)
            report.reserved_bytes = torch.cuda.max_memory_reserved(self.device)
            # the allocator sees everything the dispatch mode cannot: workspaces, in-kernel scratch
            totals["other"] += max(0, cuda_peak - self.tracker.peak_bytes)
            if cuda_peak < self.tracker.peak_bytes:
                report.notes.append(f"tracker counted {self.tracker.peak_bytes} B at peak but CUDA reports "
                                    f"{cuda_peak} B; categories are the tracker's")
            report.peak_bytes = max(cuda_peak, self.tracker.peak_bytes)
            if self.snapshot is not None:
                torch.cuda.memory._dump_snapshot(str(self.snapshot))
                torch.cuda.memory._record_memory_history(enabled=None)
        return False

    # -- convenience: ``mem.peak_bytes`` etc. after the block ---------------------------------
    @property
    def peak_bytes(self) -> int:
        return self.report.peak_bytes

    @property
    def by_category(self) -> dict:
        return self.report.by_category

    @property
    def timeline(self) -> list:
        return self.report.timeline
