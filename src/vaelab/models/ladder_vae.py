"""The ladder VAE (Sønderby et al. 2016, "Ladder Variational Autoencoders").

Generative model, top-down: p(z_L) = N(0, I), p(z_i|z_{i+1}) = N(mu_p,i, sigma_p,i^2) and
p(x|z_1). Inference runs a deterministic bottom-up pass d_1 = MLP(x), d_i = MLP(d_{i-1}), each
d_i giving a Gaussian N(mu_hat_i, sigma_hat_i^2) (eq. 13-14), then goes top-down along the
generative model: q(z_L|x) is the top one, and below it q(z_i|.) merges the bottom-up Gaussian
with the generative model's p(z_i|z_{i+1}) at the draw above by precision weighting (eq. 17-19):

    sigma_q^2 = 1 / (sigma_hat^-2 + sigma_p^-2),
    mu_q = (mu_hat sigma_hat^-2 + mu_p sigma_p^-2) sigma_q^2

so inference and generation share the top-down nets. -ELBO = -E_q[log p(x|z_1)] + sum_i KL_i,
each KL in closed form given the draw above; the KL terms warm up from 0 to 1 with the
trainer's `kl_warmup_epochs` (the paper warms up over 200 epochs).

Nets (`net`, `activation`): layer i has a width w_i (w_1 = hidden[-1], then `upper_hidden`).
d_1 is the encoder over `hidden` to w_1 units, then the activation; d_i = MLP(d_{i-1}) for i > 1
and the top-down MLP of p(z_i|z_{i+1}) each have two layers of w_i units; p(x|z_1) is the
decoder over `hidden`. The defaults are the paper's MNIST model: latent sizes 64-32-16-8-4 and
MLPs of 512-256-128-64-32.
Variances are log-variances, as everywhere in vaelab (the paper's softplus variance is another
parameterization of the same Gaussians). No batch normalization: in training it would make an
image's loss depend on its batch, and evaluation would need running statistics; warm-up alone
is the paper's other remedy for inactive units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab.distributions import DiagonalGaussian
from vaelab.errors import VaelabError
from vaelab.models.base import ModelConfig, register
from vaelab.models.hierarchical import HierarchicalVAE, Layer
from vaelab.nets import ACTIVATIONS, vector_net


def gaussian(h: Tensor) -> DiagonalGaussian:
    """N(mean, exp(logvar)) from a net's output [..., 2D] = [mean, logvar]."""
    return DiagonalGaussian(*h.chunk(2, dim=-1))


def precision_weighted(q_hat: DiagonalGaussian, p: DiagonalGaussian) -> DiagonalGaussian:
    """The bottom-up Gaussian and the top-down prior merged (eq. 17-19), batch shapes
    broadcasting: precisions add, and the mean is the precision-weighted mean. In log-variances
    without overflow: logvar = -log(e^-lv_hat + e^-lv_p), and mu_hat's weight
    sigma_hat^-2 / (sigma_hat^-2 + sigma_p^-2) = sigmoid(lv_p - lv_hat)."""
    logvar = -torch.logaddexp(-q_hat.logvar, -p.logvar)
    weight = torch.sigmoid(p.logvar - q_hat.logvar)
    return DiagonalGaussian(weight * q_hat.mean + (1 - weight) * p.mean, logvar)


