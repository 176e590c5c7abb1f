"""One training loop for every model.

For each batch the trainer runs the model's phases in order (one Adam per phase) and knows no
model by name. Data stays in memory as uint8 and is binarized per batch; the epoch's order and
the batch's binarization come from seeds derived from (seed, epoch), and every RNG state is
checkpointed, so a resumed run continues bit for bit where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from vaelab.data import ImageData, binarize, binarize_fixed, epoch_batches
from vaelab.errors import VaelabError
from vaelab.models import Batch, Model, StepContext, build_model
from vaelab.run import (
    CONFIG_FILE,
    RunConfig,
    dataset_facts,
    read_config,
    write_config,
    write_history,
)
from vaelab.training import checkpoint, distributed
from vaelab.training.events import log_scalars, scalar_writer
from vaelab.training.runtime import flush_denormals
from vaelab.training.schedules import (
    decay_factor,
    derived_seed,
    kl_warmup,
    lr_factor,
    training_progress,
)
from vaelab.training.threads import ThreadGovernor

clock = time.monotonic  # what --time-budget counts (tests replace it)
PERM, BINARIZE, NOISE = 0, 1, 2  # purposes of derived seeds


def make_adam(params: list, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters per step; measured faster on
    CPU by `vaelab bench`) where every parameter is a float tensor it supports."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused)


def all_finite(loss: torch.Tensor, grads: list[torch.Tensor]) -> bool:
    """Whether the loss and every gradient element are finite: one sum per gradient (an inf or
    NaN anywhere makes the total non-finite; a sum overflows no sooner than the norm would)."""
    total = loss.float() + (torch.stack([g.sum() for g in grads]).sum() if grads else 0)
    return bool(torch.isfinite(total))


@contextlib.contextmanager
def determinism(enabled: bool):
    """With `enabled`: torch's deterministic algorithms (an op without one raises instead of
    varying), cuDNN without autotuning, and the cuBLAS workspace setting that makes its matmuls
    repeatable; the previous settings come back afterwards. Seeds come from the run's seed
    either way (weights, noise, order and binarization: see the module docstring)."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
              os.environ.get("CUBLAS_WORKSPACE_CONFIG"))  # fmt: skip
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
        if before[2] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


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
    best_valid: float | None = None  # the lowest validation loss so far (best/ holds its weights)
    best_epoch: int = 0
    stopped: str | None = None  # why training ended before its epochs: early stopping, budget
    seconds: float = 0.0  # training time so far, over every resume (what --time-budget counts)
    epoch_lr_factor: float | None = None  # this epoch's factor on --lr (schedule and decay)

    def to_json(self) -> dict:
        return {**self.__dict__, "history": self.history or []}


def load_run_data(config: RunConfig) -> ImageData:
    data = config.data.load()
    shape = tuple(config.model_config.image_shape)
    if data.image_shape != shape:
        raise VaelabError(
            f"dataset {config.data.dataset} has images of shape {data.image_shape}, "
            f"the model expects {shape}"
        )
    return data


