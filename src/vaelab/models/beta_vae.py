"""beta-VAE (Higgins et al. 2017), optionally with a capacity schedule (Burgess et al. 2018).

Only the KL term changes: beta * KL, or with a capacity, beta * |KL - C| where C grows
linearly from 0 to `capacity` nats over `capacity_steps` steps, so the code may carry more
information as training goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vaelab.errors import VaelabError
from vaelab.models.base import StepContext, register
from vaelab.models.vae import VAE, VAEConfig


@dataclass
class BetaVAEConfig(VAEConfig):
    beta: float = 4.0
    capacity: float | None = None  # C_max in nats; None: plain beta * KL
    capacity_steps: int = 10000

    def validate(self) -> None:
        super().validate()
        if self.capacity is not None and not (self.capacity >= 0 and self.capacity_steps > 0):
            raise VaelabError(
                f"capacity {self.capacity!r} over {self.capacity_steps!r} steps: expected "
                "capacity >= 0 nats and capacity_steps > 0"
            )


@register("beta-vae")
class BetaVAE(VAE):
    config_class = BetaVAEConfig
    loss_name = "beta-VAE loss (not a bound unless beta = 1)"

    def capacity_at(self, step: int) -> float:
        return self.config.capacity * min(1.0, step / self.config.capacity_steps)

    def kl_term(self, kl: Tensor, ctx: StepContext) -> Tensor:
        if self.config.capacity is None:
            return super().kl_term(kl, ctx)
        return self.config.beta * (kl.mean() - self.capacity_at(ctx.step)).abs()
