"""A soak test: a small run's whole life (`vaelab train` with a validation set, so best/ is
written; `vaelab eval`, which writes the report too; `vaelab report`) SIGKILLed again and again
at random moments, each kill followed by `--resume` (or the killed eval or report run again);
the final weights, best weights and evaluation equal an uninterrupted run's, bit for bit.

A wrapper counts the events of each phase of a process (training: each step and each pass of
the nets; validation: each pass of the nets; checkpoint and best-weights saves: each fsync and
file replacement; eval: each pass of the nets; report: each pass of the nets and each figure
saved) and SIGKILLs the process at one event drawn at random (seeded) from those its remaining
work holds, as an uninterrupted run counted them (in training, from the first share of them:
one over the kills of that phase still to come, so that the kills move through the epochs).
The kills cycle over the six phases in a seeded order. 8 kills by default;
VAELAB_SOAK_KILLS=20 (or any number) for a longer soak. The kill points reached are printed,
and written as JSON to the file VAELAB_SOAK_RECORD names, if set (benchmarks/soak.py).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_faults import dataset, env  # noqa: F401  (the fixture: 384 training digits as IDX)
from vaelab.training.checkpoint import (
    CHECKPOINT_FILES,
    MANIFEST,
    MODEL_FILE,
    read_safetensors,
    roll_forward,
    verify_manifest,
)

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("VAELAB_SOAK_KILLS", "8"))
SEED = 20
EPOCHS = 4  # 320 training images in batches of 64: 5 steps an epoch
TRAIN_PHASES = ["training", "validation", "checkpoint", "best"]
PHASES = [*TRAIN_PHASES, "eval", "report"]
COMMAND_OF = {**dict.fromkeys(TRAIN_PHASES, "train"), "eval": "eval", "report": "report"}

# argv = [plan as JSON, *vaelab arguments]; plan {"phase": P, "event": n} kills the process at
# the n-th event of phase P, {} only counts. Prints "KILL phase epoch n" before the kill and
# "COUNTS {phase@epoch: events}" at the end.
SOAK = r"""
import json, os, signal, sys
plan = json.loads(sys.argv[1])
WATCHED = {"training": {"step", "net"}, "validation": {"net"}, "checkpoint": {"os"},
           "best": {"os"}, "eval": {"net"}, "report": {"net", "figure"}}
counts, stack, epoch = {}, ["start"], [0]

