"""`vaelab bench` of two revisions of vaelab, interleaved: what a change did to training speed.

    python benchmarks/bench_revisions.py d4794bd HEAD --rounds 2 \
        --data-dir ../shared/data/fashion-mnist

Each revision is checked out (a detached git worktree) into a temporary folder, and its own
bench runs there (benchmarks/bench.py, or `python -m vaelab bench` for revisions from before the
script moved) with PYTHONPATH at that revision's src/, in this Python environment: the two
revisions must need the same dependencies. The benches alternate A B A B. Each bench is itself
interleaved with the PyTorch recipe, so its ratio (vaelab over the recipe, the median per pair)
is the figure to compare across revisions; the result holds both revisions' ratios and, per
round, B's ratio over A's, with their median. Writes benchmarks/results/bench_revisions.json.
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
from bench import cpu_model  # noqa: E402
from vaelab.fileio import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def bench_argv(tree: Path, options: list[str]) -> list[str]:
    """The revision's own bench: its script where it has one, else its `vaelab bench`."""
    script = tree / "benchmarks" / "bench.py"
    if script.is_file():
        return [sys.executable, str(script), *options]
    return [sys.executable, "-m", "vaelab", "bench", *options]


def run_bench(tree: Path, options: list[str], out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run(bench_argv(tree, [*options, "--out", str(out)]), cwd=tree, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"the bench of {tree} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(out.read_text())


def summary(bench: dict) -> dict:
    keep = ("ratio", "recipe_images_per_s", "vaelab_images_per_s", "fraction_of_ceiling")
    return {key: bench[key] for key in keep}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="a git revision (commit, tag, branch)")
    parser.add_argument("after", help="another revision")
    parser.add_argument("--rounds", type=int, default=2, help="A B rounds (default 2)")
    parser.add_argument("--pairs", type=int, default=5, help="each bench's pairs (default 5)")
    parser.add_argument("--epochs", type=int, default=2, help="each run's epochs (default 2)")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--out", default="benchmarks/results/bench_revisions.json")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds is {args.rounds}: expected at least 1")
    commits = {side: git("rev-parse", getattr(args, side)) for side in ("before", "after")}
    options = ["--pairs", str(args.pairs), "--epochs", str(args.epochs), "--dataset", args.dataset]
    options += ["--data-dir", str(Path(args.data_dir).resolve())] if args.data_dir else []
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {side: Path(tmp) / side for side in commits}
        try:
            for side, commit in commits.items():
                git("worktree", "add", "--detach", str(trees[side]), commit)
            for k in range(args.rounds):
                for side in ("before", "after"):
                    out = Path(tmp) / f"{side}-{k}.json"
                    runs[side].append(summary(run_bench(trees[side], options, out)))
                    print(f"round {k + 1} {side}: ratio {runs[side][-1]['ratio']['median']:.2f}",
                          flush=True)  # fmt: skip
        finally:
            for tree in trees.values():
                if tree.exists():  # one that failed to check out has nothing to remove
                    git("worktree", "remove", "--force", str(tree))
    per_round = [a["ratio"]["median"] / b["ratio"]["median"]
                 for a, b in zip(runs["after"], runs["before"], strict=True)]  # fmt: skip
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": cpu_model(),
        "cpus": os.cpu_count(),
        "command": "python benchmarks/bench_revisions.py " + " ".join(argv or sys.argv[1:]),
        "seed": 0,  # each bench's runs train from seed 0
        "revisions": {
            side: {"name": getattr(args, side), "commit": c} for side, c in commits.items()
        },
        "runs": runs,
        "after_over_before": {"per_round": per_round, "median": statistics.median(per_round)},
    }
    atomic_write_json(Path(args.out), result)
    print(f"after / before, the bench ratio: {result['after_over_before']['median']:.3f} "
          f"(median of {args.rounds} rounds)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
