"""One training loop for every model.

For each batch the trainer runs the model's phases in order (one Adam per phase) and knows no
model by name. Data stays in memory as uint8 and is binarized per batch; the epoch's order and
the batch's binarization come from seeds derived from (seed, epoch), and every RNG state is
checkpointed, so a resumed run continues bit for bit where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from vaelab.data import ImageData, binarize, binarize_fixed, epoch_batches, load_dataset
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_text
from vaelab.models import Batch, Model, StepContext, build_model
from vaelab.training import checkpoint
from vaelab.training.events import EventWriter
from vaelab.training.run import CONFIG_FILE, RunConfig, read_config, write_config
from vaelab.training.schedules import derived_seed, kl_warmup, lr_factor

METRICS_FILE = "metrics.jsonl"
PERM, BINARIZE = 0, 1  # purposes of derived seeds


def make_adam(params: list, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters per step; measured faster on
    CPU by `vaelab bench`) where every parameter is a float tensor it supports."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused)


class TrainingDiverged(VaelabError):
    """Too many steps in a row had a non-finite loss or gradient."""


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps (batches) so far
    step_in_epoch: int = 0
    bad_steps: int = 0  # non-finite steps in a row
    skipped_steps: int = 0  # non-finite steps in all
    history: list | None = None

    def to_json(self) -> dict:
        return {**self.__dict__, "history": self.history or []}


def load_run_data(config: RunConfig) -> ImageData:
    data = load_dataset(config.data.dataset, config.data.data_dir)
    shape = tuple(config.model_config.image_shape)
    if data.image_shape != shape:
        raise VaelabError(
            f"dataset {config.data.dataset} has images of shape {data.image_shape}, "
            f"the model expects {shape}"
        )
    return data


class Trainer:
    """Trains `model` on `data` into `run_dir`; `fit` returns when done or at `max_steps`."""

    def __init__(
        self, run_dir: Path, config: RunConfig, data: ImageData, model: Model, quiet: bool = False
    ):
        self.run_dir, self.config, self.quiet = run_dir, config, quiet
        self.device = torch.device(config.train.device)
        self.model = model.to(self.device)
        self.phases = model.phases()
        self.optimizers = {
            p.name: make_adam(p.parameters, config.train.lr * p.lr_scale) for p in self.phases
        }
        self.binarization = config.data.resolved_binarization(config.model_config.likelihood)
        self.train_x = data.train_images.to(self.device)
        self.train_y = None if data.train_labels is None else data.train_labels.to(self.device)
        self.test_x = binarize_fixed(data.test_images, self.binarization, config.data.test_seed).to(
            self.device
        )
        self.test_y = None if data.test_labels is None else data.test_labels.to(self.device)
        self.class_names = data.class_names
        self.state = TrainState(history=[])
        self.bin_gen = torch.Generator(self.device)

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.train_x) // self.config.train.batch_size)

    # -- checkpoints -------------------------------------------------------------------------
    def rng_state(self) -> dict[str, torch.Tensor]:
        rng = {"torch": torch.get_rng_state(), "binarize": self.bin_gen.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def save(self) -> None:
        checkpoint.save_checkpoint(
            self.run_dir, self.model, self.optimizers, self.rng_state(), self.state.to_json()
        )

    def restore(self) -> None:
        checkpoint.load_weights(self.run_dir, self.model)
        saved, rng = checkpoint.load_train_state(self.run_dir, self.optimizers)
        fields = TrainState.__dataclass_fields__
        self.state = TrainState(**{k: v for k, v in saved.items() if k in fields})
        torch.set_rng_state(rng["torch"])
        self.bin_gen.set_state(rng["binarize"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # -- one step ----------------------------------------------------------------------------
    def train_step(self, batch: Batch, ctx: StepContext, sums: dict, counts: dict) -> bool:
        """Run every phase on the batch; a phase with a non-finite loss or gradient is skipped."""
        all_ok = True
        for phase in self.phases:
            opt = self.optimizers[phase.name]
            opt.zero_grad(set_to_none=True)
            out = self.model.loss(phase.name, batch, ctx)
            out.loss.backward()
            grads = [p.grad for p in phase.parameters if p.grad is not None]
            clip = self.config.train.grad_clip
            norm = (
                torch.nn.utils.clip_grad_norm_(phase.parameters, clip)
                if clip
                else torch.nn.utils.get_total_norm(grads)
            )
            if not torch.isfinite(out.loss.detach() + norm):  # the step's one host sync
                all_ok = False
                continue
            opt.step()
            for key, value in out.metrics.items():  # names are unique across phases
                sums[key] = sums.get(key, 0.0) + value * len(batch.x)
                counts[key] = counts.get(key, 0) + len(batch.x)
        return all_ok

    def note_step(self, ok: bool) -> None:
        s = self.state
        s.bad_steps = 0 if ok else s.bad_steps + 1
        s.skipped_steps += not ok
        if s.bad_steps >= self.config.train.max_bad_steps:
            raise TrainingDiverged(
                f"training stopped at step {s.step}: {s.bad_steps} steps in a row had a "
                f"non-finite loss or gradient (try a lower --lr or --grad-clip); the last good "
                f"checkpoint in {self.run_dir} is kept"
            )

    # -- epochs ------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(derived_seed(self.config.train.seed, PERM, epoch))
        return [
            i.to(self.device)
            for i in epoch_batches(len(self.train_x), self.config.train.batch_size, gen)
        ]

    def set_learning_rates(self, epoch: int) -> None:
        factor = lr_factor(self.config.train.lr_schedule, epoch)
        for phase in self.phases:
            for group in self.optimizers[phase.name].param_groups:
                group["lr"] = self.config.train.lr * phase.lr_scale * factor

    def batch(self, idx: torch.Tensor) -> Batch:
        x = binarize(self.train_x[idx], self.binarization, self.bin_gen)
        return Batch(x, None if self.train_y is None else self.train_y[idx])

    def run_epoch(self, max_steps: int | None) -> dict | None:
        """Train one epoch (or up to max_steps); the epoch's record, or None if cut short."""
        s, cfg = self.state, self.config.train
        if s.step_in_epoch == 0:
            self.bin_gen.manual_seed(derived_seed(cfg.seed, BINARIZE, s.epoch))
        self.set_learning_rates(s.epoch)
        order = self.epoch_order(s.epoch)
        sums: dict[str, torch.Tensor] = {}  # on the device: read once, at the epoch's end
        counts: dict[str, int] = {}  # images behind each sum (skipped steps add none)
        seen, start = 0, time.perf_counter()
        bar = tqdm(
            total=len(order),
            initial=s.step_in_epoch,
            disable=self.quiet,
            leave=False,
            desc=f"epoch {s.epoch + 1}/{cfg.epochs}",
            unit="batch",
        )
        self.model.train()
        for idx in order[s.step_in_epoch :]:
            if max_steps is not None and s.step >= max_steps:
                bar.close()
                return None
            ctx = StepContext(s.step, s.epoch, kl_warmup(s.step, len(order), cfg.kl_warmup_epochs))
            ok = self.train_step(self.batch(idx), ctx, sums, counts)
            s.step, s.step_in_epoch, seen = s.step + 1, s.step_in_epoch + 1, seen + len(idx)
            self.note_step(ok)
            bar.update()
        bar.close()
        seconds = time.perf_counter() - start
        s.epoch, s.step_in_epoch = s.epoch + 1, 0
        record = {"epoch": s.epoch, "step": s.step, "train/samples_per_s": seen / seconds}
        record.update({f"train/{k}": float(v) / counts[k] for k, v in sums.items()})
        record.update({f"test/{k}": v for k, v in self.evaluate().items()})
        return record

    @torch.no_grad()
    def evaluate(self, batch_size: int = 1000) -> dict[str, float]:
        """Test metrics over the test set: the same noise every epoch, and none of the
        training RNG stream is used, so evaluating never changes what training does."""
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config.data.test_seed)
            for i in range(0, len(self.test_x), batch_size):
                y = None if self.test_y is None else self.test_y[i : i + batch_size]
                batch = Batch(self.test_x[i : i + batch_size], y)
                for key, value in self.model.evaluate(batch).items():
                    sums[key] = sums.get(key, 0.0) + value * len(batch.x)
        self.model.train()
        return {k: float(v) / len(self.test_x) for k, v in sums.items()}

    def log_epoch(self, record: dict, events: EventWriter) -> None:
        self.state.history.append(record)
        lines = "".join(json.dumps(r) + "\n" for r in self.state.history)
        atomic_write_text(self.run_dir / METRICS_FILE, lines)
        for key, value in record.items():
            if "/" in key:
                events.add_scalar(key, value, record["step"])
        events.flush()
        if not self.quiet:
            shown = {k: v for k, v in record.items() if k.endswith("/loss")}
            text = "  ".join(f"{k} {v:.2f}" for k, v in shown.items())
            tqdm.write(
                f"epoch {record['epoch']}/{self.config.train.epochs}  {text}  "
                f"({record['train/samples_per_s']:.0f} images/s)"
            )

    def fit(self, max_steps: int | None = None) -> TrainState:
        """Train until config.train.epochs are done or `max_steps` steps in all; checkpoint."""
        # purge_step: TensorBoard drops events a killed run logged after this checkpoint.
        with EventWriter(self.run_dir / "events", purge_step=self.state.step or None) as events:
            while self.state.epoch < self.config.train.epochs:
                record = self.run_epoch(max_steps)
                if record is not None:
                    self.log_epoch(record, events)
                self.save()
                if record is None:
                    break
        return self.state


