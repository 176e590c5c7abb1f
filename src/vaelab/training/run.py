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
from vaelab.data import (
    BINARIZATIONS,
    FolderOptions,
    ImageData,
    default_binarization,
    is_folder_spec,
    load_dataset,
)
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_json
from vaelab.models import Model, ModelConfig, build_model, get_model_class
from vaelab.training.checkpoint import (
    MANIFEST,
    MODEL_FILE,
    check_weights_fit,
    load_weights,
    read_json,
    verify_manifest,
)
from vaelab.training.schedules import LR_SCHEDULES

CONFIG_FILE = "config.json"


@dataclass
class DataConfig:
    dataset: str = "mnist-sample"
    data_dir: str | None = None
    binarization: str = "auto"  # auto: none for folder:PATH, else dynamic for a Bernoulli
    test_seed: int = 777  # the one fixed draw that binarizes the test set under `dynamic`
    # folder:PATH only (vaelab.data.folder); None: chosen from the images
    channels: int | None = None  # 1 or 3; None: 1 if every image is grayscale, else 3
    image_size: int | None = None  # None: 28 for 1 channel, 32 for 3
    on_bad_file: str = "error"  # or skip
    validation: int = 0  # the last N training images: a validation set (binarized once, test_seed)

    def validate(self) -> None:
        if self.binarization not in ("auto", *BINARIZATIONS):
            raise VaelabError(
                f"binarization is {self.binarization!r}: expected auto or one of "
                f"{', '.join(BINARIZATIONS)}"
            )
        if self.validation < 0:
            raise VaelabError(f"validation is {self.validation}: expected a number of images >= 0")
        self.folder_options().validate()
        if not is_folder_spec(self.dataset) and self.folder_options() != FolderOptions():
            raise VaelabError(
                f"channels, image_size and on_bad_file apply to folder:PATH datasets only, "
                f"not to {self.dataset!r}"
            )

    def folder_options(self) -> FolderOptions:
        return FolderOptions(self.channels, self.image_size, self.on_bad_file)

    def resolved_binarization(self, likelihood: str) -> str:
        """auto: none for an image folder (photos are not binary), else by the likelihood."""
        if self.binarization != "auto":
            return self.binarization
        return "none" if is_folder_spec(self.dataset) else default_binarization(likelihood)

    def load(self) -> ImageData:
        """The dataset in memory (image folders from their cache when unchanged)."""
        return load_dataset(self.dataset, self.data_dir, folder=self.folder_options())


# Training's precision: float32 throughout, or the forward passes of training steps under
# bfloat16 autocast (matmuls and convolutions in bfloat16 with float32 accumulation; weights,
# optimizer state, densities and every validation, test and evaluation pass stay float32).
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "burda": the IWAE paper's 3^i-epoch stages
    lr_decay: float = 0.0  # the learning rate falls linearly to 0 over this last share of training
    seed: int = 0
    grad_clip: float | None = None  # max global gradient norm per phase; None: no clipping
    kl_warmup_epochs: float = 0.0
    max_bad_steps: int = 10  # stop after this many non-finite steps in a row
    device: str = "cpu"
    deterministic: bool = False  # torch's deterministic algorithms (and cuBLAS's) for the run
    early_stopping: int = 0  # stop after this many epochs without a better validation loss
    time_budget: str | None = None  # e.g. 30m: stop at the first epoch end past it, in all
    test_every: int = 1  # the test set's pass after every N epochs and after the last; 0: last only
    precision: str = "fp32"  # or "bf16": training's forward passes under bfloat16 autocast

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1"),
            (self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.lr > 0, "lr", "a positive number"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip", "a positive number"),
            (self.kl_warmup_epochs >= 0, "kl_warmup_epochs", "a number >= 0"),
            (0 <= self.lr_decay <= 1, "lr_decay", "a share of training from 0 to 1"),
            (self.max_bad_steps >= 1, "max_bad_steps", "an integer >= 1"),
            (self.test_every >= 0, "test_every", "an integer >= 0 (0: after the last epoch only)"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise VaelabError(f"{name} is {getattr(self, name)!r}: expected {expected}")
        if self.early_stopping < 0:
            raise VaelabError(f"early_stopping is {self.early_stopping}: expected epochs >= 0")
        self.budget_seconds()  # refuses a malformed budget now, not at the first epoch's end
        if self.lr_schedule not in LR_SCHEDULES:
            raise VaelabError(f"lr_schedule is {self.lr_schedule!r}: expected one of "
                              f"{', '.join(LR_SCHEDULES)}")  # fmt: skip
        if self.precision not in PRECISIONS:
            raise VaelabError(f"precision is {self.precision!r}: expected one of "
                              f"{', '.join(PRECISIONS)}")  # fmt: skip
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise VaelabError(f"device is {self.device!r} but no CUDA GPU is available")

    def budget_seconds(self) -> float | None:
        """--time-budget in seconds: a number with an optional unit s, m or h (30m, 1.5h)."""
        if self.time_budget is None:
            return None
        text = str(self.time_budget).strip().lower()
        scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:])
        try:
            value = float(text[:-1] if scale else text) * (scale or 1)
        except ValueError:
            value = float("nan")
        if not value > 0 or value == float("inf"):
            raise VaelabError(
                f"time_budget is {self.time_budget!r}: expected a positive duration such as "
                "90s, 30m or 2h"
            )
        return value


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
        fields = data.get("model_config", {})
        if isinstance(fields, dict):  # a run saved before a field existed means its old value
            fields = {**model_cls.config_class.saved_before, **fields}
        return cls(
            model=data["model"],
            model_config=from_dict(model_cls.config_class, fields, f"{where} model_config"),
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
    """The run's config and the raw JSON (which also holds facts such as the data split).

    Every field is checked; where the run has weights, the model the config describes is
    built on the meta device (no memory) and its shapes compared with the weights' header,
    so a tampered config.json cannot make a later build allocate without bound.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise VaelabError(f"{run_dir} is not a vaelab run: it has no {CONFIG_FILE}")
    raw = read_json(run_dir / CONFIG_FILE)
    config = RunConfig.from_json(raw, str(run_dir / CONFIG_FILE))
    _check_facts(raw, run_dir / CONFIG_FILE)
    _check_fits_weights(run_dir, config)
    return config, raw


def _check_facts(raw: dict[str, Any], where: Path) -> None:
    """The facts beside the config that readers use: the binarization, the data's split."""
    binarization = raw.get("binarization", BINARIZATIONS[0])
    if not isinstance(binarization, str) or binarization not in BINARIZATIONS:
        raise VaelabError(
            f"{where} field 'binarization' is {binarization!r}: expected one of "
            f"{', '.join(BINARIZATIONS)}"
        )
    for name in ("split", "dataset_source"):
        if not isinstance(raw.get(name, ""), str):
            raise VaelabError(f"{where} field {name!r} is {raw[name]!r}: expected str")


def _check_fits_weights(run_dir: Path, config: RunConfig) -> None:
    if not (run_dir / MODEL_FILE).is_file() or not (run_dir / MANIFEST).is_file():
        return  # no complete checkpoint: load_weights refuses it, nothing is built from it
    verify_manifest(run_dir, (MODEL_FILE,))
    with torch.device("meta"):
        skeleton = build_model(config.model, config.model_config)
    check_weights_fit(run_dir / MODEL_FILE, skeleton.state_dict())


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, Model]:
    """Rebuild a trained model from its run folder (safetensors + JSON only), in eval mode."""
    config, _ = read_config(run_dir)
    model = build_model(config.model, config.model_config)
    load_weights(Path(run_dir), model)
    return config, model.to(device).eval()
