"""beta-TCVAE (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of Disentanglement in VAEs").

The ELBO's KL, averaged over the data, splits into three (their eq. 2):

    E_n KL(q(z|n) || p(z)) = I_q(z; n)                      index-code mutual information
                           + KL(q(z) || prod_d q(z_d))      total correlation (TC)
                           + sum_d KL(q(z_d) || p(z_d))     dimension-wise KL

and loss = -E_q[log p(x|z)] + alpha MI + beta TC + gamma dim-KL (eq. 4; alpha = beta = gamma = 1
is the VAE's negative ELBO in expectation). Penalizing the TC alone pushes the code towards
independent dimensions without also squeezing the information the code holds.

The aggregate posterior q(z) = 1/N sum_n q(z|n) over the N training images is estimated by
minibatch-weighted sampling (eq. 3): log q(z_i) ~ log sum_j q(z_i|x_j) - log(N M) over the
batch's M images, and each log q(z_id) the same way per dimension. `vaelab train` sets N
(dataset_size) from the data. N enters only through -log(N M), a constant: the gradients do not
depend on it, and the three terms sum to log q(z|x) - log p(z), the one-sample KL estimate,
whatever N. Each term on its own is biased, though: eq. 3 is a lower bound on log q(z) (its
importance weights see only the batches that hold image i), low by log M where the posteriors
do not overlap and by log N where they coincide, and so is each log q(z_id). The reported MI
thus reads log M to log N high, and TC and dim-KL move by such amounts too (at initialization,
when every q(z|x) is alike: MI = log N, TC = (D - 1) log N, dim-KL = -D log N). Their sum is
right, and so is the ELBO's closed-form KL (`kl`). Under torchrun each rank estimates q(z) from
its own shard of the batch (M = B / R): not step for step the one-process run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from vaelab.distributions import DiagonalGaussian, gaussian_log_prob
from vaelab.errors import VaelabError
from vaelab.models.base import Batch, LossOutput, StepContext, register
from vaelab.models.vae import VAE, VAEConfig
from vaelab.priors import Prior


@dataclass
class BetaTCVAEConfig(VAEConfig):
    alpha: float = 1.0  # weight of the index-code mutual information
    beta: float = 6.0  # weight of the total correlation (the paper's beta, not a KL weight)
    gamma: float = 1.0  # weight of the dimension-wise KL
    dataset_size: int = 60_000  # N of eq. 3 (MNIST's training set unless the data says)

    def validate(self) -> None:
        super().validate()
        if not (self.alpha >= 0 and self.gamma >= 0):
            raise VaelabError(
                f"model alpha {self.alpha!r} and gamma {self.gamma!r}: expected numbers >= 0"
            )
        if self.dataset_size < 1:
            raise VaelabError(f"model dataset_size is {self.dataset_size}: expected >= 1 image")
        if self.prior != "normal":
            raise VaelabError(
                f"model prior is {self.prior!r}: beta-tcvae's dimension-wise KL needs the "
                "factorized prior N(0, I) (prior 'normal')"
            )


def log_density_matrix(q: DiagonalGaussian, z: Tensor) -> Tensor:
    """log q(z_id | x_j) for every sample i and image j of the batch: (B_i, B_j, D)."""
    return gaussian_log_prob(z.unsqueeze(1), q.mean.unsqueeze(0), q.logvar.unsqueeze(0))


def kl_decomposition(q: DiagonalGaussian, z: Tensor, prior: Prior,
                     dataset_size: int) -> dict[str, Tensor]:  # fmt: skip
    """MI, TC and dimension-wise KL per sample (B,) each, by minibatch-weighted sampling (eq. 3)
    at z_i ~ q(z|x_i) (B, D)."""
    mat = log_density_matrix(q, z)  # (B, B, D)
    log_nm = math.log(dataset_size * len(z))
    log_qz = mat.sum(-1).logsumexp(dim=1) - log_nm  # (B,): log q(z_i)
    log_prod_qzd = (mat.logsumexp(dim=1) - log_nm).sum(-1)  # (B,): sum_d log q(z_id)
    return {
        "mi": q.log_prob(z) - log_qz,
        "tc": log_qz - log_prod_qzd,
        "dim_kl": log_prod_qzd - prior.log_prob(z),
    }


@register("beta-tcvae")
class BetaTCVAE(VAE):
    batch_statistic_loss = True  # an MMD / TC over the batch: see models/base.py
    config_class = BetaTCVAEConfig
    loss_name = "beta-TCVAE loss (not a bound unless alpha = beta = gamma = 1)"

    @classmethod
    def fields_from_data(cls, num_classes: int | None, train_images: int = 0) -> dict[str, object]:
        fields = super().fields_from_data(num_classes, train_images)
        return {**fields, "dataset_size": train_images} if train_images > 0 else fields

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        c = self.config
        q = self.encode(batch.x, batch.y)
        z = q.rsample()  # (B, D)
        recon = -self.decode(z, batch.y).log_prob(batch.x)  # (B,)
        terms = {k: v.mean() for k, v in kl_decomposition(q, z, self.prior, c.dataset_size).items()}
        penalty = c.alpha * terms["mi"] + c.beta * terms["tc"] + c.gamma * terms["dim_kl"]
        loss = recon.mean() + ctx.kl_warmup * penalty
        kl = self.kl_estimate(q, z)  # (B,): closed form, for the ELBO
        metrics = {"loss": loss, "recon": recon.mean(), "kl": kl.mean(),
                   "neg_elbo": (recon + kl).mean(), **terms}  # fmt: skip
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})