def train(
    config: RunConfig,
    out: str | Path,
    *,
    max_steps: int | None = None,
    quiet: bool = False,
    data: ImageData | None = None,
) -> Trainer:
    """Start a new run in `out` (which must not hold one) and train it."""
    run_dir = Path(out)
    if (run_dir / CONFIG_FILE).exists():
        raise VaelabError(
            f"{run_dir} already holds a run: pass --resume {run_dir} to continue "
            "it, or choose another --out"
        )
    data = data or load_run_data(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.train.seed)  # initial weights and the reparameterization noise
    model = build_model(config.model, config.model_config)
    write_config(
        run_dir,
        config,
        {
            "dataset_source": data.source,
            "split": data.split,
            "binarization": config.data.resolved_binarization(config.model_config.likelihood),
        },
    )
    trainer = Trainer(run_dir, config, data, model, quiet)
    trainer.fit(max_steps)
    return trainer


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    quiet: bool = False,
    data: ImageData | None = None,
) -> Trainer:
    """Continue a run exactly where its last checkpoint stopped (optionally to more epochs)."""
    run_dir = Path(run_dir)
    config, raw = read_config(run_dir)
    if epochs is not None and epochs != config.train.epochs:
        config.train.epochs = epochs
        config.train.validate()
        facts = {k: v for k, v in raw.items() if k not in config.to_json()}
        facts.pop("versions", None)
        write_config(run_dir, config, facts)
    data = data or load_run_data(config)
    trainer = Trainer(run_dir, config, data, build_model(config.model, config.model_config), quiet)
    trainer.restore()
    trainer.fit(max_steps)
    return trainer
