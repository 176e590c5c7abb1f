"""Training in bfloat16 autocast against float32: `vaelab train --precision bf16` vs the default.

    python benchmarks/precision.py --data-dir ../shared/data/fashion-mnist --repeats 4 --epochs 3

Both sides train the Fashion-MNIST protocol's model (configs/fashion-mnist-protocol.toml: gated
300-300, z = 40, batch 100; `--lr 1e-3`, as the 30-minute runs) from the same seed through the
`vaelab train` command, each run in its own process with 2 threads (`--threads`), alternating
fp32 bf16 fp32 bf16 so that drift on a shared machine hits both; the ratio bf16 / fp32 of
training images/s is taken per pair, then its median. images/s is training time only (read from
the run's metrics.jsonl, as `vaelab bench` does). Each side's validation negative ELBO after
the last epoch is recorded beside it: the same seed, so the two differ only by the precision.
`--prior vamp --pseudo-inputs 250` measures the VampPrior. Writes benchmarks/results/
precision.json (or `--out`).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench import cpu_model, run_child, run_speed, summary, vaelab_command
from vaelab.fileio import atomic_write_json

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "fashion-mnist-protocol.toml"


def timed_run(args: argparse.Namespace, precision: str) -> dict[str, float]:
    """One `vaelab train` in its own process; images/s from its metrics, its wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    extra = ["--data-dir", args.data_dir] if args.data_dir else []
    if args.prior != "normal":
        extra += ["--prior", args.prior, "--pseudo-inputs", str(args.pseudo_inputs)]
    with tempfile.TemporaryDirectory() as tmp:
        argv = [*vaelab_command(), "train", "vae", "--config", str(RECIPE), *extra,
                "--epochs", str(args.epochs), "--lr", "1e-3", "--precision", precision,
                "--out", f"{tmp}/run", "--quiet", "--no-report"]  # fmt: skip
        start = time.perf_counter()
        run_child(argv, env)
        wall = time.perf_counter() - start
        rows, images_per_s = run_speed(Path(f"{tmp}/run"))
    return {"images_per_s": images_per_s, "wall_s": wall,
            "per_epoch": [r["train/samples_per_s"] for r in rows],
            "valid_neg_elbo": rows[-1]["valid/neg_elbo"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4, help="interleaved pairs (default 4)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS (default 2)")
    parser.add_argument("--data-dir", help="where the Fashion-MNIST files are")
    parser.add_argument("--prior", choices=("normal", "vamp"), default="normal")
    parser.add_argument("--pseudo-inputs", type=int, default=500, help="the VampPrior's K")
    parser.add_argument("--out", default="benchmarks/results/precision.json")
    args = parser.parse_args()
    rows = []
    for i in range(args.repeats):
        fp32, bf16 = timed_run(args, "fp32"), timed_run(args, "bf16")
        ratio = bf16["images_per_s"] / fp32["images_per_s"]
        rows.append({"pair": i, "fp32": fp32, "bf16": bf16, "ratio": ratio})
        print(f"pair {i + 1}/{args.repeats}: fp32 {fp32['images_per_s']:7.0f} images/s "
              f"(valid {fp32['valid_neg_elbo']:.2f})   bf16 {bf16['images_per_s']:7.0f} "
              f"images/s (valid {bf16['valid_neg_elbo']:.2f})   ratio {ratio:.2f}",
              flush=True)  # fmt: skip
    prior = "N(0, I)" if args.prior == "normal" else f"VampPrior K={args.pseudo_inputs}"
    result = {
        "model": f"Fashion-MNIST protocol VAE (gated 300-300, z=40, batch 100, Adam 1e-3), {prior}",
        "epochs_per_run": args.epochs, "repeats": args.repeats, "threads": args.threads,
        "fp32_images_per_s": summary([r["fp32"]["images_per_s"] for r in rows]),
        "bf16_images_per_s": summary([r["bf16"]["images_per_s"] for r in rows]),
        "ratio": summary([r["ratio"] for r in rows]),
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "platform": platform.platform(), "processor": cpu_model(),
                    "avx512_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text()
                    if Path("/proc/cpuinfo").exists() else None},
        "rows": rows,
    }  # fmt: skip
    atomic_write_json(Path(args.out), result)
    print(f"ratio (bf16 / fp32, training images/s): {result['ratio']['median']:.2f}")


if __name__ == "__main__":
    main()
