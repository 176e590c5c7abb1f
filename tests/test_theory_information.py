"""Entropy, cross-entropy and KL in bits against scipy; the Gaussian KL against Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from scipy.stats import entropy as scipy_entropy

from vaelab.distributions import gaussian_kl
from vaelab.errors import VaelabError
from vaelab.theory.information import (
    cross_entropy,
    entropy,
    gaussian_kl_closed_form,
    gaussian_kl_monte_carlo,
    information_content,
    kl_asymmetry_figure,
    kl_divergence,
    worked_example,
)


def _random_distribution(gen: torch.Generator, k: int, zeros: int = 0) -> torch.Tensor:
    w = torch.rand(k, generator=gen, dtype=torch.float64)
    w[:zeros] = 0
    return w / w.sum()


@st.composite
def distribution_pairs(draw):
    k = draw(st.integers(1, 8))
    weights = st.lists(st.floats(1e-3, 1.0), min_size=k, max_size=k)
    p, q = torch.tensor(draw(weights)), torch.tensor(draw(weights))
    return (p / p.sum()).tolist(), (q / q.sum()).tolist()


def test_information_content_in_bits_and_nats():
    torch.testing.assert_close(
        information_content([0.5, 0.25, 0.25, 0.0]),
        torch.tensor([1.0, 2.0, 2.0, math.inf], dtype=torch.float64),
    )
    torch.testing.assert_close(
        information_content([0.5, 0.5], base=math.e),
        torch.full((2,), math.log(2), dtype=torch.float64),
    )


def test_against_scipy_on_random_distributions():
    gen = torch.Generator().manual_seed(0)
    for k in (2, 3, 6, 10):
        for zeros in (0, 1):
            p, q = _random_distribution(gen, k, zeros), _random_distribution(gen, k)
            for base in (2, math.e):
                assert float(entropy(p, base)) == pytest.approx(scipy_entropy(p, base=base))
                kl = float(kl_divergence(p, q, base))
                assert kl == pytest.approx(scipy_entropy(p, q, base=base))
                assert float(cross_entropy(p, q, base)) == pytest.approx(
                    scipy_entropy(p, base=base) + kl
                )


@settings(max_examples=100, deadline=None)
@given(distribution_pairs())
def test_kl_is_non_negative_and_is_cross_entropy_minus_entropy(pair):
    p, q = pair
    kl = kl_divergence(p, q)
    assert kl >= -1e-12
    torch.testing.assert_close(kl, cross_entropy(p, q) - entropy(p), atol=1e-12, rtol=0)


def test_worked_example_shows_asymmetry():
    ex = worked_example()
    assert ex["unit"] == "bits"
    assert ex["entropy_p"] == pytest.approx(math.log2(6))  # a fair die: log2 6 bits
    assert ex["kl_pq"] > 0 and ex["kl_qp"] > 0
    assert abs(ex["kl_pq"] - ex["kl_qp"]) > 0.05
    assert ex["cross_entropy_pq"] == pytest.approx(ex["entropy_p"] + ex["kl_pq"])
    assert ex["cross_entropy_qp"] == pytest.approx(ex["entropy_q"] + ex["kl_qp"])
    assert ex["kl_pq"] == pytest.approx(scipy_entropy(ex["p"], ex["q"], base=2))


def test_kl_of_a_distribution_with_itself_is_zero():
    p = [0.1, 0.0, 0.6, 0.3]
    assert float(kl_divergence(p, p)) == 0.0
    assert float(cross_entropy(p, p)) == pytest.approx(float(entropy(p)))


def test_zero_probabilities():
    # 0 log 0 = 0: an outcome impossible under P costs nothing
    assert float(entropy([0.5, 0.5, 0.0])) == pytest.approx(1.0)
    assert float(kl_divergence([0.5, 0.5, 0.0], [0.25, 0.25, 0.5])) == pytest.approx(1.0)
    # Q forbids what P allows: infinite, as scipy says
    assert float(kl_divergence([0.5, 0.5], [1.0, 0.0])) == math.inf
    assert float(cross_entropy([0.5, 0.5], [1.0, 0.0])) == math.inf
    assert scipy_entropy([0.5, 0.5], [1.0, 0.0]) == math.inf
    # ... but the other way round is finite
    assert float(kl_divergence([1.0, 0.0], [0.5, 0.5])) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("p", "q", "match"),
    [
        ([0.5, -0.1, 0.6], [0.2, 0.3, 0.5], "non-negative"),
        ([0.5, 0.4], [0.5, 0.5], "sum to 1"),
        ([0.5, 0.5], [0.2, 0.3, 0.5], "same number"),
        ([[0.5, 0.5]], [0.5, 0.5], "1-D"),
        ([], [], "1-D"),
        ([math.nan, 1.0], [0.5, 0.5], "finite"),
    ],
)
def test_bad_inputs_raise(p, q, match):
    with pytest.raises(VaelabError, match=match):
        kl_divergence(p, q)


def test_bad_base_raises():
    with pytest.raises(VaelabError, match="base"):
        entropy([0.5, 0.5], base=1)


def test_gaussian_closed_form_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    logvar = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p)
    torch.testing.assert_close(gaussian_kl_closed_form(mu, logvar), expected)
    torch.testing.assert_close(gaussian_kl_closed_form(mu, logvar), gaussian_kl(mu, logvar))
    assert float(gaussian_kl_closed_form(torch.zeros(1), torch.zeros(1))) == 0.0


def test_gaussian_monte_carlo_agrees_within_four_standard_errors():
    mu = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 0.5, 1.5], dtype=torch.float64)
    estimate, se = gaussian_kl_monte_carlo(mu, logvar, n=20_000, seed=0)
    exact = gaussian_kl_closed_form(mu, logvar)
    assert estimate.shape == se.shape == (4,)
    assert bool(((estimate - exact).abs() <= 4 * se + 1e-12).all())
    assert bool((se[1:] > 0).all()) and float(se[0]) == 0.0  # q = p: every sample gives 0
    again, _ = gaussian_kl_monte_carlo(mu, logvar, n=20_000, seed=0)
    assert torch.equal(estimate, again)
    with pytest.raises(VaelabError, match="n must"):
        gaussian_kl_monte_carlo(mu, logvar, n=1)


def test_kl_asymmetry_figure():
    ex = worked_example()
    fig = kl_asymmetry_figure(ex["p"], ex["q"], ex["outcomes"])
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    title = fig.axes[0].get_title()
    assert f"{ex['kl_pq']:.3f}" in title and f"{ex['kl_qp']:.3f}" in title and "bits" in title
    with pytest.raises(VaelabError, match="label"):
        kl_asymmetry_figure(ex["p"], ex["q"], ["a"])
