"""Samplers of codes z for a trained model: its prior, or a Gaussian mixture fitted after
training to the posterior means of the training images (ex-post density estimation, Ghosh et
al. 2020, Section 4). A plain autoencoder has no prior that its codes follow, and a VAE's codes
need not fill its prior; decoding z drawn from where the codes are gives better samples.

The mixture is fitted by EM (Dempster et al. 1977) in float64 from a k-means++ start (Arthur &
Vassilvitskii 2007) with a fixed seed, and saved beside the run as sampler-gmm-K.safetensors
(run.py) with its settings and the sha256 of the weights it was fitted to in the file's
metadata: it is reused while those match and fitted again when the weights change.
`draw_codes` is what `vaelab sample`, the report and the explorer call.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from vaelab.data import binarize_fixed
from vaelab.distributions import LOG_2PI
from vaelab.errors import VaelabError
from vaelab.evaluation.diagnostics import posterior_means
from vaelab.models import Model
from vaelab.run import (
    RunConfig,
    read_config,
    read_sampler,
    run_binarization,
    weights_sha256,
    write_sampler,
)

SAMPLERS = ("prior", "gmm")
Covariance = Literal["full", "diag"]
TrainImages = tuple[Tensor, Tensor | None]  # uint8 training images (N, C, H, W), labels (N,)
DEFAULT_COMPONENTS = 10
FIT_IMAGES = 10_000  # training codes the mixture is fitted to: plenty for 10 components
# EM stops when the codes' mean log-likelihood gains less than TOL nats (scikit-learn's
# default): on 20-D autoencoder codes 1e-6 costs twice the iterations for 0.01 nats.
MAX_ITER, TOL = 200, 1e-3
REG = 1e-6  # added to every covariance's diagonal, times the codes' mean variance: scale-free
SEED = 0
FORMAT = "vaelab-sampler-gmm-1"


@dataclass
class GaussianMixture:
    """sum_k w_k N(mu_k, S_k) on R^D, in float64."""

    weights: Tensor  # (K,)
    means: Tensor  # (K, D)
    covariances: Tensor  # (K, D, D)

    def log_joint(self, x: Tensor) -> Tensor:
        """log w_k + log N(x_n; mu_k, S_k) for codes x (N, D): (N, K)."""
        chol = torch.linalg.cholesky(self.covariances)  # (K, D, D): S_k = L_k L_k^T
        eye = torch.eye(x.shape[-1], dtype=x.dtype).expand_as(chol)
        # L_k^-1 once, then one batched matmul: many times faster than a triangular solve per
        # code, and as exact in float64 for the regularised covariances EM produces.
        inv = torch.linalg.solve_triangular(chol, eye, upper=False).mT  # (K, D, D)
        white = x @ inv - self.means.unsqueeze(1) @ inv  # (K, N, D): L_k^-1 (x_n - mu_k)
        maha = white.pow(2).sum(-1)  # (K, N)
        log_det = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
        log_n = -0.5 * (x.shape[-1] * LOG_2PI + log_det[:, None] + maha)
        return (log_n + self.weights.log()[:, None]).T

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x_n) (N,)."""
        return torch.logsumexp(self.log_joint(x.double()), 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n codes (n, D): a component k ~ w, then mu_k + L_k eps with L_k L_k^T = S_k."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covariances)
        return self.means[k] + (chol[k] @ eps.unsqueeze(-1)).squeeze(-1)

    def tensors(self) -> dict[str, Tensor]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}


@dataclass
class MixtureFit:
    mixture: GaussianMixture
    iterations: int
    log_likelihood: float  # mean log p(x) of the codes, nats
    converged: bool


