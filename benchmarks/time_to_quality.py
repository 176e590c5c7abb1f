"""Time to a target likelihood: the Fashion-MNIST protocol VAE's test NLL against training time.

For each recipe, one `vaelab train vae --config configs/fashion-mnist-protocol.toml` run trains
for the recipe's whole budget; whenever its training time (train_state.json's `seconds`, which
leaves out validation and checkpoints) passes one of the `--minutes` points, the weights of its
best validation epoch (RUN/best) are copied aside. Once training is over, nothing else running,
each copy is evaluated with `vaelab eval --k K` on the protocol's test set (binarized once with
seed 777). Same model, objective and data for every recipe: only the optimisation settings
differ. Writes benchmarks/results/time_to_quality.json; the curve of each recipe is its points.

    python benchmarks/time_to_quality.py --data-dir ../shared/data/fashion-mnist \\
        --recipes default,bf16 --minutes 5,10,15,20,30 --budget 30m
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cpu_model, vaelab_command  # noqa: E402
from vaelab.fileio import atomic_write_json  # noqa: E402
from vaelab.run import read_eval  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "configs" / "fashion-mnist-protocol.toml"
RECIPES = {  # name -> `vaelab train` options on top of the protocol config
    "default": ["--lr", "1e-3", "--lr-decay", "0.5"],
    "bf16": ["--lr", "1e-3", "--lr-decay", "0.5", "--precision", "bf16"],
    "batch-256": ["--lr", "2e-3", "--lr-decay", "0.5", "--batch-size", "256"],
}


def trained_seconds(run: Path) -> float:
    try:
        return float(json.loads((run / "train_state.json").read_text())["seconds"])
    except (OSError, ValueError, KeyError):
        return 0.0


def snapshot(run: Path, dest: Path) -> bool:
    """Copy RUN/best with its config (a run folder of its own); False if caught mid-write."""
    best = run / "best"
    if not (best / "manifest.json").is_file():
        return False
    try:
        shutil.copytree(best, dest, dirs_exist_ok=False)
    except (OSError, shutil.Error):
        shutil.rmtree(dest, ignore_errors=True)
        return False
    return True


def train_with_snapshots(argv: list[str], run: Path, minutes: list[float], root: Path) -> list:
    """Run the training; copy best/ as each point passes: [(minutes, seconds, folder)]."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    taken, pending = [], sorted(minutes)
    while pending:
        done = proc.poll() is not None
        if trained_seconds(run) >= 60 * pending[0] or done:
            dest = root / f"at-{pending[0]:g}min"
            if snapshot(run, dest):  # the best epoch so far, after this much training
                taken.append((pending.pop(0), trained_seconds(run), dest))
            elif done:
                break
        if done and not pending:
            break
        time.sleep(2)
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"training failed ({proc.returncode}): {err.strip()[-500:]}")
    return taken


def evaluate(folder: Path, k: int, limit: int | None) -> dict:
    argv = [*vaelab_command(), "eval", str(folder), "--k", str(k), "--quiet"]
    argv += ["--limit", str(limit)] if limit else []
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return read_eval(folder)


def run_recipe(name: str, args, root: Path) -> dict:
    run = root / name / "run"
    argv = [*vaelab_command(), "train", "vae", "--config", str(PROTOCOL), *RECIPES[name],
            "--time-budget", args.budget, "--seed", str(args.seed), "--out", str(run),
            "--quiet", "--no-report"]  # fmt: skip
    argv += ["--data-dir", args.data_dir] if args.data_dir else []
    argv += [part for option in args.train_option for part in option.split(maxsplit=1)]
    taken = train_with_snapshots(argv, run, args.minutes, root / name)
    points = []
    for minutes, seconds, folder in taken:
        result = evaluate(folder, args.k, args.eval_limit)
        points.append({"minutes": minutes, "trained_seconds": seconds,
                       "nll": result.get("nll"), "nll_se": result.get("nll_se"),
                       "neg_elbo": result.get("neg_elbo"), "images": result.get("images"),
                       "k": result.get("k")})  # fmt: skip
    return {"recipe": name, "options": RECIPES[name], "points": points}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument(
        "--recipes", default="default", help="comma-separated: " + ", ".join(RECIPES)
    )
    parser.add_argument("--minutes", default="5,10,15,20,30", help="training minutes to score")
    parser.add_argument("--budget", default="30m", help="each recipe's training budget")
    parser.add_argument("--k", type=int, default=5000, help="importance samples (default 5000)")
    parser.add_argument("--eval-limit", type=int, help="score only the first N test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train-option",
        action="append",
        default=[],
        metavar="'--FLAG VALUE'",
        help="one more `vaelab train` option for every recipe (repeatable; "
        "the row says so): for a smaller test of the script itself",
    )
    parser.add_argument("--out", default="benchmarks/results/time_to_quality.json")
    args = parser.parse_args(argv)
    args.minutes = [float(m) for m in args.minutes.split(",")]
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}: expected {', '.join(RECIPES)}")
    with tempfile.TemporaryDirectory() as tmp:
        curves = [run_recipe(name, args, Path(tmp)) for name in names]
    atomic_write_json(Path(args.out), {
        "date": datetime.date.today().isoformat(), "machine": cpu_model(), "seed": args.seed,
        "command": "python benchmarks/time_to_quality.py " + " ".join(argv or sys.argv[1:]),
        "protocol": str(PROTOCOL.relative_to(ROOT)), "budget": args.budget, "k": args.k,
        "eval_limit": args.eval_limit, "train_options": args.train_option, "curves": curves,
    })  # fmt: skip
    for curve in curves:
        text = ", ".join(f"{p['minutes']:g} min: {p['nll']:.2f}" for p in curve["points"])
        print(f"{curve['recipe']}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