def event(kind):
    phase = stack[-1]
    if kind not in WATCHED.get(phase, ()):
        return
    key = f"{phase}@{epoch[0]}"
    counts[key] = counts.get(key, 0) + 1
    done = sum(v for k, v in counts.items() if k.split("@")[0] == phase)
    if plan.get("phase") == phase and done == plan["event"]:
        print("KILL", phase, epoch[0], done, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

def in_phase(name, fn, kind=None):
    def wrapped(*args, **kwargs):
        stack.append(name(args, kwargs) if callable(name) else name)
        try:
            if kind:
                event(kind)
            return fn(*args, **kwargs)
        finally:
            stack.pop()
    return wrapped

def counted(fn, kind):
    def wrapped(*args, **kwargs):
        event(kind)
        return fn(*args, **kwargs)
    return wrapped

import vaelab.evaluation.run_eval as run_eval
import vaelab.viz.run_report as run_report
from vaelab.models.vae import VAE
from vaelab.training import checkpoint
from vaelab.training.trainer import Trainer

train_step = Trainer.train_step
def step(self, *args, **kwargs):
    epoch[0] = self.state.epoch + 1
    return train_step(self, *args, **kwargs)
Trainer.train_step = in_phase("training", step, "step")
Trainer.evaluate = in_phase(lambda a, k: "validation" if k.get("x") is not None else "test",
                            Trainer.evaluate)
checkpoint.save_checkpoint = in_phase("checkpoint", checkpoint.save_checkpoint)
checkpoint.save_best = in_phase("best", checkpoint.save_best)
run_eval.evaluate_run = in_phase("eval", run_eval.evaluate_run)
run_report.write_run_report = in_phase("report", run_report.write_run_report)
run_report.save_figure = counted(run_report.save_figure, "figure")
VAE.encode, VAE.decode = counted(VAE.encode, "net"), counted(VAE.decode, "net")
os.replace, os.fsync = counted(os.replace, "os"), counted(os.fsync, "os")

from vaelab.cli import main
code = main(sys.argv[2:])
print("COUNTS", json.dumps(counts), flush=True)
sys.exit(code)
"""


def commands(data: str, run: Path) -> dict[str, list[str]]:
    train = ["train", "vae", "--dataset", data, "--hidden", "32", "--latent-dim", "2",
             "--epochs", str(EPOCHS), "--batch-size", "64", "--validation", "64",
             "--out", str(run), "--quiet", "--no-report"]  # fmt: skip
    return {
        "train": train,
        "resume": ["train", "vae", "--resume", str(run), "--quiet", "--no-report"],
        "eval": ["eval", str(run), "--k", "4", "--limit", "32", "--quiet"],
        "report": ["report", str(run), "--quiet"],
    }


def soak(args: list[str], plan: dict) -> tuple[int, str]:
    argv = [sys.executable, "-c", SOAK, json.dumps(plan), *args]
    done = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def counts_of(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if line.startswith("COUNTS "))
    return json.loads(line.removeprefix("COUNTS "))


def trained_epochs(run: Path) -> int:
    """The epochs of the checkpoint that the next `--resume` starts from."""
    roll_forward(run)  # what that load does first
    if not (run / MANIFEST).exists():
        return 0
    return json.loads((run / "train_state.json").read_text())["epoch"]


def plan_kills(rng: random.Random) -> list[str]:
    """KILLS phases, cycling over every phase in a seeded order, in the order the run meets
    them (training's first, then eval's, then the report's)."""
    cycle = []
    while len(cycle) < KILLS:
        cycle += rng.sample(PHASES, len(PHASES))
    return sorted(cycle[:KILLS], key=lambda p: ["train", "eval", "report"].index(COMMAND_OF[p]))


def events_left(counts: dict, phase: str, after_epoch: int) -> int:
    return sum(n for key, n in counts.items()
               if key.split("@")[0] == phase and int(key.split("@")[1]) > after_epoch)  # fmt: skip


def resume_or_start(cmds: dict, run: Path) -> list[str]:
    return cmds["resume"] if (run / "config.json").exists() else cmds["train"]


def finish_training(cmds: dict, run: Path) -> None:
    for _ in range(3):
        if trained_epochs(run) == EPOCHS:
            return
        assert soak(resume_or_start(cmds, run), {})[0] == 0
    assert trained_epochs(run) == EPOCHS


def described(point: dict) -> str:
    """A kill point as the soak prints it."""
    if not point["reached"]:
        return f"{point['phase']}: no event left after epoch {point['epoch']}"
    if point["command"] == "train":
        return f"{point['phase']} (epoch {point['epoch']}, event {point['event']} of the process)"
    return f"{point['phase']} (event {point['event']} of `vaelab {point['command']}`)"


def same_tensors(a: Path, b: Path) -> bool:
    x, y = read_safetensors(a), read_safetensors(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def timeless(result: dict) -> dict:
    return {k: v for k, v in result.items() if "seconds" not in k}


def test_a_run_killed_at_random_moments_ends_as_an_uninterrupted_one(
    dataset,  # noqa: F811  (test_faults.py's fixture)
    tmp_path,
    capsys,
):
    ref, run = tmp_path / "reference", tmp_path / "run"
    ref_cmds, cmds = commands(dataset, ref), commands(dataset, run)
    counts = {}
    for name in ("train", "eval", "report"):  # the uninterrupted run, counting its events
        code, output = soak(ref_cmds[name], {})
        assert code == 0, output
        counts[name] = counts_of(output)
    rng, points = random.Random(SEED), []
    plan = plan_kills(rng)
    start_time = time.perf_counter()
    for phase in list(plan):
        command = COMMAND_OF[phase]
        if command != "train":
            finish_training(cmds, run)
        start = trained_epochs(run) if command == "train" else 0
        left = events_left(counts[command], phase, start - (command != "train"))
        if not left:  # e.g. no best-weights save in the epochs left
            points.append({"phase": phase, "command": command, "reached": False, "epoch": start})
            plan.remove(phase)
            continue
        args = resume_or_start(cmds, run) if command == "train" else cmds[command]
        if command == "train":  # early in what is left, so that the kills reach every epoch
            left = -(-left // plan.count(phase))
        plan.remove(phase)
        code, output = soak(args, {"phase": phase, "event": rng.randint(1, left)})
        assert code == -signal.SIGKILL, output
        kill = next(line for line in output.splitlines() if line.startswith("KILL "))
        _, hit, epoch, n = kill.split()
        points.append({"phase": hit, "command": command, "reached": True, "event": int(n),
                       "epoch": int(epoch) if command == "train" else None})  # fmt: skip
    finish_training(cmds, run)
    for name in ("eval", "report"):  # each killed one runs again (and unkilled ones once)
        assert soak(cmds[name], {})[0] == 0
    with capsys.disabled():
        lines = [described(point) for point in points]
        print(f"\nsoak: {len(points)} kills, seed {SEED}:\n  " + "\n  ".join(lines))
    assert same_tensors(run / MODEL_FILE, ref / MODEL_FILE)
    assert same_tensors(run / "best" / MODEL_FILE, ref / "best" / MODEL_FILE)
    assert (run / "best" / "best.json").read_text() == (ref / "best" / "best.json").read_text()
    result, expected = (json.loads((r / "eval.json").read_text()) for r in (run, ref))
    assert timeless(result) == timeless(expected)
    assert (run / "report.html").is_file()
    verify_manifest(run, CHECKPOINT_FILES)
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith((".tmp", ".next"))]
    assert not leftovers
    assert sum(point["reached"] for point in points) >= KILLS - 1
    if os.environ.get("VAELAB_SOAK_RECORD"):  # written only now, past every check above
        seconds = round(time.perf_counter() - start_time, 1)  # the kills and resumes
        record = {"kills": KILLS, "seed": SEED, "epochs": EPOCHS, "points": points,
                  "seconds": seconds}  # fmt: skip
        Path(os.environ["VAELAB_SOAK_RECORD"]).write_text(json.dumps(record, indent=2) + "\n")
