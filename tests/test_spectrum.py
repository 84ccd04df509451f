"""peftbook.spectrum: singular values and energy shares of weight changes, on matrices whose answer is known."""
from __future__ import annotations

import pytest
import torch

from peftbook.spectrum import (cumulative_energy, energy_in_top, rank_for_energy, random_energy_in_top,
                               random_singular_values, singular_values, weight_change_spectra)

pytestmark = pytest.mark.unit


def low_rank(shape, rank, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape[0], rank, generator=generator) @ torch.randn(rank, shape[1], generator=generator)


def test_singular_values_match_torch_and_come_largest_first():
    matrix = torch.randn(12, 7, generator=torch.Generator().manual_seed(1))
    values = singular_values(matrix)
    assert values.shape == (7,)
    assert torch.allclose(values, torch.linalg.svdvals(matrix))
    assert torch.all(values[:-1] >= values[1:])


def test_singular_values_reject_a_vector():
    with pytest.raises(ValueError, match="2 dimensions"):
        singular_values(torch.ones(5))


def test_a_rank_r_matrix_holds_all_its_energy_in_r_directions():
    values = singular_values(low_rank((32, 24), 3))
    assert energy_in_top(values, 3) == pytest.approx(1.0, abs=1e-6)
    assert energy_in_top(values, 2) < 1.0
    assert rank_for_energy(values, 0.999999) == 3


def test_energy_of_a_diagonal_matrix_is_exact():
    values = singular_values(torch.diag(torch.tensor([3.0, 2.0, 1.0])))  # energies 9, 4, 1 of 14
    assert energy_in_top(values, 1) == pytest.approx(9 / 14)
    assert cumulative_energy(values).tolist() == pytest.approx([9 / 14, 13 / 14, 1.0])
    assert rank_for_energy(values, 0.9) == 2
    assert rank_for_energy(values, 1.0) == 3


def test_energy_rejects_bad_arguments_and_a_zero_change_has_no_share():
    values = singular_values(torch.eye(3))
    with pytest.raises(ValueError, match="rank=0"):
        energy_in_top(values, 0)
    with pytest.raises(ValueError, match="share=1.5"):
        rank_for_energy(values, 1.5)
    assert energy_in_top(singular_values(torch.zeros(3, 3)), 1) != energy_in_top(values, 1)  # NaN, not a share


def test_a_random_matrix_spreads_its_energy():
    # a Gaussian 256 x 256 matrix: its top 8 of 256 directions hold far less than half the energy
    share = random_energy_in_top((256, 256), 8)
    assert 8 / 256 < share < 0.25
    assert random_energy_in_top((256, 256), 8, seed=0) == share  # seeded: the same yardstick every run
    assert torch.equal(random_singular_values((20, 10), seed=3), random_singular_values((20, 10), seed=3))


def test_weight_change_spectra_skips_unchanged_and_one_dimensional_weights():
    before = {"a": torch.zeros(6, 4), "b": torch.ones(6, 4), "norm": torch.ones(4)}
    after = {"a": low_rank((6, 4), 1), "b": torch.ones(6, 4), "norm": torch.zeros(4)}
    spectra = weight_change_spectra(before, after)
    assert list(spectra) == ["a"]
    assert energy_in_top(spectra["a"], 1) == pytest.approx(1.0, abs=1e-6)
    assert list(weight_change_spectra(before, after, names=["b"])) == ["b"]
    with pytest.raises(KeyError, match="missing"):
        weight_change_spectra(before, after, names=["missing"])
