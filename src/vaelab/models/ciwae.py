"""CIWAE(beta) (Rainforth et al. 2018, "Tighter variational bounds are not necessarily better").

A convex combination of the ELBO and the IWAE bound from the same K samples per image:
    L = beta * ELBO + (1 - beta) * IWAE-K,   ELBO = (1/K) sum_k log w_k,
so beta = 1 is the ELBO (estimated from K samples) and beta = 0 IWAE-K. The ELBO's part keeps
the encoder's gradient signal from vanishing as K grows. Its beta is `elbo_weight` here: the
VAE's `beta` already weighs the KL term.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vaelab.distributions import log_mean_exp
from vaelab.errors import VaelabError
from vaelab.models.base import register
from vaelab.models.iwae import IWAE, IWAEConfig


@dataclass
class CIWAEConfig(IWAEConfig):
    elbo_weight: float = 0.5  # Rainforth et al.'s beta in [0, 1]

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.elbo_weight <= 1.0:
            raise VaelabError(
                f"model elbo_weight is {self.elbo_weight!r}: expected a number in [0, 1]"
            )


def ciwae_bound(log_w: Tensor, beta: float) -> Tensor:
    """beta * ELBO + (1 - beta) * IWAE-K per image (B,) from log weights (K, B)."""
    return beta * log_w.mean(0) + (1 - beta) * log_mean_exp(log_w, dim=0)


@register("ciwae")
class CIWAE(IWAE):
    config_class = CIWAEConfig

    @property
    def loss_name(self) -> str:
        return f"negative CIWAE bound (beta={self.config.elbo_weight}, K={self.config.k})"

    def bound(self, log_w: Tensor) -> Tensor:
        return ciwae_bound(log_w, self.config.elbo_weight)
