"""InfoVAE and the MMD-VAE (Zhao, Song & Ermon 2017, "InfoVAE").

loss = -E_q[log p(x|z)] + (1 - alpha) KL(q(z|x) || p(z)) + (alpha + lambda - 1) MMD^2(q(z), p(z))

(their eq. 6, with the MMD in place of the divergence between the aggregate posterior q(z) and
the prior: eq. 7's family). alpha = 1 with a large lambda is the MMD-VAE: no KL per image, so
the codes may carry as much about x as the decoder uses, while q(z) as a whole is pulled to
p(z) so that prior samples decode to digits. The MMD is the U-statistic between the batch's
samples z ~ q(z|x) and as many prior samples (models/mmd.py; the Gaussian kernel by default).

What the loss bounds: E_data KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z)) (Hoffman &
Johnson 2016), so with the KL in place of the MMD the loss is
    -ELBO - alpha I_q(x; z) + (lambda - 1) KL(q(z) || p(z)):
the negative ELBO, an upper bound on -log p(x), only at alpha = 0, lambda = 1 (the VAE's loss,
value for value at the same noise); otherwise it is no bound in general. The model is still a
DensityModel: its ELBO and importance-sampled log p(x), which `neg_elbo` and `vaelab eval`
report, are the VAE's, valid for whatever encoder the InfoVAE loss trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vaelab.errors import VaelabError
from vaelab.models.base import Batch, LossOutput, StepContext, register
from vaelab.models.mmd import mmd_unbiased
from vaelab.models.vae import VAE, VAEConfig


@dataclass
class InfoVAEConfig(VAEConfig):
    alpha: float = 1.0  # 1: the MMD-VAE (no KL per image)
    # lambda: the MMD's weight is alpha + lambda - 1. On mnist-sample (5 epochs, one seed, 8-D
    # codes, alpha = 1) lambda = 100 reached a reconstruction of 120 nats, and decoded prior
    # samples came within an MMD^2 (evaluation/samples.py) of 0.043 of test digits (a VAE's:
    # 0.065); lambda = 1000 held the reconstruction at 183 nats (samples 0.13).
    lam: float = 100.0
    kernel: Literal["imq", "gaussian"] = "gaussian"

    def validate(self) -> None:
        super().validate()
        if self.beta != 1.0:
            raise VaelabError(
                f"model beta is {self.beta!r}: info-vae weighs its KL by 1 - alpha instead, "
                "so beta must stay 1"
            )
        if not (self.alpha <= 1 and self.alpha + self.lam - 1 >= 0):
            raise VaelabError(
                f"model alpha is {self.alpha!r} and lam {self.lam!r}: expected alpha <= 1 and "
                "alpha + lam >= 1 (both weights, 1 - alpha and alpha + lam - 1, >= 0)"
            )


@register("info-vae")
class InfoVAE(VAE):
    batch_statistic_loss = True  # an MMD / TC over the batch: see models/base.py
    config_class = InfoVAEConfig

    @property
    def loss_name(self) -> str:
        c = self.config
        if c.alpha == 0 and c.lam == 1:
            return "negative ELBO"
        return f"InfoVAE loss (alpha={c.alpha:g}, lambda={c.lam:g}; not a bound)"

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        c = self.config
        q = self.encode(batch.x, batch.y)
        z = q.rsample()  # (B, D)
        recon = -self.decode(z, batch.y).log_prob(batch.x)  # (B,)
        kl = self.kl_estimate(q, z)  # (B,)
        mmd = mmd_unbiased(z, self.sample_prior(len(z)), c.kernel)
        # Warm-up scales both of the prior's terms, as it scales the VAE's KL.
        penalty = (1 - c.alpha) * kl.mean() + (c.alpha + c.lam - 1) * mmd
        loss = recon.mean() + ctx.kl_warmup * penalty
        metrics = {"loss": loss, "recon": recon.mean(), "kl": kl.mean(), "mmd": mmd,
                   "neg_elbo": (recon + kl).mean()}  # fmt: skip
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})
