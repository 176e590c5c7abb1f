"""Start-up: the wall time of commands that do not train, beside Python's own start.

    python benchmarks/startup.py --repeats 5

Each round runs, one after the other in fresh processes: `python -c pass` (the interpreter's
floor), `python -c "import torch"` (what a command pays that imports torch), `vaelab --help` and
`vaelab datasets`. Rounds interleave the four so that drift on the machine hits each; every
figure is the median over the rounds. Writes benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cpu_model, vaelab_command  # noqa: E402
from vaelab.fileio import atomic_write_json  # noqa: E402

COMMANDS = {  # name: argv
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "vaelab --help": [*vaelab_command(), "--help"],
    "vaelab datasets": [*vaelab_command(), "datasets"],
}


def wall(argv: list[str]) -> float:
    """Seconds from start to exit of one process; a failing command stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--out", default="benchmarks/results/startup.json")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats is {args.repeats}: expected at least 1")
    for argv_ in COMMANDS.values():  # once unmeasured: the files are in the page cache after
        wall(argv_)
    rounds = [{name: wall(argv_) for name, argv_ in COMMANDS.items()} for _ in range(args.repeats)]
    medians = {name: statistics.median(r[name] for r in rounds) for name in COMMANDS}
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": cpu_model(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "command": "python benchmarks/startup.py " + " ".join(argv or sys.argv[1:]),
        "seed": None,  # nothing random
        "rounds": rounds,
        "median_seconds": medians,
    }
    atomic_write_json(Path(args.out), result)
    for name, seconds in medians.items():
        print(f"{name:<28} {seconds:.3f} s (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
