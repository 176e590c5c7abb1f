"""What the hierarchical VAEs (hvae.py, ladder_vae.py) share: stochastic layers z_1 (bottom)
.. z_L (top), the generative model p(z_L) prod_i p(z_i|z_{i+1}) p(x|z), the -ELBO as the
reconstruction term plus one KL term per layer, importance sampling over all layers, and the
KL and active units of each layer for `vaelab eval`.

A model says how inference runs (`prepare`: what it computes from x alone, once however many
samples follow; `infer`: one draw of every layer), what p(z_i|z_{i+1}) and p(x|...) are, and
its layers' sizes.

What the rest of vaelab sees is the top layer: `encode(x)` is q(z_L|x), so the explorer's plane,
the posterior means of eval and the per-dimension usage are z_L's; `decode(z_L)` runs the
generative model down from z_L with every lower layer at the mean of p(z_i|z_{i+1}), so a point
of the plane always decodes to the same image and reconstructions show what z_L alone holds.
`generate` draws the lower layers (ancestral sampling): samples of the model itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from vaelab.distributions import DiagonalGaussian, diagonal_gaussian_kl
from vaelab.models.base import Batch, DensityModel, LatentSummary, LossOutput, StepContext
from vaelab.models.vae import prior_kl_usage
from vaelab.priors import Prior

# Burda et al. (2016, Section 5.2): unit u of a layer is active when Cov_x(E_q[z_u|x]) > 10^-2
# (the threshold of evaluation.diagnostics, which models may not import).
ACTIVE_THRESHOLD = 0.01
LAYER_DRAWS = 16  # draws of the layers above per image, for a lower layer's E_q[z_i|x] and KL


@dataclass
class Layer:
    """One stochastic layer of one draw from the inference model."""

    z: Tensor  # (*S, B, D_i): the draw
    q: DiagonalGaussian  # the inference Gaussian it was drawn from, (B, D_i) or (*S, B, D_i)
    p: DiagonalGaussian | None  # p(z_i|z_{i+1}) at the draw above; None at the top: the prior


class HierarchicalVAE(DensityModel):
    """A VAE with stochastic layers z_1 .. z_L; `latent_dim` is the top layer's size."""

    loss_name = "negative ELBO"
    portable_nets: ClassVar[bool] = False  # decode runs p(z_i|z_{i+1}) before the decoder

    def latent_dims(self) -> tuple[int, ...]:
        """The layers' sizes, bottom first (the last is latent_dim)."""
        raise NotImplementedError

    def prepare(self, x: Tensor) -> Any:
        """What inference computes from the images alone, before any draw."""
        raise NotImplementedError

    def infer(self, prepared: Any, sample_shape: tuple[int, ...] = (),
              generator: torch.Generator | None = None) -> list[Layer]:  # fmt: skip
        """One draw of every layer from q, bottom first, each z of shape (*S, B, D_i)."""
        raise NotImplementedError

    def p_z(self, i: int, z_above: Tensor) -> DiagonalGaussian:
        """p(z_i|z_{i+1}) for layer i (0: the bottom) given the layer above (..., D_{i+1})."""
        raise NotImplementedError

    def p_x(self, zs: list[Tensor]):
        """p(x|z) from every layer's z (bottom first), with log_prob(x) and mean."""
        raise NotImplementedError

    def top_down(self, z_top: Tensor, draw: Callable[[DiagonalGaussian], Tensor]) -> list[Tensor]:
        """Every layer's z (bottom first) from the top one down, z_i = draw(p(z_i|z_{i+1}))."""
        zs = [z_top]
        for i in reversed(range(len(self.latent_dims()) - 1)):
            zs.insert(0, draw(self.p_z(i, zs[0])))
        return zs

    def decode(self, z: Tensor, y: Tensor | None = None):
        """p(x|z_L): every lower layer at the mean of p(z_i|z_{i+1}); z may be (K, B, D)."""
        return self.p_x(self.top_down(z, lambda p: p.mean))

    @torch.no_grad()
    def generate(self, n: int, y: Tensor | None = None,
                 generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """Decoded means of n ancestral samples: z_L ~ p(z_L), then z_i ~ p(z_i|z_{i+1})."""
        z = self.sample_prior(n, generator)
        return self.p_x(self.top_down(z, lambda p: p.sample((), generator))).mean

    @staticmethod
    def layer_kl(layer: Layer, prior: Prior) -> Tensor:
        """The layer's KL term (*S, B): KL(q || p(z_i|z_{i+1})) in closed form given the draw
        above; at the top the prior's KL (closed form under N(0, I), else at the draw)."""
        if layer.p is None:
            return prior.kl(layer.q, layer.z).expand(layer.z.shape[:-1])
        return diagonal_gaussian_kl(layer.q, layer.p).sum(-1)

    @staticmethod
    def log_ratio(layer: Layer, prior: Prior) -> Tensor:
        """log p(z_i|z_{i+1}) - log q(z_i|...) at the draw (*S, B)."""
        p = prior.log_prob(layer.z) if layer.p is None else layer.p.log_prob(layer.z)
        return p - layer.q.log_prob(layer.z)

    def elbo_terms(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """-log p(x|z) and each layer's KL term (bottom first), per image (B,), from one draw;
        the -ELBO is their sum."""
        layers = self.infer(self.prepare(x), (), generator)
        recon = -self.p_x([layer.z for layer in layers]).log_prob(x)
        return recon, [self.layer_kl(layer, self.prior) for layer in layers]

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        """-ELBO, with the KL terms of every layer scaled by the warm-up (Sønderby et al. 2016)."""
        recon, kls = self.elbo_terms(batch.x)
        kl = torch.stack(kls).sum(0)  # (B,)
        loss = recon.mean() + ctx.kl_warmup * kl.mean()
        metrics = {"loss": loss, "recon": recon.mean(), "kl": kl.mean(),
                   "neg_elbo": (recon + kl).mean()}  # fmt: skip
        metrics.update({f"kl_z{i + 1}": layer_kl.mean() for i, layer_kl in enumerate(kls)})
        return LossOutput(loss, {k: v.detach() for k, v in metrics.items()})

    def elbo(self, x: Tensor, y: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """Per-image ELBO (B,) from one draw, with each KL term in closed form where it has one."""
        recon, kls = self.elbo_terms(x, generator)
        return -(recon + torch.stack(kls).sum(0))

    def weights_under(self, prepared: Any, prior: Prior, x: Tensor, k: int,
                      generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """log w = log p(x|z) + sum_i [log p(z_i|z_{i+1}) - log q(z_i|...)], k draws: (K, B)."""
        layers = self.infer(prepared, (k,), generator)
        log_w = self.p_x([layer.z for layer in layers]).log_prob(x)
        return log_w + sum(self.log_ratio(layer, prior) for layer in layers)

    def log_weights(self, x: Tensor, y: Tensor | None, k: int,
                    generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        return self.weights_under(self.prepare(x), self.prior, x, k, generator)

    def log_prob_estimate(self, x: Tensor, y: Tensor | None = None, k: int = 5000, rows: int = 2048,
                          generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """DensityModel.log_prob_estimate with the images' inference pass and the prior (a
        VampPrior's encoded pseudo-inputs) computed once for all chunks."""
        prepared, prior = self.prepare(x), self.prior.frozen()
        chunk = max(1, min(k, rows // len(x)))
        parts = [torch.logsumexp(self.weights_under(prepared, prior, x, min(chunk, k - i),
                                                    generator), 0)
                 for i in range(0, k, chunk)]  # fmt: skip
        return torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)

    @torch.no_grad()
    def latent_summary(self, x: Tensor, y: Tensor | None = None) -> LatentSummary:
        """The top layer's data-average KL per dimension against the prior's marginal."""
        summary = prior_kl_usage(self.prior, self.encode, x, y)
        return LatentSummary(summary.scores, f"top layer z{len(self.latent_dims())}: "
                                             + summary.measure)  # fmt: skip

    @torch.no_grad()
    def eval_numbers(self, x: Tensor, y: Tensor | None = None) -> dict[str, float | list[float]]:
        """Per layer, bottom first: its size, its KL term averaged over the images, and its
        active units (Burda et al. 2016), E_q[z_i|x] averaged over LAYER_DRAWS draws of the
        layers above (exact at the top)."""
        prior, gen = self.prior.frozen(), torch.Generator(x.device).manual_seed(0)
        kls, means = [], []
        for i in range(0, len(x), 500):  # 500 images x LAYER_DRAWS draws at a time
            layers = self.infer(self.prepare(x[i : i + 500]), (LAYER_DRAWS,), gen)
            kls.append([self.layer_kl(layer, prior).mean(0) for layer in layers])  # (B,) each
            means.append([layer.q.mean.expand_as(layer.z).mean(0) for layer in layers])
        return {
            "latent_dims_per_layer": list(self.latent_dims()),
            "kl_per_layer": [torch.cat(kl).mean().item() for kl in zip(*kls, strict=True)],
            "active_units_per_layer": [
                int((torch.cat(m).var(0) > ACTIVE_THRESHOLD).sum())
                for m in zip(*means, strict=True)
            ],
        }
