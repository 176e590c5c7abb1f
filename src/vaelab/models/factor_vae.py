"""FactorVAE (Kim & Mnih 2018, "Disentangling by Factorising").

loss = -ELBO + gamma * TC(z), TC = KL(q(z) || prod_d q(z_d)) the total correlation of the
aggregate posterior, estimated with a discriminator D by the density-ratio trick (their eq. 3 and
Algorithm 2): D tells codes z ~ q(z) from codes whose dimensions were each shuffled across the
batch (samples of prod_d q(z_d)), and TC ~ E_q(z)[log D(z) / (1 - D(z))], D's logit.

Every batch runs two phases of the one trainer:
  1. vae: encoder and decoder minimise the negative ELBO plus gamma times D's logit on their
     codes (through which the encoder learns to make its dimensions independent);
  2. discriminator: D's own parameters minimise the cross-entropy of codes (target 1) against
     shuffled codes (target 0). As Algorithm 2 takes a second batch for the shuffled codes, the
     batch's first half gives the codes and its second half the shuffled ones.
Only the loss changes: the ELBO and importance-sampled log p(x) (DensityModel) are the VAE's.
Under torchrun each rank halves and shuffles its own shard: not step for step one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.errors import VaelabError
from vaelab.models.aae import accuracy, bce, leaky_mlp
from vaelab.models.base import Batch, LossOutput, Phase, StepContext, register
from vaelab.models.vae import VAE, VAEConfig


@dataclass
class FactorVAEConfig(VAEConfig):
    gamma: float = 10.0  # weight of the total correlation
    disc_hidden: tuple[int, ...] = (512, 512, 512)  # the paper's D: 6 layers of 1000 units

    def validate(self) -> None:
        super().validate()
        if not self.gamma >= 0:
            raise VaelabError(f"model gamma is {self.gamma!r}: expected a number >= 0")
        if not all(h > 0 for h in self.disc_hidden):
            raise VaelabError(f"model disc_hidden is {self.disc_hidden!r}: expected positive sizes")


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each column of z (B, D) shuffled by its own permutation of the batch (Algorithm 1): every
    dimension keeps its marginal, and the dependence between dimensions is gone."""
    noise = torch.rand(z.shape, generator=generator, device=z.device)
    return z.gather(0, noise.argsort(dim=0))


@register("factor-vae")
class FactorVAE(VAE):
    batch_statistic_loss = True  # an MMD / TC over the batch: see models/base.py
    config_class = FactorVAEConfig
    loss_name = "FactorVAE loss: -ELBO + gamma TC (not a bound)"

    def __init__(self, config: FactorVAEConfig):
        super().__init__(config)
        self.discriminator = leaky_mlp([config.latent_dim, *config.disc_hidden, 1])

    def phases(self) -> list[Phase]:
        vae = [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]
        return [Phase("vae", vae), Phase("discriminator", list(self.discriminator.parameters()))]

    def tc_estimate(self, z: Tensor) -> Tensor:
        """E log D(z) / (1 - D(z)) over the codes z (B, D): the logit of D, in float32 also
        under autocast (a bf16 mean would round the loss)."""
        return self.discriminator(z).float().mean()

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        if phase == "vae":
            return self.vae_loss(batch, ctx)
        if phase == "discriminator":
            return self.discriminator_loss(batch)
        raise VaelabError(f"model factor-vae has no phase {phase!r}")

    def vae_loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        q = self.encode(batch.x, batch.y)
        z = q.rsample()  # (B, D)
        recon = -self.decode(z, batch.y).log_prob(batch.x)  # (B,)
        kl = self.kl_estimate(q, z)  # (B,)
        tc = self.tc_estimate(z)
        loss = recon.mean() + self.kl_term(kl, ctx) + self.config.gamma * tc
        metrics = {"loss": loss, "recon": recon.mean(), "kl": kl.mean(), "tc": tc,
                   "neg_elbo": (recon + kl).mean()}  # fmt: skip
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})

    def discriminator_loss(self, batch: Batch) -> LossOutput:
        with torch.no_grad():
            z = self.encode(batch.x, batch.y).rsample()  # (B, D)
        return self.discriminator_terms(z)

    def discriminator_terms(self, z: Tensor) -> LossOutput:
        """D's cross-entropy on codes z (B, D): the first half as they are (target 1), the
        second half shuffled (target 0)."""
        half = len(z) // 2  # 0 for a batch of one image (an epoch's last): it serves for both
        first, second = (z[:half], z[half:]) if half else (z, z)
        joint = self.discriminator(first).squeeze(-1)  # (B/2,): logits on q(z)
        shuffled = self.discriminator(permute_dims(second)).squeeze(-1)  # on prod_d q(z_d)
        loss = bce(joint, 1.0) + bce(shuffled, 0.0)
        return LossOutput(loss, {"disc_loss": loss.detach(), "disc_acc": accuracy(joint, shuffled)})

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """The vae phase's metrics and D's accuracy on this batch's codes."""
        return {**self.vae_loss(batch, StepContext()).metrics,
                **self.discriminator_loss(batch).metrics}  # fmt: skip
