"""MLE vs MAP: the NLL is the MSE rescaled, the posterior mean is ridge, and the limits in tau."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from vaelab.errors import VaelabError
from vaelab.theory.regression import (
    fit_map_by_gradient,
    fits_figure,
    gaussian_nll,
    gaussian_posterior,
    least_squares,
    make_noisy_polynomial,
    map_gaussian_prior,
    mse,
    neg_log_posterior,
    nll_as_mse,
    polynomial_features,
    ridge,
    shrinkage_figure,
    shrinkage_path,
)

SIGMA = 0.3


@pytest.fixture
def data():
    """20 noisy points of T_3 and a degree-5 design matrix (float64)."""
    x, y, true_fn = make_noisy_polynomial(n=20, degree_true=3, noise_std=SIGMA, seed=0)
    return x, y, true_fn, polynomial_features(x, 5)


def test_polynomial_features_columns_are_powers():
    x = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)
    X = polynomial_features(x, 3)
    assert X.shape == (3, 4)
    for k in range(4):
        torch.testing.assert_close(X[:, k], x**k)


def test_noisy_polynomial_is_seeded_and_documented(data):
    x, y, true_fn, _ = data
    assert x.shape == y.shape == (20,) and x.dtype == torch.float64
    assert x.min() >= -1 and x.max() <= 1 and bool((x.diff() >= 0).all())
    torch.testing.assert_close(true_fn(x), 4 * x**3 - 3 * x)  # T_3, as the docstring says
    x2, y2, _ = make_noisy_polynomial(n=20, degree_true=3, noise_std=SIGMA, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_nll_is_rescaled_mse_to_float64_precision(data):
    _, y, _, X = data
    w = torch.randn(X.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for sigma in (0.1, SIGMA, 2.0):
        nll = gaussian_nll(w, X, y, sigma)
        n = len(y)
        by_hand = n / (2 * sigma**2) * mse(w, X, y) + n / 2 * math.log(2 * math.pi * sigma**2)
        torch.testing.assert_close(nll, by_hand, rtol=1e-13, atol=0)
        torch.testing.assert_close(nll_as_mse(w, X, y, sigma), nll, rtol=1e-13, atol=0)
        reference = -torch.distributions.Normal(X @ w, sigma).log_prob(y).sum()
        torch.testing.assert_close(nll, reference, rtol=1e-12, atol=0)


def test_least_squares_matches_numpy(data):
    _, y, _, X = data
    expected = np.linalg.lstsq(X.numpy(), y.numpy(), rcond=None)[0]
    np.testing.assert_allclose(least_squares(X, y).numpy(), expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("tau", [0.05, 0.5, 1.0, 10.0])
def test_map_equals_ridge_with_lambda_sigma2_over_tau2(data, tau):
    _, y, _, X = data
    w_map = map_gaussian_prior(X, y, SIGMA, tau)
    w_ridge = ridge(X, y, SIGMA**2 / tau**2)
    torch.testing.assert_close(w_map, w_ridge, rtol=0, atol=1e-10)


def test_posterior_mean_matches_the_woodbury_form(data):
    """An independent formula: mean = tau^2 X^T (tau^2 X X^T + sigma^2 I)^-1 y."""
    _, y, _, X = data
    tau = 0.7
    mean, cov = gaussian_posterior(X, y, SIGMA, tau)
    gram = tau**2 * X @ X.T + SIGMA**2 * torch.eye(len(y), dtype=torch.float64)
    torch.testing.assert_close(mean, tau**2 * X.T @ torch.linalg.solve(gram, y), atol=1e-10, rtol=0)
    torch.testing.assert_close(cov, cov.T)
    assert bool((torch.linalg.eigvalsh(cov) > 0).all())


def test_map_is_a_stationary_point_of_the_neg_log_posterior(data):
    _, y, _, X = data
    w = map_gaussian_prior(X, y, SIGMA, 0.5).requires_grad_(True)
    neg_log_posterior(w, X, y, SIGMA, 0.5).backward()
    assert w.grad.abs().max() < 1e-9


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_gradient_fit_lands_on_the_closed_form(data, tau):
    _, y, _, X = data
    w_fit = fit_map_by_gradient(X, y, SIGMA, tau)
    torch.testing.assert_close(w_fit, map_gaussian_prior(X, y, SIGMA, tau), atol=1e-4, rtol=0)


def test_map_tends_to_mle_and_to_zero(data):
    _, y, _, X = data
    w_mle = least_squares(X, y)
    torch.testing.assert_close(map_gaussian_prior(X, y, SIGMA, 1e6), w_mle, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        map_gaussian_prior(X, y, SIGMA, math.inf), w_mle, atol=1e-8, rtol=0
    )  # the flat prior is the MLE exactly
    assert map_gaussian_prior(X, y, SIGMA, 1e-6).abs().max() < 1e-8


def test_shrinkage_path_norms_shrink_with_tau(data):
    _, y, _, X = data
    taus = torch.logspace(4, -4, 40).tolist()  # from wide to narrow
    path = shrinkage_path(X, y, SIGMA, taus)
    assert path.shape == (40, X.shape[1])
    norms = path.norm(dim=1)
    assert bool((norms.diff() <= 1e-12).all())
    assert norms[-1] < 1e-6 * norms[0]


def test_bad_inputs_raise(data):
    _, y, _, X = data
    with pytest.raises(VaelabError, match="sigma"):
        map_gaussian_prior(X, y, 0.0, 1.0)
    with pytest.raises(VaelabError, match="tau"):
        neg_log_posterior(torch.zeros(X.shape[1], dtype=X.dtype), X, y, SIGMA, -1.0)
    with pytest.raises(VaelabError, match="shape"):
        least_squares(X, y[:-1])
    with pytest.raises(VaelabError, match="lam"):
        ridge(X, y, -1.0)
    with pytest.raises(VaelabError, match="degree"):
        polynomial_features(torch.zeros(3), -1)


def test_figures(data):
    x, y, true_fn, X = data
    fig = fits_figure(x, y, true_fn, degree=9, sigma=SIGMA, tau=1.0)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].get_lines()) == 3
    taus = torch.logspace(-2, 2, 9).tolist()
    fig = shrinkage_figure(taus, shrinkage_path(X, y, SIGMA, taus))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert fig.axes[0].get_xscale() == "log"
    with pytest.raises(VaelabError, match="path"):
        shrinkage_figure(taus[:-1], shrinkage_path(X, y, SIGMA, taus))
