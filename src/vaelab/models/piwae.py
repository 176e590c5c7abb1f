"""PIWAE(M, K) (Rainforth et al. 2018, "Tighter variational bounds are not necessarily better").

Each network gets the bound that is good for it: the generative network (decoder, likelihood
head and a learned prior) ascends IWAE-(M K), whose gradient's signal-to-noise ratio grows with
the number of samples, and the inference network (encoder) ascends MIWAE(M, K), whose SNR falls
as 1/sqrt(K) but grows as sqrt(M). The two run as two phases of the one trainer, each with its
own optimizer and M x K fresh samples per image: "decoder" first, then "encoder".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaelab.distributions import log_mean_exp
from vaelab.errors import VaelabError
from vaelab.models.base import Batch, LossOutput, Phase, StepContext, register
from vaelab.models.miwae import MIWAE, MIWAEConfig


@dataclass
class PIWAEConfig(MIWAEConfig):
    """M and K as MIWAE's: the decoder's bound is IWAE-(M K), the encoder's MIWAE(M, K)."""


@register("piwae")
class PIWAE(MIWAE):
    config_class = PIWAEConfig

    @property
    def loss_name(self) -> str:
        return f"negative IWAE bound (k={self.config.samples}), the decoder's target"

    def phases(self) -> list[Phase]:
        generative = [*self.decoder.parameters(), *self.likelihood.parameters(),
                      *self.prior.parameters()]  # fmt: skip
        return [Phase("decoder", generative), Phase("encoder", list(self.encoder.parameters()))]

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        kl_weight = self.config.beta * ctx.kl_warmup
        if phase == "decoder":
            return self.decoder_loss(batch, kl_weight)
        if phase == "encoder":
            return self.encoder_loss(batch, kl_weight)
        raise VaelabError(f"model piwae has no phase {phase!r}: expected decoder or encoder")

    def decoder_loss(self, batch: Batch, kl_weight: float) -> LossOutput:
        """-IWAE-(M K). q(z|x) is computed without a graph: no decoder parameter acts on z or
        on log q(z|x), so the decoder's gradient is the same and the encoder's backward pass,
        which this phase would throw away, is saved."""
        with torch.no_grad():
            q = self.encode(batch.x, batch.y)
        log_w = self.weights_under(q, batch.x, batch.y, self.config.samples, None, kl_weight)
        loss = -log_mean_exp(log_w, dim=0).mean()  # log_w: (M K, B)
        return LossOutput(loss, {"loss": loss.detach(), "neg_elbo": -log_w.mean().detach()})

    def encoder_loss(self, batch: Batch, kl_weight: float) -> LossOutput:
        """-MIWAE(M, K), the bound of miwae.py."""
        log_w = self.log_weights(batch.x, batch.y, self.config.samples, kl_weight=kl_weight)
        loss = -self.bound(log_w).mean()
        return LossOutput(loss, {"neg_miwae": loss.detach()})