class Trainer:
    """Trains `model` on `data` into `run_dir`; `fit` returns when done or at `max_steps`.

    Under torchrun every rank runs a Trainer; `dist` (training/distributed.py) shards the
    batches, averages the gradients and sums the metrics, and only rank 0 writes."""

    def __init__(
        self,
        run_dir: Path,
        config: RunConfig,
        data: ImageData,
        model: Model,
        quiet: bool = False,
        dist: distributed.Single | None = None,
    ):
        self.dist = dist or distributed.current()
        self.run_dir, self.config = run_dir, config
        self.quiet = quiet or not self.dist.is_main
        if config.train.batch_size < self.dist.world_size:
            raise VaelabError(
                f"batch_size is {config.train.batch_size}: the global batch needs at least one "
                f"image for each of the {self.dist.world_size} ranks"
            )
        self.device = self.dist.device(config.train.device)
        gpu = self.device.type == "cuda"
        # Before Ampere (compute capability 8.0) a GPU only emulates bfloat16: slower than fp32.
        if (
            config.train.precision == "bf16"
            and gpu
            and torch.cuda.get_device_capability(self.device) < (8, 0)
        ):
            raise VaelabError(
                f"precision is 'bf16' but {torch.cuda.get_device_name(self.device)} has no "
                "bfloat16 matmuls (compute capability 8.0 or later): use precision fp32"
            )
        self.model = model.to(self.device)
        self.phases = model.phases()
        self.optimizers = {
            p.name: make_adam(p.parameters, config.train.lr * p.lr_scale) for p in self.phases
        }
        self.binarization = config.data.resolved_binarization(config.model_config.likelihood)
        train_x, train_y = data.train_images, data.train_labels
        n_valid = config.data.validation
        if n_valid >= len(train_x):
            raise VaelabError(
                f"validation is {n_valid}: the training set has only {len(train_x)} images"
            )
        if config.train.early_stopping and not n_valid:
            raise VaelabError("early_stopping needs a validation set: set validation (images)")
        self.valid_x = self.valid_y = None
        if n_valid:  # the last N training images, binarized once like the test set
            valid = train_x[len(train_x) - n_valid :]
            self.valid_x = binarize_fixed(valid, self.binarization, config.data.test_seed)
            self.valid_x = self.valid_x.to(self.device)
            if train_y is not None:
                self.valid_y = train_y[len(train_x) - n_valid :].to(self.device)
            train_x = train_x[: len(train_x) - n_valid]
            train_y = None if train_y is None else train_y[: len(train_y) - n_valid]
        self.train_x = train_x.to(self.device)
        self.train_y = None if train_y is None else train_y.to(self.device)
        self.test_x = binarize_fixed(data.test_images, self.binarization, config.data.test_seed).to(
            self.device
        )
        self.test_y = None if data.test_labels is None else data.test_labels.to(self.device)
        self.class_names = data.class_names
        self.state = TrainState(history=[])
        self.bin_gen = torch.Generator(self.device)
        self.epoch_seconds = 0.0  # the last epoch's time by rank 0's clock (0: none yet)
        # Sets torch's threads from the machine's load while training (training/threads.py);
        # None: the process's thread count as it is (library use, tests, torchrun ranks).
        self.governor: ThreadGovernor | None = None

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
        rng = self.dist.gather_rng(self.rng_state())  # every rank's: each has its own noise
        if self.dist.is_main:
            checkpoint.save_checkpoint(
                self.run_dir, self.model, self.optimizers, rng, self.state.to_json()
            )

    def restore(self) -> None:
        checkpoint.load_weights(self.run_dir, self.model, self.model.renamed_weights)
        saved, rng = checkpoint.load_train_state(self.run_dir, self.optimizers)
        fields = TrainState.__dataclass_fields__
        self.state = TrainState(**{k: v for k, v in saved.items() if k in fields})
        rng = self.dist.own_rng(rng)
        if rng is None:  # a rank the run did not have before: fresh noise of its own
            seed, step = self.config.train.seed, self.state.step
            torch.manual_seed(self.dist.seed(seed, NOISE, step))
            self.bin_gen.manual_seed(self.dist.seed(seed, BINARIZE, step))
            return
        torch.set_rng_state(rng["torch"])
        self.bin_gen.set_state(rng["binarize"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    # -- one step ----------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """The training forward pass's precision: bfloat16 autocast under `precision = "bf16"`
        (its backward follows the same casts), else nothing. The densities upcast the nets'
        outputs to float32 (distributions.full_precision); evaluation never runs under it."""
        if self.config.train.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def train_step(
        self, batch: Batch, ctx: StepContext, sums: dict, counts: dict, share: float = 1.0
    ) -> bool:
        """Run every phase on the batch; a phase with a non-finite loss or gradient is skipped.

        `share`: this rank's part of the global batch (its gradient's weight; 0: a stand-in)."""
        all_ok, images = True, len(batch.x) if share else 0
        for phase in self.phases:
            opt = self.optimizers[phase.name]
            opt.zero_grad(set_to_none=True)
            with self.autocast():
                out = self.model.loss(phase.name, batch, ctx)
            out.loss.backward()
            loss = self.dist.average_gradients(phase.parameters, out.loss.detach(), share)
            grads = [p.grad for p in phase.parameters if p.grad is not None]
            clip = self.config.train.grad_clip
            if clip:  # clipping computes the norm anyway
                grads = [torch.nn.utils.clip_grad_norm_(phase.parameters, clip)]
            if not all_finite(loss, grads):  # the step's one host sync
                all_ok = False
                continue
            opt.step()
            for key, value in out.metrics.items():  # names are unique across phases
                sums[key] = sums.get(key, 0.0) + (value * images if images else 0.0)
                counts[key] = counts.get(key, 0) + images
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

    def set_learning_rates(self, epoch: int) -> float:
        """Set every phase's learning rate for `epoch`; the factor on --lr it applies.

        The decay takes the progress at the epoch's middle (under a time budget, the time spent
        plus half the last epoch's). An epoch keeps the factor it started with, also when
        resumed from a checkpoint inside it."""
        cfg, s = self.config.train, self.state
        if s.step_in_epoch == 0 or s.epoch_lr_factor is None:
            seconds = s.seconds + self.epoch_seconds / 2
            progress = training_progress(epoch + 0.5, cfg.epochs, seconds, cfg.budget_seconds())
            s.epoch_lr_factor = lr_factor(cfg.lr_schedule, epoch) * decay_factor(
                progress, cfg.lr_decay
            )
        factor = s.epoch_lr_factor
        for phase in self.phases:
            for group in self.optimizers[phase.name].param_groups:
                group["lr"] = cfg.lr * phase.lr_scale * factor
        return factor

    def batch(self, idx: torch.Tensor) -> Batch:
        # index_select, not train_x[idx]: the same rows, 7x faster on the CPU (5.6 vs 40 us for
        # 128 images; advanced indexing takes a general path).
        x = binarize(self.train_x.index_select(0, idx), self.binarization, self.bin_gen)
        return Batch(x, None if self.train_y is None else self.train_y.index_select(0, idx))

    def run_epoch(self, max_steps: int | None) -> dict | None:
        """Train one epoch (or up to max_steps); the epoch's record, or None if cut short."""
        s, cfg = self.state, self.config.train
        if s.step_in_epoch == 0:
            self.bin_gen.manual_seed(self.dist.seed(cfg.seed, BINARIZE, s.epoch))
        lr = cfg.lr * self.set_learning_rates(s.epoch)
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
            mine, share = self.dist.shard(idx)  # this rank's part of the global batch
            ok = self.train_step(self.batch(mine), ctx, sums, counts, share)
            if self.governor is not None:
                self.governor.step()
            s.step, s.step_in_epoch, seen = s.step + 1, s.step_in_epoch + 1, seen + len(idx)
            self.note_step(ok)
            bar.update()
        bar.close()
        seconds = time.perf_counter() - start
        s.epoch, s.step_in_epoch = s.epoch + 1, 0
        sums, counts = self.dist.sum_metrics(sums, counts)
        record = {"epoch": s.epoch, "step": s.step, "train/samples_per_s": seen / seconds,
                  "train/threads": torch.get_num_threads(),
                  "train/lr": lr}  # fmt: skip
        record.update({f"train/{k}": float(v) / counts[k] for k, v in sums.items()})
        if self.dist.is_main:  # the others go on to the checkpoint and wait there
            if self.valid_x is not None:
                valid = self.evaluate(x=self.valid_x, y=self.valid_y)
                record.update({f"valid/{k}": v for k, v in valid.items()})
            every = cfg.test_every
            if every and s.epoch % every == 0:
                record.update(self.test_metrics())
        return record

    def test_metrics(self) -> dict[str, float]:
        return {f"test/{k}": v for k, v in self.evaluate().items()}

    @torch.no_grad()
    def evaluate(self, batch_size: int = 1000, x=None, y=None) -> dict[str, float]:
        """Metrics over the test set (or x, y): the same noise every epoch, and none of the
        training RNG stream is used, so evaluating never changes what training does."""
        if x is None:
            x, y = self.test_x, self.test_y
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config.data.test_seed)
            for i in range(0, len(x), batch_size):
                batch = Batch(x[i : i + batch_size], None if y is None else y[i : i + batch_size])
                for key, value in self.model.evaluate(batch).items():
                    sums[key] = sums.get(key, 0.0) + value * len(batch.x)
        self.model.train()
        return {k: float(v) / len(x) for k, v in sums.items()}

    def log_epoch(self, record: dict, events) -> None:
        """The record into metrics.jsonl and `events` (a TensorBoard writer, or None)."""
        self.state.history.append(record)
        if not self.dist.is_main:
            return
        write_history(self.run_dir, self.state.history)
        if events is not None:
            log_scalars(events, record, record["step"])
        if not self.quiet:
            shown = {k: v for k, v in record.items() if k.endswith("/loss")}
            text = "  ".join(f"{k} {v:.2f}" for k, v in shown.items())
            tqdm.write(
                f"epoch {record['epoch']}/{self.config.train.epochs}  {text}  "
                f"({record['train/samples_per_s']:.0f} images/s)"
            )

    def fit(self, max_steps: int | None = None) -> TrainState:
        """Train until config.train.epochs are done or `max_steps` steps in all; checkpoint."""
        self.dist.broadcast_parameters(self.model)  # every rank starts from rank 0's weights
        # On resume TensorBoard drops the events a killed run logged after this checkpoint (at
        # later steps: the checkpoint's own epoch was logged before it was saved).
        step = self.state.step
        writer = (
            scalar_writer(self.run_dir / "events", purge_step=step + 1 if step else None)
            if self.dist.is_main
            else contextlib.nullcontext()
        )
        if self.governor is not None:
            self.governor.start()
        spent, start = self.state.seconds, clock()
        self.state.stopped = None  # a resumed run goes on (and may stop again)
        # runtime.py: why denormals flush, and the warning where torch's threads do not.
        with flush_denormals(), writer as events:
            while self.state.epoch < self.config.train.epochs:
                record = self.run_epoch(max_steps)
                # Rank 0's clock: every rank decays alike and stops after the same epoch.
                seconds = self.dist.from_main(spent + clock() - start)
                self.epoch_seconds, self.state.seconds = seconds - self.state.seconds, seconds
                if record is not None:
                    self.track_best(record)
                    self.check_stop()
                    last = self.state.stopped or self.state.epoch >= self.config.train.epochs
                    if last and self.dist.is_main and "test/loss" not in record:
                        record.update(self.test_metrics())  # --test-every: the last epoch's
                    self.log_epoch(record, events)
                self.save()
                if record is None or self.state.stopped:
                    break
        if self.state.stopped and not self.quiet:
            tqdm.write(f"stopped after epoch {self.state.epoch}: {self.state.stopped}")
        return self.state

    def check_budget(self) -> None:
        """Refuse to start a new epoch once the run has spent its time budget (on resume, before
        anything is written)."""
        cfg, s = self.config.train, self.state
        budget = cfg.budget_seconds()
        if budget is not None and s.seconds >= budget and s.step_in_epoch == 0:
            raise VaelabError(
                f"{self.run_dir} has trained {s.seconds:.0f} s, its whole time budget "
                f"{cfg.time_budget}: pass a larger --time-budget to go on"
            )

    def check_stop(self) -> None:
        """After an epoch: stop on the time budget, or where rank 0 stopped early (only rank 0
        has the validation loss), on every rank alike."""
        cfg, s = self.config.train, self.state
        budget = cfg.budget_seconds()
        if budget is not None and s.seconds >= budget:
            s.stopped = f"time budget {cfg.time_budget} spent"
        if self.dist.from_main(float(s.stopped is not None)) and s.stopped is None:
            s.stopped = "rank 0 stopped early (its validation loss did not improve)"

    def track_best(self, record: dict) -> None:
        """Keep the weights of the best validation loss in best/ (a run folder of its own),
        and stop early after `early_stopping` epochs without a better one."""
        s = self.state
        loss = record.get("valid/loss")
        if loss is None:
            return
        if s.best_valid is None or loss < s.best_valid:
            s.best_valid, s.best_epoch = loss, s.epoch
            if self.dist.is_main:
                checkpoint.save_best(self.run_dir, self.model, s.epoch, loss)
        patience = self.config.train.early_stopping
        if patience and s.epoch - s.best_epoch >= patience:
            s.stopped = (
                f"early stopping: no better validation loss in {patience} epochs "
                f"(best {s.best_valid:.2f} at epoch {s.best_epoch}, kept in {checkpoint.BEST_DIR}/)"
            )


