"""Two trainings on one machine: does each keep a fair share of its speed alone?

Three settings, interleaved round by round so that drift on the machine hits all of them:
  alone      one `vaelab train vae` run (its solo speed);
  two        two `vaelab train vae` runs started together;
  beside     one `vaelab train vae` run beside a plain PyTorch loop (the recipe's VAE, a
             DataLoader over a Dataset, batch 128, Adam: what most users run), which is also
             timed alone (`plain alone`).
Every process trains for the same wall time (vaelab: --time-budget, stopping at its first epoch
end past it; the plain loop: its own clock), so the pairs overlap for nearly all of it. A
process's speed is its training images/s; its share is that over the median of its solo runs.
The pair's total is the two shares' sum. Writes benchmarks/results/contention.json.

    python benchmarks/contention.py --data-dir ../shared/data/fashion-mnist --rounds 3
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cpu_model, run_speed, vaelab_command, write_bench_data  # noqa: E402
from vaelab.fileio import atomic_write_json  # noqa: E402

PLAIN = """
import json, sys, time
import torch
sys.path.insert(0, {bench!r})
from recipe import ImageFolderLike, VAE, loss_function, read_images
from torch.utils.data import DataLoader
torch.manual_seed(0)
loader = DataLoader(ImageFolderLike(read_images({images!r})), batch_size=128, shuffle=True)
model = VAE()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
seen, start = 0, time.perf_counter()
while time.perf_counter() - start < {seconds}:
    for x, _ in loader:
        opt.zero_grad()
        recon, mu, logvar = model(x)
        loss_function(recon, x, mu, logvar).backward()
        opt.step()
        seen += len(x)
        if time.perf_counter() - start >= {seconds}:
            break
print(json.dumps({{"images_per_s": seen / (time.perf_counter() - start)}}))
"""


def start_vaelab(folder: Path, out: Path, seconds: float) -> subprocess.Popen:
    argv = [*vaelab_command(), "train", "vae", "--dataset", f"idx:{folder}", "--binarization",
            "none", "--epochs", "100000", "--time-budget", f"{seconds}s", "--test-every", "0",
            "--out", str(out), "--quiet", "--no-report"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "VAELAB_THREADS"}  # its own choice
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def start_plain(folder: Path, seconds: float) -> subprocess.Popen:
    here, images = Path(__file__).resolve().parent, folder / "train-images-idx3-ubyte"
    code = PLAIN.format(bench=str(here), images=str(images), seconds=seconds)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip


def finish(proc: subprocess.Popen, run: Path | None) -> float:
    """Wait for a process; its training images/s."""
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a benchmark process failed ({proc.returncode})")
    if run is not None:
        return run_speed(run)[1]
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def one_round(folder: Path, seconds: float, tmp: Path, k: int) -> dict[str, list[float]]:
    runs = {name: tmp / f"{name}-{k}" for name in ("alone", "two-a", "two-b", "beside")}
    alone = finish(start_vaelab(folder, runs["alone"], seconds), runs["alone"])
    plain_alone = finish(start_plain(folder, seconds), None)
    a, b = (start_vaelab(folder, runs[n], seconds) for n in ("two-a", "two-b"))
    two = [finish(a, runs["two-a"]), finish(b, runs["two-b"])]
    v, p = start_vaelab(folder, runs["beside"], seconds), start_plain(folder, seconds)
    beside = [finish(v, runs["beside"]), finish(p, None)]
    return {"alone": [alone], "plain_alone": [plain_alone], "two": two, "beside": beside}


def shares(rounds: list[dict]) -> dict:
    solo = statistics.median(r["alone"][0] for r in rounds)
    plain = statistics.median(r["plain_alone"][0] for r in rounds)
    two = [[s / solo for s in r["two"]] for r in rounds]
    beside = [[r["beside"][0] / solo, r["beside"][1] / plain] for r in rounds]
    return {
        "vaelab_alone_images_per_s": solo,
        "plain_alone_images_per_s": plain,
        "two_vaelab": {"shares": two, "median_total": statistics.median(sum(t) for t in two),
                       "median_lowest": statistics.median(min(t) for t in two)},
        "vaelab_beside_plain": {"shares": beside,
                                "median_vaelab": statistics.median(b[0] for b in beside),
                                "median_plain": statistics.median(b[1] for b in beside),
                                "median_total": statistics.median(sum(b) for b in beside)},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--limit", type=int, default=20000, help="training images (default 20k)")
    parser.add_argument("--seconds", type=float, default=30.0, help="each process's training time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/contention.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        write_bench_data(args.dataset, args.data_dir, folder, args.limit)
        rounds = [one_round(folder, args.seconds, Path(tmp), k) for k in range(args.rounds)]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": cpu_model(),
        "cpus": os.cpu_count(),
        "command": "python benchmarks/contention.py " + " ".join(argv or sys.argv[1:]),
        "seed": 0,
        "settings": vars(args),
        "rounds": rounds,
        **shares(rounds),
    }
    atomic_write_json(Path(args.out), result)
    two, beside = result["two_vaelab"], result["vaelab_beside_plain"]
    print(
        f"two vaelab runs: total {two['median_total']:.2f}x of one alone, the slower "
        f"{two['median_lowest']:.2f}x; beside a plain loop: vaelab "
        f"{beside['median_vaelab']:.2f}x, the loop {beside['median_plain']:.2f}x of theirs alone"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
