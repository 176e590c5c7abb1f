"""`vaelab bench`: vaelab's trainer against the standard PyTorch recipe, interleaved.

    python benchmarks/bench.py --quick       (or `vaelab bench --quick` from a source checkout)

Both train the same 784-400-20 MLP VAE (BCE on grayscale pixels, batch 128, Adam 1e-3) on the
same images, each in its own process as its users run it: the recipe (benchmarks/recipe.py, run
as a script) with the default environment, vaelab through its `vaelab train` entry point. Runs
alternate A B A B so drift on a shared machine hits both; the ratio is taken per pair, then its
median. The float32 matmul rate at the model's shapes is measured in the same run and gives the
machine's ceiling for this model: the images/s if a step cost only its matmuls. The Adam update
is timed too (the trainer's fused update, at this thread count, warm in the cache): a step of
only its matmuls and that update bounds what a loop keeping both can reach below the ceiling.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import vaelab
from vaelab.data import load_dataset, write_idx
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_json

RECIPE = Path(__file__).resolve().with_name("recipe.py")  # the baseline, run as a script
LAYERS = [(784, 400), (400, 40), (20, 400), (400, 784)]  # the MLP VAE's matmuls (in, out)
BATCH = 128


def flops_per_image(layers=LAYERS) -> int:
    """Forward (2 in out), weight gradients (2 in out) and input gradients (2 in out, except
    the first layer, whose input needs none) per image."""
    per_layer = [6 * i * o for i, o in layers]
    return sum(per_layer) - 2 * layers[0][0] * layers[0][1]


def matmul_rate(seconds: float = 1.0, layers=LAYERS, batch: int = BATCH) -> float:
    """float32 FLOP/s of one step's matmuls at the model's shapes, timed on this machine."""
    mats = [(torch.randn(batch, i), torch.randn(i, o), torch.randn(batch, o)) for i, o in layers]

    def step() -> None:
        for k, (x, w, g) in enumerate(mats):
            x @ w  # forward
            x.T @ g  # weight gradient
            if k:
                g @ w.T  # input gradient

    for _ in range(20):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n * batch * flops_per_image(layers) / (time.perf_counter() - start)


def adam_seconds(seconds: float = 0.5, layers=LAYERS) -> float:
    """Seconds per Adam update of the model's weights and biases, as the trainer makes it
    (one fused pass over parameters, gradients and both moments), timed on this machine."""
    from vaelab.training.trainer import make_adam

    params = [
        torch.nn.Parameter(torch.randn(*shape)) for i, o in layers for shape in ((o, i), (o,))
    ]
    for p in params:
        p.grad = torch.randn_like(p)
    adam = make_adam(params, 1e-3)
    for _ in range(20):
        adam.step()
    n, start = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - start < seconds:
        adam.step()
        n += 1
    return (time.perf_counter() - start) / n


def write_bench_data(dataset: str, data_dir: str | None, folder: Path, limit: int | None):
    """The dataset as plain IDX files under the standard names, for both contenders."""
    data = load_dataset(dataset, data_dir)
    train, test = data.train_images[:limit, 0].numpy(), data.test_images[:, 0].numpy()
    write_idx(folder / "train-images-idx3-ubyte", train)
    write_idx(folder / "train-labels-idx1-ubyte", data.train_labels[:limit].numpy().astype("u1"))
    write_idx(folder / "t10k-images-idx3-ubyte", test)
    write_idx(folder / "t10k-labels-idx1-ubyte", data.test_labels.numpy().astype("u1"))
    return len(train)


def run_child(argv: list[str], env: dict | None = None) -> tuple[str, float]:
    """Run a process to its end; its stdout and its own peak resident memory in MB."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True)  # fmt: skip
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise VaelabError(f"benchmark process failed ({proc.returncode}): {' '.join(argv)}")
    return out, usage.ru_maxrss / 1024


