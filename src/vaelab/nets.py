"""Encoder and decoder builders: an MLP, a gated MLP and the conv net of the TensorFlow 2 VAE
tutorial.

Encoders map x [B, C, H, W] (and an optional condition c [B, cond_dim], e.g. a one-hot label)
to a flat vector [B, out_dim]. Decoders map z [..., latent] (any leading dims: (B,) or (K, B))
and c to raw outputs [..., C, H, W] that a likelihood head turns into p(x|z).

The condition always joins the input layer. With `film=True` it also scales and shifts every
hidden layer (FiLM, Perez et al. 2018): h -> h * (1 + gamma(c)) + beta(c), per unit or channel.
A label then selects a different use of the same units in every layer instead of only moving the
first layer's biases, which is what lets a conditional decoder keep the class in the label rather
than in z (README, "The model family").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaelab.errors import VaelabError

NETS = ("mlp", "gated", "conv")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}  # tanh: the IWAE paper's nets
ImageShape = tuple[int, int, int]


def mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """Linear layers with an activation between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class GatedDense(nn.Module):
    """h = (W1 x + b1) * sigmoid(W2 x + b2): the gated dense layer of the VampPrior codebase
    (Tomczak & Welling 2018, after Dauphin et al. 2017); one matmul for both halves."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * out_dim)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.linear(x).chunk(2, dim=-1)
        return value * torch.sigmoid(gate)


def gated_mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Gated dense layers, then a plain linear output layer."""
    pairs = zip(sizes[:-2], sizes[1:-1], strict=True)
    layers: list[nn.Module] = [GatedDense(a, b) for a, b in pairs]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


class FiLM(nn.Module):
    """h * (1 + gamma(c)) + beta(c), gamma and beta linear in c; zero at the start (identity).

    h is (..., F) with c (..., cond_dim) broadcasting against it, or (N, F, H, W) with c (N, cond).
    """

    def __init__(self, cond_dim: int, features: int):
        super().__init__()
        self.linear = nn.Linear(cond_dim, 2 * features)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        gamma, beta = self.linear(c).chunk(2, dim=-1)
        if h.dim() == 4:  # channels of a conv feature map
            gamma, beta = gamma[..., None, None], beta[..., None, None]
        return torch.addcmul(beta + h, h, gamma)


HIDDEN_OUTPUTS = (nn.ReLU, nn.Tanh, GatedDense)  # the layers whose outputs FiLM modulates


def _films(cond_dim: int, film: bool, sizes: Sequence[int]) -> nn.ModuleList | None:
    if not film:
        return None
    if cond_dim <= 0:
        raise VaelabError("FiLM conditioning needs a condition (cond_dim > 0)")
    return nn.ModuleList(FiLM(cond_dim, n) for n in sizes)


def _run(layers: nn.Sequential, h: Tensor, films: nn.ModuleList | None, c: Tensor | None):
    """layers(h), with films[i] applied to the output of the i-th hidden layer."""
    if films is None:
        return layers(h)
    i = 0
    for layer in layers:
        h = layer(h)
        if isinstance(layer, HIDDEN_OUTPUTS):
            h = films[i](h, c)
            i += 1
    return h


def _body(sizes: Sequence[int], activation: str) -> nn.Sequential:
    return gated_mlp(sizes) if activation == "gated" else mlp(sizes, activation)


