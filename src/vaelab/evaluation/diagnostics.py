"""How a latent space is used: usage per dimension and active units (Burda et al. 2016, 5.2)."""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.models import LatentSummary, Model

ACTIVE_THRESHOLD = 0.01  # Burda et al.: a unit is active when Cov_x(E_q[z_u]) > 10^-2


def _part(y: Tensor | None, i: int, n: int) -> Tensor | None:
    return None if y is None else y[i : i + n]


@torch.no_grad()
def posterior_means(model: Model, x: Tensor, y: Tensor | None = None,
                    batch_size: int = 1000) -> Tensor:  # fmt: skip
    """E_q[z|x] for every image: (N, D)."""
    return torch.cat([model.encode(x[i : i + batch_size], _part(y, i, batch_size)).mean
                      for i in range(0, len(x), batch_size)])  # fmt: skip


@torch.no_grad()
def latent_usage(model: Model, x: Tensor, y: Tensor | None = None) -> LatentSummary:
    """How much each latent dimension is used over the images, and what that is measured
    against (for a VAE: the KL to the prior's marginal; for an autoencoder: the codes'
    variance). The model says which (Model.latent_summary)."""
    return model.latent_summary(x, y)


def active_units(means: Tensor, threshold: float = ACTIVE_THRESHOLD) -> tuple[int, Tensor]:
    """The number of units whose posterior mean varies over the data above `threshold`, and
    each unit's variance (D,)."""
    variance = means.var(dim=0, unbiased=True)
    return int((variance > threshold).sum()), variance
