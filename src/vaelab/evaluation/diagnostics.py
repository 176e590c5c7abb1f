"""How a latent space is used: KL per dimension and active units (Burda et al. 2016, Sec. 5.2)."""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.models import Model

ACTIVE_THRESHOLD = 0.01  # Burda et al.: a unit is active when Cov_x(E_q[z_u]) > 10^-2


@torch.no_grad()
def posterior_means(model: Model, x: Tensor, y: Tensor | None = None,
                    batch_size: int = 1000) -> Tensor:  # fmt: skip
    """E_q[z|x] for every image: (N, D)."""
    cond = y if model.conditional else None
    return torch.cat([model.encode(x[i : i + batch_size],
                                   None if cond is None else cond[i : i + batch_size]).mean
                      for i in range(0, len(x), batch_size)])  # fmt: skip


@torch.no_grad()
def kl_per_dim(model: Model, x: Tensor, y: Tensor | None = None,
               batch_size: int = 1000) -> Tensor:  # fmt: skip
    """The data-average KL(q(z_d|x) || N(0, 1)) of each latent dimension d: (D,) nats."""
    cond = y if model.conditional else None
    total = 0.0
    for i in range(0, len(x), batch_size):
        q = model.encode(x[i : i + batch_size], None if cond is None else cond[i : i + batch_size])
        total = total + q.kl_per_dim().sum(0)
    return total / len(x)


def active_units(means: Tensor, threshold: float = ACTIVE_THRESHOLD) -> tuple[int, Tensor]:
    """The number of units whose posterior mean varies over the data above `threshold`, and
    each unit's variance (D,)."""
    variance = means.var(dim=0, unbiased=True)
    return int((variance > threshold).sum()), variance
