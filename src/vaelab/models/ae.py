"""The plain autoencoder: a deterministic code and a reconstruction loss, nothing else.

It compresses (like maximum likelihood fits without a prior) but puts no distribution on its
codes, so decoding z ~ N(0, I) need not give anything like the data: the contrast with the VAE.
"""

from __future__ import annotations

from torch import Tensor

from vaelab.distributions import PointMass
from vaelab.models.base import Batch, LossOutput, Model, StepContext, register


@register("ae")
class AE(Model):
    loss_name = "reconstruction loss -log p(x|z)"

    def encoder_out_dim(self) -> int:
        return self.config.latent_dim  # a code, no variance

    def encode(self, x: Tensor, y: Tensor | None = None) -> PointMass:
        return PointMass(self.encoder(x, self.condition(y)))

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        z = self.encode(batch.x, batch.y).mean  # (B, D)
        recon = -self.decode(z, batch.y).log_prob(batch.x).mean()
        return LossOutput(recon, {"loss": recon.detach(), "recon": recon.detach()})
