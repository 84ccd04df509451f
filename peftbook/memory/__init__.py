"""Memory: measure, simulate and estimate what fine-tuning a model costs (placeholder docstring)."""
from peftbook.memory.measure import CATEGORIES, MemoryReport, track_memory
from peftbook.memory.simulate import measure_memory, simulate_memory

__all__ = ["CATEGORIES", "MemoryReport", "track_memory", "simulate_memory", "measure_memory"]
