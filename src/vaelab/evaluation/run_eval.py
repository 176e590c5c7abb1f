"""`vaelab eval RUN`: the literature's numbers for a trained run, written to eval.json.

Likelihoods only where they are likelihoods: a Bernoulli likelihood on grayscale pixels is not a
density, so its numbers are reported as BCE losses (keys starting with `bce_`), never as NLL.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from vaelab.data import ImageData, binarize_fixed
from vaelab.errors import VaelabError
from vaelab.evaluation.classifier import reference_classifier
from vaelab.evaluation.diagnostics import active_units, latent_usage, posterior_means
from vaelab.evaluation.disentanglement import eval_numbers as disentanglement_numbers
from vaelab.evaluation.likelihood import (
    elbo,
    iwae_bound,
    mean_and_se,
    per_image,
    per_image_seeded,
    reconstruction_nll,
)
from vaelab.evaluation.probes import knn_accuracy, linear_probe_accuracy
from vaelab.evaluation.samples import K_NEAREST, sample_quality
from vaelab.models import DensityModel, Model
from vaelab.run import load_run, read_config, write_eval
from vaelab.training.runtime import flush_denormals
from vaelab.training.schedules import derived_seed

BOUND_KS = (1, 5, 50)
PROBE_TRAIN_IMAGES = 10_000  # enough for a probe, cheap to encode
# Prior samples that sample quality is judged on, against as many real images: a few
# seconds on a CPU (the numbers depend on it: compare runs at the same count).
SAMPLE_QUALITY_IMAGES = 1000


def is_density(model: Model, binarization: str) -> bool:
    """log p(x|z) is a log-likelihood of the data: binary pixels, or a density on [0, 1]."""
    return not (model.likelihood.binary_only and binarization == "none")


@torch.no_grad()
def likelihood_numbers(model: Model, x, y, k: int, prefix: str, binary: bool,
                       seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """-ELBO, -L_k for k in BOUND_KS and the k-sample importance-sampled NLL, with errors.

    Each number draws from generators derived from `seed` per batch (per_image_seeded), and the
    batches run in torch.get_num_threads() threads: the same numbers on any number of cores.
    """
    threads = torch.get_num_threads()

    def over_images(fn, part: int):
        return per_image_seeded(fn, x, y, derived_seed(seed, part), threads=threads)

    out: dict[str, Any] = {}
    mean, se = mean_and_se(-over_images(lambda a, b, g: elbo(model, a, b, g), 0))
    out[f"{prefix}neg_elbo"], out[f"{prefix}neg_elbo_se"] = mean, se
    for kk in BOUND_KS:
        values = -over_images(lambda a, b, g, kk=kk: iwae_bound(model, a, b, kk, generator=g), kk)
        out[f"{prefix}neg_iwae_{kk}"] = values.mean().item()
    start = time.perf_counter()
    values = -over_images(lambda a, b, g: iwae_bound(model, a, b, k, generator=g), k)
    out["is_seconds"] = time.perf_counter() - start
    name = "nll" if prefix == "" else f"{prefix}iwae_{k}"
    out[name], out[f"{name}_se"] = mean_and_se(values)
    if prefix == "" and binary:  # bits/dim only for a discrete likelihood of binary pixels
        out["bits_per_dim"] = out["nll"] / (x[0].numel() * math.log(2))
    return out


@torch.no_grad()
def classifier_numbers(model: Model, data, n: int = 1000) -> dict[str, Any]:
    """The reference classifier's verdict on generated images."""
    clf = reference_classifier(data.train_images, data.train_labels, data.name)
    gen = torch.Generator().manual_seed(0)
    out = {"classifier_test_accuracy": clf.accuracy(data.test_images.float() / 255,
                                                    data.test_labels)}  # fmt: skip
    labels = model.sample_labels(n)
    probs = clf.predict_proba(model.generate(n, labels, gen))
    out["prior_sample_confidence"] = probs.max(1).values.mean().item()
    if labels is not None:
        out["conditional_sample_accuracy"] = (probs.argmax(1) == labels).float().mean().item()
    return out


