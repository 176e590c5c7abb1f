"""The model contract that one trainer serves, and the registry of models.

A model says which optimizer groups ("phases") it has and the loss of each phase on a batch;
the trainer runs the phases in order for every batch. A VAE has one phase; an adversarial
autoencoder has three (reconstruction, discriminator, generator) and needs no trainer of its own.
Every loss is summed over pixels and latent dimensions and averaged over the batch (nats).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from vaelab.distributions import LIKELIHOODS, make_likelihood
from vaelab.errors import VaelabError
from vaelab.nets import ACTIVATIONS, NETS, build_decoder, build_encoder


@dataclass
class ModelConfig:
    """What every latent-variable model shares: the data shape, the nets and the likelihood."""

    image_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 20
    net: str = "mlp"
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"  # of the MLP: relu, or tanh as in the IWAE paper
    likelihood: str = "bernoulli"
    gaussian_std: float = 0.1
    num_classes: int = 0  # > 0 only for conditional models

    # What a run saved before a field existed meant (RunConfig.from_json fills them in).
    saved_before: ClassVar[dict[str, object]] = {}

    def validate(self) -> None:
        checks = [
            (
                len(self.image_shape) == 3 and min(self.image_shape) > 0,
                "image_shape",
                "three positive sizes (C, H, W)",
            ),
            (self.latent_dim > 0, "latent_dim", "a positive integer"),
            (self.net in NETS, "net", f"one of {', '.join(NETS)}"),
            (all(h > 0 for h in self.hidden), "hidden", "positive layer sizes"),
            (self.activation in ACTIVATIONS, "activation", f"one of {', '.join(ACTIVATIONS)}"),
            (self.likelihood in LIKELIHOODS, "likelihood", f"one of {', '.join(LIKELIHOODS)}"),
            (self.gaussian_std > 0, "gaussian_std", "a positive number"),
            (self.num_classes >= 0, "num_classes", "zero or a positive integer"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise VaelabError(f"model {name} is {getattr(self, name)!r}: expected {expected}")


@dataclass
class Batch:
    x: Tensor  # (B, C, H, W) float
    y: Tensor | None = None  # (B,) int64 labels, where the data has them


@dataclass
class StepContext:
    """What the trainer's schedules say about the current step."""

    step: int = 0
    epoch: int = 0
    kl_warmup: float = 1.0  # multiplies the KL term: 0 -> 1 over the warm-up


@dataclass
class LossOutput:
    loss: Tensor  # scalar: what this phase minimises
    metrics: dict[str, Tensor] = field(default_factory=dict)  # detached batch means, in nats


@dataclass
class Phase:
    """One optimizer group: its name and the parameters its loss updates."""

    name: str
    parameters: list[nn.Parameter]
    lr_scale: float = 1.0


MODELS: dict[str, type[Model]] = {}


def register(name: str) -> Callable[[type[Model]], type[Model]]:
    """Class decorator: make a model trainable as `vaelab train NAME`."""

    def add(cls: type[Model]) -> type[Model]:
        cls.name = name
        MODELS[name] = cls
        return cls

    return add


def get_model_class(name: str) -> type[Model]:
    if name not in MODELS:
        raise VaelabError(f"unknown model {name!r}: expected one of {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, config: ModelConfig) -> Model:
    return get_model_class(name)(config)


class Model(nn.Module):
    """Encoder, decoder and likelihood head built from a ModelConfig; subclasses add the loss."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    stochastic: ClassVar[bool] = True  # False for the plain autoencoder
    conditional: ClassVar[bool] = False  # True: encoder and decoder take the label
    loss_name: ClassVar[str] = "loss"  # what the `loss` metric is, for reports

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        shape, cond = tuple(config.image_shape), config.num_classes
        net, hidden, act = config.net, config.hidden, config.activation
        film = self.film_conditioning()
        self.encoder = build_encoder(net, shape, self.encoder_out_dim(), hidden, cond, act, film)
        self.decoder = build_decoder(net, shape, config.latent_dim, hidden, cond, act, film)
        self.likelihood = make_likelihood(config.likelihood, shape, config.gaussian_std)

    def film_conditioning(self) -> bool:
        """Whether the condition also scales and shifts every hidden layer (nets.FiLM)."""
        return False

    def encoder_out_dim(self) -> int:
        return 2 * self.config.latent_dim  # mean and log-variance

    def condition(self, y: Tensor | None) -> Tensor | None:
        """The one-hot label a conditional model feeds its nets; None for the others."""
        if not self.config.num_classes:
            return None
        if y is None:
            raise VaelabError(f"model {self.name} is conditional: it needs class labels")
        return nn.functional.one_hot(y, self.config.num_classes).to(torch.get_default_dtype())

    def encode(self, x: Tensor, y: Tensor | None = None):
        """q(z|x[, y])."""
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None):
        """p(x|z[, y]) with log_prob(x) and mean; z may carry leading sample dims (K, B, D)."""
        return self.likelihood(self.decoder(z, self.condition(y)))

    def phases(self) -> list[Phase]:
        return [Phase("model", list(self.parameters()))]

    def loss(self, phase: str, batch: Batch, ctx: StepContext) -> LossOutput:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, Tensor]:
        """Test metrics (batch means); 'loss' is what the per-epoch curves show."""
        return self.loss(self.phases()[0].name, batch, StepContext()).metrics

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z): N(0, I) unless the model says otherwise."""
        device = next(self.parameters()).device
        return torch.randn(n, self.config.latent_dim, generator=generator, device=device)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, y).mean, y).mean

    @torch.no_grad()
    def generate(
        self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Decoded means of n prior samples (what a sample grid shows)."""
        return self.decode(self.sample_prior(n, generator), y).mean
