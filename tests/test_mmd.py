"""The MMD of evaluation/samples.py against its closed form for two Gaussians, and the median
heuristic's bandwidth."""

import math

import pytest
import torch

from vaelab.evaluation.samples import median_bandwidth, mmd2


def gaussian_kernel_expectation(mean: float, var: float, h: float, d: int) -> float:
    """E exp(-|W|^2 / (2 h^2)) for W ~ N(mean * 1, var * I) in d dimensions."""
    return (h**2 / (h**2 + var)) ** (d / 2) * math.exp(-d * mean**2 / (2 * (h**2 + var)))


def expected_biased_mmd2(shift: float, s1: float, s2: float, h: float, d: int, n: int) -> float:
    """E of the V-statistic: each sample's n diagonal pairs give k = 1."""
    kxx = gaussian_kernel_expectation(0.0, 2 * s1**2, h, d)
    kyy = gaussian_kernel_expectation(0.0, 2 * s2**2, h, d)
    kxy = gaussian_kernel_expectation(shift, s1**2 + s2**2, h, d)
    return 2 / n + (1 - 1 / n) * (kxx + kyy) - 2 * kxy


@pytest.mark.parametrize("shift,s2", [(0.0, 1.0), (0.5, 1.0), (0.0, 2.0), (1.0, 0.5)])
def test_mmd2_matches_the_closed_form_for_two_gaussians(shift, s2):
    d, n, h = 3, 2000, 1.5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    y = shift + s2 * torch.randn(n, d, generator=g)
    expected = expected_biased_mmd2(shift, 1.0, s2, h, d, n)
    assert mmd2(x, y, h) == pytest.approx(expected, abs=0.01)


def test_mmd2_is_zero_for_one_sample_and_symmetric():
    x, y = torch.randn(300, 2), torch.randn(200, 2) + 1
    assert mmd2(x, x, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert mmd2(x, y, 1.0) == pytest.approx(mmd2(y, x, 1.0))


def test_median_bandwidth_is_the_median_pairwise_distance():
    x, y = torch.tensor([[0.0, 0.0], [3.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    assert median_bandwidth(x, y) == pytest.approx(4.0)  # distances 3, 4, 5
