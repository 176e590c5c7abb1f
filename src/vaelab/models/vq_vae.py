"""The vector-quantized VAE, VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017).

The encoder's output z_e(x) (B, latent_dim) is a row of `cells` vectors of `embedding_dim`
(latent_dim = cells x embedding_dim, in row-major order); each is replaced by the nearest of K
codebook vectors, z_q = e_c with c = argmin_k |z_e - e_k| (eq. 1-2), and the decoder reads z_q.
The argmin has no gradient, so the decoder's gradient at z_q is copied to z_e (straight-through,
Section 3.2). loss = -log p(x|z_q) + |sg[z_e] - e|^2 + beta |z_e - sg[e]|^2 (eq. 3, beta = 0.25,
summed over the cells): the codebook term moves the codes to the encoder's outputs, the
commitment term keeps the encoder near its codes. With codebook = "ema" the codes are instead
moving averages of the outputs assigned to them (Appendix A.1; models/vq.py).

The prior is autoregressive over the cells' codes, p(c) = prod_i p(c_i | c_<i) (CodePrior, a GRU
in the cells' order), and trains as the second phase of every step on the batch's detached codes
(the paper fits a PixelCNN once the VQ-VAE is trained; the two phases are that, interleaved).
Samples: codes from p(c), decoded from their vectors.

The contract: encode(x).mean is z_q flattened (B, latent_dim); decode(z) decodes any point of
that space (one between codebook vectors too: interpolations pass through them), so the
explorer's plane shows 2 of latent_dim dimensions, the others held. Not a DensityModel: p(c) is
a proper distribution over code rows, but p(x) would need the decoder as a density summed over
all K^cells rows; eval reports the prior's -log p(c) of the test codes instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.distributions import PointMass, full_precision
from vaelab.errors import VaelabError
from vaelab.models.base import Batch, LossOutput, Model, ModelConfig, Phase, StepContext, register
from vaelab.models.vq import Codebook, CodePrior, make_codebook, straight_through


@dataclass
class VQVAEConfig(ModelConfig):
    latent_dim: int = 32  # cells x embedding_dim: 16 cells
    embedding_dim: int = 2  # of each codebook vector
    # K. On mnist-sample (5 epochs, one seed) 128 codes were used with a perplexity of 90 and
    # reconstructed at 96 nats; 64 codes at 53 and 99 nats.
    codebook_size: int = 128
    codebook: Literal["ema", "loss"] = "ema"  # how the codes learn (Appendix A.1, or eq. 3)
    commitment: float = 0.25  # beta of eq. 3
    ema_decay: float = 0.99  # gamma of Appendix A.1
    prior_hidden: int = 128  # units of the prior's GRU

    def validate(self) -> None:
        super().validate()
        e = self.embedding_dim
        if e < 1 or self.latent_dim % e:
            raise VaelabError(f"model embedding_dim is {e}: expected a divisor of latent_dim "
                              f"({self.latent_dim} = cells x embedding_dim)")  # fmt: skip
        checks = [
            (self.codebook_size >= 2, "codebook_size", "2 or more codes"),
            (self.commitment >= 0, "commitment", "a number >= 0"),
            (0 < self.ema_decay < 1, "ema_decay", "a number between 0 and 1"),
            (self.prior_hidden > 0, "prior_hidden", "a positive integer"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise VaelabError(f"model {name} is {getattr(self, name)!r}: expected {expected}")


@register("vq-vae")
class VQVAE(Model):
    config_class = VQVAEConfig
    loss_name = "VQ-VAE loss: -log p(x|z_q) + codebook and commitment terms (not a bound)"
    portable_nets = False  # encode quantizes: more than the encoder net

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        self.codebook: Codebook = make_codebook(config.codebook, config.codebook_size,
                                                config.embedding_dim, config.ema_decay)  # fmt: skip

    @property
    def cells(self) -> int:
        return self.config.latent_dim // self.config.embedding_dim

    def build_prior(self) -> CodePrior:
        c = self.config
        return CodePrior(c.latent_dim, self.cells, c.codebook_size, c.prior_hidden,
                         self.embed_codes)  # fmt: skip

    def encoder_out_dim(self) -> int:
        return self.config.latent_dim  # z_e: no variance

    def embed_codes(self, codes: Tensor) -> Tensor:
        """The codes' vectors, flattened: (..., cells) -> (..., latent_dim)."""
        return self.codebook.embed(codes).flatten(-2)

    def quantize(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """z_e (B, cells, E), its codes (B, cells) and their vectors z_q (B, cells, E)."""
        z_e = full_precision(self.encoder(x, self.condition(y)))
        z_e = z_e.view(len(x), self.cells, self.config.embedding_dim)
        codes = self.codebook.nearest(z_e)
        return z_e, codes, self.codebook.embed(codes)

    def encode(self, x: Tensor, y: Tensor | None = None) -> PointMass:
        z_e, _, z_q = self.quantize(x, y)
        return PointMass(straight_through(z_e, z_q).flatten(1))

    def phases(self) -> list[Phase]:
        model = [p for name, p in self.named_parameters() if not name.startswith("prior.")]
        return [Phase("autoencoder", model), Phase("prior", list(self.prior.parameters()))]

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        if phase == "autoencoder":
            return self.autoencoder_loss(batch)
        if phase == "prior":
            return self.prior_loss(batch)
        raise VaelabError(f"model vq-vae has no phase {phase!r}")

    def autoencoder_loss(self, batch: Batch) -> LossOutput:
        z_e, codes, z_q = self.quantize(batch.x, batch.y)
        z = straight_through(z_e, z_q).flatten(1)  # (B, latent_dim)
        recon = -self.decode(z, batch.y).log_prob(batch.x).mean()
        commitment = (z_e - z_q.detach()).pow(2).sum((1, 2)).mean()
        terms = self.codebook.losses(z_e, z_q)  # {"codebook": ...}, or none for EMA codes
        loss = recon + self.config.commitment * commitment + sum(terms.values())
        if self.training:
            self.codebook.update(z_e.flatten(0, 1), codes.flatten())
        metrics = {"loss": loss, "recon": recon, "commitment": commitment, **terms}
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})

    def prior_loss(self, batch: Batch) -> LossOutput:
        with torch.no_grad():
            codes = self.quantize(batch.x, batch.y)[1]  # (B, cells)
        nll = -self.prior.log_prob_codes(codes).mean()
        return LossOutput(nll, {"prior_nll": nll.detach()})

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """Both phases' metrics and the codes' perplexity (kept out of the training metrics: a
        statistic of the whole batch, which torchrun's ranks would each see only part of)."""
        freq = code_frequencies(self.quantize(batch.x, batch.y)[1], self.config.codebook_size)
        return {**self.autoencoder_loss(batch).metrics, **self.prior_loss(batch).metrics,
                "perplexity": perplexity(freq)}  # fmt: skip

    @torch.no_grad()
    def eval_numbers(self, x: Tensor, y: Tensor | None = None) -> dict[str, float | list[float]]:
        """How many codes the test images use, their perplexity, and the prior's -log p(c)."""
        codes = torch.cat([self.quantize(x[i : i + 500], None if y is None else y[i : i + 500])[1]
                           for i in range(0, len(x), 500)])  # fmt: skip
        nll = torch.cat([-self.prior.log_prob_codes(c) for c in codes.split(500)])
        freq = code_frequencies(codes, self.config.codebook_size)
        return {"codes_used": int(freq.gt(0).sum()), "code_perplexity": perplexity(freq).item(),
                "prior_nll_codes": nll.mean().item()}  # fmt: skip


def code_frequencies(codes: Tensor, size: int) -> Tensor:
    """How often each of the K codes occurs among codes (...): (K,), summing to 1."""
    return F.one_hot(codes.flatten(), size).float().mean(0)  # bincount: not deterministic on GPU


def perplexity(freq: Tensor) -> Tensor:
    """exp(entropy) of code frequencies (K,): how many codes are in use, in effect (1 to K)."""
    return torch.exp(-(freq * torch.log(freq.clamp_min(1e-12))).sum())
