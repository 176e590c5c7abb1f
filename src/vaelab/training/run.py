"""A run's config.json: everything needed to rebuild the model and repeat the run."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vaelab
from vaelab.config import from_dict, to_dict
from vaelab.data import BINARIZATIONS, default_binarization
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_json
from vaelab.models import Model, ModelConfig, build_model, get_model_class
from vaelab.training.checkpoint import load_weights, read_json
from vaelab.training.schedules import LR_SCHEDULES

CONFIG_FILE = "config.json"


@dataclass
class DataConfig:
    dataset: str = "mnist-sample"
    data_dir: str | None = None
    binarization: str = "auto"  # auto: dynamic for a Bernoulli likelihood, none otherwise
    test_seed: int = 777  # the one fixed draw that binarizes the test set under `dynamic`

    def validate(self) -> None:
        if self.binarization not in ("auto", *BINARIZATIONS):
            raise VaelabError(
                f"binarization is {self.binarization!r}: expected auto or one of "
                f"{', '.join(BINARIZATIONS)}"
            )

    def resolved_binarization(self, likelihood: str) -> str:
        return (
            default_binarization(likelihood) if self.binarization == "auto" else self.binarization
        )


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "burda": the IWAE paper's 3^i-epoch stages
    seed: int = 0
    grad_clip: float | None = None  # max global gradient norm per phase; None: no clipping
    kl_warmup_epochs: float = 0.0
    max_bad_steps: int = 10  # stop after this many non-finite steps in a row
    device: str = "cpu"

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1"),
            (self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.lr > 0, "lr", "a positive number"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip", "a positive number"),
            (self.kl_warmup_epochs >= 0, "kl_warmup_epochs", "a number >= 0"),
            (self.max_bad_steps >= 1, "max_bad_steps", "an integer >= 1"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise VaelabError(f"{name} is {getattr(self, name)!r}: expected {expected}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise VaelabError(f"lr_schedule is {self.lr_schedule!r}: expected one of "
                              f"{', '.join(LR_SCHEDULES)}")  # fmt: skip
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise VaelabError(f"device is {self.device!r} but no CUDA GPU is available")


@dataclass
class RunConfig:
    model: str = "vae"
    model_config: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_json(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_config": to_dict(self.model_config),
            "data": to_dict(self.data),
            "train": to_dict(self.train),
            **(extra or {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "config.json") -> RunConfig:
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            raise VaelabError(f"{where} does not name a model")
        model_cls = get_model_class(data["model"])
        return cls(
            model=data["model"],
            model_config=from_dict(
                model_cls.config_class, data.get("model_config", {}), f"{where} model_config"
            ),
            data=from_dict(DataConfig, data.get("data", {}), f"{where} data"),
            train=from_dict(TrainConfig, data.get("train", {}), f"{where} train"),
        )


def versions() -> dict[str, str]:
    return {
        "vaelab": vaelab.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def write_config(run_dir: Path, config: RunConfig, facts: dict[str, Any]) -> None:
    atomic_write_json(run_dir / CONFIG_FILE, config.to_json({**facts, "versions": versions()}))


def read_config(run_dir: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """The run's config and the raw JSON (which also holds facts such as the data split)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise VaelabError(f"{run_dir} is not a vaelab run: it has no {CONFIG_FILE}")
    raw = read_json(run_dir / CONFIG_FILE)
    return RunConfig.from_json(raw, str(run_dir / CONFIG_FILE)), raw


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, Model]:
    """Rebuild a trained model from its run folder (safetensors + JSON only), in eval mode."""
    config, _ = read_config(run_dir)
    model = build_model(config.model, config.model_config)
    load_weights(Path(run_dir), model)
    return config, model.to(device).eval()