def train(
    config: RunConfig,
    out: str | Path,
    *,
    max_steps: int | None = None,
    quiet: bool = False,
    data: ImageData | None = None,
    restart: bool = False,
    threads: ThreadGovernor | None = None,
) -> Trainer:
    """Start a new run in `out` (which must not hold one, unless `restart`: a run that ended
    before its first checkpoint starts again) and train it; `threads` sets torch's thread
    count from the machine's load while it trains (training/threads.py)."""
    dist = distributed.current()
    run_dir = Path(out)
    # torchrun restarted workers that failed before their run's first checkpoint: start again.
    elastic = distributed.elastic_restart()
    again = (restart or elastic) and not checkpoint.has_checkpoint(run_dir)
    if (run_dir / CONFIG_FILE).exists() and not again:
        raise VaelabError(
            f"{run_dir} already holds a run: pass --resume {run_dir} to continue "
            "it, or choose another --out"
        )
    with dist.main_first("loading the data"):  # its barrier: every rank has checked `out`
        data = data or load_run_data(config)
    torch.manual_seed(config.train.seed)  # initial weights and the reparameterization noise
    model = build_model(config.model, config.model_config)
    if dist.rank:  # the other ranks draw reparameterization noise of their own
        torch.manual_seed(dist.seed(config.train.seed, NOISE))
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(
            run_dir,
            config,
            {
                "dataset_source": data.source,
                "split": data.split,
                "binarization": config.data.resolved_binarization(config.model_config.likelihood),
                **dataset_facts(config.data),
            },
        )
    trainer = Trainer(run_dir, config, data, model, quiet, dist)
    trainer.governor = threads
    with determinism(config.train.deterministic):
        trainer.fit(max_steps)
    return trainer


