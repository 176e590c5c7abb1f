"""What training through public APIs only costs: the two private tricks the trainer dropped,
measured against what replaced them, interleaved.

    python benchmarks/public_api.py            (about 2 minutes)

The tricks (DESIGN.md: speed through public, maintained APIs only):
- LeanAdam: Adam stepped by calling torch's fused kernel itself (torch._fused_adam_), skipping
  `Adam.step`'s Python regrouping; now `torch.optim.Adam(fused=True)`.
- mallopt: glibc's mmap and trim thresholds raised through ctypes at the start of every command
  (16 and 64 MB), so a small network's ~1 MB activations stay in the heap; now glibc's defaults.
Both are copied here as the baseline being measured and nowhere else.

Each variant trains vaelab's MLP VAE (784-400-20, batch 128, Bernoulli likelihood, dynamic
binarization, the shipped MNIST sample) through the trainer's own step (`Trainer.train_step`)
in a process of its own (mallopt cannot be undone inside one), kept warm: the variants (old:
both tricks; each with one removed; public: neither) take turns of `--seconds`, in rounds whose
order rotates, so that what else runs on the machine weighs on all four alike. A removal's
cost is the median over the rounds of its images/s ratio to the old path in the same round.
The Adam update alone (LeanAdam against torch's, on the same weights) is timed A B A B in this
process beside it.
Writes benchmarks/results/public_api.json (or `--out`).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import vaelab
from bench import cpu_model, summary
from vaelab.data import load_dataset
from vaelab.fileio import atomic_write_json
from vaelab.models import StepContext, build_model, get_model_class
from vaelab.run import DataConfig, RunConfig, TrainConfig
from vaelab.training.trainer import Trainer

VARIANTS = {  # name: (LeanAdam, mallopt)
    "old": (True, True),
    "public_adam": (False, True),
    "no_mallopt": (True, False),
    "public": (False, False),
}
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def tune_allocator() -> bool:
    """The removed trick: raise glibc's mmap and trim thresholds (False where not glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_MMAP_THRESHOLD, 16 << 20) == 1 and mallopt(M_TRIM_THRESHOLD, 64 << 20) == 1


class LeanAdam(torch.optim.Adam):
    """The removed trick, as the trainer had it: torch's fused Adam, stepped by one call of its
    kernel per parameter group where the group is the plain case, else by `Adam.step`."""

    def step(self, closure=None):
        if closure is not None or not hasattr(torch, "_fused_adam_"):
            return super().step(closure)
        plans = [self._plan(group) for group in self.param_groups]
        if not all(plans):
            return super().step(closure)
        with torch.no_grad():
            for group, (params, states) in zip(self.param_groups, plans, strict=True):
                steps = [s["step"] for s in states]
                torch._foreach_add_(steps, 1)
                beta1, beta2 = group["betas"]
                torch._fused_adam_(
                    params, [p.grad for p in params], [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False,
                    lr=group["lr"], beta1=beta1, beta2=beta2,
                    weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                )  # fmt: skip
        return None

    def _plan(self, group: dict):
        """(params, states) where the group takes the one-call path, else None."""
        flags = ("amsgrad", "maximize", "capturable", "differentiable", "decoupled_weight_decay")
        if not group["fused"] or any(group.get(k) for k in flags):
            return None
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None):
            return None
        params = group["params"]
        states = [self.state.get(p) for p in params]
        if any(p.grad is None or p.grad.is_sparse or not s
               for p, s in zip(params, states, strict=True)):  # fmt: skip
            return None  # a missing gradient, or the first step (Adam creates the state)
        if torch.is_tensor(group["lr"]) or len({(p.device, p.dtype) for p in params}) != 1:
            return None
        return params, states


def make_trainer(run_dir: Path, seed: int) -> Trainer:
    """The MLP VAE of `vaelab bench` (784-400-20, batch 128) on the shipped sample."""
    config = RunConfig(model="vae", model_config=get_model_class("vae").config_class(),
                       data=DataConfig(dataset="mnist-sample"),
                       train=TrainConfig(batch_size=128, seed=seed))  # fmt: skip
    torch.manual_seed(seed)
    model = build_model(config.model, config.model_config)
    return Trainer(run_dir, config, load_dataset("mnist-sample"), model, quiet=True)


