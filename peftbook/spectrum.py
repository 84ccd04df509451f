"""How low-rank is a weight change? The evidence behind LoRA's hypothesis, measured.

LoRA (Hu et al. 2021, arXiv 2106.09685) rests on the hypothesis that the change a fine-tune makes to
a weight matrix, ΔW = W_tuned − W_base, has a low "intrinsic rank": most of its energy (the sum of
its squared singular values) lies in a few directions. Here we measure that for any two state dicts
and, as the yardstick, for a Gaussian random matrix of the same shape, whose energy is spread over
all directions: a change is "low-rank" when its top-r directions hold far more energy than a random
matrix's top-r do.
"""
from __future__ import annotations

import torch


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """The singular values of a 2-D tensor, largest first, in float32 on the CPU."""
    if matrix.dim() != 2:
        raise ValueError(f"a weight matrix has 2 dimensions; got shape {tuple(matrix.shape)}")
    return torch.linalg.svdvals(matrix.detach().float().cpu())


def random_singular_values(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``singular_values`` of a Gaussian random matrix of ``shape`` (seeded): the no-structure yardstick."""
    generator = torch.Generator().manual_seed(seed)
    return singular_values(torch.randn(tuple(shape), generator=generator))


def cumulative_energy(values: torch.Tensor) -> torch.Tensor:
    """Entry i: the fraction of the energy in the top i+1 directions (ends at 1; all NaN for a zero matrix)."""
    energy = values.double() ** 2  # (k,)
    return energy.cumsum(0) / energy.sum()


def energy_in_top(values: torch.Tensor, rank: int) -> float:
    """The fraction of a matrix's energy (sum of squared singular values) in its top ``rank`` directions."""
    if rank < 1:
        raise ValueError(f"rank={rank!r} is not allowed; it must be at least 1")
    energy = values.double() ** 2
    total = energy.sum().item()
    return energy[:rank].sum().item() / total if total > 0 else float("nan")


def random_energy_in_top(shape: tuple[int, int], rank: int, seed: int = 0) -> float:
    """``energy_in_top`` of a Gaussian random matrix of ``shape``: what "no low-rank structure" scores."""
    return energy_in_top(random_singular_values(shape, seed), rank)


def rank_for_energy(values: torch.Tensor, share: float) -> int:
    """The fewest top directions that hold at least ``share`` (in (0, 1]) of the energy."""
    if not 0 < share <= 1:
        raise ValueError(f"share={share!r} is not allowed; use a fraction in (0, 1]")
    cumulative = cumulative_energy(values)
    # the small tolerance lets share=1 reach the last entry despite float rounding of the cumsum
    return int((cumulative < share - 1e-12).sum().item()) + 1


def weight_change_spectra(before: dict, after: dict, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Singular values of ``after[name] - before[name]`` for each 2-D weight (default: every 2-D weight
    present in both state dicts whose values changed)."""
    if names is None:
        names = [n for n, w in before.items()
                 if w.dim() == 2 and n in after and not torch.equal(w.cpu(), after[n].cpu())]
    missing = [n for n in names if n not in before or n not in after]
    if missing:
        raise KeyError(f"weights {missing} are not in both state dicts")
    return {n: singular_values(after[n].cpu().float() - before[n].cpu().float()) for n in names}
