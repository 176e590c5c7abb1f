"""Information, entropy, cross-entropy and KL divergence, in bits by default.

Discrete distributions are 1-D tensors or sequences of probabilities (non-negative, summing to 1
within 1e-6). With log_b the logarithm in base b (2: bits, e: nats):

    I(x)       = -log_b p(x)                         information content of one outcome
    H(P)       = sum_x p(x) I(x)                      entropy: the average surprise under P
    H(P, Q)    = -sum_x p(x) log_b q(x)               cross-entropy: surprise when coding P with Q
    KL(P || Q) = sum_x p(x) log_b (p(x) / q(x))       = H(P, Q) - H(P) >= 0

Terms with p(x) = 0 count as 0 (the convention 0 log 0 = 0), so an impossible outcome under P
costs nothing, while one that P allows and Q forbids makes H(P, Q) and KL(P || Q) infinite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from vaelab.distributions import gaussian_kl
from vaelab.errors import VaelabError

_SUM_TOLERANCE = 1e-6


def as_distribution(p: Tensor | Sequence[float], name: str = "p") -> Tensor:
    """p as a float64 1-D tensor, checked: finite, non-negative, summing to 1 within 1e-6."""
    t = torch.as_tensor(p, dtype=torch.float64)
    if t.ndim != 1 or t.numel() == 0:
        raise VaelabError(
            f"{name} must be a non-empty 1-D list of probabilities, got shape {tuple(t.shape)}."
        )
    if not torch.isfinite(t).all() or (t < 0).any():
        raise VaelabError(f"{name} must hold finite non-negative probabilities, got {t.tolist()}.")
    total = float(t.sum())
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise VaelabError(
            f"{name} must sum to 1 (within {_SUM_TOLERANCE:g}), but sums to {total:.9g}."
        )
    return t


def _pair(p, q) -> tuple[Tensor, Tensor]:
    p, q = as_distribution(p, "p"), as_distribution(q, "q")
    if p.shape != q.shape:
        raise VaelabError(
            f"p and q must have the same number of outcomes, got {len(p)} and {len(q)}."
        )
    return p, q


def _log(t: Tensor, base: float) -> Tensor:
    if not (base > 0 and base != 1):
        raise VaelabError(f"base must be positive and not 1 (2 for bits, e for nats), got {base}.")
    return torch.log(t) / math.log(base)


def information_content(p: Tensor | Sequence[float], base: float = 2.0) -> Tensor:
    """-log_b p(x) for every outcome (inf for an impossible one)."""
    return -_log(as_distribution(p), base)


def entropy(p: Tensor | Sequence[float], base: float = 2.0) -> Tensor:
    """H(P) = -sum_x p(x) log_b p(x), with 0 log 0 = 0."""
    p = as_distribution(p)
    support = p > 0
    return -(p[support] * _log(p[support], base)).sum()


def cross_entropy(
    p: Tensor | Sequence[float], q: Tensor | Sequence[float], base: float = 2.0
) -> Tensor:
    """H(P, Q) = -sum_x p(x) log_b q(x) over P's support (inf where q = 0 < p)."""
    p, q = _pair(p, q)
    support = p > 0
    return -(p[support] * _log(q[support], base)).sum()


def kl_divergence(
    p: Tensor | Sequence[float], q: Tensor | Sequence[float], base: float = 2.0
) -> Tensor:
    """KL(P || Q) = sum_x p(x) log_b(p(x) / q(x)) over P's support (inf where q = 0 < p)."""
    p, q = _pair(p, q)
    support = p > 0
    return (p[support] * _log(p[support] / q[support], base)).sum()


def worked_example() -> dict:
    """A fair die P against a loaded die Q (a six half the time), all numbers in bits.

    Shows H(P) = log2 6, that coding P with Q's code costs KL(P || Q) extra bits per roll, that
    KL >= 0, and that KL is not symmetric: KL(P || Q) != KL(Q || P).
    """
    p = [1 / 6] * 6
    q = [0.1] * 5 + [0.5]
    return {
        "outcomes": ["1", "2", "3", "4", "5", "6"],
        "p_name": "fair die",
        "q_name": "loaded die",
        "p": p,
        "q": q,
        "unit": "bits",
        "entropy_p": float(entropy(p)),
        "entropy_q": float(entropy(q)),
        "cross_entropy_pq": float(cross_entropy(p, q)),
        "cross_entropy_qp": float(cross_entropy(q, p)),
        "kl_pq": float(kl_divergence(p, q)),
        "kl_qp": float(kl_divergence(q, p)),
    }


# ----------------------------------------------------------------------------- Gaussians (nats)


def gaussian_kl_closed_form(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per dimension, in nats: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2).

    This is the VAE's KL term (Kingma & Welling 2014, Appendix B), the very function the models
    train with (`vaelab.distributions.gaussian_kl`).
    """
    return gaussian_kl(torch.as_tensor(mu), torch.as_tensor(logvar))


def gaussian_kl_monte_carlo(
    mu: Tensor, logvar: Tensor, n: int = 10_000, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Monte Carlo KL(q || p), q = N(mu, sigma^2), p = N(0, 1): the mean of log q(z) - log p(z).

    z = mu + sigma * eps with eps ~ N(0, 1) drawn n times per dimension. Returns the estimate and
    its standard error (sample std / sqrt(n)), both per dimension, in nats.
    """
    if n < 2:
        raise VaelabError(f"n must be at least 2 samples to give a standard error, got {n}.")
    mu, logvar = torch.broadcast_tensors(torch.as_tensor(mu), torch.as_tensor(logvar))
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn((n, *mu.shape), generator=gen, dtype=mu.dtype).to(mu.device)
    z = mu + torch.exp(0.5 * logvar) * eps
    # log q(z) - log p(z); the -0.5 log(2 pi) terms cancel.  (n, *shape)
    log_ratio = -0.5 * logvar - 0.5 * eps.pow(2) + 0.5 * z.pow(2)
    return log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)


# ----------------------------------------------------------------------------- figure


def kl_asymmetry_figure(
    p: Tensor | Sequence[float],
    q: Tensor | Sequence[float],
    labels: Sequence[str],
    base: float = 2.0,
) -> Figure:
    """P and Q side by side as bars, with KL(P || Q) and KL(Q || P) in the title."""
    p, q = _pair(p, q)
    if len(labels) != len(p):
        raise VaelabError(f"need one label per outcome ({len(p)}), got {len(labels)}.")
    unit = {2.0: "bits", math.e: "nats"}.get(float(base), f"log-base-{base:g} units")
    kl_pq, kl_qp = float(kl_divergence(p, q, base)), float(kl_divergence(q, p, base))
    pos, width = np.arange(len(p)), 0.4
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(pos - width / 2, p.numpy(), width, label="P")
    ax.bar(pos + width / 2, q.numpy(), width, label="Q")
    ax.set_xticks(pos, list(labels))
    ax.set(
        ylabel="probability", title=f"KL(P||Q) = {kl_pq:.3f} {unit},  KL(Q||P) = {kl_qp:.3f} {unit}"
    )
    ax.legend()
    return fig