def resume(
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    quiet: bool = False,
    data: ImageData | None = None,
    time_budget: str | None = None,
    threads: ThreadGovernor | None = None,
) -> Trainer:
    """Continue a run exactly where its last checkpoint stopped (optionally to more epochs or a
    larger time budget); a run killed before its first checkpoint starts again from its config."""
    dist = distributed.current()
    run_dir = Path(run_dir)
    config, raw = read_config(run_dir)
    changed = {"epochs": epochs, "time_budget": time_budget}
    changed = {k: v for k, v in changed.items() if v is not None and v != getattr(config.train, k)}
    for name, value in changed.items():
        setattr(config.train, name, value)
    config.train.validate()
    if not checkpoint.has_checkpoint(run_dir) and not (run_dir / checkpoint.COMMIT).exists():
        return train(config, run_dir, max_steps=max_steps, quiet=quiet, data=data, restart=True,
                     threads=threads)  # fmt: skip
    with dist.main_first("loading the data"):
        data = data or load_run_data(config)
    model = build_model(config.model, config.model_config)
    trainer = Trainer(run_dir, config, data, model, quiet, dist)
    trainer.governor = threads
    trainer.restore()
    trainer.check_budget()  # a refusal leaves the run folder as it was
    if changed and dist.is_main:
        facts = {k: v for k, v in raw.items() if k not in config.to_json()}
        facts.pop("versions", None)
        write_config(run_dir, config, facts)
    with determinism(config.train.deterministic):
        trainer.fit(max_steps)
    return trainer
