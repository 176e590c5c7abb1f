"""Encoder and decoder builders: an MLP, a gated MLP and the conv net of the TensorFlow 2 VAE
tutorial.

Encoders map x [B, C, H, W] (and an optional condition c [B, cond_dim], e.g. a one-hot label)
to a flat vector [B, out_dim]. Decoders map z [..., latent] (any leading dims: (B,) or (K, B))
and c to raw outputs [..., C, H, W] that a likelihood head turns into p(x|z).
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


def _body(sizes: Sequence[int], activation: str) -> nn.Sequential:
    return gated_mlp(sizes) if activation == "gated" else mlp(sizes, activation)


def _with_condition(h: Tensor, c: Tensor | None) -> Tensor:
    return h if c is None else torch.cat([h, c.expand(*h.shape[:-1], c.shape[-1])], dim=-1)


class MLPEncoder(nn.Module):
    def __init__(self, image_shape: ImageShape, out_dim: int, hidden: Sequence[int],
                 cond_dim: int = 0, activation: str = "relu"):  # fmt: skip
        super().__init__()
        self.net = _body([math.prod(image_shape) + cond_dim, *hidden, out_dim], activation)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.net(_with_condition(x.flatten(1), c))


class MLPDecoder(nn.Module):
    def __init__(self, image_shape: ImageShape, latent_dim: int, hidden: Sequence[int],
                 cond_dim: int = 0, activation: str = "relu"):  # fmt: skip
        super().__init__()
        self.image_shape = tuple(image_shape)
        sizes = [latent_dim + cond_dim, *reversed(hidden), math.prod(image_shape)]
        self.net = _body(sizes, activation)

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        out = self.net(_with_condition(z, c))
        return out.view(*z.shape[:-1], *self.image_shape)


def _check_conv_shape(image_shape: ImageShape) -> None:
    _, h, w = image_shape
    if h % 4 or w % 4:
        raise VaelabError(f"the conv net needs height and width divisible by 4, got {h}x{w}")


class ConvEncoder(nn.Module):
    """Two stride-2 3x3 convs of 32 and 64 filters, then a dense layer (TF2 CVAE tutorial)."""

    def __init__(self, image_shape: ImageShape, out_dim: int, cond_dim: int = 0):
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

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.dense(_with_condition(self.convs(x), c))


class ConvDecoder(nn.Module):
    """Dense to (32, H/4, W/4), then transposed convs of 64, 32 and C filters (TF2 tutorial)."""

    def __init__(self, image_shape: ImageShape, latent_dim: int, cond_dim: int = 0):
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

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        lead = z.shape[:-1]  # (B,) or (K, B): convs want one batch dim
        h = self.dense(_with_condition(z, c)).reshape(-1, *self.grid)
        out = self.deconvs(h)
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
) -> nn.Module:
    """An encoder x [B, C, H, W] (+ c) -> [B, out_dim]; `hidden` applies to the MLPs and
    `activation` to the plain one (the conv net is the tutorial's, with ReLU)."""
    _check_net(net)
    if net in ("mlp", "gated"):
        activation = "gated" if net == "gated" else activation
        return MLPEncoder(image_shape, out_dim, hidden, cond_dim, activation)
    return ConvEncoder(image_shape, out_dim, cond_dim)


def build_decoder(
    net: str,
    image_shape: ImageShape,
    latent_dim: int,
    hidden: Sequence[int] = (400,),
    cond_dim: int = 0,
    activation: str = "relu",
) -> nn.Module:
    """A decoder z [..., latent] (+ c) -> raw outputs [..., C, H, W]."""
    _check_net(net)
    if net in ("mlp", "gated"):
        activation = "gated" if net == "gated" else activation
        return MLPDecoder(image_shape, latent_dim, hidden, cond_dim, activation)
    return ConvDecoder(image_shape, latent_dim, cond_dim)