def run_recipe(folder: Path, epochs: int, seed: int) -> dict[str, float]:
    argv = [sys.executable, str(RECIPE), str(folder / "train-images-idx3-ubyte"), "-",
            str(folder / "t10k-images-idx3-ubyte"), str(epochs), str(seed)]  # fmt: skip
    out, peak = run_child(argv)
    row = json.loads(out.strip().splitlines()[-1])
    return {"images_per_s": row["images_per_s"], "test_loss": row["test_loss"], "peak_mb": peak}


def vaelab_command() -> list[str]:
    script = Path(sys.executable).with_name("vaelab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vaelab"]


def run_vaelab(folder: Path, epochs: int, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        argv = [*vaelab_command(), "train", "vae", "--dataset", f"idx:{folder}",
                "--binarization", "none", "--epochs", str(epochs), "--seed", str(seed),
                "--out", f"{tmp}/run", "--quiet", "--no-report"]  # fmt: skip
        _, peak = run_child(argv)
        rows, images_per_s = run_speed(Path(f"{tmp}/run"))
    return {"images_per_s": images_per_s, "test_loss": rows[-1]["test/loss"],
            "peak_mb": peak}  # fmt: skip


def run_speed(run_dir: Path) -> tuple[list[dict], float]:
    """A run's metrics.jsonl records and its training images/s over all its epochs (training
    time only: the per-image times of the epochs, summed)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(r["train/samples_per_s"] ** -1 for r in rows)  # per image, summed per epoch
    return rows, len(rows) / seconds


def cpu_model(info: Path = Path("/proc/cpuinfo")) -> str:
    """The processor's name as the kernel gives it (/proc/cpuinfo), else platform's guess:
    results from one machine are not comparable with another's."""
    fields: dict[str, str] = {}
    if info.exists():
        for line in info.read_text().split("\n\n")[0].splitlines():  # the first CPU's
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    # A virtual machine's name can be generic ("Intel(R) Xeon(R) Processor"): family and model
    # tell the generations apart.
    name, family, model = fields["model name"], fields.get("cpu family"), fields.get("model")
    return f"{name} (family {family}, model {model})" if model else name


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def bench(pairs: int = 5, epochs: int = 2, dataset: str = "fashion-mnist",
          data_dir: str | None = None, limit: int | None = None,
          say=print) -> dict[str, Any]:  # fmt: skip
    """Interleaved pairs recipe / vaelab; returns (and prints) the comparison."""
    rate, adam = matmul_rate(), adam_seconds()
    ceiling = rate / flops_per_image()
    bound = BATCH / (BATCH / ceiling + adam)  # a step of its matmuls and its Adam update only
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        n = write_bench_data(dataset, data_dir, Path(tmp), limit)
        for i in range(pairs):
            recipe, ours = run_recipe(Path(tmp), epochs, i), run_vaelab(Path(tmp), epochs, i)
            rows.append({"pair": i, "recipe": recipe, "vaelab": ours,
                         "ratio": ours["images_per_s"] / recipe["images_per_s"]})  # fmt: skip
            say(
                f"pair {i + 1}/{pairs}: recipe {recipe['images_per_s']:8.0f} images/s   "
                f"vaelab {ours['images_per_s']:8.0f} images/s   ratio {rows[-1]['ratio']:.2f}"
            )
    result = {
        "model": "MLP VAE 784-400-20, batch 128, Adam 1e-3, BCE on grayscale",
        "dataset": dataset, "train_images": n, "epochs_per_run": epochs, "pairs": pairs,
        "recipe_images_per_s": summary([r["recipe"]["images_per_s"] for r in rows]),
        "vaelab_images_per_s": summary([r["vaelab"]["images_per_s"] for r in rows]),
        "ratio": summary([r["ratio"] for r in rows]),
        "recipe_test_loss": summary([r["recipe"]["test_loss"] for r in rows]),
        "vaelab_test_loss": summary([r["vaelab"]["test_loss"] for r in rows]),
        "recipe_peak_mb": max(r["recipe"]["peak_mb"] for r in rows),
        "vaelab_peak_mb": max(r["vaelab"]["peak_mb"] for r in rows),
        "matmul_gflops": rate / 1e9, "flops_per_image": flops_per_image(),
        "ceiling_images_per_s": ceiling,
        "adam_ms_per_step": 1e3 * adam, "matmul_and_adam_images_per_s": bound,
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "platform": platform.platform(),
                    "processor": cpu_model()},
        "rows": rows,
    }  # fmt: skip
    result["fraction_of_ceiling"] = result["vaelab_images_per_s"]["median"] / ceiling
    return result