def worker(variant: str, seed: int) -> None:
    """A variant's trainer kept warm in its own process: for each "go SECONDS" line on stdin,
    the images/s of that many seconds of the trainer's steps, as a JSON line."""
    lean, mallopt = VARIANTS[variant]
    if mallopt and not tune_allocator():
        raise SystemExit("mallopt is not available here (not glibc)")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(Path(tmp), seed)
        if lean:
            trainer.optimizers = {p.name: LeanAdam(p.parameters, lr=1e-3, fused=True)
                                  for p in trainer.phases}  # fmt: skip
        order, sums, counts, steps = trainer.epoch_order(0), {}, {}, 0
        for idx in order[:30]:  # warm-up: the state exists, the allocator has settled
            trainer.train_step(trainer.batch(idx), StepContext(), sums, counts)
        print("ready", flush=True)
        for line in sys.stdin:
            seconds, n, start = float(line.split()[1]), 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                idx = order[(steps + n) % len(order)]
                trainer.train_step(trainer.batch(idx), StepContext(steps + n), sums, counts)
                n += 1
            steps += n
            images_per_s = n * 128 / (time.perf_counter() - start)
            print(json.dumps({"images_per_s": images_per_s}), flush=True)


def start_workers(args: argparse.Namespace) -> dict[str, subprocess.Popen]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    workers = {}
    for name in VARIANTS:  # one at a time: each warms up on an otherwise idle machine
        argv = [sys.executable, __file__, "--worker", name, "--seed", str(args.seed)]
        workers[name] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, env=env)  # fmt: skip
        if workers[name].stdout.readline().strip() != "ready":
            raise SystemExit(f"the {name} worker did not start")
    return workers


def timed(worker: subprocess.Popen, seconds: float) -> float:
    worker.stdin.write(f"go {seconds}\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())["images_per_s"]


def adam_step_ms(pairs: int = 10, seconds: float = 0.25) -> dict[str, dict[str, float]]:
    """ms per Adam update of the MLP VAE's weights: LeanAdam and torch's fused Adam, A B A B."""
    torch.manual_seed(0)
    model = build_model("vae", get_model_class("vae").config_class())
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.randn_like(p) for p in params]
    optimizers = {"lean": LeanAdam(params, lr=1e-3, fused=True),
                  "public": torch.optim.Adam(params, lr=1e-3, fused=True)}  # fmt: skip
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    for opt in optimizers.values():
        for _ in range(20):
            opt.step()
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(pairs):
        for name, opt in optimizers.items():
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                opt.step()
                n += 1
            times[name].append(1e3 * (time.perf_counter() - start) / n)
    ratios = [p / lean for p, lean in zip(times["public"], times["lean"], strict=True)]
    return {**{name: summary(v) for name, v in times.items()}, "ratio_public_lean": summary(ratios)}


def main() -> None:
    vaelab.flush_denormals()  # as `vaelab train` does, so denormals do not weigh on either side
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="rounds of the 4 variants")
    parser.add_argument("--seconds", type=float, default=0.4, help="one variant's turn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS (default: torch's choice)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="benchmarks/results/public_api.json")
    args = parser.parse_args()
    if args.threads:  # this process too: the Adam update's timing
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args.worker, args.seed)
        return
    names, rows, workers = list(VARIANTS), [], start_workers(args)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        row = {name: timed(workers[name], args.seconds) for name in order}
        rows.append({"round": r, "order": order, **row})
        if (r + 1) % 10 == 0:
            speeds = "  ".join(f"{n} {row[n]:.0f}" for n in names)
            print(f"round {r + 1}/{args.rounds}: {speeds} images/s", flush=True)
    for w in workers.values():
        w.stdin.close()
        w.wait()
    ratios = {f"{n}/old": summary([row[n] / row["old"] for row in rows]) for n in names[1:]}
    result = {
        "date": datetime.date.today().isoformat(),
        "command": "python " + " ".join(sys.argv),
        "seed": args.seed,
        "protocol": "4 variants, each a warm trainer in its own process, take turns of "
        f"{args.seconds} s in rounds whose order rotates; ratios per round to `old`, then their "
        "median; the Adam update alone A B A B in one process",
        "model": "MLP VAE 784-400-20, batch 128, Bernoulli, dynamic binarization, mnist-sample",
        "variants": {n: {"lean_adam": a, "mallopt": m} for n, (a, m) in VARIANTS.items()},
        "seconds_per_turn": args.seconds, "rounds": args.rounds,
        "images_per_s": {n: summary([row[n] for row in rows]) for n in names},
        "ratio": ratios,
        "adam_step_ms": adam_step_ms(),
        "machine": {"processor": cpu_model(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "platform": platform.platform(), "load_average_at_end": os.getloadavg()},
        "rows": rows,
    }  # fmt: skip
    atomic_write_json(Path(args.out), result)
    for name, ratio in ratios.items():
        print(f"{name}: {ratio['median']:.3f} (median; {ratio['min']:.3f}-{ratio['max']:.3f})")
    adam = result["adam_step_ms"]
    print(f"Adam update: LeanAdam {adam['lean']['median']:.3f} ms, torch.optim.Adam(fused=True) "
          f"{adam['public']['median']:.3f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
