"""Sample quality (evaluation/samples.py): the Frechet distance against its closed form between
Gaussians, and improved precision and recall on point clouds whose overlap is known."""

import numpy as np
import pytest
import scipy.linalg
import torch

from vaelab.errors import VaelabError
from vaelab.evaluation.samples import (
    frechet_distance,
    gaussian_frechet_distance,
    precision_recall,
    sample_quality,
)


def random_covariance(d: int, gen: torch.Generator, rank: int | None = None) -> torch.Tensor:
    a = torch.randn(d, rank or d, generator=gen, dtype=torch.float64)
    return a @ a.T


def scipy_frechet(m1, s1, m2, s2) -> float:
    """The textbook formula with scipy's general matrix square root of S1 S2."""
    root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1.numpy() + s2.numpy() - 2 * root))


@pytest.mark.parametrize("d", [1, 3, 16])
def test_gaussian_frechet_distance_is_the_closed_form(d):
    gen = torch.Generator().manual_seed(d)
    m1, m2 = torch.randn(d, generator=gen).double(), torch.randn(d, generator=gen).double()
    s1, s2 = random_covariance(d, gen), random_covariance(d, gen)
    assert gaussian_frechet_distance(m1, s1, m2, s2) == pytest.approx(
        scipy_frechet(m1, s1, m2, s2), rel=1e-8
    )


def test_commuting_covariances_give_the_sum_of_squared_root_differences():
    # Diagonal S1, S2: (S1 S2)^(1/2) = diag(sqrt(a b)), so the trace term is
    # sum (sqrt a - sqrt b)^2.
    a, b = torch.tensor([1.0, 4.0, 9.0]).double(), torch.tensor([4.0, 1.0, 0.0]).double()
    m1, m2 = torch.zeros(3).double(), torch.tensor([1.0, 2.0, 2.0]).double()
    expected = 9.0 + ((a.sqrt() - b.sqrt()) ** 2).sum().item()
    assert gaussian_frechet_distance(m1, a.diag(), m2, b.diag()) == pytest.approx(expected)


def test_a_singular_covariance_is_handled():
    gen = torch.Generator().manual_seed(0)
    s1, s2 = random_covariance(8, gen, rank=2), random_covariance(8, gen, rank=3)
    zero = torch.zeros(8).double()
    assert gaussian_frechet_distance(zero, s1, zero, s2) == pytest.approx(
        scipy_frechet(zero, s1, zero, s2), rel=1e-6, abs=1e-8
    )
    assert gaussian_frechet_distance(zero, s1, zero, s1) == pytest.approx(0.0, abs=1e-9)


def test_the_sample_estimate_converges_to_the_closed_form():
    gen = torch.Generator().manual_seed(1)
    d, n = 4, 40_000
    m1, m2 = torch.zeros(d).double(), torch.tensor([1.0, -0.5, 0.0, 2.0]).double()
    s1, s2 = random_covariance(d, gen), random_covariance(d, gen)
    x = m1 + torch.randn(n, d, generator=gen).double() @ torch.linalg.cholesky(s1).T
    y = m2 + torch.randn(n, d, generator=gen).double() @ torch.linalg.cholesky(s2).T
    expected = gaussian_frechet_distance(m1, s1, m2, s2)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.03)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    # Two samples of one distribution: only the estimate's noise, O(d^2 / n).
    other = m1 + torch.randn(n, d, generator=gen).double() @ torch.linalg.cholesky(s1).T
    assert 0 <= frechet_distance(x, other) < 0.01 * expected


def uniform(n: int, low, high, seed: int) -> torch.Tensor:
    """n points uniform in the box [low, high] (2-D)."""
    gen = torch.Generator().manual_seed(seed)
    low, high = torch.tensor(low).double(), torch.tensor(high).double()
    return low + (high - low) * torch.rand(n, 2, generator=gen, dtype=torch.float64)


def test_identical_sets_have_precision_and_recall_one_and_disjoint_sets_zero():
    real = uniform(500, [0, 0], [1, 1], 0)
    assert precision_recall(real, real) == (1.0, 1.0)  # every point lies in its own ball
    far = uniform(500, [5, 5], [6, 6], 1)
    assert precision_recall(real, far) == (0.0, 0.0)


def test_two_samples_of_one_distribution_cover_each_other():
    precision, recall = precision_recall(uniform(2000, [0, 0], [1, 1], 0),
                                         uniform(2000, [0, 0], [1, 1], 1))  # fmt: skip
    assert precision > 0.9 and recall > 0.9


def test_half_overlapping_boxes_give_one_half():
    # The unit square against the same square shifted by half its width: half of each lies in
    # the other, plus a band about one k-NN radius wide (~0.02 at n = 2000) along the edge.
    real, fake = uniform(2000, [0, 0], [1, 1], 0), uniform(2000, [0.5, 0], [1.5, 1], 1)
    precision, recall = precision_recall(real, fake)
    assert precision == pytest.approx(0.5, abs=0.05) and recall == pytest.approx(0.5, abs=0.05)


def test_precision_asks_are_samples_real_and_recall_is_the_data_covered():
    # Samples from the middle quarter of the square: all realistic (precision ~1), but they
    # cover a quarter of the data (recall ~0.25, plus the band around the small box).
    real, fake = uniform(2000, [0, 0], [1, 1], 0), uniform(2000, [0.25, 0.25], [0.75, 0.75], 1)
    precision, recall = precision_recall(real, fake)
    assert precision > 0.95  # the real balls leave a few gaps (0.96 measured at n = 2000)
    assert recall == pytest.approx(0.25, abs=0.05)
    swapped = precision_recall(fake, real)
    assert swapped == (recall, precision)


def test_sample_quality_names_its_numbers_and_refuses_too_few_samples():
    real, fake = uniform(50, [0, 0], [1, 1], 0), uniform(50, [0, 0], [1, 1], 1)
    assert set(sample_quality(real, fake)) == {"frechet_distance", "precision", "recall"}
    with pytest.raises(VaelabError, match="need more than 3 samples"):
        precision_recall(real[:3], fake)
    with pytest.raises(VaelabError, match="at least two samples"):
        frechet_distance(real[:1], fake)


def test_blocks_do_not_change_the_answer(monkeypatch):
    from vaelab.evaluation import samples

    real, fake = uniform(300, [0, 0], [1, 1], 0), uniform(300, [0.3, 0], [1.3, 1], 1)
    whole = precision_recall(real, fake)
    monkeypatch.setattr(samples, "BLOCK", 7)
    assert precision_recall(real, fake) == whole
