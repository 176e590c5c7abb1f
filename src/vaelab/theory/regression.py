"""MLE vs MAP for linear regression: least squares is the MLE, ridge is the MAP.

Model: y_i = x_i . w + eps_i with eps_i ~ N(0, sigma^2) i.i.d., X the (N, p) design matrix.

- Maximum likelihood: maximizing prod_i N(y_i; x_i . w, sigma^2) is minimizing the squared error,
  because NLL(w) = N / (2 sigma^2) * MSE(w) + N / 2 * log(2 pi sigma^2), so w_MLE = least squares.
- Maximum a posteriori with the prior w ~ N(0, tau^2 I): the posterior is Gaussian with precision
  A = X^T X / sigma^2 + I / tau^2 and mean A^{-1} X^T y / sigma^2, which is ridge regression
  (X^T X + lam I)^{-1} X^T y with lam = sigma^2 / tau^2. A flat prior (tau -> inf) gives back the
  MLE; a narrow one (tau -> 0) pulls every weight to 0.

Every solver works in float64 so that the identities hold to ~1e-10.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from vaelab.errors import VaelabError

_F64 = torch.float64


def _f64(t: Tensor | Sequence[float]) -> Tensor:
    return torch.as_tensor(t).to(_F64)


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0:
        raise VaelabError(f"{name} must be a positive number, got {value}.")
    return value


def _check_design(X: Tensor, y: Tensor) -> None:
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise VaelabError(
            f"expected X of shape (N, p) and y of shape (N,), got {tuple(X.shape)} and "
            f"{tuple(y.shape)}."
        )


# ----------------------------------------------------------------------------- data


def polynomial_features(x: Tensor, degree: int) -> Tensor:
    """The (N, degree + 1) design matrix with columns x^0, x^1, ..., x^degree."""
    if degree < 0:
        raise VaelabError(f"degree must be >= 0, got {degree}.")
    x = torch.as_tensor(x)
    if x.ndim != 1:
        raise VaelabError(f"expected x of shape (N,), got {tuple(x.shape)}.")
    return x.unsqueeze(-1) ** torch.arange(degree + 1, device=x.device)


def chebyshev(x: Tensor, degree: int) -> Tensor:
    """T_degree(x), the Chebyshev polynomial of the first kind: T_{k+1} = 2x T_k - T_{k-1}."""
    t_prev, t = torch.ones_like(x), x
    if degree == 0:
        return t_prev
    for _ in range(degree - 1):
        t_prev, t = t, 2 * x * t - t_prev
    return t


def make_noisy_polynomial(
    n: int = 20, degree_true: int = 3, noise_std: float = 0.3, seed: int = 0
) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
    """A small regression set: x ~ Uniform[-1, 1] (sorted), y = f(x) + noise_std * N(0, 1).

    The true function f is the Chebyshev polynomial T_{degree_true} (T_3(x) = 4x^3 - 3x): a
    polynomial of exactly that degree that wiggles between -1 and 1 on [-1, 1]. Returns
    (x, y, f), x and y float64 of shape (n,), f a function of a tensor.
    """
    if n < 1 or degree_true < 0:
        raise VaelabError(
            f"need n >= 1 and degree_true >= 0, got n={n}, degree_true={degree_true}."
        )
    gen = torch.Generator().manual_seed(seed)
    x = (2 * torch.rand(n, generator=gen, dtype=_F64) - 1).sort().values

    def true_fn(t: Tensor) -> Tensor:
        return chebyshev(_f64(t), degree_true)

    y = true_fn(x) + noise_std * torch.randn(n, generator=gen, dtype=_F64)
    return x, y, true_fn


# ----------------------------------------------------------------------------- likelihood


def mse(w: Tensor, X: Tensor, y: Tensor) -> Tensor:
    """Mean squared error (1/N) sum_i (y_i - x_i . w)^2."""
    return (y - X @ w).pow(2).mean()


def gaussian_nll(w: Tensor, X: Tensor, y: Tensor, sigma: float) -> Tensor:
    """-log p(y | X, w) = sum_i [ (y_i - x_i . w)^2 / (2 sigma^2) + log(2 pi sigma^2) / 2 ]."""
    sigma = _positive("sigma", sigma)
    per_point = (y - X @ w).pow(2) / (2 * sigma**2) + 0.5 * math.log(2 * math.pi * sigma**2)
    return per_point.sum()


def nll_as_mse(w: Tensor, X: Tensor, y: Tensor, sigma: float) -> Tensor:
    """The same NLL written through the MSE: N / (2 sigma^2) * MSE + N / 2 * log(2 pi sigma^2).

    sigma only scales and shifts the MSE, so the w that minimizes one minimizes the other:
    under Gaussian noise the MLE is least squares.
    """
    sigma = _positive("sigma", sigma)
    n = y.shape[0]
    return n / (2 * sigma**2) * mse(w, X, y) + n / 2 * math.log(2 * math.pi * sigma**2)


def neg_log_prior(w: Tensor, tau: float) -> Tensor:
    """-log N(w; 0, tau^2 I) = ||w||^2 / (2 tau^2) + p / 2 * log(2 pi tau^2)."""
    tau = _positive("tau", tau)
    return w.pow(2).sum() / (2 * tau**2) + w.numel() / 2 * math.log(2 * math.pi * tau**2)


def neg_log_posterior(w: Tensor, X: Tensor, y: Tensor, sigma: float, tau: float) -> Tensor:
    """-log p(y | X, w) - log p(w): the negative log posterior up to the constant log p(y | X)."""
    return gaussian_nll(w, X, y, sigma) + neg_log_prior(w, tau)


# ----------------------------------------------------------------------------- estimators


def least_squares(X: Tensor, y: Tensor) -> Tensor:
    """The MLE under Gaussian noise: argmin_w ||y - X w||^2 (minimum norm if X lacks full rank)."""
    _check_design(X, y)
    X, y = _f64(X), _f64(y)
    driver = "gelsd" if X.device.type == "cpu" else None
    return torch.linalg.lstsq(X, y.unsqueeze(-1), driver=driver).solution.squeeze(-1)


def ridge(X: Tensor, y: Tensor, lam: float) -> Tensor:
    """Ridge regression in closed form: w = (X^T X + lam I)^{-1} X^T y."""
    _check_design(X, y)
    if not float(lam) >= 0:
        raise VaelabError(f"lam must be >= 0, got {lam}.")
    X, y = _f64(X), _f64(y)
    eye = torch.eye(X.shape[1], dtype=_F64, device=X.device)
    return torch.linalg.solve(X.T @ X + lam * eye, X.T @ y)


def gaussian_posterior(X: Tensor, y: Tensor, sigma: float, tau: float) -> tuple[Tensor, Tensor]:
    """Mean and covariance of p(w | X, y) under w ~ N(0, tau^2 I) and noise N(0, sigma^2).

    Precision A = X^T X / sigma^2 + I / tau^2, mean = A^{-1} X^T y / sigma^2, covariance A^{-1}.
    tau = inf is the flat prior (then A must be invertible, i.e. X of full column rank).
    """
    _check_design(X, y)
    sigma, tau = _positive("sigma", sigma), _positive("tau", tau)
    X, y = _f64(X), _f64(y)
    eye = torch.eye(X.shape[1], dtype=_F64, device=X.device)
    precision = X.T @ X / sigma**2 + eye / tau**2
    mean = torch.linalg.solve(precision, X.T @ y / sigma**2)
    return mean, torch.linalg.inv(precision)


def map_gaussian_prior(X: Tensor, y: Tensor, sigma: float, tau: float) -> Tensor:
    """MAP weights under w ~ N(0, tau^2 I): the posterior mean, = ridge(lam = sigma^2 / tau^2)."""
    return gaussian_posterior(X, y, sigma, tau)[0]


def fit_map_by_gradient(
    X: Tensor, y: Tensor, sigma: float, tau: float, steps: int = 50, lr: float = 1.0
) -> Tensor:
    """Minimize `neg_log_posterior` from w = 0 with L-BFGS (strong Wolfe line search).

    A numerical check of the closed form: it lands on `map_gaussian_prior` to ~1e-8.
    """
    _check_design(X, y)
    X, y = _f64(X), _f64(y)
    w = torch.zeros(X.shape[1], dtype=_F64, device=X.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w],
        lr=lr,
        max_iter=20,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = neg_log_posterior(w, X, y, sigma, tau)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return w.detach()


def shrinkage_path(X: Tensor, y: Tensor, sigma: float, taus: Sequence[float]) -> Tensor:
    """MAP weights for each prior width tau: a (len(taus), p) tensor.

    As tau shrinks the weights shrink towards 0; as tau -> inf they approach least squares.
    """
    return torch.stack([map_gaussian_prior(X, y, sigma, tau) for tau in taus])


# ----------------------------------------------------------------------------- figures


def fits_figure(
    x: Tensor,
    y: Tensor,
    true_fn: Callable[[Tensor], Tensor],
    degree: int,
    sigma: float,
    tau: float,
) -> Figure:
    """Data, the least-squares (MLE) fit, the MAP / ridge fit and the true function."""
    x, y = _f64(x).cpu(), _f64(y).cpu()
    X = polynomial_features(x, degree)
    w_mle, w_map = least_squares(X, y), map_gaussian_prior(X, y, sigma, tau)
    grid = torch.linspace(float(x.min()), float(x.max()), 400, dtype=_F64)
    G = polynomial_features(grid, degree)
    lam = sigma**2 / tau**2
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(grid.numpy(), true_fn(grid).numpy(), "k--", label="truth")
    ax.plot(grid.numpy(), (G @ w_mle).numpy(), label=f"least squares (MLE), degree {degree}")
    ax.plot(grid.numpy(), (G @ w_map).numpy(), label=f"ridge (MAP), lambda = {lam:.3g}")
    ax.scatter(x.numpy(), y.numpy(), color="black", s=16, zorder=3, label="data")
    span = float(y.max() - y.min())
    ax.set_ylim(float(y.min()) - 0.5 * span, float(y.max()) + 0.5 * span)  # MLE may overshoot
    ax.set(xlabel="x", ylabel="y", title=f"MLE vs MAP (sigma = {sigma:g}, tau = {tau:g})")
    ax.legend(fontsize="small")
    return fig


def shrinkage_figure(taus: Sequence[float], path: Tensor) -> Figure:
    """Each MAP weight against the prior width tau (log axis): the prior pulls weights to 0."""
    taus, path = np.asarray(taus, dtype=float), torch.as_tensor(path).cpu().numpy()
    if path.ndim != 2 or path.shape[0] != len(taus):
        raise VaelabError(
            f"expected path of shape (len(taus), p) = ({len(taus)}, p), got {path.shape}."
        )
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for j in range(path.shape[1]):
        ax.plot(taus, path[:, j], marker=".", label=f"w_{j}")
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="prior width tau", ylabel="MAP weight", title="Shrinkage: w_MAP as tau narrows")
    ax.legend(fontsize="small", ncol=2)
    return fig