def real_images(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n of the uint8 images, drawn without replacement with a fixed seed, in [0, 1]."""
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx].float() / 255


@torch.no_grad()
def sample_quality_numbers(model: Model, data, images: torch.Tensor, split: str,
                           n: int = SAMPLE_QUALITY_IMAGES) -> dict[str, Any]:  # fmt: skip
    """Frechet classifier distance, precision and recall (k=3) of n prior samples against n
    real images of the split, in the reference classifier's features (evaluation/samples.py);
    `*_floor`: the same between those images and n real images of the other split, what a
    sampler of the data distribution itself would score at this n."""
    start = time.perf_counter()
    other = data.train_images if split == "test" else data.test_images
    n = min(n, len(images), len(other))
    if n <= K_NEAREST:
        return {}
    clf = reference_classifier(data.train_images, data.train_labels, data.name)
    samples = model.generate(n, model.sample_labels(n), torch.Generator().manual_seed(0))
    # The classifier reads images in [0, 1]; a Gaussian likelihood's mean can leave it.
    sets = (real_images(images, n, 0), real_images(other, n, 1), samples.clamp(0, 1))
    real, floor, fake = (clf.features(v) for v in sets)
    out: dict[str, Any] = {"sample_quality_images": n, **sample_quality(real, fake)}
    out.update({f"{key}_floor": v for key, v in sample_quality(real, floor).items()})
    out["sample_quality_seconds"] = time.perf_counter() - start
    return out


def split_data(data, split: str):
    if split not in ("test", "train"):
        raise VaelabError(f"--split is {split!r}: expected test or train")
    return (data.test_images, data.test_labels) if split == "test" else \
        (data.train_images, data.train_labels)  # fmt: skip


@torch.no_grad()
@flush_denormals()  # fast on CPUs slow with denormal operands (training/runtime.py)
def evaluate_run(run_dir: str | Path, k: int = 5000, split: str = "test", limit: int | None = None,
                 data: ImageData | None = None) -> dict[str, Any]:  # fmt: skip
    """Evaluate a run on its test (or train) split; write and return eval.json's content.
    `data`: the run's dataset, where the caller has loaded it already (else loaded here)."""
    if k < 1:
        raise VaelabError(f"--k is {k}: expected at least 1 importance sample")
    run_dir = Path(run_dir)
    config, raw = read_config(run_dir)
    _, model = load_run(run_dir)
    data = config.data.load() if data is None else data
    binarization = raw.get("binarization", config.data.resolved_binarization(
        config.model_config.likelihood))  # fmt: skip
    images, labels = split_data(data, split)
    images, labels = images[:limit], None if labels is None else labels[:limit]
    x = binarize_fixed(images, binarization, config.data.test_seed)
    torch.manual_seed(config.data.test_seed)
    density = is_density(model, binarization)
    result: dict[str, Any] = {
        "split": split,
        "images": len(x),
        "k": k,
        "model": config.model,
        "binarization": binarization,
        "likelihood_is_density": density,
    }
    recon = per_image(lambda a, b: reconstruction_nll(model, a, b), x, labels)
    result["bce_recon" if not density else "recon"] = recon.mean().item()
    if isinstance(model, DensityModel):
        prefix, binary = "" if density else "bce_", binarization != "none"
        result.update(likelihood_numbers(model, x, labels, k, prefix, binary,
                                         config.data.test_seed))  # fmt: skip
    usage = latent_usage(model, x, labels)
    result["latent_usage_per_dim"] = usage.scores.tolist()
    result["latent_usage_measure"] = usage.measure
    result.update(model.eval_numbers(x, labels))
    means = posterior_means(model, x, labels)
    result["active_units"], variance = active_units(means)
    result.update(disentanglement_numbers(means, data, split, limit))  # MIG, DCI: factors known
    result["latent_variance_per_dim"] = variance.tolist()
    if labels is not None and data.train_labels is not None:
        train_x = binarize_fixed(data.train_images[:PROBE_TRAIN_IMAGES], binarization, 0)
        train_y = data.train_labels[:PROBE_TRAIN_IMAGES]
        train_means = posterior_means(model, train_x, train_y)
        result["linear_probe_accuracy"] = linear_probe_accuracy(train_means, train_y, means, labels)
        result["knn_accuracy"] = knn_accuracy(train_means, train_y, means, labels)
        result.update(classifier_numbers(model, data))
        result.update(sample_quality_numbers(model, data, images, split))
    write_eval(run_dir, result)
    return result
