"""Safe checkpoints: safetensors + JSON only (loading never unpickles), written atomically.

A run folder holds `model.safetensors` (weights), `train_state.safetensors` (optimizer moments
and RNG states), `train_state.json` (epoch, step, history, optimizer settings) and, written last,
`manifest.json` with the sha256 of each: a checkpoint whose files do not match their manifest
(a torn or tampered write) is refused.

A save never touches the previous checkpoint until the new one is complete: it stages the files
as NAME.next, commits by writing `manifest.next.json` (their sha256), then moves them into place
and the record over `manifest.json`. A process killed at any moment leaves either the previous
checkpoint (kill before the commit) or a committed one that the next load finishes moving.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from vaelab.errors import VaelabError
from vaelab.fileio import (
    FileWriteError,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    replace,
    sha256_file,
)

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
STATE_JSON = "train_state.json"
MANIFEST = "manifest.json"
FORMAT = "vaelab-checkpoint-1"
CHECKPOINT_FILES = (MODEL_FILE, STATE_FILE, STATE_JSON)
NEXT = ".next"  # a save stages each file as NAME.next before it commits
BEST_DIR = "best"  # the best validation epoch's weights, as a run folder of its own
COMMIT = "manifest.next.json"  # the commit record: the staged files' sha256, written last
RNG_STATES = ("torch", "binarize")  # the generators every resume restores (rng.NAME)
# train_state.json's counters: each a non-negative integer
STATE_COUNTERS = ("epoch", "step", "step_in_epoch", "bad_steps", "skipped_steps")


def _tensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()})


def _not_safetensors(path: Path, err: Exception) -> VaelabError:
    return VaelabError(
        f"{path} is not a valid safetensors file ({err}); vaelab never loads pickles"
    )


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning any parse failure into one clear error."""
    if not path.is_file():
        raise VaelabError(f"{path} is missing: the run has no complete checkpoint")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise _not_safetensors(path, err) from None


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a safetensors file, from its header alone."""
    try:
        with safe_open(path, framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise _not_safetensors(path, err) from None


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise VaelabError(f"{path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    # ValueError: also an integer of over 4300 digits; RecursionError: nesting too deep
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise VaelabError(f"{path} is not valid JSON: {str(err)[:200]}") from None


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
    try:
        for key, value in tensors.items():
            if key.startswith(prefix):
                idx, field = key[len(prefix) :].split(".", 1)
                state.setdefault(int(idx), {})[field] = value
        for key, value in meta["extra"].items():
            idx, field = key.split(".", 1)
            state.setdefault(int(idx), {})[field] = value
        _check_groups(optimizer, meta["param_groups"])
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        _check_moments(optimizer)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError) as err:
        raise VaelabError(
            f"the optimizer state {name!r} in {STATE_FILE} and {STATE_JSON} does not fit this "
            f"model: {err}"
        ) from None


def _check_groups(optimizer: torch.optim.Optimizer, saved: Any) -> None:
    """The saved param groups hold this optimizer's parameters and settings (betas, eps, ...)
    and nothing else; only the learning rate, which the schedule sets every epoch, may differ.
    A setting that a newer PyTorch added may be absent (the optimizer gives it its default)."""
    current = optimizer.state_dict()["param_groups"]
    if not isinstance(saved, list) or not all(isinstance(g, dict) for g in saved):
        raise ValueError("its param_groups are not a list of tables")
    for mine, theirs in zip(current, saved, strict=False):
        mine = json.loads(json.dumps(mine))  # tuples as lists, as the JSON holds them
        differ = sorted(k for k in theirs if k not in ("lr", "initial_lr")
                        and (k not in mine or theirs[k] != mine[k]))  # fmt: skip
        if differ or "params" not in theirs:
            shown = {k: theirs[k] for k in differ} if differ else "no params"
            raise ValueError(f"its settings {shown} differ from this run's")
    if len(saved) != len(current):
        raise ValueError(f"it has {len(saved)} param groups, expected {len(current)}")


def _moment_fields(optimizer: torch.optim.Optimizer) -> set[str] | None:
    """The state fields a stepped parameter must have (None: unknown optimizer)."""
    if not isinstance(optimizer, torch.optim.Adam):
        return None
    amsgrad = any(group.get("amsgrad") for group in optimizer.param_groups)
    return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if amsgrad else set())


def _check_moments(optimizer: torch.optim.Optimizer) -> None:
    """Each parameter's state is empty or complete, and each tensor in it has its parameter's
    shape and dtype ('step': a scalar); load_state_dict checks none of it, and a wrong one
    would broadcast into the weights or fail mid-step."""
    fields = _moment_fields(optimizer)
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if state and fields is not None and set(state) != fields:
                raise ValueError(
                    f"a parameter's state has {sorted(state)}, expected {sorted(fields)}"
                )
            for field, value in state.items():
                if not isinstance(value, torch.Tensor):
                    continue
                want = ((), value.dtype) if field == "step" else (p.shape, p.dtype)
                if (value.shape, value.dtype) != want:
                    raise ValueError(
                        f"its {field} is {value.dtype} {tuple(value.shape)}, expected "
                        f"{want[1]} {tuple(want[0])}"
                    )
                if value.is_floating_point() and not torch.isfinite(value).all():
                    raise ValueError(f"its {field} holds NaN or infinite values")


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    rng: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> None:
    """Write weights, optimizer + RNG tensors and the JSON state: staged, then committed with
    their sha256 (the manifest), so a kill at any moment leaves a complete checkpoint."""
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
    _commit(run_dir, {
        MODEL_FILE: _tensors_bytes(model.state_dict()),
        STATE_FILE: _tensors_bytes(tensors),
        STATE_JSON: _json_bytes({**state, "optimizers": optim_meta}),
    })  # fmt: skip


def save_best(run_dir: Path, model: torch.nn.Module, epoch: int, loss: float) -> None:
    """Keep `model`'s weights in run_dir/best/, a run folder of its own (the run's config, the
    weights, their manifest, and best.json with the epoch and validation loss): `vaelab eval
    RUN/best` evaluates the best epoch."""
    best = run_dir / BEST_DIR
    best.mkdir(exist_ok=True)
    config = (run_dir / "config.json").read_bytes()
    if not (best / "config.json").is_file() or (best / "config.json").read_bytes() != config:
        atomic_write_bytes(best / "config.json", config)
    _commit(best, {MODEL_FILE: _tensors_bytes(model.state_dict())})
    atomic_write_json(best / "best.json", {"epoch": epoch, "valid_loss": loss})


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _commit(folder: Path, payloads: dict[str, bytes]) -> None:
    """Write checkpoint files so that a kill at any moment leaves the old set or the new one:
    stage each as NAME.next, commit by writing the record of their sha256, then roll forward
    (the previous files are untouched until the record exists; staged files of a save killed
    before its commit are overwritten by the next one)."""
    for stale in folder.glob(".*.tmp"):  # temp files of a process killed mid-write
        if any(stale.name.startswith(f".{name}.") for name in (*CHECKPOINT_FILES, COMMIT)):
            stale.unlink(missing_ok=True)
    try:
        for name, data in payloads.items():
            atomic_write_bytes(folder / f"{name}{NEXT}", data)
        files = {name: sha256_file(folder / f"{name}{NEXT}") for name in payloads}
        atomic_write_json(folder / COMMIT, {"format": FORMAT, "sha256": files})
    except FileWriteError as err:  # not committed: the previous checkpoint stands as it was
        for name in payloads:
            (folder / f"{name}{NEXT}").unlink(missing_ok=True)
        kept = FileWriteError(f"{err}; " + (
            f"the last complete checkpoint in {folder} is kept" if has_checkpoint(folder)
            else f"{folder} has no complete checkpoint yet"))  # fmt: skip
        kept.errno = err.errno
        raise kept from None
    roll_forward(folder)


def roll_forward(run_dir: Path) -> None:
    """Finish a committed save: move the staged files over the checkpoint's, then the commit
    record over the manifest. Safe to repeat, and to run from a reader while the trainer runs
    it too (a file already moved is checked against its hash instead)."""
    record_path = run_dir / COMMIT
    if not record_path.is_file():
        return
    record = read_json(record_path)
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), dict):
        raise VaelabError(f"{record_path} is not a vaelab checkpoint commit record")
    for name, digest in record["sha256"].items():
        if name not in CHECKPOINT_FILES:
            raise VaelabError(f"{record_path} names an unexpected file {name!r}")
        try:
            replace(run_dir / f"{name}{NEXT}", run_dir / name)
        except FileNotFoundError:  # moved already (by an earlier or a concurrent roll-forward)
            if not (run_dir / name).is_file() or sha256_file(run_dir / name) != digest:
                raise VaelabError(
                    f"{run_dir}: the committed {name} is missing; the checkpoint is damaged"
                ) from None
    with contextlib.suppress(FileNotFoundError):
        replace(record_path, run_dir / MANIFEST)
    fsync_dir(run_dir)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir` has a checkpoint (its manifest is written last)."""
    return (run_dir / MANIFEST).is_file()


