"""The importance-weighted autoencoder (Burda, Grosse & Salakhutdinov 2016).

L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)], z_i ~ q(z|x): a bound on log p(x) that tightens
as k grows (L_1 is the ELBO). Differentiating log-mean-exp weights each sample's gradient by
its normalized importance weight, the paper's estimator (eq. 14), so the best samples count most.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vaelab.distributions import log_mean_exp
from vaelab.errors import VaelabError
from vaelab.models.base import Batch, LossOutput, StepContext, register
from vaelab.models.vae import VAE, VAEConfig


@dataclass
class IWAEConfig(VAEConfig):
    k: int = 5  # importance samples per image

    def validate(self) -> None:
        super().validate()
        if self.k < 1:
            raise VaelabError(f"model k is {self.k!r}: expected at least 1 importance sample")

    @property
    def samples(self) -> int:
        """Importance samples per image that the training bound draws (MIWAE: M x K)."""
        return self.k


@register("iwae")
class IWAE(VAE):
    config_class = IWAEConfig

    @property
    def loss_name(self) -> str:
        return f"negative IWAE bound (k={self.config.k})"

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        if self.config.samples == 1:  # L_1 is the ELBO: use its lower-variance analytic KL
            return super().loss(phase, batch, ctx)
        return self.importance_weighted_loss(batch, ctx)

    def bound(self, log_w: Tensor) -> Tensor:
        """The training bound per image (B,) from log weights (S, B): L_k, the log-mean-exp.
        The hook that the variants of Rainforth et al. (2018) override (miwae.py, ciwae.py)."""
        return log_mean_exp(log_w, dim=0)

    def importance_weighted_loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        """-bound over the batch (for L_k the paper's eq. 14 estimator), config.samples draws."""
        kl_weight = self.config.beta * ctx.kl_warmup
        log_w = self.log_weights(batch.x, batch.y, self.config.samples, kl_weight=kl_weight)
        loss = -self.bound(log_w).mean()  # log_w: (S, B)
        elbo = log_w.mean(0).mean()  # the same samples' ELBO estimate, for comparison
        metrics = {"loss": loss, "neg_elbo": -elbo}
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})
