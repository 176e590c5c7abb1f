"""The variational autoencoder (Kingma & Welling 2014) with a KL weight (Higgins et al. 2017).

loss = -E_q[log p(x|z)] + beta * KL(q(z|x) || N(0, I)), one reparameterized sample per image.
With beta = 1 the loss is the negative ELBO, an upper bound on -log p(x).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vaelab.distributions import DiagonalGaussian
from vaelab.errors import VaelabError
from vaelab.models.base import Batch, LossOutput, Model, ModelConfig, StepContext, register


@dataclass
class VAEConfig(ModelConfig):
    beta: float = 1.0  # weight of the KL term; 1 is the ELBO

    def validate(self) -> None:
        super().validate()
        if not self.beta >= 0:
            raise VaelabError(f"model beta is {self.beta!r}: expected a number >= 0")


@register("vae")
class VAE(Model):
    config_class = VAEConfig

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        mean, logvar = self.encoder(x, self.condition(y)).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def kl_weight(self, ctx: StepContext) -> float:
        """The hook beta-VAE variants override; the warm-up multiplies it."""
        return self.config.beta * ctx.kl_warmup

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        q = self.encode(batch.x, batch.y)
        z = q.rsample()  # (B, D)
        recon = -self.decode(z, batch.y).log_prob(batch.x)  # (B,)
        kl = q.kl_to_standard_normal()  # (B,)
        loss = (recon + self.kl_weight(ctx) * kl).mean()
        metrics = {
            "loss": loss,
            "recon": recon.mean(),
            "kl": kl.mean(),
            "neg_elbo": (recon + kl).mean(),
        }
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})