def verify_manifest(run_dir: Path, names: tuple[str, ...]) -> None:
    roll_forward(run_dir)  # a save that was killed after its commit is finished first
    manifest = read_json(run_dir / MANIFEST)
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("sha256"), dict)
    ):
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


def renamed(tensors: dict[str, Any], renames: dict[str, str] | None) -> dict[str, Any]:
    """`tensors` with keys saved under an old name given their new name (renames: old -> new)."""
    return {(renames or {}).get(k, k): v for k, v in tensors.items()}


def check_weights_fit(path: Path, expected: dict[str, torch.Tensor],
                      renames: dict[str, str] | None = None) -> None:  # fmt: skip
    """The names and shapes in the header of `path` (old names renamed) are those of
    `expected` (a state dict, possibly of meta tensors): checked before any tensor is read."""
    shapes = renamed(read_shapes(path), renames)
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise VaelabError(
            f"{path} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, want in expected.items():
        if shapes[key] != tuple(want.shape):
            raise VaelabError(
                f"{path}: {key} has shape {shapes[key]}, the model expects {tuple(want.shape)}"
            )


def load_weights(run_dir: Path, model: torch.nn.Module,
                 renames: dict[str, str] | None = None) -> None:  # fmt: skip
    """Load model.safetensors into `model`, checking names, shapes and dtypes first; weights
    saved under an old name (renames: old -> new) load under their new one."""
    verify_manifest(run_dir, (MODEL_FILE,))
    path = run_dir / MODEL_FILE
    expected = model.state_dict()
    check_weights_fit(path, expected, renames)
    loaded = renamed(read_safetensors(path), renames)
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
    _check_state(state, run_dir / STATE_JSON)
    for name, opt in optimizers.items():
        if name not in state["optimizers"]:
            raise VaelabError(f"{run_dir / STATE_JSON} has no optimizer state for {name!r}")
        load_optimizer(name, opt, tensors, state["optimizers"][name])
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    _check_rng(rng, run_dir / STATE_FILE)
    return state, rng


def _check_rng(rng: dict[str, torch.Tensor], path: Path) -> None:
    """The generator states a resume restores: bytes, with the CPU generator's at its size."""
    missing = [f"rng.{key}" for key in RNG_STATES if key not in rng]
    if missing:
        raise VaelabError(f"{path} has no {' or '.join(missing)}: no random state to resume from")
    for key, value in rng.items():
        if value.dtype != torch.uint8 or value.ndim != 1:  # a generator's state is bytes
            raise VaelabError(
                f"{path}: rng.{key} is {value.dtype} {tuple(value.shape)}, "
                "expected a uint8 vector (a random generator's state)"
            )
    cpu = torch.get_rng_state().shape
    if rng["torch"].shape != cpu:
        raise VaelabError(f"{path}: rng.torch has {len(rng['torch'])} bytes, expected {cpu[0]}")


def _check_state(state: Any, path: Path) -> None:
    """train_state.json has the counters, history and optimizer tables a resume reads."""
    if not isinstance(state, dict):
        raise VaelabError(f"{path} holds {type(state).__name__}, expected a table of fields")
    for name in STATE_COUNTERS:
        value = state.get(name)
        if type(value) is not int or value < 0:
            raise VaelabError(f"{path} field {name!r} is {value!r}: expected an integer >= 0")
    # Fields newer than some runs (absent: the default); the epoch's factor may also be null.
    for name, default in (("seconds", 0.0), ("epoch_lr_factor", None)):
        value = state.get(name, default)
        if value is not default and (type(value) not in (int, float) or not 0 <= value < math.inf):
            raise VaelabError(f"{path} field {name!r} is {value!r}: expected a number >= 0")
    history = state.get("history", [])
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise VaelabError(f"{path} field 'history' is not a list of per-epoch records")
    optimizers = state.get("optimizers")
    if not isinstance(optimizers, dict) or not all(
        isinstance(v, dict) for v in optimizers.values()
    ):
        raise VaelabError(f"{path} field 'optimizers' is not a table of optimizer states")