def vector_net(net: str, sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """A net on vectors [..., sizes[0]] -> [..., sizes[-1]] in the style `net` names: gated dense
    layers for "gated", else linear layers with `activation` (what the conv net's vector parts
    are). It ends in a linear layer: the parameters of a distribution."""
    _check_net(net)
    return gated_mlp(sizes) if net == "gated" else mlp(sizes, activation)


def _with_condition(h: Tensor, c: Tensor | None) -> Tensor:
    return h if c is None else torch.cat([h, c.expand(*h.shape[:-1], c.shape[-1])], dim=-1)


class MLPEncoder(nn.Module):
    def __init__(self, image_shape: ImageShape, out_dim: int, hidden: Sequence[int],
                 cond_dim: int = 0, activation: str = "relu", film: bool = False):  # fmt: skip
        super().__init__()
        self.net = _body([math.prod(image_shape) + cond_dim, *hidden, out_dim], activation)
        self.films = _films(cond_dim, film, hidden)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return _run(self.net, _with_condition(x.flatten(1), c), self.films, c)


class MLPDecoder(nn.Module):
    def __init__(self, image_shape: ImageShape, latent_dim: int, hidden: Sequence[int],
                 cond_dim: int = 0, activation: str = "relu", film: bool = False):  # fmt: skip
        super().__init__()
        self.image_shape = tuple(image_shape)
        sizes = [latent_dim + cond_dim, *reversed(hidden), math.prod(image_shape)]
        self.net = _body(sizes, activation)
        self.films = _films(cond_dim, film, list(reversed(hidden)))

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        # FiLM takes c as it is: (B, cond) broadcasts over the samples of (K, B, hidden).
        out = _run(self.net, _with_condition(z, c), self.films, c)
        return out.view(*z.shape[:-1], *self.image_shape)


def _check_conv_shape(image_shape: ImageShape) -> None:
    _, h, w = image_shape
    if h % 4 or w % 4:
        raise VaelabError(f"the conv net needs height and width divisible by 4, got {h}x{w}")


class ConvEncoder(nn.Module):
    """Two stride-2 3x3 convs of 32 and 64 filters, then a dense layer (TF2 CVAE tutorial)."""

    def __init__(self, image_shape: ImageShape, out_dim: int, cond_dim: int = 0,
                 film: bool = False):  # fmt: skip
        super().__init__()
        _check_conv_shape(image_shape)
        c, h, w = image_shape
        self.convs = nn.Sequential(
            nn.Conv2d(c, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.dense = nn.Linear(64 * (h // 4) * (w // 4) + cond_dim, out_dim)
        self.films = _films(cond_dim, film, [32, 64])

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.dense(_with_condition(_run(self.convs, x, self.films, c), c))


class ConvDecoder(nn.Module):
    """Dense to (32, H/4, W/4), then transposed convs of 64, 32 and C filters (TF2 tutorial)."""

    def __init__(self, image_shape: ImageShape, latent_dim: int, cond_dim: int = 0,
                 film: bool = False):  # fmt: skip
        super().__init__()
        _check_conv_shape(image_shape)
        c, h, w = image_shape
        self.grid = (32, h // 4, w // 4)
        self.dense = nn.Sequential(
            nn.Linear(latent_dim + cond_dim, math.prod(self.grid)), nn.ReLU()
        )
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(32, 64, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, c, 3, stride=1, padding=1),
        )
        self.films = _films(cond_dim, film, [math.prod(self.grid), 64, 32])

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        lead = z.shape[:-1]  # (B,) or (K, B): convs want one batch dim
        first, rest = (None, None) if self.films is None else (self.films[:1], self.films[1:])
        h = _run(self.dense, _with_condition(z, c), first, c).reshape(-1, *self.grid)
        flat_c = None if c is None else c.expand(*lead, c.shape[-1]).reshape(-1, c.shape[-1])
        out = _run(self.deconvs, h, rest, flat_c)
        return out.view(*lead, *out.shape[1:])


def _check_net(net: str) -> None:
    if net not in NETS:
        raise VaelabError(f"unknown net {net!r}: expected one of {', '.join(NETS)}")


def build_encoder(
    net: str,
    image_shape: ImageShape,
    out_dim: int,
    hidden: Sequence[int] = (400,),
    cond_dim: int = 0,
    activation: str = "relu",
    film: bool = False,
) -> nn.Module:
    """An encoder x [B, C, H, W] (+ c) -> [B, out_dim]; `hidden` applies to the MLPs and
    `activation` to the plain one (the conv net is the tutorial's, with ReLU); `film` adds
    FiLM conditioning to every hidden layer."""
    _check_net(net)
    if net in ("mlp", "gated"):
        activation = "gated" if net == "gated" else activation
        return MLPEncoder(image_shape, out_dim, hidden, cond_dim, activation, film)
    return ConvEncoder(image_shape, out_dim, cond_dim, film)


def build_decoder(
    net: str,
    image_shape: ImageShape,
    latent_dim: int,
    hidden: Sequence[int] = (400,),
    cond_dim: int = 0,
    activation: str = "relu",
    film: bool = False,
) -> nn.Module:
    """A decoder z [..., latent] (+ c) -> raw outputs [..., C, H, W]."""
    _check_net(net)
    if net in ("mlp", "gated"):
        activation = "gated" if net == "gated" else activation
        return MLPDecoder(image_shape, latent_dim, hidden, cond_dim, activation, film)
    return ConvDecoder(image_shape, latent_dim, cond_dim, film)
