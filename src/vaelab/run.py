"""A run on disk: its folder's file names, config.json (everything needed to rebuild the model
and repeat the run), the per-epoch history (metrics.jsonl), the evaluation (eval.json) and the
test set as the run saw it. Training, evaluation, reports, the explorer and the tour all read
and write a run through this module."""

from __future__ import annotations

import json
import math
import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

import vaelab
from vaelab.config import check_choices, from_dict, to_dict
from vaelab.data import (
    BINARIZATIONS,
    FolderOptions,
    ImageData,
    binarize_fixed,
    default_binarization,
    is_folder_spec,
    load_dataset,
)
from vaelab.data.folder import BadFilePolicy, content_changes, folder_content
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from vaelab.models import Model, ModelConfig, build_model, get_model_class
from vaelab.training.checkpoint import (
    MANIFEST,
    MODEL_FILE,
    check_weights_fit,
    load_weights,
    read_json,
    read_safetensors,
    verify_manifest,
)
from vaelab.training.schedules import LrSchedule

# auto: none for folder:PATH (photos are not binary), else dynamic for a Bernoulli likelihood;
# the others are data.batches' BINARIZATIONS.
Binarization = Literal["auto", "dynamic", "static", "none"]
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"  # one JSON line per epoch
SPEED_KEY = "train/samples_per_s"  # in every epoch's record
EVAL_FILE = "eval.json"  # what `vaelab eval` measured
FOLDER_CONTENT = "folder_content"  # config.json: an image folder's files as the run trained on


@dataclass
class DataConfig:
    dataset: str = "mnist-sample"
    data_dir: str | None = None
    binarization: Binarization = "auto"
    test_seed: int = 777  # the one fixed draw that binarizes the test set under `dynamic`
    # folder:PATH only (vaelab.data.folder); None: chosen from the images
    channels: int | None = None  # 1 or 3; None: 1 if every image is grayscale, else 3
    image_size: int | None = None  # None: 28 for 1 channel, 32 for 3
    on_bad_file: BadFilePolicy = "error"
    validation: int = 0  # the last N training images: a validation set (binarized once, test_seed)

    def validate(self) -> None:
        check_choices(self)
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
Precision = Literal["fp32", "bf16"]
PRECISIONS = get_args(Precision)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: LrSchedule = "constant"
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
    precision: Precision = "fp32"  # bf16: training's forward passes under bfloat16 autocast

    def validate(self) -> None:
        check_choices(self)
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
    content = raw.get(FOLDER_CONTENT)
    if content is not None and not _is_folder_content(content):
        raise VaelabError(
            f"{where} field {FOLDER_CONTENT!r} is not a content key with a list of "
            "[path, size, mtime] entries"
        )


def _is_folder_content(value: Any) -> bool:
    """{"key": str, "files": [[path, size, mtime], ...]}, as folder_content makes it."""
    if not isinstance(value, dict) or not isinstance(value.get("key"), str):
        return False
    files = value.get("files")
    return isinstance(files, list) and all(
        isinstance(f, list) and len(f) == 3 and isinstance(f[0], str)
        and type(f[1]) is int and type(f[2]) is int for f in files
    )  # fmt: skip


def _check_fits_weights(run_dir: Path, config: RunConfig) -> None:
    if not (run_dir / MODEL_FILE).is_file() or not (run_dir / MANIFEST).is_file():
        return  # no complete checkpoint: load_weights refuses it, nothing is built from it
    verify_manifest(run_dir, (MODEL_FILE,))
    with torch.device("meta"):
        skeleton = build_model(config.model, config.model_config)
    check_weights_fit(run_dir / MODEL_FILE, skeleton.state_dict(), skeleton.renamed_weights)


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, Model]:
    """Rebuild a trained model from its run folder (safetensors + JSON only), in eval mode."""
    config, _ = read_config(run_dir)
    model = build_model(config.model, config.model_config)
    load_weights(Path(run_dir), model, model.renamed_weights)
    return config, model.to(device).eval()


class DataChangedWarning(UserWarning):
    """A run's image folder is not the one it trained on."""


def dataset_facts(data: DataConfig) -> dict[str, Any]:
    """What config.json records of the dataset beside its config: an image folder's content."""
    if not is_folder_spec(data.dataset):
        return {}
    return {FOLDER_CONTENT: folder_content(data.dataset, data.folder_options())}


def run_dataset(
    run_dir: str | Path, config: RunConfig, raw: dict[str, Any], strict: bool = False
) -> ImageData:
    """The run's dataset as it is now. An image folder that changed since the run trained is
    named, with what changed, in a DataChangedWarning, or refused where `strict`."""
    then = raw.get(FOLDER_CONTENT)
    if then is not None and is_folder_spec(config.data.dataset):
        now = folder_content(config.data.dataset, config.data.folder_options())
        changes = content_changes(then, now)
        if changes:
            message = f"{config.data.dataset} is not the folder {run_dir} trained on: {changes}"
            if strict:
                raise VaelabError(f"{message} (refused under --strict-data)")
            warnings.warn(f"{message}; its numbers may differ", DataChangedWarning, stacklevel=2)
    return config.data.load()