@dataclass
class LadderVAEConfig(ModelConfig):
    latent_dim: int = 4  # z_L, the top layer (what encode gives)
    lower_latent_dims: tuple[int, ...] = (64, 32, 16, 8)  # z_1 .. z_{L-1}, bottom first
    hidden: tuple[int, ...] = (512,)  # between x and layer 1: d_1 = MLP(x) and p(x|z_1)
    upper_hidden: tuple[int, ...] = (256, 128, 64, 32)  # the MLPs' width of layers 2 .. L

    def latent_dims(self) -> tuple[int, ...]:
        return (*self.lower_latent_dims, self.latent_dim)

    def widths(self) -> tuple[int, ...]:
        """Each layer's deterministic width, bottom first."""
        return (self.hidden[-1], *self.upper_hidden)

    def validate(self) -> None:
        super().validate()
        checks = [
            (len(self.hidden) > 0, "hidden", "at least one layer size"),
            (all(d > 0 for d in self.lower_latent_dims), "lower_latent_dims", "positive sizes"),
            (all(w > 0 for w in self.upper_hidden), "upper_hidden", "positive layer sizes"),
            (self.num_classes == 0, "num_classes", "0: the model takes no labels"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise VaelabError(f"model {name} is {getattr(self, name)!r}: expected {expected}")
        if len(self.upper_hidden) != len(self.lower_latent_dims):
            raise VaelabError(
                f"model upper_hidden {self.upper_hidden!r} has {len(self.upper_hidden)} sizes: "
                f"expected one per layer above the bottom, {len(self.lower_latent_dims)}"
            )


@register("ladder-vae")
class LadderVAE(HierarchicalVAE):
    config_class = LadderVAEConfig

    def __init__(self, config: LadderVAEConfig):
        super().__init__(config)
        c, dims, widths = config, config.latent_dims(), config.widths()
        act = ACTIVATIONS[c.activation]
        self.activation = act()  # d_1 = activation(encoder(x))
        self.up = nn.ModuleList(  # d_{i+1} = MLP(d_i)
            nn.Sequential(vector_net(c.net, [w, w_up, w_up], c.activation), act())
            for w, w_up in zip(widths[:-1], widths[1:], strict=True)
        )
        self.heads = nn.ModuleList(  # d_i -> [mu_hat_i, logvar_hat_i]
            nn.Linear(w, 2 * d) for w, d in zip(widths, dims, strict=True)
        )
        self.down = nn.ModuleList(  # z_{i+1} -> [mu_p,i, logvar_p,i] of p(z_i|z_{i+1})
            vector_net(c.net, [d_up, w, w, 2 * d], c.activation)
            for d, d_up, w in zip(dims[:-1], dims[1:], widths[:-1], strict=True)
        )

    def encoder_out_dim(self) -> int:
        return self.config.hidden[-1]  # d_1, the bottom of the deterministic pass

    def decoder_in_dim(self) -> int:
        return self.config.latent_dims()[0]  # p(x|z_1)

    def latent_dims(self) -> tuple[int, ...]:
        return self.config.latent_dims()

    def prepare(self, x: Tensor) -> list[DiagonalGaussian]:
        """The bottom-up Gaussians N(mu_hat_i, sigma_hat_i^2), bottom first, each (B, D_i)."""
        d = self.activation(self.encoder(x))
        out = [gaussian(self.heads[0](d))]
        for up, head in zip(self.up, self.heads[1:], strict=True):
            d = up(d)
            out.append(gaussian(head(d)))
        return out

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """q(z_L|x), the top layer: the top of the bottom-up pass."""
        return self.prepare(x)[-1]

    def infer(self, prepared: list[DiagonalGaussian], sample_shape: tuple[int, ...] = (),
              generator: torch.Generator | None = None) -> list[Layer]:  # fmt: skip
        q = prepared[-1]
        layers = [Layer(q.rsample(sample_shape, generator), q, None)]
        for i in reversed(range(len(prepared) - 1)):  # top-down: z_{i+1} -> z_i
            p = self.p_z(i, layers[0].z)
            q = precision_weighted(prepared[i], p)
            layers.insert(0, Layer(q.rsample((), generator), q, p))
        return layers

    def p_z(self, i: int, z_above: Tensor) -> DiagonalGaussian:
        return gaussian(self.down[i](z_above))

    def p_x(self, zs: list[Tensor]):
        return self.likelihood(self.decoder(zs[0]))  # p(x|z_1)
