"""Safe checkpoints: safetensors + JSON only (loading never unpickles), written atomically.

A run folder holds `model.safetensors` (weights), `train_state.safetensors` (optimizer moments
and RNG states), `train_state.json` (epoch, step, history, optimizer settings) and, written last,
`manifest.json` with the sha256 of each: a checkpoint whose files do not match their manifest
(a torn or tampered write) is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes, atomic_write_json, sha256_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"
MANIFEST = "manifest.json"
FORMAT = "vaelab-checkpoint-1"


def _tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning any parse failure into one clear error."""
    if not path.is_file():
        raise VaelabError(f"{path} is missing: the run has no complete checkpoint")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise VaelabError(
            f"{path} is not a valid safetensors file ({err}); vaelab never loads pickles"
        ) from None


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise VaelabError(f"{path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VaelabError(f"{path} is not valid JSON: {err}") from None


def optimizer_tensors(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer's state into tensors (for safetensors) and the rest (for JSON)."""
    sd = optimizer.state_dict()
    tensors, extra = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{name}.{idx}.{key}"] = value
            else:
                extra[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "extra": extra}


def load_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[field] = value
    for key, value in meta["extra"].items():
        idx, field = key.split(".", 1)
        state.setdefault(int(idx), {})[field] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as err:
        raise VaelabError(f"the optimizer state {name!r} does not fit this model: {err}") from None


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    rng: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> None:
    """Write weights, optimizer + RNG tensors and the JSON state, then the manifest last."""
    bad = [
        k
        for k, v in model.state_dict().items()
        if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        raise VaelabError(f"refusing to save non-finite weights ({', '.join(bad[:3])})")
    tensors = {f"rng.{k}": v for k, v in rng.items()}
    optim_meta = {}
    for name, opt in optimizers.items():
        t, meta = optimizer_tensors(name, opt)
        tensors.update(t)
        optim_meta[name] = meta
    atomic_write_bytes(run_dir / MODEL_FILE, _tensors_bytes(model.state_dict()))
    atomic_write_bytes(run_dir / STATE_FILE, _tensors_bytes(tensors))
    atomic_write_json(run_dir / STATE_JSON, {**state, "optimizers": optim_meta})
    files = {f: sha256_file(run_dir / f) for f in (MODEL_FILE, STATE_FILE, STATE_JSON)}
    atomic_write_json(run_dir / MANIFEST, {"format": FORMAT, "sha256": files})


def verify_manifest(run_dir: Path, names: tuple[str, ...]) -> None:
    manifest = read_json(run_dir / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise VaelabError(f"{run_dir / MANIFEST} is not a vaelab checkpoint manifest")
    for name in names:
        expected = manifest["sha256"].get(name)
        if not (run_dir / name).is_file():
            raise VaelabError(f"{run_dir / name} is missing: the checkpoint is incomplete")
        if sha256_file(run_dir / name) != expected:
            raise VaelabError(
                f"{run_dir / name} does not match its manifest: the checkpoint "
                "was torn or changed after it was written"
            )


def load_weights(run_dir: Path, model: torch.nn.Module) -> None:
    """Load model.safetensors into `model`, checking names, shapes and dtypes first."""
    verify_manifest(run_dir, (MODEL_FILE,))
    path = run_dir / MODEL_FILE
    loaded = read_safetensors(path)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(loaded)), sorted(set(loaded) - set(expected))
    if missing or unexpected:
        raise VaelabError(
            f"{path} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, want in expected.items():
        got = loaded[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise VaelabError(
                f"{path}: {key} is {got.dtype} {tuple(got.shape)}, the model "
                f"expects {want.dtype} {tuple(want.shape)}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise VaelabError(f"{path}: {key} holds NaN or infinite values")
    model.load_state_dict(loaded)


def load_train_state(
    run_dir: Path, optimizers: dict[str, torch.optim.Optimizer]
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore the optimizers; return the JSON state and the RNG tensors."""
    verify_manifest(run_dir, (STATE_FILE, STATE_JSON))
    tensors = read_safetensors(run_dir / STATE_FILE)
    state = read_json(run_dir / STATE_JSON)
    for name, opt in optimizers.items():
        if name not in state.get("optimizers", {}):
            raise VaelabError(f"{run_dir / STATE_JSON} has no optimizer state for {name!r}")
        load_optimizer(name, opt, tensors, state["optimizers"][name])
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    return state, rng