def run_binarization(config: RunConfig, raw: dict[str, Any]) -> str:
    """The binarization the run trained and tests under (recorded in config.json)."""
    return raw.get(
        "binarization", config.data.resolved_binarization(config.model_config.likelihood)
    )


def test_set(config: RunConfig, binarization: str, data: ImageData | None = None):
    """The run's test images (binarized as in training), labels and class names (from `data`,
    the run's dataset, where the caller has it loaded)."""
    data = config.data.load() if data is None else data
    x = binarize_fixed(data.test_images, binarization, config.data.test_seed)
    return x, data.test_labels, data.class_names


def write_history(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl: every epoch's record so far, rewritten whole (atomic)."""
    atomic_write_text(run_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history))


def read_history(run_dir: str | Path) -> list[dict]:
    """metrics.jsonl's records ([] where the run has none yet), each checked: a table of
    numbers with an integer epoch and step (what the report and the explorer read)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise VaelabError(f"{path} is not UTF-8 text: {err}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            where = f"{path} line {number}"
            records.append(_history_record(_parse_json(line, where), where))
    return records


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    # ValueError: also an integer of over 4300 digits; RecursionError: nesting too deep
    except (ValueError, RecursionError) as err:
        raise VaelabError(f"{where} is not valid JSON: {str(err)[:200]}") from None


def _fits_float(value: Any) -> bool:
    """A JSON number (not a bool) that a float holds: 10**400 does not, and fails to format."""
    if type(value) not in (int, float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}... ({type(value).__name__})"


def _history_record(record: Any, where: str) -> dict:
    if not isinstance(record, dict):
        raise VaelabError(f"{where} is {type(record).__name__}, expected a table of numbers")
    for key in ("epoch", "step"):
        if type(record.get(key)) is not int or record[key] < 0:
            raise VaelabError(
                f"{where}: {key} is {_shown(record.get(key))}: expected an integer >= 0"
            )
    for key, value in record.items():
        if not _fits_float(value):
            raise VaelabError(f"{where}: {key!r} is {_shown(value)}: expected a number")
    speed = record.get(SPEED_KEY)
    if speed is None or not 0 <= speed < math.inf:  # the report rounds it
        raise VaelabError(f"{where}: {SPEED_KEY} is {_shown(speed)}: expected a number >= 0")
    return record


def write_eval(run_dir: str | Path, result: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / EVAL_FILE, result)


def read_eval(run_dir: str | Path) -> dict[str, Any] | None:
    """eval.json's content (checked: what `vaelab eval` writes), or None where it has not run."""
    path = Path(run_dir) / EVAL_FILE
    if not path.is_file():
        return None
    result = read_json(path)
    if not isinstance(result, dict):
        raise VaelabError(f"{path} holds {type(result).__name__}, expected a table of results")
    split, k = result.get("split"), result.get("k")
    if not isinstance(split, str) or type(k) is not int or k < 1:
        raise VaelabError(
            f"{path} has split {_shown(split)} and k {_shown(k)}: expected a split name and an "
            "integer number of importance samples >= 1"
        )
    for key, value in result.items():
        plain = value is None or isinstance(value, str | bool) or _fits_float(value)
        if not plain and not (isinstance(value, list) and all(map(_fits_float, value))):
            raise VaelabError(
                f"{path}: {key!r} is {_shown(value)}: expected a number, a list of numbers or text"
            )
    return result


def weights_sha256(run_dir: str | Path) -> str:
    """The sha256 of the run's model.safetensors as its manifest records it: what a file
    derived from the weights (a fitted sampler) is keyed by."""
    path = Path(run_dir) / MANIFEST
    manifest = read_json(path)
    digests = manifest.get("sha256") if isinstance(manifest, dict) else None
    digest = digests.get(MODEL_FILE) if isinstance(digests, dict) else None
    if not isinstance(digest, str):
        raise VaelabError(f"{path} records no sha256 of {MODEL_FILE}")
    return digest


def sampler_file(run_dir: str | Path, name: str) -> Path:
    """RUN/sampler-NAME.safetensors: a sampler of codes fitted after training (samplers.py)."""
    return Path(run_dir) / f"sampler-{name}.safetensors"


def write_sampler(run_dir: str | Path, name: str, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str]) -> Path:  # fmt: skip
    path = sampler_file(run_dir, name)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}, metadata))
    return path


def read_sampler(run_dir: str | Path, name: str):
    """(tensors, metadata) of a fitted sampler, or None where the run has none; a file that is
    not safetensors is refused (VaelabError), never unpickled."""
    path = sampler_file(run_dir, name)
    if not path.is_file():
        return None
    tensors = read_safetensors(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise VaelabError(f"{path} is not a valid safetensors file ({err})") from None
    return tensors, metadata
