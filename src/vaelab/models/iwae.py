"""The importance-weighted autoencoder (Burda, Grosse & Salakhutdinov 2016).

L_k = E[log (1/k) sum_i p(x, z_i) / q(z_i|x)], z_i ~ q(z|x): a bound on log p(x) that tightens
as k grows (L_1 is the ELBO). Differentiating log-mean-exp weights each sample's gradient by
its normalized importance weight, the paper's estimator (eq. 14), so the best samples count most.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@register("iwae")
class IWAE(VAE):
    config_class = IWAEConfig

    @property
    def loss_name(self) -> str:
        return f"negative IWAE bound (k={self.config.k})"

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        if self.config.k == 1:  # L_1 is the ELBO: use its lower-variance analytic KL
            return super().loss(phase, batch, ctx)
        kl_weight = self.config.beta * ctx.kl_warmup
        log_w = self.log_weights(batch.x, batch.y, self.config.k, kl_weight)  # (K, B)
        loss = -log_mean_exp(log_w, dim=0).mean()
        elbo = log_w.mean(0).mean()  # the same samples' ELBO estimate, for comparison
        metrics = {"loss": loss, "neg_elbo": -elbo}
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})