def kmeans_pp(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k centres (k, D): the first uniformly, each next with probability proportional to its
    squared distance from the nearest centre so far (Arthur & Vassilvitskii 2007)."""
    centres = [x[torch.randint(len(x), (1,), generator=generator)]]
    d2 = (x - centres[0]).pow(2).sum(1)
    for _ in range(1, k):
        weights = d2 if d2.sum() > 0 else torch.ones_like(d2)  # fewer distinct codes than k
        centres.append(x[torch.multinomial(weights, 1, generator=generator)])
        d2 = torch.minimum(d2, (x - centres[-1]).pow(2).sum(1))
    return torch.cat(centres)


def m_step(x: Tensor, resp: Tensor, covariance: Covariance, reg: float) -> GaussianMixture:
    """The mixture that maximises the expected log-likelihood of centred codes x (N, D) under
    responsibilities resp (N, K)."""
    nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps  # (K,): an empty component stays finite
    means = resp.T @ x / nk[:, None]  # (K, D)
    # E_k[x x^T] - mu_k mu_k^T: no (K, N, D) difference tensor; in float64 on centred codes the
    # subtraction loses nothing that the regulariser does not dwarf.
    if covariance == "full":
        second = (resp.T.unsqueeze(-1) * x).mT @ x / nk[:, None, None]  # (K, D, D)
        cov = second - means.unsqueeze(-1) * means.unsqueeze(-2)
    else:
        cov = torch.diag_embed((resp.T @ x.pow(2) / nk[:, None] - means.pow(2)).clamp_min(0))
    cov = cov + reg * torch.eye(x.shape[1], dtype=x.dtype)
    return GaussianMixture(nk / nk.sum(), means, cov)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch's intra-op threads at 1 meanwhile: EM is a chain of small ops ((K, D, D)
    matrices, (K, N, D) passes) that gain little from a second core and stall whenever another
    process holds it (20-D codes, 10 components, 2 cores shared with other jobs: 6.3 s in one
    thread, 41 s in two)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@one_thread()
def fit_gmm(x: Tensor, components: int, covariance: Covariance = "full", seed: int = SEED,
            max_iter: int = MAX_ITER, tol: float = TOL) -> MixtureFit:  # fmt: skip
    """Fit a K-component mixture to codes x (N, D) by EM from a k-means++ start."""
    if covariance not in ("full", "diag"):
        raise VaelabError(f"covariance is {covariance!r}: expected full or diag")
    if not 1 <= components <= len(x) or len(x) < 2:
        raise VaelabError(f"a mixture of {components} components needs at least as many "
                          f"training codes (and 2), but there are {len(x)}")  # fmt: skip
    centre = x.double().mean(0)
    x = x.double() - centre
    reg = REG * x.var(0).mean().clamp_min(1e-30).item()
    centres = kmeans_pp(x, components, torch.Generator().manual_seed(seed))
    nearest = torch.cdist(x, centres).argmin(1)
    gmm = m_step(x, torch.nn.functional.one_hot(nearest, components).double(), covariance, reg)
    previous = -float("inf")
    for iteration in range(1, max_iter + 1):
        log_joint = gmm.log_joint(x)  # (N, K)
        ll = torch.logsumexp(log_joint, 1).mean().item()  # of the mixture returned on a break
        if ll - previous < tol or iteration == max_iter:
            break
        previous = ll
        gmm = m_step(x, torch.softmax(log_joint, 1), covariance, reg)
    gmm.means += centre
    return MixtureFit(gmm, iteration, ll, ll - previous < tol)


def mixture_name(components: int, covariance: Covariance = "full") -> str:
    """The file's NAME in RUN/sampler-NAME.safetensors: gmm-10, gmm-10-diag."""
    return f"gmm-{components}" + ("" if covariance == "full" else f"-{covariance}")


def settings(run_dir: Path, components: int, covariance: Covariance) -> dict[str, str]:
    """What a saved mixture must have been fitted with to be reused."""
    return {"format": FORMAT, "components": str(components), "covariance": covariance,
            "seed": str(SEED), "model_sha256": weights_sha256(run_dir)}  # fmt: skip


def mixture_from_tensors(tensors: dict[str, Tensor], k: int, d: int) -> GaussianMixture:
    """A saved mixture, checked: its shapes, float64, finite, weights summing to 1 and
    positive definite covariances (anything else is refused)."""
    shapes = {"weights": (k,), "means": (k, d), "covariances": (k, d, d)}
    got = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    if got != {name: (shape, torch.float64) for name, shape in shapes.items()}:
        raise VaelabError(f"it holds {got}, expected float64 tensors of shapes {shapes}")
    gmm = GaussianMixture(**tensors)
    finite = all(torch.isfinite(t).all() for t in tensors.values())
    if not finite or (gmm.weights < 0).any() or abs(gmm.weights.sum().item() - 1) > 1e-6:
        raise VaelabError("its weights or parameters are not a mixture's")
    if (torch.linalg.cholesky_ex(gmm.covariances).info != 0).any():
        raise VaelabError("a covariance is not positive definite")
    return gmm


def saved_mixture(run_dir: Path, model: Model, components: int,
                  covariance: Covariance) -> GaussianMixture | None:  # fmt: skip
    """The run's saved mixture if it was fitted to these weights with these settings; a
    damaged file is ignored with a warning (it is fitted again and replaced)."""
    name = mixture_name(components, covariance)
    try:
        saved, wanted = read_sampler(run_dir, name), settings(run_dir, components, covariance)
        if saved is None or {key: saved[1].get(key) for key in wanted} != wanted:
            return None  # none yet, or fitted to other weights: fitted again
        return mixture_from_tensors(saved[0], components, model.config.latent_dim)
    except VaelabError as err:
        warnings.warn(f"fitting the mixture again: the saved {name} is unusable: {err}",
                      stacklevel=3)  # fmt: skip
        return None


def run_training_images(config: RunConfig) -> TrainImages:
    """The run's training images and labels, without its validation images."""
    data = config.data.load()
    n = len(data.train_images) - config.data.validation
    return data.train_images[:n], None if data.train_labels is None else data.train_labels[:n]


@torch.no_grad()
def training_codes(run_dir: Path, model: Model, train: TrainImages | None = None) -> Tensor:
    """Posterior means (N, D) of the first FIT_IMAGES training images (`train`, else the run's
    dataset's), binarized once as the test set is."""
    config, raw = read_config(run_dir)
    images, labels = run_training_images(config) if train is None else train
    images, labels = images[:FIT_IMAGES], None if labels is None else labels[:FIT_IMAGES]
    x = binarize_fixed(images.cpu(), run_binarization(config, raw), config.data.test_seed)
    y = None if labels is None else labels.to(model.device)
    return posterior_means(model, x.to(model.device), y).cpu().double()


def fitted_mixture(
    run_dir: str | Path,
    model: Model,
    components: int = DEFAULT_COMPONENTS,
    covariance: Covariance = "full",
    train: TrainImages | None = None,
) -> GaussianMixture:
    """The run's mixture over its training codes: the saved one where it fits these weights and
    settings, else fitted now and saved (`train`: the uint8 training images and labels where
    the caller has them; else the run's dataset is loaded)."""
    run_dir = Path(run_dir)
    gmm = saved_mixture(run_dir, model, components, covariance)
    if gmm is not None:
        return gmm
    fit = fit_gmm(training_codes(run_dir, model, train), components, covariance)
    facts = {"iterations": str(fit.iterations), "converged": str(fit.converged).lower(),
             "log_likelihood": repr(fit.log_likelihood)}  # fmt: skip
    metadata = {**settings(run_dir, components, covariance), **facts}
    write_sampler(run_dir, mixture_name(components, covariance), fit.mixture.tensors(), metadata)
    return fit.mixture


def check_sampler(sampler: str, components: int | None) -> None:
    """One clear error for a sampler that does not exist or a mixture size that cannot be."""
    if sampler not in SAMPLERS:
        raise VaelabError(f"--sampler is {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    if components is not None and sampler != "gmm":
        raise VaelabError("--components sizes the mixture of --sampler gmm; the prior has none")
    if components is not None and components < 1:
        raise VaelabError(f"--components is {components}: expected a positive number")


def describe_sampler(sampler: str, components: int | None = None) -> str:
    if sampler == "prior":
        return "the prior"
    return f"a {components or DEFAULT_COMPONENTS}-component Gaussian mixture fitted to the codes"


@torch.no_grad()
def draw_codes(run_dir: str | Path, model: Model, n: int, sampler: str = "prior",
               components: int | None = None, generator: torch.Generator | None = None,
               train: TrainImages | None = None) -> Tensor:  # fmt: skip
    """n codes z (n, D) on the model's device from the prior or from the run's fitted mixture
    (the generator lives on the CPU for the mixture)."""
    check_sampler(sampler, components)
    if sampler == "prior":
        return model.sample_prior(n, generator)
    gmm = fitted_mixture(run_dir, model, components or DEFAULT_COMPONENTS, train=train)
    return gmm.sample(n, generator).to(model.device, torch.get_default_dtype())


@torch.no_grad()
def decode_codes(model: Model, z: Tensor, y: Tensor | None = None) -> Tensor:
    """Decoded means of codes z (n, D) under labels y (a conditional model without y: every
    class in turn), as `Model.generate` decodes prior samples."""
    return model.decode(z, model.sample_labels(len(z)) if y is None else y).mean
