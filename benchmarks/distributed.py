"""Data-parallel training on the CPU: torchrun 2 processes x 1 thread against 1 process x 2 threads.

    python benchmarks/distributed.py --repeats 5 --epochs 3

Both sides train the same MLP VAE (784-400-20, Bernoulli likelihood, dynamic binarization, global
batch 128, Adam 1e-3) on the same data through the `vaelab train` command, each run in its own
processes: (a) `OMP_NUM_THREADS=2 vaelab train ...`, (b) `OMP_NUM_THREADS=1 torchrun
--nproc-per-node 2 -m vaelab train ...`. Runs alternate a b a b so that drift on a shared
machine hits both; the ratio b / a is taken per pair, then its median. images/s is training
time only, read from the run's metrics.jsonl as `vaelab bench` does; the wall time of each
command (start-up, evaluation and writes included; torchrun adds an agent and one interpreter
per rank) is reported beside it. Writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from bench import cpu_model, run_child, run_speed, summary, vaelab_command
from vaelab.fileio import atomic_write_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(args: argparse.Namespace, seed: int, out: str) -> list[str]:
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    return ["train", "vae", "--dataset", args.dataset, *data, "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--seed", str(seed), "--out", out, "--quiet",
            "--no-report"]  # fmt: skip


def one_process(args: argparse.Namespace, seed: int, out: str) -> list[str]:
    return [*vaelab_command(), *train_args(args, seed, out)]


def two_ranks(args: argparse.Namespace, seed: int, out: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", "vaelab", *train_args(args, seed, out)]  # fmt: skip


def timed_run(command: Callable[[str], list[str]], threads: int) -> dict[str, float]:
    """Run command(OUT) with OMP_NUM_THREADS=threads; images/s from OUT's metrics, wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        argv = command(f"{tmp}/run")
        start = time.perf_counter()
        run_child(argv, env)
        wall = time.perf_counter() - start
        rows, images_per_s = run_speed(Path(f"{tmp}/run"))
    return {"images_per_s": images_per_s, "wall_s": wall, "test_loss": rows[-1]["test/loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs (default 5)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (default 128)")
    parser.add_argument("--dataset", default="mnist-sample")
    parser.add_argument("--data-dir", help="where the dataset's files are")
    parser.add_argument("--out", default="benchmarks/results/distributed.json")
    args = parser.parse_args()
    rows = []
    for i in range(args.repeats):
        single = timed_run(partial(one_process, args, i), threads=2)
        ranks = timed_run(partial(two_ranks, args, i), threads=1)
        ratio = ranks["images_per_s"] / single["images_per_s"]
        rows.append({"pair": i, "one_process_2_threads": single, "torchrun_2x1": ranks,
                     "ratio": ratio})  # fmt: skip
        print(f"pair {i + 1}/{args.repeats}: 1 process x 2 threads "
              f"{single['images_per_s']:7.0f} images/s ({single['wall_s']:.1f} s wall)   "
              f"torchrun 2 x 1 thread {ranks['images_per_s']:7.0f} images/s "
              f"({ranks['wall_s']:.1f} s wall)   ratio {ratio:.2f}", flush=True)  # fmt: skip
    result = {
        "model": "MLP VAE 784-400-20, global batch 128, Adam 1e-3, dynamic binarization",
        "dataset": args.dataset, "epochs_per_run": args.epochs, "repeats": args.repeats,
        "one_process_2_threads_images_per_s": summary(
            [r["one_process_2_threads"]["images_per_s"] for r in rows]),
        "torchrun_2x1_images_per_s": summary([r["torchrun_2x1"]["images_per_s"] for r in rows]),
        "one_process_2_threads_wall_s": summary(
            [r["one_process_2_threads"]["wall_s"] for r in rows]),
        "torchrun_2x1_wall_s": summary([r["torchrun_2x1"]["wall_s"] for r in rows]),
        "ratio": summary([r["ratio"] for r in rows]),
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "platform": platform.platform(), "processor": cpu_model()},
        "rows": rows,
    }  # fmt: skip
    atomic_write_json(Path(args.out), result)
    print(f"ratio (torchrun 2 x 1 thread / 1 process x 2 threads, images/s): "
          f"{result['ratio']['median']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
