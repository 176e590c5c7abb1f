"""MIWAE(M, K) (Rainforth et al. 2018, "Tighter variational bounds are not necessarily better").

The average of M independent IWAE-K bounds, from M x K samples per image:
    L_{M,K} = (1/M) sum_m log (1/K) sum_k w_{m,k},   w = p(x, z) / q(z|x), z ~ q(z|x).
MIWAE(1, K) is IWAE-K, MIWAE(M, 1) the ELBO estimated from M samples. At a fixed budget of
M x K samples a larger M loosens the bound but raises the signal-to-noise ratio of the encoder's
gradient, which Rainforth et al. show grows as sqrt(M / K) (their Section 3), while the
decoder's grows as sqrt(M K).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vaelab.distributions import log_mean_exp
from vaelab.errors import VaelabError
from vaelab.models.base import register
from vaelab.models.iwae import IWAE, IWAEConfig


@dataclass
class MIWAEConfig(IWAEConfig):
    k: int = 8  # K: importance samples inside each IWAE bound
    m: int = 8  # M: independent IWAE-K bounds averaged

    def validate(self) -> None:
        super().validate()
        if self.m < 1:
            raise VaelabError(f"model m is {self.m!r}: expected at least 1 bound to average")

    @property
    def samples(self) -> int:
        return self.m * self.k


def miwae_bound(log_w: Tensor, m: int) -> Tensor:
    """L_{M,K} per image (B,) from log weights (M K, B): M consecutive groups of K."""
    return log_mean_exp(log_w.unflatten(0, (m, -1)), dim=1).mean(0)  # (M, K, B) -> (B,)


@register("miwae")
class MIWAE(IWAE):
    config_class = MIWAEConfig

    @property
    def loss_name(self) -> str:
        return f"negative MIWAE bound (M={self.config.m}, K={self.config.k})"

    def bound(self, log_w: Tensor) -> Tensor:
        return miwae_bound(log_w, self.config.m)
