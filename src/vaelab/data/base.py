"""What every dataset is in memory (ImageData) and where vaelab caches files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, eq=False)  # eq=False: == on tensors is elementwise, not a bool
class ImageData:
    """A dataset in memory: uint8 images [N, C, H, W] and int64 labels [N] (or None)."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor | None
    test_images: torch.Tensor
    test_labels: torch.Tensor | None
    source: str
    split: str
    num_classes: int | None
    class_names: tuple[str, ...] | None
    # Known factors of variation (a procedural dataset's, data/shapes.py): float32 values
    # [N, F] per split, named by factor_names; None where the data has none.
    train_factors: torch.Tensor | None = None
    test_factors: torch.Tensor | None = None
    factor_names: tuple[str, ...] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.train_images.shape[1:]
        return c, h, w


def user_cache_dir() -> Path:
    """vaelab's download cache: `$XDG_CACHE_HOME/vaelab`, by default `~/.cache/vaelab`."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "vaelab"
