"""The long soak: tests/test_soak.py with more kills, its kill points recorded.

    python benchmarks/soak.py --kills 20

Runs the soak test (a small run's whole life, SIGKILLed at random moments of training,
validation, checkpoint and best-weights saves, eval and report, each followed by `--resume`;
the end bit-identical to an uninterrupted run) with VAELAB_SOAK_KILLS=--kills, and writes what
it recorded (each kill's phase, epoch and event; whether every planned kill found an event) with
the date, machine and command to benchmarks/results/soak.json. A failing soak writes nothing
and exits with pytest's code.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cpu_model  # noqa: E402
from vaelab.fileio import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs in the run (default 20)")
    parser.add_argument("--out", default="benchmarks/results/soak.json")
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error(f"--kills is {args.kills}: expected at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "soak.json"
        env = {**os.environ, "VAELAB_SOAK_KILLS": str(args.kills),
               "VAELAB_SOAK_RECORD": str(record)}  # fmt: skip
        argv_ = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 str(ROOT / "tests" / "test_soak.py")]  # fmt: skip
        done = subprocess.run(argv_, cwd=ROOT, env=env)
        if done.returncode:
            return done.returncode
        result = json.loads(record.read_text())
    command = "python benchmarks/soak.py " + " ".join(argv or sys.argv[1:])
    result.update(date=datetime.date.today().isoformat(), machine=cpu_model(),
                  cpus=os.cpu_count(), load_average=os.getloadavg()[0],
                  command=command)  # fmt: skip
    atomic_write_json(Path(args.out), result)
    reached = sum(p["reached"] for p in result["points"])
    print(f"soak: {reached} of {args.kills} kills reached, weights identical, "
          f"{result['seconds']:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
