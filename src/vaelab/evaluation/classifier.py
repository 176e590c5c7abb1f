"""A small CNN digit classifier: it judges generated images (is this sample a 3?).

Trained on the real training images in memory: 97.7 % on the mnist-sample test split after
8 epochs (about 9 s on 2 CPU cores).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import Tensor, nn

from vaelab.data.base import user_cache_dir
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes


class Classifier(nn.Module):
    """Two stride-2 convs and a dense layer: (B, C, H, W) in [0, 1] -> (B, classes) logits."""

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = image_shape
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * (-(-h // 4)) * (-(-w // 4)), 128), nn.ReLU(),
            nn.Linear(128, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict_proba(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        self.eval()
        return torch.cat([F.softmax(self(x[i : i + batch_size]), -1)
                          for i in range(0, len(x), batch_size)])  # fmt: skip

    def accuracy(self, x: Tensor, labels: Tensor) -> float:
        return (self.predict_proba(x).argmax(-1) == labels).float().mean().item()

    @torch.no_grad()
    def features(self, x: Tensor, batch_size: int = 1000) -> Tensor:
        """The penultimate layer (B, 128): the space sample quality is measured in (Frechet
        distance, precision and recall), as FID uses Inception's pool features."""
        self.eval()  # dropout off: the features of an image do not change from call to call
        body = self.net[:-1]
        return torch.cat([body(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def train_classifier(images: Tensor, labels: Tensor, epochs: int = 8, seed: int = 0,
                     batch_size: int = 128, lr: float = 2e-3) -> Classifier:  # fmt: skip
    """Fit a Classifier to uint8 images [N, C, H, W] and int64 labels [N] (Adam)."""
    if labels is None or len(labels) != len(images):
        raise VaelabError("training a classifier needs one label per image")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(), torch.enable_grad():  # callers may be under no_grad
        torch.manual_seed(seed)
        model = Classifier(tuple(images.shape[1:]), int(labels.max()) + 1)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(images), generator=gen).split(batch_size):
                x = images[idx].float() / 255
                loss = F.cross_entropy(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return model.eval()


ARCHITECTURE = "cnn-32-64-128-v1"  # change when Classifier changes: old caches then go unused
REFERENCE_EPOCHS, REFERENCE_SEED = 8, 0


def _data_key(images: Tensor, labels: Tensor) -> str:
    digest = hashlib.sha256(images.contiguous().numpy().tobytes())
    digest.update(labels.contiguous().numpy().tobytes())
    digest.update(f"{ARCHITECTURE}/{REFERENCE_EPOCHS}/{REFERENCE_SEED}".encode())
    return digest.hexdigest()[:16]


def _load_cached(path: Path) -> Classifier | None:
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata()
        tensors = load_file(path)
        model = Classifier(tuple(json.loads(meta["image_shape"])), int(meta["num_classes"]))
        model.load_state_dict(tensors)
    except Exception as err:  # a cache: a bad file is rebuilt, never trusted
        warnings.warn(f"ignoring the cached classifier {path}: {err}", stacklevel=3)
        return None
    return model.eval()


def reference_classifier(images: Tensor, labels: Tensor, name: str,
                         cache_dir: Path | None = None) -> Classifier:  # fmt: skip
    """The dataset's reference classifier: trained once on (images, labels), then loaded from
    `cache_dir/classifiers/NAME-KEY.safetensors` (KEY hashes the data and the recipe)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    path = cache_dir / "classifiers" / f"{name}-{_data_key(images, labels)}.safetensors"
    if path.is_file() and (model := _load_cached(path)) is not None:
        return model
    model = train_classifier(images, labels, REFERENCE_EPOCHS, REFERENCE_SEED)
    meta = {"image_shape": json.dumps(list(images.shape[1:])),
            "num_classes": str(int(labels.max()) + 1), "architecture": ARCHITECTURE}  # fmt: skip
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata=meta))
    return model
