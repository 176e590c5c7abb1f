"""The model contract that one trainer serves, and the registry of models.

A model says which optimizer groups ("phases") it has and the loss of each phase on a batch;
the trainer runs the phases in order for every batch. A VAE has one phase; an adversarial
autoencoder has three (reconstruction, discriminator, generator) and needs no trainer of its own.
Every loss is summed over pixels and latent dimensions and averaged over the batch (nats).

Everything the rest of vaelab asks of a model is declared here, so that code outside models/
never probes a model's attributes:
- labels: `encode(x, y)` and `decode(z, y)` take the data's labels wherever it has them; a
  model that takes no label ignores them (`label_classes` is 0). `sample_labels(n)` gives the
  labels a conditional model's samples are drawn under; `prior_labels(y)` the labels that pick
  the prior's parts (the label-aware AAE), else None.
- the prior: every model has `prior` (priors.Prior), what `sample_prior` draws from;
- sampling: `generate(n, y)` decodes prior samples;
- whether its nets alone make encode/decode (`portable_nets`: the page explorer, ONNX);
- the latent summary that the explorer plots and eval reports: `latent_summary(x, y)`;
- numbers of a model's own for eval.json and the report: `eval_numbers(x, y)`;
- a density: models with a likelihood estimate are `DensityModel`s (per-sample log weights,
  the ELBO, the importance-sampled log p(x)); evaluation asks `isinstance(m, DensityModel)`.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from vaelab.config import field_types
from vaelab.distributions import DiagonalGaussian, PointMass, make_likelihood
from vaelab.errors import VaelabError
from vaelab.nets import build_decoder, build_encoder
from vaelab.priors import Prior, StandardNormal


@dataclass
class ModelConfig:
    """What every latent-variable model shares: the data shape, the nets and the likelihood."""

    image_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 20
    net: Literal["mlp", "gated", "conv"] = "mlp"
    hidden: tuple[int, ...] = (400,)
    activation: Literal["relu", "tanh"] = "relu"  # of the MLP: tanh as in the IWAE paper
    likelihood: Literal["bernoulli", "continuous-bernoulli", "gaussian", "gaussian-learned"] = (
        "bernoulli"
    )
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
            (all(h > 0 for h in self.hidden), "hidden", "positive layer sizes"),
            (self.gaussian_std > 0, "gaussian_std", "a positive number"),
            (self.num_classes >= 0, "num_classes", "zero or a positive integer"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise VaelabError(f"model {name} is {getattr(self, name)!r}: expected {expected}")
        check_choices(self)


def check_choices(config: ModelConfig) -> None:
    """Every Literal[...] field holds one of its choices (a config built in Python has not been
    through config.from_dict's checks)."""
    for name, tp in field_types(type(config)).items():
        choices, value = typing.get_args(tp), getattr(config, name)
        if typing.get_origin(tp) is Literal and value not in choices:
            expected = ", ".join(map(str, choices))
            raise VaelabError(f"model {name} is {value!r}: expected one of {expected}")


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
class LatentSummary:
    """How much each latent dimension is used, and what the numbers are (for the explorer's
    plane and eval's per-dimension diagnostics)."""

    scores: Tensor  # (D,): larger is more used
    measure: str  # e.g. "KL(q(z_d|x) || N(0, 1)), closed form", averaged over the images


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
    conditional: ClassVar[bool] = False  # True: encoder and decoder take the label
    loss_name: ClassVar[str] = "loss"  # what the `loss` metric is, for reports
    # Weights renamed since runs were saved: old state_dict key -> new (checkpoint loading).
    renamed_weights: ClassVar[dict[str, str]] = {}
    # True where decode(z, y) is exactly likelihood(decoder(z, condition(y))) and encode's mean
    # is encoder(x, ...)'s first latent_dim outputs: the report's in-page explorer and the ONNX
    # export rebuild the model from those modules. A model whose decode or encode does more
    # (several stochastic layers, a flow, a codebook) sets it False: they then say so and skip.
    portable_nets: ClassVar[bool] = True
    # True where a loss is a statistic of the whole batch, not a mean of per-image terms (an
    # MMD between codes and prior samples, minibatch-weighted total correlation, codes shuffled
    # across the batch): under torchrun each rank computes it on its own shard, so two ranks
    # train alike but not exactly as one process with their global batch would.
    batch_statistic_loss: ClassVar[bool] = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        shape, cond = tuple(config.image_shape), config.num_classes
        net, hidden, act = config.net, config.hidden, config.activation
        film = self.film_conditioning()
        self.encoder = build_encoder(net, shape, self.encoder_out_dim(), hidden, cond, act, film)
        self.decoder = build_decoder(net, shape, self.decoder_in_dim(), hidden, cond, act, film)
        self.likelihood = make_likelihood(config.likelihood, shape, config.gaussian_std)
        self.prior = self.build_prior()

    @classmethod
    def fields_from_data(cls, num_classes: int | None, train_images: int = 0) -> dict[str, object]:
        """The config fields a model takes from its dataset: the CVAE the number of classes,
        beta-TCVAE the number of images it trains on (`train_images`; 0: not known)."""
        return {"num_classes": num_classes or 0} if cls.conditional else {}

    def build_prior(self) -> Prior:
        """p(z): N(0, I) unless the model says otherwise."""
        return StandardNormal(self.config.latent_dim)

    @property
    def label_classes(self) -> int:
        """How many classes encoder and decoder take as a label (0: the model takes none)."""
        return self.config.num_classes

    def sample_labels(self, n: int) -> Tensor | None:
        """The labels n samples of a conditional model are drawn under (every class in turn);
        None for a model that takes no label."""
        classes = self.label_classes
        return torch.arange(n, device=self.device) % classes if classes else None

    def prior_labels(self, y: Tensor | None) -> Tensor | None:
        """The labels that pick the prior's parts for images of labels y (None: the prior's
        part is drawn at random)."""
        return None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def film_conditioning(self) -> bool:
        """Whether the condition also scales and shifts every hidden layer (nets.FiLM)."""
        return False

    def encoder_out_dim(self) -> int:
        return 2 * self.config.latent_dim  # mean and log-variance

    def decoder_in_dim(self) -> int:
        """The size of what `decoder` takes (a hierarchical VAE: its bottom layers, not z)."""
        return self.config.latent_dim

    def condition(self, y: Tensor | None) -> Tensor | None:
        """The one-hot label a conditional model feeds its nets; None for the others (which
        ignore the labels they are handed)."""
        if not self.label_classes:
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
        """z ~ p(z) (n, D); a prior made of parts draws each row's part uniformly."""
        return self.prior.sample(n, generator=generator, device=self.device)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, y).mean, y).mean

    @torch.no_grad()
    def generate(
        self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Decoded means of n prior samples (what a sample grid shows), under labels y (a
        conditional model without y: every class in turn)."""
        y = self.sample_labels(n) if y is None else y
        return self.decode(self.sample_prior(n, generator), y).mean

    @torch.no_grad()
    def latent_summary(self, x: Tensor, y: Tensor | None = None) -> LatentSummary:
        """How much each latent dimension is used over the images x: by default the variance
        of the posterior means (a model with a KL per dimension reports that instead)."""
        return LatentSummary(self.encode(x, y).mean.var(0),
                             "variance of the posterior means over the images")  # fmt: skip

    @torch.no_grad()
    def eval_numbers(self, x: Tensor, y: Tensor | None = None) -> dict[str, float | list[float]]:
        """Numbers of this model's own that `vaelab eval` adds to eval.json and the report
        shows (a hierarchical VAE: the KL and the active units of each stochastic layer), keyed
        by name; none by default."""
        return {}


class PointOrGaussianModel(Model):
    """A model whose config chooses its posterior (`posterior`): a point z = f(x)
    ("deterministic") or a diagonal Gaussian q(z|x) ("gaussian"). The AAE and the WAE."""

    def encoder_out_dim(self) -> int:
        gaussian = self.config.posterior == "gaussian"
        return 2 * self.config.latent_dim if gaussian else self.config.latent_dim

    def encode(self, x: Tensor, y: Tensor | None = None) -> PointMass | DiagonalGaussian:
        h = self.encoder(x, self.condition(y))
        if self.config.posterior == "gaussian":
            return DiagonalGaussian(*h.chunk(2, dim=-1))
        return PointMass(h)


class DensityModel(Model):
    """A model with a likelihood estimate: importance weights log p(x, z) - log q(z|x) for
    z ~ q(z|x), the ELBO, and the importance-sampled log p(x) (Burda et al. 2016)."""

    def log_weights(self, x: Tensor, y: Tensor | None, k: int,
                    generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """log w = log p(x, z) - log q(z|x) for k samples z ~ q(z|x): (K, B)."""
        raise NotImplementedError

    def elbo(self, x: Tensor, y: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """Per-image ELBO (B,) from one sample (a model may use a closed-form KL instead)."""
        return self.log_weights(x, y, 1, generator)[0]

    def log_prob_estimate(self, x: Tensor, y: Tensor | None = None, k: int = 5000, rows: int = 2048,
                          generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
        """Per-image L_k (B,), the importance-sampled estimate of log p(x) (Burda et al. 2016:
        a lower bound in expectation that tightens as k grows): the log-mean-exp of k weights,
        drawn in chunks of about `rows` decoder rows (chunk * B) to bound memory."""
        chunk = max(1, min(k, rows // len(x)))
        parts = [torch.logsumexp(self.log_weights(x, y, min(chunk, k - i), generator), 0)
                 for i in range(0, k, chunk)]  # fmt: skip
        return torch.logsumexp(torch.stack(parts), dim=0) - math.log(k)
