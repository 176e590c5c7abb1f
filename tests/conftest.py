"""Shared fixtures: tiny models and data built in code (no pickles, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vaelab.data import ImageData, load_dataset
from vaelab.models import MODELS

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_config(name: str, net: str = "mlp", **changes):
    """The registered model's config at a size that trains in milliseconds."""
    cls = MODELS[name].config_class
    conditional = getattr(MODELS[name], "conditional", False)
    fields = {
        "image_shape": (1, 28, 28),
        "latent_dim": 2,
        "net": net,
        "hidden": (32,),
        "num_classes": 10 if conditional else 0,
    }
    fields.update(changes)
    return cls(**fields)


@pytest.fixture(scope="session")
def mnist_sample() -> ImageData:
    return load_dataset("mnist-sample")


@pytest.fixture(scope="session")
def small_data(mnist_sample) -> ImageData:
    """512 training and 128 test digits of the shipped sample."""
    d = mnist_sample
    return ImageData(
        name="mnist-sample-small",
        train_images=d.train_images[:512],
        train_labels=d.train_labels[:512],
        test_images=d.test_images[:128],
        test_labels=d.test_labels[:128],
        source=d.source,
        split="first 512 train / first 128 test of mnist-sample",
        num_classes=d.num_classes,
        class_names=d.class_names,
    )


@pytest.fixture
def digits(mnist_sample) -> tuple[torch.Tensor, torch.Tensor]:
    """64 binarized test digits and their labels."""
    x = (mnist_sample.test_images[:64].float() / 255 > 0.5).float()
    return x, mnist_sample.test_labels[:64]