def report(result: dict[str, Any], say=print) -> None:
    r = result
    say(
        f"recipe  {r['recipe_images_per_s']['median']:8.0f} images/s (median; "
        f"{r['recipe_images_per_s']['min']:.0f}-{r['recipe_images_per_s']['max']:.0f}), "
        f"test loss {r['recipe_test_loss']['median']:.2f}, peak {r['recipe_peak_mb']:.0f} MB"
    )
    say(
        f"vaelab  {r['vaelab_images_per_s']['median']:8.0f} images/s (median; "
        f"{r['vaelab_images_per_s']['min']:.0f}-{r['vaelab_images_per_s']['max']:.0f}), "
        f"test loss {r['vaelab_test_loss']['median']:.2f}, peak {r['vaelab_peak_mb']:.0f} MB"
    )
    say(
        f"float32 matmul {r['matmul_gflops']:.0f} GFLOP/s at these shapes; "
        f"{r['flops_per_image'] / 1e6:.2f} MFLOP per image; ceiling "
        f"{r['ceiling_images_per_s']:.0f} images/s; vaelab reaches "
        f"{100 * r['fraction_of_ceiling']:.0f} % of it"
    )
    if "matmul_and_adam_images_per_s" in r:  # results saved before it was measured lack it
        say(
            f"its matmuls and its Adam update ({r['adam_ms_per_step']:.2f} ms a step) alone "
            f"would give {r['matmul_and_adam_images_per_s']:.0f} images/s, "
            f"{100 * r['matmul_and_adam_images_per_s'] / r['ceiling_images_per_s']:.0f} % of "
            "the ceiling"
        )
    say(f"ratio: {r['ratio']['median']:.2f}")


def save(result: dict[str, Any], path: str | Path) -> None:
    atomic_write_json(Path(path), result)


QUICK = {"pairs": 3, "epochs": 1, "limit": 20000}  # --quick: short pairs on the shipped sample


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 short pairs on the shipped sample")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved pairs (default 5)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--dataset", help="default fashion-mnist (mnist-sample with --quick)")
    parser.add_argument("--data-dir", help="where the dataset's files are")
    parser.add_argument("--out", default="benchmarks/results/bench-mlp-vae.json")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.epochs < 1:
        parser.error("--pairs and --epochs must be at least 1")
    if args.quick:
        args.pairs, args.epochs = QUICK["pairs"], QUICK["epochs"]
    args.dataset = args.dataset or ("mnist-sample" if args.quick else "fashion-mnist")
    return args


def main(argv: list[str] | None = None) -> int:
    vaelab.flush_denormals()  # as `vaelab train` does: before torch starts its worker threads
    args = parse_args(argv)
    say = (lambda text: None) if args.quiet else print
    try:
        result = bench(pairs=args.pairs, epochs=args.epochs, dataset=args.dataset,
                       data_dir=args.data_dir, limit=QUICK["limit"] if args.quick else None,
                       say=say)  # fmt: skip
    except VaelabError as err:
        if args.debug:
            raise
        print(f"benchmarks/bench.py: error: {err}", file=sys.stderr)
        return 2
    # Provenance for the result tables; both sides of pair i train from seed i.
    command = "vaelab bench " + " ".join(argv if argv is not None else sys.argv[1:])
    seeds = f"0-{args.pairs - 1}" if args.pairs > 1 else "0"
    result.update(date=datetime.date.today().isoformat(), command=command.strip(), seed=seeds)
    save(result, args.out)
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
